package coordinator_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
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

	// A job after the re-keys trains in the newest epoch.
	id2 := reg.submit(reg.spec(1, 2, 10*time.Second), "epochs-2")
	j2 := reg.waitDone(id2, time.Minute)
	if j2.State != fsm.JobDone || j2.Rounds[0].Epoch != last {
		t.Errorf("a later job %s in epoch %d, the region's key is epoch %d", j2.State, j2.Rounds[0].Epoch, last)
	}
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
			err := reg.client("ops", identity.RoleOperator).Do(reg.ctx(), func(ctx context.Context, conn client.Conn) error {
				_, err := conn.Operator.StartKeyEpoch(ctx, &pb.StartKeyEpochRequest{Reason: "test"})
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
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
