package identity

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"sync"
	"time"
)

// Verifier checks statements (VerifyStatement) for a party that checks
// many of them from few signers: a node checks each member's ceremony statements and
// every contributor's approval of every round, all made with one
// certificate per hospital. It verifies a certificate's chain to the CA
// once and then only its validity period, and a statement it verified
// already only against its signer's certificate. At a region of 1,024
// hospitals that is most of a node's signature checks.
type Verifier struct {
	ca *x509.CertPool
	mu sync.Mutex
	// certs holds the certificates whose chain verified, by SHA-256 of
	// their DER, with the period in which the whole chain is valid.
	certs map[[32]byte]verifiedCert
	// statements holds the statements that verified, by
	// statementKey.
	statements map[[32]byte]bool
}

// verifiedCert is what a statement check needs of a certificate, not
// the parsed certificate: a node remembers one per hospital.
type verifiedCert struct {
	key                 crypto.PublicKey
	id                  Identity
	serial              string
	notBefore, notAfter time.Time
}

// maxVerified bounds each of a Verifier's memories; past it, it starts
// afresh. A region's certificates fit many times over.
const maxVerified = 1 << 14

// NewVerifier returns a Verifier of statements by certificates of ca.
func NewVerifier(ca *x509.CertPool) *Verifier {
	return &Verifier{ca: ca, certs: map[[32]byte]verifiedCert{}, statements: map[[32]byte]bool{}}
}

// Verify checks that certDER is a certificate of the CA for exactly want
// (name and role), valid at now, and that sig is its key's signature over
// (kind, fields...); it returns the serial number of the signer's
// certificate (SerialHex). VerifyStatement is Verify with a fresh
// Verifier.
func (v *Verifier) Verify(certDER []byte, want Identity, now time.Time, sig []byte, kind string, fields ...[]byte) (string, error) {
	if len(sig) == 0 || len(sig) > maxStatementSig {
		return "", fmt.Errorf("%w: signature of %d bytes", ErrBadStatement, len(sig))
	}
	c, err := v.certificate(certDER, now)
	if err != nil {
		return "", err
	}
	if c.id != want {
		return "", fmt.Errorf("%w: signed by %s, want %s", ErrBadStatement, c.id, want)
	}
	digest := statementDigest(kind, fields...)
	key := statementKey(certDER, sig, digest)
	v.mu.Lock()
	known := v.statements[key]
	v.mu.Unlock()
	if known {
		return c.serial, nil
	}
	if err := checkDigest(c.key, digest, sig, kind); err != nil {
		return "", err
	}
	v.mu.Lock()
	if len(v.statements) >= maxVerified {
		clear(v.statements)
	}
	v.statements[key] = true
	v.mu.Unlock()
	return c.serial, nil
}

// certificate parses certDER and verifies its chain to the CA, or finds
// it verified already and checks that now is within the chain's validity.
func (v *Verifier) certificate(certDER []byte, now time.Time) (verifiedCert, error) {
	if len(certDER) == 0 || len(certDER) > maxStatementCert {
		return verifiedCert{}, fmt.Errorf("%w: certificate of %d bytes", ErrBadStatement, len(certDER))
	}
	d := sha256.Sum256(certDER)
	v.mu.Lock()
	c, ok := v.certs[d]
	v.mu.Unlock()
	if ok {
		if now.Before(c.notBefore) || now.After(c.notAfter) {
			return verifiedCert{}, fmt.Errorf("%w: certificate is not from the region CA: outside its validity period at %s", ErrBadStatement, now.UTC().Format(time.RFC3339))
		}
		return c, nil
	}
	cert, err := statementCertificate(certDER)
	if err != nil {
		return verifiedCert{}, err
	}
	chains, err := cert.Verify(x509.VerifyOptions{Roots: v.ca, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return verifiedCert{}, fmt.Errorf("%w: certificate is not from the region CA: %v", ErrBadStatement, err)
	}
	id, err := FromCertificate(cert)
	if err != nil {
		return verifiedCert{}, fmt.Errorf("%w: %v", ErrBadStatement, err)
	}
	c = verifiedCert{key: cert.PublicKey, id: id, serial: SerialHex(cert), notBefore: cert.NotBefore, notAfter: cert.NotAfter}
	// The period in which the chain is valid: a certificate valid beyond
	// its CA's end stops verifying with the CA.
	for _, link := range chains[0] {
		if link.NotBefore.After(c.notBefore) {
			c.notBefore = link.NotBefore
		}
		if link.NotAfter.Before(c.notAfter) {
			c.notAfter = link.NotAfter
		}
	}
	v.mu.Lock()
	if len(v.certs) >= maxVerified {
		clear(v.certs)
	}
	v.certs[d] = c
	v.mu.Unlock()
	return c, nil
}

// statementKey identifies a statement: its signer's certificate, its
// signature and what the signature covers.
func statementKey(certDER, sig, digest []byte) [32]byte {
	return [32]byte(lengthPrefixed(certDER, sig, digest))
}
