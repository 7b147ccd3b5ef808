package dataset

import (
	"slices"
	"testing"
)

// The reference outputs below are NumPy's and scikit-learn's own.

func TestMT19937MatchesReference(t *testing.T) {
	// The first outputs of MT19937 seeded with 5489, from the authors'
	// reference implementation (and the C++ standard's std::mt19937).
	m := newMT19937(5489)
	for i, want := range []uint32{3499211612, 581869302, 3890346734, 3586334585, 545404204} {
		if got := m.uint32(); got != want {
			t.Fatalf("output %d: %d, want %d", i, got, want)
		}
	}
	// The 10000th output, the standard's check value: it spans many twists.
	m = newMT19937(5489)
	var last uint32
	for range 10000 {
		last = m.uint32()
	}
	if last != 4123659995 {
		t.Errorf("10000th output %d, want 4123659995", last)
	}
}

func TestPermutationMatchesNumPy(t *testing.T) {
	// np.random.RandomState(seed).permutation(n)
	for _, tc := range []struct {
		seed uint32
		n    int
		want []int
	}{
		{42, 10, []int{8, 1, 5, 0, 7, 2, 9, 4, 3, 6}},
		{0, 10, []int{2, 8, 4, 9, 1, 6, 7, 3, 0, 5}},
		{7, 1, []int{0}},
		{7, 0, []int{}},
	} {
		if got := newMT19937(tc.seed).permutation(tc.n); !slices.Equal(got, tc.want) {
			t.Errorf("seed %d, n %d: %v, want %v", tc.seed, tc.n, got, tc.want)
		}
	}
}

func TestTrainTestSplitMatchesScikitLearn(t *testing.T) {
	// train_test_split(np.arange(10).reshape((5, 2)), range(5),
	// test_size=0.33, random_state=42), the example of its documentation.
	train, test, err := trainTestSplit(make([]float64, 5), 3, 2, 42, false)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(train, []int{2, 0, 3}) || !slices.Equal(test, []int{1, 4}) {
		t.Errorf("unstratified: train %v test %v, want [2 0 3] [1 4]", train, test)
	}
	// The first split of StratifiedShuffleSplit(test_size=0.5,
	// random_state=0) on y = [0 0 0 1 1 1], its documentation's example:
	// both classes tie for the leftover row, twice.
	train, test, err = trainTestSplit([]float64{0, 0, 0, 1, 1, 1}, 3, 3, 0, true)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(train, []int{5, 2, 3}) || !slices.Equal(test, []int{4, 1, 0}) {
		t.Errorf("stratified: train %v test %v, want [5 2 3] [4 1 0]", train, test)
	}
}

func TestTrainTestSplitStratifies(t *testing.T) {
	y := make([]float64, 303)
	for i := range 139 {
		y[i*2%303] = 1
	}
	train, test, err := trainTestSplit(y, 199, 104, 43, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(train) != 199 || len(test) != 104 {
		t.Fatalf("%d/%d rows, want 199/104", len(train), len(test))
	}
	all := slices.Concat(train, test)
	slices.Sort(all)
	if len(slices.Compact(all)) != 303 {
		t.Fatal("train and test overlap")
	}
	cases := 0
	for _, i := range test {
		cases += int(y[i])
	}
	// 104·139/303 = 47.7: the remainder 0.7 beats 0.3, so 48 cases.
	if cases != 48 {
		t.Errorf("%d cases in the test set, want 48", cases)
	}
}

func TestTrainTestSplitRefuses(t *testing.T) {
	for _, tc := range []struct {
		name        string
		y           []float64
		train, test int
		stratify    bool
	}{
		{"too many rows", make([]float64, 5), 4, 2, false},
		{"negative", make([]float64, 5), -1, 2, false},
		{"class of one", []float64{0, 0, 0, 1}, 2, 2, true},
		{"test smaller than the classes", []float64{0, 0, 1, 1, 1}, 4, 1, true},
	} {
		if _, _, err := trainTestSplit(tc.y, tc.train, tc.test, 1, tc.stratify); err == nil {
			t.Errorf("%s: no error", tc.name)
		}
	}
}
