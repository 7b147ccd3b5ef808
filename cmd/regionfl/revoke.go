package main

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"regionfl/client"
	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

// newRevokeCmd is `regionfl operator revoke`: a certificate is refused by
// every replica from the next request on.
func newRevokeCmd() *cobra.Command {
	var (
		cf       clientFlags
		certFile string
		reason   string
	)
	cmd := &cobra.Command{
		Use:   "revoke [SERIAL]",
		Short: "Revoke a certificate by serial (hex) or with --cert-file, signed with the operator's key; replicas refuse it from the next request, hospitals once they verify the signature",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var serial string
			switch {
			case len(args) == 1 && certFile == "":
				serial = args[0]
			case len(args) == 0 && certFile != "":
				b, err := os.ReadFile(certFile)
				if err != nil {
					return err
				}
				block, _ := pem.Decode(b)
				if block == nil || block.Type != "CERTIFICATE" {
					return fmt.Errorf("%s: no PEM certificate", certFile)
				}
				c, err := x509.ParseCertificate(block.Bytes)
				if err != nil {
					return fmt.Errorf("%s: %w", certFile, err)
				}
				serial = identity.SerialHex(c)
			case len(args) == 0:
				return usageError{errors.New("give the SERIAL (hex) of the certificate to revoke, or --cert-file FILE")}
			default:
				return usageError{errors.New("give a SERIAL or --cert-file, not both")}
			}
			if len(reason) > identity.MaxRevocationReason {
				return usageError{fmt.Errorf("--reason: longer than %d bytes", identity.MaxRevocationReason)}
			}
			cert, _, err := cf.load()
			if err != nil {
				return err
			}
			req, err := client.RevokeRequest(cert, serial, reason, time.Now())
			if err != nil {
				return usageError{err}
			}
			serial = req.Serial
			if _, err := request(cmd.Context(), &cf, func(ctx context.Context, conn client.Conn) (*pb.RevokeCertificateResponse, error) {
				return conn.Operator.RevokeCertificate(ctx, req)
			}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "certificate %s revoked\n", serial)
			// Hospitals that never see the revocation itself (a coordinator
			// can hold it back) learn of it from the next signed list.
			n, err := publishRevocations(cmd.Context(), &cf)
			if err != nil {
				return fmt.Errorf("revoked, but the revocation list was not published (run regionfl operator publish-revocations): %w", err)
			}
			reportPublished(cmd, n, 0)
			return nil
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().StringVar(&certFile, "cert-file", "", "the certificate to revoke (PEM)")
	cmd.Flags().StringVar(&reason, "reason", "", "why (recorded with the revocation)")
	return cmd
}

func newListRevokedCmd() *cobra.Command {
	return newListCmd(listing[*pb.Revocation]{
		use:   "list-revoked",
		short: "List revoked certificate serials",
		fetch: func(ctx context.Context, conn client.Conn) ([]*pb.Revocation, error) {
			resp, err := conn.Operator.ListRevoked(ctx, &pb.ListRevokedRequest{})
			return resp.GetRevoked(), err
		},
		json: func(r *pb.Revocation) map[string]any {
			return map[string]any{"serial": r.Serial, "reason": r.Reason, "revoked_by": r.RevokedBy, "unix_ms": r.UnixMs}
		},
		header: "SERIAL\tREVOKED\tBY\tREASON",
		row: func(r *pb.Revocation) string {
			return fmt.Sprintf("%s\t%s\t%s\t%s", r.Serial, time.UnixMilli(r.UnixMs).UTC().Format(time.RFC3339), r.RevokedBy, r.Reason)
		},
	})
}
