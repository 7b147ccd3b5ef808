// Package privacy is the per-site differential privacy of regionfl: the
// Gaussian noise each hospital adds to its clipped update, and the Rényi
// accountant that turns rounds of participation into an (ε, δ) guarantee.
//
// The mechanism is distributed: the region's aggregate must carry Gaussian
// noise of standard deviation σ·C (σ the job's noise multiplier, C the L2
// clip of one hospital's update). Each of the at least K contributors adds
// its share N(0, σ²C²/K); only the encrypted sum is ever decrypted, so what
// leaves the region is the sum, noised with variance ≥ σ²C². The guarantee
// is site-level: it covers everything one hospital contributes in a round.
// If hospitals collude and subtract their own noise, the remaining noise is
// smaller; a site that wants a guarantee on its own adds a larger share
// (its policy's noise floor).
package privacy

import (
	crand "crypto/rand"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// Accountant tracks the Rényi differential privacy of the sampled-free
// Gaussian mechanism composed over rounds (Mironov, "Rényi Differential
// Privacy", 2017): one round at noise multiplier σ costs α/(2σ²) at every
// order α, and rounds add up.
type Accountant struct {
	NoiseMultiplier float64 // σ
	Delta           float64 // δ of the reported (ε, δ)
}

// orders are the Rényi orders searched for the tightest ε, the grid used
// by common accountants (Opacus, TensorFlow Privacy).
var orders = func() []float64 {
	var o []float64
	for a := 1.1; a < 11; a += 0.1 {
		o = append(o, a)
	}
	for a := 11.0; a <= 256; a++ {
		o = append(o, a)
	}
	return append(o, 512, 1024)
}()

// Validate checks the parameters a job names.
func (a Accountant) Validate() error {
	if !(a.NoiseMultiplier > 0) || math.IsInf(a.NoiseMultiplier, 0) {
		return fmt.Errorf("privacy: noise multiplier must be positive and finite, got %g", a.NoiseMultiplier)
	}
	if !(a.Delta > 0 && a.Delta < 1) {
		return fmt.Errorf("privacy: delta must be in (0, 1), got %g", a.Delta)
	}
	return nil
}

// Epsilon is the ε spent after a site took part in the given number of
// rounds, using the conversion of Balle et al. ("Hypothesis testing
// interpretations and Rényi differential privacy", 2020), which is tighter
// than Mironov's log(1/δ)/(α−1).
func (a Accountant) Epsilon(rounds int) float64 {
	if rounds <= 0 {
		return 0
	}
	s2 := a.NoiseMultiplier * a.NoiseMultiplier
	best := math.Inf(1)
	for _, alpha := range orders {
		rdp := float64(rounds) * alpha / (2 * s2)
		eps := rdp + math.Log1p(-1/alpha) - (math.Log(a.Delta)+math.Log(alpha))/(alpha-1)
		best = min(best, eps)
	}
	return max(best, 0)
}

// ShareStd is the standard deviation of the noise one of at least k
// contributors adds so the sum carries σ·C.
func ShareStd(sigma, clip float64, k int) float64 {
	if k < 1 {
		k = 1
	}
	return sigma * clip / math.Sqrt(float64(k))
}

// EncodingBound is the L2 bound a noised update is encrypted with: above
// the clip C by enough that the noise is almost never clipped away (the
// norm of d Gaussian values of std s stays below s·(√d + 8) except with
// probability below e^-32).
func EncodingBound(clip, shareStd float64, dims int) float64 {
	return clip + shareStd*(math.Sqrt(float64(dims))+8)
}

// ErrNoEntropy is returned when the system's random source fails; noise
// must never come from a predictable generator.
var ErrNoEntropy = errors.New("privacy: no entropy for the noise generator")

// AddNoise adds independent N(0, std²) noise to every value, from a
// generator seeded by the operating system's CSPRNG.
func AddNoise(values []float64, std float64) error {
	if std == 0 {
		return nil
	}
	if !(std > 0) || math.IsInf(std, 0) {
		return fmt.Errorf("privacy: noise std must be positive and finite, got %g", std)
	}
	var seed [32]byte
	if _, err := crand.Read(seed[:]); err != nil {
		return ErrNoEntropy
	}
	rng := rand.New(rand.NewChaCha8(seed))
	for i := range values {
		values[i] += rng.NormFloat64() * std
	}
	return nil
}

// Clip scales values in place so their L2 norm is at most c, and returns
// the norm before clipping.
func Clip(values []float64, c float64) float64 {
	var s float64
	for _, v := range values {
		s += v * v
	}
	norm := math.Sqrt(s)
	if norm > c {
		f := c / norm
		for i := range values {
			values[i] *= f
		}
	}
	return norm
}
