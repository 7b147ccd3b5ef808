package dataset

import "regionfl/jobspec"

// Vector is the site's statistics vector for the region-wide scaling of a
// job with the given sample scale and bound (jobspec.StatsVector): only the
// region's sum of these vectors is ever decrypted.
func (s Stats) Vector(scale, bound float64) []float64 {
	return jobspec.StatsVector(s.Sum, s.SumSq, scale, bound)
}
