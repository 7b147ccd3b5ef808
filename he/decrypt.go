package he

import (
	"fmt"
	"math"
	mrand "math/rand/v2"
	"slices"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/mhe"
	"github.com/tuneinsight/lattigo/v5/ring"
	"github.com/tuneinsight/lattigo/v5/ring/ringqp"
)

// DecryptionShare is one decryptor's share of the threshold decryption of
// the sum of the updates of a contributor set S: for each ciphertext,
// a·λ_j·Σ_{i∈S} f_i(j) + e_j, where λ_j is the decryptor's Lagrange
// weight in the active set, f_i(j) its Shamir share of contributor i's key
// and e_j smudging noise (Params.SmudgingSigma). It names the aggregate's
// digest, S and the active set, so shares made for different aggregates,
// contributor sets or active sets are never combined.
type DecryptionShare struct {
	p            Params
	from         uint32
	aggDigest    [32]byte
	contributors []uint32 // sorted distinct points
	active       []uint32 // sorted, exactly t points
	values       []ring.Poly
}

// From is the Shamir point of the party that made the share.
func (s *DecryptionShare) From() uint32 { return s.from }

// Contributors is the contributor set the share decrypts the sum of.
func (s *DecryptionShare) Contributors() []uint32 { return slices.Clone(s.contributors) }

// checkContributors validates and sorts a contributor set of points in 1..n.
func checkContributors(contributors []uint32, n int) ([]uint32, error) {
	if len(contributors) < 1 || len(contributors) > n {
		return nil, fmt.Errorf("%w: %d contributors, region has %d parties", ErrWrongShape, len(contributors), n)
	}
	return sortedPoints(contributors, n, "contributor")
}

// checkActive validates and sorts an active set of t points in 1..n.
func checkActive(active []uint32, n, t int) ([]uint32, error) {
	if len(active) != t {
		return nil, fmt.Errorf("%w: %d active parties, threshold is %d", ErrWrongShape, len(active), t)
	}
	return sortedPoints(active, n, "active")
}

// sortedPoints returns a sorted copy of points, refusing one outside 1..n
// or listed twice; what names the set in errors.
func sortedPoints(points []uint32, n int, what string) ([]uint32, error) {
	s := slices.Clone(points)
	slices.Sort(s)
	for i, a := range s {
		if a < 1 || int(a) > n {
			return nil, fmt.Errorf("%w: %s point %d not in 1..%d", ErrWrongShape, what, a, n)
		}
		if i > 0 && s[i-1] == a {
			return nil, fmt.Errorf("%w: %s point %d listed twice", ErrWrongShape, what, a)
		}
	}
	return s, nil
}

// DecryptionShare computes the party's share of the decryption of agg, the
// sum of the updates of the given contributors, by the active set (exactly
// t points, this party among them). The aggregate must claim exactly as
// many updates as there are contributors.
//
// If agg is not the sum of exactly those contributors' updates under this
// binding, the combined shares decrypt to noise masked by a·s_i of every
// missing contributor: nobody can fake a contributor. But a share does let
// the coordinator decrypt the sum of whatever set it names once t shares
// are in: the caller decides which sets it serves (enough contributors,
// one set per binding).
func (pa *Party) DecryptionShare(agg *Update, contributors, active []uint32) (*DecryptionShare, error) {
	if !pa.ready {
		return nil, fmt.Errorf("%w: no threshold share yet", ErrNotReady)
	}
	if agg == nil {
		return nil, fmt.Errorf("%w: nil aggregate", ErrInvalidValue)
	}
	if agg.p.tag != pa.p.tag {
		return nil, fmt.Errorf("%w: aggregate", ErrWrongParams)
	}
	if err := pa.checkHolder(); err != nil {
		return nil, err
	}
	set, err := checkActive(active, pa.c, pa.t)
	if err != nil {
		return nil, err
	}
	contrib, err := checkContributors(contributors, pa.n)
	if err != nil {
		return nil, err
	}
	if agg.parties != len(contrib) {
		return nil, fmt.Errorf("%w: aggregate claims %d updates, contributor set has %d", ErrShareMismatch, agg.parties, len(contrib))
	}
	if !slices.Contains(set, pa.self) {
		return nil, fmt.Errorf("%w: party %d is not in the active set %v", ErrWrongShape, pa.self, set)
	}
	p := pa.p
	rp := p.rlwe
	points := make([]mhe.ShamirPublicPoint, len(set))
	for i, a := range set {
		points[i] = mhe.ShamirPublicPoint(a)
	}
	// s'_j = λ_j(set)·Σ_{i∈S} f_i(j), so that Σ_{j∈set} s'_j = Σ_{i∈S} s_i.
	ringQP := rp.RingQP()
	sum := ringQP.NewPoly()
	for _, c := range contrib {
		ringQP.Add(sum, pa.shares[c-1], sum)
	}
	skT := rlwe.NewSecretKey(rp)
	cmb := mhe.NewCombiner(rp, mhe.ShamirPublicPoint(pa.self), points, pa.t)
	err = cmb.GenAdditiveShare(points, mhe.ShamirPublicPoint(pa.self), mhe.ShamirSecretShare{Poly: sum}, skT)
	wipe(sum)
	if err != nil {
		return nil, fmt.Errorf("he: combining threshold share: %w", err)
	}
	// Each share is a·s'_j + e_j with smudging noise e_j (a rounded
	// Gaussian of SmudgingSigma, cut at smudgeTail σ) from this process's
	// randomness.
	sigma := p.SmudgingSigma()
	seed := seedHash(pa.seed[:])
	s := &DecryptionShare{p: p, from: pa.self, aggDigest: agg.Digest(), contributors: contrib, active: set, values: make([]ring.Poly, len(agg.c0))}
	err = parallel(len(agg.c0), func() func(int) error {
		ringQ := p.rlwe.RingQ()
		rng := mrand.New(newRoundingSource())
		return func(i int) error {
			sh := ringQ.NewPoly()
			p.addGaussian(sh, sigma, smudgeTail*sigma, rng)
			ringQ.NTT(sh, sh)
			ringQ.MulCoeffsMontgomeryThenAdd(p.uniformA(seed, agg.binding, i), skT.Value.Q, sh)
			s.values[i] = sh
			return nil
		}
	})
	wipe(skT.Value)
	if err != nil {
		return nil, err
	}
	return s, nil
}

// wipe zeroes key material held in a polynomial, every modulus.
func wipe(p ringqp.Poly) {
	for _, row := range p.Q.Coeffs {
		clear(row)
	}
	for _, row := range p.P.Coeffs {
		clear(row)
	}
}

func (p Params) decryptionShareFixed() int { return headerLen + tagLen + 4 + 32 + 4 + 4 }

// DecryptionShareSize is the exact size of the encoding of a share of an
// aggregate of shape s, for a set of contributors contributors and active
// decryptors.
func DecryptionShareSize(p Params, s Shape, contributors, active int) int {
	return p.decryptionShareFixed() + 4*contributors + 4*active + 4 + p.Ciphertexts(s)*p.packedPolyLen()
}

// MarshalBinary encodes the share.
func (s *DecryptionShare) MarshalBinary() ([]byte, error) {
	size := s.p.decryptionShareFixed() + 4*len(s.contributors) + 4*len(s.active) + 4 + len(s.values)*s.p.packedPolyLen()
	w := newWriter(size, kindDecryptionShare)
	w.tag(s.p)
	w.u32(s.from)
	w.bytes(s.aggDigest[:])
	w.u32(uint32(len(s.contributors)))
	for _, c := range s.contributors {
		w.u32(c)
	}
	w.u32(uint32(len(s.active)))
	for _, a := range s.active {
		w.u32(a)
	}
	w.u32(uint32(len(s.values)))
	w.packedPolys(s.p, s.values)
	return w.b, nil
}

// UnmarshalDecryptionShare decodes a share made under p. The exact length
// follows from the header's counts, which are range-checked first.
func UnmarshalDecryptionShare(p Params, b []byte) (*DecryptionShare, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	r, err := newReader(b, kindDecryptionShare, -1)
	if err != nil {
		return nil, err
	}
	if err := r.need(p.decryptionShareFixed() - headerLen); err != nil {
		return nil, err
	}
	if err := r.tag(p); err != nil {
		return nil, err
	}
	s := &DecryptionShare{p: p, from: r.u32()}
	copy(s.aggDigest[:], r.bytes(32))
	if s.contributors, err = r.points(p.MaxParties(), "contributors"); err != nil {
		return nil, err
	}
	active, err := r.points(p.MaxParties(), "active set")
	if err != nil {
		return nil, err
	}
	s.active = active
	if !slices.Contains(active, s.from) {
		return nil, fmt.Errorf("%w: decryption share: sender %d not in its own active set", ErrMalformed, s.from)
	}
	k := int(r.u32())
	if k < 1 || k > p.Ciphertexts(Shape{Len: MaxLength, Wide: MaxLength}) {
		return nil, fmt.Errorf("%w: decryption share: %d ciphertexts", ErrMalformed, k)
	}
	if len(r.b) != k*p.packedPolyLen() {
		return nil, fmt.Errorf("%w: decryption share: %d bytes of shares, %d ciphertexts need %d", ErrMalformed, len(r.b), k, k*p.packedPolyLen())
	}
	s.values = make([]ring.Poly, k)
	if err := r.packedPolys(p, s.values, "share"); err != nil {
		return nil, err
	}
	return s, r.done()
}

// Result is a decrypted aggregate.
type Result struct {
	// Sum is the sum of the clipped values, in the caller's units (already
	// multiplied back by the clip norm).
	Sum []float64
	// Count is the sum of the sample counts.
	Count uint64

	norm float64 // L2 norm of Sum in clip units
}

// Combine decrypts agg from the decryption shares of the t active parties.
// It refuses fewer than t shares, duplicates, shares for another aggregate,
// contributor set or active set, a contributor set whose size is not the
// aggregate's update count, and senders outside the set; it then checks the decrypted
// plaintext's structure (every field within what the aggregate's updates
// can make, the party field equal to the contributor count, zero padding,
// the norm bound), which catches a tampered share with overwhelming
// probability.
func Combine(p Params, agg *Update, shares []*DecryptionShare, t int) (*Result, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if agg == nil {
		return nil, fmt.Errorf("%w: nil aggregate", ErrInvalidValue)
	}
	if agg.p.tag != p.tag {
		return nil, fmt.Errorf("%w: aggregate", ErrWrongParams)
	}
	if t < 1 || t > p.MaxParties() {
		return nil, fmt.Errorf("%w: threshold %d not in 1..%d", ErrWrongShape, t, p.MaxParties())
	}
	if len(shares) < t {
		return nil, fmt.Errorf("%w: %d decryption shares, threshold is %d", ErrTooFewShares, len(shares), t)
	}
	digest := agg.Digest()
	var set []uint32
	seen := map[uint32]bool{}
	for i, s := range shares {
		switch {
		case s == nil:
			return nil, fmt.Errorf("%w: decryption share %d is nil", ErrInvalidValue, i)
		case s.p.tag != p.tag:
			return nil, fmt.Errorf("%w: decryption share from %d", ErrWrongParams, s.from)
		case s.aggDigest != digest:
			return nil, fmt.Errorf("%w: decryption share from %d is for another aggregate", ErrShareMismatch, s.from)
		case len(s.active) != t:
			return nil, fmt.Errorf("%w: decryption share from %d names %d active parties, threshold is %d", ErrShareMismatch, s.from, len(s.active), t)
		case set != nil && !slices.Equal(set, s.active):
			return nil, fmt.Errorf("%w: decryption share from %d is for active set %v, not %v", ErrShareMismatch, s.from, s.active, set)
		case len(s.contributors) != agg.parties:
			return nil, fmt.Errorf("%w: decryption share from %d is for %d contributors, aggregate holds %d", ErrShareMismatch, s.from, len(s.contributors), agg.parties)
		case i > 0 && !slices.Equal(shares[0].contributors, s.contributors):
			return nil, fmt.Errorf("%w: decryption share from %d is for contributors %v, not %v", ErrShareMismatch, s.from, s.contributors, shares[0].contributors)
		case !slices.Contains(s.active, s.from):
			return nil, fmt.Errorf("%w: decryption share from %d, who is not in the active set %v", ErrShareMismatch, s.from, s.active)
		case seen[s.from]:
			return nil, fmt.Errorf("%w: two decryption shares from %d", ErrDuplicateShare, s.from)
		case len(s.values) != len(agg.c0):
			return nil, fmt.Errorf("%w: decryption share from %d covers %d ciphertexts, aggregate has %d", ErrShareMismatch, s.from, len(s.values), len(agg.c0))
		}
		set = s.active
		seen[s.from] = true
	}
	// Distinct senders inside a set of exactly t: len(shares) == t here.

	res, err := p.decode(agg, func(i int, x ring.Poly) {
		ringQ := p.rlwe.RingQ()
		ringQ.Add(agg.c0[i], shares[0].values[i], x)
		for _, s := range shares[1:] {
			ringQ.Add(x, s.values[i], x)
		}
	})
	if err != nil {
		return nil, err
	}
	// Every quantized update has norm at most 1 + sqrt(length)/quantMax
	// clip units (the clipped vector plus less than one step of rounding
	// per value).
	if bound := float64(agg.parties) * (1 + math.Sqrt(float64(agg.shape.Len))/p.quantMax()); res.norm > bound*(1+1e-9) {
		return nil, fmt.Errorf("%w: decrypted norm %.4g exceeds %d clipped updates: wrong or tampered decryption share", ErrDecrypt, res.norm, agg.parties)
	}
	return res, nil
}

// decode turns the decryptions of agg's ciphertexts into the sum: plain
// writes ciphertext i's c0 + a·Σs (+ noise), NTT domain, into x. It checks
// the plaintext's structure (every field within what agg.parties updates
// can make, the party field equal to agg.parties, zero padding, the norm
// bound, checked by Combine on the norm decode returns), which a wrong or tampered share, or an aggregate that is not the
// sum of exactly its contributors' updates, breaks with overwhelming
// probability.
func (p Params) decode(agg *Update, plain func(i int, x ring.Poly)) (*Result, error) {
	res := &Result{Sum: make([]float64, agg.shape.Len)}
	k := agg.parties
	narrow := agg.shape.narrow()
	wideFields := make([]uint64, wideDigits*agg.shape.Wide)
	countAt := narrow + len(wideFields)
	digits := make([]uint64, p.countDigits)
	var partyField uint64
	norms := make([]float64, len(agg.c0)) // squared norm per ciphertext, in clip units
	maxField := uint64(k) * (uint64(1)<<p.quantBits - 1)
	offset := float64(k) * float64(uint64(1)<<(p.quantBits-1))
	n := 1 << p.logN

	err := parallel(len(agg.c0), func() func(int) error {
		ringQ := p.rlwe.RingQ()
		x := ringQ.NewPoly()
		fields := make([]uint64, p.fieldsPerCoeff())
		return func(i int) error {
			plain(i, x)
			ringQ.INTT(x, x)
			var sq float64
			for c := range n {
				g := (i*n + c) * len(fields)
				if !p.unpack(x, c, fields) {
					return fmt.Errorf("%w: coefficient %d decodes beyond its fields: wrong or tampered decryption share", ErrDecrypt, i*n+c)
				}
				for _, v := range fields {
					switch {
					case v > maxField:
						return fmt.Errorf("%w: field %d above what %d updates make: wrong or tampered decryption share", ErrDecrypt, g, k)
					case g < narrow:
						if v < uint64(k) {
							return fmt.Errorf("%w: value %d out of range: wrong or tampered decryption share", ErrDecrypt, g)
						}
						y := (float64(v) - offset) / p.quantMax()
						res.Sum[g] = y * agg.clip
						sq += y * y
					case g < countAt:
						wideFields[g-narrow] = v
					case g < countAt+p.countDigits:
						digits[g-countAt] = v
					case g == countAt+p.countDigits:
						partyField = v
					case v != 0:
						return fmt.Errorf("%w: padding field %d is not zero: wrong or tampered decryption share", ErrDecrypt, g)
					}
					g++
				}
			}
			norms[i] = sq
			return nil
		}
	})
	if err != nil {
		return nil, err
	}
	// A wide value's digit sums, recombined: below 2^(h+WideBits) <= 2^63.
	wideOffset := int64(k) << (p.wideBits() - 1)
	for w := range agg.shape.Wide {
		var v uint64
		for d := wideDigits - 1; d >= 0; d-- {
			v = v<<p.quantBits + wideFields[w*wideDigits+d]
		}
		y := float64(int64(v)-wideOffset) / p.wideMax()
		res.Sum[narrow+w] = y * agg.clip
		res.norm += y * y
	}
	if partyField != uint64(k) {
		return nil, fmt.Errorf("%w: the sum holds %d updates, the contributor set %d: wrong or tampered decryption share, or an aggregate of other updates", ErrDecrypt, partyField, k)
	}
	for _, v := range norms {
		res.norm += v
	}
	res.norm = math.Sqrt(res.norm)
	for d, v := range digits {
		res.Count += v << (d * p.quantBits)
	}
	return res, nil
}

// unpack reads the fields of coefficient c of a decrypted plaintext x
// (coefficient domain) into fields: the noise E is x's residue modulo the
// noise prime, centred; then m_j = (x_j - E)·q_E^-1 mod q_j for every
// message prime, split into its fields. It reports false if some m_j does
// not fit its fields (only noise beyond q_E/2, a wrong share, does that).
func (p Params) unpack(x ring.Poly, c int, fields []uint64) bool {
	q := p.rlwe.Q()
	qE := q[p.messagePrimes]
	e := x.Coeffs[p.messagePrimes][c]
	negative := e > qE/2
	if negative {
		e = qE - e
	}
	w := p.fieldBits()
	mask := uint64(1)<<w - 1
	f := 0
	for j := range p.messagePrimes {
		qj := q[j]
		em := e % qj
		r := x.Coeffs[j][c]
		if negative {
			r += em // x_j + |E|; both below q_j < 2^61: no overflow
		} else {
			r += qj - em
		}
		if r >= qj {
			r -= qj
		}
		m := ring.BRed(r, p.deltaInv[j], qj, p.bred[j])
		if m>>(w*p.fieldsPerPrime) != 0 {
			return false
		}
		for range p.fieldsPerPrime {
			fields[f] = m & mask
			m >>= w
			f++
		}
	}
	return true
}
