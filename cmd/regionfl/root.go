package main

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/spf13/cobra"
)

type usageError struct{ error }

// isUsage reports whether err is a usage error: a wrong flag, argument or
// command.
func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u) || strings.HasPrefix(err.Error(), "unknown command ")
}

func newRootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "regionfl",
		Short:         "Federated learning for the hospitals of a region, with encrypted aggregation",
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.AddCommand(newDemoCmd(), newCoordinatorCmd(), newNodeCmd(), newJobCmd(), newModelCmd(), newOperatorCmd(), newCACmd(), newBenchCmd(), newAuditCmd())
	root.AddCommand(newUICmd())
	researcher := &cobra.Command{Use: "researcher", Short: "Set up a researcher identity"}
	researcher.AddCommand(newIdentityInitCmd("researcher"), newIdentityRenewCmd("researcher"))
	auditor := &cobra.Command{Use: "auditor", Short: "Set up an auditor identity"}
	auditor.AddCommand(newIdentityInitCmd("auditor"), newIdentityRenewCmd("auditor"))
	root.AddCommand(researcher, auditor)
	usageOnBadArgs(root)
	return root
}

// usageOnBadArgs makes a wrong number or kind of arguments a usage error
// (exit code 2) on every command that takes arguments. (An unknown
// command is cobra's own error; run maps it to a usage error too.)
func usageOnBadArgs(c *cobra.Command) {
	if c.HasParent() && c.HasSubCommands() && !c.Runnable() {
		// A group (e.g. "job"): with no subcommand its help, with an
		// unknown one a usage error, not cobra's help and exit 0.
		c.RunE = func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageError{fmt.Errorf("unknown command %q for %q", args[0], cmd.CommandPath())}
			}
			return cmd.Help()
		}
	}
	if check := c.Args; check != nil {
		c.Args = func(cmd *cobra.Command, args []string) error {
			if err := check(cmd, args); err != nil {
				return usageError{err}
			}
			return nil
		}
	}
	for _, sub := range c.Commands() {
		usageOnBadArgs(sub)
	}
}

// logger writes structured logs to stderr at the given level.
func logger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{errors.New("--log-level: want debug, info, warn or error")}
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
