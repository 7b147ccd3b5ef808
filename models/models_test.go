package models

import (
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
)

// separable draws rows whose label follows a known logistic model.
func separable(n int, seed uint64) (X [][]float64, y []float64, w []float64) {
	rng := rand.New(rand.NewPCG(seed, 1))
	w = []float64{2, -1.5, 0.5}
	for range n {
		row := []float64{rng.NormFloat64(), rng.NormFloat64(), rng.NormFloat64()}
		z := -0.5
		for j, v := range row {
			z += w[j] * v
		}
		label := 0.0
		if rng.Float64() < sigmoid(z) {
			label = 1
		}
		X = append(X, row)
		y = append(y, label)
	}
	return X, y, w
}

func TestSpecHashAndLayout(t *testing.T) {
	lr := Spec{Kind: KindLogReg, Inputs: 13}
	if lr.NumParams() != 14 {
		t.Fatalf("logreg params %d, want 14", lr.NumParams())
	}
	mlp := Spec{Kind: KindMLP, Inputs: 7, Hidden: []int{16, 8}}
	if want := 7*16 + 16 + 16*8 + 8 + 8 + 1; mlp.NumParams() != want {
		t.Fatalf("mlp params %d, want %d", mlp.NumParams(), want)
	}
	if lr.Hash() != (Spec{Kind: KindLogReg, Inputs: 13}).Hash() {
		t.Fatal("hash not stable")
	}
	if lr.Hash() == (Spec{Kind: KindLogReg, Inputs: 12}).Hash() || mlp.Hash() == (Spec{Kind: KindMLP, Inputs: 7, Hidden: []int{8, 16}}).Hash() {
		t.Fatal("different specs share a hash")
	}
	for _, bad := range []Spec{{Kind: "cnn", Inputs: 3}, {Kind: KindLogReg}, {Kind: KindMLP, Inputs: 3}, {Kind: KindLogReg, Inputs: 3, Hidden: []int{2}}, {Kind: KindMLP, Inputs: 3, Hidden: []int{0}}} {
		if bad.Validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
	if !slices.Equal(mlp.Init(3), mlp.Init(3)) || slices.Equal(mlp.Init(3), mlp.Init(4)) {
		t.Fatal("Init is not a function of the seed")
	}
}

func TestTrainRecoversLogisticModel(t *testing.T) {
	X, y, w := separable(4000, 7)
	s := Spec{Kind: KindLogReg, Inputs: 3}
	for _, opt := range []string{OptSGD, OptAdam} {
		lr := 0.5
		if opt == OptAdam {
			lr = 0.05
		}
		p, err := Train(s, s.Init(1), X, y, TrainConfig{Steps: 600, BatchSize: 64, LR: lr, Optimizer: opt, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		for j := range w {
			if math.Abs(p[j]-w[j]) > 0.35 {
				t.Errorf("%s: weight %d = %.3f, true %.3f", opt, j, p[j], w[j])
			}
		}
		m, err := Evaluate(s, p, X, y, 0.5)
		if err != nil {
			t.Fatal(err)
		}
		if m.AUROC < 0.85 || m.Accuracy < 0.75 {
			t.Errorf("%s: auroc %.3f accuracy %.3f", opt, m.AUROC, m.Accuracy)
		}
	}
}

func TestTrainIsDeterministicAndLeavesGlobal(t *testing.T) {
	X, y, _ := separable(500, 3)
	s := Spec{Kind: KindMLP, Inputs: 3, Hidden: []int{8}}
	g := s.Init(2)
	orig := slices.Clone(g)
	cfg := TrainConfig{Steps: 50, BatchSize: 16, LR: 0.1, Seed: 9}
	a, err := Train(s, g, X, y, cfg)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Train(s, g, X, y, cfg)
	if !slices.Equal(a, b) {
		t.Fatal("same seed gave different parameters")
	}
	if !slices.Equal(g, orig) {
		t.Fatal("Train modified the global parameters")
	}
	m, _ := Evaluate(s, a, X, y, 0.5)
	if m.Accuracy < 0.7 {
		t.Fatalf("mlp accuracy %.3f", m.Accuracy)
	}
}

func TestProxTermKeepsModelNearGlobal(t *testing.T) {
	X, y, _ := separable(500, 4)
	s := Spec{Kind: KindLogReg, Inputs: 3}
	g := s.Init(0)
	dist := func(mu float64) float64 {
		p, err := Train(s, g, X, y, TrainConfig{Steps: 200, BatchSize: 32, LR: 0.2, ProxMu: mu, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		d := 0.0
		for i := range p {
			d += (p[i] - g[i]) * (p[i] - g[i])
		}
		return math.Sqrt(d)
	}
	if free, prox := dist(0), dist(2); prox >= free*0.7 {
		t.Fatalf("prox mu=2 moved %.3f, free %.3f", prox, free)
	}
}

func TestTrainRefusesBadInput(t *testing.T) {
	s := Spec{Kind: KindLogReg, Inputs: 2}
	X := [][]float64{{1, 2}, {3, 4}}
	y := []float64{0, 1}
	good := TrainConfig{Steps: 1, BatchSize: 1, LR: 0.1}
	cases := map[string]func() error{
		"params":    func() error { _, err := Train(s, []float64{0}, X, y, good); return err },
		"row width": func() error { _, err := Train(s, s.Init(0), [][]float64{{1}}, y[:1], good); return err },
		"labels":    func() error { _, err := Train(s, s.Init(0), X, y[:1], good); return err },
		"lr": func() error {
			c := good
			c.LR = math.NaN()
			_, err := Train(s, s.Init(0), X, y, c)
			return err
		},
		"optimizer": func() error {
			c := good
			c.Optimizer = "lbfgs"
			_, err := Train(s, s.Init(0), X, y, c)
			return err
		},
	}
	for name, f := range cases {
		if err := f(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

func TestScore(t *testing.T) {
	p := []float64{0.9, 0.8, 0.3, 0.2, 0.6}
	y := []float64{1, 0, 1, 0, 0}
	m, err := Score(p, y, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if m.TP != 1 || m.FP != 2 || m.TN != 1 || m.FN != 1 {
		t.Fatalf("confusion %+v", m)
	}
	if m.Accuracy != 0.4 || m.AlarmsPer100 != 60 || m.Sensitivity != 0.5 || math.Abs(m.Specificity-1.0/3) > 1e-12 {
		t.Fatalf("rates %+v", m)
	}
	// Positives 0.9, 0.3 against negatives 0.8, 0.2, 0.6: 0.9 beats all
	// three, 0.3 beats one → 4/6.
	if math.Abs(m.AUROC-4.0/6) > 1e-12 {
		t.Fatalf("auroc %.4f, want %.4f", m.AUROC, 4.0/6)
	}
	if _, err := Score([]float64{0.5}, []float64{2}, 0.5); err == nil || !strings.Contains(err.Error(), "not 0 or 1") {
		t.Fatalf("label 2: %v", err)
	}
}

func TestServerOptimizers(t *testing.T) {
	delta := []float64{0.1, -0.2}
	for _, name := range []string{StrategyFedAvg, StrategyFedProx, StrategyFedAdam, StrategyFedYogi, StrategyFedAdagrad} {
		opt, err := NewServerOptimizer(StrategyConfig{Name: name}, 2)
		if err != nil {
			t.Fatal(err)
		}
		g := opt.Step([]float64{0, 0}, delta)
		if !(g[0] > 0 && g[1] < 0) {
			t.Errorf("%s moved against the update: %v", name, g)
		}
		st, ok := opt.(interface {
			State() []float64
			SetState([]float64) error
		})
		if name == StrategyFedAvg || name == StrategyFedProx {
			if g[0] != 0.1 || ok {
				t.Errorf("%s: %v (stateful %v)", name, g, ok)
			}
			continue
		}
		if !ok {
			t.Fatalf("%s has no state", name)
		}
		// A restored optimizer continues exactly like the original.
		again, _ := NewServerOptimizer(StrategyConfig{Name: name}, 2)
		if err := again.(interface{ SetState([]float64) error }).SetState(st.State()); err != nil {
			t.Fatal(err)
		}
		a, b := opt.Step(slices.Clone(g), delta), again.Step(slices.Clone(g), delta)
		if !slices.Equal(a, b) {
			t.Errorf("%s: restored state diverges: %v vs %v", name, a, b)
		}
		if st.SetState([]float64{1}) == nil {
			t.Errorf("%s accepted a short state", name)
		}
	}
	for _, bad := range []StrategyConfig{{Name: "sgd"}, {Name: StrategyFedAdam, Beta1: 1}, {Name: StrategyFedAvg, ServerLR: -1}, {Name: StrategyFedYogi, Tau: math.Inf(1)}} {
		if _, err := NewServerOptimizer(bad, 2); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// Region metrics from summed site vectors equal the metrics of the pooled
// predictions (AUROC up to ties within a histogram bin).
func TestMetricSumsAddUp(t *testing.T) {
	X, y, _ := separable(3000, 11)
	s := Spec{Kind: KindLogReg, Inputs: 3}
	p, err := Train(s, s.Init(0), X, y, TrainConfig{Steps: 300, BatchSize: 32, LR: 0.3, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	pred, _ := Predict(s, p, X)
	total := make([]float64, MetricSumsLen)
	for _, part := range [][2]int{{0, 700}, {700, 1900}, {1900, 3000}} {
		v, err := MetricSums(pred[part[0]:part[1]], y[part[0]:part[1]], 0.4)
		if err != nil {
			t.Fatal(err)
		}
		for i := range v {
			total[i] += v[i]
		}
	}
	got, err := MetricsFromSums(total)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := Score(pred, y, 0.4)
	if got.N != want.N || got.TP != want.TP || got.FP != want.FP || got.Accuracy != want.Accuracy ||
		math.Abs(got.Loss-want.Loss) > 1e-9 || math.Abs(got.Brier-want.Brier) > 1e-9 || got.AlarmsPer100 != want.AlarmsPer100 {
		t.Fatalf("from sums %+v, pooled %+v", got, want)
	}
	if math.Abs(got.AUROC-want.AUROC) > 0.01 {
		t.Fatalf("binned AUROC %.4f, exact %.4f", got.AUROC, want.AUROC)
	}
	if _, err := MetricsFromSums(total[:3]); err == nil {
		t.Fatal("short vector accepted")
	}
	if _, err := MetricSums([]float64{1.5}, []float64{1}, 0.5); err == nil {
		t.Fatal("probability 1.5 accepted")
	}
}

// A command line names a model as "logreg" or "mlp:H1,H2"; anything else
// is refused with what to write instead.
func TestParseArchitecture(t *testing.T) {
	s, err := ParseArchitecture("mlp:1024, 1024", 15)
	if err != nil || s.Kind != KindMLP || !slices.Equal(s.Hidden, []int{1024, 1024}) || s.Inputs != 15 {
		t.Fatalf("mlp:1024,1024: %+v %v", s, err)
	}
	if n := s.NumParams(); n < 1_000_000 || n > 1_100_000 {
		t.Errorf("mlp:1024,1024 on 15 inputs has %d parameters, want about 1M", n)
	}
	if s, err := ParseArchitecture("logreg", 8); err != nil || s.Kind != KindLogReg || s.NumParams() != 9 {
		t.Errorf("logreg: %+v %v", s, err)
	}
	for _, bad := range []string{"", "cnn", "mlp", "mlp:", "mlp:64,x", "mlp:0", "logreg:4", "mlp:5000"} {
		if _, err := ParseArchitecture(bad, 8); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

// Trainings at once in one process (a demo's hospitals) give what each
// gives alone. (The data race on gorgonia's shared constant node that init
// in train.go prevents showed in the demo's race run; this small test does
// not reliably provoke it.)
func TestTrainConcurrently(t *testing.T) {
	X, y, _ := separable(200, 3)
	s := Spec{Kind: KindLogReg, Inputs: 3}
	cfg := TrainConfig{Steps: 20, BatchSize: 16, LR: 0.1, Seed: 3}
	got := make([][]float64, 4)
	var wg sync.WaitGroup
	for i := range got {
		wg.Go(func() { got[i], _ = Train(s, s.Init(1), X, y, cfg) })
	}
	wg.Wait()
	want, err := Train(s, s.Init(1), X, y, cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i, p := range got {
		if !slices.Equal(p, want) {
			t.Errorf("training %d at once with others gave other parameters", i)
		}
	}
}
