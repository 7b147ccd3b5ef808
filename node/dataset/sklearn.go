package dataset

import (
	"fmt"
	"math"
	"slices"
)

// This file reproduces scikit-learn's train_test_split bit for bit, so that
// the Fed-Heart-Disease centres are split exactly as FLamby splits them
// (random_state 43). That takes NumPy's legacy RandomState: the MT19937
// generator with its integer seeding, and its Fisher–Yates shuffle drawing
// each position by masked rejection sampling.

// mt19937 is NumPy's RandomState generator: MT19937 (Matsumoto and
// Nishimura, 1998) seeded as RandomState(seed) seeds it.
type mt19937 struct {
	key [624]uint32
	pos int
}

func newMT19937(seed uint32) *mt19937 {
	m := &mt19937{pos: len(mt19937{}.key)}
	m.key[0] = seed
	for i := 1; i < len(m.key); i++ {
		prev := m.key[i-1]
		m.key[i] = 1812433253*(prev^(prev>>30)) + uint32(i)
	}
	return m
}

// uint32 returns the next tempered output.
func (m *mt19937) uint32() uint32 {
	const n, shift = 624, 397
	if m.pos == n {
		for i := range n {
			y := m.key[i]&0x80000000 | m.key[(i+1)%n]&0x7fffffff
			next := m.key[(i+shift)%n] ^ y>>1
			if y&1 != 0 {
				next ^= 0x9908b0df
			}
			m.key[i] = next
		}
		m.pos = 0
	}
	y := m.key[m.pos]
	m.pos++
	y ^= y >> 11
	y ^= y << 7 & 0x9d2c5680
	y ^= y << 15 & 0xefc60000
	y ^= y >> 18
	return y
}

// interval returns a uniform integer in [0, max] as NumPy's random_interval
// does for max < 2³²: the smallest all-ones mask covering max, and
// rejection of masked draws above max.
func (m *mt19937) interval(max uint32) uint32 {
	if max == 0 {
		return 0
	}
	mask := max
	mask |= mask >> 1
	mask |= mask >> 2
	mask |= mask >> 4
	mask |= mask >> 8
	mask |= mask >> 16
	for {
		if v := m.uint32() & mask; v <= max {
			return v
		}
	}
}

// permutation is RandomState.permutation(n): 0..n-1 shuffled from the last
// position down.
func (m *mt19937) permutation(n int) []int {
	p := make([]int, n)
	for i := range p {
		p[i] = i
	}
	m.shuffle(p)
	return p
}

// shuffle is RandomState.shuffle on a one-dimensional array.
func (m *mt19937) shuffle(p []int) {
	for i := len(p) - 1; i >= 1; i-- {
		j := m.interval(uint32(i))
		p[i], p[j] = p[j], p[i]
	}
}

// trainTestSplit returns the row indices scikit-learn's
// train_test_split(range(len(y)), train_size=nTrain, test_size=nTest,
// random_state=seed, stratify=y if stratify else None) returns, in its
// order. y holds class labels (any float values, compared exactly).
func trainTestSplit(y []float64, nTrain, nTest int, seed uint32, stratify bool) (train, test []int, err error) {
	n := len(y)
	if nTrain < 0 || nTest < 0 || nTrain+nTest > n {
		return nil, nil, fmt.Errorf("split of %d rows into %d train and %d test", n, nTrain, nTest)
	}
	rng := newMT19937(seed)
	if !stratify {
		// ShuffleSplit: the test rows first, then the train rows.
		perm := rng.permutation(n)
		return perm[nTest : nTest+nTrain], perm[:nTest], nil
	}

	// StratifiedShuffleSplit. The classes in sorted order, each with its
	// rows in ascending order (np.unique, then a stable argsort).
	classes := slices.Clone(y)
	slices.Sort(classes)
	classes = slices.Compact(classes)
	rows := make([][]int, len(classes))
	for i, v := range y {
		c, _ := slices.BinarySearch(classes, v)
		rows[c] = append(rows[c], i)
	}
	counts := make([]int, len(classes))
	for c := range rows {
		counts[c] = len(rows[c])
		if counts[c] < 2 {
			return nil, nil, fmt.Errorf("stratified split: class %v has %d row, fewer than 2", classes[c], counts[c])
		}
	}
	if nTrain < len(classes) || nTest < len(classes) {
		return nil, nil, fmt.Errorf("stratified split: %d train and %d test rows for %d classes", nTrain, nTest, len(classes))
	}
	trainPer := approximateMode(counts, nTrain, rng)
	remaining := make([]int, len(counts))
	for c := range counts {
		remaining[c] = counts[c] - trainPer[c]
	}
	testPer := approximateMode(remaining, nTest, rng)
	for c := range rows {
		perm := rng.permutation(counts[c])
		for k, p := range perm {
			switch {
			case k < trainPer[c]:
				train = append(train, rows[c][p])
			case k < trainPer[c]+testPer[c]:
				test = append(test, rows[c][p])
			}
		}
	}
	rng.shuffle(train)
	rng.shuffle(test)
	return train, test, nil
}

// approximateMode is scikit-learn's _approximate_mode: how many of draws
// rows each class gets, in proportion to counts, with the rows that
// flooring leaves over going to the largest remainders; classes tied on a
// remainder are chosen by rng.choice(replace=False), which is a
// permutation's prefix.
func approximateMode(counts []int, draws int, rng *mt19937) []int {
	total := 0
	for _, c := range counts {
		total += c
	}
	floored := make([]int, len(counts))
	remainder := make([]float64, len(counts))
	need := float64(draws)
	for c, k := range counts {
		continuous := float64(k) / float64(total) * float64(draws)
		f := math.Floor(continuous)
		floored[c] = int(f)
		remainder[c] = continuous - f
		need -= f
	}
	toAdd := int(need)
	values := slices.Clone(remainder)
	slices.Sort(values)
	values = slices.Compact(values)
	slices.Reverse(values)
	for _, v := range values {
		if toAdd <= 0 {
			break
		}
		var tied []int
		for c, r := range remainder {
			if r == v {
				tied = append(tied, c)
			}
		}
		now := min(len(tied), toAdd)
		for _, k := range rng.permutation(len(tied))[:now] {
			floored[tied[k]]++
		}
		toAdd -= now
	}
	return floored
}
