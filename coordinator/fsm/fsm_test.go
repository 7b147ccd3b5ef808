package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io"
	"regexp"
	"slices"
	"testing"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"regionfl/audit"
	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

// applier feeds commands to an FSM as Raft would.
type applier struct {
	t   testing.TB
	f   *FSM
	idx uint64
}

func (a *applier) apply(m proto.Message) error {
	a.t.Helper()
	b, err := Encode(m, Meta{Actor: "coordinator/replica-1", UnixMs: int64(a.idx+1) * 1000})
	if err != nil {
		a.t.Fatal(err)
	}
	a.idx++
	res := a.f.Apply(&raft.Log{Index: a.idx, Type: raft.LogCommand, Data: b})
	if res == nil {
		return nil
	}
	return res.(error)
}

func (a *applier) must(m proto.Message) {
	a.t.Helper()
	if err := a.apply(m); err != nil {
		a.t.Fatalf("command %T: %v", m, err)
	}
}

// readyRegion builds a region of three hospitals whose ceremony is done and
// a job all three accepted.
func readyRegion(t testing.TB) *applier {
	a := &applier{t: t, f: New()}
	hs := []string{"h1", "h2", "h3"}
	a.must(&pb.CreateRegionCommand{Params: "p", Hospitals: hs, Threshold: 2, Seed: []byte("seed")})
	for _, h := range hs {
		a.must(&pb.EnrollCommand{Hospital: h, HpkePublicKey: []byte("k" + h)})
	}
	for _, h := range hs {
		a.must(&pb.SealedSharesCommand{From: h, Shares: [][]byte{{1}, {2}, {3}}})
	}
	for _, h := range hs {
		a.must(&pb.KeyReadyCommand{Hospital: h})
	}
	a.must(&pb.SubmitJobCommand{JobId: "j", Spec: &pb.JobSpec{MinHospitals: 2, Rounds: 2}, RequestId: "r1", InitialParams: []float64{0, 0}})
	for _, h := range hs {
		a.must(&pb.DecideJobCommand{JobId: "j", Hospital: h, Accept: true})
	}
	return a
}

func TestCeremonyStep(t *testing.T) {
	a := readyRegion(t)
	a.f.Read(func(s *State) {
		if got := s.Region.Step(); got != pb.CeremonyStep_CEREMONY_STEP_DONE {
			t.Fatalf("step %v, want done", got)
		}
		if s.Region.MemberPoint(0, "h2") != 2 || s.Region.Member(0, "nobody") {
			t.Fatal("Shamir points are the 1-based positions of the sorted hospitals")
		}
	})
}

// A region with a committee takes sealed shares for the committee only,
// finishes its ceremony once every member sealed them, and decrypts with
// committee members only.
func TestCommitteeCeremony(t *testing.T) {
	a := &applier{t: t, f: New()}
	hs := []string{"h1", "h2", "h3", "h4", "h5"}
	for _, c := range []uint32{1, 6} {
		if err := a.apply(&pb.CreateRegionCommand{Params: "p", Hospitals: hs, Threshold: 2, Committee: c, Seed: []byte("seed")}); err == nil {
			t.Fatalf("a committee of %d with threshold 2 of 5 hospitals was taken", c)
		}
	}
	a.must(&pb.CreateRegionCommand{Params: "p", Hospitals: hs, Threshold: 2, Committee: 3, Seed: []byte("seed")})
	for _, h := range hs {
		a.must(&pb.EnrollCommand{Hospital: h, HpkePublicKey: []byte("k" + h)})
	}
	for _, bad := range []*pb.SealedSharesCommand{
		{From: "h1", Digests: dealing(5)},
		{From: "h1", Digests: dealing(3)[:2]},
		{From: "h1", Digests: [][]byte{{1}, {2}, {3}}},
		{From: "h1", Digests: dealing(3), Signatures: [][]byte{{1}}},
		{From: "h1", Digests: dealing(3), Shares: [][]byte{{1}, {2}, {3}}},
	} {
		if err := a.apply(bad); err == nil {
			t.Fatalf("%v was taken for a committee of three", bad)
		}
	}
	for _, h := range hs {
		a.must(&pb.SealedSharesCommand{From: h, Digests: dealing(3), Signatures: [][]byte{{1}, {2}, {3}}, Size: 3 << 17})
	}
	var committee, others []string
	a.f.Read(func(s *State) {
		r := s.Region
		if r.Step() != pb.CeremonyStep_CEREMONY_STEP_OPEN_SHARES {
			t.Fatalf("step %v after every member sealed to the committee", r.Step())
		}
		committee = r.CommitteeOf(0)
		for _, h := range hs {
			if !r.Holds(0, h) {
				others = append(others, h)
			}
			if r.Holds(0, h) != slices.Contains(committee, h) || r.MemberPoint(0, h) == 0 {
				t.Fatalf("%s: point %d, holds %v, committee %v", h, r.MemberPoint(0, h), r.Holds(0, h), committee)
			}
			// The log keeps what identifies the shares, never the shares.
			if d := r.DealingOf(h); d == nil || len(d.Digests) != 3 || len(d.Sigs) != 3 || d.Shares != nil || d.Size != 3<<17 {
				t.Fatalf("%s dealt %+v", h, d)
			}
		}
	})
	if len(committee) != 3 || len(others) != 2 {
		t.Fatalf("committee %v, others %v", committee, others)
	}
	for _, h := range hs {
		a.must(&pb.KeyReadyCommand{Hospital: h})
	}
	a.f.Read(func(s *State) {
		if s.Region.Step() != pb.CeremonyStep_CEREMONY_STEP_DONE || !slices.Equal(s.Region.CommitteeReady(), []bool{true, true, true}) {
			t.Fatalf("step %v, committee ready %v", s.Region.Step(), s.Region.CommitteeReady())
		}
	})
	a.must(&pb.SubmitJobCommand{JobId: "j", Spec: &pb.JobSpec{MinHospitals: 2, Rounds: 1}, RequestId: "r1", InitialParams: []float64{0}})
	for _, h := range hs {
		a.must(&pb.DecideJobCommand{JobId: "j", Hospital: h, Accept: true})
	}
	a.must(&pb.OpenRoundCommand{JobId: "j", Round: 1, DeadlineUnixMs: 20})
	a.must(&pb.ContributionCommand{JobId: "j", Round: 1, Hospital: "h1", Digest: []byte("d1"), Size: 5})
	a.must(&pb.ContributionCommand{JobId: "j", Round: 1, Hospital: "h2", Digest: []byte("d2"), Size: 5})
	closeWith := func(active []string) error {
		return a.apply(&pb.CloseRoundCommand{JobId: "j", Round: 1, Aggregate: []byte("agg"), AggregateDigest: []byte("ad"),
			Contributors: []string{"h1", "h2"}, Active: active})
	}
	if err := closeWith(slices.Sorted(slices.Values([]string{committee[0], others[0]}))); err == nil {
		t.Fatalf("decryptors %s and %s, off the committee %v, were taken", committee[0], others[0], committee)
	}
	if err := closeWith(committee[:2]); err != nil {
		t.Fatal(err)
	}
}

// The ceremony's public-key share and collective key are retired: an
// older region's log still replays them, and they change nothing but the
// audit log they were recorded in.
func TestRetiredCeremonyCommands(t *testing.T) {
	a := readyRegion(t)
	var before []byte
	var records uint64
	a.f.Read(func(s *State) {
		before, _ = json.Marshal(s.Region)
		records = s.Audit.Len()
	})
	a.must(&pb.PublicKeyShareCommand{Hospital: "h1", Share: []byte("s")})
	a.must(&pb.PublicKeyCommand{PublicKey: []byte("pk")})
	a.f.Read(func(s *State) {
		after, _ := json.Marshal(s.Region)
		if string(after) != string(before) || s.Region.Step() != pb.CeremonyStep_CEREMONY_STEP_DONE {
			t.Fatal("a retired ceremony command changed the region")
		}
		var got []audit.Action
		for i := records; i < s.Audit.Len(); i++ {
			rec, err := s.Audit.Record(i)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, rec.Action)
		}
		if want := []audit.Action{audit.ActionCeremonyPublicKeyShare, audit.ActionCeremonyPublicKey}; !slices.Equal(got, want) {
			t.Fatalf("audit records %v, want %v", got, want)
		}
	})
}

func TestRoundLifecycle(t *testing.T) {
	a := readyRegion(t)
	a.must(&pb.OpenRoundCommand{JobId: "j", Round: 1, DeadlineUnixMs: 20})
	a.must(&pb.ContributionCommand{JobId: "j", Round: 1, Hospital: "h1", Digest: []byte("d1"), Size: 5})
	a.must(&pb.ContributionCommand{JobId: "j", Round: 1, Hospital: "h2", Digest: []byte("d2"), Size: 5})
	a.must(&pb.CloseRoundCommand{JobId: "j", Round: 1, Aggregate: []byte("agg"), AggregateDigest: []byte("ad"),
		Contributors: []string{"h1", "h2"}, Active: []string{"h1", "h3"}})
	a.must(&pb.DecryptionShareCommand{JobId: "j", Round: 1, Attempt: 1, Hospital: "h3", Share: []byte("x")})
	a.must(&pb.DecryptionShareCommand{JobId: "j", Round: 1, Attempt: 1, Hospital: "h1", Share: []byte("y")})
	a.must(&pb.CommitModelCommand{JobId: "j", Round: 1, Version: 1, Params: []float64{1, 2}, TotalSamples: 9})
	a.f.Read(func(s *State) {
		j := s.Jobs["j"]
		// The round that made the newest model keeps its evidence.
		if j.Latest().Version != 1 || j.Current().State != RoundCommitted || !j.Current().Evidence() {
			t.Fatalf("after commit: version %d, round %s, evidence kept %v", j.Latest().Version, j.Current().State, j.Current().Evidence())
		}
	})
	// The next model's round replaces it.
	a.must(&pb.OpenRoundCommand{JobId: "j", Round: 2, DeadlineUnixMs: 40})
	a.must(&pb.ContributionCommand{JobId: "j", Round: 2, Hospital: "h1", Digest: []byte("d3"), Size: 5})
	a.must(&pb.ContributionCommand{JobId: "j", Round: 2, Hospital: "h2", Digest: []byte("d4"), Size: 5})
	a.must(&pb.CloseRoundCommand{JobId: "j", Round: 2, Aggregate: []byte("agg2"), AggregateDigest: []byte("ad2"),
		Contributors: []string{"h1", "h2"}, Active: []string{"h1", "h3"}})
	a.f.Read(func(s *State) {
		if !s.Jobs["j"].Rounds[0].Evidence() {
			t.Fatal("round 1's evidence dropped before its model is superseded")
		}
	})
	a.must(&pb.DecryptionShareCommand{JobId: "j", Round: 2, Attempt: 1, Hospital: "h1", Share: []byte("x")})
	a.must(&pb.DecryptionShareCommand{JobId: "j", Round: 2, Attempt: 1, Hospital: "h3", Share: []byte("y")})
	a.must(&pb.CommitModelCommand{JobId: "j", Round: 2, Version: 2, Params: []float64{2, 3}, TotalSamples: 9})
	a.f.Read(func(s *State) {
		j := s.Jobs["j"]
		if r1, r2 := j.Rounds[0], j.Rounds[1]; r1.Evidence() || r1.Aggregate != nil || !r2.Evidence() {
			t.Fatalf("after the second commit: round 1 evidence %v, round 2 evidence %v", r1.Evidence(), r2.Evidence())
		}
	})
	// A finished job keeps none.
	a.must(&pb.EndJobCommand{JobId: "j", State: JobDone})
	a.f.Read(func(s *State) {
		if s.Jobs["j"].Rounds[1].Aggregate != nil {
			t.Fatal("a finished job keeps an aggregate")
		}
	})
}

func TestRejections(t *testing.T) {
	tests := []struct {
		name string
		m    proto.Message
	}{
		{"duplicate contribution", &pb.ContributionCommand{JobId: "j", Round: 1, Hospital: "h1", Digest: []byte("other")}},
		{"replayed digest", &pb.ContributionCommand{JobId: "j", Round: 1, Hospital: "h2", Digest: []byte("d1")}},
		{"stale round", &pb.ContributionCommand{JobId: "j", Round: 2, Hospital: "h2", Digest: []byte("d2")}},
		{"unknown hospital", &pb.ContributionCommand{JobId: "j", Round: 1, Hospital: "eve", Digest: []byte("d9")}},
		{"unknown job", &pb.ContributionCommand{JobId: "nope", Round: 1, Hospital: "h2", Digest: []byte("d2")}},
		{"close below K", &pb.CloseRoundCommand{JobId: "j", Round: 1, Contributors: []string{"h1"}, Active: []string{"h1", "h2"}}},
		{"manifest lists a non-contributor", &pb.CloseRoundCommand{JobId: "j", Round: 1, Contributors: []string{"h1", "h3"}, Active: []string{"h1", "h2"}}},
		{"too few decryptors", &pb.CloseRoundCommand{JobId: "j", Round: 1, Contributors: []string{"h1"}, Active: []string{"h1"}}},
		{"share while collecting", &pb.DecryptionShareCommand{JobId: "j", Round: 1, Attempt: 1, Hospital: "h1"}},
		{"second region", &pb.CreateRegionCommand{Hospitals: []string{"a"}, Threshold: 1}},
		{"second decision", &pb.DecideJobCommand{JobId: "j", Hospital: "h1", Accept: false}},
		{"round out of order", &pb.OpenRoundCommand{JobId: "j", Round: 3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := readyRegion(t)
			a.must(&pb.OpenRoundCommand{JobId: "j", Round: 1})
			a.must(&pb.ContributionCommand{JobId: "j", Round: 1, Hospital: "h1", Digest: []byte("d1")})
			before := snapshotBytes(t, a.f)
			err := a.apply(tc.m)
			if !errors.Is(err, ErrRejected) {
				t.Fatalf("got %v, want a rejection", err)
			}
			after := snapshotBytes(t, a.f)
			// Only the applied index may move: a rejected command changes nothing else.
			if !bytes.Equal(stripIndex(t, before), stripIndex(t, after)) {
				t.Fatal("a rejected command changed the state")
			}
		})
	}
}

func TestIdempotentSubmit(t *testing.T) {
	a := readyRegion(t)
	a.must(&pb.SubmitJobCommand{JobId: "j2", Spec: &pb.JobSpec{}, RequestId: "r1", InitialParams: []float64{0}})
	a.f.Read(func(s *State) {
		if len(s.Jobs) != 1 || s.Requests["r1"] != "j" {
			t.Fatalf("a retried submit created a job: %d jobs", len(s.Jobs))
		}
	})
}

func TestSnapshotRestore(t *testing.T) {
	a := readyRegion(t)
	a.must(&pb.OpenRoundCommand{JobId: "j", Round: 1})
	b := snapshotBytes(t, a.f)
	g := New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(b, snapshotBytes(t, g)) {
		t.Fatal("restore did not reproduce the state")
	}
	if !bytes.Contains(b, []byte(`"dealt":[{"digests":[`)) {
		t.Fatal("the snapshot holds no dealing to break")
	}
	for _, bad := range [][]byte{
		bytes.Replace(b, []byte(`"version":2`), []byte(`"version":99`), 1),
		bytes.Replace(b, []byte(`"regionfl-fsm"`), []byte(`"other"`), 1),
		b[:len(b)-20],                      // cut short
		append(slices.Clone(b), "{}\n"...), // data after the end
		bytes.Replace(b, []byte(`"dealt":[{"digests":[`), []byte(`"dealt":[{"digests":["AA==",`), 1), // a share too many
	} {
		if err := New().Restore(io.NopCloser(bytes.NewReader(bad))); err == nil {
			t.Fatalf("a bad snapshot was accepted: %.60q...", bad)
		}
	}
}

// dealing is the digests of c sealed shares.
func dealing(c int) [][]byte {
	out := make([][]byte, c)
	for k := range out {
		d := sha256.Sum256([]byte{byte(k)})
		out[k] = d[:]
	}
	return out
}

// A log written when the sealed shares went through it replays into
// dealings that keep them, with their digests.
func TestLegacySealedShares(t *testing.T) {
	a := &applier{t: t, f: New()}
	a.must(&pb.CreateRegionCommand{Params: "p", Hospitals: []string{"h1", "h2", "h3"}, Threshold: 2, Seed: []byte("seed")})
	for _, h := range []string{"h1", "h2", "h3"} {
		a.must(&pb.EnrollCommand{Hospital: h, HpkePublicKey: []byte("k" + h)})
	}
	if err := a.apply(&pb.SealedSharesCommand{From: "h1", Shares: [][]byte{{1}, {2}}}); err == nil {
		t.Fatal("two sealed shares for a committee of three were taken")
	}
	a.must(&pb.SealedSharesCommand{From: "h1", Shares: [][]byte{{1}, {2}, {3, 3}}})
	a.f.Read(func(s *State) {
		d := s.Region.DealingOf("h1")
		if d == nil || len(d.Shares) != 3 || d.Size != 4 || !bytes.Equal(d.Digests[2], sha256Of([]byte{3, 3})) {
			t.Fatalf("dealt %+v", d)
		}
	})
}

func sha256Of(b []byte) []byte {
	d := sha256.Sum256(b)
	return d[:]
}

// A snapshot written before dealings were kept, in the middle of
// sealing, restores its sealed rows as dealings: with who sealed as it
// kept it (sealed_by), or derived from the rows in a still older one.
func TestRestoreUpgradesSealed(t *testing.T) {
	a := &applier{t: t, f: New()}
	hs := []string{"h1", "h2", "h3"}
	a.must(&pb.CreateRegionCommand{Params: "p", Hospitals: hs, Threshold: 2, Seed: []byte("seed")})
	for _, h := range hs {
		a.must(&pb.EnrollCommand{Hospital: h, HpkePublicKey: []byte("k" + h)})
	}
	a.must(&pb.SealedSharesCommand{From: "h2", Shares: [][]byte{{1}, {2}, {3}}})
	b := snapshotBytes(t, a.f)
	dealt := regexp.MustCompile(`"dealt":\[null,\{[^}]*\},null\],`)
	if !dealt.Match(b) {
		t.Fatal("the snapshot holds no dealing to write the old way")
	}
	sealed := `"sealed":[[null,"AQ==",null],[null,"Ag==",null],[null,"Aw==",null]],`
	for _, old := range [][]byte{
		dealt.ReplaceAll(b, []byte(sealed+`"sealed_by":[false,true,false],`)),
		dealt.ReplaceAll(b, []byte(sealed)),
	} {
		g := New()
		if err := g.Restore(io.NopCloser(bytes.NewReader(old))); err != nil {
			t.Fatal(err)
		}
		g.Read(func(s *State) {
			if !s.Region.SealedAll("h2") || s.Region.SealedAll("h1") || s.Region.Step() != pb.CeremonyStep_CEREMONY_STEP_SEAL_SHARES {
				t.Fatalf("restored: dealt %v, step %v", s.Region.Dealt, s.Region.Step())
			}
		})
		if !bytes.Equal(b, snapshotBytes(t, g)) {
			t.Fatal("restore did not reproduce the state")
		}
	}
}

// Snapshot keeps the models and the audit log by reference and Persist
// encodes them later, while Apply goes on: what Persist writes is still the
// state as of Snapshot.
func TestSnapshotIsTheStateWhenTaken(t *testing.T) {
	a := readyRegion(t)
	a.must(&pb.OpenRoundCommand{JobId: "j", Round: 1})
	want := snapshotBytes(t, a.f)
	snap, err := a.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	a.must(&pb.ContributionCommand{JobId: "j", Round: 1, Hospital: "h1", Digest: []byte("d1"), Size: 5})
	a.must(&pb.ContributionCommand{JobId: "j", Round: 1, Hospital: "h2", Digest: []byte("d2"), Size: 5})
	a.must(&pb.CloseRoundCommand{JobId: "j", Round: 1, Aggregate: []byte("agg"), AggregateDigest: []byte("ad"),
		Contributors: []string{"h1", "h2"}, Active: []string{"h1", "h3"}})
	a.must(&pb.CommitModelCommand{JobId: "j", Round: 1, Version: 1, Params: []float64{1, 2}, TotalSamples: 9})
	a.must(&pb.SubmitJobCommand{JobId: "k", Spec: &pb.JobSpec{MinHospitals: 2, Rounds: 2}, RequestId: "r2", InitialParams: []float64{3}})
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.Bytes(), want) {
		t.Fatal("entries applied after Snapshot reached its Persist")
	}
}

// A replica upgraded in place restores the single-document snapshot of
// version 1 that the previous build wrote, and fills model digests that
// such snapshots may lack.
func TestRestoresVersion1(t *testing.T) {
	a := readyRegion(t)
	a.must(&pb.OpenRoundCommand{JobId: "j", Round: 1})
	want := snapshotBytes(t, a.f)
	var doc map[string]any
	a.f.Read(func(st *State) {
		b, err := json.Marshal(st)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			t.Fatal(err)
		}
		doc["version"] = 1
		doc["audit"] = st.Audit
		for id, j := range doc["jobs"].(map[string]any) {
			old := make([]Model, len(st.Jobs[id].Models))
			for i, m := range st.Jobs[id].Models {
				old[i] = *m
				old[i].Digest = nil
			}
			j.(map[string]any)["models"] = old
		}
	})
	v1, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	g := New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(v1))); err != nil {
		t.Fatal(err)
	}
	if got := snapshotBytes(t, g); !bytes.Equal(got, want) {
		t.Fatalf("version 1 restored as\n%s\nwant\n%s", got, want)
	}
}

func TestApplyPanicsOnUndecodableEntry(t *testing.T) {
	for _, data := range [][]byte{{}, {250, 1}, {byte(CmdEnroll), 0xff, 0xff}} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("entry %x applied without complaint", data)
				}
			}()
			New().Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data})
		}()
	}
}

type sink struct {
	bytes.Buffer
}

func (s *sink) ID() string    { return "test" }
func (s *sink) Cancel() error { return nil }
func (s *sink) Close() error  { return nil }

func snapshotBytes(t testing.TB, f *FSM) []byte {
	t.Helper()
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var s sink
	if err := snap.Persist(&s); err != nil {
		t.Fatal(err)
	}
	return s.Bytes()
}

func stripIndex(t *testing.T, b []byte) []byte {
	i := bytes.Index(b, []byte(`"index":`))
	if i < 0 {
		t.Fatal("no index in snapshot")
	}
	j := i + bytes.IndexAny(b[i:], ",}")
	return append(append([]byte{}, b[:i]...), b[j:]...)
}

// Every command type has one entry in the table, and a message's type is
// derived from the message: a caller cannot pair a type with the wrong
// command.
func TestCommandTable(t *testing.T) {
	for ct := CmdRegisterReplica; ct < cmdEnd; ct++ {
		c, ok := commands[ct]
		if !ok {
			t.Fatalf("command type %d has no entry", ct)
		}
		if got, err := TypeOf(c.new()); err != nil || got != ct {
			t.Errorf("type %d: TypeOf says %d, %v", ct, got, err)
		}
	}
	if len(commands) != int(cmdEnd-1) {
		t.Errorf("%d entries for %d types", len(commands), cmdEnd-1)
	}
	if _, err := Encode(&pb.JobSpec{}, Meta{}); err == nil {
		t.Error("a message that is not a command was encoded")
	}
}

// FuzzRestore feeds damaged snapshots to Restore: it refuses them or
// restores a state that snapshots and restores again, and never panics.
func FuzzRestore(f *testing.F) {
	a := readyRegion(f)
	a.must(&pb.OpenRoundCommand{JobId: "j", Round: 1})
	f.Add(snapshotBytes(f, a.f))
	f.Add([]byte(`{"version":1,"jobs":{"x":null},"job_order":["x"]}`))
	f.Add([]byte(`{"format":"regionfl-fsm","version":2}` + "\n" + `{"jobs":{"x":{"id":"x","spec":{}}},"job_order":["x","x"]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		g := New()
		if err := g.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
			return
		}
		again := snapshotBytes(t, g)
		if err := New().Restore(io.NopCloser(bytes.NewReader(again))); err != nil {
			t.Fatalf("a restored state does not restore from its own snapshot: %v", err)
		}
	})
}

// A re-key goes ahead without a hospital that did not enroll: the leader
// closes enrollment with the hospitals enrolled (at least threshold+1),
// their places among the members are their Shamir points in the epoch, and
// the hospital left out neither takes part in the ceremony nor contributes
// or decrypts in the epoch; it keeps its point in the epochs it was in.
func TestCloseEnrollment(t *testing.T) {
	a := &applier{t: t, f: New()}
	hs := []string{"h1", "h2", "h3", "h4"}
	a.must(&pb.CreateRegionCommand{Params: "p", Hospitals: hs, Threshold: 2, Seed: []byte("seed")})
	ceremony := func(members []string) {
		t.Helper()
		for _, h := range members {
			shares := make([][]byte, len(members))
			for i := range shares {
				shares[i] = []byte{byte(i)}
			}
			a.must(&pb.SealedSharesCommand{From: h, Shares: shares})
		}
		for _, h := range members {
			a.must(&pb.KeyReadyCommand{Hospital: h})
		}
	}
	reject := func(what string, m proto.Message) {
		t.Helper()
		if err := a.apply(m); !errors.Is(err, ErrRejected) {
			t.Fatalf("%s: got %v, want a rejection", what, err)
		}
	}
	for _, h := range hs[:3] {
		a.must(&pb.EnrollCommand{Hospital: h, HpkePublicKey: []byte("k" + h)})
	}
	reject("sealed shares before everyone enrolled in the genesis ceremony", &pb.SealedSharesCommand{From: "h1", Shares: [][]byte{{1}, {2}, {3}, {4}}})
	reject("closing the genesis ceremony's enrollment", &pb.CloseEnrollmentCommand{Epoch: 0, Members: hs[:3]})
	a.must(&pb.EnrollCommand{Hospital: "h4", HpkePublicKey: []byte("kh4")})
	ceremony(hs)

	a.must(&pb.StartKeyEpochCommand{Epoch: 1, Reason: "test"})
	a.f.Read(func(s *State) {
		if s.Region.MembersOf(1) != nil || s.Region.Step() != pb.CeremonyStep_CEREMONY_STEP_ENROLL || s.Region.EpochStartedMs == 0 {
			t.Fatalf("a re-key's members are fixed before its enrollment closes: %v (started %d)", s.Region.MembersOf(1), s.Region.EpochStartedMs)
		}
	})
	for _, h := range []string{"h1", "h2", "h4"} {
		a.must(&pb.EnrollCommand{Hospital: h, HpkePublicKey: []byte("k1" + h)})
	}
	reject("too few members", &pb.CloseEnrollmentCommand{Epoch: 1, Members: []string{"h1", "h2"}})
	reject("a member that did not enroll", &pb.CloseEnrollmentCommand{Epoch: 1, Members: []string{"h1", "h2", "h3"}})
	reject("members out of order", &pb.CloseEnrollmentCommand{Epoch: 1, Members: []string{"h2", "h1", "h4"}})
	reject("a member twice", &pb.CloseEnrollmentCommand{Epoch: 1, Members: []string{"h1", "h1", "h4"}})
	reject("another epoch", &pb.CloseEnrollmentCommand{Epoch: 2, Members: []string{"h1", "h2", "h4"}})
	reject("sealed shares while enrollment is open", &pb.SealedSharesCommand{From: "h1", Shares: [][]byte{{1}, {2}, {3}}})
	a.must(&pb.CloseEnrollmentCommand{Epoch: 1, Members: []string{"h1", "h2", "h4"}})
	reject("closing twice", &pb.CloseEnrollmentCommand{Epoch: 1, Members: []string{"h1", "h2", "h4"}})
	reject("a late enrollment", &pb.EnrollCommand{Hospital: "h3", HpkePublicKey: []byte("k1h3")})
	reject("sealed shares of a hospital sitting the epoch out", &pb.SealedSharesCommand{From: "h3", Shares: [][]byte{{1}, {2}, {3}}})
	ceremony([]string{"h1", "h2", "h4"})
	reject("key ready of a hospital sitting the epoch out", &pb.KeyReadyCommand{Hospital: "h3"})
	a.f.Read(func(s *State) {
		r := s.Region
		if e, ok := r.KeyEpoch(); !ok || e != 1 || r.Step() != pb.CeremonyStep_CEREMONY_STEP_DONE {
			t.Fatalf("key epoch %d (%v), step %v: the ceremony of its three members did not complete", e, ok, r.Step())
		}
		for _, c := range []struct {
			epoch uint32
			h     string
			want  uint32
		}{{1, "h1", 1}, {1, "h4", 3}, {1, "h3", 0}, {0, "h3", 3}, {0, "h4", 4}} {
			if got := r.MemberPoint(c.epoch, c.h); got != c.want {
				t.Errorf("%s's point in epoch %d: %d, want %d", c.h, c.epoch, got, c.want)
			}
		}
		d0, d1 := identity.CeremonyDigest(r.Digest(), 1), r.MembersDigest()
		if d0 == d1 {
			t.Error("the statements of an epoch without every hospital are bound to the ceremony digest alone")
		}
	})

	a.must(&pb.SubmitJobCommand{JobId: "j", Spec: &pb.JobSpec{MinHospitals: 2, Rounds: 2}, RequestId: "r1", InitialParams: []float64{0, 0}})
	for _, h := range hs {
		a.must(&pb.DecideJobCommand{JobId: "j", Hospital: h, Accept: true})
	}
	a.must(&pb.OpenRoundCommand{JobId: "j", Round: 1, DeadlineUnixMs: 1 << 40})
	reject("a contribution of a hospital sitting the round's epoch out", &pb.ContributionCommand{JobId: "j", Round: 1, Hospital: "h3", Digest: []byte("d3")})
	a.must(&pb.ContributionCommand{JobId: "j", Round: 1, Hospital: "h1", Digest: []byte("d1")})
	a.must(&pb.ContributionCommand{JobId: "j", Round: 1, Hospital: "h4", Digest: []byte("d4")})
	reject("a decryptor sitting the round's epoch out", &pb.CloseRoundCommand{JobId: "j", Round: 1, Contributors: []string{"h1", "h4"}, Active: []string{"h1", "h3"}})
	a.must(&pb.CloseRoundCommand{JobId: "j", Round: 1, Contributors: []string{"h1", "h4"}, Active: []string{"h2", "h4"}})

	// The members survive a snapshot, and a snapshot naming too few is refused.
	b := snapshotBytes(t, a.f)
	g := New()
	if err := g.Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	g.Read(func(s *State) {
		if !slices.Equal(s.Region.MembersOf(1), []string{"h1", "h2", "h4"}) {
			t.Fatalf("restored members of epoch 1: %v", s.Region.MembersOf(1))
		}
	})
	bad := bytes.Replace(b, []byte(`"epoch_members":{"1":["h1","h2","h4"]}`), []byte(`"epoch_members":{"1":["h1","h2"]}`), 1)
	if bytes.Equal(bad, b) {
		t.Fatal("the snapshot does not hold the members as expected")
	}
	if err := New().Restore(io.NopCloser(bytes.NewReader(bad))); err == nil {
		t.Fatal("a snapshot with a key epoch of two members (threshold 2) was accepted")
	}
}

// A stalled re-key is abandoned for the next epoch's ceremony: the region
// keeps the last completed epoch's key, never the abandoned one's, and
// only a running re-key can be abandoned.
func TestAbandonStalledRekey(t *testing.T) {
	a := readyRegion(t)
	reject := func(what string, m proto.Message) {
		t.Helper()
		if err := a.apply(m); !errors.Is(err, ErrRejected) {
			t.Fatalf("%s: got %v, want a rejection", what, err)
		}
	}
	keyEpoch := func() uint32 {
		var e uint32
		a.f.Read(func(s *State) { e, _ = s.Region.KeyEpoch() })
		return e
	}
	reject("abandoning a completed ceremony", &pb.StartKeyEpochCommand{Epoch: 1, Abandon: true})
	a.must(&pb.StartKeyEpochCommand{Epoch: 1})
	reject("starting a re-key while one runs", &pb.StartKeyEpochCommand{Epoch: 2})
	a.must(&pb.StartKeyEpochCommand{Epoch: 2, Abandon: true})
	a.must(&pb.StartKeyEpochCommand{Epoch: 3, Abandon: true})
	if e := keyEpoch(); e != 0 {
		t.Fatalf("key epoch %d after abandoning epochs 1 and 2, want 0", e)
	}
	for _, h := range []string{"h1", "h2", "h3"} {
		a.must(&pb.EnrollCommand{Hospital: h, HpkePublicKey: []byte("k3" + h)})
	}
	for _, h := range []string{"h1", "h2", "h3"} {
		a.must(&pb.SealedSharesCommand{From: h, Shares: [][]byte{{1}, {2}, {3}}})
	}
	for _, h := range []string{"h1", "h2", "h3"} {
		a.must(&pb.KeyReadyCommand{Hospital: h})
	}
	if e := keyEpoch(); e != 3 {
		t.Fatalf("key epoch %d once epoch 3's ceremony is done", e)
	}
	b := snapshotBytes(t, a.f)
	if err := New().Restore(io.NopCloser(bytes.NewReader(b))); err != nil {
		t.Fatal(err)
	}
	bad := bytes.Replace(b, []byte(`"abandoned":[1,2]`), []byte(`"abandoned":[2,1]`), 1)
	if bytes.Equal(bad, b) {
		t.Fatal("the snapshot does not hold the abandoned epochs as expected")
	}
	if err := New().Restore(io.NopCloser(bytes.NewReader(bad))); err == nil {
		t.Fatal("a snapshot with abandoned epochs out of order was accepted")
	}
}
