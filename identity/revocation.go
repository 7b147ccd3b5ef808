package identity

import (
	"crypto"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"strings"
	"time"
)

// StatementRevocation is an operator's signature over a revocation:
// (serial, reason, the signing time in Unix ms, 8 bytes big endian).
// Replicas refuse a revoked certificate on every call; hospitals, who do
// not trust the replicas, check the operator's signature themselves and
// pin every serial they have seen, so a coordinator can hold a revocation
// back but never forge or undo one.
const StatementRevocation = "certificate revocation"

// MaxRevocationReason caps a revocation's reason, in bytes.
const MaxRevocationReason = 512

// MaxClockSkew bounds how far in the future a signed revocation's time
// may lie.
const MaxClockSkew = 5 * time.Minute

// RevocationFields are the signed fields of a StatementRevocation.
func RevocationFields(serial, reason string, signedUnixMs int64) [][]byte {
	var t [8]byte
	binary.BigEndian.PutUint64(t[:], uint64(signedUnixMs))
	return [][]byte{[]byte(serial), []byte(reason), t[:]}
}

// NormalizeSerial writes a certificate serial as SerialHex does: lowercase
// hex without separators or leading zeros. It returns "" if s is not one.
func NormalizeSerial(s string) string {
	s = strings.ToLower(strings.TrimLeft(strings.ReplaceAll(s, ":", ""), "0"))
	if len(s) == 0 || len(s) > 40 {
		return ""
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return ""
		}
	}
	return s
}

// SignRevocation signs the revocation of a serial (normalized) with key,
// an operator certificate's, at now.
func SignRevocation(key crypto.PrivateKey, serial, reason string, now time.Time) (sig []byte, signedUnixMs int64, err error) {
	if NormalizeSerial(serial) != serial {
		return nil, 0, fmt.Errorf("identity: serial %q is not normalized lowercase hex", serial)
	}
	ms := now.UnixMilli()
	sig, err = SignStatement(key, StatementRevocation, RevocationFields(serial, reason, ms)...)
	return sig, ms, err
}

// VerifyRevocation checks that an operator certificate of the region CA,
// valid when it signed, signed the revocation, and that the signing time
// is not in the future (beyond MaxClockSkew). The certificate is checked
// at the signing time so that a revocation outlives the operator
// certificate that made it; a forged time can only revoke, never unrevoke.
func VerifyRevocation(ca *x509.CertPool, certDER, sig []byte, serial, reason string, signedUnixMs int64, now time.Time) (Identity, error) {
	if NormalizeSerial(serial) != serial {
		return Identity{}, fmt.Errorf("%w: serial %q is not normalized lowercase hex", ErrBadStatement, serial)
	}
	at := time.UnixMilli(signedUnixMs)
	if signedUnixMs <= 0 || at.After(now.Add(MaxClockSkew)) {
		return Identity{}, fmt.Errorf("%w: revocation signed at %d ms, in the future", ErrBadStatement, signedUnixMs)
	}
	return VerifyRoleStatement(ca, certDER, RoleOperator, at, sig, StatementRevocation, RevocationFields(serial, reason, signedUnixMs)...)
}

// CertificateSerial is SerialHex of a DER certificate.
func CertificateSerial(der []byte) (string, error) {
	c, err := statementCertificate(der)
	if err != nil {
		return "", err
	}
	return SerialHex(c), nil
}
