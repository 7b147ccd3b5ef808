package he

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	mrand "math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/ring"
	"github.com/tuneinsight/lattigo/v5/ring/ringqp"
	"github.com/tuneinsight/lattigo/v5/utils/sampling"
)

// Update is an encrypted vector: either one hospital's clipped, quantized
// update or the coordinator's sum of several. Field g of the packed
// plaintext (see Params for the layout) holds quantized value g; the
// sample count's digits and the party field follow the values; the rest
// is zero.
//
// Only the c0 half of each ciphertext is kept: c0 = −a·s_i + q_E·m + e
// under the contributor's own key s_i, where a is expanded from the
// region's ceremony seed, the binding and the ciphertext's index
// (uniformA), so every party can recompute it and nobody, the coordinator
// included, chooses it. A sum of such updates decrypts only with the keys
// of exactly the parties whose updates it holds.
//
// An Update is immutable once made.
type Update struct {
	p       Params
	shape   Shape
	parties int // updates summed into this one (1 for a fresh update)
	clip    float64
	binding [32]byte
	c0      []ring.Poly // one per ciphertext, NTT domain, all of Q
}

// Len is the number of values.
func (u *Update) Len() int { return u.shape.Len }

// Shape is the update's shape.
func (u *Update) Shape() Shape { return u.shape }

// Clip is the L2 clip norm the values were scaled by.
func (u *Update) Clip() float64 { return u.clip }

// Binding is the caller's 32-byte binding (job, round, model hash).
func (u *Update) Binding() [32]byte { return u.binding }

// NumCiphertexts is the number of ciphertexts the update spans.
func (u *Update) NumCiphertexts() int { return len(u.c0) }

// Parties is the number of updates summed into this one, as claimed by
// whoever made it (1 for a fresh update). It is not authenticated: a
// decryptor should check the round's manifest, not this number.
func (u *Update) Parties() int { return u.parties }

// newCiphertext allocates a ciphertext over all of Q, NTT domain.
func (p Params) newCiphertext() *rlwe.Ciphertext {
	return rlwe.NewCiphertext(p.rlwe, 1, p.level())
}

// aPRNG is the source of the public polynomial a of ciphertext index of
// every update bound to binding in the region of the given ceremony seed
// hash: a PRNG keyed by an injective encoding of the three (fixed lengths).
func aPRNG(seedHash, binding [32]byte, index int) *sampling.KeyedPRNG {
	key := make([]byte, 0, 32+32+4)
	key = append(key, seedHash[:]...)
	key = append(key, binding[:]...)
	key = binary.LittleEndian.AppendUint32(key, uint32(index))
	return keyedPRNG(labelA, key)
}

// checkA refuses an a with a zero NTT coefficient modulo any prime: it is
// not invertible, and a·s would then not hide s in that slot. (A uniform a
// has one with probability about N/q, 2^-47 here.)
func checkA(a ring.Poly, index int) error {
	for _, row := range a.Coeffs {
		if slices.Contains(row, 0) {
			return fmt.Errorf("%w: the public polynomial of ciphertext %d is not invertible", ErrInvalidValue, index)
		}
	}
	return nil
}

// uniformA expands a from aPRNG exactly as lattigo's secret-key encryptor
// reads its c1 (TestUniformAMatchesEncryptor holds the two together).
func (p Params) uniformA(seedHash, binding [32]byte, index int) ring.Poly {
	a := p.rlwe.RingQ().NewPoly()
	ringqp.NewUniformSampler(aPRNG(seedHash, binding, index), *p.rlwe.RingQP()).AtLevel(p.level(), -1).Read(ringqp.Poly{Q: a})
	return a
}

func (p Params) updateFixed() int { return headerLen + tagLen + 4 + 4 + 4 + 8 + 32 }

// UpdateSize is the exact encoded size in bytes of an update of shape s,
// or 0 if p or s is invalid.
func UpdateSize(p Params, s Shape) int {
	if p.Validate() != nil || s.check() != nil {
		return 0
	}
	return p.updateFixed() + p.Ciphertexts(s)*p.packedPolyLen()
}

// MarshalBinary encodes the update; the result has UpdateSize bytes.
func (u *Update) MarshalBinary() ([]byte, error) {
	w := newWriter(UpdateSize(u.p, u.shape), kindUpdate)
	u.writeHeader(w)
	for _, c := range u.c0 {
		w.packed(u.p, c)
	}
	return w.b, nil
}

func (u *Update) writeHeader(w *writer) {
	w.tag(u.p)
	w.u32(uint32(u.shape.Len))
	w.u32(uint32(u.shape.Wide))
	w.u32(uint32(u.parties))
	w.f64(u.clip)
	w.bytes(u.binding[:])
}

// Digest is the SHA-256 of the update's encoding. It is computed by
// streaming the encoding, without materializing it.
func (u *Update) Digest() [32]byte {
	h := sha256.New() // Write on a hash.Hash never fails
	w := newWriter(u.p.updateFixed(), kindUpdate)
	u.writeHeader(w)
	h.Write(w.b)
	buf := &writer{b: make([]byte, 0, u.p.packedPolyLen())}
	for _, c := range u.c0 {
		buf.b = buf.b[:0]
		buf.packed(u.p, c)
		h.Write(buf.b)
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// UnmarshalUpdate decodes an update of shape s made under p. The byte
// length is checked against UpdateSize before anything is allocated.
func UnmarshalUpdate(p Params, s Shape, b []byte) (*Update, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := s.check(); err != nil {
		return nil, err
	}
	want := UpdateSize(p, s)
	if len(b) != want {
		return nil, fmt.Errorf("%w: update of %d bytes, %v needs %d", ErrMalformed, len(b), s, want)
	}
	r, err := newReader(b, kindUpdate, want)
	if err != nil {
		return nil, err
	}
	if err := r.tag(p); err != nil {
		return nil, err
	}
	u := &Update{p: p, shape: Shape{Len: int(r.u32()), Wide: int(r.u32())}, parties: int(r.u32()), clip: r.f64()}
	copy(u.binding[:], r.bytes(32))
	switch {
	case u.shape != s:
		return nil, fmt.Errorf("%w: update holds %v, want %v", ErrWrongShape, u.shape, s)
	case u.parties < 1 || u.parties > p.MaxParties():
		return nil, fmt.Errorf("%w: update: parties %d not in 1..%d", ErrMalformed, u.parties, p.MaxParties())
	case checkClip(u.clip) != nil:
		return nil, fmt.Errorf("%w: update: clip %g", ErrMalformed, u.clip)
	}
	u.c0 = make([]ring.Poly, p.Ciphertexts(s))
	for i := range u.c0 {
		u.c0[i] = p.rlwe.RingQ().NewPoly()
		if err := r.packed(p, u.c0[i], fmt.Sprintf("ciphertext %d", i)); err != nil {
			return nil, err
		}
	}
	return u, r.done()
}

func checkClip(clip float64) error {
	if !(clip > 0) || math.IsInf(clip, 0) || math.IsInf(1/clip, 0) {
		return fmt.Errorf("%w: clip norm %g must be positive and finite", ErrInvalidValue, clip)
	}
	return nil
}

// Encrypt clips values to L2 norm clip, scales them by 1/clip (so every
// value is in [-1, 1]), quantizes each with unbiased stochastic rounding,
// to QuantBits bits or, for the last wide values, to WideBits (exact
// enough for counts and sums that must survive rounding), appends count as
// b-bit digits and the party field, packs the fields (see Params) and
// encrypts the lot under the party's own key, with the public a of every
// ciphertext expanded from the ceremony seed and binding (uniformA). NaN
// or Inf anywhere is an error.
//
// The rounding draws on this process's own randomness (crypto/rand),
// never on anything public: rounding that others could predict would
// tell them which way each value was rounded.
//
// Two different vectors encrypted under the same binding give away their
// difference (the a·s_i terms cancel): the caller must encrypt once per
// binding and resend the same bytes, never re-encrypt.
func (pa *Party) Encrypt(values []float64, wide int, count uint64, clip float64, binding [32]byte) (*Update, error) {
	p := pa.p
	if !pa.ready {
		return nil, fmt.Errorf("%w: the key ceremony is not complete", ErrNotReady)
	}
	shape := Shape{Len: len(values), Wide: wide}
	if err := shape.check(); err != nil {
		return nil, err
	}
	if count > MaxCount {
		return nil, fmt.Errorf("%w: sample count %d exceeds %d", ErrInvalidValue, count, MaxCount)
	}
	if err := checkClip(clip); err != nil {
		return nil, err
	}
	norm, err := l2Norm(values)
	if err != nil {
		return nil, err
	}
	factor := 1 / max(norm, clip)
	narrow := shape.narrow()
	// The wide values' digits, drawn here once: there are few of them.
	rng := newRoundingRNG()
	wideFields := make([]uint64, 0, wide*wideDigits)
	for _, x := range values[narrow:] {
		v := p.quantizeWide(x*factor, rng)
		for range wideDigits {
			wideFields = append(wideFields, v&(uint64(1)<<p.quantBits-1))
			v >>= p.quantBits
		}
	}
	u := &Update{p: p, shape: shape, parties: 1, clip: clip, binding: binding}
	countAt := narrow + len(wideFields)
	scale := p.quantMax() * factor
	err = pa.seal(u, func() func(int) uint64 {
		rng := newRoundingRNG()
		return func(g int) uint64 {
			switch {
			case g < narrow:
				return p.quantize(values[g]*scale, rng)
			case g < countAt:
				return wideFields[g-narrow]
			case g < countAt+p.countDigits:
				k := g - countAt
				return (count >> (k * p.quantBits)) & (uint64(1)<<p.quantBits - 1)
			case g == countAt+p.countDigits:
				return 1
			}
			return 0
		}
	})
	if err != nil {
		return nil, err
	}
	return u, nil
}

// newRoundingRNG is a generator for stochastic rounding seeded from this
// process's own randomness.
func newRoundingRNG() *mrand.Rand {
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		panic(err) // crypto/rand.Read never fails (Go 1.24+)
	}
	return mrand.New(mrand.NewChaCha8(seed))
}

// seal packs and encrypts u's ciphertexts in parallel, field g of the
// plaintext being field(g) for a field function made once per worker.
func (pa *Party) seal(u *Update, newField func() func(int) uint64) error {
	p := pa.p
	seed := seedHash(pa.seed[:])
	u.c0 = make([]ring.Poly, p.Ciphertexts(u.shape))
	return parallel(len(u.c0), func() func(int) error {
		field := newField()
		enc := rlwe.NewEncryptor(p.rlwe, pa.sk)
		pt := rlwe.NewPlaintext(p.rlwe, p.level())
		return func(i int) error {
			p.pack(pt.Value, i, field)
			p.rlwe.RingQ().NTT(pt.Value, pt.Value)
			pt.IsNTT = true
			ct := p.newCiphertext()
			if err := enc.WithPRNG(aPRNG(seed, u.binding, i)).Encrypt(pt, ct); err != nil {
				return fmt.Errorf("he: encrypting ciphertext %d: %w", i, err)
			}
			if err := checkA(ct.Value[1], i); err != nil {
				return err
			}
			u.c0[i] = ct.Value[0]
			return nil
		}
	})
}

// quantize maps y in [-quantMax, quantMax] (a scaled value) to its field:
// the nearest integer below or above, chosen with probability equal to the
// distance (so the expected field is exactly y), plus the offset
// 2^(b-1), which makes every field of a fresh update an integer in
// [1, 2^b-1].
func (p Params) quantize(y float64, rng *mrand.Rand) uint64 {
	m := p.quantMax()
	y = min(m, max(-m, y))
	f := math.Floor(y)
	if rng.Float64() < y-f {
		f++
	}
	return uint64(int64(f) + int64(1)<<(p.quantBits-1))
}

// quantizeWide maps x in [-1, 1] to a wide value: x·wideMax rounded
// stochastically, plus the offset 2^(WideBits-1), an integer in
// [1, 2^WideBits-1] carried in wideDigits fields of b bits, low first.
func (p Params) quantizeWide(x float64, rng *mrand.Rand) uint64 {
	m := p.wideMax()
	y := min(m, max(-m, x*m))
	f := math.Floor(y)
	if rng.Float64() < y-f {
		f++
	}
	return uint64(int64(f) + int64(1)<<(p.wideBits()-1))
}

// pack writes ciphertext i's plaintext, in the coefficient domain: for
// every coefficient c and message prime j, m_j = Σ_f field(g)·2^(w·f) over
// the fieldsPerPrime consecutive fields g that (c, j) carries, times q_E
// modulo q_j; zero modulo the noise prime.
func (p Params) pack(pt ring.Poly, i int, field func(int) uint64) {
	n := 1 << p.logN
	w := p.fieldBits()
	q := p.rlwe.Q()
	perCoeff := p.fieldsPerCoeff()
	for c := range n {
		g := (i*n + c) * perCoeff
		for j := range p.messagePrimes {
			var m uint64
			for f := range p.fieldsPerPrime {
				m |= field(g) << (w * f)
				g++
			}
			pt.Coeffs[j][c] = ring.BRed(m, p.deltaMod[j], q[j], p.bred[j])
		}
		pt.Coeffs[p.messagePrimes][c] = 0
	}
}

// l2Norm returns the L2 norm of v without overflow, or an error on NaN/Inf.
func l2Norm(v []float64) (float64, error) {
	var m float64
	for i, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return 0, fmt.Errorf("%w: value %d is %g", ErrInvalidValue, i, x)
		}
		m = max(m, math.Abs(x))
	}
	if m == 0 {
		return 0, nil
	}
	var s float64
	for _, x := range v {
		y := x / m
		s += y * y
	}
	return m * math.Sqrt(s), nil
}

// parallel runs work for indices 0..n-1 on up to GOMAXPROCS goroutines.
// newWorker is called once per goroutine to build its state (lattigo's
// encoders, encryptors and protocols are not safe for concurrent use). The
// first error stops the remaining work.
func parallel(n int, newWorker func() func(int) error) error {
	workers := min(runtime.GOMAXPROCS(0), n)
	var (
		next    atomic.Int64
		failed  atomic.Bool
		errOnce sync.Once
		first   error
		wg      sync.WaitGroup
	)
	for range workers {
		wg.Go(func() {
			do := newWorker()
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := do(i); err != nil {
					errOnce.Do(func() { first = err })
					failed.Store(true)
				}
			}
		})
	}
	wg.Wait()
	return first
}

// Aggregator sums updates as they arrive. Memory is one update, whatever
// the number of updates; the order of Add calls does not matter (addition
// mod Q is commutative). It is safe for concurrent use.
type Aggregator struct {
	mu      sync.Mutex
	p       Params
	shape   Shape
	clip    float64
	binding [32]byte
	err     error // invalid construction arguments, reported by Add
	acc     *Update
	added   int
}

// NewAggregator returns an empty aggregate for updates of shape s with the
// given clip norm and binding. Invalid arguments are reported by the first
// Add.
func NewAggregator(p Params, s Shape, clip float64, binding [32]byte) *Aggregator {
	a := &Aggregator{p: p, shape: s, clip: clip, binding: binding}
	switch {
	case p.Validate() != nil:
		a.err = p.Validate()
	case s.check() != nil:
		a.err = s.check()
	default:
		a.err = checkClip(clip)
	}
	return a
}

// Add folds u into the aggregate. It refuses an update made under other
// parameters, of another length, clip norm or binding, or one that would
// take the aggregate beyond MaxParties; the aggregate is then unchanged.
func (a *Aggregator) Add(u *Update) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	switch {
	case a.err != nil:
		return a.err
	case u == nil:
		return fmt.Errorf("%w: nil update", ErrInvalidValue)
	case u.p.tag != a.p.tag:
		return fmt.Errorf("%w: update made under %q, aggregate uses %q", ErrWrongParams, u.p.name, a.p.name)
	case u.shape != a.shape:
		return fmt.Errorf("%w: update of %v, aggregate of %v", ErrWrongShape, u.shape, a.shape)
	case u.clip != a.clip:
		return fmt.Errorf("%w: update clip norm %g, aggregate uses %g", ErrBindingMismatch, u.clip, a.clip)
	case u.binding != a.binding:
		return fmt.Errorf("%w: update bound to another job, round or model", ErrBindingMismatch)
	case len(u.c0) != a.p.Ciphertexts(a.shape):
		return fmt.Errorf("%w: update of %d ciphertexts", ErrWrongShape, len(u.c0))
	}
	if a.acc != nil && a.acc.parties+u.parties > a.p.MaxParties() {
		return fmt.Errorf("%w: %d + %d exceeds %d", ErrTooManyParties, a.acc.parties, u.parties, a.p.MaxParties())
	}
	if a.acc == nil {
		a.acc = &Update{p: a.p, shape: a.shape, clip: a.clip, binding: a.binding, c0: make([]ring.Poly, len(u.c0))}
		for i := range a.acc.c0 {
			a.acc.c0[i] = a.p.rlwe.RingQ().NewPoly()
		}
	}
	ringQ := a.p.rlwe.RingQ()
	_ = parallel(len(u.c0), func() func(int) error {
		return func(i int) error {
			ringQ.Add(a.acc.c0[i], u.c0[i], a.acc.c0[i])
			return nil
		}
	})
	a.acc.parties += u.parties
	a.added++
	return nil
}

// Len is the number of updates added.
func (a *Aggregator) Len() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.added
}

// Result returns the aggregate so far as an Update (a copy: the aggregator
// can keep going).
func (a *Aggregator) Result() (*Update, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil {
		return nil, a.err
	}
	if a.acc == nil {
		return nil, ErrEmptyAggregate
	}
	return a.acc.clone(), nil
}

func (u *Update) clone() *Update {
	c := *u
	c.c0 = make([]ring.Poly, len(u.c0))
	for i, p := range u.c0 {
		c.c0[i] = *p.CopyNew()
	}
	return &c
}
