package he

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/tuneinsight/lattigo/v5/ring"
)

func binding(s string) [32]byte {
	var b [32]byte
	copy(b[:], s)
	return b
}

// randomUpdate returns length values with L2 norm about norm.
func randomUpdate(rng *rand.Rand, length int, norm float64) []float64 {
	v := make([]float64, length)
	var sq float64
	for i := range v {
		v[i] = rng.NormFloat64()
		sq += v[i] * v[i]
	}
	f := norm / math.Sqrt(sq)
	for i := range v {
		v[i] *= f
	}
	return v
}

func relErr(got, want []float64) float64 {
	var e, n float64
	for i := range want {
		d := got[i] - want[i]
		e += d * d
		n += want[i] * want[i]
	}
	return math.Sqrt(e / n)
}

func TestParams(t *testing.T) {
	p := RegionParams()
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if p.Name() != "rlwe-n13-b16-p64" || p.SlotsPerCiphertext() != 6*8192 || p.MaxParties() != 64 || p.QuantBits() != 16 {
		t.Fatalf("region params: %s %d %d", p.Name(), p.SlotsPerCiphertext(), p.MaxParties())
	}
	large := LargeRegionParams()
	if large.MaxParties() != 1024 || large.SlotsPerCiphertext() != 4*8192 {
		t.Fatalf("large params: %s %d %d", large.Name(), large.SlotsPerCiphertext(), large.MaxParties())
	}
	for _, q := range []Params{p, large} {
		if got, err := ParamsByName(q.Name()); err != nil || got.Name() != q.Name() {
			t.Fatalf("ParamsByName(%s): %v", q.Name(), err)
		}
		// The promise of the package doc: under 4 bytes per value at 64
		// hospitals of headroom, and the bound logQP <= 218.
		perValue := float64(UpdateSize(q, Values(1_000_000))) / 1e6
		t.Logf("%s: log2 QP %.1f, %.2f bytes per value at 1M values", q.Name(), q.rlwe.LogQP(), perValue)
		if q.Name() == RegionParamsName && perValue > 3.65 {
			t.Fatalf("%s: %.2f bytes per value", q.Name(), perValue)
		}
	}
	for n, want := range map[int]string{1: RegionParamsName, 64: RegionParamsName, 65: LargeRegionParamsName, 1024: LargeRegionParamsName} {
		if got, err := ParamsFor(n); err != nil || got.Name() != want {
			t.Fatalf("ParamsFor(%d) = %s, %v; want %s", n, got.Name(), err, want)
		}
	}
	if _, err := ParamsFor(1025); !errors.Is(err, ErrWrongShape) {
		t.Fatalf("ParamsFor(1025): %v", err)
	}
	if _, err := ParamsByName("ckks-n13-q60-s54"); !errors.Is(err, ErrWrongParams) {
		t.Fatalf("retired name: %v", err)
	}
	if err := (Params{}).Validate(); !errors.Is(err, ErrWrongParams) {
		t.Fatalf("zero params: %v", err)
	}
	if UpdateSize(Params{}, Values(10)) != 0 || UpdateSize(p, Values(0)) != 0 || UpdateSize(p, Values(MaxLength+1)) != 0 {
		t.Fatal("UpdateSize accepts invalid input")
	}
	unsafe := []struct {
		name                                          string
		logN, logP, b, h, perPrime, primes, smudge, d int
	}{
		{"logQP above the 128-bit bound", 12, 36, 16, 6, 2, 3, 24, 1 << 12},
		{"fields beyond a prime", 13, 36, 16, 6, 3, 1, 24, 1 << 12},
		{"too much headroom", 13, 36, 16, 11, 2, 1, 24, 1 << 12},
		{"smudging too small", 13, 36, 16, 6, 2, 3, 16, 1 << 12},
		{"too many decryptions", 13, 36, 16, 6, 2, 3, 24, 1 << 24},
		{"too many primes", 13, 36, 16, 10, 2, 3, 24, 1 << 12},
	}
	for _, c := range unsafe {
		t.Run(c.name, func(t *testing.T) {
			_, err := newParams("test", c.logN, c.logP, c.b, c.h, c.perPrime, c.primes, c.smudge, c.d)
			if !errors.Is(err, ErrWrongParams) {
				t.Fatalf("accepted: %v", err)
			}
		})
	}
}

func TestCeremonyAndEveryThresholdSubset(t *testing.T) {
	const n, th, length = 5, 3, 100_000 // 3 ciphertexts
	r := ceremony(t, n, th)
	rng := rand.New(rand.NewPCG(1, 2))
	b := binding("job/1/round/1")
	agg := NewAggregator(r.p, Values(length), 10, b)
	want := make([]float64, length)
	var wantCount uint64
	for h := range n {
		v := randomUpdate(rng, length, 10)
		count := uint64(1000*h + 7)
		u := r.encrypt(t, uint32(h+1), v, count, 10, b)
		if u.NumCiphertexts() != 3 || u.Len() != length || u.Clip() != 10 || u.Binding() != b || u.Parties() != 1 {
			t.Fatalf("update shape: %d %d %g", u.NumCiphertexts(), u.Len(), u.Clip())
		}
		if err := agg.Add(u); err != nil {
			t.Fatal(err)
		}
		for i := range v {
			want[i] += v[i]
		}
		wantCount += count
	}
	if agg.Len() != n {
		t.Fatalf("Len %d", agg.Len())
	}
	sum, err := agg.Result()
	if err != nil {
		t.Fatal(err)
	}
	all := []uint32{5, 1, 2, 3, 4} // unsorted: order must not matter
	subsets := 0
	for a := uint32(1); a <= n; a++ {
		for b := a + 1; b <= n; b++ {
			for c := b + 1; c <= n; c++ {
				// Pass the set unsorted for one of them: order must not matter.
				active := []uint32{c, a, b}
				res, err := r.decrypt(t, sum, all, active)
				if err != nil {
					t.Fatalf("subset %v: %v", active, err)
				}
				checkSum(t, r.p, res.Sum, want, n, 10)
				if res.Count != wantCount {
					t.Fatalf("subset %v: count %d, want %d", active, res.Count, wantCount)
				}
				subsets++
			}
		}
	}
	if subsets != 10 {
		t.Fatalf("%d subsets", subsets)
	}

	// Two shares are not enough.
	var two []*DecryptionShare
	for _, a := range []uint32{1, 2} {
		s, err := r.parties[a-1].DecryptionShare(sum, all, []uint32{1, 2, 3})
		if err != nil {
			t.Fatal(err)
		}
		two = append(two, s)
	}
	if _, err := Combine(r.p, sum, two, th); !errors.Is(err, ErrTooFewShares) {
		t.Fatalf("2 of 3 shares: %v", err)
	}
	// Claiming a threshold of 2 does not help: the shares name a set of 3.
	if _, err := Combine(r.p, sum, two, 2); !errors.Is(err, ErrShareMismatch) {
		t.Fatalf("2 shares with t=2: %v", err)
	}
}

func TestMillionValues(t *testing.T) {
	if testing.Short() {
		t.Skip("1M-value aggregate in -short mode")
	}
	const n, th, length, clip = 5, 3, 1_000_000, 1.0
	r := ceremony(t, n, th)
	rng := rand.New(rand.NewPCG(3, 4))
	b := binding("1M")
	agg := NewAggregator(r.p, Values(length), clip, b)
	want := make([]float64, length)
	var wantCount uint64
	for h := range uint32(n) {
		// Independent updates at the full clip norm: the hardest case for
		// relative error (the sum is only sqrt(n) times one update).
		v := randomUpdate(rng, length, clip*(1-1e-9))
		if err := agg.Add(r.encrypt(t, h+1, v, 1<<30, clip, b)); err != nil {
			t.Fatal(err)
		}
		for i := range v {
			want[i] += v[i]
		}
		wantCount += 1 << 30
	}
	sum, err := agg.Result()
	if err != nil {
		t.Fatal(err)
	}
	res, err := r.decrypt(t, sum, []uint32{1, 2, 3, 4, 5}, []uint32{2, 4, 5})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("1M values, 5 hospitals: relative L2 error %.3g, %.2f bytes/value", relErr(res.Sum, want), float64(UpdateSize(r.p, Values(length)))/length)
	checkSum(t, r.p, res.Sum, want, n, clip)
	if res.Count != wantCount {
		t.Fatalf("count %d, want %d", res.Count, wantCount)
	}
}

func TestEncryptRefusesBadInput(t *testing.T) {
	r := ceremony(t, 1, 1)
	b := binding("x")
	cases := []struct {
		name   string
		values []float64
		count  uint64
		clip   float64
		want   error
	}{
		{"NaN", []float64{1, math.NaN()}, 1, 1, ErrInvalidValue},
		{"+Inf", []float64{math.Inf(1)}, 1, 1, ErrInvalidValue},
		{"-Inf", []float64{0, 0, math.Inf(-1)}, 1, 1, ErrInvalidValue},
		{"zero clip", []float64{1}, 1, 0, ErrInvalidValue},
		{"negative clip", []float64{1}, 1, -1, ErrInvalidValue},
		{"NaN clip", []float64{1}, 1, math.NaN(), ErrInvalidValue},
		{"Inf clip", []float64{1}, 1, math.Inf(1), ErrInvalidValue},
		{"count too large", []float64{1}, MaxCount + 1, 1, ErrInvalidValue},
		{"empty", nil, 1, 1, ErrWrongShape},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := r.parties[0].Encrypt(c.values, 0, c.count, c.clip, b); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	fresh, err := NewParty(r.p, 1, 1, 1, r.seed)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.Encrypt([]float64{1}, 0, 1, 1, b); !errors.Is(err, ErrNotReady) {
		t.Fatalf("before the ceremony: %v", err)
	}
}

func TestClipping(t *testing.T) {
	r := ceremony(t, 3, 2)
	cases := []struct {
		name   string
		values []float64
		clip   float64
		want   []float64
	}{
		{"long vector is scaled to the clip norm", []float64{30, -40, 0}, 5, []float64{3, -4, 0}},
		{"short vector is unchanged", []float64{0.3, -0.4, 0.1}, 5, []float64{0.3, -0.4, 0.1}},
		{"huge values do not overflow the norm", []float64{1e300, 1e300}, 2, []float64{math.Sqrt2, math.Sqrt2}},
		{"zero vector", []float64{0, 0, 0}, 1, []float64{0, 0, 0}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u := r.encrypt(t, 2, c.values, 3, c.clip, binding("clip/"+c.name))
			res, err := r.decrypt(t, u, []uint32{2}, []uint32{1, 3})
			if err != nil {
				t.Fatal(err)
			}
			checkSum(t, r.p, res.Sum, c.want, 1, c.clip)
			if res.Count != 3 {
				t.Fatalf("count %d", res.Count)
			}
		})
	}
}

func TestAggregatorRefuses(t *testing.T) {
	r := ceremony(t, 2, 2)
	b := binding("job")
	mk := func(length int, clip float64, bind [32]byte) *Update {
		return r.encrypt(t, 1, make([]float64, length), 1, clip, bind)
	}
	good := mk(100, 1, b)
	cases := []struct {
		name string
		u    *Update
		want error
	}{
		{"wrong binding", mk(100, 1, binding("other")), ErrBindingMismatch},
		{"wrong clip", mk(100, 2, b), ErrBindingMismatch},
		{"wrong length", mk(101, 1, b), ErrWrongShape},
		{"nil", nil, ErrInvalidValue},
	}
	agg := NewAggregator(r.p, Values(100), 1, b)
	if err := agg.Add(good); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := agg.Add(c.u); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
	if agg.Len() != 1 {
		t.Fatalf("refused updates were counted: %d", agg.Len())
	}
	for agg.Len() < r.p.MaxParties() {
		if err := agg.Add(good); err != nil {
			t.Fatal(err)
		}
	}
	if err := agg.Add(good); !errors.Is(err, ErrTooManyParties) {
		t.Fatalf("update %d: %v", r.p.MaxParties()+1, err)
	}
	if _, err := NewAggregator(r.p, Values(100), 1, b).Result(); !errors.Is(err, ErrEmptyAggregate) {
		t.Fatalf("empty: %v", err)
	}
	if err := NewAggregator(r.p, Values(0), 1, b).Add(good); !errors.Is(err, ErrWrongShape) {
		t.Fatalf("length 0: %v", err)
	}
	if err := NewAggregator(r.p, Values(100), 0, b).Add(good); !errors.Is(err, ErrInvalidValue) {
		t.Fatalf("clip 0: %v", err)
	}
}

func TestCombineRefuses(t *testing.T) {
	r := ceremony(t, 5, 3)
	b := binding("job")
	v := []float64{1, 2, 3}
	u1 := r.encrypt(t, 4, v, 10, 10, b)
	u2 := r.encrypt(t, 5, v, 10, 10, b)
	active := []uint32{1, 2, 3}
	shares := func(agg *Update, active []uint32, from ...uint32) []*DecryptionShare {
		var out []*DecryptionShare
		contributors := []uint32{4}
		if agg == u2 {
			contributors = []uint32{5}
		}
		for _, f := range from {
			s, err := r.parties[f-1].DecryptionShare(agg, contributors, active)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, s)
		}
		return out
	}
	good := shares(u1, active, 1, 2, 3)
	otherSet, err := r.parties[2].DecryptionShare(u1, []uint32{5}, active)
	if err != nil {
		t.Fatal(err)
	}
	tampered := func() *DecryptionShare {
		raw, _ := good[1].MarshalBinary()
		raw[len(raw)-8*100] ^= 1 // one bit of one coefficient
		s, err := UnmarshalDecryptionShare(r.p, raw)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}()
	cases := []struct {
		name   string
		shares []*DecryptionShare
		want   error
	}{
		{"two shares", good[:2], ErrTooFewShares},
		{"duplicate", []*DecryptionShare{good[0], good[1], good[1]}, ErrDuplicateShare},
		{"share for another aggregate", append(good[:2:2], shares(u2, active, 3)...), ErrShareMismatch},
		{"share for another active set", append(good[:2:2], shares(u1, []uint32{1, 2, 4}, 4)...), ErrShareMismatch},
		{"share for another contributor set", append(good[:2:2], otherSet), ErrShareMismatch},
		{"tampered share", []*DecryptionShare{good[0], tampered, good[2]}, ErrDecrypt},
		{"nil share", []*DecryptionShare{good[0], nil, good[2]}, ErrInvalidValue},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Combine(r.p, u1, c.shares, 3)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			t.Log(err)
		})
	}
	if res, err := Combine(r.p, u1, good, 3); err != nil || math.Abs(res.Sum[2]-3) > 3*stepOf(r.p, 10) {
		t.Fatalf("good shares: %v", err)
	}
	// Decryptors refuse bad active sets.
	for _, set := range [][]uint32{{1, 2}, {1, 2, 2}, {1, 2, 6}, {2, 3, 4}} {
		if _, err := r.parties[0].DecryptionShare(u1, []uint32{4}, set); !errors.Is(err, ErrWrongShape) {
			t.Fatalf("active set %v: %v", set, err)
		}
	}
	// ... and contributor sets that are malformed or do not match the
	// aggregate's update count.
	for _, c := range []struct {
		set  []uint32
		want error
	}{{nil, ErrWrongShape}, {[]uint32{6}, ErrWrongShape}, {[]uint32{4, 4}, ErrWrongShape}, {[]uint32{4, 5}, ErrShareMismatch}} {
		if _, err := r.parties[0].DecryptionShare(u1, c.set, active); !errors.Is(err, c.want) {
			t.Fatalf("contributors %v: %v, want %v", c.set, err, c.want)
		}
	}
}

func TestCeremonyRefuses(t *testing.T) {
	p := RegionParams()
	seed := newSeed(t)
	if _, err := NewParty(p, 0, 3, 2, seed); !errors.Is(err, ErrWrongShape) {
		t.Fatalf("point 0: %v", err)
	}
	if _, err := NewParty(p, 1, 3, 4, seed); !errors.Is(err, ErrWrongShape) {
		t.Fatalf("t > n: %v", err)
	}
	if _, err := NewParty(p, 1, p.MaxParties()+1, 2, seed); !errors.Is(err, ErrWrongShape) {
		t.Fatalf("n > MaxParties: %v", err)
	}
	if _, err := NewParty(p, 1, 3, 2, seed[:31]); !errors.Is(err, ErrInvalidValue) {
		t.Fatalf("short seed: %v", err)
	}

	r := ceremony(t, 3, 2)
	recipients := map[uint32][]byte{}
	var pubs [][]byte
	for i := range 3 {
		_, pub, _ := NewHPKEKey()
		pubs = append(pubs, pub)
		recipients[uint32(i+1)] = pub
	}
	// Re-run the sealing with the ceremony's keys to test opening.
	realRecipients := map[uint32][]byte{}
	for i := range 3 {
		priv := r.hpkePriv[i]
		k, _ := hpkeKEM().NewPrivateKey(priv)
		realRecipients[uint32(i+1)] = k.PublicKey().Bytes()
	}
	var toOne []*SealedShare
	for _, pa := range r.parties {
		sealed, err := pa.SealShares(realRecipients, r.seed)
		if err != nil {
			t.Fatal(err)
		}
		toOne = append(toOne, sealed[0])
	}
	fresh, _ := NewParty(p, 1, 3, 2, r.seed)
	cases := []struct {
		name    string
		shares  []*SealedShare
		context []byte
		want    error
	}{
		{"wrong context", toOne, []byte("another ceremony"), ErrDecrypt},
		{"missing share", toOne[:2], r.seed, ErrTooFewShares},
		{"duplicate", []*SealedShare{toOne[0], toOne[1], toOne[1]}, r.seed, ErrDuplicateShare},
		{"readdressed", []*SealedShare{toOne[0], toOne[1], {From: 3, To: 2, Sealed: toOne[2].Sealed}}, r.seed, ErrShareMismatch},
		{"swapped sender", []*SealedShare{toOne[0], {From: 3, To: 1, Sealed: toOne[1].Sealed}, {From: 2, To: 1, Sealed: toOne[2].Sealed}}, r.seed, ErrDecrypt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := fresh.OpenShares(r.hpkePriv[0], c.shares, c.context); !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if fresh.Ready() {
				t.Fatal("party became ready")
			}
		})
	}
	if _, err := r.parties[0].SealShares(map[uint32][]byte{1: pubs[0]}, r.seed); !errors.Is(err, ErrWrongShape) {
		t.Fatalf("missing recipients: %v", err)
	}
	// Resealing is deterministic in content: a node that crashes and repeats
	// the step hands out the same shares (here: the repeat opens fine into
	// the same key, checked by decrypting below).
	if err := r.parties[0].OpenShares(r.hpkePriv[0], toOne, r.seed); err != nil {
		t.Fatal(err)
	}
	u := r.encrypt(t, 1, []float64{0.5}, 1, 1, binding("x"))
	if res, err := r.decrypt(t, u, []uint32{1}, []uint32{1, 2}); err != nil || math.Abs(res.Sum[0]-0.5) > stepOf(r.p, 1) {
		t.Fatalf("after resealing: %v", err)
	}
}

func TestSerializationRoundTrips(t *testing.T) {
	r := ceremony(t, 3, 2)
	p := r.p
	u := r.encrypt(t, 3, []float64{1, -2, 3}, 42, 10, binding("rt"))

	t.Run("SealedShare", func(t *testing.T) {
		s := &SealedShare{From: 2, To: 3, Sealed: []byte("sealed bytes")}
		b1, _ := s.MarshalBinary()
		s2, err := UnmarshalSealedShare(b1)
		if err != nil {
			t.Fatal(err)
		}
		if s2.From != 2 || s2.To != 3 || !bytes.Equal(s2.Sealed, s.Sealed) {
			t.Fatal("round trip differs")
		}
	})
	t.Run("Update", func(t *testing.T) {
		b1, _ := u.MarshalBinary()
		if len(b1) != UpdateSize(p, Values(3)) {
			t.Fatalf("%d bytes, UpdateSize says %d", len(b1), UpdateSize(p, Values(3)))
		}
		u2, err := UnmarshalUpdate(p, Values(3), b1)
		if err != nil {
			t.Fatal(err)
		}
		b2, _ := u2.MarshalBinary()
		if !bytes.Equal(b1, b2) || u2.Digest() != u.Digest() {
			t.Fatal("round trip differs")
		}
		if u.Digest() == [32]byte{} {
			t.Fatal("zero digest")
		}
		// The digest kept by MarshalBinary and the one streamed without
		// the bytes are both the SHA-256 of the encoding.
		fresh, err := r.parties[0].Encrypt([]float64{0.25, -0.5, 1}, 0, 1, 1, [32]byte{7})
		if err != nil {
			t.Fatal(err)
		}
		b3, _ := fresh.MarshalBinary()
		streamed, _ := UnmarshalUpdate(p, Values(3), b3)
		if d := sha256.Sum256(b3); fresh.Digest() != d || streamed.Digest() != d {
			t.Fatal("the digests of an update differ from the SHA-256 of its encoding")
		}
		if _, err := UnmarshalUpdate(p, Values(4), b1); err == nil {
			t.Fatal("wrong length accepted")
		}
		res, err := r.decrypt(t, u2, []uint32{3}, []uint32{1, 2})
		if err != nil || res.Count != 42 || math.Abs(res.Sum[1]+2) > stepOf(r.p, 10) {
			t.Fatalf("decoded update: %v", err)
		}
	})
	t.Run("DecryptionShare", func(t *testing.T) {
		s, _ := r.parties[0].DecryptionShare(u, []uint32{3}, []uint32{1, 3})
		b1, _ := s.MarshalBinary()
		s2, err := UnmarshalDecryptionShare(p, b1)
		if err != nil {
			t.Fatal(err)
		}
		b2, _ := s2.MarshalBinary()
		if !bytes.Equal(b1, b2) || s2.From() != 1 || len(s2.Contributors()) != 1 || s2.Contributors()[0] != 3 {
			t.Fatal("round trip differs")
		}
	})
	t.Run("Party", func(t *testing.T) {
		// Before the ceremony ends ...
		fresh, _ := NewParty(p, 2, 3, 2, r.seed)
		b1, _ := fresh.MarshalBinary()
		f2, err := UnmarshalParty(p, b1)
		if err != nil {
			t.Fatal(err)
		}
		b2, _ := f2.MarshalBinary()
		if !bytes.Equal(b1, b2) || f2.Ready() || f2.Self() != 2 {
			t.Fatal("round trip differs")
		}
		if !p.rlwe.RingQP().Equal(fresh.sk.Value, f2.sk.Value) {
			t.Fatal("restored party derives another secret key")
		}
		// ... and after: a restored party decrypts.
		var restored []*Party
		for _, pa := range r.parties {
			b, _ := pa.MarshalBinary()
			q, err := UnmarshalParty(p, b)
			if err != nil {
				t.Fatal(err)
			}
			if !q.Ready() {
				t.Fatal("restored party not ready")
			}
			restored = append(restored, q)
		}
		rr := *r
		rr.parties = restored
		res, err := rr.decrypt(t, u, []uint32{3}, []uint32{2, 3})
		if err != nil || res.Count != 42 || math.Abs(res.Sum[2]-3) > 3*stepOf(r.p, 10) {
			t.Fatalf("restored parties: %v", err)
		}
		// A state written when shares were kept mod QP, eight bytes a
		// residue, still restores, and decrypts alike.
		var legacy []*Party
		for _, pa := range r.parties {
			b, _ := pa.MarshalBinary()
			w := &writer{b: slices.Clone(b[:p.partyLen(0, false)])}
			for _, sh := range pa.shares {
				w.poly(sh.Q)
				w.poly(sh.P)
			}
			if len(w.b) != p.legacyPartyLen(pa.n) || len(b) >= len(w.b) {
				t.Fatalf("legacy state of %d bytes, packed %d", len(w.b), len(b))
			}
			q, err := UnmarshalParty(p, w.b)
			if err != nil {
				t.Fatal(err)
			}
			legacy = append(legacy, q)
		}
		rr.parties = legacy
		res2, err := rr.decrypt(t, u, []uint32{3}, []uint32{2, 3})
		if err != nil || !slices.Equal(res2.Sum, res.Sum) {
			t.Fatalf("parties restored from the legacy state: %v", err)
		}
	})
	t.Run("cross-type and cross-params", func(t *testing.T) {
		ub, _ := u.MarshalBinary()
		if _, err := UnmarshalDecryptionShare(p, ub); !errors.Is(err, ErrMalformed) {
			t.Fatalf("update as share: %v", err)
		}
		pb, _ := r.parties[0].MarshalBinary()
		if _, err := UnmarshalUpdate(p, Values(3), pb); !errors.Is(err, ErrMalformed) {
			t.Fatalf("party state as update: %v", err)
		}
		other := p
		other.tag = [8]byte{1}
		if _, err := UnmarshalParty(other, pb); !errors.Is(err, ErrWrongParams) {
			t.Fatalf("other params: %v", err)
		}
		bad := bytes.Clone(ub)
		bad[4] = 9
		if _, err := UnmarshalUpdate(p, Values(3), bad); !errors.Is(err, ErrMalformed) {
			t.Fatalf("version 9: %v", err)
		}
		bad = bytes.Clone(ub)
		for i := len(bad) - 8; i < len(bad); i++ {
			bad[i] = 0xff // coefficient >= Q
		}
		if _, err := UnmarshalUpdate(p, Values(3), bad); !errors.Is(err, ErrMalformed) {
			t.Fatalf("unreduced coefficient: %v", err)
		}
	})
}

// TestErrorsNameTheField checks errors say what went wrong, for operators.
func TestErrorsNameTheField(t *testing.T) {
	_, err := UnmarshalUpdate(RegionParams(), Values(10), []byte("short"))
	if err == nil || !bytes.Contains([]byte(err.Error()), []byte("update of 5 bytes")) {
		t.Fatalf("error %q", fmt.Sprint(err))
	}
}

// TestUniformA: a is a function of the ceremony seed, the binding and the
// ciphertext index only, differs when any of them does, and has no zero
// residue (it is invertible in every NTT slot).
func TestUniformA(t *testing.T) {
	p := RegionParams()
	seed := seedHash(newSeed(t))
	b := binding("a")
	ringQ := p.rlwe.RingQ()
	a := p.uniformA(seed, b, 0)
	if !ringQ.Equal(a, p.uniformA(seed, b, 0)) {
		t.Fatal("uniformA is not deterministic")
	}
	for name, other := range map[string]ring.Poly{
		"binding": p.uniformA(seed, binding("other"), 0),
		"index":   p.uniformA(seed, b, 1),
		"seed":    p.uniformA(seedHash(newSeed(t)), b, 0),
	} {
		if ringQ.Equal(a, other) {
			t.Fatalf("another %s gives the same a", name)
		}
	}
	for j, q := range p.rlwe.Q() {
		for _, v := range a.Coeffs[j] {
			if v == 0 || v >= q {
				t.Fatalf("residue %d mod prime %d", v, j)
			}
		}
	}
}

// TestNobodyFakesAContributor is the forged-manifest attack: the
// coordinator holds one victim's update and wants it decrypted, so it adds
// encryptions of zero of its own making (under a key of its own) and names
// two other hospitals as their
// contributors. Every honest decryptor's share removes a·s_i of each named
// contributor, which the forgeries do not carry: the decryption is noise,
// and Combine's structure checks refuse it.
func TestNobodyFakesAContributor(t *testing.T) {
	r := ceremony(t, 4, 3)
	b := binding("job/round")
	victim := []float64{0.3, -0.2, 0.1}
	agg := NewAggregator(r.p, Values(len(victim)), 1, b)
	if err := agg.Add(r.encrypt(t, 1, victim, 40, 1, b)); err != nil {
		t.Fatal(err)
	}
	attacker := ceremony(t, 1, 1) // a key of the attacker's own, same seed space
	for range 2 {
		if err := agg.Add(attacker.encrypt(t, 1, make([]float64, len(victim)), 0, 1, b)); err != nil {
			t.Fatal(err)
		}
	}
	forged, _ := agg.Result()
	if _, err := r.decrypt(t, forged, []uint32{1, 2, 3}, []uint32{2, 3, 4}); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("forged contributors decrypted: %v", err)
	}

	// The victim's update alone, named as the sum of three contributors
	// whose updates it does not hold: noise again.
	alone := NewAggregator(r.p, Values(len(victim)), 1, b)
	if err := alone.Add(r.encrypt(t, 1, victim, 40, 1, b)); err != nil {
		t.Fatal(err)
	}
	one, _ := alone.Result()
	one.parties = 3 // the claimed count is the coordinator's to write
	if _, err := r.decrypt(t, one, []uint32{1, 2, 3}, []uint32{2, 3, 4}); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("one update decrypted as three: %v", err)
	}

	// A real contribution of the same hospital under another binding (an
	// earlier round) does not stand in for this round's: its a differs.
	relabel := NewAggregator(r.p, Values(len(victim)), 1, b)
	if err := relabel.Add(r.encrypt(t, 1, victim, 40, 1, b)); err != nil {
		t.Fatal(err)
	}
	old := r.encrypt(t, 2, make([]float64, len(victim)), 1, 1, binding("job/earlier round"))
	old.binding = b // the coordinator rewrites the header
	if err := relabel.Add(old); err != nil {
		t.Fatal(err)
	}
	mixed, _ := relabel.Result()
	if _, err := r.decrypt(t, mixed, []uint32{1, 2}, []uint32{2, 3, 4}); !errors.Is(err, ErrDecrypt) {
		t.Fatalf("an update of another round stood in: %v", err)
	}
}
