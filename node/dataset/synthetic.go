package dataset

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
)

// SyntheticConfig describes a synthetic region. The zero value is a valid
// region of four hospitals that differ only in size; set CaseMixShift (the
// demo uses 1) to make it non-IID.
type SyntheticConfig struct {
	// Hospitals is the number of hospitals, at most MaxSyntheticHospitals;
	// 0 means 4.
	Hospitals int
	// Seed determines everything generated.
	Seed int64
	// CaseMixShift scales how far each hospital's population departs from
	// the region's, in standard deviations per feature: 0 gives identical
	// populations, 1 offsets of about one standard deviation (older and
	// sicker patients at one hospital, younger at another). Between 0 and
	// MaxCaseMixShift.
	CaseMixShift float64
	// TestFraction is the share of each hospital's rows kept as its test
	// set, in (0, 1); 0 means 0.3. Ignored when TestRows is set.
	TestFraction float64
	// TestRows, when positive, keeps every generated row of a hospital for
	// training and draws a separate test set of this many rows from the
	// same hospital's population: a small hospital's own split would be too
	// small to compare models on. At most MaxSyntheticTestRows.
	TestRows int
}

// MaxSyntheticTestRows bounds SyntheticConfig.TestRows.
const MaxSyntheticTestRows = 100_000

// Limits of SyntheticConfig.
const (
	// MaxSyntheticHospitals bounds the region (and its memory: at most
	// 1500 rows per hospital).
	MaxSyntheticHospitals = 1024
	// MaxCaseMixShift bounds CaseMixShift: beyond a few standard
	// deviations the populations are no longer plausible patients of one
	// region, and the physiological clamps would flatten them.
	MaxCaseMixShift = 5
)

// Sizes of the synthetic cohorts.
const (
	// Log-uniform between these: a region has a few large centres and
	// small community hospitals, which gain most from federation.
	minHospitalRows = 80
	maxHospitalRows = 1500
	heldOutRows     = 2000
)

// vital is one synthetic feature: how it is distributed in the region, how
// it moves with a patient's latent acuity, and its term in the ground-truth
// model.
type vital struct {
	name string
	// The region's population distribution before clamping: normal with
	// this mean and sd, or, if logNormal, exp of a normal with this mean
	// and sd (lactate is right-skewed).
	mean, sd  float64
	logNormal bool
	// load is the correlation of the feature's z-score with the patient's
	// acuity, signed in the direction of deterioration, so that sick
	// patients are abnormal in several vitals at once, as in real wards.
	load float64
	// lo and hi clamp values to what a monitor could record.
	lo, hi float64
	// The ground truth adds weight·(x−ref)/scale to the log-odds: a
	// clinically meaningful deviation, linear in the raw value.
	ref, scale, weight float64
}

// vitals are the synthetic features, in column order: seven bedside vital
// signs and lactate, which carry most of the risk, then routine laboratory
// values that carry a little. Fifteen features are what an early-warning
// model at a real ward sees, and they make the region honest about small
// hospitals: with about 30 deteriorations among 120 patients (two events
// per feature, far below the usual ten) a hospital's own logistic model
// overfits, and the region's pooled evidence is what it lacks. With the
// bias below, the region's prevalence is about 19% without case-mix shift
// and 18–34% with shift 1, and the ground truth classifies 0.84–0.91 of
// the patients correctly against a majority baseline of 0.66–0.83:
// learnable, not trivial.
var vitals = []vital{
	{name: "age", mean: 62, sd: 17, load: 0.2, lo: 18, hi: 100, ref: 65, scale: 15, weight: 0.5},
	{name: "heart_rate", mean: 82, sd: 15, load: 0.5, lo: 30, hi: 200, ref: 80, scale: 15, weight: 0.8},
	{name: "resp_rate", mean: 17, sd: 4, load: 0.5, lo: 6, hi: 50, ref: 16, scale: 4, weight: 0.9},
	{name: "systolic_bp", mean: 126, sd: 20, load: -0.3, lo: 60, hi: 230, ref: 120, scale: 20, weight: -0.6},
	{name: "spo2", mean: 96, sd: 2.5, load: -0.5, lo: 60, hi: 100, ref: 96, scale: 3, weight: -0.8},
	{name: "temperature", mean: 37, sd: 0.6, load: 0.3, lo: 34, hi: 42, ref: 37, scale: 0.7, weight: 0.4},
	{name: "lactate", mean: math.Log(1.4), sd: 0.45, logNormal: true, load: 0.5, lo: 0.3, hi: 20, ref: 1.5, scale: 1, weight: 0.9},
	{name: "diastolic_bp", mean: 74, sd: 12, load: -0.2, lo: 30, hi: 140, ref: 75, scale: 12, weight: -0.1},
	{name: "wbc", mean: math.Log(8), sd: 0.35, logNormal: true, load: 0.3, lo: 0.5, hi: 60, ref: 8, scale: 4, weight: 0.3},
	{name: "creatinine", mean: math.Log(1.0), sd: 0.4, logNormal: true, load: 0.3, lo: 0.3, hi: 15, ref: 1, scale: 0.5, weight: 0.3},
	{name: "sodium", mean: 139, sd: 3.5, load: -0.1, lo: 115, hi: 165, ref: 140, scale: 4, weight: -0.15},
	{name: "potassium", mean: 4.2, sd: 0.5, load: 0.1, lo: 2.5, hi: 7.5, ref: 4.2, scale: 0.5, weight: 0.1},
	{name: "glucose", mean: math.Log(6.5), sd: 0.3, logNormal: true, load: 0.15, lo: 2, hi: 40, ref: 6.5, scale: 2, weight: 0.1},
	{name: "hemoglobin", mean: 12.8, sd: 1.9, load: -0.2, lo: 5, hi: 20, ref: 13, scale: 2, weight: -0.2},
	{name: "platelets", mean: 250, sd: 80, load: -0.1, lo: 10, hi: 900, ref: 250, scale: 80, weight: -0.05},
}

// groundTruthBias is the log-odds at the reference values of every vital.
const groundTruthBias = -3.0

// caseMix are the first hospitals' offsets from the region's population, in
// standard deviations of each vital (column order), before scaling by
// CaseMixShift. They are fixed, not random, so that even a two-hospital
// region has clearly different populations; further hospitals draw theirs
// from the seed.
var caseMix = [][]float64{
	// age, heart_rate, resp_rate, systolic_bp, spo2, temperature, lactate,
	// diastolic_bp, wbc, creatinine, sodium, potassium, glucose, hemoglobin, platelets
	{+0.9, +0.5, +0.5, -0.4, -0.5, +0.2, +0.5, -0.2, +0.3, +0.4, -0.2, +0.1, +0.3, -0.3, -0.1}, // tertiary referral centre: older and sicker
	{-1.4, -0.5, -0.4, +0.4, +0.5, -0.3, -0.5, +0.2, -0.2, -0.5, +0.1, -0.1, -0.3, +0.4, +0.1}, // urban community hospital: young, mostly well
	{+1.3, -0.4, +0.3, +0.9, -0.4, -0.5, -0.1, +0.6, -0.1, +0.7, -0.3, +0.3, +0.5, -0.5, -0.2}, // rural geriatric hospital: old, hypertensive
	{-0.6, +0.8, +0.3, -0.4, +0.2, +1.2, +0.2, -0.3, +1.0, +0.2, -0.2, +0.0, +0.2, -0.2, +0.3}, // infectious-disease unit: febrile, tachycardic
}

// extraCaseMixSD is the spread of the random offsets of hospitals beyond
// len(caseMix), comparable to the fixed ones.
const extraCaseMixSD = 0.8

// Seeds of the generator's independent PCG streams (the second PCG seed),
// so that the layout, each hospital's patients and the held-out set do not
// share random numbers, and adding a hospital leaves the others' patients
// unchanged.
const (
	streamLayout   = 0x5e7a_0000_0000_0000
	streamHeldOut  = 0x5e7a_0001_0000_0000
	streamHospital = 0x5e7a_0002_0000_0000 // + hospital index
)

// GroundTruth returns the logistic model that generates the synthetic
// labels, P(y=1 | x) = σ(bias + Σ weights[j]·x[j]), in raw units of the
// features in the order Synthetic produces them. It is linear in the raw
// values, so a logistic regression on them can recover it.
func GroundTruth() (features []string, weights []float64, bias float64) {
	bias = groundTruthBias
	for _, v := range vitals {
		features = append(features, v.name)
		weights = append(weights, v.weight/v.scale)
		bias -= v.weight * v.ref / v.scale
	}
	return features, weights, bias
}

// Synthetic generates a non-IID region of vital-signs cohorts with an
// early-warning label (deterioration within the stay), for the demo and
// tests: no files, known truth. Hospitals are named hospital-1 …
// hospital-N; they differ in size (80 to 1500 rows, log-uniform), case mix (feature
// means offset by CaseMixShift times a per-hospital profile) and hence
// prevalence, but share one ground-truth model (GroundTruth), so a
// federated model can serve them all. heldOut is 2000 rows from the whole
// region (each row from a hospital picked in proportion to its size), drawn
// from a stream of its own. The result is a function of cfg alone.
func Synthetic(cfg SyntheticConfig) (sites []Site, heldOut Table, err error) {
	if cfg.Hospitals == 0 {
		cfg.Hospitals = 4
	}
	if cfg.TestFraction == 0 {
		cfg.TestFraction = 0.3
	}
	switch {
	case cfg.Hospitals < 0 || cfg.Hospitals > MaxSyntheticHospitals:
		return nil, Table{}, fmt.Errorf("synthetic region: %d hospitals, want 1 to %d", cfg.Hospitals, MaxSyntheticHospitals)
	case !(cfg.CaseMixShift >= 0 && cfg.CaseMixShift <= MaxCaseMixShift):
		return nil, Table{}, fmt.Errorf("synthetic region: case-mix shift %v, want 0 to %d", cfg.CaseMixShift, MaxCaseMixShift)
	case cfg.TestRows < 0 || cfg.TestRows > MaxSyntheticTestRows:
		return nil, Table{}, fmt.Errorf("synthetic region: %d test rows, want 0 to %d", cfg.TestRows, MaxSyntheticTestRows)
	case !(cfg.TestFraction > 0 && cfg.TestFraction < 1):
		return nil, Table{}, errors.New("synthetic region: test fraction must be between 0 and 1")
	}

	layout := rand.New(rand.NewPCG(uint64(cfg.Seed), streamLayout))
	sizes := make([]int, cfg.Hospitals)
	offsets := make([][]float64, cfg.Hospitals)
	for h := range sizes {
		logMin, logMax := math.Log(minHospitalRows), math.Log(maxHospitalRows)
		sizes[h] = int(math.Round(math.Exp(logMin + layout.Float64()*(logMax-logMin))))
		offsets[h] = make([]float64, len(vitals))
		for j := range vitals {
			if h < len(caseMix) {
				offsets[h][j] = cfg.CaseMixShift * caseMix[h][j]
			} else {
				offsets[h][j] = cfg.CaseMixShift * extraCaseMixSD * layout.NormFloat64()
			}
		}
	}

	sites = make([]Site, cfg.Hospitals)
	total := 0
	for h := range sites {
		rng := rand.New(rand.NewPCG(uint64(cfg.Seed), streamHospital+uint64(h)))
		t := newVitalsTable(sizes[h])
		for i := range sizes[h] {
			t.Y[i] = patient(rng, offsets[h], t.X[i])
		}
		sites[h].Name = fmt.Sprintf("hospital-%d", h+1)
		if cfg.TestRows > 0 {
			test := newVitalsTable(cfg.TestRows)
			for i := range cfg.TestRows {
				test.Y[i] = patient(rng, offsets[h], test.X[i])
			}
			sites[h].Train, sites[h].Test = t, test
		} else {
			sites[h].Train, sites[h].Test = t.Split(cfg.TestFraction, cfg.Seed+int64(h))
		}
		total += sizes[h]
	}

	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), streamHeldOut))
	heldOut = newVitalsTable(heldOutRows)
	for i := range heldOutRows {
		h, k := 0, rng.IntN(total)
		for k >= sizes[h] {
			k -= sizes[h]
			h++
		}
		heldOut.Y[i] = patient(rng, offsets[h], heldOut.X[i])
	}
	return sites, heldOut, nil
}

// newVitalsTable allocates an n-row table of the synthetic features.
func newVitalsTable(n int) Table {
	t := Table{Features: make([]string, len(vitals)), X: make([][]float64, n), Y: make([]float64, n)}
	for j, v := range vitals {
		t.Features[j] = v.name
	}
	vals := make([]float64, n*len(vitals))
	for i := range t.X {
		t.X[i] = vals[i*len(vitals) : (i+1)*len(vitals) : (i+1)*len(vitals)]
	}
	return t
}

// patient fills x with one patient of a hospital whose population is offset
// from the region's by offset (in standard deviations), and returns the
// label drawn from the ground truth.
func patient(rng *rand.Rand, offset, x []float64) float64 {
	acuity := rng.NormFloat64()
	logit := groundTruthBias
	for j, v := range vitals {
		z := v.load*acuity + math.Sqrt(1-v.load*v.load)*rng.NormFloat64() + offset[j]
		val := v.mean + v.sd*z
		if v.logNormal {
			val = math.Exp(val)
		}
		x[j] = math.Min(math.Max(val, v.lo), v.hi)
		logit += v.weight * (x[j] - v.ref) / v.scale
	}
	if rng.Float64() < 1/(1+math.Exp(-logit)) {
		return 1
	}
	return 0
}
