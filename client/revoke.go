package client

import (
	"crypto/tls"
	"fmt"
	"time"

	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

// RevokeRequest is an operator's signed revocation of a certificate serial
// (any common hex form; it is normalized before signing), signed with the
// key of cert (an operator certificate) at now. Hospitals verify the
// signature themselves before they refuse the certificate.
func RevokeRequest(cert tls.Certificate, serial, reason string, now time.Time) (*pb.RevokeCertificateRequest, error) {
	s := identity.NormalizeSerial(serial)
	if s == "" {
		return nil, fmt.Errorf("serial: %q is not a hexadecimal certificate serial", serial)
	}
	sig, ms, err := identity.SignRevocation(cert.PrivateKey, s, reason, now)
	if err != nil {
		return nil, err
	}
	return &pb.RevokeCertificateRequest{Serial: s, Reason: reason, SignedUnixMs: ms, Signature: sig}, nil
}
