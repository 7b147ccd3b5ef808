package he

import (
	"crypto/sha256"
	"fmt"
	"math"
	"math/bits"
	"sync"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/ring"
)

// The named parameter sets. A name is committed in the Raft log with the
// region, so it must never be reused for a different set: a new set gets a
// new name.
const (
	// RegionParamsName is the set for regions of up to 64 hospitals:
	// 16-bit quantization, 6 bits of headroom, 3.65 bytes per value.
	RegionParamsName = "rlwe-n13-b16-p64"
	// LargeRegionParamsName is the set for regions of up to 1,024
	// hospitals: 16-bit quantization, 10 bits of headroom.
	LargeRegionParamsName = "rlwe-n13-b16-p1024"
)

// MaxLength is the largest number of values in one update (a 10M-parameter
// model is a 37 MB update; anything larger is refused before allocation).
const MaxLength = 10_000_000

// MaxCount is the largest sample count one update may carry.
const MaxCount = 1 << 30

// heStandardMaxLogQP is the largest log2(QP) that keeps 128-bit classical
// security for a ternary secret, from the HomomorphicEncryption.org security
// standard (Albrecht et al., 2018, table for uniform ternary secrets).
var heStandardMaxLogQP = map[int]float64{10: 27, 11: 54, 12: 109, 13: 218, 14: 438, 15: 881}

// Params is a named, validated parameter set for regional aggregation.
//
// The set is tuned for one job only: summing at most MaxParties quantized
// vectors and decrypting the sum once. Ciphertexts live in a ring of degree
// 2^logN modulo Q = q_1···q_L·q_E, an RLWE ciphertext (c0, a) with only c0
// sent. The auxiliary modulus P served a collective public key the
// ceremony no longer makes; it stays so that each named set remains the
// set its name was committed for, and costs nothing on the wire.
//
// # How the bytes are spent
//
// A value x of an update clipped to L2 norm C is quantized to a b-bit
// field: x/C in [-1, 1] times 2^(b-1)-1, rounded stochastically (unbiased:
// up with probability equal to the fraction), plus the offset 2^(b-1), so
// every field is an integer in [1, 2^b-1]. A sum of at most 2^h updates
// then fits w = b+h bits: h headroom bits make a carry impossible by
// construction, and Combine checks every field against its bound.
//
// k fields of w bits form one integer m_j = Σ_f field_f·2^(w·f) below
// 2^(k·w), carried by one message prime q_j > 2^(k·w) of k·w+1 bits. The
// plaintext is the integer q_E·m (m given by its residues m_j): its
// residue is q_E·m_j mod q_j for each message prime and 0 mod the noise
// prime q_E. A decrypted sum is q_E·Σm + E, where E collects the
// encryption noise and the decryptors' smudging; its residue modulo q_E is
// E itself (|E| < q_E/2 by the choice of q_E), which gives back
// Σm_j = (x_j - E)·q_E^-1 mod q_j exactly, with 64-bit arithmetic only.
// So a coefficient of Σ_j log2(q_j) bits carries L·k fields, and pays for
// the noise once (log2 q_E bits), and on the wire each residue takes its
// prime's bit width, not 8 bytes.
//
// For RegionParams (b = 16, h = 6, w = 22, k = 2, L = 3): three 45-bit
// message primes and a 34-bit noise prime, 169 bits for 6 values: 3.52
// bytes per value (0.88x float32), plus one ciphertext's worth of slack
// for the count and party fields at the end of an update. Decryption
// shares cost the same per value.
//
// The sample count travels in countDigits fields of b bits each after the
// values, then one field holding 1, whose sum is the number of updates
// summed (checked against the contributor set at decryption). Only the
// sums are ever decrypted.
//
// Params is a small value type; copy it freely. The zero Params is invalid.
type Params struct {
	name string
	tag  [8]byte // first bytes of sha256(name): put in every encoding

	logN int
	logP int

	quantBits      int // b: bits per quantized value
	headroomBits   int // h: log2 of the largest number of updates in one sum
	fieldsPerPrime int // k: fields of b+h bits in one message prime
	messagePrimes  int // L: message primes; the noise prime q_E comes last
	countDigits    int // b-bit digits carrying a sample count up to MaxCount

	// smudgeLogSigma is log2 of the standard deviation of the noise each
	// decryptor adds to its share (noise flooding). It is bounded from both
	// sides, and Validate checks both:
	//
	//  - from below, by a Rényi-divergence argument: a decryption shows the
	//    coordinator q_E·m + e_agg + e_smudge, where e_agg (|e_agg| <= B, see
	//    aggregateNoiseBound), the contributors' encryption noise, would
	//    give away a·Σ s_i and so the keys: only the honest decryptors'
	//    e_smudge hides it (colluding decryptors know their own). Each
	//    decryptor adds its noise after weighting its key share by its
	//    Lagrange coefficient, so the coordinator's choice of decryptor set
	//    does not amplify anything; shares of one contributor set from
	//    different decryptor sets only recombine with factors λ'/λ that
	//    multiply the noise. The Rényi
	//    divergence of order 2 between transcripts with and without e_agg is
	//    at most exp(D·N·B²/σ²) after D decryptions under one key; we require
	//    it to stay <= e for D = maxDecryptions, so a key-recovery attack
	//    using the decryptions succeeds with at most sqrt(e·ε), ε being its
	//    success without them (Bai et al., "Improved security proofs in
	//    lattice-based cryptography: using the Rényi divergence rather than
	//    the statistical distance", 2015). This also defeats the Li–Micciancio
	//    key recovery on exact decryptions: the coordinator sees an RLWE
	//    sample (a, a·s + e_smudge) rather than a·s.
	//  - from above, by the noise prime: the decrypted noise E, at most
	//    B + smudgeTail·σ·sqrt(t) for t <= maxParties decryptors, must stay
	//    below q_E/4 (a factor 2 of margin on the q_E/2 decoding needs).
	//
	// The sampler cuts its tail at smudgeTail = 13σ: at 6σ the statistical
	// distance from a true Gaussian, summed over 2^12 decryptions of 2^13
	// coefficients, is about 0.2; at 13σ it is below 2^-100.
	//
	// For the region sets, σ = 2^24, B <= 2^9.3 (1,024 fresh encryption
	// errors of σ 3.2) and N = 2^13 give D·N·B² <= σ² for D = 2^12
	// decryptions per key epoch. Widening σ costs bits of q_E only (one
	// bit per doubling, shared by all the fields of a coefficient).
	smudgeLogSigma int
	maxDecryptions int

	rlwe rlwe.Parameters

	// Per message prime j, precomputed for encoding and decoding.
	deltaMod []uint64   // q_E mod q_j
	deltaInv []uint64   // q_E^-1 mod q_j
	bred     [][]uint64 // Barrett constants of q_j
}

// RegionParams returns the set for regions of up to 64 hospitals (see
// Params for how its bytes are spent).
func RegionParams() Params { return regionParams() }

var regionParams = sync.OnceValue(func() Params { return mustParams(RegionParamsName, 6) })

// LargeRegionParams returns the set for regions of up to 1,024 hospitals:
// two 53-bit message primes of two 26-bit fields each and a 36-bit noise
// prime, 4.4 bytes per value.
func LargeRegionParams() Params { return largeRegionParams() }

var largeRegionParams = sync.OnceValue(func() Params { return mustParams(LargeRegionParamsName, 10) })

func mustParams(name string, headroomBits int) Params {
	messagePrimes := 3
	if headroomBits > 6 {
		messagePrimes = 2 // 2·53 + 36 + P: three would pass the 218-bit bound
	}
	p, err := newParams(name, 13, 36, 16, headroomBits, 2, messagePrimes, 24, 1<<12)
	if err != nil {
		// The literals above are constants of the program; a failure here
		// is a programming error caught by the tests, not a runtime
		// condition.
		panic(fmt.Sprintf("he: parameters %s: %v", name, err))
	}
	return p
}

// ParamsByName returns the parameter set with the given name, as committed
// in a region's log entry.
func ParamsByName(name string) (Params, error) {
	switch name {
	case RegionParamsName:
		return RegionParams(), nil
	case LargeRegionParamsName:
		return LargeRegionParams(), nil
	}
	return Params{}, fmt.Errorf("%w: unknown parameter set %q", ErrWrongParams, name)
}

// ParamsFor returns the smallest named set whose aggregates hold the
// updates of a region of the given number of hospitals.
func ParamsFor(hospitals int) (Params, error) {
	for _, p := range []Params{RegionParams(), LargeRegionParams()} {
		if hospitals >= 1 && hospitals <= p.MaxParties() {
			return p, nil
		}
	}
	return Params{}, fmt.Errorf("%w: no parameter set holds a region of %d hospitals (at most %d)", ErrWrongShape, hospitals, LargeRegionParams().MaxParties())
}

func newParams(name string, logN, logP, quantBits, headroomBits, fieldsPerPrime, messagePrimes, smudgeLogSigma, maxDecryptions int) (Params, error) {
	p := Params{
		name: name, logN: logN, logP: logP,
		quantBits: quantBits, headroomBits: headroomBits, fieldsPerPrime: fieldsPerPrime, messagePrimes: messagePrimes,
		smudgeLogSigma: smudgeLogSigma, maxDecryptions: maxDecryptions,
	}
	h := sha256.Sum256([]byte(name))
	copy(p.tag[:], h[:])
	switch {
	case logN < 10 || logN > 15 || logP < 20 || logP > 61:
		return Params{}, fmt.Errorf("%w: logN=%d logP=%d out of range", ErrWrongParams, logN, logP)
	case quantBits < 2 || quantBits > 20 || headroomBits < 0 || headroomBits > 10:
		return Params{}, fmt.Errorf("%w: %d quantization bits and %d headroom bits", ErrWrongParams, quantBits, headroomBits)
	case fieldsPerPrime < 1 || fieldsPerPrime*p.fieldBits()+1 > 61 || messagePrimes < 1 || messagePrimes > 8:
		return Params{}, fmt.Errorf("%w: %d message primes of %d fields of %d bits", ErrWrongParams, messagePrimes, fieldsPerPrime, p.fieldBits())
	}
	p.countDigits = (bits.Len64(MaxCount) + quantBits - 1) / quantBits
	// Primes just below a power of two, so that each residue's bit width
	// on the wire is exactly the bits it needs: message primes of k·w+1
	// bits (> 2^(k·w)), a noise prime q_E > 4·(the worst decryption
	// noise). P (unused on the wire, see Params) comes from above 2^logP
	// so that it can never equal a prime of Q.
	nthRoot := uint64(2) << logN
	msg := ring.NewNTTFriendlyPrimesGenerator(uint64(fieldsPerPrime*p.fieldBits()+1), nthRoot)
	qs, err := msg.NextDownstreamPrimes(messagePrimes)
	if err != nil {
		return Params{}, fmt.Errorf("%w: message primes: %v", ErrWrongParams, err)
	}
	noise := ring.NewNTTFriendlyPrimesGenerator(uint64(math.Ceil(math.Log2(4*p.worstNoise())))+1, nthRoot)
	qE, err := noise.NextDownstreamPrime()
	if err != nil {
		return Params{}, fmt.Errorf("%w: noise prime: %v", ErrWrongParams, err)
	}
	aux := ring.NewNTTFriendlyPrimesGenerator(uint64(logP), nthRoot)
	pAux, err := aux.NextUpstreamPrime()
	if err != nil {
		return Params{}, fmt.Errorf("%w: auxiliary prime: %v", ErrWrongParams, err)
	}
	p.rlwe, err = rlwe.NewParametersFromLiteral(rlwe.ParametersLiteral{
		LogN:    logN,
		Q:       append(qs, qE),
		P:       []uint64{pAux},
		Xs:      rlwe.DefaultXs,
		Xe:      rlwe.DefaultXe,
		NTTFlag: true,
	})
	if err != nil {
		return Params{}, fmt.Errorf("%w: %v", ErrWrongParams, err)
	}
	q := p.rlwe.Q()
	qE = q[messagePrimes]
	for _, qj := range q[:messagePrimes] {
		bred := ring.BRedConstant(qj)
		d := qE % qj
		p.deltaMod = append(p.deltaMod, d)
		p.deltaInv = append(p.deltaInv, ring.ModExp(d, qj-2, qj))
		p.bred = append(p.bred, bred)
	}
	if err := p.Validate(); err != nil {
		return Params{}, err
	}
	return p, nil
}

// Name is the parameter set's name, e.g. "rlwe-n13-b16-p64".
func (p Params) Name() string { return p.name }

// SlotsPerCiphertext is the number of values one ciphertext carries: every
// coefficient of the ring holds fieldsPerPrime fields per message prime.
func (p Params) SlotsPerCiphertext() int {
	if p.name == "" {
		return 0
	}
	return (1 << p.logN) * p.fieldsPerCoeff()
}

// QuantBits is b, the number of bits each value is quantized to.
func (p Params) QuantBits() int { return p.quantBits }

// MaxParties is the largest number of updates in one aggregate, and the
// largest region: beyond it a field of the sum could carry into the next.
func (p Params) MaxParties() int { return 1 << p.headroomBits }

// SmudgingSigma is the standard deviation of the noise each decryptor adds
// to its decryption share.
func (p Params) SmudgingSigma() float64 { return math.Exp2(float64(p.smudgeLogSigma)) }

// MaxDecryptions is the number of decryptions one key ceremony supports
// under the smudging argument (see Params); a region should re-key before.
func (p Params) MaxDecryptions() int { return p.maxDecryptions }

// Validate rejects unsafe or inconsistent parameter sets.
func (p Params) Validate() error {
	if p.name == "" || p.rlwe.N() == 0 {
		return fmt.Errorf("%w: zero Params", ErrWrongParams)
	}
	rp := p.rlwe
	if rp.LogN() != p.logN || rp.QCount() != p.messagePrimes+1 || rp.PCount() != 1 || !rp.NTTFlag() {
		return fmt.Errorf("%w: need %d message primes, one noise prime and one auxiliary prime at logN=%d, NTT domain", ErrWrongParams, p.messagePrimes, p.logN)
	}
	maxQP, ok := heStandardMaxLogQP[p.logN]
	if !ok || rp.LogQP() > maxQP {
		return fmt.Errorf("%w: log2(QP)=%.1f exceeds the 128-bit HE-standard bound %.0f for logN=%d", ErrWrongParams, rp.LogQP(), maxQP, p.logN)
	}
	if xs, ok := rp.Xs().(ring.Ternary); !ok || xs.H != 0 || xs.P < 0.5 {
		return fmt.Errorf("%w: secret must be dense uniform ternary (the HE-standard table assumes it)", ErrWrongParams)
	}
	if xe, ok := rp.Xe().(ring.DiscreteGaussian); !ok || xe.Sigma < 3.19 {
		return fmt.Errorf("%w: error must be a discrete Gaussian with sigma >= 3.19", ErrWrongParams)
	}
	// Headroom: a field of a sum of MaxParties updates is at most
	// 2^h·(2^b-1) < 2^w, and k fields of w bits stay below every message
	// prime: no carry between fields, no wrap modulo q_j.
	q := rp.Q()
	for j, qj := range q[:p.messagePrimes] {
		if qj>>(p.fieldsPerPrime*p.fieldBits()) == 0 {
			return fmt.Errorf("%w: message prime %d (%d bits) cannot hold %d fields of %d bits", ErrWrongParams, j, bits.Len64(qj), p.fieldsPerPrime, p.fieldBits())
		}
	}
	if p.headroomBits+p.wideBits() > 63 {
		return fmt.Errorf("%w: a sum of %d wide values of %d bits does not fit 63 bits", ErrWrongParams, p.MaxParties(), p.wideBits())
	}
	if p.countDigits*p.quantBits <= 30 {
		return fmt.Errorf("%w: %d count digits of %d bits cannot carry counts up to 2^30 inclusive", ErrWrongParams, p.countDigits, p.quantBits)
	}
	// Smudging, from below (Rényi bound, see the field comment).
	sigma := p.SmudgingSigma()
	b := p.aggregateNoiseBound()
	if p.maxDecryptions < 1 || float64(p.maxDecryptions)*float64(rp.N())*b*b > sigma*sigma {
		return fmt.Errorf("%w: smudging sigma 2^%d too small: %d decryptions of noise <= %.0f need sigma >= %.3g",
			ErrWrongParams, p.smudgeLogSigma, p.maxDecryptions, b, math.Sqrt(float64(p.maxDecryptions)*float64(rp.N()))*b)
	}
	// ... and from above (the noise prime decodes it).
	if 4*p.worstNoise() >= float64(q[p.messagePrimes]) {
		return fmt.Errorf("%w: noise prime of %d bits too small for smudging sigma 2^%d", ErrWrongParams, bits.Len64(q[p.messagePrimes]), p.smudgeLogSigma)
	}
	return nil
}

// fieldBits is w = b + h, the width of one field of a sum.
func (p Params) fieldBits() int { return p.quantBits + p.headroomBits }

// fieldsPerCoeff is the number of fields one ring coefficient carries.
func (p Params) fieldsPerCoeff() int { return p.fieldsPerPrime * p.messagePrimes }

// quantMax is the largest quantized magnitude: x/C = ±1 maps to ±quantMax.
func (p Params) quantMax() float64 { return float64(uint64(1)<<(p.quantBits-1) - 1) }

// aggregateNoiseBound is a 6σ bound on the noise of a sum of maxParties
// fresh secret-key encryptions, each c0 = -a·s_i + m + e_i with e_i a
// discrete Gaussian of the parameters' σ (3.2).
func (p Params) aggregateNoiseBound() float64 {
	return 6 * math.Sqrt(float64(p.MaxParties())) * rlwe.DefaultXe.Sigma
}

// worstNoise bounds the decrypted noise E: the contributors' encryption
// noise plus the smudging of up to maxParties decryptors, cut at
// smudgeTail standard deviations of their sum.
func (p Params) worstNoise() float64 {
	return p.aggregateNoiseBound() + smudgeTail*p.SmudgingSigma()*math.Sqrt(float64(p.MaxParties()))
}

// smudgeTail is where the smudging sampler cuts its tail, in σ.
const smudgeTail = 13

// Shape is what an update holds: Len values, the last Wide of which are
// wide, carried at WideBits of precision (wideDigits fields each) instead
// of QuantBits: values that must survive rounding, such as counts and
// sums of a few statistics, whose error must stay far below one unit.
type Shape struct{ Len, Wide int }

// Values is the shape of Len values, none wide.
func Values(n int) Shape { return Shape{Len: n} }

func (s Shape) String() string { return fmt.Sprintf("%d values (%d wide)", s.Len, s.Wide) }

func (s Shape) check() error {
	if s.Len < 1 || s.Len > MaxLength || s.Wide < 0 || s.Wide > s.Len {
		return fmt.Errorf("%w: %v: want 1..%d values, at most all of them wide", ErrWrongShape, s, MaxLength)
	}
	return nil
}

// narrow is the number of values quantized to QuantBits.
func (s Shape) narrow() int { return s.Len - s.Wide }

// wideDigits is the number of b-bit fields of a wide value.
const wideDigits = 3

// WideBits is the precision of a wide value: a relative error below
// 2^-(WideBits-1) of the clip norm per update.
func (p Params) WideBits() int { return p.wideBits() }

func (p Params) wideBits() int { return wideDigits * p.quantBits }

// wideMax is the largest wide magnitude: x/C = ±1 maps to ±wideMax.
func (p Params) wideMax() float64 { return float64(uint64(1)<<(p.wideBits()-1) - 1) }

// fields is the number of fields of an update of shape s: the narrow
// values, the wide values' digits, the count digits and the party field.
func (p Params) fields(s Shape) int {
	return s.narrow() + wideDigits*s.Wide + p.countDigits + 1
}

// Ciphertexts is how many ciphertexts an update of shape s uses (the
// values, then the count digits and the party field, packed into
// consecutive fields), and so how much of a key's decryption budget
// (MaxDecryptions) decrypting it spends.
func (p Params) Ciphertexts(s Shape) int {
	n := p.SlotsPerCiphertext()
	return (p.fields(s) + n - 1) / n
}

// polyBits is the width of one residue modulo each prime of Q, as packed
// on the wire.
func (p Params) polyBits() []int {
	out := make([]int, 0, p.messagePrimes+1)
	for _, q := range p.rlwe.Q() {
		out = append(out, bits.Len64(q))
	}
	return out
}

// packedPolyLen is the size of one polynomial mod Q packed to the primes'
// bit widths (the ring degree is a multiple of 8, so every prime's block
// is whole bytes).
func (p Params) packedPolyLen() int {
	n := 0
	for _, b := range p.polyBits() {
		n += b
	}
	return n << p.logN / 8
}
