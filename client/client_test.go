package client

import (
	"context"
	"errors"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

// replica answers GetRegion: the leader with a region, a follower with
// "not the leader" and a hint naming leaderAddr.
type replica struct {
	pb.UnimplementedHospitalServiceServer
	leader     bool
	leaderAddr string
	hang       bool // answer nothing, as a paused or partitioned leader
	calls      atomic.Int32
}

func (r *replica) GetRegion(ctx context.Context, _ *pb.GetRegionRequest) (*pb.GetRegionResponse, error) {
	r.calls.Add(1)
	if r.hang {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	if r.leader {
		return &pb.GetRegionResponse{Region: &pb.Region{Params: "p"}}, nil
	}
	grpc.SetTrailer(ctx, metadata.Pairs(LeaderKey, r.leaderAddr))
	return nil, status.Error(codes.FailedPrecondition, NotLeaderPrefix)
}

func serve(t *testing.T, ca *identity.CA, r *replica) string {
	t.Helper()
	cert, err := ca.Issue(identity.Identity{Name: "replica", Role: identity.RoleCoordinator}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.Creds(credentials.NewTLS(identity.ServerConfig(cert, ca.Pool()))))
	pb.RegisterHospitalServiceServer(srv, r)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String()
}

// TestAdversaryRedirectToUnlistedAddress: a hint to a configured replica is followed; a hint to
// any other address, even one serving a valid coordinator certificate, is
// not (a compromised follower must not redirect hospitals to itself or to
// a server it runs).
func TestAdversaryRedirectToUnlistedAddress(t *testing.T) {
	ca, err := identity.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leader := &replica{leader: true}
	leaderAddr := serve(t, ca, leader)
	rogue := &replica{leader: true}
	rogueAddr := serve(t, ca, rogue)
	honest := &replica{leaderAddr: leaderAddr}
	honestAddr := serve(t, ca, honest)
	evil := &replica{leaderAddr: rogueAddr}
	evilAddr := serve(t, ca, evil)

	cert, err := ca.Issue(identity.Identity{Name: "h1", Role: identity.RoleHospital}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	call := func(addrs ...string) error {
		c, err := New(addrs, identity.ClientConfig(cert, ca.Pool()))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return c.Do(ctx, func(ctx context.Context, conn Conn) error {
			_, err := conn.Hospital.GetRegion(ctx, &pb.GetRegionRequest{})
			return err
		})
	}

	if err := call(honestAddr, leaderAddr); err != nil {
		t.Fatalf("hint to a listed replica: %v", err)
	}
	if leader.calls.Load() != 1 {
		t.Fatalf("leader answered %d calls, want 1", leader.calls.Load())
	}
	err = call(evilAddr, leaderAddr)
	if !errors.Is(err, ErrUnlistedLeader) {
		t.Fatalf("hint to an unlisted address: got %v, want ErrUnlistedLeader", err)
	}
	if rogue.calls.Load() != 0 {
		t.Fatalf("the client followed the hint to an unlisted address (%d calls)", rogue.calls.Load())
	}
	t.Logf("attack: redirect to an unlisted address | refused by: client | reason: %v", err)
}

// A client whose coordinators do not answer (nothing listens, or the
// replica's certificate is from another CA) gives up after ReachTimeout
// with ErrUnreachable, naming every address it tried, instead of waiting
// out its context. A replica that answers keeps the call going.
func TestUnreachableCoordinators(t *testing.T) {
	ca, err := identity.NewCA("region", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	other, err := identity.NewCA("elsewhere", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(identity.Identity{Name: "h1", Role: identity.RoleHospital}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// Nothing listens here: the listener is closed at once.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := lis.Addr().String()
	lis.Close()
	foreign := serve(t, other, &replica{leader: true})
	for name, addrs := range map[string][]string{
		"nothing listens":             {closed},
		"a replica of another CA too": {closed, foreign},
	} {
		t.Run(name, func(t *testing.T) {
			c, err := New(addrs, identity.ClientConfig(cert, ca.Pool()))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			start := time.Now()
			err = c.Do(ctx, func(ctx context.Context, conn Conn) error {
				_, err := conn.Hospital.GetRegion(ctx, &pb.GetRegionRequest{})
				return err
			})
			if !errors.Is(err, ErrUnreachable) || ctx.Err() != nil {
				t.Fatalf("after %s: %v", time.Since(start).Round(time.Millisecond), err)
			}
			for _, a := range addrs {
				if !strings.Contains(err.Error(), a) {
					t.Errorf("%q does not name %s", err, a)
				}
			}
			t.Logf("%s: %v", time.Since(start).Round(100*time.Millisecond), err)
		})
	}
	// A leader that answers is reached, whatever the dead address first.
	c, err := New([]string{closed, serve(t, ca, &replica{leader: true})}, identity.ClientConfig(cert, ca.Pool()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := c.Do(ctx, func(ctx context.Context, conn Conn) error {
		_, err := conn.Hospital.GetRegion(ctx, &pb.GetRegionRequest{})
		return err
	}); err != nil {
		t.Fatalf("a live leader behind a dead address: %v", err)
	}
}

// A replica that stops answering mid-call (a paused or partitioned leader
// keeps its connections open) costs a call its deadline, not more: the
// next call starts at the next replica, and does not follow a hint back
// to the hung one at once.
func TestHungReplicaIsLeftAfterADeadline(t *testing.T) {
	ca, err := identity.NewCA("region", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(identity.Identity{Name: "h1", Role: identity.RoleHospital}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	hung := &replica{hang: true}
	hungAddr := serve(t, ca, hung)
	alive := &replica{leader: true}
	c, err := New([]string{hungAddr, serve(t, ca, alive)}, identity.ClientConfig(cert, ca.Pool()))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	call := func(timeout time.Duration) error {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		return c.Do(ctx, func(ctx context.Context, conn Conn) error {
			_, err := conn.Hospital.GetRegion(ctx, &pb.GetRegionRequest{})
			return err
		})
	}
	// Long enough for the TLS handshake with the hung replica on a loaded
	// machine: the call must reach it and hang there.
	if err := call(3 * time.Second); status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("a call to the hung replica: %v", err)
	}
	if err := call(5 * time.Second); err != nil {
		t.Fatalf("the next call: %v", err)
	}
	if hung.calls.Load() != 1 || alive.calls.Load() != 1 {
		t.Fatalf("calls: hung %d, alive %d", hung.calls.Load(), alive.calls.Load())
	}
}
