// Package store owns a replica's raft.Raft: it opens the raft-wal log and
// stable store and the file snapshots, runs Raft over mutual TLS, bootstraps
// or joins a cluster, and proposes commands. Nothing else touches Raft.
package store

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"
	"google.golang.org/protobuf/proto"

	"regionfl/coordinator/fsm"
	"regionfl/identity"
)

// Errors.
var (
	ErrNotLeader = errors.New("store: not the leader")
	ErrNoLeader  = errors.New("store: no leader elected")
	ErrNoQuorum  = errors.New("store: the leader cannot reach a quorum")
)

// NotLeaderError says which replica leads, so a caller can go there.
type NotLeaderError struct {
	LeaderID   string
	LeaderAddr string // gRPC address, "" if unknown
}

func (e *NotLeaderError) Error() string {
	if e.LeaderID == "" {
		return ErrNoLeader.Error()
	}
	return fmt.Sprintf("not the leader; the leader is %s at %s", e.LeaderID, e.LeaderAddr)
}

func (e *NotLeaderError) Unwrap() error { return ErrNotLeader }

// Config configures a replica's Raft.
type Config struct {
	ID        string
	Dir       string
	RaftAddr  string // host:port to listen on ("127.0.0.1:0" picks a port)
	Bootstrap bool   // form a new single-voter cluster if Dir holds no state
	TLS       *tls.Config
	Logger    *slog.Logger
	// Fast shortens Raft's timeouts for in-process clusters (tests, demo).
	Fast bool
	// TrailingLogs is how many log entries a snapshot leaves behind for
	// followers that lag; one further behind is sent the snapshot. 0 keeps
	// Raft's default (10240).
	TrailingLogs uint64
	// SegmentSize is the size of raft-wal's log segment files (0: 64 MiB).
	// Compaction frees whole segments only: entries of the live segment stay
	// readable, and a follower needing them gets them instead of a snapshot.
	SegmentSize int
	// Clock stamps every proposed entry (fsm.Meta), the one time of a
	// command (nil: time.Now). A test injects a skewed clock here and in
	// the round engine.
	Clock func() time.Time
}

// Store is a replica's Raft and state machine.
type Store struct {
	cfg   Config
	raft  *raft.Raft
	fsm   *fsm.FSM
	trans *raft.NetworkTransport
	wal   *wal.WAL
	meta  *metadb.BoltMetaDB
	log   *slog.Logger
	// readyTerm is the term in which this replica, as leader, last saw
	// every entry of earlier terms applied (see Ready).
	readyTerm atomic.Uint64
	failed    chan error // see Failed
}

// failStopLogs is the replica's Raft log, stopping the replica at the first
// write that fails (a full disk, an I/O error). raft-wal cannot go on after
// one: it answers every later append with "segment is sealed", even once
// the disk has room again, so the replica would stay up as a follower that
// never catches up. Stopped, it is restarted (by its supervisor, or an
// operator once the disk has room), reopens its log and catches up from
// its peers; the others carry on meanwhile.
type failStopLogs struct {
	raft.LogStore
	failed chan<- error
}

// failStopLogs must not hide what the wrapped store tells Raft: raft-wal
// cannot hold a gap in its indexes, so after installing a snapshot Raft has
// to empty it rather than leave one.
var _ raft.MonotonicLogStore = failStopLogs{}

func (l failStopLogs) IsMonotonic() bool {
	m, ok := l.LogStore.(raft.MonotonicLogStore)
	return ok && m.IsMonotonic()
}

func (l failStopLogs) StoreLog(log *raft.Log) error { return l.StoreLogs([]*raft.Log{log}) }

func (l failStopLogs) StoreLogs(logs []*raft.Log) error {
	err := l.LogStore.StoreLogs(logs)
	if err != nil {
		select {
		case l.failed <- fmt.Errorf("store: writing the Raft log: %w", err):
		default: // the first failure is the one that counts
		}
	}
	return err
}

// Failed receives the error that made the replica's Raft log unwritable:
// the replica must stop (see failStopLogs).
func (s *Store) Failed() <-chan error { return s.failed }

// HasState reports whether dir holds a replica's Raft state (a log, its
// term and vote, or a snapshot): a replica with state restarts from it, so
// it needs neither Bootstrap nor a cluster to join. Call it before Open,
// never on a directory a running replica holds.
func HasState(dir string) (bool, error) {
	if _, err := os.Stat(filepath.Join(dir, "wal")); errors.Is(err, os.ErrNotExist) {
		return false, nil
	}
	meta := &metadb.BoltMetaDB{}
	defer meta.Close()
	rlog := newHCLog(slog.New(slog.DiscardHandler), "raft")
	w, err := wal.Open(filepath.Join(dir, "wal"), wal.WithLogger(rlog), wal.WithMetaStore(meta))
	if err != nil {
		return false, fmt.Errorf("store: open raft-wal: %w", err)
	}
	defer w.Close()
	snaps, err := raft.NewFileSnapshotStoreWithLogger(dir, 2, rlog)
	if err != nil {
		return false, err
	}
	return raft.HasExistingState(w, w, snaps)
}

// Open starts Raft for one replica.
func Open(cfg Config) (*Store, error) {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if err := os.MkdirAll(filepath.Join(cfg.Dir, "wal"), 0o700); err != nil {
		return nil, err
	}
	rlog := newHCLog(cfg.Logger, "raft")
	// raft-wal's Close leaves its metadata database open (and locked), so
	// the store owns it and closes it itself; a restarted replica in the
	// same process could not open its directory otherwise.
	meta := &metadb.BoltMetaDB{}
	segments := wal.WithSegmentSize(wal.DefaultSegmentSize)
	if cfg.SegmentSize > 0 {
		segments = wal.WithSegmentSize(cfg.SegmentSize)
	}
	w, err := wal.Open(filepath.Join(cfg.Dir, "wal"), wal.WithLogger(rlog), wal.WithMetaStore(meta), segments)
	if err != nil {
		meta.Close()
		return nil, fmt.Errorf("store: open raft-wal: %w", err)
	}
	snaps, err := raft.NewFileSnapshotStoreWithLogger(cfg.Dir, 2, rlog)
	if err != nil {
		w.Close()
		meta.Close()
		return nil, err
	}
	f := fsm.New()
	layer, err := listen(cfg.RaftAddr, refuseRevoked(cfg.TLS, f))
	if err != nil {
		w.Close()
		meta.Close()
		return nil, err
	}
	trans := raft.NewNetworkTransportWithConfig(&raft.NetworkTransportConfig{
		Stream:  layer,
		MaxPool: 3,
		Timeout: 10 * time.Second,
		Logger:  rlog,
		// One AppendEntries in flight per follower: no pipelining. Raft's
		// pipelined replication can deadlock when a follower refuses an
		// entry or the leader steps down while a send waits (its decoder
		// has exited, the sender blocks on a full channel that nothing
		// drains, and pipeline.Close never runs): the follower is never
		// replicated to again while heartbeats keep it quiet, and
		// Shutdown waits for ever (hashicorp/raft#612). A replica's race
		// run caught a Shutdown after a leadership transfer hung so.
		// HashiCorp measured pipelining to gain little (hashicorp/raft#541).
		MaxRPCsInFlight: 1,
	})
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(cfg.ID)
	rc.Logger = rlog
	rc.SnapshotThreshold = 1024
	if cfg.TrailingLogs > 0 {
		rc.TrailingLogs = cfg.TrailingLogs
	}
	if cfg.Fast {
		rc.HeartbeatTimeout = 300 * time.Millisecond
		rc.ElectionTimeout = 300 * time.Millisecond
		rc.LeaderLeaseTimeout = 150 * time.Millisecond
		rc.CommitTimeout = 5 * time.Millisecond
	}
	failed := make(chan error, 1)
	r, err := raft.NewRaft(rc, f, failStopLogs{LogStore: w, failed: failed}, w, snaps, trans)
	if err != nil {
		trans.Close()
		w.Close()
		meta.Close()
		return nil, fmt.Errorf("store: start raft: %w", err)
	}
	s := &Store{cfg: cfg, raft: r, fsm: f, trans: trans, wal: w, meta: meta, log: cfg.Logger, failed: failed}
	if cfg.Bootstrap {
		has, err := raft.HasExistingState(w, w, snaps)
		if err != nil {
			s.Close()
			return nil, err
		}
		if !has {
			err := r.BootstrapCluster(raft.Configuration{Servers: []raft.Server{{
				ID: rc.LocalID, Address: trans.LocalAddr(),
			}}}).Error()
			if err != nil {
				s.Close()
				return nil, fmt.Errorf("store: bootstrap: %w", err)
			}
		}
	}
	return s, nil
}

// ID is this replica's ID.
func (s *Store) ID() string { return s.cfg.ID }

// RaftAddr is the address Raft listens on.
func (s *Store) RaftAddr() string { return string(s.trans.LocalAddr()) }

// FSM is the replicated state.
func (s *Store) FSM() *fsm.FSM { return s.fsm }

// IsLeader reports whether this replica currently leads.
func (s *Store) IsLeader() bool { return s.raft.State() == raft.Leader }

// LeaderCh signals leadership changes of this replica.
func (s *Store) LeaderCh() <-chan bool { return s.raft.LeaderCh() }

// Leader returns the current leader's ID and gRPC address, if known.
func (s *Store) Leader() (id, grpcAddr string) {
	_, lid := s.raft.LeaderWithID()
	id = string(lid)
	s.fsm.Read(func(st *fsm.State) { grpcAddr = st.Replicas[id] })
	return id, grpcAddr
}

// NotLeader builds the error that tells a caller where the leader is.
func (s *Store) NotLeader() error {
	id, addr := s.Leader()
	return &NotLeaderError{LeaderID: id, LeaderAddr: addr}
}

// Propose replicates a command and waits until this replica applied it. A
// command the state machine refused returns its rejection.
func (s *Store) Propose(m proto.Message) error {
	return s.ProposeAs("coordinator/"+s.cfg.ID, m)
}

// ProposeAs proposes a command caused by a client: actor is its
// certificate identity ("role/name"), recorded in the audit trail.
func (s *Store) ProposeAs(actor string, m proto.Message) error {
	if !s.IsLeader() {
		return s.NotLeader()
	}
	b, err := fsm.Encode(m, fsm.Meta{Actor: actor, UnixMs: s.cfg.Clock().UnixMilli()})
	if err != nil {
		return err
	}
	f := s.raft.Apply(b, 10*time.Second)
	if err := f.Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return s.NotLeader()
		}
		return fmt.Errorf("store: apply: %w", err)
	}
	if err, ok := f.Response().(error); ok && err != nil {
		return err
	}
	return nil
}

// Ready returns the current term if this replica leads and has applied every
// entry committed before it took over. A new leader's state machine may lag
// its log (after a restart it holds only the last snapshot until the first
// commit of its term), so anything that decides from the state, a node's
// poll included, waits for this. The first call in a term runs a Barrier.
func (s *Store) Ready() (uint64, error) {
	if !s.IsLeader() {
		return 0, s.NotLeader()
	}
	term := s.raft.CurrentTerm()
	if s.readyTerm.Load() == term {
		return term, nil
	}
	if err := s.raft.Barrier(5 * time.Second).Error(); err != nil {
		if errors.Is(err, raft.ErrNotLeader) || errors.Is(err, raft.ErrLeadershipLost) {
			return 0, s.NotLeader()
		}
		return 0, fmt.Errorf("%w: %v", ErrNoQuorum, err)
	}
	s.readyTerm.Store(term)
	return term, nil
}

// Snapshot takes a snapshot now and compacts the log behind it down to
// TrailingLogs entries (an operator's tool before maintenance, and how tests
// make a lagging replica catch up from a snapshot).
func (s *Store) Snapshot() error {
	_, err := s.TakeSnapshot()
	return err
}

// ErrNothingNewToSnapshot is returned when no entry was applied since the
// last snapshot.
var ErrNothingNewToSnapshot = errors.New("store: nothing new to snapshot")

// TakeSnapshot is Snapshot, and says which log index the snapshot covers.
func (s *Store) TakeSnapshot() (uint64, error) {
	f := s.raft.Snapshot()
	if err := f.Error(); errors.Is(err, raft.ErrNothingNewToSnapshot) {
		return 0, ErrNothingNewToSnapshot
	} else if err != nil {
		return 0, err
	}
	meta, rc, err := f.Open()
	if err != nil {
		return 0, err
	}
	rc.Close()
	return meta.Index, nil
}

// VerifyLeader confirms leadership with a quorum, for reads that decide
// something.
func (s *Store) VerifyLeader() error {
	if err := s.raft.VerifyLeader().Error(); err != nil {
		return s.NotLeader()
	}
	return nil
}

// Replica is one member of the Raft configuration.
type Replica struct {
	ID, RaftAddr, GRPCAddr string
	Voter, Leader          bool
}

// Replicas lists the Raft configuration.
func (s *Store) Replicas() ([]Replica, error) {
	f := s.raft.GetConfiguration()
	if err := f.Error(); err != nil {
		return nil, err
	}
	_, leader := s.raft.LeaderWithID()
	var out []Replica
	s.fsm.Read(func(st *fsm.State) {
		for _, srv := range f.Configuration().Servers {
			out = append(out, Replica{
				ID:       string(srv.ID),
				RaftAddr: string(srv.Address),
				GRPCAddr: st.Replicas[string(srv.ID)],
				Voter:    srv.Suffrage == raft.Voter,
				Leader:   srv.ID == leader,
			})
		}
	})
	return out, nil
}

// ErrUnknownReplica means a replica ID is not a voter of the cluster.
var ErrUnknownReplica = errors.New("store: no such voter")

// TransferLeadership hands leadership to the voter to ("": the most
// up-to-date follower) and waits until some replica other than this one
// leads, or timeout passes; it returns the new leader's ID.
func (s *Store) TransferLeadership(to string, timeout time.Duration) (string, error) {
	if !s.IsLeader() {
		return "", s.NotLeader()
	}
	var f raft.Future
	if to == "" {
		f = s.raft.LeadershipTransfer()
	} else {
		cf := s.raft.GetConfiguration()
		if err := cf.Error(); err != nil {
			return "", err
		}
		var addr raft.ServerAddress
		for _, srv := range cf.Configuration().Servers {
			if string(srv.ID) == to && srv.Suffrage == raft.Voter {
				addr = srv.Address
			}
		}
		if addr == "" {
			return "", fmt.Errorf("%w: %q", ErrUnknownReplica, to)
		}
		f = s.raft.LeadershipTransferToServer(raft.ServerID(to), addr)
	}
	if err := f.Error(); err != nil {
		return "", fmt.Errorf("store: leadership transfer: %w", err)
	}
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if _, id := s.raft.LeaderWithID(); id != "" && string(id) != s.cfg.ID {
			return string(id), nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	return "", fmt.Errorf("store: leadership transfer: no new leader within %s", timeout)
}

// AddVoter adds a replica (leader only); adding an existing member with the
// same address succeeds, so a restarting replica can join again.
func (s *Store) AddVoter(id, raftAddr string) error {
	if !s.IsLeader() {
		return s.NotLeader()
	}
	return s.raft.AddVoter(raft.ServerID(id), raft.ServerAddress(raftAddr), 0, 10*time.Second).Error()
}

// Remove takes a replica out of the cluster (leader only).
func (s *Store) Remove(id string) error {
	if !s.IsLeader() {
		return s.NotLeader()
	}
	return s.raft.RemoveServer(raft.ServerID(id), 0, 10*time.Second).Error()
}

// Close stops Raft and releases its files. It does not remove the replica
// from the cluster: a restart with the same directory resumes it.
func (s *Store) Close() error {
	err := s.raft.Shutdown().Error()
	s.trans.Close()
	if werr := s.wal.Close(); err == nil {
		err = werr
	}
	if merr := s.meta.Close(); err == nil {
		err = merr
	}
	return err
}

// streamLayer runs Raft's transport over TCP, with mutual TLS when
// configured: replicas authenticate each other with their certificates.
type streamLayer struct {
	net.Listener
	tls       *tls.Config
	advertise net.Addr
}

// Addr is the address peers are told to reach this replica at: the one it
// was configured with (a host name or fixed address survives a restart on
// another IP), or the bound one when that was a wildcard or port 0.
func (l *streamLayer) Addr() net.Addr { return l.advertise }

// Advertise returns configured when it names a concrete host and port,
// else the address actually bound.
func Advertise(configured string, bound net.Addr) string {
	host, port, err := net.SplitHostPort(configured)
	if err != nil || host == "" || port == "0" {
		return bound.String()
	}
	if ip := net.ParseIP(host); ip != nil && ip.IsUnspecified() {
		return bound.String()
	}
	return configured
}

type advertisedAddr string

func (a advertisedAddr) Network() string { return "tcp" }
func (a advertisedAddr) String() string  { return string(a) }

// refuseRevoked makes the Raft transport refuse peers whose certificate
// serial is on the replicated revocation list, in both directions.
func refuseRevoked(cfg *tls.Config, f *fsm.FSM) *tls.Config {
	if cfg == nil {
		return nil
	}
	cfg = cfg.Clone()
	next := cfg.VerifyConnection
	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) > 0 {
			serial := identity.SerialHex(cs.PeerCertificates[0])
			var revoked bool
			f.Read(func(s *fsm.State) { revoked = s.IsRevoked(serial) })
			if revoked {
				return fmt.Errorf("store: peer certificate %s is revoked", serial)
			}
		}
		if next != nil {
			return next(cs)
		}
		return nil
	}
	return cfg
}

func listen(addr string, cfg *tls.Config) (*streamLayer, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("store: raft listen %s: %w", addr, err)
	}
	adv := advertisedAddr(Advertise(addr, ln.Addr()))
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	return &streamLayer{Listener: ln, tls: cfg, advertise: adv}, nil
}

func (l *streamLayer) Dial(addr raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	if l.tls != nil {
		return tls.DialWithDialer(d, "tcp", string(addr), l.tls)
	}
	return d.Dial("tcp", string(addr))
}
