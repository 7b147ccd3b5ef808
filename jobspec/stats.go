package jobspec

import (
	"fmt"
	"math"
	"slices"
)

// Region-wide scaling: each site encrypts Stats.Vector of its training rows
// (its row count rides in the update's count slot), the coordinator adds
// the ciphertexts, and only the region's sums are decrypted and turned into
// one mean and standard deviation per feature by RegionScaling. No site's
// own statistics leave it.

// The statistics vector travels as wide values (VectorShape): each is
// rounded to a step of bound/2^47 per site, about 1.4e-8 at StatsBound.
// Sent as they are, Σx² of a feature far from zero (temperature: mean 37,
// std 0.7) is four orders of magnitude larger than its variance, and
// variance = E[x²] − mean² cancels the digits the error leaves. So every
// sum travels in two parts: its integer part, which the decrypted total
// recovers exactly by rounding, and its fraction, amplified to fill a
// quarter of the bound, whose error shrinks by that gain (about 10⁵ at 15
// features). The region's means and standard deviations then come back
// within about 1e-12 of the exact ones.

// maxStatsRoundingError is the largest distance of a decrypted integer
// part from an integer that still counts as exact; the encryption error
// at StatsBound is below 1e-7, far below it.
const maxStatsRoundingError = 0.25

// StatsVectorLen is the length of the statistics vector of a table with
// the given number of features.
func StatsVectorLen(features int) int { return 4 * features }

// fractionGain is the factor that makes the fractions, each at most a
// half, fill a quarter of bound: there are 2·features of them.
func fractionGain(features int, bound float64) float64 {
	return bound / (2 * math.Sqrt(float64(2*features)))
}

// StatsVector encodes [Σx_1..Σx_F, Σx²_1..Σx²_F] (sum, sumSq) divided by
// scale for an encrypted sum with L2 bound bound: first the integer parts,
// then the fractions amplified by fractionGain. Dividing by a public scale
// (the job's sample scale) keeps the integer parts within the bound for
// sites of up to tens of thousands of rows; a site checks the vector's
// norm against the bound before it encrypts.
func StatsVector(sum, sumSq []float64, scale, bound float64) []float64 {
	f := len(sum)
	gain := fractionGain(f, bound)
	v := make([]float64, StatsVectorLen(f))
	for j, x := range slices.Concat(sum, sumSq) {
		x /= scale
		whole := math.Round(x)
		v[j] = whole
		v[2*f+j] = (x - whole) * gain
	}
	return v
}

// RegionScaling turns the decrypted sum of sites' Stats vectors (encoded
// with the same scale and bound) and the region's total row count into
// per-feature means and standard deviations. An integer part that is not
// within maxStatsRoundingError of an integer means the encryption lost
// more precision than the bound allows for, and is an error. A variance at
// rounding level is treated as a constant feature (std 1).
func RegionScaling(sum []float64, count uint64, scale, bound float64) (mean, std []float64, err error) {
	if len(sum)%4 != 0 || len(sum) == 0 {
		return nil, nil, fmt.Errorf("jobspec: statistics vector of length %d is not 4×features", len(sum))
	}
	if count == 0 {
		return nil, nil, fmt.Errorf("jobspec: no rows in the region")
	}
	f := len(sum) / 4
	gain := fractionGain(f, bound)
	sums := make([]float64, 2*f)
	for j := range sums {
		whole, frac := sum[j], sum[2*f+j]
		if math.IsNaN(whole) || math.IsInf(whole, 0) || math.IsNaN(frac) || math.IsInf(frac, 0) {
			return nil, nil, fmt.Errorf("jobspec: statistics sum %d is not finite", j)
		}
		exact := math.Round(whole)
		if d := math.Abs(whole - exact); d > maxStatsRoundingError {
			return nil, nil, fmt.Errorf("jobspec: statistics sum %d: integer part %.3f is not an integer (encryption error above %g)", j, whole, maxStatsRoundingError)
		}
		sums[j] = (exact + frac/gain) * scale
	}
	n := float64(count)
	mean = make([]float64, f)
	std = make([]float64, f)
	for j := range f {
		m := sums[j] / n
		sq := sums[f+j] / n
		mean[j] = m
		v := sq - m*m
		// Below a millionth of the second moment the variance is noise.
		if v <= 1e-6*math.Max(sq, 1e-12) {
			std[j] = 1
			continue
		}
		std[j] = math.Sqrt(v)
	}
	return mean, std, nil
}

// Missing-value policies, of a site's CSV options and of a job: a row whose
// label or selected feature is empty or NA is an error, or is dropped.
const (
	MissingError = "error"
	MissingDrop  = "drop"
)

// Sample weighting (FedAvg over sites of different sizes): a site of n
// training rows sends (n / S)·Δ, S being the job's sample_scale, so the
// decrypted sum is Σ nᵢΔᵢ / S and never needs any site's n in the clear;
// the coordinator multiplies it by S / Σnᵢ, from the region's count, to
// get the sample-weighted mean update.

// SampleWeight is n / S, the factor a site of rows training rows applies
// to its update.
func SampleWeight(rows int, sampleScale float64) float64 { return float64(rows) / sampleScale }

// MeanScale is S / Σnᵢ, the factor that turns the sum of weighted updates
// of total rows in all into their sample-weighted mean.
func MeanScale(sampleScale float64, total uint64) float64 { return sampleScale / float64(total) }
