package he

import (
	"crypto/rand"
	"math"
	"testing"
)

// region is a completed key ceremony, as the nodes and the coordinator would
// run it, but in one process.
type region struct {
	p        Params
	seed     []byte
	parties  []*Party // parties[i] is at point i+1
	hpkePriv [][]byte
}

func newSeed(tb testing.TB) []byte {
	tb.Helper()
	s := make([]byte, SeedLen)
	if _, err := rand.Read(s); err != nil {
		tb.Fatal(err)
	}
	return s
}

// ceremony runs the whole key ceremony for n parties with threshold t.
func ceremony(tb testing.TB, n, t int) *region {
	tb.Helper()
	return committeeCeremony(tb, RegionParams(), n, n, t)
}

// committeeCeremony runs the key ceremony of n parties under p whose first
// c hold the Shamir shares, with threshold t.
func committeeCeremony(tb testing.TB, p Params, n, c, t int) *region {
	tb.Helper()
	r := &region{p: p, seed: newSeed(tb)}
	recipients := map[uint32][]byte{}
	for i := 1; i <= n; i++ {
		pa, err := NewCommitteeParty(r.p, uint32(i), n, c, t, r.seed)
		if err != nil {
			tb.Fatal(err)
		}
		r.parties = append(r.parties, pa)
		priv, pub, err := NewHPKEKey()
		if err != nil {
			tb.Fatal(err)
		}
		r.hpkePriv = append(r.hpkePriv, priv)
		if i <= c {
			recipients[uint32(i)] = pub
		}
	}
	inbox := make([][]*SealedShare, n+1)
	for _, pa := range r.parties {
		sealed, err := pa.SealShares(recipients, r.seed)
		if err != nil {
			tb.Fatal(err)
		}
		for _, s := range sealed {
			if b, err := s.MarshalBinary(); err != nil || len(b) != SealedShareSize(r.p) {
				tb.Fatalf("sealed share of %d bytes (%v), SealedShareSize says %d", len(b), err, SealedShareSize(r.p))
			}
			inbox[s.To] = append(inbox[s.To], s)
		}
	}
	for i, pa := range r.parties[:c] {
		if err := pa.OpenShares(r.hpkePriv[i], inbox[i+1], r.seed); err != nil {
			tb.Fatal(err)
		}
	}
	for _, pa := range r.parties {
		if !pa.Ready() {
			tb.Fatalf("party %d not ready after the ceremony", pa.Self())
		}
	}
	return r
}

// decrypt has the parties at the given active points make shares of the
// decryption of the sum of the contributors' updates, and combines them.
func (r *region) decrypt(tb testing.TB, agg *Update, contributors, active []uint32) (*Result, error) {
	tb.Helper()
	shares := make([]*DecryptionShare, 0, len(active))
	for _, a := range active {
		s, err := r.parties[a-1].DecryptionShare(agg, contributors, active)
		if err != nil {
			tb.Fatal(err)
		}
		shares = append(shares, s)
	}
	return Combine(r.p, agg, shares, len(active))
}

// encrypt has the party at point from encrypt v.
func (r *region) encrypt(tb testing.TB, from uint32, v []float64, count uint64, clip float64, b [32]byte) *Update {
	tb.Helper()
	u, err := r.parties[from-1].Encrypt(v, 0, count, clip, b)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}

// checkSum holds a decrypted sum of k quantized updates to the bounds of
// stochastic rounding: each value within k quantization steps (one per
// update, a hard bound), and over long vectors an L2 error near its
// expectation, at most sqrt(length·k/4) steps (each rounding has variance
// at most 1/4 step²; 1.2 times that leaves the chance of a false alarm
// far below 2^-40 from 1,000 values on).
func checkSum(tb testing.TB, p Params, got, want []float64, k int, clip float64) {
	tb.Helper()
	if len(got) != len(want) {
		tb.Fatalf("%d values, want %d", len(got), len(want))
	}
	step := clip / p.quantMax()
	var sq float64
	for i := range got {
		d := got[i] - want[i]
		if math.Abs(d) > float64(k)*step*(1+1e-9) {
			tb.Fatalf("value %d: got %g, want %g (more than %d steps of %g)", i, got[i], want[i], k, step)
		}
		sq += d * d
	}
	if len(got) >= 1000 {
		if bound := 1.2 * math.Sqrt(float64(len(got)*k)/4) * step; math.Sqrt(sq) > bound {
			tb.Fatalf("L2 error %g exceeds %g", math.Sqrt(sq), bound)
		}
	}
}

// stepOf is one quantization step of a value of an update clipped at clip.
func stepOf(p Params, clip float64) float64 { return clip / p.quantMax() }
