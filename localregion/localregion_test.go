package localregion

import (
	"context"
	"testing"
	"time"

	"regionfl/client"
	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

// A region of three replicas loses its leader, elects another, and takes
// the stopped replica back on its directory and addresses; a client that
// knows the addresses from the start reaches whichever leads.
func TestStopAndRestartReplicas(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	reg, err := Start(ctx, Config{Replicas: 3, Dir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	addrs := append([]string(nil), reg.Addrs()...)
	old := waitLeader(t, reg)
	if err := reg.StopReplica(old); err != nil {
		t.Fatal(err)
	}
	if reg.Replica(old) != nil || reg.Replicas()[old] != nil {
		t.Fatal("a stopped replica is still listed")
	}
	if now := waitLeader(t, reg); now == old {
		t.Fatalf("replica %d leads while stopped", old)
	}
	if err := reg.RestartReplica(old); err != nil {
		t.Fatal(err)
	}
	if err := reg.RestartReplica(old); err == nil {
		t.Fatal("a running replica was started twice")
	}
	if got := reg.Replica(old).GRPCAddr(); got != addrs[old] {
		t.Fatalf("restarted on %s, was %s", got, addrs[old])
	}
	ops, _, err := reg.Client("ops", identity.RoleOperator)
	if err != nil {
		t.Fatal(err)
	}
	defer ops.Close()
	err = ops.Do(ctx, func(ctx context.Context, conn client.Conn) error {
		resp, err := conn.Operator.ListReplicas(ctx, &pb.ListReplicasRequest{})
		if err == nil && len(resp.GetReplicas()) != 3 {
			t.Errorf("%d replicas listed, want 3", len(resp.GetReplicas()))
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestStartRefusesNoReplicas(t *testing.T) {
	if _, err := Start(context.Background(), Config{Dir: t.TempDir()}); err == nil {
		t.Fatal("a region of no replicas started")
	}
	if _, err := Start(context.Background(), Config{Replicas: 1}); err == nil {
		t.Fatal("a region without a directory started")
	}
}

func waitLeader(t *testing.T, reg *Region) int {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if i, ok := reg.Leader(); ok {
			return i
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatal("no leader within 15 s")
	return -1
}
