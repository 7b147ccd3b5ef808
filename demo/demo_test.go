package demo

import (
	"context"
	"testing"
	"time"
)

// The whole region in one process trains a model that beats chance on the
// held-out population and helps the hospitals on average.
func TestDemoRegionLearns(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a whole region")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	opt := DefaultOptions()
	opt.Rounds = 4
	res, err := Run(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Rounds) != opt.Rounds {
		t.Fatalf("%d rounds reported, want %d", len(res.Rounds), opt.Rounds)
	}
	for _, r := range res.Rounds {
		if r.State != "committed" || r.Contributors != opt.Hospitals {
			t.Errorf("round %d: %s with %d contributors", r.Round, r.State, r.Contributors)
		}
	}
	if res.GlobalAccuracy < 0.7 {
		t.Errorf("held-out accuracy %.3f, want at least 0.7", res.GlobalAccuracy)
	}
	var local, fed float64
	for _, f := range res.Final {
		local += f.LocalAccuracy
		fed += f.FederatedAccuracy
	}
	t.Logf("held-out %.3f; mean local-only %.3f, federated %.3f", res.GlobalAccuracy, local/4, fed/4)
	if fed < local-0.02*float64(len(res.Final)) {
		t.Errorf("federated mean %.3f is worse than local-only %.3f", fed/4, local/4)
	}
}

// The demo's fault injection: the leader dies during a round's collection
// and a hospital goes offline mid-run; every round still commits and the
// model still learns.
func TestDemoSurvivesLeaderLossAndDropout(t *testing.T) {
	if testing.Short() {
		t.Skip("runs a whole region")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	opt := DefaultOptions()
	opt.Rounds, opt.KillLeaderRound, opt.DropHospitals = 4, 2, 1
	res, err := Run(ctx, opt)
	if err != nil {
		t.Fatal(err)
	}
	if res.LeaderChanges < 1 {
		t.Errorf("leader changes %d, want at least 1", res.LeaderChanges)
	}
	if len(res.Rounds) != opt.Rounds+res.AbortedRounds {
		t.Fatalf("%d rounds reported with %d aborted, want %d committed", len(res.Rounds), res.AbortedRounds, opt.Rounds)
	}
	last := res.Rounds[len(res.Rounds)-1]
	if last.State != "committed" || last.Contributors != opt.Hospitals-opt.DropHospitals {
		t.Errorf("last round %s with %d contributors, want committed with %d", last.State, last.Contributors, opt.Hospitals-opt.DropHospitals)
	}
	if res.GlobalAccuracy < 0.8 {
		t.Errorf("held-out accuracy %.3f after the faults", res.GlobalAccuracy)
	}
	opt.DropHospitals = 3
	if _, err := Run(ctx, opt); err == nil {
		t.Error("dropping below the decryption threshold was accepted")
	}
}
