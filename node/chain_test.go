package node

import (
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"regionfl/jobspec"
	pb "regionfl/proto/regionfl/v1"
)

// A link round-trips through its file, replaces the previous one, and a
// job without one has none.
func TestChainLinkRoundTrip(t *testing.T) {
	dir := t.TempDir()
	if l, err := loadLink(dir, "job-1", 3); l != nil || err != nil {
		t.Fatalf("no link yet: %v, %v", l, err)
	}
	params := []float64{1.5, -2, math.SmallestNonzeroFloat64}
	d := jobspec.ModelDigest(params)
	for v, state := range [][]float64{nil, {0.1, 0.2, 0.3, 1e-6, 1e-6, 1e-6}} {
		want := &chainLink{JobID: "job-1", Version: uint32(v), Digest: d[:], params: params, optimizerState: state}
		if err := saveLink(dir, want); err != nil {
			t.Fatal(err)
		}
		got, err := loadLink(dir, "job-1", len(params))
		if err != nil {
			t.Fatal(err)
		}
		if got.Version != uint32(v) || string(got.Digest) != string(d[:]) || !slices.Equal(got.params, params) || !slices.Equal(got.optimizerState, state) {
			t.Fatalf("version %d: got %+v", v, got)
		}
	}
	// Another job's link is another file; a link of another size is refused.
	if l, err := loadLink(dir, "job-2", 3); l != nil || err != nil {
		t.Fatalf("job-2: %v, %v", l, err)
	}
	if _, err := loadLink(dir, "job-1", 4); err == nil {
		t.Fatal("a link of 3 parameters read as 4")
	}
}

// FuzzLoadLink: whatever a chain file holds (a torn write, a disk error),
// reading it gives a link or an error, never a crash, and allocates only
// what the file holds.
func FuzzLoadLink(f *testing.F) {
	dir := f.TempDir()
	d := jobspec.ModelDigest([]float64{1, 2})
	if err := saveLink(dir, &chainLink{JobID: "job-1", Version: 3, Digest: d[:], params: []float64{1, 2}, optimizerState: []float64{0, 0, 1, 1}}); err != nil {
		f.Fatal(err)
	}
	good, err := os.ReadFile(chainPath(dir, "job-1"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good)
	f.Add([]byte(`{"job_id":"job-1","params":2,"optimizer_state":4000000000}` + "\n"))
	f.Add([]byte("\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		dir := t.TempDir()
		if err := os.MkdirAll(filepath.Join(dir, chainDir), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(chainPath(dir, "job-1"), b, 0o600); err != nil {
			t.Fatal(err)
		}
		l, err := loadLink(dir, "job-1", 2)
		if err == nil && (len(l.params) != 2 || len(l.optimizerState) > 4) {
			t.Fatalf("a link of %d parameters and %d optimizer values", len(l.params), len(l.optimizerState))
		}
	})
}

// The chains of jobs a poll no longer names go: on the first poll after a
// start the whole directory is pruned (an unreadable file too), later only
// the jobs pinned since; a job the poll names keeps its chain.
func TestPruneChains(t *testing.T) {
	dir := t.TempDir()
	n := &Node{cfg: Config{DataDir: dir}, log: slog.New(slog.DiscardHandler)}
	link := func(job string) *chainLink {
		d := jobspec.ModelDigest([]float64{1})
		return &chainLink{JobID: job, Version: 1, Digest: d[:], params: []float64{1}}
	}
	for _, job := range []string{"job-a", "job-b"} {
		if err := saveLink(dir, link(job)); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, chainDir, "torn.chain"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	has := func(job string) bool {
		_, err := os.Stat(chainPath(dir, job))
		return err == nil
	}
	poll := func(jobs ...string) {
		t.Helper()
		resp := &pb.PollResponse{}
		for _, j := range jobs {
			resp.Models = append(resp.Models, &pb.ModelTask{JobId: j, Version: 1})
		}
		if err := n.pruneChains(resp); err != nil {
			t.Fatal(err)
		}
	}
	poll("job-a")
	if !has("job-a") || has("job-b") {
		t.Fatalf("after the first poll: job-a kept %v, job-b kept %v", has("job-a"), has("job-b"))
	}
	if _, err := os.Stat(filepath.Join(dir, chainDir, "torn.chain")); err == nil {
		t.Fatal("an unreadable chain file was kept")
	}
	if err := n.pin(link("job-c")); err != nil {
		t.Fatal(err)
	}
	poll("job-a")
	if !has("job-a") || has("job-c") {
		t.Fatalf("after the second poll: job-a kept %v, job-c kept %v", has("job-a"), has("job-c"))
	}
	poll()
	if has("job-a") {
		t.Fatal("the chain of a job no poll names any more was kept")
	}
}
