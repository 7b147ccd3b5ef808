// Package coordinator assembles one coordinator replica: Raft (store), the
// round engine and the gRPC services, all behind mutual TLS.
package coordinator

import (
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	"google.golang.org/grpc/reflection"

	"regionfl/audit"
	"regionfl/client"
	"regionfl/coordinator/metrics"
	"regionfl/coordinator/round"
	"regionfl/coordinator/server"
	"regionfl/coordinator/store"
	"regionfl/coordinator/web"
	"regionfl/he"
	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

// Config configures a replica.
type Config struct {
	ID        string
	DataDir   string
	RaftAddr  string
	GRPCAddr  string
	Bootstrap bool
	Join      []string // gRPC addresses of existing replicas
	Cert      tls.Certificate
	CA        *x509.CertPool
	Logger    *slog.Logger
	Fast      bool // short Raft timeouts (in-process clusters)
	// TrailingLogs and SegmentSize bound the log a snapshot leaves behind
	// (0: Raft's 10240 entries, raft-wal's 64 MiB segments); a replica that
	// lags further is sent the snapshot. See store.Config.
	TrailingLogs uint64
	SegmentSize  int
	// WebAddr serves the read-only web view over HTTPS ("" = off);
	// MetricsAddr serves Prometheus /metrics over plain HTTP without
	// authentication, so it belongs on loopback ("" = off).
	WebAddr     string
	MetricsAddr string
	// ServerOptions are added to the gRPC server's own (e.g. interceptors
	// chained after authorization, for tracing or for a test that records
	// everything a replica receives).
	ServerOptions []grpc.ServerOption
	// UploadTimeout is the base of the deadline an update upload gets, on
	// top of its size at 64 KiB/s (0: 30 s).
	UploadTimeout time.Duration
	// Reflection serves gRPC reflection (the API schema, for grpcurl and
	// similar tools) to any certificate of the region. Off by default.
	Reflection bool
	// RekeyAt is how many ciphertexts the region's key may decrypt before
	// the leader starts a new key epoch (0: half the parameter set's
	// budget, he.Params.MaxDecryptions).
	RekeyAt int
	// EnrollmentWait is how long a re-key waits for every hospital to
	// enroll before it goes ahead with those that did (0:
	// round.DefaultEnrollmentWait).
	EnrollmentWait time.Duration
	// Clock is the replica's wall clock for the times it writes into the
	// log and its round deadlines (nil: time.Now). Replicas' clocks
	// differ; tests skew them through it.
	Clock func() time.Time
}

// Replica is a running coordinator replica.
type Replica struct {
	cfg    Config
	store  *store.Store
	grpc   *grpc.Server
	health *health.Server
	lis    net.Listener
	cancel context.CancelFunc
	wg     sync.WaitGroup

	metrics *metrics.Metrics
	web     *web.Server
	webAddr string
	metEP   *metrics.Endpoint
}

// Start opens the replica's state, starts Raft and serves gRPC.
func Start(ctx context.Context, cfg Config) (*Replica, error) {
	if err := identity.ValidName(cfg.ID); err != nil {
		return nil, fmt.Errorf("coordinator: replica ID: %w", err)
	}
	if cfg.Bootstrap && len(cfg.Join) > 0 {
		return nil, errors.New("coordinator: a replica either bootstraps a new cluster or joins one, not both")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	log := cfg.Logger.With("replica", cfg.ID)
	params := he.RegionParams()
	if err := params.Validate(); err != nil {
		return nil, err
	}
	lis, err := net.Listen("tcp", cfg.GRPCAddr)
	if err != nil {
		return nil, fmt.Errorf("coordinator: gRPC address: %w", err)
	}
	st, err := store.Open(store.Config{
		ID: cfg.ID, Dir: cfg.DataDir, RaftAddr: cfg.RaftAddr, Bootstrap: cfg.Bootstrap,
		TLS: identity.PeerConfig(cfg.Cert, cfg.CA), Logger: log, Fast: cfg.Fast,
		TrailingLogs: cfg.TrailingLogs, SegmentSize: cfg.SegmentSize, Clock: cfg.Clock,
	})
	if err != nil {
		lis.Close()
		return nil, err
	}
	m := metrics.New(st.FSM().Read, st.IsLeader)
	var (
		ws      *web.Server
		webAddr string
		mep     *metrics.Endpoint
	)
	if cfg.WebAddr != "" {
		secret, err := web.LoadOrCreateSecret(filepath.Join(cfg.DataDir, web.SecretFileName))
		if err == nil {
			ws, err = web.New(web.Config{State: st.FSM().Read, IsLeader: st.IsLeader, ReplicaID: cfg.ID, Secret: secret, UsedLinksFile: filepath.Join(cfg.DataDir, "ui-used-links.json"),
				Metrics: m.Handler(), Audit: web.AuditFromState(st.FSM().Read, cfg.CA), Logger: log, SignHead: headSigner(cfg.Cert)})
		}
		if err == nil {
			webAddr, err = ws.Start(cfg.WebAddr, web.TLSConfig(cfg.Cert, cfg.CA))
		}
		if err != nil {
			st.Close()
			lis.Close()
			return nil, fmt.Errorf("coordinator: web view: %w", err)
		}
	}
	if cfg.MetricsAddr != "" {
		if mep, err = metrics.Listen(cfg.MetricsAddr, m.Handler()); err != nil {
			if ws != nil {
				ws.Close()
			}
			st.Close()
			lis.Close()
			return nil, fmt.Errorf("coordinator: metrics address: %w", err)
		}
	}
	engine := round.New(st, params, log, cfg.Clock)
	srv := server.New(st, engine, log)
	srv.SetMetrics(m)
	engine.SetMetrics(m)
	if cfg.UploadTimeout > 0 {
		srv.SetUploadTimeout(cfg.UploadTimeout)
	}
	if cfg.RekeyAt > 0 {
		engine.SetRekeyAt(cfg.RekeyAt)
	}
	if cfg.EnrollmentWait > 0 {
		engine.SetEnrollmentWait(cfg.EnrollmentWait)
	}
	if err := srv.SetSigner(cfg.Cert); err != nil {
		st.Close()
		lis.Close()
		return nil, err
	}
	opts := append(srv.GRPCOptions(), grpc.Creds(credentials.NewTLS(identity.ServerConfig(cfg.Cert, cfg.CA))))
	opts = append(opts, cfg.ServerOptions...)
	g := grpc.NewServer(opts...)
	hs := srv.Register(g)
	if cfg.Reflection {
		reflection.Register(g)
	}

	ctx, cancel := context.WithCancel(ctx)
	r := &Replica{cfg: cfg, store: st, grpc: g, health: hs, lis: lis, cancel: cancel, metrics: m, web: ws, webAddr: webAddr, metEP: mep}
	r.wg.Add(4)
	go func() { defer r.wg.Done(); g.Serve(lis) }()
	go func() { defer r.wg.Done(); r.checkpoints(ctx, log) }()
	go func() { defer r.wg.Done(); engine.Run(ctx) }()
	go func() { defer r.wg.Done(); r.announce(ctx, srv, log) }()
	log.Info("replica started", "raft_addr", st.RaftAddr(), "grpc_addr", r.GRPCAddr())
	return r, nil
}

// announce makes the replica known: it joins through an existing replica
// when asked to, and records its own gRPC address whenever it leads, so
// "not leader" answers can point at it.
func (r *Replica) announce(ctx context.Context, srv *server.Server, log *slog.Logger) {
	joined := len(r.cfg.Join) == 0
	for {
		if !joined {
			if err := r.join(ctx); err != nil {
				log.Warn("join failed, retrying", "err", err)
			} else {
				joined = true
				log.Info("joined the cluster")
			}
		}
		if r.store.IsLeader() {
			if err := srv.RegisterSelf(r.GRPCAddr()); err != nil && !errors.Is(err, store.ErrNotLeader) {
				log.Warn("register address", "err", err)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func (r *Replica) join(ctx context.Context) error {
	c, err := client.New(r.cfg.Join, identity.ClientConfig(r.cfg.Cert, r.cfg.CA))
	if err != nil {
		return err
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	return c.Do(ctx, func(ctx context.Context, conn client.Conn) error {
		_, err := conn.Operator.JoinReplica(ctx, &pb.JoinReplicaRequest{
			Id: r.cfg.ID, RaftAddr: r.store.RaftAddr(), GrpcAddr: r.GRPCAddr(),
		})
		return err
	})
}

// ID is the replica's ID.
func (r *Replica) ID() string { return r.cfg.ID }

// GRPCAddr is the address the replica serves gRPC on.
func (r *Replica) GRPCAddr() string { return store.Advertise(r.cfg.GRPCAddr, r.lis.Addr()) }

// RaftAddr is the address of the replica's Raft transport.
func (r *Replica) RaftAddr() string { return r.store.RaftAddr() }

// IsLeader reports whether the replica leads.
func (r *Replica) IsLeader() bool { return r.store.IsLeader() }

// Store exposes the replica's Raft store (tests and the demo read state).
func (r *Replica) Store() *store.Store { return r.store }

// WebAddr is the address of the web view ("" when off).
func (r *Replica) WebAddr() string { return r.webAddr }

// MetricsAddr is the address of the /metrics listener ("" when off).
func (r *Replica) MetricsAddr() string {
	if r.metEP == nil {
		return ""
	}
	return r.metEP.Addr()
}

// Failed receives the error that made the replica's Raft log unwritable
// (a full disk, say). The replica can then only lag behind, so its owner
// stops it; started again once the cause is gone, it catches up.
func (r *Replica) Failed() <-chan error { return r.store.Failed() }

// Stop stops serving and shuts Raft down; the data directory stays, so a
// replica started again on it resumes.
func (r *Replica) Stop() error {
	r.cancel()
	r.health.Shutdown()
	r.grpc.Stop()
	if r.web != nil {
		r.web.Close()
	}
	r.metEP.Close()
	err := r.store.Close()
	r.wg.Wait()
	return err
}

// headSigner signs audit tree heads with the replica's certificate key,
// for the web view's exports; nil if the key cannot sign.
func headSigner(cert tls.Certificate) func(*audit.Log, uint64) (audit.TreeHead, error) {
	signer, ok := cert.PrivateKey.(crypto.Signer)
	if !ok || len(cert.Certificate) == 0 {
		return nil
	}
	return func(l *audit.Log, size uint64) (audit.TreeHead, error) {
		return l.SignHead(signer, cert.Certificate[0], size, time.Now().UnixMilli())
	}
}
