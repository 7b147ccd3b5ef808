package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"regionfl/client"
	pb "regionfl/proto/regionfl/v1"
)

// newAuditExportCmd is `regionfl audit export`: the auditor's copy of the
// log (or of one job, or a time window), verifiable offline with
// `regionfl audit verify`.
func newAuditExportCmd() *cobra.Command {
	var (
		cf    clientFlags
		job   string
		since string
		until string
		out   string
	)
	cmd := &cobra.Command{
		Use:   "export -o FILE",
		Short: "Export the audit log as JSON Lines with proofs and a signed head (role auditor)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if out == "" {
				return usageError{errors.New("-o FILE is required")}
			}
			req := &pb.ExportAuditRequest{JobId: job}
			var err error
			if req.SinceUnixMs, err = parseTimeFlag("--since", since); err != nil {
				return err
			}
			if req.UntilUnixMs, err = parseTimeFlag("--until", until); err != nil {
				return err
			}
			c, err := cf.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			tmp, err := os.CreateTemp(filepath.Dir(out), ".audit-*.jsonl")
			if err != nil {
				return err
			}
			defer os.Remove(tmp.Name())
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Minute)
			defer cancel()
			err = c.Do(ctx, func(ctx context.Context, conn client.Conn) error {
				if _, err := tmp.Seek(0, io.SeekStart); err != nil {
					return err
				}
				if err := tmp.Truncate(0); err != nil {
					return err
				}
				stream, err := conn.Auditor.ExportAudit(ctx, req)
				if err != nil {
					return err
				}
				return client.Receive(stream, func(m *pb.ExportAuditResponse) error {
					if _, err := tmp.Write(m.Chunk); err != nil {
						return err
					}
					return nil
				})
			})
			if err != nil {
				tmp.Close()
				return err
			}
			if err := tmp.Close(); err != nil {
				return err
			}
			if err := os.Rename(tmp.Name(), out); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "audit log written to %s; check it with: regionfl audit verify %s --ca CA.crt\n", out, out)
			return nil
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().StringVar(&job, "job", "", "only this job's records")
	cmd.Flags().StringVar(&since, "since", "", "only records at or after this time (RFC 3339, e.g. 2026-11-01T00:00:00Z)")
	cmd.Flags().StringVar(&until, "until", "", "only records before this time (RFC 3339)")
	cmd.Flags().StringVarP(&out, "output", "o", "", "file to write (JSON Lines)")
	return cmd
}

func parseTimeFlag(name, v string) (int64, error) {
	if v == "" {
		return 0, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return 0, usageError{fmt.Errorf("%s: %v (want RFC 3339, e.g. 2026-11-01T00:00:00Z)", name, err)}
	}
	return t.UnixMilli(), nil
}
