package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"regionfl/coordinator"
	"regionfl/coordinator/round"
	"regionfl/coordinator/store"
	"regionfl/identity"
)

func newCoordinatorCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "coordinator", Short: "Run a coordinator replica"}
	var (
		cfg       coordinator.Config
		tf        tlsFlags
		join      string
		logLevel  string
		segmentMB int
	)
	run := &cobra.Command{
		Use:   "run",
		Short: "Run one coordinator replica (Raft + gRPC, mutual TLS)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cfg.ID == "" || cfg.DataDir == "" || cfg.RaftAddr == "" || cfg.GRPCAddr == "" {
				return usageError{errors.New("--id, --data-dir, --raft-addr and --grpc-addr are required")}
			}
			if segmentMB < 1 || segmentMB > 1024 {
				return usageError{fmt.Errorf("--wal-segment-mb: %d is not between 1 and 1024", segmentMB)}
			}
			if cfg.EnrollmentWait < time.Minute || cfg.EnrollmentWait > 7*24*time.Hour {
				return usageError{fmt.Errorf("--enrollment-wait: %v is not between 1m and 168h", cfg.EnrollmentWait)}
			}
			cfg.SegmentSize = segmentMB << 20
			cfg.Join = splitAddrs(join)
			if !cfg.Bootstrap && len(cfg.Join) == 0 {
				// A restart: the data directory holds the replica's state.
				has, err := store.HasState(cfg.DataDir)
				if err != nil {
					return fmt.Errorf("--data-dir %s: %w", cfg.DataDir, err)
				}
				if !has {
					return usageError{fmt.Errorf("--data-dir %s holds no replica state: give --bootstrap for the first replica of a new cluster or --join ADDR for the others (a replica restarts from its data directory without either)", cfg.DataDir)}
				}
			}
			var err error
			if cfg.Cert, cfg.CA, err = tf.load(); err != nil {
				return err
			}
			if cfg.Logger, err = logger(logLevel); err != nil {
				return err
			}
			if err := injectFaults(&cfg); err != nil {
				return err
			}
			r, err := coordinator.Start(cmd.Context(), cfg)
			if err != nil {
				return err
			}
			select {
			case <-cmd.Context().Done():
				cfg.Logger.Info("shutting down")
				return r.Stop()
			case err := <-r.Failed():
				cfg.Logger.Error("stopping: the replica cannot write its Raft log; start it again once the cause is fixed (it catches up from the others)", "err", err)
				r.Stop()
				return err
			}
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
	f.IntVar(&segmentMB, "wal-segment-mb", 64, "size in MiB (1-1024) of the Raft log's segment files, each allocated whole when it opens: small disks want small segments")
	f.DurationVar(&cfg.EnrollmentWait, "enrollment-wait", round.DefaultEnrollmentWait, "how long a re-key waits for every hospital to enroll before it goes ahead with those that did (at least threshold+1; the others join the next key epoch), 1m to 168h")
	f.BoolVar(&cfg.Reflection, "reflection", false, "serve gRPC reflection (the API schema, for grpcurl) to any certificate of the region")
	tf.register(f)
	cmd.AddCommand(run, newCoordinatorHealthCmd(), newIdentityInitCmd("replica"), newIdentityRenewCmd("replica"))
	return cmd
}

// newCoordinatorHealthCmd asks one replica's grpc.health.v1 service, with
// any certificate of the region: for container health checks and
// scripts, which need an exit status and no shell.
func newCoordinatorHealthCmd() *cobra.Command {
	var (
		tf      tlsFlags
		addr    string
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "health --addr HOST:PORT",
		Short: "Check one replica's gRPC health service: exit 0 if it serves",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if addr == "" {
				return usageError{errors.New("--addr is required")}
			}
			if timeout <= 0 || timeout > time.Minute {
				return usageError{fmt.Errorf("--timeout: %v is not between 0 and 1m", timeout)}
			}
			cert, pool, err := tf.load()
			if err != nil {
				return err
			}
			conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(identity.ClientConfig(cert, pool))))
			if err != nil {
				return err
			}
			defer conn.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
			defer cancel()
			resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
			if err != nil {
				return fmt.Errorf("%s: %w", addr, err)
			}
			if resp.Status != healthpb.HealthCheckResponse_SERVING {
				return fmt.Errorf("%s: %s", addr, resp.Status)
			}
			fmt.Fprintf(cmd.OutOrStdout(), "%s: %s\n", addr, resp.Status)
			return nil
		},
	}
	tf.register(cmd.Flags())
	cmd.Flags().StringVar(&addr, "addr", "", "the replica's gRPC address")
	cmd.Flags().DurationVar(&timeout, "timeout", 3*time.Second, "how long to wait for the answer")
	return cmd
}
