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

// StatementRevocationList is an operator's signature over the region's
// whole revocation list at a time: (region digest, the issue time in Unix
// ms as 8 bytes big endian, then the sorted serials). A region whose
// genesis sets a revocation maximum age has its hospitals act only while
// they hold such a list younger than that. A coordinator can still serve
// an older list, but no older than the maximum age, and never one older
// than a hospital has seen: it can hold a revocation back for at most the
// maximum age after the first list that names it.
const StatementRevocationList = "revocation list"

// The range of a region's revocation maximum age (0 turns the check off):
// at least a few polls long, at most a quarter's worth of unchecked
// withholding.
const (
	MinRevocationMaxAge = 10 * time.Second
	MaxRevocationMaxAge = 90 * 24 * time.Hour
)

// MaxListedRevocations bounds a signed revocation list.
const MaxListedRevocations = 100_000

// CheckRevocationMaxAge refuses a maximum age outside its range, or not a
// whole number of seconds.
func CheckRevocationMaxAge(d time.Duration) error {
	if d != 0 && (d < MinRevocationMaxAge || d > MaxRevocationMaxAge || d%time.Second != 0) {
		return fmt.Errorf("revocation maximum age %v: want 0 (no limit) or whole seconds from %v to %v", d, MinRevocationMaxAge, MaxRevocationMaxAge)
	}
	return nil
}

// RevocationListFields are the signed fields of a StatementRevocationList.
func RevocationListFields(region [32]byte, issuedUnixMs int64, serials []string) [][]byte {
	var t [8]byte
	binary.BigEndian.PutUint64(t[:], uint64(issuedUnixMs))
	f := [][]byte{region[:], t[:]}
	for _, s := range serials {
		f = append(f, []byte(s))
	}
	return f
}

// checkSerialList requires serials sorted, distinct and normalized.
func checkSerialList(serials []string) error {
	if len(serials) > MaxListedRevocations {
		return fmt.Errorf("%d serials, more than %d", len(serials), MaxListedRevocations)
	}
	for i, s := range serials {
		if NormalizeSerial(s) != s {
			return fmt.Errorf("serial %q is not normalized lowercase hex", s)
		}
		if i > 0 && serials[i-1] >= s {
			return fmt.Errorf("serials are not sorted and distinct at %q", s)
		}
	}
	return nil
}

// SignRevocationList signs the region's revocation list (serials sorted
// and distinct) with key, an operator certificate's, at now.
func SignRevocationList(key crypto.PrivateKey, region [32]byte, serials []string, now time.Time) (sig []byte, issuedUnixMs int64, err error) {
	if err := checkSerialList(serials); err != nil {
		return nil, 0, fmt.Errorf("identity: %w", err)
	}
	ms := now.UnixMilli()
	sig, err = SignStatement(key, StatementRevocationList, RevocationListFields(region, ms, serials)...)
	return sig, ms, err
}

// VerifyRevocationList checks that an operator certificate of the region
// CA, valid when it signed, signed the list for this region, that the
// serials are sorted, distinct and normalized, and that the issue time is
// not in the future (beyond MaxClockSkew).
func VerifyRevocationList(ca *x509.CertPool, certDER, sig []byte, region [32]byte, issuedUnixMs int64, serials []string, now time.Time) (Identity, error) {
	if err := checkSerialList(serials); err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrBadStatement, err)
	}
	at := time.UnixMilli(issuedUnixMs)
	if issuedUnixMs <= 0 || at.After(now.Add(MaxClockSkew)) {
		return Identity{}, fmt.Errorf("%w: revocation list issued at %d ms, in the future", ErrBadStatement, issuedUnixMs)
	}
	return VerifyRoleStatement(ca, certDER, RoleOperator, at, sig, StatementRevocationList, RevocationListFields(region, issuedUnixMs, serials)...)
}
