package he

import (
	"errors"
	"math/bits"
	"testing"
)

// TestCheckFold: an aggregate passes against its contributors'
// fingerprints only when it is exactly their sum. A coordinator that adds
// anything (one residue shifted by one, a fourth update in place of
// nothing) or leaves an update out is caught.
func TestCheckFold(t *testing.T) {
	// The soundness bound, (2/q)^4 <= 2^-128, needs primes of at least 2^33
	// in every parameter set.
	for _, p := range []Params{RegionParams(), LargeRegionParams()} {
		for _, q := range p.rlwe.Q() {
			if bits.Len64(q) < 34 {
				t.Fatalf("%s: a prime of %d bits", p.Name(), bits.Len64(q))
			}
		}
	}
	r := ceremony(t, 4, 3)
	b := binding("job/round")
	length := 2*r.p.SlotsPerCiphertext() + 5 // several ciphertexts
	var updates []*Update
	agg := NewAggregator(r.p, Values(length), 1, b)
	for i := uint32(1); i <= 3; i++ {
		v := make([]float64, length)
		for k := range v {
			v[k] = float64(int(i)*k%7-3) / 100
		}
		u := r.encrypt(t, i, v, 10, 1, b)
		updates = append(updates, u)
		if err := agg.Add(u); err != nil {
			t.Fatal(err)
		}
	}
	sum, err := agg.Result()
	if err != nil {
		t.Fatal(err)
	}
	d := sum.Digest()
	challenge := AggregateChallenge(d[:])
	var parts [][]byte
	for _, u := range updates {
		f := u.Fingerprint(challenge)
		if len(f) != FingerprintLen(r.p) {
			t.Fatalf("fingerprint of %d bytes, want %d", len(f), FingerprintLen(r.p))
		}
		parts = append(parts, f)
	}
	if err := CheckFold(r.p, sum, parts); err != nil {
		t.Fatalf("honest sum refused: %v", err)
	}

	// One residue of the last ciphertext shifted by one: a plaintext offset
	// is this, at a scale the coordinator picks.
	shifted := clone(sum)
	c := shifted.c0[len(shifted.c0)-1].Coeffs[0]
	c[3] = (c[3] + 1) % r.p.rlwe.Q()[0]
	if err := CheckFold(r.p, shifted, parts); !errors.Is(err, ErrShareMismatch) {
		t.Fatalf("shifted aggregate: %v", err)
	}

	// The sum of two of the three, claimed as three.
	two := NewAggregator(r.p, Values(length), 1, b)
	for _, u := range updates[:2] {
		if err := two.Add(u); err != nil {
			t.Fatal(err)
		}
	}
	short, _ := two.Result()
	short.parties = 3
	if err := CheckFold(r.p, short, parts); !errors.Is(err, ErrShareMismatch) {
		t.Fatalf("aggregate missing a contributor: %v", err)
	}
	// Fingerprints for a different challenge (another aggregate's) do not
	// vouch for this one.
	other := AggregateChallenge([]byte("another aggregate"))
	var stale [][]byte
	for _, u := range updates {
		stale = append(stale, u.Fingerprint(other))
	}
	if err := CheckFold(r.p, sum, stale); !errors.Is(err, ErrShareMismatch) {
		t.Fatalf("fingerprints of another challenge: %v", err)
	}
	// Malformed parts: a wrong count, a wrong length, an unreduced value.
	if err := CheckFold(r.p, sum, parts[:2]); !errors.Is(err, ErrShareMismatch) {
		t.Fatalf("two fingerprints for three updates: %v", err)
	}
	if err := CheckFold(r.p, sum, [][]byte{parts[0], parts[1], parts[2][1:]}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("short fingerprint: %v", err)
	}
	big := append([]byte(nil), parts[2]...)
	for i := range 8 {
		big[i] = 0xff
	}
	if err := CheckFold(r.p, sum, [][]byte{parts[0], parts[1], big}); !errors.Is(err, ErrMalformed) {
		t.Fatalf("unreduced fingerprint: %v", err)
	}
}

// clone copies an update's ciphertexts (tests tamper with the copy).
func clone(u *Update) *Update {
	c := &Update{p: u.p, shape: u.shape, parties: u.parties, clip: u.clip, binding: u.binding}
	for _, x := range u.c0 {
		c.c0 = append(c.c0, *x.CopyNew())
	}
	return c
}
