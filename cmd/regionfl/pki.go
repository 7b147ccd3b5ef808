package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"

	"regionfl/identity"
	"regionfl/node"
)

func newCACmd() *cobra.Command {
	cmd := &cobra.Command{Use: "ca", Short: "Run the region's certificate authority"}
	var (
		dir, name string
		validity  time.Duration
	)
	initCmd := &cobra.Command{
		Use:   "init",
		Short: "Create the region CA (ca.key is written 0600 and never leaves DIR)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usageError{errors.New("--dir is required")}
			}
			if _, err := identity.InitCA(dir, name, validity); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "region CA created in %s (%s)\n", dir, identity.CACertFile)
			return nil
		},
	}
	initCmd.Flags().StringVar(&dir, "dir", "", "directory for the CA's key and certificate")
	initCmd.Flags().StringVar(&name, "name", "regionfl", "region name shown in the CA certificate")
	initCmd.Flags().DurationVar(&validity, "validity", 5*365*24*time.Hour, "how long the CA is valid")

	var (
		signDir, role, out string
		certValidity       time.Duration
		dnsNames, ipAddrs  []string
	)
	sign := &cobra.Command{
		Use:   "sign CSR",
		Short: "Issue a certificate for a CSR with a role (hospital, researcher, auditor, operator, coordinator)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if signDir == "" || out == "" {
				return usageError{errors.New("--dir and -o are required")}
			}
			r, err := identity.ParseRole(role)
			if err != nil {
				return usageError{fmt.Errorf("--role: %w", err)}
			}
			ca, err := identity.LoadCA(signDir)
			if err != nil {
				return err
			}
			var ips []net.IP
			for _, a := range ipAddrs {
				ip := net.ParseIP(a)
				if ip == nil {
					return usageError{fmt.Errorf("--ip: %q is not an IP address", a)}
				}
				ips = append(ips, ip)
			}
			for _, d := range dnsNames {
				if net.ParseIP(d) != nil {
					return usageError{fmt.Errorf("--dns: %q is an IP address: give it with --ip", d)}
				}
			}
			cert, pem, err := ca.SignCSR(args[0], r, certValidity, dnsNames, ips)
			if err != nil {
				return err
			}
			if err := os.WriteFile(out, pem, 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "wrote %s: %s %s, serial %s, valid until %s\n", out, r, cert.Subject.CommonName,
				identity.SerialHex(cert), cert.NotAfter.UTC().Format(time.RFC3339))
			return nil
		},
	}
	sign.Flags().StringVar(&signDir, "dir", "", "the CA directory")
	sign.Flags().StringVar(&role, "role", "", "role to certify")
	sign.Flags().StringVarP(&out, "output", "o", "", "certificate file to write")
	sign.Flags().DurationVar(&certValidity, "validity", 30*24*time.Hour, "certificate lifetime (short-lived by default)")
	sign.Flags().StringSliceVar(&dnsNames, "dns", nil, "DNS names for a replica's certificate")
	sign.Flags().StringSliceVar(&ipAddrs, "ip", nil, "IP addresses for a replica's certificate (IP SANs), e.g. 127.0.0.1")
	cmd.AddCommand(initCmd, sign)
	return cmd
}

// newIdentityInitCmd is `regionfl <role> init`: a key and a CSR in DIR.
func newIdentityInitCmd(role string) *cobra.Command {
	var id, dir string
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create this " + role + "'s private key (0600, stays in DIR) and a CSR for the region CA",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" || dir == "" {
				return usageError{errors.New("--id and --dir are required")}
			}
			csr, err := identity.InitIdentity(dir, id)
			if err != nil {
				return err
			}
			if role == "hospital" {
				// The key the ceremony's Shamir shares are sealed to; like the
				// TLS key it never leaves DIR (node run finds it beside --key).
				if _, err := node.InitHPKEKey(dir); err != nil {
					return err
				}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "keys and CSR for %s written in %s; send %s to the region CA\n", id, dir, csr)
			return nil
		},
	}
	cmd.Flags().StringVar(&id, "id", "", "the identity's name")
	cmd.Flags().StringVar(&dir, "dir", "", "directory for the key and CSR")
	return cmd
}

// newIdentityRenewCmd is `regionfl <role> renew`: a fresh CSR for the key
// and name already in DIR, for the CA to sign again before the short-lived
// certificate expires.
func newIdentityRenewCmd(role string) *cobra.Command {
	var dir string
	cmd := &cobra.Command{
		Use:   "renew",
		Short: "Write a fresh CSR for this " + role + "'s existing key and name (certificates are short-lived)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if dir == "" {
				return usageError{errors.New("--dir is required")}
			}
			csr, err := identity.RenewCSR(dir)
			if err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "renewal CSR written; have the region CA sign %s, then replace %s\n", csr, identity.CertFile)
			return nil
		},
	}
	cmd.Flags().StringVar(&dir, "dir", "", "the identity's directory (holding tls.key and tls.crt)")
	return cmd
}
