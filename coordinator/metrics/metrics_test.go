package metrics

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
	"google.golang.org/protobuf/proto"

	"regionfl/coordinator/fsm"
	pb "regionfl/proto/regionfl/v1"
)

func apply(t *testing.T, f *fsm.FSM, idx *uint64, m proto.Message) {
	t.Helper()
	applyAt(t, f, idx, int64(*idx+1)*1000, m)
}

// applyAt applies m as an entry proposed at ms (Unix ms).
func applyAt(t *testing.T, f *fsm.FSM, idx *uint64, ms int64, m proto.Message) {
	t.Helper()
	b, err := fsm.Encode(m, fsm.Meta{Actor: "coordinator/c1", UnixMs: ms})
	if err != nil {
		t.Fatal(err)
	}
	*idx++
	if res := f.Apply(&raft.Log{Index: *idx, Type: raft.LogCommand, Data: b}); res != nil {
		t.Fatalf("command %T: %v", m, res)
	}
}

// state: one job, round 1 committed (opened 0s, closed 3s, committed 5s),
// round 2 collecting with one update.
func state(t *testing.T) *fsm.FSM {
	f := fsm.New()
	var i uint64
	hs := []string{"h1", "h2"}
	apply(t, f, &i, &pb.CreateRegionCommand{Params: "p", Hospitals: hs, Threshold: 2})
	for _, h := range hs {
		apply(t, f, &i, &pb.EnrollCommand{Hospital: h, HpkePublicKey: []byte("k" + h)})
	}
	for _, h := range hs {
		apply(t, f, &i, &pb.SealedSharesCommand{From: h, Shares: [][]byte{{1}, {2}}})
	}
	for _, h := range hs {
		apply(t, f, &i, &pb.KeyReadyCommand{Hospital: h})
	}
	apply(t, f, &i, &pb.SubmitJobCommand{JobId: "j", Spec: &pb.JobSpec{MinHospitals: 2, Rounds: 2}, InitialParams: []float64{0}})
	for _, h := range hs {
		apply(t, f, &i, &pb.DecideJobCommand{JobId: "j", Hospital: h, Accept: true})
	}
	applyAt(t, f, &i, 1_000, &pb.OpenRoundCommand{JobId: "j", Round: 1})
	apply(t, f, &i, &pb.ContributionCommand{JobId: "j", Round: 1, Hospital: "h1", Digest: []byte("a"), Size: 100})
	apply(t, f, &i, &pb.ContributionCommand{JobId: "j", Round: 1, Hospital: "h2", Digest: []byte("b"), Size: 150})
	applyAt(t, f, &i, 4_000, &pb.CloseRoundCommand{JobId: "j", Round: 1, Contributors: hs, Active: hs})
	applyAt(t, f, &i, 6_000, &pb.CommitModelCommand{JobId: "j", Round: 1, Version: 1, Params: []float64{1}})
	applyAt(t, f, &i, 7_000, &pb.OpenRoundCommand{JobId: "j", Round: 2})
	apply(t, f, &i, &pb.ContributionCommand{JobId: "j", Round: 2, Hospital: "h1", Digest: []byte("c"), Size: 100})
	return f
}

func scrape(t *testing.T, h http.Handler) string {
	t.Helper()
	w := httptest.NewRecorder()
	h.ServeHTTP(w, httptest.NewRequest("GET", "/metrics", nil))
	if w.Code != 200 {
		t.Fatalf("scrape: %d", w.Code)
	}
	b, _ := io.ReadAll(w.Body)
	return string(b)
}

func TestCoordinatorMetrics(t *testing.T) {
	f := state(t)
	leader := true
	m := New(f.Read, func() bool { return leader })
	m.RefusedUpdate("duplicate")
	m.RefusedUpdate("duplicate")
	m.RefusedUpdate("free text that must not become a label")
	m.ReceivedBytes(4096)
	m.ObserveDecryption(30 * time.Millisecond)
	out := scrape(t, m.Handler())
	for _, want := range []string{
		`regionfl_jobs{state="running"} 1`,
		`regionfl_jobs{state="done"} 0`,
		`regionfl_rounds{state="committed"} 1`,
		`regionfl_rounds{state="collecting"} 1`,
		`regionfl_updates_accepted_total 3`,
		`regionfl_update_bytes_accepted_total 350`,
		`regionfl_model_versions_committed_total 1`,
		`regionfl_round_collect_seconds_sum 3`,
		`regionfl_round_collect_seconds_bucket{le="2.5"} 0`,
		`regionfl_round_collect_seconds_bucket{le="5"} 1`,
		`regionfl_round_decryption_latency_seconds_sum 2`,
		`regionfl_round_decryption_latency_seconds_count 1`,
		`regionfl_round_duration_seconds_sum 5`,
		`regionfl_raft_leader 1`,
		`regionfl_raft_state{state="leader"} 1`,
		`regionfl_raft_state{state="follower"} 0`,
		`regionfl_updates_refused_total{reason="duplicate"} 2`,
		`regionfl_updates_refused_total{reason="other"} 1`,
		`regionfl_updates_refused_total{reason="bad_length"} 0`,
		`regionfl_update_bytes_received_total 4096`,
		`regionfl_decryption_compute_seconds_count 1`,
		`regionfl_region_hospitals 2`,
		`go_goroutines`,
	} {
		if !strings.Contains(out, want+"\n") && !strings.Contains(out, want+" ") && !(want == "go_goroutines" && strings.Contains(out, want)) {
			t.Errorf("metrics lack %q", want)
		}
	}
	if strings.Contains(out, "free text") {
		t.Error("free-text reason became a label")
	}
	// The audit log's size and root, for comparing replicas.
	var size uint64
	var root string
	f.Read(func(s *fsm.State) { size, root = s.Audit.Len(), s.Audit.Root().String() })
	for _, want := range []string{fmt.Sprintf("regionfl_audit_records %d\n", size), `regionfl_audit_root_info{root_hash="` + root + `"} 1`} {
		if size == 0 || !strings.Contains(out, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	leader = false
	if out := scrape(t, m.Handler()); !strings.Contains(out, "regionfl_raft_leader 0\n") {
		t.Error("leadership change not seen")
	}
	if probs, err := promlint.New(strings.NewReader(out)).Lint(); err != nil || len(probs) > 0 {
		t.Errorf("lint: %v %v", probs, err)
	}
}

func TestNilSafe(t *testing.T) {
	var m *Metrics
	m.RefusedUpdate("duplicate")
	m.ReceivedBytes(1)
	m.ObserveDecryption(time.Second)
}

func TestListenLoopback(t *testing.T) {
	e, err := Listen("127.0.0.1:0", New(state(t).Read, nil).Handler())
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	if !e.IsLoopback() {
		t.Fatal("not loopback")
	}
	res, err := http.Get("http://" + e.Addr() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(res.Body)
	res.Body.Close()
	if res.StatusCode != 200 || !strings.Contains(string(b), "regionfl_jobs") {
		t.Fatalf("%d %s", res.StatusCode, b)
	}
	if strings.Contains(string(b), "regionfl_raft_leader") {
		t.Fatal("raft metrics without a callback")
	}
	res, err = http.Post("http://"+e.Addr()+"/metrics", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	res.Body.Close()
	if res.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /metrics: %d", res.StatusCode)
	}
}
