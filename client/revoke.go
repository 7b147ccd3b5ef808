package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

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

// PublishRevocationList signs, with the key of cert (an operator
// certificate's), the region's revocation list as the coordinator holds
// it now, and publishes it: hospitals of a region with a revocation
// maximum age act only while they hold a list younger than that, so an
// operator publishes one after every revocation and on a schedule. It
// refuses to sign a list that leaves out a serial of the newest list an
// operator signed (verified against ca), so a coordinator cannot have a
// revocation undone through the operator. It returns the list's size.
func PublishRevocationList(ctx context.Context, c *Client, cert tls.Certificate, ca *x509.CertPool, now func() time.Time) (int, error) {
	for attempt := 0; ; attempt++ {
		var cur *pb.ListRevokedResponse
		err := c.Do(ctx, func(ctx context.Context, conn Conn) error {
			var err error
			cur, err = conn.Operator.ListRevoked(ctx, &pb.ListRevokedRequest{})
			return err
		})
		if err != nil {
			return 0, err
		}
		if len(cur.RegionDigest) != 32 {
			return 0, errors.New("the region does not exist yet: a revocation list is bound to it")
		}
		region := [32]byte(cur.RegionDigest)
		serials := make([]string, 0, len(cur.Revoked))
		for _, r := range cur.Revoked {
			serials = append(serials, r.Serial)
		}
		slices.Sort(serials)
		serials = slices.Compact(serials)
		if prev := cur.List; prev != nil {
			if _, err := identity.VerifyRevocationList(ca, prev.Certificate, prev.Signature, region, prev.IssuedUnixMs, prev.Serials, now()); err != nil {
				return 0, fmt.Errorf("the coordinator's current revocation list does not verify: %w", err)
			}
			for _, s := range prev.Serials {
				if _, found := slices.BinarySearch(serials, s); !found {
					return 0, fmt.Errorf("the coordinator lists no revocation of %s, which the signed list of %s names: refusing to sign a list without it",
						s, time.UnixMilli(prev.IssuedUnixMs).UTC().Format(time.RFC3339))
				}
			}
		}
		sig, ms, err := identity.SignRevocationList(cert.PrivateKey, region, serials, now())
		if err != nil {
			return 0, err
		}
		req := &pb.PublishRevocationListRequest{IssuedUnixMs: ms, Serials: serials, Signature: sig}
		err = c.Do(ctx, func(ctx context.Context, conn Conn) error {
			_, err := conn.Operator.PublishRevocationList(ctx, req)
			return err
		})
		// A revocation between the read and the publish: sign again.
		if status.Code(err) == codes.FailedPrecondition && attempt < 2 {
			continue
		}
		return len(serials), err
	}
}
