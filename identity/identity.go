// Package identity is regionfl's PKI: a region CA that signs certificates
// naming one identity and one role, TLS 1.3 configurations that require them
// on both sides, and the lookup of the caller's identity from a verified
// connection. Identity always comes from the certificate, never from a
// request field.
package identity

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Role is what a certificate holder may do in the region.
type Role string

// The roles of a region.
const (
	RoleHospital    Role = "hospital"
	RoleResearcher  Role = "researcher"
	RoleAuditor     Role = "auditor"
	RoleOperator    Role = "operator"
	RoleCoordinator Role = "coordinator"
)

// Roles lists every valid role.
var Roles = []Role{RoleHospital, RoleResearcher, RoleAuditor, RoleOperator, RoleCoordinator}

// ParseRole checks that s names a role.
func ParseRole(s string) (Role, error) {
	for _, r := range Roles {
		if string(r) == s {
			return r, nil
		}
	}
	return "", fmt.Errorf("%w: %q (want one of hospital, researcher, auditor, operator, coordinator)", ErrBadRole, s)
}

// Errors.
var (
	ErrBadRole     = errors.New("identity: unknown role")
	ErrBadName     = errors.New("identity: invalid name")
	ErrNoIdentity  = errors.New("identity: no verified client certificate")
	ErrNotRegionfl = errors.New("identity: certificate carries no regionfl identity")
)

// Identity is who is calling: a name and a role, as certified by the CA.
type Identity struct {
	Name string
	Role Role
}

func (id Identity) String() string { return string(id.Role) + "/" + id.Name }

// ParseIdentity reads ROLE/NAME, the form String writes.
func ParseIdentity(s string) (Identity, error) {
	role, name, ok := strings.Cut(s, "/")
	if !ok {
		return Identity{}, fmt.Errorf("%w: %q is not ROLE/NAME", ErrBadName, s)
	}
	r, err := ParseRole(role)
	if err != nil {
		return Identity{}, err
	}
	if err := ValidName(name); err != nil {
		return Identity{}, err
	}
	return Identity{Name: name, Role: r}, nil
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,62}$`)

// ValidName reports whether name can identify a party: lowercase letters,
// digits, '.', '_' and '-', at most 63 characters.
func ValidName(name string) error {
	if !nameRE.MatchString(name) {
		return fmt.Errorf("%w: %q (lowercase letters, digits, '.', '_', '-'; 1-63 characters)", ErrBadName, name)
	}
	return nil
}

// uri encodes the identity in a URI SAN: regionfl://ROLE/NAME.
func (id Identity) uri() *url.URL {
	return &url.URL{Scheme: "regionfl", Host: string(id.Role), Path: "/" + id.Name}
}

// FromCertificate reads the regionfl identity from a certificate.
func FromCertificate(c *x509.Certificate) (Identity, error) {
	for _, u := range c.URIs {
		if u.Scheme != "regionfl" {
			continue
		}
		role, err := ParseRole(u.Host)
		if err != nil {
			return Identity{}, err
		}
		name := u.Path
		if len(name) > 0 && name[0] == '/' {
			name = name[1:]
		}
		if err := ValidName(name); err != nil {
			return Identity{}, err
		}
		return Identity{Name: name, Role: role}, nil
	}
	return Identity{}, ErrNotRegionfl
}

// FromContext returns the identity of the gRPC peer, taken from its verified
// client certificate.
func FromContext(ctx context.Context) (Identity, error) {
	cert, err := PeerCertificate(ctx)
	if err != nil {
		return Identity{}, err
	}
	return FromCertificate(cert)
}

// PeerCertificate returns the gRPC peer's verified client certificate.
func PeerCertificate(ctx context.Context) (*x509.Certificate, error) {
	p, ok := peer.FromContext(ctx)
	if !ok || p.AuthInfo == nil {
		return nil, ErrNoIdentity
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return nil, ErrNoIdentity
	}
	return info.State.VerifiedChains[0][0], nil
}

// CA is a region certificate authority.
type CA struct {
	Cert *x509.Certificate
	Key  crypto.Signer
}

// NewCA creates a self-signed region CA valid for validity.
func NewCA(name string, validity time.Duration) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: name + " region CA", Organization: []string{"regionfl"}},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(validity),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Pool returns a pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// Sign issues a certificate for id bound to pub. dnsNames and ips are added
// for servers (replicas) so clients can verify the address they dial.
func (ca *CA) Sign(pub crypto.PublicKey, id Identity, validity time.Duration, dnsNames []string, ips []net.IP) (*x509.Certificate, error) {
	for _, d := range dnsNames {
		if net.ParseIP(d) != nil {
			return nil, fmt.Errorf("identity: %q is an IP address, not a DNS name: give it as an IP SAN", d)
		}
	}
	if _, err := ParseRole(string(id.Role)); err != nil {
		return nil, err
	}
	if err := ValidName(id.Name); err != nil {
		return nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: id.Name, OrganizationalUnit: []string{string(id.Role)}},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		URIs:         []*url.URL{id.uri()},
		DNSNames:     dnsNames,
		IPAddresses:  ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, pub, ca.Key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// Issue creates a fresh key and a certificate for id: the in-process path
// (the demo and tests). Real sites create their key locally and send a CSR.
func (ca *CA) Issue(id Identity, validity time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	var (
		dns []string
		ips []net.IP
	)
	if id.Role == RoleCoordinator {
		dns, ips = []string{"localhost", id.Name}, []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
	}
	cert, err := ca.Sign(key.Public(), id, validity, dns, ips)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{cert.Raw}, PrivateKey: key, Leaf: cert}, nil
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
}

// ServerConfig requires TLS 1.3 and a client certificate from the region CA.
func ServerConfig(cert tls.Certificate, ca *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    ca,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
}

// ClientConfig presents cert and trusts only servers certified by the region
// CA with the coordinator role.
func ClientConfig(cert tls.Certificate, ca *x509.CertPool) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      ca,
		// Replicas are reached by address; what matters is that the peer is a
		// coordinator of this region, which VerifyPeerCertificate checks
		// after the standard chain verification against the region CA.
		InsecureSkipVerify: true,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			return verifyCoordinator(raw, ca)
		},
	}
}

func verifyCoordinator(raw [][]byte, ca *x509.CertPool) error {
	if len(raw) == 0 {
		return ErrNoIdentity
	}
	leaf, err := x509.ParseCertificate(raw[0])
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, r := range raw[1:] {
		c, err := x509.ParseCertificate(r)
		if err != nil {
			return err
		}
		inter.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: ca, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("identity: server certificate: %w", err)
	}
	id, err := FromCertificate(leaf)
	if err != nil {
		return err
	}
	if id.Role != RoleCoordinator {
		return fmt.Errorf("identity: server %s is not a coordinator", id)
	}
	return nil
}

// PeerConfig is for replica-to-replica links (Raft): both ends present a
// certificate and both must be coordinators of the region.
func PeerConfig(cert tls.Certificate, ca *x509.CertPool) *tls.Config {
	c := ServerConfig(cert, ca)
	c.RootCAs = ca
	c.InsecureSkipVerify = true // chain and role are checked below, on both sides
	c.VerifyPeerCertificate = func(raw [][]byte, _ [][]*x509.Certificate) error {
		return verifyCoordinator(raw, ca)
	}
	return c
}
