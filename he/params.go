package he

import (
	"crypto/sha256"
	"fmt"
	"math"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/ring"
	"github.com/tuneinsight/lattigo/v5/schemes/ckks"
)

// RegionParamsName names the one parameter set regions use today. The name
// is committed in the Raft log with the region, so it must never be reused
// for a different set: a new set gets a new name.
const RegionParamsName = "ckks-n13-q60-s54"

// MaxLength is the largest number of values in one update (a 10M-parameter
// model is a 160 MB ciphertext; anything larger is refused before allocation).
const MaxLength = 10_000_000

// MaxCount is the largest sample count one update may carry.
const MaxCount = 1 << 30

// heStandardMaxLogQP is the largest log2(QP) that keeps 128-bit classical
// security for a ternary secret, from the HomomorphicEncryption.org security
// standard (Albrecht et al., 2018, table for uniform ternary secrets).
var heStandardMaxLogQP = map[int]float64{10: 27, 11: 54, 12: 109, 13: 218, 14: 438, 15: 881}

// Params is a named, validated CKKS parameter set for regional aggregation.
//
// The set is tuned for one job only: summing at most MaxParties clipped
// vectors and decrypting the sum once. Encryption happens directly at level
// 0 (one modulus), since aggregation needs additions only; the auxiliary
// modulus P is used only while generating keys and encrypting (lattigo
// samples the encryption of zero in QP and divides by P, which removes the
// public-key noise).
//
// Params is a small value type; copy it freely. The zero Params is invalid.
type Params struct {
	name string
	tag  [8]byte // first bytes of sha256(name): put in every encoding

	logN     int
	logQ     int // one modulus: the only level ciphertexts ever live at
	logP     int // auxiliary modulus for key generation and encryption
	logScale int
	encPrec  uint // encoder precision; above 53 lattigo switches to big.Float (10-60x slower)

	// maxParties bounds both the region size and the number of updates in
	// one aggregate: each clipped update has coefficients in [-1, 1], so the
	// sum stays in [-maxParties, maxParties] and, times the scale, below Q/2.
	maxParties int

	// The sample count travels in countDigits coefficients after the values,
	// one base-2^countDigitBits digit each, divided by 2^countDigitBits so
	// that each digit is in [0, 1) like any clipped value. Only the sum of the
	// counts is ever decrypted.
	countDigits    int
	countDigitBits int

	// smudgeLogSigma is log2 of the standard deviation of the noise each
	// decryptor adds to its share (noise flooding). It is bounded from both
	// sides, and Validate checks both:
	//
	//  - from below, by a Rényi-divergence argument: a decryption shows the
	//    coordinator m + e_agg + e_smudge, where e_agg (|e_agg| <= B, see
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
	//    key recovery on exact CKKS decryptions: the coordinator sees an RLWE
	//    sample (c1, c1·s + e_smudge) rather than c1·s.
	//  - from above, by precision: the decrypted sum carries t·σ² of extra
	//    variance per coefficient; σ·smudgeTail·sqrt(maxParties) must stay
	//    below 2^(logScale-20), i.e. an absolute error under 2^-20 of one
	//    clip unit per coefficient even at the sampler's tail cut.
	//
	// The sampler cuts its tail at smudgeTail = 13σ: at 6σ the statistical
	// distance from a true Gaussian, summed over 2^12 decryptions of 2^13
	// coefficients, is about 0.2; at 13σ it is below 2^-100.
	//
	// For the region set, σ = 2^24, B ≈ 2^6.3 (sixteen fresh encryption
	// errors of σ 3.2) and N = 2^13 give D·N·B² <= σ² with a wide margin for
	// D = 2^12 decryptions per key ceremony, and a decryption error
	// of std 2^-30·sqrt(t) clip units per coefficient: a relative L2 error
	// of 7e-7 on the sum of five independent 1M-value updates at full clip
	// norm with t = 3 (the worst case; correlated updates do better).
	//
	// The width is a compromise forced by one 60-bit modulus at scale 2^54:
	// classic statistical flooding (σ >= 2^40·B) would cost 16 bits of
	// precision. A set wanting that should add a second modulus.
	smudgeLogSigma int
	maxDecryptions int

	ckks ckks.Parameters
}

// RegionParams returns the one named region parameter set: ring degree 2^13,
// one 60-bit modulus Q, a 55-bit auxiliary modulus P, scale 2^54,
// coefficient encoding with encoder precision 53. log2(QP) = 115 <= 218, the
// HE-standard bound for 128-bit security at N = 2^13 with a ternary secret.
func RegionParams() Params {
	p, err := newParams(RegionParamsName, 13, 60, 55, 54, 53, 16, 4, 10, 24, 1<<12)
	if err != nil {
		// The literal above is a constant of the program; a failure here is
		// a programming error caught by the tests, not a runtime condition.
		panic(fmt.Sprintf("he: region parameters: %v", err))
	}
	return p
}

// ParamsByName returns the parameter set with the given name, as committed
// in a region's log entry.
func ParamsByName(name string) (Params, error) {
	switch name {
	case RegionParamsName:
		return RegionParams(), nil
	}
	return Params{}, fmt.Errorf("%w: unknown parameter set %q", ErrWrongParams, name)
}

func newParams(name string, logN, logQ, logP, logScale int, encPrec uint, maxParties, countDigits, countDigitBits, smudgeLogSigma, maxDecryptions int) (Params, error) {
	p := Params{
		name: name, logN: logN, logQ: logQ, logP: logP, logScale: logScale, encPrec: encPrec,
		maxParties: maxParties, countDigits: countDigits, countDigitBits: countDigitBits,
		smudgeLogSigma: smudgeLogSigma, maxDecryptions: maxDecryptions,
	}
	h := sha256.Sum256([]byte(name))
	copy(p.tag[:], h[:])
	if logN < 10 || logN > 15 || logQ < 20 || logQ > 61 || logP < 20 || logP > 61 {
		return Params{}, fmt.Errorf("%w: logN=%d logQ=%d logP=%d out of range", ErrWrongParams, logN, logQ, logP)
	}
	var err error
	p.ckks, err = ckks.NewParametersFromLiteral(ckks.ParametersLiteral{
		LogN:            logN,
		LogQ:            []int{logQ},
		LogP:            []int{logP},
		Xs:              rlwe.DefaultXs,
		Xe:              rlwe.DefaultXe,
		LogDefaultScale: logScale,
	})
	if err != nil {
		return Params{}, fmt.Errorf("%w: %v", ErrWrongParams, err)
	}
	if err := p.Validate(); err != nil {
		return Params{}, err
	}
	return p, nil
}

// Name is the parameter set's name, e.g. "ckks-n13-q60-s54".
func (p Params) Name() string { return p.name }

// SlotsPerCiphertext is the number of coefficients one ciphertext carries
// (the ring degree: coefficient encoding uses all of them).
func (p Params) SlotsPerCiphertext() int {
	if p.name == "" {
		return 0
	}
	return 1 << p.logN
}

// MaxParties is the largest number of updates in one aggregate, and the
// largest region: beyond it a coefficient of the sum could exceed Q/2 and
// wrap around.
func (p Params) MaxParties() int { return p.maxParties }

// SmudgingSigma is the standard deviation of the noise each decryptor adds
// to its decryption share.
func (p Params) SmudgingSigma() float64 { return math.Exp2(float64(p.smudgeLogSigma)) }

// MaxDecryptions is the number of decryptions one key ceremony supports
// under the smudging argument (see Params); a region should re-key before.
func (p Params) MaxDecryptions() int { return p.maxDecryptions }

// Validate rejects unsafe or inconsistent parameter sets.
func (p Params) Validate() error {
	if p.name == "" || p.ckks.N() == 0 {
		return fmt.Errorf("%w: zero Params", ErrWrongParams)
	}
	rp := p.ckks.GetRLWEParameters()
	if rp.LogN() != p.logN || rp.MaxLevelQ() != 0 || rp.MaxLevelP() != 0 {
		return fmt.Errorf("%w: need exactly one modulus Q and one auxiliary modulus P at logN=%d", ErrWrongParams, p.logN)
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
	if p.encPrec < 1 || p.encPrec > 53 {
		return fmt.Errorf("%w: encoder precision %d: must be in [1, 53] (float64 path)", ErrWrongParams, p.encPrec)
	}
	if p.maxParties < 1 || p.maxParties > 1<<10 {
		return fmt.Errorf("%w: maxParties=%d", ErrWrongParams, p.maxParties)
	}
	// Headroom: |sum coefficient| <= maxParties, times the scale, plus the
	// decryption noise (13σ·sqrt(maxParties) below 2^(logScale-20), checked
	// next), must stay below Q/2, or the coefficient wraps around mod Q.
	q := float64(rp.Q()[0])
	if float64(p.maxParties)*p.scale()*(1+0x1p-10) >= q/2 {
		return fmt.Errorf("%w: scale 2^%d with %d parties leaves no headroom below Q/2 (log2 Q = %.2f)", ErrWrongParams, p.logScale, p.maxParties, math.Log2(q))
	}
	if p.countDigits < 1 || p.countDigitBits < 1 || p.countDigits*p.countDigitBits <= 30 || p.countDigits*p.countDigitBits > 62 {
		return fmt.Errorf("%w: %d count digits of %d bits cannot carry counts up to 2^30 inclusive", ErrWrongParams, p.countDigits, p.countDigitBits)
	}
	// Smudging, from below (Rényi bound, see the field comment).
	sigma := math.Exp2(float64(p.smudgeLogSigma))
	b := p.aggregateNoiseBound()
	if p.maxDecryptions < 1 || float64(p.maxDecryptions)*float64(p.ckks.N())*b*b > sigma*sigma {
		return fmt.Errorf("%w: smudging sigma 2^%d too small: %d decryptions of noise <= %.0f need sigma >= %.3g",
			ErrWrongParams, p.smudgeLogSigma, p.maxDecryptions, b, math.Sqrt(float64(p.maxDecryptions)*float64(p.ckks.N()))*b)
	}
	// ... and from above (precision).
	if smudgeTail*sigma*math.Sqrt(float64(p.maxParties)) > math.Exp2(float64(p.logScale-20)) {
		return fmt.Errorf("%w: smudging sigma 2^%d too large for scale 2^%d", ErrWrongParams, p.smudgeLogSigma, p.logScale)
	}
	// A count digit must decode exactly: the worst decryption error must be
	// far below half a digit step.
	if smudgeTail*sigma*math.Sqrt(float64(p.maxParties)) > math.Exp2(float64(p.logScale-p.countDigitBits-4)) {
		return fmt.Errorf("%w: count digits of %d bits do not survive the decryption noise", ErrWrongParams, p.countDigitBits)
	}
	return nil
}

// aggregateNoiseBound is a 6σ bound on the noise of a sum of maxParties
// fresh secret-key encryptions, each c0 = -a·s_i + m + e_i with e_i a
// discrete Gaussian of the parameters' σ (3.2).
func (p Params) aggregateNoiseBound() float64 {
	sigma := p.ckks.GetRLWEParameters().Xe().(ring.DiscreteGaussian).Sigma
	return 6 * math.Sqrt(float64(p.maxParties)) * sigma
}

// smudgeTail is where the smudging sampler cuts its tail, in σ.
const smudgeTail = 13

// Ciphertexts is how many ciphertexts an update of length values uses (the
// values, then the count digits, packed into consecutive coefficients),
// and so how much of a key's decryption budget (MaxDecryptions)
// decrypting it spends.
func (p Params) Ciphertexts(length int) int {
	n := p.SlotsPerCiphertext()
	return (length + p.countDigits + n - 1) / n
}

func (p Params) scale() float64 { return math.Exp2(float64(p.logScale)) }
