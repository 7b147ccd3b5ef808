package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"time"
)

// ErrBadStatement means a signed statement does not verify (wrong signer,
// certificate outside the region CA, another role or name, or a signature
// over other content).
var ErrBadStatement = errors.New("identity: signed statement does not verify")

// statementLabel starts every signed statement, so that a signature made
// for regionfl never verifies as anything else (a TLS handshake, a CSR).
const statementLabel = "regionfl/identity/v1 statement"

// maxStatementSig caps an ECDSA P-256 ASN.1 signature (at most 72 bytes).
const maxStatementSig = 80

// maxStatementCert caps a certificate relayed with a statement.
const maxStatementCert = 16 << 10

// statementCertificate parses a certificate relayed with a statement,
// its size checked before the parser sees it.
func statementCertificate(der []byte) (*x509.Certificate, error) {
	if len(der) == 0 || len(der) > maxStatementCert {
		return nil, fmt.Errorf("%w: certificate of %d bytes", ErrBadStatement, len(der))
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("%w: certificate: %v", ErrBadStatement, err)
	}
	return cert, nil
}

// lengthPrefixed hashes fields with SHA-256, each preceded by its length,
// so that no two field lists share an encoding.
func lengthPrefixed(fields ...[]byte) []byte {
	h := sha256.New()
	var n [8]byte
	for _, f := range fields {
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		h.Write(n[:])
		h.Write(f)
	}
	return h.Sum(nil)
}

// statementDigest is the digest a statement's signature covers: the
// label, the kind, then the fields, injectively encoded.
func statementDigest(kind string, fields ...[]byte) []byte {
	return lengthPrefixed(append([][]byte{[]byte(statementLabel), []byte(kind)}, fields...)...)
}

// SignStatement signs (kind, fields...) with the key of a certificate.
// kind names what is being said, e.g. "ceremony hpke key"; the fields are
// its content, each bound by length.
func SignStatement(key crypto.PrivateKey, kind string, fields ...[]byte) ([]byte, error) {
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("identity: %T cannot sign", key)
	}
	return signer.Sign(rand.Reader, statementDigest(kind, fields...), crypto.SHA256)
}

// VerifyStatement checks that certDER is a certificate of the region CA for
// exactly want (name and role), valid at now, and that sig is its key's
// signature over (kind, fields...).
func VerifyStatement(ca *x509.CertPool, certDER []byte, want Identity, now time.Time, sig []byte, kind string, fields ...[]byte) error {
	_, err := NewVerifier(ca).Verify(certDER, want, now, sig, kind, fields...)
	return err
}

// VerifyRoleStatement is VerifyStatement for a signer known only by its
// role (the region's operator, whoever holds that role): it returns the
// signer's identity.
func VerifyRoleStatement(ca *x509.CertPool, certDER []byte, role Role, now time.Time, sig []byte, kind string, fields ...[]byte) (Identity, error) {
	cert, err := statementCertificate(certDER)
	if err != nil {
		return Identity{}, err
	}
	id, err := FromCertificate(cert)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: %v", ErrBadStatement, err)
	}
	if id.Role != role {
		return Identity{}, fmt.Errorf("%w: signed by %s, want a %s", ErrBadStatement, id, role)
	}
	return id, VerifyStatement(ca, certDER, id, now, sig, kind, fields...)
}

// CheckSignature checks only that sig is the signature of certDER's key
// over (kind, fields...): for a server that has verified the certificate
// already (it is the caller's, from the TLS handshake).
func CheckSignature(certDER, sig []byte, kind string, fields ...[]byte) error {
	if len(sig) == 0 || len(sig) > maxStatementSig {
		return fmt.Errorf("%w: signature of %d bytes", ErrBadStatement, len(sig))
	}
	cert, err := statementCertificate(certDER)
	if err != nil {
		return err
	}
	return checkSignature(cert, sig, kind, fields...)
}

func checkSignature(cert *x509.Certificate, sig []byte, kind string, fields ...[]byte) error {
	return checkDigest(cert.PublicKey, statementDigest(kind, fields...), sig, kind)
}

// checkDigest checks that sig is key's signature over a statement of kind
// whose digest (statementDigest) is digest.
func checkDigest(key crypto.PublicKey, digest, sig []byte, kind string) error {
	pub, ok := key.(*ecdsa.PublicKey)
	if !ok {
		return fmt.Errorf("%w: certificate has a %T key", ErrBadStatement, key)
	}
	if !ecdsa.VerifyASN1(pub, digest, sig) {
		return fmt.Errorf("%w: signature over %q is wrong", ErrBadStatement, kind)
	}
	return nil
}
