// Package dataset provides the tabular data a regionfl hospital node trains
// on: the site's own CSV file (ReadCSV), the real four-centre UCI Heart
// Disease benchmark under FLamby's Fed-Heart-Disease protocol (HeartDisease),
// and a seeded synthetic region of hospitals whose labels come from a known
// model (Synthetic), so tests can check that training recovers it.
//
// A Table is deliberately plain — feature names, row-major float64 rows and
// 0/1 labels — because that is what the logistic models consume. The only
// thing a site ever shares about its table is its Stats: per-feature counts
// and sums that the region adds up under encryption, so that every site can
// be scaled with the same region-wide mean and standard deviation without
// any site revealing its own.
//
// Everything random here (splits, synthetic cohorts) is driven by an explicit
// seed through math/rand/v2's PCG, so a run is reproducible for a given seed
// and Go release; the Fed-Heart-Disease split instead reproduces
// scikit-learn's, NumPy's generator included, so that it is FLamby's.
package dataset

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
)

// Table is a site's rows: features by name, X row-major, Y binary labels 0/1.
// Every row of X has len(Features) values, all finite.
type Table struct {
	Features []string
	X        [][]float64
	Y        []float64
}

// Len returns the number of rows.
func (t Table) Len() int { return len(t.X) }

// Digest is the SHA-256 of an injective encoding of the table: feature
// names, then every row's values and label. It names a dataset without
// revealing it.
func (t Table) Digest() [32]byte {
	h := sha256.New()
	var b [8]byte
	put := func(v uint64) {
		binary.BigEndian.PutUint64(b[:], v)
		h.Write(b[:])
	}
	put(uint64(len(t.Features)))
	for _, f := range t.Features {
		put(uint64(len(f)))
		h.Write([]byte(f))
	}
	put(uint64(len(t.X)))
	for i, row := range t.X {
		put(uint64(len(row)))
		for _, x := range row {
			put(math.Float64bits(x))
		}
		put(math.Float64bits(t.Y[i]))
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// Stats are the per-feature sums a site can share under encryption: Count,
// Σx and Σx². They are plain sums so that the region can add them up
// homomorphically; mean and standard deviation follow from the total alone.
// Count is a float64 because it travels as an (approximate) encrypted real.
type Stats struct {
	Count float64
	Sum   []float64
	SumSq []float64
}

// Stats returns t's row count and per-feature Σx and Σx².
func (t Table) Stats() Stats {
	s := Stats{
		Count: float64(t.Len()),
		Sum:   make([]float64, len(t.Features)),
		SumSq: make([]float64, len(t.Features)),
	}
	for _, row := range t.X {
		for j, v := range row {
			s.Sum[j] += v
			s.SumSq[j] += v * v
		}
	}
	return s
}

// Add returns the element-wise sum of s and o: the statistics of the two
// tables pooled. The zero Stats is the identity, so a total can start from
// Stats{}. Add panics if both have features and their numbers differ, since
// pooling statistics of different columns is a programming error.
func (s Stats) Add(o Stats) Stats {
	switch {
	case s.isZero():
		return o.clone()
	case o.isZero():
		return s.clone()
	}
	if len(s.Sum) != len(o.Sum) || len(s.SumSq) != len(o.SumSq) || len(s.Sum) != len(s.SumSq) {
		panic(fmt.Sprintf("dataset: adding Stats of %d/%d and %d/%d features (Sum/SumSq)",
			len(s.Sum), len(s.SumSq), len(o.Sum), len(o.SumSq)))
	}
	r := s.clone()
	r.Count += o.Count
	for j := range r.Sum {
		r.Sum[j] += o.Sum[j]
		r.SumSq[j] += o.SumSq[j]
	}
	return r
}

func (s Stats) isZero() bool { return s.Count == 0 && len(s.Sum) == 0 && len(s.SumSq) == 0 }

func (s Stats) clone() Stats {
	return Stats{Count: s.Count, Sum: append([]float64(nil), s.Sum...), SumSq: append([]float64(nil), s.SumSq...)}
}

// minStd is the standard deviation below which MeanStd treats a feature as
// constant. A constant column whose value float64 cannot sum exactly (0.1,
// say) comes out a little above it, with a std of about sqrt(n·ε)·|mean|;
// that is harmless, since x−mean is rounding-sized too and the standardized
// values stay near 0.
const minStd = 1e-12

// MeanStd returns the per-feature mean and population standard deviation
// (divided by Count, not Count−1: these scale features, they do not estimate
// a variance). A constant feature (std below 1e-12) gets std 1 instead of 0,
// so standardizing it yields 0 rather than dividing by zero. With Count 0
// (no rows anywhere) every mean is 0 and every std 1.
func (s Stats) MeanStd() (mean, std []float64) {
	mean = make([]float64, len(s.Sum))
	std = make([]float64, len(s.Sum))
	for j := range s.Sum {
		std[j] = 1
		if s.Count <= 0 {
			continue
		}
		mean[j] = s.Sum[j] / s.Count
		// Σx²/n − mean² can come out slightly negative by rounding.
		if sd := math.Sqrt(math.Max(s.SumSq[j]/s.Count-mean[j]*mean[j], 0)); sd >= minStd {
			std[j] = sd
		}
	}
	return mean, std
}

// Standardize returns a copy of t with every feature scaled to (x−mean)/std;
// t itself is not modified. The scaling is an argument, not computed here,
// because the point of the region is that every site applies the same
// region-wide mean and std rather than its own (with its own, the same raw
// value would mean different things at different sites). It panics if mean
// or std does not have one entry per feature.
func (t Table) Standardize(mean, std []float64) Table {
	if len(mean) != len(t.Features) || len(std) != len(t.Features) {
		panic(fmt.Sprintf("dataset: standardizing %d features with %d means and %d stds",
			len(t.Features), len(mean), len(std)))
	}
	out := Table{
		Features: append([]string(nil), t.Features...),
		X:        make([][]float64, t.Len()),
		Y:        append([]float64(nil), t.Y...),
	}
	vals := make([]float64, t.Len()*len(t.Features))
	for i, row := range t.X {
		r := vals[i*len(mean) : (i+1)*len(mean) : (i+1)*len(mean)]
		for j, v := range row {
			r[j] = (v - mean[j]) / std[j]
		}
		out.X[i] = r
	}
	return out
}

// Split shuffles the rows with a PCG seeded by seed and returns the first
// round(n·testFraction) of them as test and the rest as train, both in
// shuffled order. The same table and seed always give the same split. A
// testFraction ≤ 0 (or NaN) gives an empty test set, ≥ 1 puts every row in
// it. The returned tables are copies: changing them does not change t.
func (t Table) Split(testFraction float64, seed int64) (train, test Table) {
	nTest := 0
	if testFraction > 0 {
		nTest = int(math.Min(math.Round(float64(t.Len())*testFraction), float64(t.Len())))
	}
	perm := rand.New(rand.NewPCG(uint64(seed), splitStream)).Perm(t.Len())
	return t.rows(perm[nTest:]), t.rows(perm[:nTest])
}

// splitStream separates the PCG stream of splits from the synthetic
// generator's streams, so a split seed equal to a generator seed does not
// replay the same random numbers.
const splitStream = 0x5311_7000_0000_0000

// rows returns a copy of t holding the given rows in the given order.
func (t Table) rows(idx []int) Table {
	nf := len(t.Features)
	out := Table{
		Features: append([]string(nil), t.Features...),
		X:        make([][]float64, len(idx)),
		Y:        make([]float64, len(idx)),
	}
	vals := make([]float64, len(idx)*nf)
	for k, i := range idx {
		out.X[k] = vals[k*nf : (k+1)*nf : (k+1)*nf]
		copy(out.X[k], t.X[i])
		out.Y[k] = t.Y[i]
	}
	return out
}

// Site is one hospital's data, already split: it trains on Train and reports
// accuracy on Test, which never leaves it either.
type Site struct {
	Name        string
	Train, Test Table
	// Dropped are the rows the site's file lost to missing or unusable
	// cells; a job that does not allow that (missing: error) is declined.
	Dropped Dropped
}
