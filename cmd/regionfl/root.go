package main

import (
	"errors"
	"log/slog"
	"os"

	"github.com/spf13/cobra"
)

type usageError struct{ error }

func isUsage(err error) bool {
	var u usageError
	return errors.As(err, &u)
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
	return root
}

// logger writes structured logs to stderr at the given level.
func logger(level string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usageError{errors.New("--log-level: want debug, info, warn or error")}
	}
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l})), nil
}
