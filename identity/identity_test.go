package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// handshake runs a TLS 1.3 handshake between a server and a client config
// and returns the server's view of the client identity.
func handshake(t *testing.T, server, client *tls.Config) (Identity, error) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", server)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		id  Identity
		err error
	}
	done := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			done <- result{err: err}
			return
		}
		defer c.Close()
		tc := c.(*tls.Conn)
		if err := tc.Handshake(); err != nil {
			done <- result{err: err}
			return
		}
		id, err := FromCertificate(tc.ConnectionState().VerifiedChains[0][0])
		done <- result{id, err}
	}()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(), client)
	if err == nil {
		// TLS 1.3 reports a refused client certificate on first read.
		c.SetReadDeadline(time.Now().Add(2 * time.Second))
		c.Read(make([]byte, 1))
		c.Close()
	}
	r := <-done
	return r.id, r.err
}

func TestMutualTLS(t *testing.T) {
	ca, err := NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewCA("other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	replica, _ := ca.Issue(Identity{Name: "replica-1", Role: RoleCoordinator}, time.Hour)
	hospital, _ := ca.Issue(Identity{Name: "hospital-1", Role: RoleHospital}, time.Hour)
	foreign, _ := other.Issue(Identity{Name: "hospital-1", Role: RoleHospital}, time.Hour)
	expired, _ := ca.Issue(Identity{Name: "hospital-2", Role: RoleHospital}, -2*time.Minute)
	fakeReplica, _ := ca.Issue(Identity{Name: "replica-9", Role: RoleHospital}, time.Hour)

	server := ServerConfig(replica, ca.Pool())
	id, err := handshake(t, server, ClientConfig(hospital, ca.Pool()))
	if err != nil || id != (Identity{"hospital-1", RoleHospital}) {
		t.Fatalf("valid client: %v %v", id, err)
	}
	for name, c := range map[string]*tls.Config{
		"certificate from another CA": ClientConfig(foreign, ca.Pool()),
		"expired certificate":         ClientConfig(expired, ca.Pool()),
		"no certificate":              {MinVersion: tls.VersionTLS13, InsecureSkipVerify: true},
		"TLS 1.2":                     {MaxVersion: tls.VersionTLS12, Certificates: []tls.Certificate{hospital}, InsecureSkipVerify: true},
	} {
		if _, err := handshake(t, server, c); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	// A client refuses a server that is not a coordinator of the region.
	if _, err := handshake(t, ServerConfig(fakeReplica, ca.Pool()), ClientConfig(hospital, ca.Pool())); err == nil {
		t.Error("client accepted a hospital certificate as a coordinator")
	}
}

func TestNamesAndRoles(t *testing.T) {
	for _, bad := range []string{"", "Hospital", "a b", "../x", string(make([]byte, 70))} {
		if ValidName(bad) == nil {
			t.Errorf("name %q accepted", bad)
		}
	}
	if _, err := ParseRole("admin"); err == nil {
		t.Error("unknown role accepted")
	}
}

func TestCSRFlow(t *testing.T) {
	dir := t.TempDir()
	ca, err := InitCA(filepath.Join(dir, "ca"), "test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := InitCA(filepath.Join(dir, "ca"), "test", time.Hour); err == nil {
		t.Fatal("InitCA overwrote an existing CA")
	}
	loaded, err := LoadCA(filepath.Join(dir, "ca"))
	if err != nil || !loaded.Cert.Equal(ca.Cert) {
		t.Fatalf("LoadCA: %v", err)
	}
	csr, err := InitIdentity(filepath.Join(dir, "h1"), "hospital-1")
	if err != nil {
		t.Fatal(err)
	}
	_, pemCert, err := loaded.SignCSR(csr, RoleHospital, time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := tls.X509KeyPair(pemCert, mustRead(t, filepath.Join(dir, "h1", KeyFile)))
	if err != nil {
		t.Fatal(err)
	}
	id, err := FromCertificate(cert.Leaf)
	if err != nil || id != (Identity{"hospital-1", RoleHospital}) {
		t.Fatalf("signed identity %v %v", id, err)
	}

	// Renewal: a fresh CSR for the same key and name, a new serial.
	if err := os.WriteFile(filepath.Join(dir, "h1", CertFile), pemCert, 0o644); err != nil {
		t.Fatal(err)
	}
	csr2, err := RenewCSR(filepath.Join(dir, "h1"))
	if err != nil {
		t.Fatal(err)
	}
	_, pem2, err := loaded.SignCSR(csr2, RoleHospital, time.Hour, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	renewed, err := tls.X509KeyPair(pem2, mustRead(t, filepath.Join(dir, "h1", KeyFile)))
	if err != nil {
		t.Fatal(err)
	}
	if id2, _ := FromCertificate(renewed.Leaf); id2 != id {
		t.Fatalf("renewed identity %v, want %v", id2, id)
	}
	if SerialHex(renewed.Leaf) == SerialHex(cert.Leaf) {
		t.Fatal("renewal reused the serial")
	}
	if _, err := RenewCSR(filepath.Join(dir, "nobody")); err == nil {
		t.Fatal("renewed without a key")
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A replica's certificate names IP addresses as IP SANs, so tools dialing
// https://127.0.0.1:... verify it; an IP given as a DNS name is refused.
func TestSignIPAddresses(t *testing.T) {
	ca, err := NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	id := Identity{Name: "replica-1", Role: RoleCoordinator}
	cert, err := ca.Sign(key.Public(), id, time.Hour, []string{"coord.example"}, []net.IP{net.ParseIP("10.0.0.7")})
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname("10.0.0.7"); err != nil {
		t.Errorf("IP SAN: %v", err)
	}
	if err := cert.VerifyHostname("coord.example"); err != nil {
		t.Errorf("DNS SAN: %v", err)
	}
	if _, err := ca.Sign(key.Public(), id, time.Hour, []string{"127.0.0.1"}, nil); err == nil {
		t.Error("an IP address was accepted as a DNS name")
	}
}
