package dataset

import (
	"fmt"
	"math"
)

// Region-wide scaling: each site encrypts Stats.Vector of its training rows
// (its row count rides in the update's count slot), the coordinator adds
// the ciphertexts, and only the region's sums are decrypted and turned into
// one mean and standard deviation per feature by RegionScaling. No site's
// own statistics leave it.

// Vector is [Σx_1..Σx_F, Σx²_1..Σx²_F] divided by scale. Dividing by a
// public scale (the job's sample scale) keeps the vector's norm in the range
// the encrypted encoding represents precisely.
func (s Stats) Vector(scale float64) []float64 {
	v := make([]float64, 0, 2*len(s.Sum))
	for _, x := range s.Sum {
		v = append(v, x/scale)
	}
	for _, x := range s.SumSq {
		v = append(v, x/scale)
	}
	return v
}

// RegionScaling turns the decrypted sum of sites' Stats vectors and the
// region's total row count into per-feature means and standard deviations.
// The sums carry the encryption's small absolute error, so a variance that
// comes out at rounding level is treated as a constant feature (std 1).
func RegionScaling(sum []float64, count uint64, scale float64) (mean, std []float64, err error) {
	if len(sum)%2 != 0 || len(sum) == 0 {
		return nil, nil, fmt.Errorf("dataset: statistics vector of length %d is not 2×features", len(sum))
	}
	if count == 0 {
		return nil, nil, fmt.Errorf("dataset: no rows in the region")
	}
	f := len(sum) / 2
	n := float64(count)
	mean = make([]float64, f)
	std = make([]float64, f)
	for j := range f {
		m := sum[j] * scale / n
		sq := sum[f+j] * scale / n
		if math.IsNaN(m) || math.IsInf(m, 0) || math.IsNaN(sq) || math.IsInf(sq, 0) {
			return nil, nil, fmt.Errorf("dataset: feature %d: statistics are not finite", j)
		}
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
