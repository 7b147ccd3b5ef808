package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"regionfl/jobspec"
	"regionfl/models"
	pb "regionfl/proto/regionfl/v1"
)

func job() *pb.JobSpec {
	return &pb.JobSpec{
		Model:   jobspec.ToProto(models.Spec{Kind: models.KindLogReg, Inputs: 7}),
		Purpose: "early warning", MinHospitals: 3, Rounds: 10,
		DpNoiseMultiplier: 1, DpDelta: 1e-5,
	}
}

func TestCheck(t *testing.T) {
	hash := models.Spec{Kind: models.KindLogReg, Inputs: 7}.Hash()
	ok := Policy{ModelHashes: []string{hash}, Purposes: []string{"early warning"}, MinParticipants: 3, MaxRounds: 10, MinNoiseMultiplier: 0.8, EpsilonBudget: 100}
	if r := ok.Check(job(), 0, 2); r != "" {
		t.Fatalf("accepted job refused: %s", r)
	}
	cases := map[string]struct {
		p     Policy
		spent float64
		want  string
	}{
		"model":   {Policy{ModelHashes: []string{"sha256:00"}}, 0, "not on the accepted list"},
		"purpose": {Policy{Purposes: []string{"billing"}}, 0, "purpose"},
		"K":       {Policy{MinParticipants: 4}, 0, "below the site's minimum"},
		"rounds":  {Policy{MaxRounds: 5}, 0, "exceed"},
		"noise":   {Policy{MinNoiseMultiplier: 2}, 0, "floor"},
		"budget":  {Policy{EpsilonBudget: 5}, 4.9, "budget exhausted"},
	}
	for name, c := range cases {
		if r := c.p.Check(job(), c.spent, 2); !strings.Contains(r, c.want) {
			t.Errorf("%s: reason %q, want %q", name, r, c.want)
		}
	}
	// Without min_participants, K must exceed the threshold; a site may
	// set a lower minimum explicitly.
	if r := (Policy{}).Check(job(), 0, 3); !strings.Contains(r, "below the default minimum of 4 (threshold 3 + 1)") {
		t.Errorf("K = t without a site minimum: %q", r)
	}
	if r := (Policy{}).Check(job(), 0, 2); r != "" {
		t.Errorf("K = t + 1 without a site minimum: %q", r)
	}
	if r := (Policy{MinParticipants: 2}).Check(job(), 0, 3); r != "" {
		t.Errorf("K = 3 under an explicit minimum of 2: %q", r)
	}
	noDP := job()
	noDP.DpNoiseMultiplier = 0
	if r := (Policy{EpsilonBudget: 5}).Check(noDP, 0, 2); !strings.Contains(r, "no differential privacy") {
		t.Errorf("job without DP under a budget: %q", r)
	}
}

// A site stops before the round that would take it over its budget.
func TestWithinBudget(t *testing.T) {
	p := Policy{EpsilonBudget: 10}
	spec := job()
	last := 0
	for r := 1; r <= 1000; r++ {
		ok, eps := p.Within(spec, 0, r)
		if !ok {
			break
		}
		if eps > 10 {
			t.Fatalf("round %d allowed at ε %.3f", r, eps)
		}
		last = r
	}
	if last == 0 || last == 1000 {
		t.Fatalf("budget allowed %d rounds", last)
	}
}

func TestParseRefusesBadFiles(t *testing.T) {
	for _, bad := range []string{"epsilon_budget: -1", "min_noise_multiplier: .nan", "model_hashes: [abc]", "max_round: 3", "purposes: {a: b}"} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("%q parsed", bad)
		}
	}
	if p, err := Parse(nil); err != nil || p.MaxRounds != 0 {
		t.Fatalf("empty policy: %+v %v", p, err)
	}
}

// Edits take effect on the next check; a broken edit keeps the last good
// policy and says so.
func TestFileReloads(t *testing.T) {
	path := filepath.Join(t.TempDir(), "policy.yaml")
	write := func(s string, mt time.Time) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		os.Chtimes(path, mt, mt)
	}
	t0 := time.Now().Add(-time.Hour)
	write("max_rounds: 5\n", t0)
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := f.Current(); p.MaxRounds != 5 {
		t.Fatalf("max_rounds %d", p.MaxRounds)
	}
	write("max_rounds: 20\n", t0.Add(time.Minute))
	if p, err := f.Current(); p.MaxRounds != 20 || err != nil {
		t.Fatalf("after edit: %d %v", p.MaxRounds, err)
	}
	write("max_rounds: [\n", t0.Add(2*time.Minute))
	if p, err := f.Current(); p.MaxRounds != 20 || err == nil {
		t.Fatalf("broken edit: %d %v", p.MaxRounds, err)
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing.yaml")); err == nil {
		t.Fatal("missing file opened")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("model_hashes: [sha256:ab]\npurposes: [x]\nmin_participants: 3\nmax_rounds: 9\nmin_noise_multiplier: 1\nepsilon_budget: 8\n"))
	f.Add([]byte("{}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Parse(b)
		if err != nil {
			return
		}
		if p.EpsilonBudget < 0 || p.MinNoiseMultiplier < 0 {
			t.Fatalf("negative limits accepted: %+v", p)
		}
		p.Check(job(), 0, 3)
	})
}
