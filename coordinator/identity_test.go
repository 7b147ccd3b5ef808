package coordinator_test

import (
	"context"
	"crypto"
	"crypto/tls"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"regionfl/audit"
	"regionfl/client"
	"regionfl/coordinator/fsm"
	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

// listReplicas is a cheap operator call used to probe a client's access.
func listReplicas(ctx context.Context, c *client.Client) error {
	return c.Do(ctx, func(ctx context.Context, conn client.Conn) error {
		_, err := conn.Operator.ListReplicas(ctx, &pb.ListReplicasRequest{})
		return err
	})
}

// rawCall dials with a hand-made TLS configuration (no certificate, or one
// the region did not issue) and makes one operator call.
func rawCall(t *testing.T, addr string, cfg *tls.Config) error {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return err
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = pb.NewOperatorServiceClient(conn).ListReplicas(ctx, &pb.ListReplicasRequest{})
	return err
}

// Without a certificate from the region CA, or with an expired one, no
// request reaches a service.
func TestRefusesUnknownAndExpiredCertificates(t *testing.T) {
	c := startCluster(t, 1)
	addr := c.Replica(0).GRPCAddr()
	roots := c.ca.Pool()

	noCert := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: "localhost"}
	if err := rawCall(t, addr, noCert); err == nil {
		t.Error("a client without a certificate was served")
	}

	other, err := identity.NewCA("other region", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Issue(identity.Identity{Name: "ops", Role: identity.RoleOperator}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := rawCall(t, addr, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: "localhost",
		Certificates: []tls.Certificate{foreign}}); err == nil {
		t.Error("a certificate from another CA was served")
	}

	expired, err := c.ca.Issue(identity.Identity{Name: "ops", Role: identity.RoleOperator}, -30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := rawCall(t, addr, &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: roots, ServerName: "localhost",
		Certificates: []tls.Certificate{expired}}); err == nil {
		t.Error("an expired certificate was served")
	}

	tls12 := &tls.Config{MaxVersion: tls.VersionTLS12, RootCAs: roots, ServerName: "localhost",
		Certificates: []tls.Certificate{expired}}
	if err := rawCall(t, addr, tls12); err == nil {
		t.Error("TLS 1.2 was accepted")
	}
}

// A revoked certificate is refused from the request after the revocation
// commits, on the connection it already had open, by every replica.
func TestRevokedCertificateRefusedWithinOneRequest(t *testing.T) {
	c := startCluster(t, 3)
	var addrs []string
	for _, r := range c.Replicas() {
		addrs = append(addrs, r.GRPCAddr())
	}
	cert, err := c.ca.Issue(identity.Identity{Name: "ops-laptop", Role: identity.RoleOperator}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	stolen, err := client.New(addrs, identity.ClientConfig(cert, c.ca.Pool()))
	if err != nil {
		t.Fatal(err)
	}
	defer stolen.Close()
	if err := listReplicas(ctx(t), stolen); err != nil {
		t.Fatalf("before revocation: %v", err)
	}

	admin, opCert := c.clientCert("ops", identity.RoleOperator, addrs...)
	serial := identity.SerialHex(cert.Leaf)
	revoke := func(req *pb.RevokeCertificateRequest) error {
		return admin.Do(ctx(t), func(ctx context.Context, conn client.Conn) error {
			_, err := conn.Operator.RevokeCertificate(ctx, req)
			return err
		})
	}
	// Unsigned, or signed over another reason: refused, nothing revoked.
	if err := revoke(&pb.RevokeCertificateRequest{Serial: serial, Reason: "laptop stolen"}); status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "signature") {
		t.Fatalf("unsigned revocation: %v", err)
	}
	req, err := client.RevokeRequest(opCert, serial, "laptop stolen", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	forged := proto.Clone(req).(*pb.RevokeCertificateRequest)
	forged.Reason = "another reason"
	if err := revoke(forged); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("revocation signed over another reason: %v", err)
	}
	if err := listReplicas(ctx(t), stolen); err != nil {
		t.Fatalf("after refused revocations: %v", err)
	}
	if err := revoke(req); err != nil {
		t.Fatal(err)
	}
	if err := listReplicas(ctx(t), stolen); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("first request after revocation: %v, want Unauthenticated", err)
	}
	// Every replica refuses it once the revocation is applied there.
	for _, r := range c.Replicas() {
		waitFor(t, func() bool { return r.Store().FSM() != nil && revokedOn(r.Store().FSM(), serial) })
	}

	// A second revocation of the same serial and a malformed serial are
	// refused with a reason.
	if err := revoke(&pb.RevokeCertificateRequest{Serial: "not-hex"}); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("malformed serial: %v", err)
	}
	if err := revoke(req); status.Code(err) != codes.FailedPrecondition && status.Code(err) != codes.InvalidArgument {
		t.Fatalf("second revocation of %s: %v", serial, err)
	}
	var list []*pb.Revocation
	err = admin.Do(ctx(t), func(ctx context.Context, conn client.Conn) error {
		resp, err := conn.Operator.ListRevoked(ctx, &pb.ListRevokedRequest{})
		list = resp.GetRevoked()
		return err
	})
	if err != nil || len(list) != 1 || list[0].Serial != serial || list[0].RevokedBy != "operator/ops" {
		t.Fatalf("revocation list %v: %v", list, err)
	}
	// The list carries the operator's statement, which verifies offline.
	if _, err := identity.VerifyRevocation(c.ca.Pool(), list[0].Certificate, list[0].Signature, list[0].Serial, list[0].Reason, list[0].SignedUnixMs, time.Now()); err != nil {
		t.Fatalf("the listed revocation does not verify: %v", err)
	}
}

// Costly calls are rate limited per identity; others keep their budget.
func TestRateLimitPerIdentity(t *testing.T) {
	c := startCluster(t, 1)
	addr := c.Replica(0).GRPCAddr()
	greedy := c.client("greedy", identity.RoleResearcher, addr)
	calm := c.client("calm", identity.RoleResearcher, addr)
	getModel := func(cl *client.Client) error {
		return cl.Do(ctx(t), func(ctx context.Context, conn client.Conn) error {
			_, err := conn.Researcher.GetModel(ctx, &pb.GetModelRequest{JobId: "none"})
			return err
		})
	}
	limited := false
	for range 200 {
		if status.Code(getModel(greedy)) == codes.ResourceExhausted {
			limited = true
			break
		}
	}
	if !limited {
		t.Fatal("200 calls in a burst were never limited")
	}
	if err := getModel(calm); status.Code(err) == codes.ResourceExhausted {
		t.Fatalf("another identity was limited: %v", err)
	}
}

func revokedOn(f *fsm.FSM, serial string) bool {
	var ok bool
	f.Read(func(s *fsm.State) { ok = s.IsRevoked(serial) })
	return ok
}

// Removing a replica is recorded in the audit log before Raft forgets it.
func TestReplicaRemovalIsAudited(t *testing.T) {
	c := startCluster(t, 3)
	op := c.client("ops", identity.RoleOperator, c.leader().GRPCAddr())
	gone := c.follower().ID()
	err := op.Do(ctx(t), func(ctx context.Context, conn client.Conn) error {
		_, err := conn.Operator.RemoveReplica(ctx, &pb.RemoveReplicaRequest{Id: gone})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	c.leader().Store().FSM().Read(func(s *fsm.State) {
		for i := range s.Audit.Len() {
			r, _ := s.Audit.Record(i)
			if r.Action == audit.ActionReplicaRemoved && r.Details["replica"] == gone && r.Actor == "ops" && r.Role == "operator" {
				found = true
			}
		}
		if _, ok := s.Replicas[gone]; ok {
			t.Errorf("%s still listed", gone)
		}
	})
	if !found {
		t.Fatal("no replica.removed record by operator/ops")
	}
	rs, err := c.leader().Store().Replicas()
	if err != nil || len(rs) != 2 {
		t.Fatalf("raft configuration after removal: %v %v", rs, err)
	}
}

// An operator ends an identity's web sessions on every replica; the
// request names a valid ROLE/NAME, and only an operator may make it.
func TestEndWebSessions(t *testing.T) {
	c := startCluster(t, 1)
	addr := c.Replica(0).GRPCAddr()
	end := func(cl *client.Client, who string) error {
		return cl.Do(ctx(t), func(ctx context.Context, conn client.Conn) error {
			_, err := conn.Operator.EndWebSessions(ctx, &pb.EndWebSessionsRequest{Identity: who})
			return err
		})
	}
	ops := c.client("ops", identity.RoleOperator, addr)
	if err := end(ops, "auditor"); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no name: %v", err)
	}
	if err := end(c.client("alice", identity.RoleResearcher, addr), "auditor/alice"); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a researcher: %v", err)
	}
	if err := end(ops, "auditor/alice"); err != nil {
		t.Fatal(err)
	}
	var ended int64
	c.Replica(0).Store().FSM().Read(func(st *fsm.State) { ended = st.WebSessionsEnded["auditor/alice"] })
	if ended == 0 {
		t.Fatal("sessions of auditor/alice not ended in the state")
	}
}

// An operator's signed revocation list is kept only when it is signed over
// exactly the revoked serials, for this region, newer than the one held and
// dated by the operator's clock; the operator's client refuses to sign a
// list the coordinator shortened.
func TestPublishRevocationList(t *testing.T) {
	shorten := &evilLeader{method: "ListRevoked", tamper: func(resp any) { resp.(*pb.ListRevokedResponse).Revoked = nil }}
	reg := newRegion(t, regionOpts{replicas: 1, hospitals: 2, threshold: 2, serverOptions: []grpc.ServerOption{shorten.option()}})
	admin, opCert := reg.clientCert("ops", identity.RoleOperator)
	publish := func(c *client.Client, req *pb.PublishRevocationListRequest) error {
		return c.Do(reg.ctx(), func(ctx context.Context, conn client.Conn) error {
			_, err := conn.Operator.PublishRevocationList(ctx, req)
			return err
		})
	}
	held := func() *pb.RevocationList {
		var l *pb.RevocationList
		reg.leader().Store().FSM().Read(func(s *fsm.State) { l = proto.Clone(s.RevocationList).(*pb.RevocationList) })
		return l
	}
	first := held() // published with the region
	if first == nil || len(first.Serials) != 0 {
		t.Fatalf("the region's first list: %v", first)
	}
	region := reg.regionDigest()
	signAs := func(key crypto.PrivateKey, serials []string, at time.Time) *pb.PublishRevocationListRequest {
		sig, ms, err := identity.SignRevocationList(key, region, serials, at)
		if err != nil {
			t.Fatal(err)
		}
		return &pb.PublishRevocationListRequest{IssuedUnixMs: ms, Serials: serials, Signature: sig}
	}
	sign := func(serials []string, at time.Time) *pb.PublishRevocationListRequest {
		return signAs(opCert.PrivateKey, serials, at)
	}
	revoked := identity.SerialHex(reg.researcherCert.Leaf)
	reg.revoke(admin, opCert, revoked, "researcher left")
	otherRegion := sign([]string{revoked}, time.Now())
	otherRegion.Signature, _, _ = identity.SignRevocationList(opCert.PrivateKey, [32]byte{1}, []string{revoked}, time.UnixMilli(otherRegion.IssuedUnixMs))
	forged := sign([]string{revoked}, time.Now())
	forged.IssuedUnixMs++
	another, anotherCert := reg.clientCert("ops-2", identity.RoleOperator)
	for _, tc := range []struct {
		name string
		req  *pb.PublishRevocationListRequest
		code codes.Code
	}{
		{"a list without the revoked serial", sign(nil, time.Now()), codes.FailedPrecondition},
		{"a list naming a serial never revoked", sign(slices.Sorted(slices.Values([]string{"abc", revoked})), time.Now()), codes.FailedPrecondition},
		{"a list older than the one held", sign([]string{revoked}, time.UnixMilli(first.IssuedUnixMs)), codes.FailedPrecondition},
		{"a list dated an hour ago", sign([]string{revoked}, time.Now().Add(-time.Hour)), codes.InvalidArgument},
		{"a list of another region", otherRegion, codes.InvalidArgument},
		{"a signature over another time", forged, codes.InvalidArgument},
	} {
		if err := publish(admin, tc.req); status.Code(err) != tc.code {
			t.Errorf("%s: %v, want %s", tc.name, err, tc.code)
		}
	}
	if l := held(); l.IssuedUnixMs != first.IssuedUnixMs {
		t.Fatalf("a refused list was kept: %v", l)
	}
	// Another operator may publish; a researcher may not.
	if err := publish(another, signAs(anotherCert.PrivateKey, []string{revoked}, time.Now())); err != nil {
		t.Fatalf("a list by another operator: %v", err)
	}
	researcherLike := reg.client("carol", identity.RoleResearcher)
	if err := publish(researcherLike, sign([]string{revoked}, time.Now().Add(time.Millisecond))); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a list published by a researcher: %v", err)
	}
	if l := held(); !slices.Equal(l.Serials, []string{revoked}) {
		t.Fatalf("held list %v, want %s", l.Serials, revoked)
	}
	// A coordinator that leaves the revocation out of what it lists gets
	// no signed list without it.
	shorten.on.Store(true)
	if _, err := client.PublishRevocationList(reg.ctx(), admin, opCert, reg.ca.Pool(), time.Now); err == nil || !strings.Contains(err.Error(), revoked) {
		t.Fatalf("signing a shortened list: %v", err)
	}
	shorten.on.Store(false)
	if n, err := client.PublishRevocationList(reg.ctx(), admin, opCert, reg.ca.Pool(), time.Now); err != nil || n != 1 {
		t.Fatalf("publishing the list: %d serials, %v", n, err)
	}
	if n := auditCount(reg, audit.ActionRevocationListPublished); n != 3 {
		t.Errorf("%d revocation lists in the audit log, want 3", n)
	}
}

// auditCount counts the leader's audit records of one action.
func auditCount(reg *region, action audit.Action) int {
	n := 0
	reg.leader().Store().FSM().Read(func(s *fsm.State) {
		for i := range s.Audit.Len() {
			if rec, err := s.Audit.Record(i); err == nil && rec.Action == action {
				n++
			}
		}
	})
	return n
}
