package privacy

import (
	"math"
	"testing"
)

// Reference points for the Gaussian mechanism, checked against the
// analytic formula: one release at σ costs ε(α) = α/(2σ²).
func TestEpsilonMonotoneAndKnownValues(t *testing.T) {
	a := Accountant{NoiseMultiplier: 1, Delta: 1e-5}
	prev := 0.0
	for r := 1; r <= 50; r++ {
		e := a.Epsilon(r)
		if e <= prev {
			t.Fatalf("ε not increasing at round %d: %g after %g", r, e, prev)
		}
		prev = e
	}
	// Mironov's conversion gives an upper bound the tighter one must meet.
	for _, rounds := range []int{1, 10, 100} {
		upper := math.Inf(1)
		for _, alpha := range orders {
			upper = min(upper, float64(rounds)*alpha/2+math.Log(1/a.Delta)/(alpha-1))
		}
		if e := a.Epsilon(rounds); e > upper || e < upper*0.7 {
			t.Errorf("%d rounds: ε %.3f, Mironov bound %.3f", rounds, e, upper)
		}
	}
	// More noise, less ε.
	if (Accountant{NoiseMultiplier: 2, Delta: 1e-5}).Epsilon(10) >= a.Epsilon(10) {
		t.Error("doubling σ did not lower ε")
	}
	if a.Epsilon(0) != 0 {
		t.Error("no rounds must cost nothing")
	}
}

func TestValidate(t *testing.T) {
	for _, bad := range []Accountant{{0, 1e-5}, {math.Inf(1), 1e-5}, {1, 0}, {1, 1}, {math.NaN(), 1e-5}} {
		if bad.Validate() == nil {
			t.Errorf("%+v validated", bad)
		}
	}
	if (Accountant{1, 1e-5}).Validate() != nil {
		t.Error("valid accountant refused")
	}
}

// The noise has the requested spread and is fresh on every call.
func TestAddNoise(t *testing.T) {
	const n, std = 200_000, 0.5
	v := make([]float64, n)
	if err := AddNoise(v, std); err != nil {
		t.Fatal(err)
	}
	var s, s2 float64
	for _, x := range v {
		s += x
		s2 += x * x
	}
	mean := s / n
	got := math.Sqrt(s2/n - mean*mean)
	if math.Abs(mean) > 5*std/math.Sqrt(n) || math.Abs(got-std) > 0.01 {
		t.Fatalf("mean %.4f std %.4f, want 0 and %.2f", mean, got, std)
	}
	w := make([]float64, 4)
	u := make([]float64, 4)
	AddNoise(w, 1)
	AddNoise(u, 1)
	if w[0] == u[0] {
		t.Fatal("two calls drew the same noise")
	}
	if AddNoise(w, -1) == nil || AddNoise(w, math.NaN()) == nil {
		t.Fatal("bad std accepted")
	}
}

// K shares of noise add up to the target σ·C, and the encoding bound
// leaves room for the noise.
func TestShareStdAndBound(t *testing.T) {
	s := ShareStd(1.2, 10, 4)
	if total := math.Sqrt(4 * s * s); math.Abs(total-12) > 1e-9 {
		t.Fatalf("4 shares give %.4f, want 12", total)
	}
	v := make([]float64, 10_000)
	for i := range v {
		v[i] = 1
	}
	Clip(v, 10)
	AddNoise(v, s)
	var n2 float64
	for _, x := range v {
		n2 += x * x
	}
	if math.Sqrt(n2) > EncodingBound(10, s, len(v)) {
		t.Fatal("noised update exceeds its encoding bound")
	}
}

func TestClip(t *testing.T) {
	v := []float64{3, 4}
	if n := Clip(v, 1); n != 5 || math.Abs(v[0]-0.6) > 1e-12 || math.Abs(v[1]-0.8) > 1e-12 {
		t.Fatalf("clip: norm %g, %v", n, v)
	}
	w := []float64{0.1, 0.1}
	Clip(w, 1)
	if w[0] != 0.1 {
		t.Fatal("clip changed a short vector")
	}
}
