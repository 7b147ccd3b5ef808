package round

import (
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"regionfl/coordinator/fsm"
	"regionfl/coordinator/store"
	"regionfl/he"
	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

// The engine's decisions, one step at a time, on a one-replica store and
// an injected clock: no timer, no node, no cryptography beyond what a
// decision needs.

var hospitals = []string{"h1", "h2", "h3", "h4"}

type fixture struct {
	t   *testing.T
	st  *store.Store
	e   *Engine
	now time.Time
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ca, err := identity.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := ca.Issue(identity.Identity{Name: "r1", Role: identity.RoleCoordinator}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, now: time.UnixMilli(1_700_000_000_000)}
	clock := func() time.Time { return f.now }
	st, err := store.Open(store.Config{ID: "r1", Dir: t.TempDir(), RaftAddr: "127.0.0.1:0", Bootstrap: true,
		TLS: identity.PeerConfig(cert, ca.Pool()), Fast: true, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := st.Ready(); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the store never led")
		}
		time.Sleep(20 * time.Millisecond)
	}
	f.st = st
	f.e = New(st, he.RegionParams(), slog.New(slog.DiscardHandler), clock)
	// A region whose ceremony is done (the state machine does not check
	// key material; the engine only reads the step).
	f.propose(&pb.CreateRegionCommand{Params: he.RegionParamsName, Hospitals: hospitals, Threshold: 2, Seed: make([]byte, he.SeedLen)})
	for _, h := range hospitals {
		f.propose(&pb.EnrollCommand{Hospital: h, HpkePublicKey: []byte("k" + h)})
	}
	for _, h := range hospitals {
		f.propose(&pb.SealedSharesCommand{From: h, Shares: [][]byte{{1}, {2}, {3}, {4}}})
	}
	for _, h := range hospitals {
		f.propose(&pb.KeyReadyCommand{Hospital: h})
	}
	return f
}

func (f *fixture) propose(m proto.Message) {
	f.t.Helper()
	if err := f.st.Propose(m); err != nil {
		f.t.Fatalf("%T: %v", m, err)
	}
}

// step runs one engine step at the fixture's time.
func (f *fixture) step() {
	f.t.Helper()
	term, err := f.st.Ready()
	if err != nil {
		f.t.Fatal(err)
	}
	f.e.mu.Lock()
	f.e.lead(term)
	f.e.mu.Unlock()
	if err := f.e.step(); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) advance(d time.Duration) { f.now = f.now.Add(d) }

func (f *fixture) job(id string) *fsm.Job {
	var j *fsm.Job
	f.st.FSM().Read(func(s *fsm.State) { j = s.Jobs[id].Clone() })
	return j
}

const deadline = time.Minute

// submit adds a job needing k hospitals, accepted by those given.
func (f *fixture) submit(id string, k uint32, accepted ...string) {
	f.t.Helper()
	spec := &pb.JobSpec{MinHospitals: k, Rounds: 2, RoundDeadlineMs: uint32(deadline.Milliseconds()), ClipNorm: 1}
	f.propose(&pb.SubmitJobCommand{JobId: id, Spec: spec, RequestId: id, InitialParams: []float64{0, 0}})
	for _, h := range accepted {
		f.propose(&pb.DecideJobCommand{JobId: id, Hospital: h, Accept: true})
	}
}

func TestJobOpensWhenEveryHospitalDecided(t *testing.T) {
	f := newFixture(t)
	f.submit("j", 2, "h1", "h2", "h3")
	f.step()
	if j := f.job("j"); j.State != fsm.JobPending {
		t.Fatalf("opened with one hospital undecided and the window open: %s", j.State)
	}
	f.propose(&pb.DecideJobCommand{JobId: "j", Hospital: "h4", Reason: "policy"})
	f.step()
	if r := f.job("j").Current(); r == nil || r.Number != 1 || r.State != fsm.RoundCollecting {
		t.Fatalf("round 1 not collecting: %+v", r)
	}
}

func TestJobOpensAtTheDecisionDeadlineWithK(t *testing.T) {
	f := newFixture(t)
	f.submit("j", 2, "h1", "h2")
	f.step()
	f.advance(deadline - time.Second)
	f.step()
	if j := f.job("j"); j.State != fsm.JobPending {
		t.Fatalf("opened before the deadline: %s", j.State)
	}
	f.advance(2 * time.Second)
	f.step()
	if r := f.job("j").Current(); r == nil || r.State != fsm.RoundCollecting {
		t.Fatalf("round 1 not open after the deadline with K accepted: %+v", r)
	}
}

func TestJobFailsWithoutK(t *testing.T) {
	f := newFixture(t)
	f.submit("j", 3, "h1")
	f.step()
	f.advance(deadline + time.Second)
	f.step()
	j := f.job("j")
	if j.State != fsm.JobFailed || !strings.Contains(j.Reason, "1 hospitals accepted, the job needs 3") {
		t.Fatalf("%s (%s)", j.State, j.Reason)
	}
}

// A round without K updates by its deadline aborts with its reason; after
// MaxAbortedRounds aborts in a row the job fails.
func TestRoundsAbortThenTheJobFails(t *testing.T) {
	f := newFixture(t)
	f.submit("j", 2, "h1", "h2", "h3", "h4")
	f.step() // round 1 opens
	for i := 1; i <= MaxAbortedRounds; i++ {
		f.advance(deadline - time.Second)
		f.step()
		if r := f.job("j").Current(); r.State != fsm.RoundCollecting {
			t.Fatalf("round %d: %s before its deadline", r.Number, r.State)
		}
		f.advance(2 * time.Second)
		f.step()
		r := f.job("j").Rounds[i-1]
		if r.State != fsm.RoundAborted || !strings.Contains(r.Reason, "0 of the 2 updates needed arrived by the deadline") {
			t.Fatalf("round %d: %s (%s)", r.Number, r.State, r.Reason)
		}
		f.step() // the next round opens, or the job ends
	}
	j := f.job("j")
	if j.State != fsm.JobFailed || !strings.Contains(j.Reason, "3 rounds in a row aborted") || len(j.Rounds) != MaxAbortedRounds {
		t.Fatalf("%s (%s) after %d rounds", j.State, j.Reason, len(j.Rounds))
	}
}

// A closed round waits for every contributor's approval until the
// deadline, then aborts naming who did not approve; decryptors are not
// asked meanwhile.
func TestUnapprovedRoundAborts(t *testing.T) {
	f := newFixture(t)
	f.submit("j", 2, "h1", "h2", "h3", "h4")
	f.step()
	for _, h := range []string{"h1", "h2"} {
		f.propose(&pb.ContributionCommand{JobId: "j", Round: 1, Hospital: h, Digest: []byte("d" + h), Size: 1})
	}
	f.propose(&pb.CloseRoundCommand{JobId: "j", Round: 1, Aggregate: []byte("agg"), AggregateDigest: []byte("d"),
		Contributors: []string{"h1", "h2"}, Active: []string{"h1", "h2"}})
	f.propose(&pb.ApprovalCommand{JobId: "j", Round: 1, Hospital: "h1", Signature: []byte("sig")})
	f.advance(deadline - time.Second)
	f.step()
	if r := f.job("j").Current(); r.State != fsm.RoundDecrypting || r.Attempt != 1 {
		t.Fatalf("before the deadline: %s attempt %d", r.State, r.Attempt)
	}
	f.advance(2 * time.Second)
	f.step()
	r := f.job("j").Rounds[0]
	if r.State != fsm.RoundAborted || !strings.Contains(r.Reason, "[h2] did not approve") {
		t.Fatalf("%s (%s)", r.State, r.Reason)
	}
}

// Decryptors that do not answer are replaced by hospitals never asked in
// the round and seen since the attempt began; when too few remain, the
// round aborts.
func TestDecryptorsReplacedThenAbort(t *testing.T) {
	f := newFixture(t)
	f.submit("j", 2, "h1", "h2", "h3", "h4")
	f.step()
	for _, h := range []string{"h1", "h2"} {
		f.propose(&pb.ContributionCommand{JobId: "j", Round: 1, Hospital: h, Digest: []byte("d" + h), Size: 1})
	}
	f.propose(&pb.CloseRoundCommand{JobId: "j", Round: 1, Aggregate: []byte("agg"), AggregateDigest: []byte("d"),
		Contributors: []string{"h1", "h2"}, Active: []string{"h1", "h2"}})
	for _, h := range []string{"h1", "h2"} {
		f.propose(&pb.ApprovalCommand{JobId: "j", Round: 1, Hospital: h, Signature: []byte("sig " + h)})
	}
	f.advance(time.Second)
	f.e.Seen("h3")
	f.e.Seen("h4")
	f.advance(deadline)
	f.step()
	r := f.job("j").Current()
	if r.Attempt != 2 || !slices.Equal(r.Active, []string{"h3", "h4"}) || !slices.Equal(r.Asked, hospitals) {
		t.Fatalf("attempt %d by %v (asked %v), want attempt 2 by [h3 h4]", r.Attempt, r.Active, r.Asked)
	}
	f.advance(deadline + time.Second)
	f.step()
	r = f.job("j").Rounds[0]
	if r.State != fsm.RoundAborted || !strings.Contains(r.Reason, "fewer than 2 other hospitals are online") {
		t.Fatalf("%s (%s)", r.State, r.Reason)
	}
}

// chooseDecryptors prefers the round's contributors, then the hospitals
// seen most recently, and leaves out those excluded or not seen since.
func TestChooseDecryptors(t *testing.T) {
	e := New(nil, he.RegionParams(), slog.New(slog.DiscardHandler), nil)
	region := &fsm.Region{Hospitals: hospitals, Threshold: 2}
	base := time.UnixMilli(1_000_000)
	for i, h := range hospitals {
		e.seen[h] = base.Add(time.Duration(i) * time.Second) // h4 most recent
	}
	cases := []struct {
		contributors, exclude []string
		since                 int64
		want                  []string
	}{
		{[]string{"h1", "h2"}, nil, 0, []string{"h1", "h2"}},
		{[]string{"h1"}, nil, 0, []string{"h1", "h4"}},
		{nil, nil, 0, []string{"h3", "h4"}},
		{[]string{"h1", "h2"}, []string{"h1", "h2"}, 0, []string{"h3", "h4"}},
		{nil, nil, base.Add(2 * time.Second).UnixMilli(), []string{"h3", "h4"}},
		{nil, []string{"h4"}, base.Add(2 * time.Second).UnixMilli(), nil},
	}
	for _, c := range cases {
		if got := e.chooseDecryptors(region, 0, c.contributors, c.exclude, c.since); !slices.Equal(got, c.want) {
			t.Errorf("contributors %v, exclude %v, since %d: %v, want %v", c.contributors, c.exclude, c.since, got, c.want)
		}
	}
}

// A hospital is offline after OfflineAfterRounds rounds without an update
// from it and no poll since the current round opened; one poll brings it
// back, and a round waits for everyone else.
func TestOffline(t *testing.T) {
	e := New(nil, he.RegionParams(), slog.New(slog.DiscardHandler), nil)
	sent := func(hs ...string) *fsm.Round {
		r := &fsm.Round{State: fsm.RoundCommitted}
		for _, h := range hs {
			r.Contributions = append(r.Contributions, fsm.Contribution{Hospital: h})
		}
		return r
	}
	cur := &fsm.Round{State: fsm.RoundCollecting, OpenedMs: 10_000}
	j := &fsm.Job{Accepted: []string{"h1", "h2", "h3"}, Rounds: []*fsm.Round{sent("h1", "h2", "h3"), sent("h1", "h2"), sent("h1", "h2"), cur}}
	if !e.offline(j, cur, "h3") || e.offline(j, cur, "h1") {
		t.Fatal("h3 missed the last two rounds and is not offline, or h1 is")
	}
	region := &fsm.Region{Hospitals: []string{"h1", "h2", "h3"}}
	if got := e.expected(region, j, cur); got != 2 {
		t.Fatalf("the round waits for %d updates, want 2", got)
	}
	e.seen["h3"] = time.UnixMilli(10_001)
	if e.offline(j, cur, "h3") || e.expected(region, j, cur) != 3 {
		t.Fatal("a poll since the round opened did not bring h3 back")
	}
	short := &fsm.Job{Accepted: j.Accepted, Rounds: []*fsm.Round{sent("h1"), cur}}
	if e.offline(short, cur, "h2") {
		t.Fatal("offline after one round")
	}
}

// takeover makes the next step that of a leader new to every round (as
// after an election) whose clock reads skew from the fixture's.
func (f *fixture) takeover(skew time.Duration) {
	f.e.mu.Lock()
	f.e.term = 0
	f.e.mu.Unlock()
	f.advance(skew)
}

// Replicas' clocks differ. A leader whose clock is ahead takes over a
// round past its logged deadline and still gives hospitals resendGrace to
// resend; one whose clock is behind closes it one round deadline after
// taking it over at the latest, not the skew later.
func TestTakeoverUnderClockSkew(t *testing.T) {
	f := newFixture(t)
	f.submit("ahead", 2, "h1", "h2", "h3", "h4")
	f.step() // round 1 opens on this clock
	f.advance(deadline / 2)
	f.takeover(40 * time.Second) // past the deadline in the log
	f.step()
	if r := f.job("ahead").Current(); r.State != fsm.RoundCollecting {
		t.Fatalf("a leader 40 s ahead closed the round at once: %s (%s)", r.State, r.Reason)
	}
	f.advance(resendGrace)
	f.step()
	if r := f.job("ahead").Rounds[0]; r.State != fsm.RoundAborted {
		t.Fatalf("after the resend grace: %s", r.State)
	}

	f.submit("behind", 2, "h1", "h2", "h3", "h4")
	f.step()
	f.step() // round 1 of "behind" opens
	f.takeover(-40 * time.Second)
	f.step()
	f.advance(deadline - time.Second)
	f.step()
	if r := f.job("behind").Current(); r.State != fsm.RoundCollecting {
		t.Fatalf("a leader 40 s behind closed the round before a deadline had passed: %s", r.State)
	}
	f.advance(2 * time.Second)
	f.step()
	if r := f.job("behind").Rounds[0]; r.State != fsm.RoundAborted {
		t.Fatalf("a leader 40 s behind held the round open past one deadline after taking it over: %s", r.State)
	}
}

// SilentBefore counts the rounds right before a round that got nothing
// from a hospital: the log's half of the offline rule, which the engine
// and the researcher's "missing, why" both read.
func TestSilentBefore(t *testing.T) {
	from := func(hs ...string) fsm.Round {
		var r fsm.Round
		for _, h := range hs {
			r.Contributions = append(r.Contributions, fsm.Contribution{Hospital: h})
		}
		return r
	}
	j := &fsm.Job{Rounds: []*fsm.Round{ptr(from("h1", "h2")), ptr(from("h2")), ptr(from("h2")), ptr(from())}}
	for _, c := range []struct {
		i    int
		h    string
		want int
	}{{0, "h1", 0}, {1, "h1", 0}, {2, "h1", 1}, {3, "h1", 2}, {3, "h2", 0}, {4, "h2", 1}, {4, "h3", 4}} {
		if got := SilentBefore(j, c.i, c.h); got != c.want {
			t.Errorf("SilentBefore(round %d, %s) = %d, want %d", c.i, c.h, got, c.want)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestRevocationListWarning(t *testing.T) {
	now := time.UnixMilli(1_700_000_000_000)
	day := uint32(24 * 3600)
	for _, tc := range []struct {
		name    string
		maxAgeS uint32
		listAge time.Duration // 0: no list
		want    string        // "" or a part of the warning
	}{
		{"no limit", 0, 0, ""},
		{"no list yet", day, 0, "no signed revocation list yet"},
		{"fresh", day, time.Hour, ""},
		{"past half the limit", day, 13 * time.Hour, "stop working for the region at 24h0m0s"},
		{"past the limit", day, 25 * time.Hour, "past the region's 24h0m0s"},
	} {
		listMs := int64(0)
		if tc.listAge > 0 {
			listMs = now.Add(-tc.listAge).UnixMilli()
		}
		got := RevocationListWarning(tc.maxAgeS, listMs, now)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}
