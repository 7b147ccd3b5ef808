package he

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/big"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tuneinsight/lattigo/v5/ring"
)

// packingSets are parameter sets across quantization widths b, headroom h,
// fields per prime k and message primes L, all valid (Validate passes).
func packingSets(tb testing.TB) []Params {
	tb.Helper()
	shapes := []struct{ b, h, k, primes int }{
		{2, 6, 4, 3}, {8, 6, 4, 2}, {12, 6, 3, 2}, {16, 0, 3, 2}, {16, 6, 1, 3},
		{16, 6, 2, 3}, {16, 10, 2, 2}, {20, 2, 2, 2},
	}
	var out []Params
	for _, s := range shapes {
		name := fmt.Sprintf("test-b%d-h%d-k%d-l%d", s.b, s.h, s.k, s.primes)
		p, err := newParams(name, 13, 36, s.b, s.h, s.k, s.primes, 24, 1<<12)
		if err != nil {
			tb.Fatalf("%s: %v", name, err)
		}
		out = append(out, p)
	}
	return append(out, RegionParams(), LargeRegionParams())
}

// addNoise adds the integer e to every residue of coefficient c of x
// (coefficient domain), as a decryption's noise E would.
func addNoise(p Params, x ring.Poly, c int, e int64) {
	for j, q := range p.rlwe.Q() {
		v := new(big.Int).Mod(big.NewInt(e), new(big.Int).SetUint64(q)).Uint64()
		x.Coeffs[j][c] = (x.Coeffs[j][c] + v) % q
	}
}

// TestPackingRoundTrips packs random sums (any field value a sum of MaxParties
// updates can take, the extremes included) at every b and k, adds decryption
// noise up to the worst the parameters allow, and unpacks them exactly.
func TestPackingRoundTrips(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, p := range packingSets(t) {
		t.Run(p.Name(), func(t *testing.T) {
			n := 1 << p.logN
			top := uint64(p.MaxParties()) * (uint64(1)<<p.quantBits - 1)
			want := make([]uint64, n*p.fieldsPerCoeff())
			for g := range want {
				switch g % 3 {
				case 0:
					want[g] = top
				case 1:
					want[g] = rng.Uint64N(top + 1)
				}
			}
			x := p.rlwe.RingQ().NewPoly()
			p.pack(x, want)
			worst := int64(p.worstNoise())
			got := make([]uint64, p.fieldsPerCoeff())
			for c := range n {
				e := rng.Int64N(2*worst+1) - worst
				switch c {
				case 0:
					e = worst
				case 1:
					e = -worst
				}
				addNoise(p, x, c, e)
				if !p.unpack(x, c, got) {
					t.Fatalf("coefficient %d with noise %d: does not fit its fields", c, e)
				}
				for f, v := range got {
					if g := c*len(got) + f; v != want[g] {
						t.Fatalf("coefficient %d, noise %d: field %d = %d, want %d", c, e, g, v, want[g])
					}
				}
			}
		})
	}
}

// TestSumAtMaxPartiesIsExact folds MaxParties updates whose every value is
// at +clip or -clip and whose counts are the largest allowed, the largest
// fields a sum can hold, and decrypts them exactly: no field carries into
// the next, none wraps around. (Such a vector is far beyond its clip
// norm, which Combine checks after decoding; decode alone checks fields.)
// One more update is refused; a sum that
// claims fewer updates than it holds is refused at decryption.
func TestSumAtMaxPartiesIsExact(t *testing.T) {
	r := ceremony(t, 2, 2)
	p := r.p
	const length = 2 * 6 * 8192 // two ciphertexts, the count in a third
	b := binding("max")
	top := uint64(1)<<p.quantBits - 1
	full := &Update{p: p, shape: Values(length), parties: 1, clip: 3, binding: b}
	err := r.parties[0].seal(full, func() func([]uint64, int) {
		return func(dst []uint64, first int) {
			for k := range dst {
				switch g := first + k; {
				case g < length && g%2 == 0:
					dst[k] = top // +clip: quantMax + offset
				case g < length:
					dst[k] = 1 // -clip: -quantMax + offset
				case g < length+p.countDigits:
					dst[k] = top
				case g == length+p.countDigits:
					dst[k] = 1
				default:
					dst[k] = 0
				}
			}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	agg := NewAggregator(p, Values(length), 3, b)
	for range p.MaxParties() {
		if err := agg.Add(full); err != nil {
			t.Fatal(err)
		}
	}
	if err := agg.Add(full); !errors.Is(err, ErrTooManyParties) {
		t.Fatalf("update %d: %v", p.MaxParties()+1, err)
	}
	sum, err := agg.Result()
	if err != nil {
		t.Fatal(err)
	}
	// Decrypt with the key itself: MaxParties·s_1, the sum's key.
	key := p.rlwe.RingQ().NewPoly()
	p.rlwe.RingQ().MulScalar(r.parties[0].sk.Value.Q, uint64(p.MaxParties()), key)
	seed := seedHash(r.seed)
	decrypt := func(i int, x ring.Poly) {
		ringQ := p.rlwe.RingQ()
		ringQ.MulCoeffsMontgomery(p.uniformA(seed, b, i), key, x)
		ringQ.Add(x, sum.c0[i], x)
	}
	res, err := p.decode(sum, decrypt)
	if err != nil {
		t.Fatal(err)
	}
	k := float64(p.MaxParties())
	for g, v := range res.Sum {
		want := 3 * k
		if g%2 == 1 {
			want = -want
		}
		if v != want {
			t.Fatalf("value %d: %v, want exactly %v", g, v, want)
		}
	}
	var wantCount uint64
	for d := range p.countDigits {
		wantCount += uint64(p.MaxParties()) * top << (d * p.quantBits)
	}
	if res.Count != wantCount {
		t.Fatalf("count %d, want %d", res.Count, wantCount)
	}
	// The same sum, claimed to hold one update fewer.
	short := sum.clone()
	short.parties--
	if _, err := p.decode(short, decrypt); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("sum claiming %d updates: %v", short.parties, err)
	}
}

// TestQuantizationIsUnbiased checks stochastic rounding: the mean of many
// quantizations of one value is the value, and each is one of its two
// neighbouring steps.
func TestQuantizationIsUnbiased(t *testing.T) {
	p := RegionParams()
	rng := rand.NewChaCha8([32]byte{7, 8})
	offset := float64(uint64(1) << (p.quantBits - 1))
	for _, y := range []float64{0.25, -0.7, 1000.5, -p.quantMax() + 0.1, p.quantMax(), p.quantMax() + 5} {
		const draws = 100_000
		var sum float64
		lo, hi := math.Floor(min(y, p.quantMax())), math.Ceil(min(y, p.quantMax()))
		for range draws {
			v := float64(quantize(y, p.quantMax(), rng)) - offset
			if v != lo && v != hi {
				t.Fatalf("y = %g: quantized to %g, not %g or %g", y, v, lo, hi)
			}
			sum += v
		}
		want := min(y, p.quantMax())
		// The standard deviation of one draw is at most 1/2.
		if mean := sum / draws; math.Abs(mean-want) > 5*0.5/math.Sqrt(draws) {
			t.Fatalf("y = %g: mean %g", y, mean)
		}
	}
}

// FuzzPacking packs fields and noise taken from the input, then unpacks
// them: any field values a sum can hold and any noise within the bound
// come back exactly; and any residues at all decode to fields or to a
// refusal, never a crash.
func FuzzPacking(f *testing.F) {
	f.Add([]byte{0xff, 0xff, 0xff, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})
	f.Add(make([]byte, 64))
	p := RegionParams()
	n := 1 << p.logN
	top := uint64(p.MaxParties()) * (uint64(1)<<p.quantBits - 1)
	worst := int64(p.worstNoise())
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 8 {
			return
		}
		e := int64(binary.LittleEndian.Uint64(in))%(2*worst+1) - worst
		in = in[8:]
		want := make([]uint64, p.fieldsPerCoeff())
		for g := range want {
			if 4*g+4 <= len(in) {
				want[g] = uint64(binary.LittleEndian.Uint32(in[4*g:])) % (top + 1)
			}
		}
		x := p.rlwe.RingQ().NewPoly()
		c := len(in) % n
		fields := make([]uint64, p.SlotsPerCiphertext())
		copy(fields[c*len(want):], want)
		p.pack(x, fields)
		addNoise(p, x, c, e)
		got := make([]uint64, len(want))
		if !p.unpack(x, c, got) {
			t.Fatalf("fields %v with noise %d do not fit", want, e)
		}
		for g := range want {
			if got[g] != want[g] {
				t.Fatalf("field %d: %d, want %d (noise %d)", g, got[g], want[g], e)
			}
		}
		// Arbitrary residues: decode or refuse, nothing else.
		for j, q := range p.rlwe.Q() {
			x.Coeffs[j][c] = binary.LittleEndian.Uint64(append(in, make([]byte, 8)...)[:8]) % q
		}
		p.unpack(x, c, got)
	})
}

// TestWideValues sums updates whose last values are wide: statistics-like
// sums and counts at a large clip norm come back within a few WideBits
// steps (exact after rounding to integers), while the narrow values keep
// QuantBits. An update of another shape is refused by the aggregate.
func TestWideValues(t *testing.T) {
	r := ceremony(t, 3, 2)
	const clip = 2e6
	b := binding("wide")
	shape := Shape{Len: 7, Wide: 4}
	vectors := [][]float64{
		{1e5, -3e5, 0, 123456, 98765.4321, -7, 3},
		{-2e5, 1e5, 5e4, 654321, 1234.5678, 0, 1e6},
		{0, 0, 1, 1, 2, 3, 4},
	}
	encrypt := func(from int, v []float64, wide int) *Update {
		u, err := r.parties[from].Encrypt(v, wide, 5, clip, b)
		if err != nil {
			t.Fatal(err)
		}
		return u
	}
	agg := NewAggregator(r.p, shape, clip, b)
	want := make([]float64, shape.Len)
	for h, v := range vectors {
		if err := agg.Add(encrypt(h, v, shape.Wide)); err != nil {
			t.Fatal(err)
		}
		for i := range v {
			want[i] += v[i]
		}
	}
	if err := agg.Add(encrypt(0, vectors[0], 0)); !errors.Is(err, ErrWrongShape) {
		t.Fatalf("narrow update into a wide aggregate: %v", err)
	}
	sum, _ := agg.Result()
	res, err := r.decrypt(t, sum, []uint32{1, 2, 3}, []uint32{1, 3})
	if err != nil {
		t.Fatal(err)
	}
	wideStep := clip / r.p.wideMax()
	for i, got := range res.Sum {
		tol := 3 * stepOf(r.p, clip)
		if i >= shape.narrow() {
			tol = 3 * wideStep
		}
		if math.Abs(got-want[i]) > tol*(1+1e-9) {
			t.Fatalf("value %d: %.9f, want %.9f (tolerance %g)", i, got, want[i], tol)
		}
	}
	if wideStep > 1e-7 {
		t.Fatalf("a wide step at clip 2e6 is %g", wideStep)
	}
	if res.Count != 15 {
		t.Fatalf("count %d", res.Count)
	}
}

// TestAddEncoded folds updates straight from their bytes: the sum is the
// one Add makes, the digests agree, and an update the aggregate refuses
// (another binding, a tampered residue) changes nothing.
func TestAddEncoded(t *testing.T) {
	r := ceremony(t, 3, 2)
	b := binding("encoded")
	shape := Shape{Len: 60_000, Wide: 10}
	rng := rand.New(rand.NewPCG(9, 10))
	decoded := NewAggregator(r.p, shape, 1, b)
	encoded := NewAggregator(r.p, shape, 1, b)
	var raws [][]byte
	for h := range 3 {
		u, err := r.parties[h].Encrypt(randomUpdate(rng, shape.Len, 1), shape.Wide, 9, 1, b)
		if err != nil {
			t.Fatal(err)
		}
		raw, _ := u.MarshalBinary()
		raws = append(raws, raw)
		e, err := OpenUpdate(r.p, shape, raw)
		if err != nil {
			t.Fatal(err)
		}
		if e.Digest() != u.Digest() || e.Binding() != b || e.Clip() != 1 || e.Parties() != 1 {
			t.Fatal("the parsed header or digest differs from the update's")
		}
		if err := decoded.Add(u); err != nil {
			t.Fatal(err)
		}
		if h == 2 {
			break // the last one goes in after the refusals below
		}
		if err := encoded.AddEncoded(e); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := encoded.Result()
	// A residue above its prime (8 bytes of ones: the last residue, 2^34-1,
	// above the noise prime; the first, above the first message prime) is
	// refused by the fold itself, which takes back what it added of the
	// update.
	for _, at := range []int{len(raws[2]) - 8, r.p.updateFixed()} {
		bad := slices.Clone(raws[2])
		copy(bad[at:], bytes.Repeat([]byte{0xff}, 8))
		opened, err := OpenUpdate(r.p, shape, bad)
		if err != nil {
			t.Fatal(err)
		}
		if err := encoded.AddEncoded(opened); !errors.Is(err, ErrMalformed) {
			t.Fatalf("a residue above its prime, at byte %d: %v", at, err)
		}
		if after, _ := encoded.Result(); after.Digest() != before.Digest() || encoded.Len() != 2 {
			t.Fatalf("the refused fold of a bad residue at byte %d changed the aggregate", at)
		}
	}
	// An update added and subtracted again leaves the aggregate as it was.
	good, err := OpenUpdate(r.p, shape, raws[2])
	if err != nil {
		t.Fatal(err)
	}
	if err := encoded.AddEncoded(good); err != nil {
		t.Fatal(err)
	}
	if err := encoded.SubtractEncoded(good); err != nil {
		t.Fatal(err)
	}
	if after, _ := encoded.Result(); after.Digest() != before.Digest() || encoded.Len() != 2 || after.Parties() != 2 {
		t.Fatal("an update added and subtracted changed the aggregate")
	}
	other, _ := r.parties[2].Encrypt(make([]float64, shape.Len), shape.Wide, 1, 1, binding("other"))
	otherRaw, _ := other.MarshalBinary()
	e, err := OpenUpdate(r.p, shape, otherRaw)
	if err != nil {
		t.Fatal(err)
	}
	if err := encoded.AddEncoded(e); !errors.Is(err, ErrBindingMismatch) {
		t.Fatalf("another binding: %v", err)
	}
	if after, _ := encoded.Result(); after.Digest() != before.Digest() || encoded.Len() != 2 {
		t.Fatal("a refused update changed the aggregate")
	}
	last, _ := OpenUpdate(r.p, shape, raws[2])
	if err := encoded.AddEncoded(last); err != nil {
		t.Fatal(err)
	}
	got, _ := encoded.Result()
	want, _ := decoded.Result()
	if got.Digest() != want.Digest() {
		t.Fatal("AddEncoded and Add make different sums")
	}
}

// TestCommittee: in a region of 12 parties whose first 4 hold the Shamir
// shares (threshold 3), every party encrypts, any 3 committee members
// decrypt the sum of all 12, and a party off the committee neither opens
// shares nor makes a decryption share. Party state round-trips on and off
// the committee.
func TestCommittee(t *testing.T) {
	const n, c, th = 12, 4, 3
	r := committeeCeremony(t, LargeRegionParams(), n, c, th)
	b := binding("committee")
	shape := Values(5000)
	rng := rand.New(rand.NewPCG(11, 12))
	agg := NewAggregator(r.p, shape, 1, b)
	want := make([]float64, shape.Len)
	all := make([]uint32, n)
	for i, pa := range r.parties {
		v := randomUpdate(rng, shape.Len, 1)
		u, err := pa.Encrypt(v, 0, 3, 1, b)
		if err != nil {
			t.Fatal(err)
		}
		if err := agg.Add(u); err != nil {
			t.Fatal(err)
		}
		for j := range v {
			want[j] += v[j]
		}
		all[i] = uint32(i + 1)
	}
	sum, _ := agg.Result()
	res, err := r.decrypt(t, sum, all, []uint32{1, 3, 4})
	if err != nil {
		t.Fatal(err)
	}
	checkSum(t, r.p, res.Sum, want, n, 1)
	if res.Count != 3*n {
		t.Fatalf("count %d", res.Count)
	}
	outsider := r.parties[6]
	if outsider.Holder() || !r.parties[3].Holder() {
		t.Fatal("committee membership")
	}
	if _, err := outsider.DecryptionShare(sum, all, []uint32{1, 3, 7}); !errors.Is(err, ErrWrongShape) {
		t.Fatalf("a decryption share off the committee: %v", err)
	}
	if _, err := r.parties[0].DecryptionShare(sum, all, []uint32{1, 3, 5}); !errors.Is(err, ErrWrongShape) {
		t.Fatalf("an active set naming a party off the committee: %v", err)
	}
	if err := outsider.OpenShares(r.hpkePriv[6], nil, r.seed); !errors.Is(err, ErrWrongShape) {
		t.Fatalf("opening shares off the committee: %v", err)
	}
	for _, pa := range []*Party{outsider, r.parties[1]} {
		raw, _ := pa.MarshalBinary()
		back, err := UnmarshalParty(r.p, raw)
		if err != nil {
			t.Fatal(err)
		}
		again, _ := back.MarshalBinary()
		if !bytes.Equal(raw, again) || back.Ready() != pa.Ready() || back.Holder() != pa.Holder() {
			t.Fatalf("party %d does not round-trip", pa.Self())
		}
	}
	if _, err := NewCommitteeParty(r.p, 1, n, n+1, th, r.seed); !errors.Is(err, ErrWrongShape) {
		t.Fatalf("a committee larger than the region: %v", err)
	}
	if _, err := NewCommitteeParty(r.p, 1, n, c, c+1, r.seed); !errors.Is(err, ErrWrongShape) {
		t.Fatalf("a threshold above the committee: %v", err)
	}
}
