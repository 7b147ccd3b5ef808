package identity

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"time"
)

// File names inside a CA or identity directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
	KeyFile    = "tls.key"
	CSRFile    = "tls.csr"
	CertFile   = "tls.crt"
)

// maxPEM bounds what is read from a PEM file given on the command line.
const maxPEM = 64 << 10

// InitCA creates a region CA in dir; it refuses to overwrite one.
func InitCA(dir, name string, validity time.Duration) (*CA, error) {
	if _, err := os.Stat(filepath.Join(dir, CAKeyFile)); err == nil {
		return nil, fmt.Errorf("identity: %s already holds a CA", dir)
	}
	ca, err := NewCA(name, validity)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := x509.MarshalPKCS8PrivateKey(ca.Key)
	if err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(dir, CAKeyFile), "PRIVATE KEY", key, 0o600); err != nil {
		return nil, err
	}
	if err := writePEM(filepath.Join(dir, CACertFile), "CERTIFICATE", ca.Cert.Raw, 0o644); err != nil {
		return nil, err
	}
	return ca, nil
}

// LoadCA reads a CA created by InitCA.
func LoadCA(dir string) (*CA, error) {
	cert, err := readCertificate(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, err
	}
	signer, err := readSigner(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: signer}, nil
}

// readCertificate reads one PEM certificate.
func readCertificate(path string) (*x509.Certificate, error) {
	der, err := readPEM(path, "CERTIFICATE")
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", path, err)
	}
	return cert, nil
}

// readSigner reads one PEM PKCS #8 private key that can sign.
func readSigner(path string) (crypto.Signer, error) {
	der, err := readPEM(path, "PRIVATE KEY")
	if err != nil {
		return nil, err
	}
	key, err := x509.ParsePKCS8PrivateKey(der)
	if err != nil {
		return nil, fmt.Errorf("identity: %s: %w", path, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("identity: %s: the key cannot sign", path)
	}
	return signer, nil
}

// writeCSR writes dir's CSR for name, signed by key, and returns its path.
func writeCSR(dir, name string, key crypto.Signer) (string, error) {
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: name},
	}, key)
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, CSRFile)
	return path, writePEM(path, "CERTIFICATE REQUEST", csr, 0o644)
}

// InitIdentity creates a private key and a CSR for name in dir. The key
// never leaves dir; only the CSR goes to the CA.
func InitIdentity(dir, name string) (csrPath string, err error) {
	if err := ValidName(name); err != nil {
		return "", err
	}
	if _, err := os.Stat(filepath.Join(dir, KeyFile)); err == nil {
		return "", fmt.Errorf("identity: %s already holds a key", dir)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return "", err
	}
	if err := writePEM(filepath.Join(dir, KeyFile), "PRIVATE KEY", der, 0o600); err != nil {
		return "", err
	}
	return writeCSR(dir, name, key)
}

// SignCSR checks a CSR's signature and name and issues a certificate for it
// with the role the CA operator chose; it returns the certificate and its
// PEM encoding.
func (ca *CA) SignCSR(csrPath string, role Role, validity time.Duration, dnsNames []string, ips []net.IP) (*x509.Certificate, []byte, error) {
	der, err := readPEM(csrPath, "CERTIFICATE REQUEST")
	if err != nil {
		return nil, nil, err
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		return nil, nil, fmt.Errorf("identity: %s: %w", csrPath, err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, nil, fmt.Errorf("identity: %s: bad signature: %w", csrPath, err)
	}
	cert, err := ca.Sign(csr.PublicKey, Identity{Name: csr.Subject.CommonName, Role: role}, validity, dnsNames, ips)
	if err != nil {
		return nil, nil, err
	}
	return cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}), nil
}

func writePEM(path, typ string, der []byte, mode os.FileMode) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), mode)
}

func readPEM(path, typ string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Size() > maxPEM {
		return nil, fmt.Errorf("identity: %s: %d bytes is too large for a PEM file", path, fi.Size())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil || block.Type != typ {
		return nil, fmt.Errorf("identity: %s: no PEM %s", path, typ)
	}
	return block.Bytes, nil
}

// RenewCSR writes a fresh CSR in dir for the key already there, named like
// the identity's current certificate: certificates are short-lived, and a
// renewal must not need a new key to travel or a new name to be checked.
func RenewCSR(dir string) (csrPath string, err error) {
	signer, err := readSigner(filepath.Join(dir, KeyFile))
	if err != nil {
		return "", err
	}
	cert, err := readCertificate(filepath.Join(dir, CertFile))
	if err != nil {
		return "", err
	}
	id, err := FromCertificate(cert)
	if err != nil {
		return "", err
	}
	return writeCSR(dir, id.Name, signer)
}

// SerialHex is the form of a certificate serial used in revocation lists.
func SerialHex(c *x509.Certificate) string { return c.SerialNumber.Text(16) }
