package main

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/spf13/pflag"

	"regionfl/client"
	"regionfl/identity"
)

// tlsFlags are the certificate files every command that talks to the
// region needs.
type tlsFlags struct {
	ca, cert, key string
}

func (t *tlsFlags) register(f *pflag.FlagSet) {
	f.StringVar(&t.ca, "ca", "", "region CA certificate (PEM)")
	f.StringVar(&t.cert, "cert", "", "this identity's certificate (PEM)")
	f.StringVar(&t.key, "key", "", "this identity's private key (PEM)")
}

func (t *tlsFlags) load() (tls.Certificate, *x509.CertPool, error) {
	for name, v := range map[string]string{"--ca": t.ca, "--cert": t.cert, "--key": t.key} {
		if v == "" {
			return tls.Certificate{}, nil, usageError{fmt.Errorf("%s is required", name)}
		}
	}
	cert, err := tls.LoadX509KeyPair(t.cert, t.key)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("--cert/--key: %w", err)
	}
	pem, err := os.ReadFile(t.ca)
	if err != nil {
		return tls.Certificate{}, nil, fmt.Errorf("--ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return tls.Certificate{}, nil, fmt.Errorf("--ca: %s holds no PEM certificate", t.ca)
	}
	return cert, pool, nil
}

// clientFlags connect a CLI command to the coordinators.
type clientFlags struct {
	tlsFlags
	coordinators string
}

func (c *clientFlags) register(f *pflag.FlagSet) {
	c.tlsFlags.register(f)
	f.StringVar(&c.coordinators, "coordinator", os.Getenv("REGIONFL_COORDINATOR"), "coordinator gRPC addresses, comma-separated (env REGIONFL_COORDINATOR)")
}

func splitAddrs(s string) []string {
	var out []string
	for _, a := range strings.Split(s, ",") {
		if a = strings.TrimSpace(a); a != "" {
			out = append(out, a)
		}
	}
	return out
}

func (c *clientFlags) dial() (*client.Client, error) {
	addrs := splitAddrs(c.coordinators)
	if len(addrs) == 0 {
		return nil, usageError{errors.New("--coordinator is required")}
	}
	cert, pool, err := c.load()
	if err != nil {
		return nil, err
	}
	return client.New(addrs, identity.ClientConfig(cert, pool))
}
