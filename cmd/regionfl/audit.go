package main

import (
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/spf13/cobra"

	"regionfl/audit"
)

// auditMaxCAFile bounds the --ca file read by the audit commands.
const auditMaxCAFile = 1 << 20

func newAuditCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "Check the coordinator's signed audit log"}
	cmd.AddCommand(newAuditVerifyCmd(), newAuditExportCmd())
	return cmd
}

func newAuditVerifyCmd() *cobra.Command {
	var (
		caFile string
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "verify FILE",
		Short: "Verify an audit export offline (records, proofs, checkpoints, signatures)",
		Long: "Verify an audit export (JSON Lines) offline: every record's inclusion in the\n" +
			"signed log, that no record the export's filter selects was edited, removed,\n" +
			"reordered or cut off, the checkpoints' consistency with the final head, and\n" +
			"the coordinator signatures. Give --ca to check the signers against the region\n" +
			"CA; without it signatures are only checked against the certificates in the\n" +
			"file. Exits non-zero and names the first bad line on failure.",
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var roots *x509.CertPool
			if caFile != "" {
				var err error
				if roots, err = auditCAPool(caFile); err != nil {
					return err
				}
			}
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			rep, verr := audit.Verify(f, roots)
			if asJSON {
				if err := printJSON(cmd.OutOrStdout(), auditJSON(rep, verr)); err != nil {
					return err
				}
			}
			if verr != nil {
				return fmt.Errorf("%s: verification FAILED: %w", args[0], verr)
			}
			if !asJSON {
				printAuditReport(cmd.OutOrStdout(), rep)
			}
			if roots == nil {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning: the signer was not checked against a CA (give --ca CERT): anyone can sign a file that passes")
			}
			return nil
		},
	}
	cmd.Flags().StringVar(&caFile, "ca", "", "region CA certificate (PEM) the signers must be issued by")
	cmd.Flags().BoolVar(&asJSON, "json", false, "print the report as JSON")
	return cmd
}

func auditCAPool(file string) (*x509.CertPool, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	defer f.Close()
	pem, err := io.ReadAll(io.LimitReader(f, auditMaxCAFile+1))
	if err != nil {
		return nil, fmt.Errorf("--ca: %w", err)
	}
	if len(pem) > auditMaxCAFile {
		return nil, fmt.Errorf("--ca: %s is larger than %d bytes", file, auditMaxCAFile)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, usageError{fmt.Errorf("--ca: %s holds no PEM certificate", file)}
	}
	return pool, nil
}

func printAuditReport(w io.Writer, rep audit.Report) {
	checked := "not checked against a CA"
	if rep.CAChecked {
		checked = "issued by the given CA"
	}
	fmt.Fprintf(w, "OK: %d records (%s), tree size %d, signed by %s at %s (%s), %d checkpoints consistent\n",
		rep.Records, rep.Filter, rep.TreeSize, rep.Signer.Name, rep.SignedAt.Format(time.RFC3339), checked, rep.Checkpoints)
	if rep.Records > 0 {
		fmt.Fprintf(w, "records seq %d to %d", rep.FirstSeq, rep.LastSeq)
		if rep.Boundaries > 0 {
			fmt.Fprintf(w, " (+%d boundary record%s proving the selection is complete)", rep.Boundaries, auditPlural(rep.Boundaries))
		}
		fmt.Fprintln(w)
	}
	if rep.SignedContributions > 0 {
		fmt.Fprintf(w, "%d contributions carry their hospital's verified signature\n", rep.SignedContributions)
	}
	if rep.SignedJobs > 0 {
		fmt.Fprintf(w, "%d job submissions carry their researcher's verified signature\n", rep.SignedJobs)
	}
	if rep.SignedApprovals > 0 {
		fmt.Fprintf(w, "%d contributor-set approvals carry their hospital's verified signature\n", rep.SignedApprovals)
	}
	if rep.SignedShares > 0 {
		fmt.Fprintf(w, "%d decryption shares carry their decryptor's verified signature\n", rep.SignedShares)
	}
	fmt.Fprintf(w, "root %s\n", rep.RootHash)
}

func auditPlural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func auditJSON(rep audit.Report, err error) map[string]any {
	out := map[string]any{
		"ok": err == nil, "filter": rep.Filter, "records": rep.Records, "boundaries": rep.Boundaries,
		"first_seq": rep.FirstSeq, "last_seq": rep.LastSeq, "tree_size": rep.TreeSize,
		"root_hash": rep.RootHash, "checkpoints": rep.Checkpoints, "ca_checked": rep.CAChecked,
		"signed_contributions": rep.SignedContributions, "signed_jobs": rep.SignedJobs, "signed_shares": rep.SignedShares,
		"signed_approvals": rep.SignedApprovals,
	}
	if rep.Signer.Name != "" {
		out["signer"] = rep.Signer.Name
		out["signed_at"] = rep.SignedAt.Format(time.RFC3339Nano)
	}
	if err != nil {
		out["error"] = err.Error()
		var ve *audit.VerifyError
		if errors.As(err, &ve) {
			out["line"] = ve.Line
		}
	}
	return out
}
