package store

import (
	"crypto/tls"
	"errors"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	wal "github.com/hashicorp/raft-wal"
	"github.com/hashicorp/raft-wal/metadb"

	"regionfl/coordinator/fsm"
	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

type pki struct {
	t  *testing.T
	ca *identity.CA
}

func newPKI(t *testing.T) *pki {
	ca, err := identity.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &pki{t, ca}
}

func (p *pki) tls(name string, role identity.Role) *tls.Config {
	cert, err := p.ca.Issue(identity.Identity{Name: name, Role: role}, time.Hour)
	if err != nil {
		p.t.Fatal(err)
	}
	return identity.PeerConfig(cert, p.ca.Pool())
}

func (p *pki) open(id, dir string, bootstrap bool) *Store {
	p.t.Helper()
	s, err := Open(Config{ID: id, Dir: dir, RaftAddr: "127.0.0.1:0", Bootstrap: bootstrap, TLS: p.tls(id, identity.RoleCoordinator), Fast: true})
	if err != nil {
		p.t.Fatal(err)
	}
	return s
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func replicaCount(s *Store) int {
	var n int
	s.FSM().Read(func(st *fsm.State) { n = len(st.Replicas) })
	return n
}

// A bootstrapped store leads alone and applies what it proposes; a
// joining store follows, refuses proposals with the leader's name, and
// the membership lists both; a restart on the same directory restores its
// snapshot.
func TestBootstrapJoinAndLeaderChecks(t *testing.T) {
	p := newPKI(t)
	dir1 := t.TempDir()
	s1 := p.open("r1", dir1, true)
	waitFor(t, "r1 leads", func() bool { _, err := s1.Ready(); return err == nil })
	if err := s1.Propose(&pb.RegisterReplicaCommand{Id: "r1", GrpcAddr: "127.0.0.1:7001"}); err != nil {
		t.Fatal(err)
	}

	s2 := p.open("r2", t.TempDir(), false)
	defer s2.Close()
	if err := s2.AddVoter("r3", "127.0.0.1:1"); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("a follower added a voter: %v", err)
	}
	if err := s1.AddVoter("r2", s2.RaftAddr()); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "r2 has the log", func() bool { return replicaCount(s2) == 1 })
	err := s2.Propose(&pb.RegisterReplicaCommand{Id: "r2", GrpcAddr: "127.0.0.1:7002"})
	var nl *NotLeaderError
	if !errors.As(err, &nl) || nl.LeaderID != "r1" || nl.LeaderAddr != "127.0.0.1:7001" {
		t.Fatalf("a follower's proposal: %v", err)
	}
	if _, err := s2.Ready(); !errors.Is(err, ErrNotLeader) {
		t.Fatalf("a follower is ready to lead: %v", err)
	}
	rs, err := s1.Replicas()
	if err != nil || len(rs) != 2 || !rs[0].Leader || rs[0].GRPCAddr != "127.0.0.1:7001" || !rs[1].Voter {
		t.Fatalf("replicas: %+v %v", rs, err)
	}
	if err := s1.AddVoter("r2", s2.RaftAddr()); err != nil {
		t.Fatalf("adding a member again: %v", err)
	}

	// Raft snapshots only once an entry after the last configuration change
	// is applied.
	if err := s1.Propose(&pb.RegisterReplicaCommand{Id: "r2", GrpcAddr: "127.0.0.1:7002"}); err != nil {
		t.Fatal(err)
	}
	if err := s1.Snapshot(); err != nil {
		t.Fatal(err)
	}
	if err := s2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s1.Close(); err != nil {
		t.Fatal(err)
	}
	// r1 restarts alone: without r2 it has no quorum to commit (and so
	// replay) its log, but its snapshot is restored before it starts.
	s1 = p.open("r1", dir1, true)
	defer s1.Close()
	if n := replicaCount(s1); n != 2 {
		t.Fatalf("after a restart: %d replicas registered, want 2", n)
	}
}

// A store's Raft transport refuses a peer whose certificate is not a
// coordinator's.
func TestTransportRefusesOtherRoles(t *testing.T) {
	p := newPKI(t)
	s1 := p.open("r1", t.TempDir(), true)
	defer s1.Close()
	waitFor(t, "r1 leads", func() bool { _, err := s1.Ready(); return err == nil })
	intruder, err := Open(Config{ID: "h1", Dir: t.TempDir(), RaftAddr: "127.0.0.1:0", TLS: p.tls("h1", identity.RoleHospital), Fast: true})
	if err != nil {
		t.Fatal(err)
	}
	defer intruder.Close()
	if err := s1.AddVoter("h1", intruder.RaftAddr()); err == nil {
		// AddVoter commits the configuration change; the intruder must
		// still never receive the log.
		time.Sleep(time.Second)
	}
	if n := replicaCount(intruder); n != 0 {
		t.Fatal("a hospital certificate received the replicated log")
	}
}

// fullDisk is a log store whose writes fail, as on a full disk.
type fullDisk struct{ raft.LogStore }

func (fullDisk) StoreLogs([]*raft.Log) error { return syscall.ENOSPC }

func TestFailedLogWriteStopsTheReplica(t *testing.T) {
	failed := make(chan error, 1)
	logs := failStopLogs{LogStore: fullDisk{raft.NewInmemStore()}, failed: failed}
	for range 2 { // the second failure finds the channel full and returns
		if err := logs.StoreLog(&raft.Log{Index: 1}); !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("StoreLog: %v, want ENOSPC", err)
		}
	}
	select {
	case err := <-failed:
		if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "Raft log") {
			t.Errorf("failure: %v", err)
		}
	default:
		t.Fatal("a failed write of the log was not reported")
	}
	ok := failStopLogs{LogStore: raft.NewInmemStore(), failed: failed}
	if err := ok.StoreLogs([]*raft.Log{{Index: 1}}); err != nil {
		t.Fatal(err)
	}
	if len(failed) != 0 {
		t.Error("a good write reported a failure")
	}
}

// monotonic is a log store that cannot hold gaps, as raft-wal.
type monotonic struct{ raft.LogStore }

func (monotonic) IsMonotonic() bool { return true }

// The wrapper passes on that its store cannot hold gaps: otherwise Raft
// leaves one after installing a snapshot and every later append fails
// (TestFollowerCatchesUpFromSnapshot in coordinator found it).
func TestFailStopLogsStaysMonotonic(t *testing.T) {
	if !(failStopLogs{LogStore: monotonic{raft.NewInmemStore()}}).IsMonotonic() {
		t.Error("a monotonic store wrapped is not monotonic")
	}
	if (failStopLogs{LogStore: raft.NewInmemStore()}).IsMonotonic() {
		t.Error("a store that holds gaps wrapped is monotonic")
	}
}

// Replication is never pipelined: Raft's pipelined replication can wedge a
// follower and hang Shutdown (see Open).
func TestReplicationIsNotPipelined(t *testing.T) {
	p := newPKI(t)
	s := p.open("r1", t.TempDir(), true)
	defer s.Close()
	if _, err := s.trans.AppendEntriesPipeline("r2", "127.0.0.1:1"); !errors.Is(err, raft.ErrPipelineReplicationNotSupported) {
		t.Fatalf("the transport pipelines AppendEntries: %v", err)
	}
}

// A follower whose log tail is cut (Raft clears a suffix the new leader
// does not have) restarts from its WAL: the cut seals the tail segment,
// and a sealed segment must be readable on reopening (raft-wal before
// v0.4.1 wrote no index block there, and raft.NewRaft panicked).
func TestWALReopensAfterTailTruncation(t *testing.T) {
	dir := t.TempDir()
	open := func() (*wal.WAL, *metadb.BoltMetaDB) {
		meta := &metadb.BoltMetaDB{}
		w, err := wal.Open(dir, wal.WithMetaStore(meta), wal.WithSegmentSize(64<<10))
		if err != nil {
			meta.Close()
			t.Fatal(err)
		}
		return w, meta
	}
	w, meta := open()
	logs := make([]*raft.Log, 40)
	for i := range logs {
		logs[i] = &raft.Log{Index: uint64(i + 1), Term: 1, Type: raft.LogCommand, Data: []byte(strings.Repeat("x", 100))}
	}
	if err := w.StoreLogs(logs); err != nil {
		t.Fatal(err)
	}
	if err := w.DeleteRange(31, 40); err != nil { // the suffix a new leader lacks
		t.Fatal(err)
	}
	if err := w.StoreLogs([]*raft.Log{{Index: 31, Term: 2, Type: raft.LogCommand, Data: []byte("new leader")}}); err != nil {
		t.Fatal(err)
	}
	w.Close()
	meta.Close()

	w, meta = open()
	defer meta.Close()
	defer w.Close()
	for _, idx := range []uint64{1, 30, 31} {
		var l raft.Log
		if err := w.GetLog(idx, &l); err != nil {
			t.Fatalf("entry %d after reopening: %v", idx, err)
		}
	}
	if last, err := w.LastIndex(); err != nil || last != 31 {
		t.Fatalf("last index %d (%v) after reopening, want 31", last, err)
	}
}
