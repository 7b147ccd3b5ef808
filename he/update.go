package he

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math"
	"math/bits"
	mrand "math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/tuneinsight/lattigo/v5/ring"
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

	digest atomic.Pointer[[32]byte] // Digest, once computed (the update is immutable)
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

// uniformA is the public polynomial a of ciphertext index of every update
// bound to binding in the region of the given ceremony seed hash, in the
// NTT domain: AES-256-CTR keyed by a hash of an injective encoding of the
// three (fixed lengths), read 8 bytes per residue, masked to the prime's
// bit width and rejected unless in [1, q). So every party expands the same
// a, nobody chooses it, and it is invertible (no zero NTT residue that
// would leave a slot of c0 without a·s).
func (p Params) uniformA(seedHash, binding [32]byte, index int) ring.Poly {
	key := make([]byte, 0, len(labelA)+1+32+32+4)
	key = append(key, labelA+"\x00"...)
	key = append(key, seedHash[:]...)
	key = append(key, binding[:]...)
	key = binary.LittleEndian.AppendUint32(key, uint32(index))
	w := newKeyWords()
	w.reset(keyedStream(key))
	a := p.rlwe.RingQ().NewPoly()
	for j, q := range p.rlwe.Q() {
		mask := uint64(1)<<bits.Len64(q) - 1
		for c := range a.Coeffs[j] {
			for {
				if v := w.next() & mask; v != 0 && v < q {
					a.Coeffs[j][c] = v
					break
				}
			}
		}
	}
	return a
}

// keyWords reads a keyed stream as 64-bit little-endian words, a buffer
// of keystream at a time: the draws of uniformA and of the fingerprint's
// challenge vectors.
type keyWords struct {
	stream cipher.Stream
	buf    *[8 << 10]byte
	pos    int // next unread byte of buf
}

func newKeyWords() *keyWords { return &keyWords{buf: new([8 << 10]byte)} }

// reset starts reading stream, keeping the buffer.
func (w *keyWords) reset(stream cipher.Stream) { w.stream, w.pos = stream, len(w.buf) }

// next is the stream's next word (it inlines: refill is out of line).
func (w *keyWords) next() uint64 {
	if w.pos == len(w.buf) {
		w.refill()
	}
	w.pos += 8
	return binary.LittleEndian.Uint64(w.buf[w.pos-8:])
}

//go:noinline
func (w *keyWords) refill() {
	clear(w.buf[:])
	w.stream.XORKeyStream(w.buf[:], w.buf[:])
	w.pos = 0
}

// keyedStream is AES-256-CTR keyed by the SHA-256 of key (an injective
// encoding of what the stream is for), from a zero IV: a public stream
// anyone holding key expands alike.
func keyedStream(key []byte) cipher.Stream {
	k := sha256.Sum256(key)
	block, err := aes.NewCipher(k[:])
	if err != nil {
		panic(err) // a 32-byte key is always valid
	}
	return cipher.NewCTR(block, make([]byte, aes.BlockSize))
}

// addGaussian adds to x (coefficient domain, all of Q) a rounded Gaussian
// of standard deviation sigma per coefficient, redrawn beyond bound, from
// rng.
func (p Params) addGaussian(x ring.Poly, sigma, bound float64, rng *mrand.Rand) {
	q := p.rlwe.Q()
	for c := range x.Coeffs[0] {
		var e float64
		for {
			e = math.Round(rng.NormFloat64() * sigma)
			if math.Abs(e) <= bound {
				break
			}
		}
		for j, qj := range q {
			v := x.Coeffs[j][c]
			if e >= 0 {
				v += uint64(e)
			} else {
				v += qj - uint64(-e)
			}
			if v >= qj {
				v -= qj
			}
			x.Coeffs[j][c] = v
		}
	}
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

// MarshalBinary encodes the update; the result has UpdateSize bytes. It
// keeps the digest of what it wrote, so Digest after it costs nothing.
func (u *Update) MarshalBinary() ([]byte, error) {
	w := newWriter(UpdateSize(u.p, u.shape), kindUpdate)
	u.writeHeader(w)
	w.packedPolys(u.p, u.c0)
	if u.digest.Load() == nil {
		d := sha256.Sum256(w.b)
		u.digest.Store(&d)
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

// Digest is the SHA-256 of the update's encoding. It is computed once, by
// streaming the encoding without materializing it (the encoding is
// canonical: a decoded update re-encodes to the same bytes).
func (u *Update) Digest() [32]byte {
	if d := u.digest.Load(); d != nil {
		return *d
	}
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
	u.digest.Store(&d)
	return d
}

// UnmarshalUpdate decodes an update of shape s made under p. The byte
// length is checked against UpdateSize before anything is allocated.
func UnmarshalUpdate(p Params, s Shape, b []byte) (*Update, error) {
	r, h, err := p.openUpdate(s, b)
	if err != nil {
		return nil, err
	}
	u := &Update{p: p, shape: h.shape, parties: h.parties, clip: h.clip, binding: h.binding}
	u.c0 = make([]ring.Poly, p.Ciphertexts(s))
	if err := r.packedPolys(p, u.c0, "ciphertext"); err != nil {
		return nil, err
	}
	return u, r.done()
}

// updateHeader is what an update's encoding says before its ciphertexts.
type updateHeader struct {
	p       Params
	shape   Shape
	parties int
	clip    float64
	binding [32]byte
}

func (u *Update) header() updateHeader {
	return updateHeader{p: u.p, shape: u.shape, parties: u.parties, clip: u.clip, binding: u.binding}
}

// Encoded is an update's encoding, its header checked (OpenUpdate) but not
// decoded: what a coordinator folds straight from the bytes it received
// (Aggregator.AddEncoded, which checks the residues). It keeps the
// caller's bytes, which must not change afterwards.
type Encoded struct {
	updateHeader
	raw  []byte // the whole encoding
	body []byte // the ciphertexts, packed: the tail of raw
}

// OpenUpdate checks the parameters, the shape, the exact length and the
// header of the encoding of an update of shape s, not its residues:
// Aggregator.AddEncoded checks those as it folds them, in the same pass.
func OpenUpdate(p Params, s Shape, b []byte) (*Encoded, error) {
	r, h, err := p.openUpdate(s, b)
	if err != nil {
		return nil, err
	}
	return &Encoded{updateHeader: h, raw: b, body: r.b}, nil
}

// Digest is the SHA-256 of the encoding, as Update.Digest (for an update
// that decodes, the encoding is canonical).
func (e *Encoded) Digest() [32]byte { return sha256.Sum256(e.raw) }

// Binding is the update's 32-byte binding.
func (e *Encoded) Binding() [32]byte { return e.binding }

// Clip is the L2 clip norm the values were scaled by.
func (e *Encoded) Clip() float64 { return e.clip }

// Parties is the number of updates the encoding claims to hold (see
// Update.Parties: not authenticated).
func (e *Encoded) Parties() int { return e.parties }

// openUpdate checks the parameters, the shape and the exact length of the
// encoding of an update of shape s, then reads and checks its header; the
// reader is left at the ciphertexts.
func (p Params) openUpdate(s Shape, b []byte) (*reader, updateHeader, error) {
	if err := p.Validate(); err != nil {
		return nil, updateHeader{}, err
	}
	if err := s.check(); err != nil {
		return nil, updateHeader{}, err
	}
	want := UpdateSize(p, s)
	if len(b) != want {
		return nil, updateHeader{}, fmt.Errorf("%w: update of %d bytes, %v needs %d", ErrMalformed, len(b), s, want)
	}
	r, err := newReader(b, kindUpdate, want)
	if err != nil {
		return nil, updateHeader{}, err
	}
	h, err := p.readUpdateHeader(r, s)
	return r, h, err
}

// readUpdateHeader reads and checks the header of an update of shape s.
func (p Params) readUpdateHeader(r *reader, s Shape) (updateHeader, error) {
	if err := r.tag(p); err != nil {
		return updateHeader{}, err
	}
	h := updateHeader{p: p, shape: Shape{Len: int(r.u32()), Wide: int(r.u32())}, parties: int(r.u32()), clip: r.f64()}
	copy(h.binding[:], r.bytes(32))
	switch {
	case h.shape != s:
		return h, fmt.Errorf("%w: update holds %v, want %v", ErrWrongShape, h.shape, s)
	case h.parties < 1 || h.parties > p.MaxParties():
		return h, fmt.Errorf("%w: update: parties %d not in 1..%d", ErrMalformed, h.parties, p.MaxParties())
	case checkClip(h.clip) != nil:
		return h, fmt.Errorf("%w: update: clip %g", ErrMalformed, h.clip)
	}
	return h, nil
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
	rng := newRoundingSource()
	wideFields := make([]uint64, 0, wide*wideDigits)
	for _, x := range values[narrow:] {
		v := quantize(x*factor*p.wideMax(), p.wideMax(), rng)
		for range wideDigits {
			wideFields = append(wideFields, v&(uint64(1)<<p.quantBits-1))
			v >>= p.quantBits
		}
	}
	u := &Update{p: p, shape: shape, parties: 1, clip: clip, binding: binding}
	countAt := narrow + len(wideFields)
	qm := p.quantMax()
	scale := qm * factor
	err = pa.seal(u, func() func([]uint64, int) {
		rng := newRoundingSource()
		return func(dst []uint64, first int) {
			n := max(0, min(len(dst), narrow-first))
			for k, x := range values[first : first+n] {
				dst[k] = quantize(x*scale, qm, rng)
			}
			for k := n; k < len(dst); k++ {
				switch g := first + k; {
				case g < countAt:
					dst[k] = wideFields[g-narrow]
				case g < countAt+p.countDigits:
					d := g - countAt
					dst[k] = (count >> (d * p.quantBits)) & (uint64(1)<<p.quantBits - 1)
				case g == countAt+p.countDigits:
					dst[k] = 1
				default:
					dst[k] = 0
				}
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return u, nil
}

// newRoundingSource is the randomness of stochastic rounding and noise:
// ChaCha8, cryptographically strong, seeded from this process's own
// randomness.
func newRoundingSource() *mrand.ChaCha8 {
	var seed [32]byte
	if _, err := rand.Read(seed[:]); err != nil {
		panic(err) // crypto/rand.Read never fails (Go 1.24+)
	}
	return mrand.NewChaCha8(seed)
}

// seal packs and encrypts u's ciphertexts in parallel: each worker makes
// a fill function once, which writes the fields first, first+1, ... of
// the plaintext into dst. c0 = NTT(q_E·m + e) − a·s_i, with e a rounded
// Gaussian of the parameters' σ (3.2, cut at its bound) from this
// process's randomness.
func (pa *Party) seal(u *Update, newFill func() func(dst []uint64, first int)) error {
	p := pa.p
	seed := seedHash(pa.seed[:])
	xe := p.rlwe.Xe().(ring.DiscreteGaussian)
	u.c0 = make([]ring.Poly, p.Ciphertexts(u.shape))
	return parallel(len(u.c0), func() func(int) error {
		fill := newFill()
		fields := make([]uint64, p.SlotsPerCiphertext())
		noise := mrand.New(newRoundingSource())
		ringQ := p.rlwe.RingQ()
		return func(i int) error {
			fill(fields, i*len(fields))
			c0 := ringQ.NewPoly()
			p.pack(c0, fields)
			p.addGaussian(c0, xe.Sigma, xe.Bound, noise)
			ringQ.NTT(c0, c0)
			ringQ.MulCoeffsMontgomeryThenSub(p.uniformA(seed, u.binding, i), pa.sk.Value.Q, c0)
			u.c0[i] = c0
			return nil
		}
	})
}

// quantize maps y in [-m, m], a value scaled by m (quantMax for a field,
// wideMax for a wide value), to the nearest integer below or above, chosen
// with probability equal to the distance (so its expectation is y, to
// 2^-53), plus the offset m+1: an integer in [1, 2m+1]. A wide value
// travels as wideDigits fields of b bits, low first.
func quantize(y, m float64, rng *mrand.ChaCha8) uint64 {
	t := y + (m + 1) // in [1, 2m+1] once clamped: truncation is floor
	if !(t >= 1) {
		t = 1
	} else if t > 2*m+1 {
		t = 2*m + 1
	}
	f := int64(t)
	if rng.Uint64()>>11 < uint64((t-float64(f))*(1<<53)) {
		f++
	}
	return uint64(f)
}

// pack writes a ciphertext's plaintext from its fields, in the
// coefficient domain: for every coefficient c and message prime j,
// m_j = Σ_f field·2^(w·f) over the fieldsPerPrime consecutive fields that
// (c, j) carries, times q_E modulo q_j; zero modulo the noise prime.
func (p Params) pack(pt ring.Poly, fields []uint64) {
	w := p.fieldBits()
	q := p.rlwe.Q()
	g := 0
	for c := range pt.Coeffs[0] {
		for j := range p.messagePrimes {
			var m uint64
			for f := range p.fieldsPerPrime {
				m |= fields[g] << (w * f)
				g++
			}
			pt.Coeffs[j][c] = ring.BRed(m, p.deltaMod[j], q[j], p.bred[j])
		}
		pt.Coeffs[p.messagePrimes][c] = 0
	}
}

// l2Norm returns the L2 norm of v without overflow, or an error on NaN/Inf.
// One pass sums the squares; only a sum that overflows or underflows
// (values beyond 1e150 or below 1e-150) takes a second, scaled pass.
func l2Norm(v []float64) (float64, error) {
	var s, m float64
	for _, x := range v {
		s += x * x
		if a := math.Abs(x); a > m {
			m = a
		}
	}
	if math.IsNaN(s) || math.IsInf(m, 0) {
		for i, x := range v {
			if math.IsNaN(x) || math.IsInf(x, 0) {
				return 0, fmt.Errorf("%w: value %d is %g", ErrInvalidValue, i, x)
			}
		}
	}
	if m == 0 {
		return 0, nil
	}
	if !math.IsInf(s, 0) && s > 1e-290 {
		return math.Sqrt(s), nil
	}
	s = 0
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
	if u == nil {
		return fmt.Errorf("%w: nil update", ErrInvalidValue)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.admit(u.header()); err != nil {
		return err
	}
	if len(u.c0) != a.p.Ciphertexts(a.shape) {
		return fmt.Errorf("%w: update of %d ciphertexts", ErrWrongShape, len(u.c0))
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

// AddEncoded folds an update still in its encoding (OpenUpdate) into the
// aggregate, checking and adding each residue into the running sum as it
// is unpacked, in one pass: the aggregate's memory is the running sum and
// the caller's bytes, never a second decoded update. The checks are Add's,
// and UnmarshalUpdate's on the residues: an update with a residue not
// below its prime is refused, and the aggregate is then exactly as it was
// (what was added of it is subtracted again).
func (a *Aggregator) AddEncoded(e *Encoded) error {
	if e == nil {
		return fmt.Errorf("%w: nil update", ErrInvalidValue)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if err := a.admit(e.updateHeader); err != nil {
		return err
	}
	done := make([]int, len(a.acc.c0))
	if err := unpackPolys(a.p, kindUpdate, e.body, a.acc.c0, "ciphertext", unpackAdd, done); err != nil {
		undoPolys(a.p, e.body, a.acc.c0, done)
		return err
	}
	a.acc.parties += e.parties
	a.added++
	return nil
}

// SubtractEncoded takes out of the aggregate an update AddEncoded added
// (the caller could not record it), leaving the aggregate as it was before.
func (a *Aggregator) SubtractEncoded(e *Encoded) error {
	if e == nil {
		return fmt.Errorf("%w: nil update", ErrInvalidValue)
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.acc == nil || a.added == 0 || e.p.tag != a.p.tag || e.shape != a.shape || e.binding != a.binding || e.parties > a.acc.parties {
		return fmt.Errorf("%w: an update this aggregate does not hold", ErrInvalidValue)
	}
	// Every residue was checked when the update was added: only bytes
	// changed since then fail here, and the sum is then unusable.
	if err := unpackPolys(a.p, kindUpdate, e.body, a.acc.c0, "ciphertext", unpackSub, nil); err != nil {
		a.err = fmt.Errorf("%w: an encoded update changed after it was added: %v", ErrMalformed, err)
		return a.err
	}
	a.acc.parties -= e.parties
	a.added--
	return nil
}

// admit checks an update's header against the aggregate and makes the
// running sum on the first one.
func (a *Aggregator) admit(h updateHeader) error {
	switch {
	case a.err != nil:
		return a.err
	case h.p.tag != a.p.tag:
		return fmt.Errorf("%w: update made under %q, aggregate uses %q", ErrWrongParams, h.p.name, a.p.name)
	case h.shape != a.shape:
		return fmt.Errorf("%w: update of %v, aggregate of %v", ErrWrongShape, h.shape, a.shape)
	case h.clip != a.clip:
		return fmt.Errorf("%w: update clip norm %g, aggregate uses %g", ErrBindingMismatch, h.clip, a.clip)
	case h.binding != a.binding:
		return fmt.Errorf("%w: update bound to another job, round or model", ErrBindingMismatch)
	case a.acc != nil && a.acc.parties+h.parties > a.p.MaxParties():
		return fmt.Errorf("%w: %d + %d exceeds %d", ErrTooManyParties, a.acc.parties, h.parties, a.p.MaxParties())
	}
	if a.acc == nil {
		a.acc = &Update{p: a.p, shape: a.shape, clip: a.clip, binding: a.binding, c0: make([]ring.Poly, a.p.Ciphertexts(a.shape))}
		for i := range a.acc.c0 {
			a.acc.c0[i] = a.p.rlwe.RingQ().NewPoly()
		}
	}
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
	c := &Update{p: u.p, shape: u.shape, parties: u.parties, clip: u.clip, binding: u.binding, c0: make([]ring.Poly, len(u.c0))}
	for i, p := range u.c0 {
		c.c0[i] = *p.CopyNew()
	}
	return c
}
