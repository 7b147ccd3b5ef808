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
