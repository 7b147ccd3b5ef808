package coordinator_test

// The coordinator as the attacker: each test runs a real region whose
// replicas all run the real server code with one attack switched on (a
// gRPC interceptor that rewrites what hospitals are served), and checks
// that no hospital acts on it: the refusal is logged with its reason and
// nothing a hospital sent can be decrypted by the attacker.

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"regionfl/audit"
	"regionfl/client"
	"regionfl/coordinator/fsm"
	"regionfl/he"
	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

// evilLeader rewrites the responses of one method with tamper while on
// (to one hospital only, when only is set).
type evilLeader struct {
	method string // e.g. "GetRegion"
	only   string
	on     atomic.Bool
	tamper func(resp any)
	hits   atomic.Int32
}

func (e *evilLeader) option() grpc.ServerOption {
	return grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		resp, err := h(ctx, req)
		if id, _ := identity.FromContext(ctx); e.only != "" && id.Name != e.only {
			return resp, err
		}
		if err == nil && e.on.Load() && strings.HasSuffix(info.FullMethod, "/"+e.method) {
			e.tamper(resp)
			e.hits.Add(1)
		}
		return resp, err
	})
}

// refusal waits for a hospital's log line saying it refused what the
// coordinator served, about what (a prefix), and returns its reason.
func (r *region) refusal(what string) (hospital, reason string) {
	r.t.Helper()
	return r.refusalWith(what, "")
}

// refusalWith is refusal for a reason that contains because.
func (r *region) refusalWith(what, because string) (hospital, reason string) {
	r.t.Helper()
	r.waitFor("a hospital refuses "+what, 30*time.Second, func() bool {
		root := r.logs.root()
		root.mu.Lock()
		defer root.mu.Unlock()
		for _, rec := range root.records {
			if rec.msg == "refusing what the coordinator served" && strings.HasPrefix(rec.attrs["what"], what) && strings.Contains(rec.attrs["reason"], because) {
				hospital, reason = rec.attrs["hospital"], rec.attrs["reason"]
				return true
			}
		}
		return false
	})
	return hospital, reason
}

// attackCeremony runs a region whose replicas serve evil from the first
// call, starts every hospital, and waits for one to refuse what (a prefix
// of the refusal's "what"); the ceremony must not have completed.
func attackCeremony(t *testing.T, evil *evilLeader, attack, what string) *region {
	t.Helper()
	evil.on.Store(true)
	reg := newRegion(t, regionOpts{replicas: 1, hospitals: 3, threshold: 2, serverOptions: []grpc.ServerOption{evil.option()}})
	reg.startNodes(0, 1, 2)
	by, reason := reg.refusal(what)
	reportRefusal(t, attack, by, reason)
	reg.expectNoReadyHospital()
	return reg
}

// everyHospitalRefuses waits until every hospital of the region logged
// its refusal of what the coordinator served as what, and returns each
// one's reason.
func (r *region) everyHospitalRefuses(what string) map[string]string {
	r.t.Helper()
	refused := map[string]string{}
	r.waitFor("every hospital refuses "+what, time.Minute, func() bool {
		root := r.logs.root()
		root.mu.Lock()
		defer root.mu.Unlock()
		for _, rec := range root.records {
			if rec.msg == "refusing what the coordinator served" && rec.attrs["what"] == what {
				refused[rec.attrs["hospital"]] = rec.attrs["reason"]
			}
		}
		return len(refused) == len(r.names)
	})
	return refused
}

func reportRefusal(t *testing.T, attack, by, reason string) {
	t.Logf("attack: %s | refused by: %s | reason: %s", attack, by, reason)
}

func regionResp(resp any) *pb.Region { return resp.(*pb.GetRegionResponse).Region }

// TestAdversaryHPKEKeySwapped: the relay in the middle swaps one
// hospital's HPKE key for its own, to open the Shamir shares sealed to it.
// Senders check each key's signature and seal nothing.
func TestAdversaryHPKEKeySwapped(t *testing.T) {
	attackerPub := func() []byte {
		_, pub, err := he.NewHPKEKey()
		if err != nil {
			t.Fatal(err)
		}
		return pub
	}()
	evil := &evilLeader{method: "GetRegion"}
	evil.tamper = func(resp any) {
		r := regionResp(resp)
		if len(r.HpkePublicKeys) > 1 && r.HpkePublicKeys[1] != nil {
			r.HpkePublicKeys = slices.Clone(r.HpkePublicKeys)
			r.HpkePublicKeys[1] = attackerPub
		}
	}
	reg := attackCeremony(t, evil, "HPKE key swapped by the relay", "ceremony hpke key of hospital-2")
	if n := reg.logs.count("sending sealed Shamir shares", nil); n != 0 {
		t.Fatalf("%d hospitals sealed their shares under a swapped key", n)
	}
}

// TestAdversarySealedShareInjected: the relay hands a hospital another
// hospital's sealed share in place of the one addressed to it (a share it
// could have made itself would do the same): its signature does not cover
// this recipient, and the hospital refuses to open anything.
func TestAdversarySealedShareInjected(t *testing.T) {
	evil := &evilLeader{method: "GetSealedShares"}
	evil.tamper = func(resp any) {
		r := resp.(*pb.GetSealedSharesResponse)
		if len(r.Signatures) > 1 {
			r.Signatures = slices.Clone(r.Signatures)
			r.Signatures[0], r.Signatures[1] = r.Signatures[1], r.Signatures[0]
		}
	}
	attackCeremony(t, evil, "sealed share re-addressed by the relay", "ceremony sealed share of ")
}

// TestAdversaryRegionChanged: after the ceremony the leader serves another
// region: threshold 1 (one decryptor would do), or a fresh ceremony seed
// (a ceremony of its own). Every hospital pinned the region it joined and
// refuses to give a decryption share for any other.
func TestAdversaryRegionChanged(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(r *pb.Region)
	}{
		{"region rewritten to threshold 1", func(r *pb.Region) { r.Threshold = 1 }},
		{"region served with a new ceremony seed", func(r *pb.Region) { r.Seed = make([]byte, len(r.Seed)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evil := &evilLeader{method: "GetRegion"}
			evil.tamper = func(resp any) { tc.tamper(regionResp(resp)) }
			reg := newRegion(t, regionOpts{replicas: 1, hospitals: 3, threshold: 2, serverOptions: []grpc.ServerOption{evil.option()}})
			reg.startNodes(0, 1, 2)
			reg.waitCeremony()
			evil.on.Store(true)
			reg.submit(reg.spec(1, 3, 5*time.Second), "region-changed")
			by, reason := reg.refusal("region")
			reportRefusal(t, tc.name, by, reason)
			if n := reg.logs.count("decryption share sent", nil); n != 0 {
				t.Fatalf("%d decryption shares given for a rewritten region", n)
			}
		})
	}
}

// expectNoReadyHospital checks that the ceremony never completed: no
// hospital confirmed a threshold key under the attacked ceremony.
func (r *region) expectNoReadyHospital() {
	r.t.Helper()
	r.leader().Store().FSM().Read(func(s *fsm.State) {
		if s.Region != nil && slices.Contains(s.Region.Ready, true) {
			r.t.Fatalf("hospitals confirmed a key despite the attack: %v", s.Region.Ready)
		}
	})
}

// TestFetchModelOnlyForAcceptingHospitals: a job's model, and the evidence
// of its versions, go only to the hospitals that accepted the job; a
// hospital outside the region, or one that never accepted, is refused and
// the refusal is audited.
func TestFetchModelOnlyForAcceptingHospitals(t *testing.T) {
	reg := newRegion(t, regionOpts{replicas: 1, hospitals: 3, threshold: 2})
	reg.startNodes(0, 1, 2)
	reg.waitCeremony()
	reg.stopNode(2)
	id := reg.submit(reg.spec(1, 2, 5*time.Second), "fetch-model")
	reg.waitJob(id, "accepted by two hospitals", 30*time.Second, func(j *fsm.Job) bool { return len(j.Accepted) >= 2 })
	fetch := func(name string) error {
		c := reg.client(name, identity.RoleHospital)
		return c.Do(reg.ctx(), func(ctx context.Context, conn client.Conn) error {
			_, err := conn.Hospital.FetchModel(ctx, &pb.FetchModelRequest{JobId: id})
			return err
		})
	}
	if err := fetch("hospital-1"); err != nil {
		t.Fatalf("an accepting hospital: %v", err)
	}
	evidence := func(name string) error {
		c := reg.client(name, identity.RoleHospital)
		return c.Do(reg.ctx(), func(ctx context.Context, conn client.Conn) error {
			_, err := conn.Hospital.GetModelEvidence(ctx, &pb.GetModelEvidenceRequest{JobId: id, Version: 1})
			return err
		})
	}
	for _, name := range []string{"hospital-3", "outsider"} {
		if err := fetch(name); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s: got %v, want PermissionDenied", name, err)
		}
		if err := evidence(name); status.Code(err) != codes.PermissionDenied {
			t.Errorf("%s asks for evidence: got %v, want PermissionDenied", name, err)
		}
	}
	for _, method := range []string{pb.HospitalService_FetchModel_FullMethodName, pb.HospitalService_GetModelEvidence_FullMethodName} {
		reg.waitFor("the refusal of "+method+" is audited", 10*time.Second, func() bool {
			var found bool
			reg.leader().Store().FSM().Read(func(s *fsm.State) {
				for i := range s.Audit.Len() {
					rec, _ := s.Audit.Record(i)
					found = found || (rec.Action == audit.ActionAuthzRefused && rec.Actor == "hospital-3" && rec.Details["method"] == method)
				}
			})
			return found
		})
	}
}

// TestAdversaryContributorSet: the leader serves the decryptors another
// contributor set than the one every contributor signed. Dropping one
// contributor would let it difference the two sums (the dropped one's
// update); adding a hospital that never sent, or whose approval it lacks,
// is the forged manifest. Decryptors check each contributor's signed
// approval of exactly the set they are asked to serve, and refuse.
func TestAdversaryContributorSet(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(d *pb.DecryptTask)
	}{
		{"one contributor dropped (differencing)", func(d *pb.DecryptTask) {
			d.Contributors, d.Approvals = d.Contributors[1:], d.Approvals[1:]
		}},
		{"a hospital that never sent added", func(d *pb.DecryptTask) {
			d.Contributors = append(d.Contributors, "hospital-4")
		}},
		{"an approval replaced by another contributor's", func(d *pb.DecryptTask) {
			d.Approvals[0].Signature = d.Approvals[1].Signature
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evil := &evilLeader{method: "Poll"}
			evil.tamper = func(resp any) {
				for _, d := range resp.(*pb.PollResponse).Decrypt {
					tc.tamper(d)
				}
			}
			reg := newRegion(t, regionOpts{replicas: 1, hospitals: 4, threshold: 2, serverOptions: []grpc.ServerOption{evil.option()}})
			reg.startNodes(0, 1, 2, 3)
			reg.waitCeremony()
			reg.stopNode(3) // hospital-4 accepts and never sends
			if err := reg.decide(reg.client("hospital-4", identity.RoleHospital), reg.submit(reg.spec(1, 2, 3*time.Second), "contributors"), true); err != nil {
				t.Fatal(err)
			}
			evil.on.Store(true)
			by, reason := reg.refusal("") // only decryption tasks are tampered with
			reportRefusal(t, tc.name, by, reason)
			if n := reg.logs.count("decryption share sent", nil); n != 0 {
				t.Fatalf("%d decryption shares given for a contributor set its members did not approve", n)
			}
		})
	}
}

// TestAdversaryRegionNotSignedByOperator: from the first call on, the
// leader serves a region other than the one the operator signed (a
// threshold it prefers, a seed of its choosing, or no signature at all).
// Pinning on first sight would have accepted it; the nodes check the
// operator's genesis signature first and never enroll.
func TestAdversaryRegionNotSignedByOperator(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tamper func(r *pb.Region)
	}{
		{"threshold rewritten before first sight", func(r *pb.Region) { r.Threshold = 3 }},
		{"seed of the leader's choosing", func(r *pb.Region) { r.Seed = make([]byte, len(r.Seed)) }},
		{"genesis signature stripped", func(r *pb.Region) { r.GenesisSignature, r.GenesisCertificate = nil, nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evil := &evilLeader{method: "GetRegion"}
			evil.tamper = func(resp any) { tc.tamper(regionResp(resp)) }
			reg := attackCeremony(t, evil, tc.name, "region")
			reg.leader().Store().FSM().Read(func(s *fsm.State) {
				if slices.ContainsFunc(s.Region.HPKE, func(b []byte) bool { return b != nil }) {
					t.Error("a hospital enrolled in a region its operator did not sign")
				}
			})
		})
	}
}

// TestAdversaryJobRewritten: the leader relays a job other than the one
// its researcher signed: K lowered, another purpose, a job of its own with
// no signature, or, once the job is accepted, decryption and approval
// tasks claiming K = 1. Every hospital checks the researcher's signature
// against the region CA, pins the job, and holds each task to it.
func TestAdversaryJobRewritten(t *testing.T) {
	offers := func(f func(*pb.JobOffer)) func(resp any) {
		return func(resp any) {
			for _, o := range resp.(*pb.PollResponse).JobOffers {
				// A copy: the response shares the replica's own state.
				o.Spec = proto.Clone(o.Spec).(*pb.JobSpec)
				f(o)
			}
		}
	}
	for _, tc := range []struct {
		name   string
		tamper func(resp any)
		what   string // the refusal's subject
		failed bool   // the job fails: every hospital refuses it
	}{
		{"K lowered in the offer", offers(func(o *pb.JobOffer) { o.Spec.MinHospitals = 2 }), "a job offer", true},
		{"purpose rewritten in the offer", offers(func(o *pb.JobOffer) { o.Spec.Purpose = "marketing" }), "a job offer", true},
		{"a job the leader made up", offers(func(o *pb.JobOffer) { o.Signature, o.Certificate = nil, nil }), "a job offer", true},
		{"K = 1 in the approval and decryption tasks", func(resp any) {
			p := resp.(*pb.PollResponse)
			for _, a := range p.Approve {
				a.Spec = proto.Clone(a.Spec).(*pb.JobSpec)
				a.Spec.MinHospitals, a.Contributors = 1, a.Contributors[:1]
			}
			for _, d := range p.Decrypt {
				d.Spec = proto.Clone(d.Spec).(*pb.JobSpec)
				d.Spec.MinHospitals = 1
			}
		}, "a task of job", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evil := &evilLeader{method: "Poll", tamper: tc.tamper}
			reg := newRegion(t, regionOpts{replicas: 1, hospitals: 3, threshold: 2, serverOptions: []grpc.ServerOption{evil.option()}})
			reg.startNodes(0, 1, 2)
			reg.waitCeremony()
			evil.on.Store(true)
			id := reg.submit(reg.spec(1, 3, 3*time.Second), "rewritten")
			by, reason := reg.refusal(tc.what)
			reportRefusal(t, tc.name, by, reason)
			if tc.failed {
				j := reg.waitJob(id, "the job ends", 60*time.Second, (*fsm.Job).Finished)
				if j.State != fsm.JobFailed || len(j.Accepted) != 0 {
					t.Fatalf("job %s with %v accepting a job its researcher did not sign", j.State, j.Accepted)
				}
			}
			if n := reg.logs.count("decryption share sent", nil); n != 0 {
				t.Fatalf("%d decryption shares given for a job its researcher did not sign", n)
			}
			if n := reg.logs.count("contributor set approved", nil); n != 0 {
				t.Fatalf("%d approvals signed for a job its researcher did not sign", n)
			}
		})
	}
}

// TestAdversaryRevocationWithheld: an operator revokes the researcher's
// certificate while the researcher's job runs. Every hospital verifies the
// operator's signed revocation and pins it; then the leader serves a
// revocation list without it (as a coordinator that wants the job to go
// on would), and the hospitals still refuse every later task of the job.
// A revocation the leader makes up (no operator signature) is ignored.
// Nodes fetch the list when a poll answer gives it another length, so the
// leader also inflates that length to make them fetch what it serves.
func TestAdversaryRevocationWithheld(t *testing.T) {
	var inflate atomic.Uint32
	poll := &evilLeader{method: "Poll", tamper: func(resp any) { resp.(*pb.PollResponse).Revocations += inflate.Load() }}
	list := &evilLeader{method: "GetRevocations"}
	reg := newRegion(t, regionOpts{replicas: 1, hospitals: 3, threshold: 2, serverOptions: []grpc.ServerOption{poll.option(), list.option()}})
	reg.startNodes(0, 1, 2)
	reg.waitCeremony()
	poll.on.Store(true)

	// A made-up revocation of the researcher: not signed by an operator,
	// so no hospital takes it in, and the job trains.
	serial := identity.SerialHex(reg.researcherCert.Leaf)
	list.tamper = func(resp any) {
		r := resp.(*pb.GetRevocationsResponse)
		r.Revoked = append(r.Revoked, &pb.Revocation{Serial: serial, Reason: "made up", SignedUnixMs: time.Now().UnixMilli(),
			Certificate: reg.researcherCert.Leaf.Raw, Signature: []byte("not a signature")})
	}
	list.on.Store(true)
	inflate.Store(1)
	id := reg.submit(reg.spec(40, 3, 10*time.Second), "revoked-later")
	by, reason := reg.refusal("the revocation of " + serial)
	reportRefusal(t, "a revocation the leader made up", by, reason)
	reg.waitJob(id, "a round committed", 60*time.Second, func(j *fsm.Job) bool { return len(j.Models) > 1 })

	// The operator's signed revocation reaches every hospital once.
	list.on.Store(false)
	admin, opCert := reg.clientCert("ops", identity.RoleOperator)
	reg.revoke(admin, opCert, serial, "researcher left")
	reg.waitFor("every hospital pins the revocation", 30*time.Second, func() bool {
		return reg.logs.count("certificate revocation pinned", map[string]string{"serial": serial}) == 3
	})
	// From now on the leader withholds it, and says the list changed so
	// that the hospitals fetch the list without it.
	list.tamper = func(resp any) { resp.(*pb.GetRevocationsResponse).Revoked = nil }
	list.hits.Store(0)
	list.on.Store(true)
	inflate.Store(2)
	by, reason = reg.refusal("a task of job " + id)
	reportRefusal(t, "a revoked researcher's job kept running, the revocation withheld", by, reason)
	if !strings.Contains(reason, "revoked") {
		t.Fatalf("refused for %q, want the revocation", reason)
	}
	// At most the round in flight when the revocation was pinned commits.
	j, _ := reg.job(id)
	committed := len(j.Models)
	time.Sleep(3 * 2 * time.Second)
	if j, _ = reg.job(id); len(j.Models) > committed+1 {
		t.Fatalf("%d more rounds committed after every hospital pinned the researcher's revocation", len(j.Models)-committed)
	}
	if list.hits.Load() == 0 {
		t.Fatal("the withheld list was never served")
	}
}

// TestAdversaryRevocationListWithheld: in a region whose signed genesis
// limits the age of the operator-signed revocation list (10 s here), an
// operator revokes the researcher's certificate while its job runs and
// publishes a list naming it; the leader withholds both from every
// hospital, serving the revocations and the poll fields as they were, so
// no hospital ever sees the revocation itself. While an operator published
// lists the hospitals worked past the limit; now, once the newest list
// they hold is older than the limit, every hospital stops working for the
// region and the job makes no more progress. A list older than one a
// hospital holds is refused at once.
func TestAdversaryRevocationListWithheld(t *testing.T) {
	const maxAge = 10 * time.Second
	var (
		frozen      atomic.Pointer[pb.GetRevocationsResponse]
		frozenCount atomic.Uint32
		frozenMs    atomic.Int64
	)
	poll := &evilLeader{method: "Poll", tamper: func(resp any) {
		r := resp.(*pb.PollResponse)
		r.Revocations, r.RevocationListIssuedMs = frozenCount.Load(), frozenMs.Load()
	}}
	list := &evilLeader{method: "GetRevocations", tamper: func(resp any) {
		r, f := resp.(*pb.GetRevocationsResponse), frozen.Load()
		r.Revoked, r.List = f.Revoked, f.List
	}}
	reg := newRegion(t, regionOpts{replicas: 1, hospitals: 3, threshold: 2, revocationMaxAge: maxAge,
		serverOptions: []grpc.ServerOption{poll.option(), list.option()}})
	reg.startNodes(0, 1, 2)
	reg.waitCeremony()
	hospital := reg.client("hospital-1", identity.RoleHospital)
	served := func() *pb.GetRevocationsResponse {
		var resp *pb.GetRevocationsResponse
		err := hospital.Do(reg.ctx(), func(ctx context.Context, conn client.Conn) error {
			var err error
			resp, err = conn.Hospital.GetRevocations(ctx, &pb.GetRevocationsRequest{})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	first := served() // the list published with the region

	// An operator publishing every second keeps the hospitals working
	// well past the limit.
	publishing, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		for {
			select {
			case <-publishing:
				return
			case <-time.After(time.Second):
			}
			if err := reg.PublishRevocations(reg.ctx()); err != nil {
				t.Errorf("publishing the revocation list: %v", err)
				return
			}
		}
	}()
	id := reg.submit(reg.spec(200, 3, 10*time.Second), "revocation-list")
	past := time.Now().Add(maxAge + time.Second)
	reg.waitFor("a round commits after the first list is older than the limit", slow(60*time.Second), func() bool {
		j, _ := reg.job(id)
		return slices.ContainsFunc(j.Rounds, func(r *fsm.Round) bool {
			return r.State == fsm.RoundCommitted && r.ClosedMs > past.UnixMilli()
		})
	})
	close(publishing)
	<-stopped

	// From now on the leader serves what the hospitals hold.
	now := served()
	frozen.Store(now)
	frozenCount.Store(uint32(len(now.Revoked)))
	frozenMs.Store(now.List.GetIssuedUnixMs())
	list.on.Store(true)
	poll.on.Store(true)
	admin, opCert := reg.clientCert("ops", identity.RoleOperator)
	reg.revoke(admin, opCert, identity.SerialHex(reg.researcherCert.Leaf), "researcher left")
	if err := reg.PublishRevocations(reg.ctx()); err != nil {
		t.Fatal(err)
	}
	by, reason := reg.refusal("work for the region")
	reportRefusal(t, "a revocation withheld from every hospital past the list's age limit", by, reason)
	if !strings.Contains(reason, "revocation list") || !strings.Contains(reason, maxAge.String()) {
		t.Fatalf("refused for %q, want the list's age against the region's %v", reason, maxAge)
	}
	// The refusing hospital names the list it holds: the leader's frozen
	// one, or (on a loaded machine, when its polls lagged) an older one.
	open, end := strings.Index(reason, "("), strings.Index(reason, ")")
	if open < 0 || end < open {
		t.Fatalf("refused without naming the list held: %q", reason)
	}
	issued, err := time.Parse(time.RFC3339, reason[open+1:end])
	if err != nil {
		t.Fatalf("the list held in %q: %v", reason, err)
	}
	if held := time.UnixMilli(now.List.GetIssuedUnixMs()); issued.After(held) || time.Since(issued) < maxAge {
		t.Fatalf("refused %v after its list was issued (%v; the leader's frozen list %v), before the limit of %v", time.Since(issued), issued, held, maxAge)
	}
	reg.waitFor("every hospital stops working for the region", 30*time.Second, func() bool {
		for _, h := range reg.names {
			if reg.logs.count("refusing what the coordinator served", map[string]string{"what": "work for the region", "hospital": h}) == 0 {
				return false
			}
		}
		return true
	})
	// At most the round whose shares were given before commits.
	j, _ := reg.job(id)
	committed := len(j.Models)
	time.Sleep(3 * time.Second)
	if j, _ = reg.job(id); len(j.Models) > committed+1 {
		t.Fatalf("%d rounds committed after every hospital stopped working", len(j.Models)-committed)
	}
	if poll.hits.Load() == 0 {
		t.Fatal("the withheld list was never served")
	}

	// Rolling back to the list the region began with.
	frozen.Store(first)
	frozenCount.Store(uint32(len(first.Revoked)))
	frozenMs.Store(first.List.GetIssuedUnixMs())
	by, reason = reg.refusal("the revocation list")
	reportRefusal(t, "a revocation list older than one a hospital holds", by, reason)
	if !strings.Contains(reason, "never goes back") || list.hits.Load() == 0 {
		t.Fatalf("refused for %q, want the rollback", reason)
	}

	// A fresh list signed with an operator certificate whose revocation
	// comes with it (a stolen key keeping the list fresh).
	_, stolen := reg.clientCert("ops-2", identity.RoleOperator)
	stolenSerial := identity.SerialHex(stolen.Leaf)
	rev, err := client.RevokeRequest(opCert, stolenSerial, "key stolen", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	sig, ms, err := identity.SignRevocationList(stolen.PrivateKey, reg.regionDigest(), nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	frozen.Store(&pb.GetRevocationsResponse{
		Revoked: []*pb.Revocation{{Serial: stolenSerial, Reason: rev.Reason, SignedUnixMs: rev.SignedUnixMs, Signature: rev.Signature, Certificate: opCert.Leaf.Raw}},
		List:    &pb.RevocationList{IssuedUnixMs: ms, Signature: sig, Certificate: stolen.Leaf.Raw},
	})
	frozenCount.Store(1)
	frozenMs.Store(ms)
	by, reason = reg.refusalWith("the revocation list", "which is revoked")
	reportRefusal(t, "a fresh revocation list signed with a revoked operator's key", by, reason)
	// The revocation that came with it verified on its own, and is kept.
	reg.waitFor("every hospital pins the stolen key's revocation", 30*time.Second, func() bool {
		return reg.logs.count("certificate revocation pinned", map[string]string{"serial": stolenSerial}) == 3
	})
}

// TestAdversaryModelDiffersForOneHospital: the leader serves hospital-1
// a model other than the one committed (one parameter nudged), the
// model-inconsistency attack. hospital-1 binds its update, and derives
// its mask a, from the digest of the parameters it was served: its
// update cannot be summed with the others' into anything that decrypts,
// and its signed contribution does not verify against the round's
// binding, so it is never counted. (Decryptors refuse an approval set
// that mixes two models' bindings too: TestOneDecryptionSharePerRound in
// node/.) Before either, hospital-1 checks the version against its own
// chain and refuses to train from it at all. The job trains on without it.
func TestAdversaryModelDiffersForOneHospital(t *testing.T) {
	// Hospital-1 refuses a forged version 0 before training
	// (TestAdversaryForgedInitialModel); from version 1 on, its chain
	// check refuses the model (or, had it trained, the round's binding
	// would refuse the update).
	evil := &evilLeader{method: "FetchModel", only: "hospital-1", tamper: func(resp any) {
		resp.(*pb.FetchModelResponse).Model.Params[0] += 0.25
	}}
	reg := newRegion(t, regionOpts{replicas: 1, hospitals: 3, threshold: 2, serverOptions: []grpc.ServerOption{evil.option()}, steppedClock: true})
	reg.startNodes(0, 1, 2)
	reg.waitCeremony()
	evil.on.Store(true)
	id := reg.submit(reg.spec(2, 2, time.Minute), "model-differs")
	// refused is hospital-1's refused update of round n, if any.
	refused := func(n uint32) string {
		root := reg.logs.root()
		root.mu.Lock()
		defer root.mu.Unlock()
		for _, rec := range root.records {
			if err := rec.attrs["err"]; rec.msg == "work failed, retrying" && rec.attrs["hospital"] == "hospital-1" &&
				strings.Contains(err, fmt.Sprintf("round %d:", n)) && (strings.Contains(err, "signature") || strings.Contains(err, "is not version")) {
				return err
			}
		}
		return ""
	}
	// Rounds wait for hospital-1 until their deadline, passed once the
	// other two sent and, from version 1 on, hospital-1's update was
	// refused (after failing on version 0 it may be in a back-off longer
	// than the others take).
	reg.passDeadlines(id, func(_ *fsm.Job, r *fsm.Round) bool {
		return r.State == fsm.RoundCollecting && r.Contributed("hospital-2") && r.Contributed("hospital-3") &&
			(r.ModelVersion == 0 || refused(r.Number) != "")
	})
	var reason string
	reg.waitFor("hospital-1's update is refused", time.Minute, func() bool {
		reason = refused(2)
		return reason != ""
	})
	reportRefusal(t, "a model that differs for one hospital", "hospital-1 (its model chain; the round's binding behind it)", reason)
	j := reg.waitDone(id, time.Minute)
	if evil.hits.Load() == 0 {
		t.Fatal("the attack never ran")
	}
	for _, r := range j.Rounds {
		if slices.Contains(r.Contributors, "hospital-1") || r.ContributionOf("hospital-1") != nil {
			t.Fatalf("round %d counted the update hospital-1 trained from another model", r.Number)
		}
	}
	if j.State != fsm.JobDone {
		t.Errorf("job %s: %s", j.State, j.Reason)
	}
}

// A leader that serves its own initial model to every hospital (trap
// weights chosen so that an update gives rows away) gets no update from
// it: version 0 is what the signed spec's architecture and seed make, and
// each site makes it itself.
func TestAdversaryForgedInitialModel(t *testing.T) {
	forgedModel(t, 0, "initial model", "a forged initial model", "every hospital (version 0 from the signed spec)")
}

// TestAdversaryModelOffChain: the leader serves every hospital a version 1
// that is not version 0 plus the server step of round 1's decrypted
// aggregate: weights of its choosing, the same for all, so that the sum
// of the next round would still decrypt. Scored on the sites' test rows,
// such weights would turn the region's metric sums into queries of the
// leader's choice. Every site computes version 1 itself from round 1's
// evidence (the aggregate, the contributors' signed approvals and
// fingerprints, the decryptors' signed shares), sees the difference, and
// neither trains from the forged model nor measures it.
func TestAdversaryModelOffChain(t *testing.T) {
	reg := forgedModel(t, 1, "a model", "a model off the verified chain", "every hospital (version 1 recomputed from round 1's evidence)")
	if n := reg.logs.count("model verified", nil); n != 0 {
		t.Fatalf("%d sites verified a forged model", n)
	}
}

// forgedModel runs a job whose every model from version from on is served
// to every hospital with one parameter nudged, waits until every hospital
// refused it as what, and checks that no round trained from a forged
// version took an update.
func forgedModel(t *testing.T, from uint32, what, attack, by string) *region {
	t.Helper()
	evil := &evilLeader{method: "FetchModel", tamper: func(resp any) {
		if m := resp.(*pb.FetchModelResponse).Model; m.Version >= from {
			m.Params[0] += 0.25
		}
	}}
	reg := newRegion(t, regionOpts{replicas: 1, hospitals: 3, threshold: 2, serverOptions: []grpc.ServerOption{evil.option()}})
	reg.startNodes(0, 1, 2)
	reg.waitCeremony()
	evil.on.Store(true)
	id := reg.submit(reg.spec(int(from)+1, 2, time.Minute), "forged-model")
	refused := reg.everyHospitalRefuses(what)
	reportRefusal(t, attack, by, refused["hospital-1"])
	if evil.hits.Load() == 0 {
		t.Fatal("the attack never ran")
	}
	j, _ := reg.job(id)
	for _, r := range j.Rounds {
		if r.ModelVersion >= from && len(r.Contributions) > 0 {
			t.Fatalf("round %d took %d updates trained from a forged version %d", r.Number, len(r.Contributions), r.ModelVersion)
		}
	}
	return reg
}

// TestAdversaryModelEvidenceForged: the leader serves the evidence of a
// version with one part forged, to have the sites accept a model of its
// choosing: each site checks every signature of the evidence against the
// region CA and the pinned region, and the aggregate against the
// contributors' fingerprints, and refuses.
func TestAdversaryModelEvidenceForged(t *testing.T) {
	for _, tc := range []struct {
		name, because string
		tamper        func(ev *pb.ModelEvidence)
	}{
		{"an aggregate other than the one approved", "contributor set and aggregate", func(ev *pb.ModelEvidence) {
			ev.Aggregate = slices.Clone(ev.Aggregate) // the state's bytes are shared, never edited
			ev.Aggregate[len(ev.Aggregate)-1] ^= 0x40
		}},
		{"a share replaced by another decryptor's", "decryption share", func(ev *pb.ModelEvidence) {
			ev.Shares[0].Share = ev.Shares[1].Share
		}},
		{"a contributor dropped", "contributor set and aggregate", func(ev *pb.ModelEvidence) {
			ev.Contributors, ev.Approvals = ev.Contributors[1:], ev.Approvals[1:]
		}},
		{"the evidence of another round", "bound to another", func(ev *pb.ModelEvidence) {
			ev.Round++
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evil := &evilLeader{method: "GetModelEvidence", tamper: func(resp any) {
				tc.tamper(resp.(*pb.GetModelEvidenceResponse).Evidence)
			}}
			reg := newRegion(t, regionOpts{replicas: 1, hospitals: 3, threshold: 2, serverOptions: []grpc.ServerOption{evil.option()}})
			reg.startNodes(0, 1, 2)
			reg.waitCeremony()
			evil.on.Store(true)
			id := reg.submit(reg.spec(2, 2, time.Minute), "evidence-forged")
			by, reason := reg.refusalWith("", tc.because)
			reportRefusal(t, "model evidence with "+tc.name, by, reason)
			if n := reg.logs.count("model verified", nil); n != 0 {
				t.Fatalf("%d sites verified a model from forged evidence", n)
			}
			j, _ := reg.job(id)
			for _, r := range j.Rounds {
				if r.ModelVersion >= 1 && len(r.Contributions) > 0 {
					t.Fatalf("round %d took %d updates trained from a version its sites could not verify", r.Number, len(r.Contributions))
				}
			}
		})
	}
}
