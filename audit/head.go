package audit

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"regionfl/identity"
)

// TreeHead is a signed commitment to the log at some size, signed with a
// coordinator replica's TLS key.
//
// The signature covers, and only covers, this encoding (integers
// big-endian, the tag as a uint32 length and its bytes):
//
//	string "regionfl/audit/sth/v1"
//	uint64 size
//	[32]byte root hash
//	[32]byte job index hash
//	int64  time_unix_ms
//
// For an ECDSA key it is an ASN.1 ECDSA signature of the SHA-256 of that
// encoding; for an Ed25519 key an Ed25519 signature of the encoding itself.
// Signer is the identity name in the certificate and CertPEM the signer's
// certificate (optionally followed by intermediates); both are checked
// against the signature and, if a CA is given, the CA.
type TreeHead struct {
	Size         uint64 `json:"size"`
	RootHash     string `json:"root_hash"`
	JobIndexHash string `json:"job_index_hash"`
	TimeUnixMs   int64  `json:"time_unix_ms"`
	Signer       string `json:"signer"`
	Signature    string `json:"signature"`
	CertPEM      string `json:"cert_pem"`
}

const (
	headTag         = "regionfl/audit/sth/v1"
	maxCertPEM      = 16 << 10
	maxSignature    = 1024 // base64 characters
	maxCertsInChain = 4
)

// ErrHead is wrapped by every tree head verification failure.
var ErrHead = errors.New("audit: bad tree head")

func headf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrHead}, args...)...)
}

func headInput(c Commitment, timeUnixMs int64) []byte {
	b := make([]byte, 0, 4+len(headTag)+8+64+8)
	b = binary.BigEndian.AppendUint32(b, uint32(len(headTag)))
	b = append(b, headTag...)
	b = binary.BigEndian.AppendUint64(b, c.Size)
	b = append(b, c.Root[:]...)
	b = append(b, c.JobIndex[:]...)
	return binary.BigEndian.AppendUint64(b, uint64(timeUnixMs))
}

// Commitment parses the head's hashes.
func (th *TreeHead) Commitment() (Commitment, error) {
	root, err := ParseHash(th.RootHash)
	if err != nil {
		return Commitment{}, headf("root_hash: %v", err)
	}
	jobs, err := ParseHash(th.JobIndexHash)
	if err != nil {
		return Commitment{}, headf("job_index_hash: %v", err)
	}
	return Commitment{Size: th.Size, Root: root, JobIndex: jobs}, nil
}

// checkSyntax checks what can be checked without cryptography.
func (th *TreeHead) checkSyntax() error {
	if _, err := th.Commitment(); err != nil {
		return err
	}
	if th.TimeUnixMs <= 0 {
		return headf("time_unix_ms %d is not positive", th.TimeUnixMs)
	}
	if err := identity.ValidName(th.Signer); err != nil {
		return headf("signer: %v", err)
	}
	if th.Signature == "" || len(th.Signature) > maxSignature {
		return headf("signature: want 1 to %d base64 characters", maxSignature)
	}
	if th.CertPEM == "" || len(th.CertPEM) > maxCertPEM {
		return headf("cert_pem: want 1 to %d bytes", maxCertPEM)
	}
	return nil
}

// SignTreeHead signs c at time timeUnixMs with signer, whose certificate is
// certDER. The certificate must carry a regionfl identity and the signer's
// public key; the verifier, not this function, insists on the coordinator
// role. ECDSA and Ed25519 keys are supported.
func SignTreeHead(signer crypto.Signer, certDER []byte, c Commitment, timeUnixMs int64) (TreeHead, error) {
	cert, err := x509.ParseCertificate(certDER)
	if err != nil {
		return TreeHead{}, fmt.Errorf("audit: signing certificate: %w", err)
	}
	id, err := identity.FromCertificate(cert)
	if err != nil {
		return TreeHead{}, fmt.Errorf("audit: signing certificate: %w", err)
	}
	pub, ok := signer.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return TreeHead{}, errors.New("audit: the signing key does not match the certificate")
	}
	if timeUnixMs <= 0 {
		return TreeHead{}, fmt.Errorf("audit: time_unix_ms %d is not positive", timeUnixMs)
	}
	msg := headInput(c, timeUnixMs)
	var sig []byte
	switch signer.Public().(type) {
	case *ecdsa.PublicKey:
		d := sha256.Sum256(msg)
		sig, err = signer.Sign(rand.Reader, d[:], crypto.SHA256)
	case ed25519.PublicKey:
		sig, err = signer.Sign(rand.Reader, msg, crypto.Hash(0))
	default:
		return TreeHead{}, fmt.Errorf("audit: cannot sign with a %T key (want ECDSA or Ed25519)", signer.Public())
	}
	if err != nil {
		return TreeHead{}, fmt.Errorf("audit: signing tree head: %w", err)
	}
	return TreeHead{
		Size:         c.Size,
		RootHash:     c.Root.String(),
		JobIndexHash: c.JobIndex.String(),
		TimeUnixMs:   timeUnixMs,
		Signer:       id.Name,
		Signature:    base64.StdEncoding.EncodeToString(sig),
		CertPEM:      string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER})),
	}, nil
}

// SignHead signs the log's commitment at size (see SignTreeHead).
func (l *Log) SignHead(signer crypto.Signer, certDER []byte, size uint64, timeUnixMs int64) (TreeHead, error) {
	c, err := l.CommitmentAt(size)
	if err != nil {
		return TreeHead{}, err
	}
	return SignTreeHead(signer, certDER, c, timeUnixMs)
}

// VerifyTreeHead checks a tree head's signature and signer: the signature
// must verify with the certificate's key, the certificate must have been
// valid at the head's time and carry the regionfl identity named by Signer
// with the coordinator role. If roots is not nil the certificate must also
// chain to one of them (at the head's time; revocation is not checked). If
// roots is nil only the certificate's own claims are checked: anyone can
// make such a certificate, so the caller must say that the signer was not
// checked against a CA.
func VerifyTreeHead(th TreeHead, roots *x509.CertPool) (identity.Identity, error) {
	if err := th.checkSyntax(); err != nil {
		return identity.Identity{}, err
	}
	c, _ := th.Commitment()
	var certs []*x509.Certificate
	rest := []byte(th.CertPEM)
	for len(certs) <= maxCertsInChain {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			return identity.Identity{}, headf("cert_pem holds a %q block", blk.Type)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return identity.Identity{}, headf("cert_pem: %v", err)
		}
		certs = append(certs, cert)
	}
	if len(certs) == 0 || len(certs) > maxCertsInChain {
		return identity.Identity{}, headf("cert_pem: want 1 to %d certificates", maxCertsInChain)
	}
	leaf := certs[0]
	at := time.UnixMilli(th.TimeUnixMs)
	if at.Before(leaf.NotBefore) || at.After(leaf.NotAfter) {
		return identity.Identity{}, headf("signed at %s, outside the certificate's validity %s to %s",
			at.UTC().Format(time.RFC3339), leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
	}
	if leaf.KeyUsage != 0 && leaf.KeyUsage&x509.KeyUsageDigitalSignature == 0 {
		return identity.Identity{}, headf("the certificate does not allow digital signatures")
	}
	if roots != nil {
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		if _, err := leaf.Verify(x509.VerifyOptions{
			Roots: roots, Intermediates: inter, CurrentTime: at,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		}); err != nil {
			return identity.Identity{}, headf("signer certificate not issued by the given CA: %v", err)
		}
	}
	id, err := identity.FromCertificate(leaf)
	if err != nil {
		return identity.Identity{}, headf("signer certificate: %v", err)
	}
	if id.Role != identity.RoleCoordinator {
		return id, headf("signed by %s, which is not a coordinator", id)
	}
	if id.Name != th.Signer {
		return id, headf("signer %q, but the certificate names %q", th.Signer, id.Name)
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(th.Signature)
	if err != nil {
		return id, headf("signature: %v", err)
	}
	msg := headInput(c, th.TimeUnixMs)
	switch pub := leaf.PublicKey.(type) {
	case *ecdsa.PublicKey:
		d := sha256.Sum256(msg)
		if !ecdsa.VerifyASN1(pub, d[:], sig) {
			return id, headf("signature does not verify")
		}
	case ed25519.PublicKey:
		if !ed25519.Verify(pub, msg, sig) {
			return id, headf("signature does not verify")
		}
	default:
		return id, headf("unsupported %T signer key", leaf.PublicKey)
	}
	return id, nil
}
