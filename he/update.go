package he

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/ring"
	"github.com/tuneinsight/lattigo/v5/ring/ringqp"
	"github.com/tuneinsight/lattigo/v5/schemes/ckks"
	"github.com/tuneinsight/lattigo/v5/utils/sampling"
)

// Update is an encrypted vector: either one hospital's clipped update or
// the coordinator's sum of several. Coefficient g of the packed plaintext
// (ciphertext g/N, coefficient g%N) holds value g divided by the clip norm;
// the sample count's digits follow the values; the rest is zero.
//
// Only the c0 half of each ciphertext is kept: c0 = −a·s_i + m + e under
// the contributor's own key s_i, where a is expanded from the region's
// ceremony seed, the binding and the ciphertext's index (uniformA), so
// every party can recompute it and nobody, the coordinator included,
// chooses it. A sum of such updates decrypts only with the keys of exactly
// the parties whose updates it holds.
//
// An Update is immutable once made.
type Update struct {
	p       Params
	length  int
	parties int // updates summed into this one (1 for a fresh update)
	clip    float64
	binding [32]byte
	c0      []ring.Poly // one per ciphertext, NTT domain
}

// Len is the number of values.
func (u *Update) Len() int { return u.length }

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

// newCiphertext allocates a level-0 ciphertext with the metadata lattigo's
// encryptor gives a coefficient-encoded plaintext at the region scale.
func (p Params) newCiphertext() *rlwe.Ciphertext {
	ct := ckks.NewCiphertext(p.ckks, 1, 0)
	p.setMeta(ct.MetaData)
	return ct
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
	a := p.ckks.RingQ().AtLevel(0).NewPoly()
	ringqp.NewUniformSampler(aPRNG(seedHash, binding, index), *p.ckks.GetRLWEParameters().RingQP()).AtLevel(0, -1).Read(ringqp.Poly{Q: a})
	return a
}

func (p Params) newPlaintext() *rlwe.Plaintext {
	pt := ckks.NewPlaintext(p.ckks, 0)
	p.setMeta(pt.MetaData)
	return pt
}

func (p Params) setMeta(m *rlwe.MetaData) {
	m.IsBatched = false // coefficient encoding: one value per coefficient
	m.IsNTT = p.ckks.NTTFlag()
	m.Scale = rlwe.NewScale(p.scale())
	m.LogDimensions = p.ckks.LogMaxDimensions()
}

func (p Params) updateFixed() int { return headerLen + tagLen + 4 + 4 + 8 + 32 }

// UpdateSize is the exact encoded size in bytes of an update of length
// values, or 0 if p or length is invalid.
func UpdateSize(p Params, length int) int {
	if p.Validate() != nil || length < 1 || length > MaxLength {
		return 0
	}
	return p.updateFixed() + p.Ciphertexts(length)*p.polyQLen()
}

// MarshalBinary encodes the update; the result has UpdateSize bytes.
func (u *Update) MarshalBinary() ([]byte, error) {
	w := newWriter(UpdateSize(u.p, u.length), kindUpdate)
	u.writeHeader(w)
	for _, c := range u.c0 {
		w.poly(c)
	}
	return w.b, nil
}

func (u *Update) writeHeader(w *writer) {
	w.tag(u.p)
	w.u32(uint32(u.length))
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
	buf := &writer{b: make([]byte, 0, u.p.polyQLen())}
	for _, c := range u.c0 {
		buf.b = buf.b[:0]
		buf.poly(c)
		h.Write(buf.b)
	}
	var d [32]byte
	h.Sum(d[:0])
	return d
}

// UnmarshalUpdate decodes an update of length values made under p. The
// byte length is checked against UpdateSize before anything is allocated.
func UnmarshalUpdate(p Params, length int, b []byte) (*Update, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if length < 1 || length > MaxLength {
		return nil, fmt.Errorf("%w: update length %d not in 1..%d", ErrWrongShape, length, MaxLength)
	}
	want := UpdateSize(p, length)
	if len(b) != want {
		return nil, fmt.Errorf("%w: update of %d bytes, %d values need %d", ErrMalformed, len(b), length, want)
	}
	r, err := newReader(b, kindUpdate, want)
	if err != nil {
		return nil, err
	}
	if err := r.tag(p); err != nil {
		return nil, err
	}
	u := &Update{p: p, length: int(r.u32()), parties: int(r.u32()), clip: r.f64()}
	copy(u.binding[:], r.bytes(32))
	switch {
	case u.length != length:
		return nil, fmt.Errorf("%w: update holds %d values, want %d", ErrWrongShape, u.length, length)
	case u.parties < 1 || u.parties > p.maxParties:
		return nil, fmt.Errorf("%w: update: parties %d not in 1..%d", ErrMalformed, u.parties, p.maxParties)
	case checkClip(u.clip) != nil:
		return nil, fmt.Errorf("%w: update: clip %g", ErrMalformed, u.clip)
	}
	q := p.ckks.GetRLWEParameters().Q()
	u.c0 = make([]ring.Poly, p.Ciphertexts(length))
	for i := range u.c0 {
		u.c0[i] = p.ckks.RingQ().AtLevel(0).NewPoly()
		if err := r.poly(u.c0[i], q, fmt.Sprintf("ciphertext %d", i)); err != nil {
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
// coefficient is in [-1, 1]), appends count as base-2^10 digits and
// encrypts the lot under the party's own key, with the public a of every
// ciphertext expanded from the ceremony seed and binding (uniformA). NaN or
// Inf anywhere is an error: one out-of-range coefficient would corrupt
// other values of the aggregate.
//
// Two different vectors encrypted under the same binding give away their
// difference (the a·s_i terms cancel): the caller must encrypt once per
// binding and resend the same bytes, never re-encrypt.
func (pa *Party) Encrypt(values []float64, count uint64, clip float64, binding [32]byte) (*Update, error) {
	p := pa.p
	if !pa.ready {
		return nil, fmt.Errorf("%w: the key ceremony is not complete", ErrNotReady)
	}
	if len(values) < 1 || len(values) > MaxLength {
		return nil, fmt.Errorf("%w: %d values, want 1..%d", ErrWrongShape, len(values), MaxLength)
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

	n := p.SlotsPerCiphertext()
	digitBase := float64(uint64(1) << p.countDigitBits)
	seed := seedHash(pa.seed[:])
	u := &Update{p: p, length: len(values), parties: 1, clip: clip, binding: binding,
		c0: make([]ring.Poly, p.Ciphertexts(len(values)))}
	err = parallel(len(u.c0), func() func(int) error {
		enc := ckks.NewEncoder(p.ckks, p.encPrec)
		base := rlwe.NewEncryptor(p.ckks, pa.sk)
		pt := p.newPlaintext()
		buf := make([]float64, n)
		return func(i int) error {
			for j := range buf {
				g := i*n + j
				switch {
				case g < len(values):
					buf[j] = min(1, max(-1, values[g]*factor))
				case g < len(values)+p.countDigits:
					k := g - len(values)
					d := (count >> (k * p.countDigitBits)) & (uint64(1)<<p.countDigitBits - 1)
					buf[j] = float64(d) / digitBase
				default:
					buf[j] = 0
				}
			}
			if err := enc.Encode(buf, pt); err != nil {
				return fmt.Errorf("he: encoding ciphertext %d: %w", i, err)
			}
			ct := p.newCiphertext()
			if err := base.WithPRNG(aPRNG(seed, binding, i)).Encrypt(pt, ct); err != nil {
				return fmt.Errorf("he: encrypting ciphertext %d: %w", i, err)
			}
			if err := checkA(ct.Value[1], i); err != nil {
				return err
			}
			u.c0[i] = ct.Value[0]
			return nil
		}
	})
	if err != nil {
		return nil, err
	}
	return u, nil
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
	length  int
	clip    float64
	binding [32]byte
	err     error // invalid construction arguments, reported by Add
	acc     *Update
	added   int
}

// NewAggregator returns an empty aggregate for updates of length values
// with the given clip norm and binding. Invalid arguments are reported by
// the first Add.
func NewAggregator(p Params, length int, clip float64, binding [32]byte) *Aggregator {
	a := &Aggregator{p: p, length: length, clip: clip, binding: binding}
	switch {
	case p.Validate() != nil:
		a.err = p.Validate()
	case length < 1 || length > MaxLength:
		a.err = fmt.Errorf("%w: aggregate length %d not in 1..%d", ErrWrongShape, length, MaxLength)
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
	case u.length != a.length:
		return fmt.Errorf("%w: update of %d values, aggregate of %d", ErrWrongShape, u.length, a.length)
	case u.clip != a.clip:
		return fmt.Errorf("%w: update clip norm %g, aggregate uses %g", ErrBindingMismatch, u.clip, a.clip)
	case u.binding != a.binding:
		return fmt.Errorf("%w: update bound to another job, round or model", ErrBindingMismatch)
	case len(u.c0) != a.p.Ciphertexts(a.length):
		return fmt.Errorf("%w: update of %d ciphertexts", ErrWrongShape, len(u.c0))
	}
	if a.acc != nil && a.acc.parties+u.parties > a.p.maxParties {
		return fmt.Errorf("%w: %d + %d exceeds %d", ErrTooManyParties, a.acc.parties, u.parties, a.p.maxParties)
	}
	if a.acc == nil {
		a.acc = u.clone()
	} else {
		ringQ := a.p.ckks.RingQ().AtLevel(0)
		for i, c := range u.c0 {
			ringQ.Add(a.acc.c0[i], c, a.acc.c0[i])
		}
		a.acc.parties += u.parties
	}
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
