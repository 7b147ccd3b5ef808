package main

import (
	"errors"

	"github.com/spf13/cobra"

	"regionfl/coordinator"
)

func newCoordinatorCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "coordinator", Short: "Run a coordinator replica"}
	var (
		cfg      coordinator.Config
		tf       tlsFlags
		join     string
		logLevel string
	)
	run := &cobra.Command{
		Use:   "run",
		Short: "Run one coordinator replica (Raft + gRPC, mutual TLS)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.ID == "" || cfg.DataDir == "" || cfg.RaftAddr == "" || cfg.GRPCAddr == "" {
				return usageError{errors.New("--id, --data-dir, --raft-addr and --grpc-addr are required")}
			}
			cfg.Join = splitAddrs(join)
			if !cfg.Bootstrap && len(cfg.Join) == 0 {
				return usageError{errors.New("give --bootstrap for the first replica or --join ADDR for the others")}
			}
			var err error
			if cfg.Cert, cfg.CA, err = tf.load(); err != nil {
				return err
			}
			if cfg.Logger, err = logger(logLevel); err != nil {
				return err
			}
			r, err := coordinator.Start(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			<-cmd.Context().Done()
			cfg.Logger.Info("shutting down")
			return r.Stop()
		},
	}
	f := run.Flags()
	f.StringVar(&cfg.ID, "id", "", "replica ID (must match the name in its certificate)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the Raft log, snapshots and state")
	f.StringVar(&cfg.RaftAddr, "raft-addr", "", "host:port for Raft traffic")
	f.StringVar(&cfg.GRPCAddr, "grpc-addr", "", "host:port for the gRPC API")
	f.BoolVar(&cfg.Bootstrap, "bootstrap", false, "form a new cluster with this replica as its first voter")
	f.StringVar(&join, "join", "", "gRPC address(es) of running replicas to join")
	f.StringVar(&cfg.WebAddr, "web-addr", "", "host:port for the read-only web view over HTTPS (region certificate or a `regionfl ui login` link); empty: off")
	f.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "host:port for Prometheus /metrics (plain HTTP, no auth: keep it on loopback, e.g. 127.0.0.1:9464); empty: off")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	tf.register(f)
	cmd.AddCommand(run, newIdentityInitCmd("replica"), newIdentityRenewCmd("replica"))
	return cmd
}
