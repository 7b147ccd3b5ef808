package dataset

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"regionfl/jobspec"
	"slices"
	"strings"
	"testing"
	"time"
)

// ---- Table, Stats, Standardize, Split ----

func sampleTable() Table {
	return Table{
		Features: []string{"a", "b", "c"},
		X: [][]float64{
			{1, 10, 5},
			{2, 20, 5},
			{3, 30, 5},
			{4, 40, 5},
		},
		Y: []float64{0, 1, 0, 1},
	}
}

func near(a, b, tol float64) bool { return math.Abs(a-b) <= tol }

func TestStats(t *testing.T) {
	tab := sampleTable()
	s := tab.Stats()
	want := Stats{Count: 4, Sum: []float64{10, 100, 20}, SumSq: []float64{30, 3000, 100}}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("Stats = %+v, want %+v", s, want)
	}

	// Pooling halves gives the whole, and the zero Stats is the identity.
	first, second := tab, tab
	first.X, first.Y = tab.X[:1], tab.Y[:1]
	second.X, second.Y = tab.X[1:], tab.Y[1:]
	var total Stats
	total = total.Add(first.Stats()).Add(second.Stats())
	if !reflect.DeepEqual(total, want) {
		t.Fatalf("pooled Stats = %+v, want %+v", total, want)
	}
	if got := want.Add(Stats{}); !reflect.DeepEqual(got, want) {
		t.Fatalf("s.Add(zero) = %+v, want %+v", got, want)
	}
	// Add returns a new value.
	sum := want.Add(want)
	if want.Sum[0] != 10 || sum.Sum[0] != 20 || sum.Count != 8 {
		t.Fatalf("Add modified its receiver or summed wrong: %+v, %+v", want, sum)
	}

	defer func() {
		if recover() == nil {
			t.Fatal("adding Stats of 3 and 2 features did not panic")
		}
	}()
	want.Add(Stats{Count: 1, Sum: []float64{1, 2}, SumSq: []float64{1, 4}})
}

func TestMeanStd(t *testing.T) {
	mean, std := sampleTable().Stats().MeanStd()
	wantMean := []float64{2.5, 25, 5}
	wantStd := []float64{math.Sqrt(1.25), math.Sqrt(125), 1} // population std; c is constant
	for j := range wantMean {
		if !near(mean[j], wantMean[j], 1e-12) || !near(std[j], wantStd[j], 1e-12) {
			t.Errorf("feature %d: mean, std = %v, %v; want %v, %v", j, mean[j], std[j], wantMean[j], wantStd[j])
		}
	}

	// A constant column that float64 cannot sum exactly comes out with a
	// rounding-sized std, but must still standardize to about 0.
	tab := Table{Features: []string{"x"}}
	for range 1000 {
		tab.X = append(tab.X, []float64{0.1})
		tab.Y = append(tab.Y, 0)
	}
	mean, std = tab.Stats().MeanStd()
	for _, row := range tab.Standardize(mean, std).X {
		if math.Abs(row[0]) > 1e-6 {
			t.Fatalf("constant 0.1 column (mean %v, std %v) standardizes to %v, want about 0", mean[0], std[0], row[0])
		}
	}

	// No rows at all.
	mean, std = Stats{Sum: []float64{0}, SumSq: []float64{0}}.MeanStd()
	if mean[0] != 0 || std[0] != 1 {
		t.Errorf("empty Stats: mean, std = %v, %v; want 0, 1", mean[0], std[0])
	}
}

func TestStandardize(t *testing.T) {
	tab := sampleTable()
	orig := sampleTable()
	mean, std := tab.Stats().MeanStd()
	z := tab.Standardize(mean, std)
	if !reflect.DeepEqual(tab, orig) {
		t.Fatal("Standardize modified its table")
	}
	if !reflect.DeepEqual(z.Features, tab.Features) || !reflect.DeepEqual(z.Y, tab.Y) {
		t.Fatalf("Standardize changed features or labels: %v %v", z.Features, z.Y)
	}
	if got, want := z.X[0][0], (1-2.5)/math.Sqrt(1.25); !near(got, want, 1e-12) {
		t.Errorf("z[0][0] = %v, want %v", got, want)
	}
	zm, zs := z.Stats().MeanStd()
	for j := range zm {
		wantStd := 1.0
		if !near(zm[j], 0, 1e-12) || !near(zs[j], wantStd, 1e-12) {
			t.Errorf("feature %d after standardizing: mean %v std %v, want 0 and 1", j, zm[j], zs[j])
		}
	}
	z.X[0][0], z.Y[0], z.Features[0] = 99, 99, "changed"
	if !reflect.DeepEqual(tab, orig) {
		t.Fatal("the standardized table shares memory with the original")
	}

	defer func() {
		if recover() == nil {
			t.Fatal("Standardize with 2 means for 3 features did not panic")
		}
	}()
	tab.Standardize(mean[:2], std[:2])
}

// numbered is an n-row table whose row i is {i, -i} with label i%2, so rows
// can be identified after shuffling.
func numbered(n int) Table {
	t := Table{Features: []string{"id", "neg"}}
	for i := range n {
		t.X = append(t.X, []float64{float64(i), -float64(i)})
		t.Y = append(t.Y, float64(i%2))
	}
	return t
}

// ids returns the sorted row ids of tables made by numbered, checking that
// every row is intact.
func ids(t *testing.T, tabs ...Table) []int {
	t.Helper()
	var out []int
	for _, tab := range tabs {
		for i, row := range tab.X {
			id := int(row[0])
			if row[1] != -row[0] || tab.Y[i] != float64(id%2) {
				t.Fatalf("row %v label %v is not an intact row", row, tab.Y[i])
			}
			out = append(out, id)
		}
	}
	slices.Sort(out)
	return out
}

func TestSplit(t *testing.T) {
	tab := numbered(101)
	all := ids(t, tab)
	for _, tc := range []struct {
		frac     float64
		wantTest int
	}{
		{0.3, 30}, {0.25, 25}, {0.5, 51}, {0.004, 0}, {0.006, 1}, // round(n·frac)
		{0, 0}, {-1, 0}, {math.NaN(), 0}, {1, 101}, {2, 101},
	} {
		train, test := tab.Split(tc.frac, 7)
		if test.Len() != tc.wantTest || train.Len() != 101-tc.wantTest {
			t.Errorf("Split(%v): train/test %d/%d, want %d/%d", tc.frac, train.Len(), test.Len(), 101-tc.wantTest, tc.wantTest)
		}
		if got := ids(t, train, test); !slices.Equal(got, all) {
			t.Errorf("Split(%v): train and test are not a partition of the rows", tc.frac)
		}
		if !slices.Equal(train.Features, tab.Features) || !slices.Equal(test.Features, tab.Features) {
			t.Errorf("Split(%v) changed the features", tc.frac)
		}
	}

	a, b := tab.Split(0.3, 42)
	c, d := tab.Split(0.3, 42)
	if !reflect.DeepEqual(a, c) || !reflect.DeepEqual(b, d) {
		t.Error("the same seed gave different splits")
	}
	e, _ := tab.Split(0.3, 43)
	if reflect.DeepEqual(a, e) {
		t.Error("seeds 42 and 43 gave the same split")
	}
	if slices.Equal(ids(t, b), ids(t, numbered(30))) {
		t.Error("the test set is the first rows: not shuffled")
	}

	a.X[0][0], a.Y[0], a.Features[0] = -5, 7, "changed"
	if !reflect.DeepEqual(tab, numbered(101)) {
		t.Error("changing a split changed the original table")
	}
}

// ---- Synthetic ----

func TestSyntheticDeterministic(t *testing.T) {
	cfg := SyntheticConfig{Seed: 3, CaseMixShift: 1}
	s1, h1, err := Synthetic(cfg)
	if err != nil {
		t.Fatal(err)
	}
	s2, h2, err := Synthetic(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s1, s2) || !reflect.DeepEqual(h1, h2) {
		t.Fatal("the same config gave different regions")
	}
	s3, h3, err := Synthetic(SyntheticConfig{Seed: 4, CaseMixShift: 1})
	if err != nil {
		t.Fatal(err)
	}
	if reflect.DeepEqual(s1[0].Train.X, s3[0].Train.X) || reflect.DeepEqual(h1.X, h3.X) {
		t.Fatal("seeds 3 and 4 gave the same data")
	}

	// Adding a hospital leaves the others' patients as they were.
	s5, _, err := Synthetic(SyntheticConfig{Hospitals: 5, Seed: 3, CaseMixShift: 1})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(s5[:4], s1) {
		t.Fatal("a fifth hospital changed the first four")
	}
}

func TestSyntheticShape(t *testing.T) {
	features, weights, _ := GroundTruth()
	if len(features) != len(weights) || len(features) < 5 {
		t.Fatalf("GroundTruth: %d features, %d weights", len(features), len(weights))
	}
	for _, tc := range []SyntheticConfig{
		{Seed: 1},
		{Seed: 2, CaseMixShift: 1},
		{Seed: 3, CaseMixShift: 2, Hospitals: 7, TestFraction: 0.2},
		{Seed: 4, Hospitals: 1, TestFraction: 0.5},
	} {
		sites, heldOut, err := Synthetic(tc)
		if err != nil {
			t.Fatalf("%+v: %v", tc, err)
		}
		wantSites, frac := tc.Hospitals, tc.TestFraction
		if wantSites == 0 {
			wantSites = 4
		}
		if frac == 0 {
			frac = 0.3
		}
		if len(sites) != wantSites {
			t.Fatalf("%+v: %d sites, want %d", tc, len(sites), wantSites)
		}
		var sizes []int
		for i, s := range sites {
			if want := fmt.Sprintf("hospital-%d", i+1); s.Name != want {
				t.Errorf("%+v: site %d is %q, want %q", tc, i, s.Name, want)
			}
			n := s.Train.Len() + s.Test.Len()
			if n < minHospitalRows || n > maxHospitalRows {
				t.Errorf("%+v: %s has %d rows, want %d..%d", tc, s.Name, n, minHospitalRows, maxHospitalRows)
			}
			if want := int(math.Round(float64(n) * frac)); s.Test.Len() != want {
				t.Errorf("%+v: %s test set %d rows, want %d", tc, s.Name, s.Test.Len(), want)
			}
			checkTable(t, s.Train, features)
			checkTable(t, s.Test, features)
			sizes = append(sizes, n)
		}
		if len(sites) > 1 && slices.Min(sizes) == slices.Max(sizes) {
			t.Errorf("%+v: every hospital has %d rows", tc, sizes[0])
		}
		if heldOut.Len() != 2000 {
			t.Errorf("%+v: held-out set %d rows, want 2000", tc, heldOut.Len())
		}
		checkTable(t, heldOut, features)
	}
}

// checkTable checks a table's invariants: features as given, one finite
// value per feature in every row, 0/1 labels.
func checkTable(t *testing.T, tab Table, features []string) {
	t.Helper()
	if !slices.Equal(tab.Features, features) {
		t.Fatalf("features %v, want %v", tab.Features, features)
	}
	if len(tab.X) != len(tab.Y) {
		t.Fatalf("%d rows and %d labels", len(tab.X), len(tab.Y))
	}
	for i, row := range tab.X {
		if len(row) != len(features) {
			t.Fatalf("row %d has %d values for %d features", i, len(row), len(features))
		}
		for _, v := range row {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				t.Fatalf("row %d: %v", i, row)
			}
		}
		if tab.Y[i] != 0 && tab.Y[i] != 1 {
			t.Fatalf("row %d: label %v", i, tab.Y[i])
		}
	}
}

func prevalence(tabs ...Table) float64 {
	var pos, n float64
	for _, tab := range tabs {
		for _, y := range tab.Y {
			pos += y
		}
		n += float64(tab.Len())
	}
	return pos / n
}

func TestSyntheticPrevalenceAndCaseMix(t *testing.T) {
	for seed := int64(1); seed <= 5; seed++ {
		for _, shift := range []float64{0, 1} {
			sites, heldOut, err := Synthetic(SyntheticConfig{Seed: seed, CaseMixShift: shift})
			if err != nil {
				t.Fatal(err)
			}
			if p := prevalence(heldOut); p < 0.1 || p > 0.35 {
				t.Errorf("seed %d shift %v: held-out prevalence %.3f, want 0.1..0.35", seed, shift, p)
			}
			var region Stats
			for _, s := range sites {
				region = region.Add(s.Train.Stats())
			}
			_, regionStd := region.MeanStd()
			// How far apart the hospitals' means are, in region standard
			// deviations, at most over the features; and their prevalences.
			// The prevalence gap is also measured in standard errors of a
			// difference of two binomial proportions, so that small
			// hospitals' sampling noise does not count as case mix.
			maxGap, maxPrevZ, prevs := 0.0, 0.0, []float64{}
			for a := range sites {
				ma, _ := sites[a].Train.Stats().MeanStd()
				pa, na := prevalence(sites[a].Train, sites[a].Test), float64(sites[a].Train.Len()+sites[a].Test.Len())
				for b := range a {
					mb, _ := sites[b].Train.Stats().MeanStd()
					for j := range ma {
						maxGap = math.Max(maxGap, math.Abs(ma[j]-mb[j])/regionStd[j])
					}
					pb, nb := prevalence(sites[b].Train, sites[b].Test), float64(sites[b].Train.Len()+sites[b].Test.Len())
					p := (pa*na + pb*nb) / (na + nb)
					maxPrevZ = math.Max(maxPrevZ, math.Abs(pa-pb)/math.Sqrt(p*(1-p)*(1/na+1/nb)))
				}
				prevs = append(prevs, pa)
			}
			spread := slices.Max(prevs) - slices.Min(prevs)
			switch {
			case shift == 0 && (maxGap > 0.4 || maxPrevZ > 4):
				t.Errorf("seed %d, no shift: hospital means up to %.2f std apart, prevalences %.1f standard errors apart; want alike", seed, maxGap, maxPrevZ)
			case shift == 1 && (maxGap < 1.5 || spread < 0.2):
				t.Errorf("seed %d, shift 1: hospital means at most %.2f std apart, prevalences %.2f apart; want distinct populations", seed, maxGap, spread)
			}
		}
	}
}

// fitLogistic fits an unregularized logistic regression by Newton's method
// and returns the bias followed by the weights.
func fitLogistic(X [][]float64, Y []float64) []float64 {
	d := len(X[0]) + 1
	w := make([]float64, d)
	xa := make([]float64, d)
	for range 30 {
		// The augmented system [H | g] of the Newton step H·δ = g.
		h := make([][]float64, d)
		for a := range h {
			h[a] = make([]float64, d+1)
		}
		for i, x := range X {
			xa[0] = 1
			copy(xa[1:], x)
			p := 1 / (1 + math.Exp(-dot(w, xa)))
			for a := range d {
				h[a][d] += (Y[i] - p) * xa[a]
				for b := range d {
					h[a][b] += p * (1 - p) * xa[a] * xa[b]
				}
			}
		}
		// Gauss–Jordan elimination with partial pivoting.
		for c := range d {
			p := c
			for r := c + 1; r < d; r++ {
				if math.Abs(h[r][c]) > math.Abs(h[p][c]) {
					p = r
				}
			}
			h[c], h[p] = h[p], h[c]
			for r := range d {
				if r != c {
					f := h[r][c] / h[c][c]
					for k := c; k <= d; k++ {
						h[r][k] -= f * h[c][k]
					}
				}
			}
		}
		for a := range d {
			w[a] += h[a][d] / h[a][a]
		}
	}
	return w
}

func dot(a, b []float64) float64 {
	s := 0.0
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

// accuracy of the model (bias, weights...) at threshold 0.5.
func accuracy(w []float64, tab Table) float64 {
	ok := 0
	for i, x := range tab.X {
		if (w[0]+dot(w[1:], x) > 0) == (tab.Y[i] == 1) {
			ok++
		}
	}
	return float64(ok) / float64(tab.Len())
}

func TestSyntheticGroundTruthIsLearnable(t *testing.T) {
	sites, heldOut, err := Synthetic(SyntheticConfig{Seed: 11, CaseMixShift: 1, Hospitals: 16})
	if err != nil {
		t.Fatal(err)
	}
	_, weights, bias := GroundTruth()
	truth := append([]float64{bias}, weights...)
	bayes := accuracy(truth, heldOut)
	p := prevalence(heldOut)
	majority := math.Max(p, 1-p)
	if bayes < 0.83 || bayes < majority+0.07 {
		t.Errorf("ground truth accuracy %.3f against majority %.3f: the task is too noisy", bayes, majority)
	}

	// A logistic regression on the pooled training rows, scaled with the
	// region's statistics, recovers the ground truth.
	var region Stats
	var X [][]float64
	var Y []float64
	for _, s := range sites {
		region = region.Add(s.Train.Stats())
	}
	mean, std := region.MeanStd()
	for _, s := range sites {
		X = append(X, s.Train.Standardize(mean, std).X...)
		Y = append(Y, s.Train.Y...)
	}
	fit := fitLogistic(X, Y)
	for j, w := range weights {
		if got, want := fit[j+1], w*std[j]; math.Abs(got-want) > 0.25 {
			t.Errorf("feature %d: fitted weight %.3f per std, ground truth %.3f", j, got, want)
		}
	}
	if acc := accuracy(fit, heldOut.Standardize(mean, std)); acc < bayes-0.02 {
		t.Errorf("fitted model accuracy %.3f, ground truth %.3f", acc, bayes)
	}
}

// TestSyntheticLocalScalingHurts checks the property the region exists for:
// with case-mix shift, a shared model on data scaled with each site's own
// statistics does clearly worse than on data scaled with the region's.
func TestSyntheticLocalScalingHurts(t *testing.T) {
	var regionAcc, localAcc float64
	const seeds = 3
	for seed := int64(1); seed <= seeds; seed++ {
		sites, _, err := Synthetic(SyntheticConfig{Seed: seed, CaseMixShift: 1})
		if err != nil {
			t.Fatal(err)
		}
		var region Stats
		for _, s := range sites {
			region = region.Add(s.Train.Stats())
		}
		rMean, rStd := region.MeanStd()
		var rX, lX [][]float64
		var Y []float64
		for _, s := range sites {
			lMean, lStd := s.Train.Stats().MeanStd()
			rX = append(rX, s.Train.Standardize(rMean, rStd).X...)
			lX = append(lX, s.Train.Standardize(lMean, lStd).X...)
			Y = append(Y, s.Train.Y...)
		}
		rFit, lFit := fitLogistic(rX, Y), fitLogistic(lX, Y)
		for _, s := range sites {
			lMean, lStd := s.Train.Stats().MeanStd()
			regionAcc += accuracy(rFit, s.Test.Standardize(rMean, rStd)) / float64(seeds*len(sites))
			localAcc += accuracy(lFit, s.Test.Standardize(lMean, lStd)) / float64(seeds*len(sites))
		}
	}
	t.Logf("mean per-site accuracy: region-wide scaling %.3f, per-site scaling %.3f", regionAcc, localAcc)
	if regionAcc < localAcc+0.03 {
		t.Errorf("region-wide scaling %.3f vs per-site %.3f: the case-mix shift is too small to matter", regionAcc, localAcc)
	}
}

func TestSyntheticConfigErrors(t *testing.T) {
	for _, cfg := range []SyntheticConfig{
		{Hospitals: -1},
		{Hospitals: MaxSyntheticHospitals + 1},
		{CaseMixShift: -0.5},
		{CaseMixShift: math.NaN()},
		{CaseMixShift: MaxCaseMixShift + 1},
		{TestFraction: 1},
		{TestFraction: -0.2},
		{TestFraction: math.NaN()},
		{TestRows: -1},
		{TestRows: MaxSyntheticTestRows + 1},
	} {
		if _, _, err := Synthetic(cfg); err == nil {
			t.Errorf("Synthetic(%+v) succeeded", cfg)
		} else if !strings.HasPrefix(err.Error(), "synthetic region: ") {
			t.Errorf("Synthetic(%+v): unhelpful error %q", cfg, err)
		}
	}
}

func TestSyntheticIsFast(t *testing.T) {
	best := time.Hour
	for range 5 {
		start := time.Now()
		if _, _, err := Synthetic(SyntheticConfig{Seed: 1, CaseMixShift: 1}); err != nil {
			t.Fatal(err)
		}
		best = min(best, time.Since(start))
	}
	if best > 50*time.Millisecond {
		t.Errorf("Synthetic took %v, want under 50ms", best)
	}
}

func BenchmarkSynthetic(b *testing.B) {
	for b.Loop() {
		if _, _, err := Synthetic(SyntheticConfig{Seed: 1, CaseMixShift: 1}); err != nil {
			b.Fatal(err)
		}
	}
}

// ---- CSV ----

func TestParseCSV(t *testing.T) {
	in := "\uFEFF hr , spo2,\"label\",note\r\n" +
		"80,97,0,fine\r\n" +
		"\r\n" + // blank lines are skipped
		" 120 , 88 ,1.0,\"sick, very\"\r\n" +
		"95,1e2,0.0,\r\n"
	tab, dropped, err := ParseCSV(strings.NewReader(in), "site.csv", CSVOptions{Label: "label", Columns: []string{"hr", "spo2"}})
	if err != nil {
		t.Fatal(err)
	}
	want := Table{
		Features: []string{"hr", "spo2"},
		X:        [][]float64{{80, 97}, {120, 88}, {95, 100}},
		Y:        []float64{0, 1, 0},
	}
	if dropped != (Dropped{}) || !reflect.DeepEqual(tab, want) {
		t.Fatalf("got %+v (dropped %+v), want %+v", tab, dropped, want)
	}

	// Columns in the order asked for; nil means all but the label.
	in = "a,b,y,c\n1,2,1,3\n4,5,0,6\n"
	tab, _, err = ParseCSV(strings.NewReader(in), "site.csv", CSVOptions{Label: "y", Columns: []string{"c", "a"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tab.Features, []string{"c", "a"}) || !reflect.DeepEqual(tab.X, [][]float64{{3, 1}, {6, 4}}) {
		t.Errorf("selected columns c,a: got %v %v", tab.Features, tab.X)
	}
	tab, _, err = ParseCSV(strings.NewReader(in), "site.csv", CSVOptions{Label: "y", Missing: "error"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tab.Features, []string{"a", "b", "c"}) || !reflect.DeepEqual(tab.X, [][]float64{{1, 2, 3}, {4, 5, 6}}) || !slices.Equal(tab.Y, []float64{1, 0}) {
		t.Errorf("all columns: got %+v", tab)
	}
}

func TestReadCSV(t *testing.T) {
	path := filepath.Join(t.TempDir(), "site.csv")
	if err := os.WriteFile(path, []byte("x,y\n1,0\n2,1\n3,?\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tab, dropped, err := ReadCSV(path, CSVOptions{Label: "y", Missing: "drop"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (Dropped{Rows: 1, Line: 4, Column: "y"}); tab.Len() != 2 || dropped != want {
		t.Errorf("%d rows, dropped %+v; want 2 and %+v", tab.Len(), dropped, want)
	}
	_, _, err = ReadCSV(path, CSVOptions{Label: "y"})
	if err == nil || !strings.Contains(err.Error(), path+":4: column \"y\": missing value \"?\"") {
		t.Errorf("missing label: error %v, want it to name %s:4 and column y", err, path)
	}
	_, _, err = ReadCSV(filepath.Join(t.TempDir(), "absent.csv"), CSVOptions{Label: "y"})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("absent file: error %v, want not-exist", err)
	}
}

func TestParseCSVErrors(t *testing.T) {
	const hdr = "hr,spo2,y\n"
	for _, tc := range []struct {
		name string
		in   string
		opts CSVOptions // Label "y" unless set
		want string     // substring of the error
	}{
		{"empty cell", hdr + "80,97,0\n80,,1\n", CSVOptions{}, `site.csv:3: column "spo2": empty cell`},
		{"question mark", hdr + "?,97,0\n", CSVOptions{}, `site.csv:2: column "hr": missing value "?"`},
		{"NA", hdr + "80,NA,0\n", CSVOptions{}, `site.csv:2: column "spo2": missing value "NA"`},
		{"NaN", hdr + "80,97,0\n80,nan,0\n", CSVOptions{}, `site.csv:3: column "spo2": missing value "nan"`},
		{"not a number", hdr + "80,97,0\n\n81,9x7,1\n", CSVOptions{}, `site.csv:4: column "spo2": "9x7" is not a number`},
		{"infinite", hdr + "Inf,97,0\n", CSVOptions{}, `site.csv:2: column "hr": infinite value "Inf"`},
		{"out of range", hdr + "1e999,97,0\n", CSVOptions{}, `site.csv:2: column "hr": "1e999" is out of the range`},
		{"label not binary", hdr + "80,97,2\n", CSVOptions{}, `site.csv:2: column "y": label "2" is not 0 or 1 (only binary labels are supported)`},
		{"label not binary under drop", hdr + "80,97,0.5\n", CSVOptions{Missing: "drop"}, `site.csv:2: column "y": label "0.5" is not 0 or 1 (only binary`},
		{"label not binary beside a missing cell", hdr + "?,97,3\n", CSVOptions{Missing: "drop"}, `site.csv:2: column "y": label "3"`},
		{"label missing", hdr + "80,97,\n", CSVOptions{}, `site.csv:2: column "y": empty cell`},
		{"cell too long", hdr + "80," + strings.Repeat("9", 65) + ",0\n", CSVOptions{Missing: "drop"}, `site.csv:2: column "spo2": cell longer than 64 bytes`},
		{"too few fields", hdr + "80,97,0\n80,97\n", CSVOptions{}, `site.csv:3: 2 fields, but the header has 3`},
		{"too many fields", hdr + "80,97,0,1\n", CSVOptions{}, `site.csv:2: 4 fields, but the header has 3`},
		{"bare quote", hdr + "80,9\"7,0\n", CSVOptions{}, `site.csv:2: bare " in non-quoted-field`},
		{"unterminated quote", hdr + "80,\"97,0\n", CSVOptions{}, `site.csv:2: extraneous or missing " in quoted-field`},
		{"record too long", hdr + "80,97," + strings.Repeat("0", maxRecordBytes) + "\n", CSVOptions{}, `site.csv:2: record longer than`},
		{"quoted record too long", hdr + "80,97,0\n80,\"" + strings.Repeat("9\n", maxRecordBytes) + "\",0\n", CSVOptions{}, `site.csv:3: record longer than`},
		{"header too long", strings.Repeat("a", maxRecordBytes+1), CSVOptions{}, `site.csv:1: record longer than`},
		{"empty file", "", CSVOptions{}, `site.csv: empty file (a header row is required)`},
		{"header only", hdr, CSVOptions{}, `site.csv: no data rows`},
		{"every row dropped", hdr + "?,97,0\n80,,1\n", CSVOptions{Missing: "drop"}, `site.csv: no rows left: all 2 data rows`},
		{"no label option", hdr + "80,97,0\n", CSVOptions{Label: "-"}, `site.csv: no label column given`},
		{"unknown label", hdr + "80,97,0\n", CSVOptions{Label: "outcome"}, `site.csv:1: no label column "outcome"`},
		{"unknown column", hdr + "80,97,0\n", CSVOptions{Columns: []string{"hr", "sbp"}}, `site.csv:1: no column "sbp"`},
		{"label as feature", hdr + "80,97,0\n", CSVOptions{Columns: []string{"hr", "y"}}, `site.csv:1: column "y" is the label`},
		{"column twice", hdr + "80,97,0\n", CSVOptions{Columns: []string{"hr", "hr"}}, `site.csv:1: column "hr" selected twice`},
		{"duplicate header", "hr,spo2,hr,y\n1,2,3,0\n", CSVOptions{}, `site.csv:1: duplicate column "hr" (columns 1 and 3)`},
		{"unnamed column", "hr,,y\n1,2,0\n", CSVOptions{}, `site.csv:1: column 2 has no name`},
		{"long column name", "hr," + strings.Repeat("n", 65) + ",y\n1,2,0\n", CSVOptions{}, `site.csv:1: column 2: name longer than 64 bytes`},
		{"too many columns", strings.Repeat("c,", MaxColumns) + "y\n", CSVOptions{}, `site.csv:1: 1001 columns, more than the limit of 1000`},
		{"only a label", "y\n1\n", CSVOptions{}, `site.csv:1: no feature columns besides the label "y"`},
		{"unknown policy", hdr + "80,97,0\n", CSVOptions{Missing: "impute"}, `site.csv: unknown missing-value policy "impute"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := tc.opts
			switch opts.Label {
			case "":
				opts.Label = "y"
			case "-":
				opts.Label = ""
			}
			tab, _, err := ParseCSV(strings.NewReader(tc.in), "site.csv", opts)
			if err == nil {
				t.Fatalf("no error; parsed %+v", tab)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
		})
	}
}

func TestParseCSVDrop(t *testing.T) {
	in := "hr,spo2,note,y\n" +
		"80,97,ok,0\n" + // kept
		"?,97,ok,1\n" + // missing feature
		"81,NaN,ok,0\n" + // NaN
		"82,abc,ok,1\n" + // not a number
		"83,inf,ok,0\n" + // infinite
		"84,95,ok,\n" + // missing label
		"85,94,,1\n" + // empty but unselected column: kept
		"86,NA,ok,NA\n" + // several problems in one row count once
		"87,93,ok,1\n" // kept
	tab, dropped, err := ParseCSV(strings.NewReader(in), "site.csv", CSVOptions{Label: "y", Columns: []string{"hr", "spo2"}, Missing: "drop"})
	if err != nil {
		t.Fatal(err)
	}
	want := Table{Features: []string{"hr", "spo2"}, X: [][]float64{{80, 97}, {85, 94}, {87, 93}}, Y: []float64{0, 1, 1}}
	if wantDropped := (Dropped{Rows: 6, Line: 3, Column: "hr"}); dropped != wantDropped || !reflect.DeepEqual(tab, want) {
		t.Fatalf("got %+v, dropped %+v; want %+v, dropped %+v", tab, dropped, want, wantDropped)
	}
}

// FuzzParseCSV checks that no input makes ParseCSV panic, and that what it
// accepts is a well-formed table.
func FuzzParseCSV(f *testing.F) {
	for _, seed := range []string{
		"hr,spo2,y\n80,97,0\n120,88,1\n",
		"hr,spo2,y\n80,?,0\n120,88,1.0\n",
		"\uFEFFa,\"b,c\",y\r\n1,2,0\r\n\r\n3,4,1\r\n",
		"a,b,y\n1,2\n",
		"a,a,y\n1,2,0\n",
		"a,y\n1e999,0\n-0,1\n0x1p-2,0\n",
		"y,a\n2,1\n",
		"a,b,y\n\"1\n\",2,1\n",
		"",
	} {
		f.Add(seed, false, uint8(0))
		f.Add(seed, true, uint8(1))
	}
	f.Fuzz(func(t *testing.T, in string, drop bool, sel uint8) {
		opts := CSVOptions{Label: "y"}
		if drop {
			opts.Missing = "drop"
		}
		if sel%2 == 1 {
			opts.Columns = []string{"b", "a"}
		}
		tab, dropped, err := ParseCSV(strings.NewReader(in), "fuzz.csv", opts)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "fuzz.csv") {
				t.Fatalf("error %q does not name the file", err)
			}
			return
		}
		if dropped.Rows < 0 || (!drop && dropped != (Dropped{})) || (dropped.Rows > 0) != (dropped.Line > 1 && dropped.Column != "") {
			t.Fatalf("dropped %+v with Missing %q", dropped, opts.Missing)
		}
		if tab.Len() == 0 || len(tab.Features) == 0 {
			t.Fatalf("accepted an empty table: %+v", tab)
		}
		checkTable(t, tab, tab.Features)
		if slices.Contains(tab.Features, "y") {
			t.Fatal("the label is also a feature")
		}
	})
}

// ---- Heart Disease ----

// heartDir locates the shared data next to the repository (tests run in
// the package directory), skipping the test when it is absent.
func heartDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join("..", "..", "..", "shared", "data", "heart-disease")
	if _, err := os.Stat(dir); err != nil {
		t.Skipf("UCI Heart Disease files not available: %v", err)
	}
	return dir
}

func TestHeartDisease(t *testing.T) {
	dir := heartDir(t)
	sites, err := HeartDisease(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		name               string
		train, test, cases int
	}{
		{"cleveland", 199, 104, 139},
		{"hungary", 172, 89, 98},
		{"switzerland", 30, 16, 45},
		{"va", 85, 45, 101},
	}
	if len(sites) != len(want) {
		t.Fatalf("%d sites, want %d", len(sites), len(want))
	}
	features := []string{"age", "sex", "trestbps", "chol", "fbs", "thalach", "exang", "oldpeak",
		"cp_2", "cp_3", "cp_4", "restecg_1", "restecg_2"}
	for i, w := range want {
		s := sites[i]
		if s.Name != w.name || s.Train.Len() != w.train || s.Test.Len() != w.test {
			t.Errorf("site %d: %s train/test %d/%d, want %s %d/%d", i, s.Name, s.Train.Len(), s.Test.Len(), w.name, w.train, w.test)
		}
		checkTable(t, s.Train, features)
		checkTable(t, s.Test, features)
		if cases := int(math.Round(prevalence(s.Train, s.Test) * float64(w.train+w.test))); cases != w.cases {
			t.Errorf("%s: %d patients with num > 0, want %d", s.Name, cases, w.cases)
		}
		// Stratified: the test set holds the centre's share of cases, to
		// within the one row that rounding leaves.
		testCases := prevalence(s.Test) * float64(w.test)
		if share := float64(w.cases) * float64(w.test) / float64(w.train+w.test); math.Abs(testCases-share) > 1 {
			t.Errorf("%s: %.0f cases among %d test rows, want %.1f (stratified)", s.Name, testCases, w.test, share)
		}
		for _, row := range append(s.Train.X, s.Test.X...) {
			if cp := row[8] + row[9] + row[10]; cp > 1 {
				t.Fatalf("%s: row %v has more than one chest-pain type", s.Name, row)
			}
			if ecg := row[11] + row[12]; ecg > 1 {
				t.Fatalf("%s: row %v has more than one ECG result", s.Name, row)
			}
		}
	}
	// The first Cleveland patient, 63,1,1,145,233,1,2,150,0,2.3,... num 0:
	// cp 1 and restecg 2.
	first := []float64{63, 1, 145, 233, 1, 150, 0, 2.3, 0, 0, 0, 0, 1}
	found := false
	for _, row := range append(sites[0].Train.X, sites[0].Test.X...) {
		found = found || slices.Equal(row, first)
	}
	if !found {
		t.Errorf("the first Cleveland patient %v is not in the table", first)
	}

	again, err := HeartDisease(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(sites, again) {
		t.Error("the same seed gave different splits")
	}
	other, err := HeartDisease(dir, 2)
	if err != nil {
		t.Fatal(err)
	}
	for i := range sites {
		if other[i].Test.Len() != sites[i].Test.Len() {
			t.Errorf("%s: %d test rows with seed 2, %d with seed 1", sites[i].Name, other[i].Test.Len(), sites[i].Test.Len())
		}
		if reflect.DeepEqual(other[i].Test, sites[i].Test) {
			t.Errorf("%s: seeds 1 and 2 gave the same test set", sites[i].Name)
		}
	}
}

func TestHeartDiseaseRejectsOtherFiles(t *testing.T) {
	src := heartDir(t)
	dir := t.TempDir()
	for _, f := range HeartDiseaseFiles {
		data, err := os.ReadFile(filepath.Join(src, f.File))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, f.File), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := HeartDisease(dir, 1); err != nil {
		t.Fatalf("a faithful copy: %v", err)
	}

	va := filepath.Join(dir, "processed.va.data")
	data, _ := os.ReadFile(va)
	if err := os.WriteFile(va, bytes.Replace(data, []byte("63,"), []byte("64,"), 1), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := HeartDisease(dir, 1)
	if err == nil || !strings.Contains(err.Error(), va+": SHA-256 is ") || !strings.Contains(err.Error(), HeartDiseaseFiles[3].SHA256) {
		t.Errorf("altered file: error %v, want a checksum mismatch naming %s", err, va)
	}

	if err := os.WriteFile(va, make([]byte, heartMaxFileBytes+1), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := HeartDisease(dir, 1); err == nil || !strings.Contains(err.Error(), va+": 1048577 bytes, more than") {
		t.Errorf("oversized file: error %v", err)
	}

	if err := os.Remove(va); err != nil {
		t.Fatal(err)
	}
	_, err = HeartDisease(dir, 1)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "fetch-heart-disease.sh") {
		t.Errorf("missing file: error %v, want not-exist and a hint", err)
	}
}

func TestParseHeartDisease(t *testing.T) {
	const good = "63,1,1,145,233,1,2,150,0,2.3,3,0,6,0\n"
	tab, err := parseHeartDisease(strings.NewReader(good+
		"67,1,4,160,?,0,2,108,1,1.5,2,3,3,2\n"+ // missing chol: dropped
		"60,0,3,130,200,0,0,140,0,0,?,?,?,1\n"), "x.data") // missing slope/ca/thal only: kept
	if err != nil {
		t.Fatal(err)
	}
	want := [][]float64{{63, 1, 145, 233, 1, 150, 0, 2.3, 0, 0, 0, 0, 1}, {60, 0, 130, 200, 0, 140, 0, 0, 0, 1, 0, 0, 0}}
	if !reflect.DeepEqual(tab.X, want) || !slices.Equal(tab.Y, []float64{0, 1}) {
		t.Errorf("got %v %v, want %v [0 1]", tab.X, tab.Y, want)
	}

	for _, tc := range []struct{ in, want string }{
		{good + "63,1,1,145\n", "x.data:2: 4 fields, want the 14 columns age,sex,"},
		{good + "63,1,1,145,abc,1,2,150,0,2.3,3,0,6,0\n", `x.data:2: column "chol": "abc" is not a finite number or '?'`},
		{good + "63,1,1,145,inf,1,2,150,0,2.3,3,0,6,0\n", `x.data:2: column "chol": "inf" is not a finite`},
		{good + "63,1,5,145,233,1,2,150,0,2.3,3,0,6,0\n", `x.data:2: column "cp": 5 is not a chest-pain type`},
		{good + "63,1,1,145,233,1,3,150,0,2.3,3,0,6,0\n", `x.data:2: column "restecg": 3 is not a resting ECG result`},
		{good + "63,1,1,145,233,1,2,150,0,2.3,3,0,6,0.5\n", `x.data:2: column "num": 0.5 is not a diagnosis`},
		{good + "63,1,1,\"145,233,1,2,150,0,2.3,3,0,6,0\n", `x.data:2: extraneous or missing "`},
	} {
		if _, err := parseHeartDisease(strings.NewReader(tc.in), "x.data"); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want %q", tc.in, err, tc.want)
		}
	}
}

// The region's scaling from summed statistics vectors equals the pooled
// statistics, also when every sum carries an error the size the
// encryption leaves at the bound; a constant feature gets std 1; a high
// part that is not an integer or a vector of the wrong shape is an error.
func TestRegionScalingMatchesPooled(t *testing.T) {
	sites, _, err := Synthetic(SyntheticConfig{Hospitals: 3, Seed: 5, CaseMixShift: 1})
	if err != nil {
		t.Fatal(err)
	}
	const scale, bound = 1000, 2e6
	var pooled Stats
	var sum []float64
	var count uint64
	for _, s := range sites {
		st := s.Train.Stats()
		pooled = pooled.Add(st)
		v := st.Vector(scale, bound)
		if len(v) != jobspec.StatsVectorLen(len(s.Train.Features)) {
			t.Fatalf("vector of %d values for %d features", len(v), len(s.Train.Features))
		}
		if sum == nil {
			sum = make([]float64, len(v))
		}
		for i := range v {
			sum[i] += v[i]
		}
		count += uint64(s.Train.Len())
	}
	wm, ws := pooled.MeanStd()
	// The encryption's error at this bound is about 0.01 per value at
	// most; 0.02 on every value, alternating in sign, is worse than it
	// ever is.
	noisy := slices.Clone(sum)
	for i := range noisy {
		noisy[i] += 0.02 * float64(1-2*(i%2))
	}
	for _, tc := range []struct {
		name string
		sum  []float64
		tol  float64 // in standard deviations
	}{{"exact", sum, 1e-9}, {"with twice the encryption's error", noisy, 1e-3}} {
		name := tc.name
		mean, std, err := jobspec.RegionScaling(tc.sum, count, scale, bound)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for j := range mean {
			if math.Abs(mean[j]-wm[j]) > tc.tol*ws[j] || math.Abs(std[j]-ws[j]) > tc.tol*ws[j] {
				t.Errorf("%s: %s: %g±%g, pooled %g±%g", name, sites[0].Train.Features[j], mean[j], std[j], wm[j], ws[j])
			}
		}
	}

	constant := Stats{Count: 2, Sum: []float64{4}, SumSq: []float64{8}}.Vector(1, 10)
	if _, s, err := jobspec.RegionScaling(constant, 2, 1, 10); err != nil || s[0] != 1 {
		t.Errorf("constant feature: std %v, err %v; want 1", s, err)
	}
	off := slices.Clone(sum)
	off[0] += 0.4
	if _, _, err := jobspec.RegionScaling(off, count, scale, bound); err == nil || !strings.Contains(err.Error(), "not an integer") {
		t.Errorf("integer part off by 0.4: err = %v", err)
	}
	if _, _, err := jobspec.RegionScaling([]float64{1, 2, 3}, 2, 1, 10); err == nil {
		t.Error("vector of 3 values accepted")
	}
	if _, _, err := jobspec.RegionScaling(sum, 0, scale, bound); err == nil {
		t.Error("zero count accepted")
	}
}
