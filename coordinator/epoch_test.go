package coordinator_test

import (
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"regionfl/audit"
	"regionfl/client"
	"regionfl/coordinator/fsm"
	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

// The region re-keys on its own. Once its key has decrypted rekeyAt
// ciphertexts the leader starts the next key epoch's ceremony; rounds keep
// the old key until that ceremony is done and switch only at a
// model-version boundary; each hospital erases a retired epoch's Shamir
// shares and HPKE key from its disk; and the job trains as it would
// without a re-key.
func TestKeyEpochs(t *testing.T) {
	reg := newRegion(t, regionOpts{replicas: 1, hospitals: 3, threshold: 2, rekeyAt: 2})
	reg.startNodes(0, 1, 2)
	reg.waitCeremony()
	id := reg.submit(reg.spec(8, 2, 10*time.Second), "epochs-1")
	j := reg.waitDone(id, 2*time.Minute)
	if j.State != fsm.JobDone {
		t.Fatalf("job %s: %s", j.State, j.Reason)
	}
	reg.checkCounted(j)
	reg.checkMeasured(j)
	epochs := map[uint32]int{}
	for i, r := range j.Rounds {
		epochs[r.Epoch]++
		if i == 0 {
			continue
		}
		prev := j.Rounds[i-1]
		if r.Epoch < prev.Epoch || (r.Epoch != prev.Epoch && r.ModelVersion == prev.ModelVersion) {
			t.Errorf("round %d (model v%d) in epoch %d after round %d (model v%d) in epoch %d: epochs switch forward, at a model-version boundary",
				r.Number, r.ModelVersion, r.Epoch, prev.Number, prev.ModelVersion, prev.Epoch)
		}
	}
	if len(epochs) < 2 {
		t.Fatalf("every round ran in one key epoch (%v): the region never re-keyed", epochs)
	}
	var last uint32
	reg.leader().Store().FSM().Read(func(s *fsm.State) { last = s.Region.Epoch })
	if started := len(reg.auditRecords(audit.ActionCeremonyEpochStarted)); started != int(last) || started == 0 {
		t.Errorf("%d ceremony.epoch_started records for key epoch %d", started, last)
	}
	t.Logf("8 rounds in key epochs %v; the region is at epoch %d", epochs, last)

	// With the job done, every epoch below the newest ready one is
	// retired: its keys are gone from every hospital's disk.
	reg.waitFor("every hospital erased its retired keys", 30*time.Second, func() bool {
		for _, h := range reg.names {
			b, err := os.ReadFile(filepath.Join(reg.dir, h, "node-state.json"))
			if err != nil {
				return false
			}
			for e := uint32(0); e+1 < last; e++ {
				if p, err := partyState(b, e); err != nil || p != nil {
					return false
				}
			}
		}
		return true
	})
	if n := reg.logs.count("key epoch retired: its Shamir shares and HPKE key erased", map[string]string{"epoch": "0"}); n != len(reg.names) {
		t.Errorf("%d hospitals logged erasing epoch 0, want %d", n, len(reg.names))
	}
	// What remains on disk of epoch 0 is its count of decryptions.
	b, err := os.ReadFile(filepath.Join(reg.dir, reg.names[0], "node-state.json"))
	if err != nil {
		t.Fatal(err)
	}
	var st struct {
		Epochs map[uint32]map[string]any `json:"epochs"`
	}
	if err := json.Unmarshal(b, &st); err != nil {
		t.Fatal(err)
	}
	if e0 := st.Epochs[0]; e0["erased"] != true || e0["hpke_private"] != nil || e0["party"] != nil || e0["decrypted"] == nil {
		t.Errorf("hospital-1's record of the retired epoch 0: %v", e0)
	}

	// A job after the re-keys trains in the newest epoch, once its
	// ceremony (started by the job's last decryptions) is done.
	reg.waitCeremony()
	id2 := reg.submit(reg.spec(1, 2, 10*time.Second), "epochs-2")
	j2 := reg.waitDone(id2, time.Minute)
	if j2.State != fsm.JobDone || j2.Rounds[0].Epoch != last {
		t.Errorf("a later job %s in epoch %d, the region's key is epoch %d", j2.State, j2.Rounds[0].Epoch, last)
	}
}

// rekey has an operator start the next key epoch, and returns its number.
func (r *region) rekey(reason string) uint32 {
	r.t.Helper()
	var resp *pb.StartKeyEpochResponse
	err := r.client("ops", identity.RoleOperator).Do(r.ctx(), func(ctx context.Context, conn client.Conn) error {
		var err error
		resp, err = conn.Operator.StartKeyEpoch(ctx, &pb.StartKeyEpochRequest{Reason: reason})
		return err
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return resp.Epoch
}

// auditRecords are the records of the leader's audit log with action a.
func (r *region) auditRecords(a audit.Action) []audit.Record {
	var out []audit.Record
	r.leader().Store().FSM().Read(func(s *fsm.State) {
		for i := range s.Audit.Len() {
			if rec, err := s.Audit.Record(i); err == nil && rec.Action == a {
				out = append(out, rec)
			}
		}
	})
	return out
}

// An operator starts a key epoch by hand (after a hospital's host was
// reinstalled, say): with a reason, audited, and not while a ceremony runs.
func TestStartKeyEpochByOperator(t *testing.T) {
	reg := newRegion(t, regionOpts{replicas: 1, hospitals: 3, threshold: 2})
	reg.startNodes(0, 1, 2)
	reg.waitCeremony()
	op := reg.client("ops", identity.RoleOperator)
	start := func(reason string) (*pb.StartKeyEpochResponse, error) {
		var resp *pb.StartKeyEpochResponse
		err := op.Do(reg.ctx(), func(ctx context.Context, conn client.Conn) error {
			var err error
			resp, err = conn.Operator.StartKeyEpoch(ctx, &pb.StartKeyEpochRequest{Reason: reason})
			return err
		})
		return resp, err
	}
	if _, err := start("  "); status.Code(err) != codes.InvalidArgument {
		t.Fatalf("no reason: %v", err)
	}
	resp, err := start("hospital-2's host was reinstalled")
	if err != nil || resp.Epoch != 1 {
		t.Fatalf("start: %v, epoch %d", err, resp.GetEpoch())
	}
	if _, err := start("again"); status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("a second re-key while the ceremony runs: %v", err)
	}
	reg.waitCeremony()
	id := reg.submit(reg.spec(1, 2, 10*time.Second), "operator-epoch")
	if j := reg.waitDone(id, time.Minute); j.State != fsm.JobDone || j.Rounds[0].Epoch != 1 {
		t.Fatalf("job %s in epoch %d after the re-key", j.State, j.Rounds[0].Epoch)
	}
	recs := reg.auditRecords(audit.ActionCeremonyEpochStarted)
	if len(recs) != 1 || recs[0].Reason != "hospital-2's host was reinstalled" || recs[0].Actor != "ops" || recs[0].Details["epoch"] != "1" {
		t.Errorf("audit of the re-key: %+v", recs)
	}
}

// TestAdversaryRetiredEpoch: after a re-key the leader wants the old key
// back. It asks for decryption shares under the retired epoch (whose
// aggregates it may have kept), and it serves the region as if the old
// epoch's ceremony were running again (to have the hospitals make new
// secrets under old seeds). The hospitals erased the old keys and never
// run an epoch's ceremony twice.
func TestAdversaryRetiredEpoch(t *testing.T) {
	for _, tc := range []struct {
		name, method, what string
		tamper             func(resp any)
	}{
		{"a decryption under the retired key epoch", "Poll", "a task of key epoch 0", func(resp any) {
			for _, d := range resp.(*pb.PollResponse).Decrypt {
				d.Epoch = 0
			}
		}},
		{"the retired epoch's ceremony served again", "GetRegion", "region", func(resp any) { regionResp(resp).Epoch = 0 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			evil := &evilLeader{method: tc.method, tamper: tc.tamper}
			reg := newRegion(t, regionOpts{replicas: 1, hospitals: 3, threshold: 2, serverOptions: []grpc.ServerOption{evil.option()}})
			reg.startNodes(0, 1, 2)
			reg.waitCeremony()
			reg.rekey("test")
			reg.waitFor("every hospital erased key epoch 0", 30*time.Second, func() bool {
				return reg.logs.count("key epoch retired: its Shamir shares and HPKE key erased", map[string]string{"epoch": "0"}) == len(reg.names)
			})
			evil.on.Store(true)
			reg.submit(reg.spec(1, 2, 3*time.Second), "retired-epoch")
			by, reason := reg.refusal(tc.what)
			reportRefusal(t, tc.name, by, reason)
			if n := reg.logs.count("decryption share sent", nil); n != 0 {
				t.Fatalf("%d decryption shares given", n)
			}
		})
	}
}

// A re-key does not wait for a hospital that is down: once enrollment has
// been open for the region's wait, the leader goes ahead with the
// hospitals enrolled (at least t+1). The hospital left out keeps working
// for the region: it decides on jobs, sits the epoch's rounds out (no
// round waits for it), and joins the next key epoch.
func TestRekeyWithoutEveryHospital(t *testing.T) {
	reg := newRegion(t, regionOpts{replicas: 1, hospitals: 4, threshold: 2, steppedClock: true, enrollmentWait: 10 * time.Minute})
	reg.startNodes(0, 1, 2, 3)
	reg.waitCeremony()
	down := reg.names[3]
	reg.stopNode(3)
	region := func() (r *fsm.Region) {
		reg.leader().Store().FSM().Read(func(s *fsm.State) { r = s.Region.Clone() })
		return r
	}
	e1 := reg.rekey(down + " is down for maintenance")
	reg.waitFor("three hospitals enrolled in key epoch 1", 30*time.Second, func() bool { return len(region().Enrolled()) == 3 })
	time.Sleep(300 * time.Millisecond)
	if r := region(); r.Step() != pb.CeremonyStep_CEREMONY_STEP_ENROLL {
		t.Fatalf("the re-key went ahead (step %v) before its enrollment wait", r.Step())
	}
	reg.clockOffset.Add(int64(11 * time.Minute)) // past the wait, far from twice it
	reg.waitCeremony()
	r := region()
	if members := r.MembersOf(e1); r.Epoch != e1 || !slices.Equal(members, reg.names[:3]) {
		t.Fatalf("key epoch %d has members %v, want %v", r.Epoch, members, reg.names[:3])
	}
	recs := reg.auditRecords(audit.ActionCeremonyEnrollmentClosed)
	if len(recs) != 1 || recs[0].Details["sitting_out"] != down || recs[0].Details["epoch"] != "1" {
		t.Fatalf("audit of the closed enrollment: %+v", recs)
	}
	t.Logf("key epoch %d went ahead without %s after the enrollment wait: members %v", e1, down, r.MembersOf(e1))

	// Back up, the hospital accepts a job but sits out its rounds in epoch
	// 1, which run with the three members without waiting for it.
	reg.startNode(3)
	id := reg.submit(reg.spec(2, 2, 20*time.Second), "rekey-without-one")
	j := reg.waitDone(id, 2*time.Minute)
	if j.State != fsm.JobDone || !slices.Contains(j.Accepted, down) {
		t.Fatalf("job %s (%s), accepted by %v", j.State, j.Reason, j.Accepted)
	}
	reg.checkCounted(j)
	for _, rd := range j.Rounds {
		if rd.Epoch != e1 || rd.Contributed(down) || slices.Contains(rd.Active, down) || len(rd.Contributions) != 3 {
			t.Fatalf("round %d in epoch %d: contributors %v, decryptors %v", rd.Number, rd.Epoch, rd.Contributors, rd.Active)
		}
	}
	if n := reg.logs.count("key epoch members pinned", map[string]string{"epoch": "1", "member": "false"}); n != 0 {
		t.Errorf("%d hospitals pinned themselves as outside epoch 1 (%s was down)", n, down)
	}

	// The next key epoch takes every hospital again.
	e2 := reg.rekey("bring " + down + " back")
	reg.waitCeremony()
	if r := region(); r.Epoch != e2 || !slices.Equal(r.MembersOf(e2), reg.names) {
		t.Fatalf("key epoch %d has members %v, want every hospital", r.Epoch, r.MembersOf(e2))
	}
	id2 := reg.submit(reg.spec(1, 4, 20*time.Second), "rekey-all-back")
	j2 := reg.waitDone(id2, time.Minute)
	if j2.State != fsm.JobDone || j2.Rounds[0].Epoch != e2 || !j2.Rounds[0].Contributed(down) {
		t.Fatalf("job %s in epoch %d; %s contributed: %v", j2.State, j2.Rounds[0].Epoch, down, j2.Rounds[0].Contributed(down))
	}
	reg.checkCounted(j2)
}

// TestAdversaryEpochMembers: the leader chooses who takes part in a key
// epoch, and wants that choice to hand it a secret. Hospitals accept a
// member list only if it holds every hospital (genesis) or at least
// min(N, t+1) of them, each enrolled in this very ceremony; they pin it,
// and bind their ceremony statements to it, so the list cannot differ
// between hospitals either.
func TestAdversaryEpochMembers(t *testing.T) {
	t.Run("a genesis ceremony without one hospital", func(t *testing.T) {
		evil := &evilLeader{method: "GetRegion", tamper: func(resp any) {
			r := regionResp(resp)
			r.Members = r.Members[:len(r.Members)-1]
		}}
		attackCeremony(t, evil, "a genesis ceremony without one hospital", "ceremony members")
	})
	var current atomic.Pointer[region] // the subtest's region, for tampers that read its logs
	rekeyAttack := func(t *testing.T, name string, evil *evilLeader, stopped int, what, because string) {
		t.Helper()
		reg := newRegion(t, regionOpts{replicas: 1, hospitals: 4, threshold: 2, steppedClock: true, enrollmentWait: 10 * time.Minute,
			serverOptions: []grpc.ServerOption{evil.option()}})
		current.Store(reg)
		reg.startNodes(0, 1, 2, 3)
		reg.waitCeremony()
		if stopped >= 0 {
			reg.stopNode(stopped)
		}
		evil.on.Store(true)
		reg.rekey("test")
		if stopped >= 0 {
			reg.waitFor("the others enrolled", 30*time.Second, func() bool {
				var n int
				reg.leader().Store().FSM().Read(func(s *fsm.State) { n = len(s.Region.Enrolled()) })
				return n == 3
			})
			reg.clockOffset.Add(int64(11 * time.Minute)) // past the wait, far from twice it
		}
		by, reason := reg.refusalWith(what, because)
		reportRefusal(t, name, by, reason)
		reg.leader().Store().FSM().Read(func(s *fsm.State) {
			r := s.Region
			if r.Epoch != 1 || r.Step() == pb.CeremonyStep_CEREMONY_STEP_DONE || slices.Contains(r.Ready, true) {
				t.Fatalf("key epoch %d at step %v, ready %v: the ceremony went on despite the attack", r.Epoch, r.Step(), r.Ready)
			}
		})
	}
	t.Run("a re-key with fewer members than t+1", func(t *testing.T) {
		evil := &evilLeader{method: "GetRegion", tamper: func(resp any) {
			if r := regionResp(resp); r.Epoch == 1 && len(r.Members) > 0 {
				r.Members = r.Members[:2]
			}
		}}
		rekeyAttack(t, "a re-key with fewer members than t+1", evil, -1, "ceremony members", "a key epoch needs at least 3")
	})
	t.Run("a hospital made a member with its enrollment of an earlier epoch", func(t *testing.T) {
		// The attacker keeps hospital-4's signed enrollment of epoch 0 and
		// lists hospital-4, which is down, as a member of epoch 1.
		var (
			mu             sync.Mutex
			key, sig, cert []byte
		)
		evil := &evilLeader{method: "GetRegion"}
		evil.tamper = func(resp any) {
			mu.Lock()
			defer mu.Unlock()
			r := regionResp(resp)
			switch {
			case r.Epoch == 0 && len(r.HpkeSignatures) == 4 && len(r.HpkeSignatures[3]) > 0:
				key, sig, cert = r.HpkePublicKeys[3], r.HpkeSignatures[3], r.Certificates[3]
			case r.Epoch == 1 && len(r.Members) > 0 && key != nil:
				r.Members = slices.Clone(r.Hospitals)
				r.HpkePublicKeys[3], r.HpkeSignatures[3], r.Certificates[3] = key, sig, cert
			}
		}
		evil.on.Store(true)
		rekeyAttack(t, "a hospital made a member with its enrollment of an earlier epoch", evil, 3, "ceremony hpke key of hospital-4", "does not verify")
	})
	t.Run("members changed once a hospital pinned them", func(t *testing.T) {
		// Every hospital enrolled; once hospital-2 has pinned all four as
		// the members (and sealed its shares for them), the
		// leader serves it a list without hospital-4 (enrolled, signed,
		// long enough) for its next step.
		evil := &evilLeader{method: "GetRegion", only: "hospital-2", tamper: func(resp any) {
			r := regionResp(resp)
			if r.Epoch == 1 && len(r.Members) == 4 && current.Load().logs.count("key epoch members pinned", map[string]string{"epoch": "1", "hospital": "hospital-2"}) > 0 {
				r.Members = r.Members[:3]
			}
		}}
		rekeyAttack(t, "members changed once a hospital pinned them", evil, -1, "ceremony members", "were pinned as")
	})
}

// blockFor fails one method for one hospital while on, as if the hospital
// went down right there.
type blockFor struct {
	method, hospital string
	on               atomic.Bool
}

func (b *blockFor) option() grpc.ServerOption {
	return grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if id, _ := identity.FromContext(ctx); b.on.Load() && id.Name == b.hospital && strings.HasSuffix(info.FullMethod, "/"+b.method) {
			return nil, status.Error(codes.Unavailable, "cut off")
		}
		return h(ctx, req)
	})
}

// A member that goes down in the middle of a re-key's ceremony does not
// hold the region's new key back for ever: after twice the enrollment
// wait the leader abandons the stalled epoch (it never gets a key; rounds
// keep the last completed one) and starts the next, which goes ahead with
// the hospitals online. Every hospital erases what it made for the
// abandoned epoch once the new key is ready.
func TestStalledRekeyAbandoned(t *testing.T) {
	block := &blockFor{method: "SubmitSealedShares", hospital: "hospital-4"}
	reg := newRegion(t, regionOpts{replicas: 1, hospitals: 4, threshold: 2, steppedClock: true, enrollmentWait: 10 * time.Minute,
		serverOptions: []grpc.ServerOption{block.option()}})
	reg.startNodes(0, 1, 2, 3)
	reg.waitCeremony()
	block.on.Store(true)
	reg.rekey("test")
	region := func() (r *fsm.Region) {
		reg.leader().Store().FSM().Read(func(s *fsm.State) { r = s.Region.Clone() })
		return r
	}
	reg.waitFor("every member but hospital-4 sealed its shares in epoch 1", 30*time.Second, func() bool {
		r := region()
		return r.Epoch == 1 && r.SealedAll("hospital-3") && r.SealedAll("hospital-1") && r.SealedAll("hospital-2")
	})
	if e, _ := region().KeyEpoch(); e != 0 {
		t.Fatalf("the region's key is epoch %d while epoch 1's ceremony runs", e)
	}
	reg.stopNode(3) // down for good
	block.on.Store(false)
	reg.clockOffset.Add(int64(21 * time.Minute)) // past twice the wait
	reg.waitFor("key epoch 1 abandoned", 30*time.Second, func() bool { return region().Epoch == 2 })
	r := region()
	if e, ok := r.KeyEpoch(); !ok || e != 0 || !slices.Equal(r.Abandoned, []uint32{1}) {
		t.Fatalf("after abandoning epoch 1: key epoch %d (%v), abandoned %v", e, ok, r.Abandoned)
	}
	recs := reg.auditRecords(audit.ActionCeremonyEpochStarted)
	last := recs[len(recs)-1]
	if last.Details["abandoned"] != "1" || !strings.Contains(last.Reason, "hospital-4") {
		t.Fatalf("audit of the abandonment: %+v", last)
	}
	t.Logf("abandoned: %s", last.Reason)
	reg.waitFor("three hospitals enrolled in key epoch 2", 30*time.Second, func() bool { return len(region().Enrolled()) == 3 })
	reg.clockOffset.Add(int64(11 * time.Minute)) // past the wait, far from twice it
	reg.waitCeremony()
	if r := region(); !slices.Equal(r.MembersOf(2), reg.names[:3]) {
		t.Fatalf("key epoch 2 has members %v", r.MembersOf(2))
	}
	t.Log("key epoch 2 ready")
	id := reg.submit(reg.spec(1, 2, 10*time.Second), "after-abandon")
	if j := reg.waitDone(id, time.Minute); j.State != fsm.JobDone || j.Rounds[0].Epoch != 2 {
		t.Fatalf("job %s in epoch %d", j.State, j.Rounds[0].Epoch)
	}
	reg.waitFor("hospitals erased what they made for the abandoned epoch", 30*time.Second, func() bool {
		for _, h := range reg.names[:3] {
			b, err := os.ReadFile(filepath.Join(reg.dir, h, "node-state.json"))
			if err != nil {
				return false
			}
			if p, err := partyState(b, 1); err != nil || p != nil {
				return false
			}
			// The sealed shares it kept to send again go too; those of
			// the current epoch stay.
			if _, err := os.Stat(filepath.Join(reg.dir, h, "sealed", "epoch-1.pb")); !errors.Is(err, fs.ErrNotExist) {
				return false
			}
			if _, err := os.Stat(filepath.Join(reg.dir, h, "sealed", "epoch-2.pb")); err != nil {
				return false
			}
		}
		return true
	})
}
