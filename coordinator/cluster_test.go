package coordinator_test

import (
	"context"
	"crypto/tls"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"regionfl/audit"
	"regionfl/client"
	"regionfl/coordinator"
	"regionfl/coordinator/fsm"
	"regionfl/he"
	"regionfl/identity"
	"regionfl/localregion"
	pb "regionfl/proto/regionfl/v1"
)

// cluster is a region's replicas alone (localregion, no hospitals, no
// region created): for tests of replication and identity.
type cluster struct {
	*localregion.Region
	t  *testing.T
	ca *identity.CA
}

func startCluster(t *testing.T, n int) *cluster {
	t.Helper()
	return startClusterWith(t, n, true)
}

// startClusterWith starts n replicas; fast selects the tests' short Raft
// timeouts, else Raft's defaults (a 500 ms leader lease).
func startClusterWith(t *testing.T, n int, fast bool) *cluster {
	t.Helper()
	reg, err := localregion.Start(ctx(t), localregion.Config{Replicas: n, Dir: t.TempDir(),
		Replica: func(_ int, cfg *coordinator.Config) { cfg.Fast = fast }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	return &cluster{Region: reg, t: t, ca: reg.CA}
}

func (c *cluster) leader() *coordinator.Replica {
	c.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if i, ok := c.Leader(); ok {
			return c.Replica(i)
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatal("no leader within 10s")
	return nil
}

func (c *cluster) client(name string, role identity.Role, addrs ...string) *client.Client {
	cl, _ := c.clientCert(name, role, addrs...)
	return cl
}

func (c *cluster) clientCert(name string, role identity.Role, addrs ...string) (*client.Client, tls.Certificate) {
	c.t.Helper()
	return dial(c.t, c.ca, addrs, name, role)
}

// dial connects to addrs as a fresh certificate of ca for name and role,
// closed when the test ends; it returns the certificate too, for tests
// that sign as that identity.
func dial(t *testing.T, ca *identity.CA, addrs []string, name string, role identity.Role) (*client.Client, tls.Certificate) {
	t.Helper()
	cert, err := ca.Issue(identity.Identity{Name: name, Role: role}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := client.New(addrs, identity.ClientConfig(cert, ca.Pool()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl, cert
}

// createRegion has op, holding opCert, create a region of hospitals.
func createRegion(t *testing.T, op *client.Client, opCert tls.Certificate, hospitals []string) error {
	t.Helper()
	req, err := client.CreateRegionRequest(opCert, he.RegionParamsName, hospitals, 2, 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	return op.Do(ctx(t), func(ctx context.Context, conn client.Conn) error {
		_, err := conn.Operator.CreateRegion(ctx, req)
		return err
	})
}

func (c *cluster) follower() *coordinator.Replica {
	for _, r := range c.Replicas() {
		if r != nil && !r.IsLeader() {
			return r
		}
	}
	c.t.Fatal("no follower")
	return nil
}

func ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// A client that asks a follower first is sent to the leader (a listed
// address) and its write lands on every replica.
func TestFollowsLeaderAndReplicates(t *testing.T) {
	c := startCluster(t, 3)
	addrs := []string{c.follower().GRPCAddr()}
	for _, r := range c.Replicas() {
		if r.GRPCAddr() != addrs[0] {
			addrs = append(addrs, r.GRPCAddr())
		}
	}
	op, opCert := c.clientCert("ops", identity.RoleOperator, addrs...)
	if err := createRegion(t, op, opCert, []string{"h2", "h1", "h3"}); err != nil {
		t.Fatal(err)
	}
	for _, r := range c.Replicas() {
		waitFor(t, func() bool {
			var ok bool
			r.Store().FSM().Read(func(s *fsm.State) { ok = s.Region != nil && s.Region.Hospitals[0] == "h1" })
			return ok
		})
	}
}

// The leader dies; the others elect a new one that holds every committed
// decision, and a restarted replica catches up from its own directory.
func TestLeaderFailoverAndRestart(t *testing.T) {
	c := startCluster(t, 3)
	var addrs []string
	for _, r := range c.Replicas() {
		addrs = append(addrs, r.GRPCAddr())
	}
	op, opCert := c.clientCert("ops", identity.RoleOperator, addrs...)
	create := func(h []string) error { return createRegion(t, op, opCert, h) }
	if err := create([]string{"h1", "h2"}); err != nil {
		t.Fatal(err)
	}
	idx, _ := c.Leader()
	old := c.leader()
	if err := c.StopReplica(idx); err != nil {
		t.Fatal(err)
	}
	nl := c.leader()
	if nl == old {
		t.Fatal("stopped replica still leads")
	}
	// The region survived: a second create is refused by the new leader.
	if err := create([]string{"h8", "h9"}); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("second region on the new leader: %v", err)
	}
	// Started again on its directory and addresses, without a peer to
	// join through.
	if err := c.RestartReplica(idx); err != nil {
		t.Fatal(err)
	}
	r := c.Replica(idx)
	waitFor(t, func() bool {
		var ok bool
		r.Store().FSM().Read(func(s *fsm.State) { ok = s.Region != nil })
		return ok
	})
}

// A leader cut off from its followers serves no reads: a researcher's
// ListJobs goes through a quorum check, so the deposed leader answers "not
// the leader" rather than from its state, which the majority may already
// have moved past. Raft's default timeouts leave a window (the 500 ms
// leader lease) in which the leader has not yet noticed; the read comes
// 100 ms after the followers stop, inside it, once the answers to
// heartbeats sent before are in.
func TestDeposedLeaderRefusesReads(t *testing.T) {
	c := startClusterWith(t, 3, false)
	old := c.leader()
	researcher := c.client("alice", identity.RoleResearcher, old.GRPCAddr())
	list := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return researcher.Do(ctx, func(ctx context.Context, conn client.Conn) error {
			_, err := conn.Researcher.ListJobs(ctx, &pb.ListJobsRequest{})
			return err
		})
	}
	if err := list(10 * time.Second); err != nil {
		t.Fatalf("the leader's read: %v", err)
	}
	for i, r := range c.Replicas() {
		if r != old {
			if err := c.StopReplica(i); err != nil {
				t.Fatal(err)
			}
		}
	}
	time.Sleep(100 * time.Millisecond)
	err := list(3 * time.Second)
	if err == nil || !strings.Contains(err.Error(), client.NotLeaderPrefix) {
		t.Fatalf("a read from the leader without its quorum: %v, want %q", err, client.NotLeaderPrefix)
	}
}

// An operator hands leadership to a named follower, or to whichever is
// most up to date; a replica that is not a voter is refused, naming it.
func TestTransferLeadership(t *testing.T) {
	c := startCluster(t, 3)
	var addrs []string
	for _, r := range c.Replicas() {
		addrs = append(addrs, r.GRPCAddr())
	}
	op := c.client("ops", identity.RoleOperator, addrs...)
	transfer := func(to string) (*pb.TransferLeadershipResponse, error) {
		var resp *pb.TransferLeadershipResponse
		err := op.Do(ctx(t), func(ctx context.Context, conn client.Conn) error {
			var err error
			resp, err = conn.Operator.TransferLeadership(ctx, &pb.TransferLeadershipRequest{To: to})
			return err
		})
		return resp, err
	}
	old := c.leader()
	target := c.follower()
	resp, err := transfer(target.ID())
	if err != nil || resp.From != old.ID() || resp.Leader != target.ID() {
		t.Fatalf("transfer to %s: %v %+v", target.ID(), err, resp)
	}
	if l := c.leader(); l != target {
		t.Fatalf("%s leads after the transfer to %s", l.ID(), target.ID())
	}
	resp, err = transfer("")
	if err != nil || resp.From != target.ID() || resp.Leader == target.ID() {
		t.Fatalf("transfer to any follower: %v %+v", err, resp)
	}
	if _, err := transfer("replica-9"); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "replica-9") {
		t.Fatalf("transfer to a replica that does not exist: %v", err)
	}
	if _, err := transfer(resp.Leader); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("transfer to the leader itself: %v", err)
	}
}

// An operator has the leader snapshot its state: the answer names the
// leader and the log index covered; a second one with nothing new applied
// is refused, saying so; a researcher may not ask.
func TestTakeSnapshot(t *testing.T) {
	c := startCluster(t, 3)
	var addrs []string
	for _, r := range c.Replicas() {
		addrs = append(addrs, r.GRPCAddr())
	}
	snapshot := func(cl *client.Client) (*pb.TakeSnapshotResponse, error) {
		var resp *pb.TakeSnapshotResponse
		err := cl.Do(ctx(t), func(ctx context.Context, conn client.Conn) error {
			var err error
			resp, err = conn.Operator.TakeSnapshot(ctx, &pb.TakeSnapshotRequest{})
			return err
		})
		return resp, err
	}
	op := c.client("ops", identity.RoleOperator, addrs...)
	resp, err := snapshot(op)
	if err != nil || resp.Replica != c.leader().ID() || resp.Index == 0 {
		t.Fatalf("snapshot: %v %+v", err, resp)
	}
	// Replicas still register themselves at start: the second one may
	// have something new to cover, or nothing.
	if again, err := snapshot(op); err != nil && (status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "nothing new")) {
		t.Fatalf("a second snapshot: %v", err)
	} else if err == nil && again.Index < resp.Index {
		t.Fatalf("a second snapshot at index %d, the first at %d", again.Index, resp.Index)
	}
	if _, err := snapshot(c.client("alice", identity.RoleResearcher, addrs...)); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a researcher's snapshot: %v", err)
	}
}

// Roles are enforced on every service, from the certificate alone.
func TestAuthorization(t *testing.T) {
	c := startCluster(t, 1)
	addr := c.Replica(0).GRPCAddr()
	hospital := c.client("h1", identity.RoleHospital, addr)
	researcher := c.client("alice", identity.RoleResearcher, addr)
	cases := []struct {
		name string
		call func(ctx context.Context) error
	}{
		{"hospital submits a job", func(ctx context.Context) error {
			return hospital.Do(ctx, func(ctx context.Context, conn client.Conn) error {
				_, err := conn.Researcher.SubmitJob(ctx, &pb.SubmitJobRequest{})
				return err
			})
		}},
		{"researcher polls as a hospital", func(ctx context.Context) error {
			return researcher.Do(ctx, func(ctx context.Context, conn client.Conn) error {
				_, err := conn.Hospital.Poll(ctx, &pb.PollRequest{})
				return err
			})
		}},
		{"researcher changes membership", func(ctx context.Context) error {
			return researcher.Do(ctx, func(ctx context.Context, conn client.Conn) error {
				_, err := conn.Operator.RemoveReplica(ctx, &pb.RemoveReplicaRequest{Id: "replica-1"})
				return err
			})
		}},
	}
	for _, tc := range cases {
		if err := tc.call(ctx(t)); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: got %v, want PermissionDenied", tc.name, err)
		}
	}
	// Each refusal is in the audit log with the refused identity.
	waitFor(t, func() bool {
		var n int
		var who []string
		c.Replica(0).Store().FSM().Read(func(s *fsm.State) {
			for i := range s.Audit.Len() {
				r, _ := s.Audit.Record(i)
				if r.Action == audit.ActionAuthzRefused {
					n++
					who = append(who, r.Role+"/"+r.Actor)
				}
			}
		})
		return n == len(cases) && slices.Contains(who, "hospital/h1") && slices.Contains(who, "researcher/alice")
	})
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	timeout := slow(10 * time.Second)
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("condition not met within %v", timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
