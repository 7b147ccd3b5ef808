package main

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"regionfl/client"
	"regionfl/coordinator/web"
	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

func newUICmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ui", Short: "The coordinator's read-only web view"}
	cmd.AddCommand(newUILoginCmd(), newUIEndSessionsCmd())
	return cmd
}

// newUIEndSessionsCmd is `regionfl ui end-sessions ROLE/NAME`: an
// operator ends an identity's web-view sessions on every replica (a
// session opened with a login link has no certificate to revoke).
func newUIEndSessionsCmd() *cobra.Command {
	var cf clientFlags
	cmd := &cobra.Command{
		Use:     "end-sessions ROLE/NAME",
		Short:   "End every web-view session of one identity that began before now, on every replica (operator)",
		Example: "  regionfl ui end-sessions auditor/alice --coordinator c1:7443,c2:7443,c3:7443 --ca ca.crt --cert ops.crt --key ops.key",
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			id, err := identity.ParseIdentity(args[0])
			if err != nil {
				return usageError{fmt.Errorf("ROLE/NAME: %w", err)}
			}
			if _, err := request(cmd.Context(), &cf, func(ctx context.Context, conn client.Conn) (*pb.EndWebSessionsResponse, error) {
				return conn.Operator.EndWebSessions(ctx, &pb.EndWebSessionsRequest{Identity: id.String()})
			}); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "web sessions of %s ended\n", id)
			return nil
		},
	}
	cf.register(cmd.Flags())
	return cmd
}

func newUILoginCmd() *cobra.Command {
	var (
		secretFile, dataDir, name, role, base string
		ttl                                   time.Duration
	)
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Print a short-lived login link to a replica's web view",
		Long: "Print a login link for the web view of one coordinator replica, for a browser\n" +
			"that holds no region client certificate (as Jupyter's token URL). Run it on the\n" +
			"replica's host: the link is signed with the replica's UI secret (DATA_DIR/" + web.SecretFileName + ",\n" +
			"created at the replica's first start), so only that replica accepts it. The link\n" +
			"works until --ttl passes; the browser session it opens lasts 8 hours at most.\n" +
			"Treat the link as a password: anyone holding it reads the view as --id.",
		Example: "  regionfl ui login --data-dir /var/lib/regionfl/c1 --id alice --role auditor --url https://c1.region.example:8443",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			switch {
			case secretFile == "" && dataDir == "":
				return usageError{errors.New("give --secret-file or --data-dir")}
			case secretFile != "" && dataDir != "":
				return usageError{errors.New("--secret-file and --data-dir exclude each other")}
			case secretFile == "":
				secretFile = filepath.Join(dataDir, web.SecretFileName)
			}
			if err := identity.ValidName(name); err != nil {
				return usageError{fmt.Errorf("--id: %w", err)}
			}
			r, err := identity.ParseRole(role)
			if err != nil || !web.RoleAllowed(r) {
				return usageError{fmt.Errorf("--role: want auditor, researcher or operator, not %q", role)}
			}
			if ttl <= 0 || ttl > web.MaxLoginTTL {
				return usageError{fmt.Errorf("--ttl: want more than 0 and at most %s", web.MaxLoginTTL)}
			}
			u, err := url.Parse(base)
			if err != nil || u.Scheme != "https" || u.Host == "" || (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
				return usageError{fmt.Errorf("--url: want https://HOST:PORT of the replica's web view, not %q", base)}
			}
			secret, err := web.ReadSecret(secretFile)
			if err != nil {
				return fmt.Errorf("UI secret: %w", err)
			}
			now := time.Now()
			token := web.MintLoginToken(secret, identity.Identity{Name: name, Role: r}, ttl, now)
			fmt.Fprintln(cmd.OutOrStdout(), web.LoginURL(u.Scheme+"://"+u.Host, token))
			fmt.Fprintf(cmd.ErrOrStderr(), "login link for %s/%s, valid until %s\n", r, name, now.Add(ttl).UTC().Format(time.RFC3339))
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&secretFile, "secret-file", "", "the replica's UI secret file (DATA_DIR/"+web.SecretFileName+")")
	f.StringVar(&dataDir, "data-dir", "", "the replica's data directory (reads its "+web.SecretFileName+")")
	f.StringVar(&name, "id", "", "identity name the browser session acts as")
	f.StringVar(&role, "role", "auditor", "auditor, researcher or operator")
	f.StringVar(&base, "url", "", "the replica's web view, https://HOST:PORT")
	f.DurationVar(&ttl, "ttl", 15*time.Minute, "how long the link stays valid (at most 24h)")
	return cmd
}
