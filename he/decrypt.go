package he

import (
	"fmt"
	"math"
	"slices"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/mhe"
	"github.com/tuneinsight/lattigo/v5/ring"
	"github.com/tuneinsight/lattigo/v5/schemes/ckks"
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
	set, err := checkActive(active, pa.n, pa.t)
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
	rp := *p.ckks.GetRLWEParameters()
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
	clear(sum.Q.Coeffs[0])
	clear(sum.P.Coeffs[0])
	if err != nil {
		return nil, fmt.Errorf("he: combining threshold share: %w", err)
	}
	zero := rlwe.NewSecretKey(rp)
	sigma := p.SmudgingSigma()
	cks, err := mhe.NewKeySwitchProtocol(p.ckks, ring.DiscreteGaussian{Sigma: sigma, Bound: smudgeTail * sigma})
	if err != nil {
		return nil, fmt.Errorf("he: key-switch protocol: %w", err)
	}
	seed := seedHash(pa.seed[:])
	s := &DecryptionShare{p: p, from: pa.self, aggDigest: agg.Digest(), contributors: contrib, active: set, values: make([]ring.Poly, len(agg.c0))}
	err = parallel(len(agg.c0), func() func(int) error {
		ks := cks.ShallowCopy()
		ringQ := p.ckks.RingQ().AtLevel(0)
		ct := p.newCiphertext()
		return func(i int) error {
			ct.Value[1] = p.uniformA(seed, agg.binding, i)
			if err := checkA(ct.Value[1], i); err != nil {
				return err
			}
			sh := ks.AllocateShare(0)
			ks.GenShare(skT, zero, ct, &sh)
			// GenShare leaves coefficients lazily reduced (in [0, 2Q));
			// the encoding promises canonical values.
			ringQ.Reduce(sh.Value, sh.Value)
			s.values[i] = sh.Value
			return nil
		}
	})
	clear(skT.Value.Q.Coeffs[0])
	clear(skT.Value.P.Coeffs[0])
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (p Params) decryptionShareFixed() int { return headerLen + tagLen + 4 + 32 + 4 + 4 }

// DecryptionShareSize is the exact size of the encoding of a share of an
// aggregate of length values, for a set of contributors contributors and
// active decryptors.
func DecryptionShareSize(p Params, length, contributors, active int) int {
	return p.decryptionShareFixed() + 4*contributors + 4*active + 4 + p.Ciphertexts(length)*p.polyQLen()
}

// MarshalBinary encodes the share.
func (s *DecryptionShare) MarshalBinary() ([]byte, error) {
	size := s.p.decryptionShareFixed() + 4*len(s.contributors) + 4*len(s.active) + 4 + len(s.values)*s.p.polyQLen()
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
	for _, v := range s.values {
		w.poly(v)
	}
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
	if s.contributors, err = r.points(p.maxParties, "contributors"); err != nil {
		return nil, err
	}
	active, err := r.points(p.maxParties, "active set")
	if err != nil {
		return nil, err
	}
	s.active = active
	if !slices.Contains(active, s.from) {
		return nil, fmt.Errorf("%w: decryption share: sender %d not in its own active set", ErrMalformed, s.from)
	}
	k := int(r.u32())
	if k < 1 || k > p.Ciphertexts(MaxLength) {
		return nil, fmt.Errorf("%w: decryption share: %d ciphertexts", ErrMalformed, k)
	}
	if len(r.b) != k*p.polyQLen() {
		return nil, fmt.Errorf("%w: decryption share: %d bytes of shares, %d ciphertexts need %d", ErrMalformed, len(r.b), k, k*p.polyQLen())
	}
	q := p.ckks.GetRLWEParameters().Q()
	s.values = make([]ring.Poly, k)
	for i := range s.values {
		s.values[i] = p.ckks.RingQ().AtLevel(0).NewPoly()
		if err := r.poly(s.values[i], q, fmt.Sprintf("share %d", i)); err != nil {
			return nil, err
		}
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
}

// Combine decrypts agg from the decryption shares of the t active parties.
// It refuses fewer than t shares, duplicates, shares for another aggregate,
// contributor set or active set, a contributor set whose size is not the
// aggregate's update count, and senders outside the set; it then checks the decrypted
// plaintext's structure (norm bound, integer count digits, zero padding),
// which catches a tampered share with overwhelming probability.
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
	if t < 1 || t > p.maxParties {
		return nil, fmt.Errorf("%w: threshold %d not in 1..%d", ErrWrongShape, t, p.maxParties)
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

	n := p.SlotsPerCiphertext()
	res := &Result{Sum: make([]float64, agg.length)}
	digits := make([]float64, p.countDigits)
	norms := make([]float64, len(agg.c0)) // squared scaled norm per ciphertext
	digitBase := float64(uint64(1) << p.countDigitBits)
	bound := float64(agg.parties) // every clipped update has scaled L2 norm <= 1
	const tol = 1e-3              // far above the decryption noise (~2^-28), far below any garbage

	err := parallel(len(agg.c0), func() func(int) error {
		ringQ := p.ckks.RingQ().AtLevel(0)
		enc := ckks.NewEncoder(p.ckks, p.encPrec)
		pt := p.newPlaintext()
		buf := make([]float64, n)
		return func(i int) error {
			pt.Value.CopyLvl(0, agg.c0[i])
			for _, s := range shares {
				ringQ.Add(pt.Value, s.values[i], pt.Value)
			}
			if err := enc.Decode(pt, buf); err != nil {
				return fmt.Errorf("he: decoding ciphertext %d: %w", i, err)
			}
			var sq float64
			for j, v := range buf {
				g := i*n + j
				if math.IsNaN(v) || math.Abs(v) > bound+tol {
					return fmt.Errorf("%w: coefficient %d out of range: wrong or tampered decryption share", ErrDecrypt, g)
				}
				switch {
				case g < agg.length:
					res.Sum[g] = v * agg.clip
					sq += v * v
				case g < agg.length+p.countDigits:
					digits[g-agg.length] = v * digitBase
				default:
					if math.Abs(v) > tol {
						return fmt.Errorf("%w: padding coefficient %d is not zero: wrong or tampered decryption share", ErrDecrypt, g)
					}
				}
			}
			norms[i] = sq
			return nil
		}
	})
	if err != nil {
		return nil, err
	}
	var sq float64
	for _, v := range norms {
		sq += v
	}
	if math.Sqrt(sq) > bound*(1+1e-6)+tol {
		return nil, fmt.Errorf("%w: decrypted norm %.4g exceeds %d clipped updates: wrong or tampered decryption share", ErrDecrypt, math.Sqrt(sq), agg.parties)
	}
	maxDigit := float64(agg.parties) * (digitBase - 1)
	for k, d := range digits {
		r := math.Round(d)
		if math.Abs(d-r) > 0.05 || r < 0 || r > maxDigit {
			return nil, fmt.Errorf("%w: count digit %d decodes to %.3f: wrong or tampered decryption share", ErrDecrypt, k, d)
		}
		res.Count += uint64(r) << (k * p.countDigitBits)
	}
	return res, nil
}
