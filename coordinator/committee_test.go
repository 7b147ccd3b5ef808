package coordinator_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"regionfl/audit"
	"regionfl/client"
	"regionfl/coordinator/fsm"
	"regionfl/coordinator/server"
	"regionfl/he"
	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

// A region whose genesis names a decryption committee keeps the Shamir
// shares with c of its hospitals, drawn anew for each key epoch from the
// signed region and the epoch: every hospital seals c shares instead of
// N, only the committee holds shares and decrypts, and the job trains and
// measures as in a region where everyone holds shares.
func TestDecryptionCommittee(t *testing.T) {
	const hospitals, committee = 6, 3
	reg := newRegion(t, regionOpts{replicas: 1, hospitals: hospitals, threshold: 2, committee: committee, rekeyAt: 2})
	reg.startNodes(0, 1, 2, 3, 4, 5)
	reg.waitCeremony()
	genesis := reg.leaderRegion()
	checkCommittee(t, genesis, 0, committee)
	// Each hospital sealed c shares.
	recs := reg.auditRecords(audit.ActionCeremonySealedShares)
	for _, rec := range recs {
		if rec.Size != uint64(committee*he.SealedShareSize(he.RegionParams())) {
			t.Errorf("%s sealed %d bytes, want %d shares of %d", rec.Hospital, rec.Size, committee, he.SealedShareSize(he.RegionParams()))
		}
	}
	if len(recs) != hospitals {
		t.Errorf("%d hospitals sealed shares, want %d", len(recs), hospitals)
	}
	// The log holds their digests, never the shares.
	for i, d := range genesis.Dealt {
		if d == nil || len(d.Digests) != committee || d.Shares != nil {
			t.Errorf("%s dealt %+v", genesis.Hospitals[i], d)
		}
	}

	id := reg.submit(reg.spec(6, hospitals, 20*time.Second), "committee-1")
	j := reg.waitDone(id, 3*time.Minute)
	if j.State != fsm.JobDone {
		t.Fatalf("job %s: %s", j.State, j.Reason)
	}
	reg.checkCounted(j)
	reg.checkMeasured(j)
	region := reg.leaderRegion()
	epochs := map[uint32]bool{}
	for _, r := range j.Rounds {
		epochs[r.Epoch] = true
		for _, h := range r.Active {
			if !slices.Contains(region.CommitteeOf(r.Epoch), h) {
				t.Errorf("round %d: decryptor %s is not on the committee %v of key epoch %d", r.Number, h, region.CommitteeOf(r.Epoch), r.Epoch)
			}
		}
	}
	if len(epochs) < 2 {
		t.Fatalf("every round ran in one key epoch (%v): the committee was never drawn again", epochs)
	}
	for e := range epochs {
		t.Logf("key epoch %d: committee %v", e, region.CommitteeOf(e))
	}
	// The newest epoch's parties: the committee holds shares, the others
	// only sealed theirs.
	reg.waitCeremony()
	region = reg.leaderRegion()
	checkCommittee(t, region, region.Epoch, committee)
	for _, h := range reg.names {
		b, err := os.ReadFile(filepath.Join(reg.dir, h, "node-state.json"))
		if err != nil {
			t.Fatal(err)
		}
		state, err := partyState(b, region.Epoch)
		if err != nil {
			t.Fatal(err)
		}
		party, err := he.UnmarshalParty(he.RegionParams(), state)
		if err != nil {
			t.Fatal(err)
		}
		if party.Holder() != region.Holds(region.Epoch, h) || party.Self() != region.MemberPoint(region.Epoch, h) || !party.Ready() {
			t.Errorf("%s in key epoch %d: point %d, holder %v, ready %v; the committee is %v", h, region.Epoch, party.Self(), party.Holder(), party.Ready(), region.CommitteeOf(region.Epoch))
		}
	}
}

// checkCommittee checks that key epoch e's committee is the c members
// identity.EpochPoints draws from the signed region, at points 1..c.
func checkCommittee(t *testing.T, r *fsm.Region, e uint32, c int) {
	t.Helper()
	got := r.CommitteeOf(e)
	want := identity.EpochPoints(identity.CeremonyDigest(r.Digest(), e), r.MembersOf(e), uint32(c))[:c]
	if !slices.Equal(got, want) || len(got) != c {
		t.Fatalf("key epoch %d: committee %v, the draw gives %v", e, got, want)
	}
	for k, h := range got {
		if p := r.MemberPoint(e, h); p != uint32(k+1) {
			t.Errorf("key epoch %d: committee member %s at point %d, want %d", e, h, p, k+1)
		}
	}
}

// An operator names a committee between the threshold and the number of
// hospitals, and one small enough for a hospital's sealed shares to fit
// in one message: a region too large for every hospital to hold shares is
// refused at creation, with the committee it needs, rather than stalling
// in its ceremony.
func TestCreateRegionCommittee(t *testing.T) {
	c := startCluster(t, 1)
	op, opCert := c.clientCert("ops", identity.RoleOperator, c.Replicas()[0].GRPCAddr())
	var hospitals []string
	for i := range 40 {
		hospitals = append(hospitals, fmt.Sprintf("hospital-%02d", i))
	}
	most := server.MaxSealedPerMessage(he.RegionParams())
	create := func(hs []string, committee uint32) error {
		req, err := client.CreateRegionRequest(opCert, he.RegionParamsName, hs, 3, committee, 0)
		if err != nil {
			t.Fatal(err)
		}
		return op.Do(ctx(t), func(ctx context.Context, conn client.Conn) error {
			_, err := conn.Operator.CreateRegion(ctx, req)
			return err
		})
	}
	for _, tc := range []struct {
		hospitals []string
		committee uint32
		want      string
	}{
		{hospitals, 2, "committee: 2 is neither 0 (every hospital) nor between the threshold 3 and the 40 hospitals"},
		{hospitals[:5], 6, "committee: 6 is neither 0 (every hospital) nor between the threshold 3 and the 5 hospitals"},
		{hospitals, 0, fmt.Sprintf("committee: 40 hospitals would hold key shares, and each hospital sends one sealed share of %d KiB to each in one message; at most %d fit: name a committee of 3 to %d",
			he.SealedShareSize(he.RegionParams())>>10, most, most)},
		{hospitals, uint32(most + 1), fmt.Sprintf("at most %d fit", most)},
	} {
		err := create(tc.hospitals, tc.committee)
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%d hospitals, committee %d: %v, want InvalidArgument %q", len(tc.hospitals), tc.committee, err, tc.want)
		}
	}
	if err := create(hospitals, uint32(most)); err != nil {
		t.Fatal(err)
	}
	c.Replicas()[0].Store().FSM().Read(func(s *fsm.State) {
		if s.Region == nil || s.Region.Committee != uint32(most) || len(s.Region.Hospitals) != 40 {
			t.Fatalf("region %+v", s.Region)
		}
	})
	t.Logf("a sealed share is %d KiB: without a committee, a region holds at most %d hospitals", he.SealedShareSize(he.RegionParams())>>10, most)
}

// A region beyond 64 hospitals runs on the parameter set its genesis
// names for its size (he.ParamsFor: aggregates of up to 1,024 updates), with
// a committee of 5 holding the key shares: the ceremony's messages fit,
// every hospital's update is counted, and each site measures models it
// verified itself.
func TestLargeRegion(t *testing.T) {
	if raceDetector {
		t.Skip("100 nodes in one process: too slow under the race detector; the committee's logic runs under it in TestDecryptionCommittee")
	}
	const hospitals, committee = 100, 5
	reg := newRegion(t, regionOpts{replicas: 1, hospitals: hospitals, threshold: 3, committee: committee})
	var all []int
	for i := range hospitals {
		all = append(all, i)
	}
	start := time.Now()
	reg.startNodes(all...)
	reg.waitCeremonyWithin(5 * time.Minute)
	ceremony := time.Since(start)
	region := reg.leaderRegion()
	if want := he.LargeRegionParams().Name(); region.Params != want {
		t.Fatalf("a region of %d hospitals runs %s, want %s", hospitals, region.Params, want)
	}
	checkCommittee(t, region, 0, committee)

	start = time.Now()
	id := reg.submit(reg.spec(2, hospitals, 2*time.Minute), "large-region")
	j := reg.waitDone(id, 5*time.Minute)
	if j.State != fsm.JobDone {
		t.Fatalf("job %s: %s", j.State, j.Reason)
	}
	reg.checkCounted(j)
	reg.checkMeasured(j)
	for _, r := range j.Rounds {
		if len(r.Contributors) != hospitals {
			t.Errorf("round %d summed %d updates, want %d", r.Number, len(r.Contributors), hospitals)
		}
	}
	t.Logf("%d hospitals on %s, committee %v: ceremony %v, 2 rounds %v", hospitals, region.Params, region.CommitteeOf(0), ceremony.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
}

// TestAdversaryDecryptorOffCommittee: the leader names a hospital off the
// committee as a round's decryptor (to whom no share was sealed; a
// Lagrange set with a point it chose). Each decryptor draws the committee
// itself and refuses the manifest.
func TestAdversaryDecryptorOffCommittee(t *testing.T) {
	var region atomic.Pointer[fsm.Region]
	evil := &evilLeader{method: "Poll"}
	evil.tamper = func(resp any) {
		r := region.Load()
		for _, task := range resp.(*pb.PollResponse).Decrypt {
			i := slices.IndexFunc(r.MembersOf(task.Epoch), func(h string) bool { return !r.Holds(task.Epoch, h) })
			if i < 0 || len(task.Active) < 2 {
				continue
			}
			// The first decryptor makes way for a hospital off the
			// committee; the others, asked with this list, check it.
			off := r.MembersOf(task.Epoch)[i]
			task.Active = slices.Sorted(slices.Values(append(slices.Clone(task.Active[1:]), off)))
		}
	}
	reg := newRegion(t, regionOpts{replicas: 1, hospitals: 5, threshold: 2, committee: 3, serverOptions: []grpc.ServerOption{evil.option()}})
	reg.startNodes(0, 1, 2, 3, 4)
	reg.waitCeremony()
	region.Store(reg.leaderRegion())
	evil.on.Store(true)
	reg.submit(reg.spec(1, 5, 20*time.Second), "off-committee")
	by, reason := reg.refusalWith("a decryption manifest", "is not on the committee")
	reportRefusal(t, "a decryptor off the committee", by, reason)
	if !region.Load().Holds(0, by) {
		t.Fatalf("%s refused, but it is not on the committee %v", by, region.Load().CommitteeOf(0))
	}
	if n := reg.logs.count("decryption share sent", nil); n != 0 {
		t.Fatalf("%d decryption shares went out for a manifest naming a decryptor off the committee", n)
	}
}

// The leader relays sealed shares outside the log, which records their
// digests: a new leader lacks the shares sent to the old one, asks their
// senders for them again, and takes only the very bytes the log records.
// A sender restarted meanwhile sends the shares it kept on disk.
func TestSealedSharesAcrossFailover(t *testing.T) {
	block := &blockFor{method: "SubmitSealedShares", hospital: "hospital-4"}
	block.on.Store(true)
	reg := newRegion(t, regionOpts{replicas: 3, hospitals: 4, threshold: 2, serverOptions: []grpc.ServerOption{block.option()}})
	reg.startNodes(0, 1, 2, 3)
	reg.waitFor("every member but hospital-4 sealed its shares", 30*time.Second, func() bool {
		r := reg.leaderRegion()
		return r.SealedAll("hospital-1") && r.SealedAll("hospital-2") && r.SealedAll("hospital-3")
	})
	reg.stopNode(0)
	reg.stopReplica(reg.leaderIndex())
	reg.startNode(0)
	block.on.Store(false)
	reg.waitCeremony()
	for _, h := range []string{"hospital-1", "hospital-2", "hospital-3"} {
		if reg.logs.count("sealed shares relayed again", map[string]string{"hospital": h}) == 0 {
			t.Errorf("%s's shares reached the new leader without being sent again", h)
		}
	}
	if n := reg.logs.count("sealed shares relayed", nil); n != 4 {
		t.Errorf("%d first sendings of sealed shares logged, want 4", n)
	}
	id := reg.submit(reg.spec(1, 4, 20*time.Second), "after-failover")
	j := reg.waitDone(id, time.Minute)
	if j.State != fsm.JobDone {
		t.Fatalf("job %s: %s", j.State, j.Reason)
	}
	reg.checkCounted(j)
}
