package bench

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"

	"regionfl/he"
)

// Aggregator sums one round's contributions. The benchmark runs every
// experiment through this interface, so that the identical experiment can
// run with the plain sum (Config.PlainReference) and be compared.
type Aggregator interface {
	// Sum returns Σ updates[i] and Σ counts[i]. All updates have the same
	// length, the last wide values of each carried at he's WideBits
	// rather than QuantBits (exact sums: statistics, counts), and every
	// one must have L2 norm ≤ bound: an implementation
	// returns an error wrapping ErrOverBound for one that does not (beyond
	// float rounding), and
	// never clips (the caller clips, explicitly, where the protocol says so).
	Sum(updates [][]float64, wide int, counts []uint64, bound float64) (sum []float64, count uint64, err error)
}

// ErrOverBound is returned for a contribution whose L2 norm exceeds the
// bound it is to be encoded with.
var ErrOverBound = errors.New("bench: contribution exceeds its encoding bound")

// checkContributions validates the arguments of Aggregator.Sum.
func checkContributions(updates [][]float64, counts []uint64, bound float64) error {
	switch {
	case len(updates) == 0:
		return errors.New("bench: no contributions")
	case len(updates) != len(counts):
		return fmt.Errorf("bench: %d updates and %d counts", len(updates), len(counts))
	case !(bound > 0) || math.IsInf(bound, 0):
		return fmt.Errorf("bench: bound %g must be positive and finite", bound)
	}
	for i, u := range updates {
		if len(u) == 0 || len(u) != len(updates[0]) {
			return fmt.Errorf("bench: update %d has %d values, update 0 has %d", i, len(u), len(updates[0]))
		}
		n := norm2(u)
		if math.IsNaN(n) || math.IsInf(n, 0) {
			return fmt.Errorf("bench: update %d is not finite", i)
		}
		if n > bound*(1+boundSlack) {
			return fmt.Errorf("%w: contribution %d has norm %.6g, bound %.6g", ErrOverBound, i, n, bound)
		}
	}
	return nil
}

// boundSlack is the rounding a clip to exactly the bound may leave: a
// vector scaled by bound/norm can come out a few ulps longer than bound.
const boundSlack = 1e-12

// plainSum is the exact reference of the encrypted path: the sum in the
// clear, with the same bound check. It exists for the benchmark's
// encrypted-versus-plain comparison (and its tests) only; the benchmark
// holds every centre's public benchmark data in one process anyway, and
// the coordinator and the nodes have no plaintext path.
type plainSum struct{}

func (plainSum) Sum(updates [][]float64, _ int, counts []uint64, bound float64) ([]float64, uint64, error) {
	if err := checkContributions(updates, counts, bound); err != nil {
		return nil, 0, err
	}
	sum := make([]float64, len(updates[0]))
	var n uint64
	for i, u := range updates {
		for j, v := range u {
			sum[j] += v
		}
		n += counts[i]
	}
	return sum, n, nil
}

func norm2(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x * x
	}
	return math.Sqrt(s)
}

// Encrypted is the real encrypted aggregation of package he, run in one
// process: a t-of-N threshold key ceremony (HPKE-sealed Shamir shares),
// then for every Sum: contribution i is encrypted under party i's own key
// (he.Party.Encrypt, clip = the bound, the count in the reserved digits),
// serialized and parsed as the coordinator would receive it, folded with
// he.Aggregator, and decrypted by t parties' decryption shares (also
// serialized) and he.Combine. Active sets rotate over the parties, so every
// t-subset decrypts in turn. No party's secret ever leaves its he.Party.
//
// A ceremony supports he.Params.MaxDecryptions decryptions (the smudging
// argument); Encrypted runs a new ceremony before exceeding it.
//
// Sum is safe for concurrent use; calls are serialized.
type Encrypted struct {
	mu      sync.Mutex
	p       he.Params
	n, c, t int // parties, committee (points 1..c hold the Shamir shares), threshold
	parties []*he.Party
	used    int    // decryptions under the current key
	counter uint64 // aggregates so far: binding and active-set rotation
	timing  HETiming
}

// HETiming accumulates the time spent in each step of the encrypted path.
// Durations are totals over all aggregates; Aggregates counts them.
type HETiming struct {
	Parties, Threshold int
	Ceremonies         int           // key ceremonies run
	Ceremony           time.Duration // total time of the ceremonies
	Aggregates         int           // Sum calls (one decryption each)
	Updates            int           // contributions encrypted
	Encrypt            time.Duration // he.Party.Encrypt, all contributions
	Transport          time.Duration // marshal + parse of updates and decryption shares
	Aggregate          time.Duration // he.Aggregator.Add and Result
	DecryptShares      time.Duration // t × Party.DecryptionShare
	Combine            time.Duration // he.Combine
	UpdateBytes        int           // size of one encrypted update (last length seen)
	ShareBytes         int           // size of one decryption share
}

// LargeCommittee is the decryption committee of a region beyond
// he.RegionParams' 64 hospitals: the first LargeCommittee parties hold the
// Shamir shares, so each party seals that many shares (not n) and each
// member keeps n.
const LargeCommittee = 5

// NewEncrypted runs a key ceremony for n parties with threshold t under
// the parameter set for n (he.ParamsFor): every party holds Shamir shares
// up to 64 parties, a committee of LargeCommittee beyond.
func NewEncrypted(n, t int) (*Encrypted, error) {
	p, err := he.ParamsFor(n)
	if err != nil || n < 2 {
		return nil, fmt.Errorf("bench: region of %d parties: want 2 to %d", n, he.LargeRegionParams().MaxParties())
	}
	c := n
	if n > he.RegionParams().MaxParties() {
		c = LargeCommittee
	}
	if t < 1 || t > c {
		return nil, fmt.Errorf("bench: threshold %d: want 1 to %d (the parties holding shares)", t, c)
	}
	e := &Encrypted{p: p, n: n, c: c, t: t}
	e.timing.Parties, e.timing.Threshold = n, t
	if err := e.ceremony(); err != nil {
		return nil, err
	}
	return e, nil
}

// ceremony runs the key ceremony: Shamir shares of every party's key sealed
// to each party's HPKE key and opened by it.
func (e *Encrypted) ceremony() error {
	start := time.Now()
	seed := make([]byte, he.SeedLen)
	if _, err := rand.Read(seed); err != nil {
		return fmt.Errorf("bench: ceremony seed: %w", err)
	}
	parties := make([]*he.Party, e.n)
	hpkePriv := make([][]byte, e.c)
	recipients := map[uint32][]byte{}
	for i := range parties {
		pa, err := he.NewCommitteeParty(e.p, uint32(i+1), e.n, e.c, e.t, seed)
		if err != nil {
			return fmt.Errorf("bench: ceremony: %w", err)
		}
		parties[i] = pa
		if i >= e.c {
			continue
		}
		priv, pub, err := he.NewHPKEKey()
		if err != nil {
			return fmt.Errorf("bench: ceremony: %w", err)
		}
		hpkePriv[i] = priv
		recipients[uint32(i+1)] = pub
	}
	inbox := map[uint32][]*he.SealedShare{}
	for _, pa := range parties {
		sealed, err := pa.SealShares(recipients, seed)
		if err != nil {
			return fmt.Errorf("bench: ceremony: %w", err)
		}
		for _, s := range sealed {
			inbox[s.To] = append(inbox[s.To], s)
		}
	}
	for i, pa := range parties[:e.c] {
		if err := pa.OpenShares(hpkePriv[i], inbox[pa.Self()], seed); err != nil {
			return fmt.Errorf("bench: ceremony: party %d: %w", pa.Self(), err)
		}
		clear(hpkePriv[i])
	}
	e.parties, e.used = parties, 0
	e.timing.Ceremonies++
	e.timing.Ceremony += time.Since(start)
	return nil
}

// Sum implements Aggregator on the encrypted path.
func (e *Encrypted) Sum(updates [][]float64, wide int, counts []uint64, bound float64) ([]float64, uint64, error) {
	if err := checkContributions(updates, counts, bound); err != nil {
		return nil, 0, err
	}
	if len(updates) > e.n {
		return nil, 0, fmt.Errorf("bench: %d contributions from a region of %d parties (one each)", len(updates), e.n)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.used >= e.p.MaxDecryptions() {
		if err := e.ceremony(); err != nil {
			return nil, 0, err
		}
	}
	k := e.counter
	e.counter++
	var binding [32]byte
	{
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], k)
		binding = sha256.Sum256(append([]byte("regionfl/bench/aggregate\x00"), b[:]...))
	}
	shape := he.Shape{Len: len(updates[0]), Wide: wide}
	tm := &e.timing

	agg := he.NewAggregator(e.p, shape, bound, binding)
	for i, u := range updates {
		t0 := time.Now()
		ct, err := e.parties[i].Encrypt(u, wide, counts[i], bound, binding)
		if err != nil {
			return nil, 0, fmt.Errorf("bench: encrypting contribution %d: %w", i, err)
		}
		t1 := time.Now()
		raw, err := ct.MarshalBinary()
		if err != nil {
			return nil, 0, err
		}
		got, err := he.UnmarshalUpdate(e.p, shape, raw)
		if err != nil {
			return nil, 0, fmt.Errorf("bench: parsing contribution %d: %w", i, err)
		}
		t2 := time.Now()
		if err := agg.Add(got); err != nil {
			return nil, 0, fmt.Errorf("bench: aggregating contribution %d: %w", i, err)
		}
		t3 := time.Now()
		tm.Encrypt += t1.Sub(t0)
		tm.Transport += t2.Sub(t1)
		tm.Aggregate += t3.Sub(t2)
		tm.Updates++
		tm.UpdateBytes = len(raw)
	}
	t0 := time.Now()
	sum, err := agg.Result()
	if err != nil {
		return nil, 0, err
	}
	tm.Aggregate += time.Since(t0)

	// Active set: t consecutive points, starting one further each time.
	active := make([]uint32, e.t)
	for j := range active {
		active[j] = uint32((int(k%uint64(e.c))+j)%e.c) + 1
	}
	contributors := make([]uint32, len(updates))
	for i := range contributors {
		contributors[i] = uint32(i + 1)
	}
	shares := make([]*he.DecryptionShare, 0, e.t)
	for _, a := range active {
		t0 := time.Now()
		s, err := e.parties[a-1].DecryptionShare(sum, contributors, active)
		if err != nil {
			return nil, 0, fmt.Errorf("bench: decryption share of party %d: %w", a, err)
		}
		t1 := time.Now()
		raw, err := s.MarshalBinary()
		if err != nil {
			return nil, 0, err
		}
		got, err := he.UnmarshalDecryptionShare(e.p, raw)
		if err != nil {
			return nil, 0, fmt.Errorf("bench: parsing decryption share of party %d: %w", a, err)
		}
		tm.DecryptShares += t1.Sub(t0)
		tm.Transport += time.Since(t1)
		tm.ShareBytes = len(raw)
		shares = append(shares, got)
	}
	t0 = time.Now()
	res, err := he.Combine(e.p, sum, shares, e.t)
	if err != nil {
		return nil, 0, fmt.Errorf("bench: combining decryption shares: %w", err)
	}
	tm.Combine += time.Since(t0)
	tm.Aggregates++
	e.used++
	return res.Sum, res.Count, nil
}

// Timing returns the accumulated timings.
func (e *Encrypted) Timing() HETiming {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.timing
}
