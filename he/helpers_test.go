package he

import (
	"crypto/rand"
	"testing"
)

// region is a completed key ceremony, as the nodes and the coordinator would
// run it, but in one process.
type region struct {
	p        Params
	seed     []byte
	parties  []*Party // parties[i] is at point i+1
	hpkePriv [][]byte
	pk       *PublicKey
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
	r := &region{p: RegionParams(), seed: newSeed(tb)}
	recipients := map[uint32][]byte{}
	var pkShares []*PublicKeyShare
	for i := 1; i <= n; i++ {
		pa, err := NewParty(r.p, uint32(i), n, t, r.seed)
		if err != nil {
			tb.Fatal(err)
		}
		r.parties = append(r.parties, pa)
		priv, pub, err := NewHPKEKey()
		if err != nil {
			tb.Fatal(err)
		}
		r.hpkePriv = append(r.hpkePriv, priv)
		recipients[uint32(i)] = pub
		s, err := pa.PublicKeyShare()
		if err != nil {
			tb.Fatal(err)
		}
		pkShares = append(pkShares, s)
	}
	var err error
	if r.pk, err = AggregatePublicKey(r.p, r.seed, n, pkShares); err != nil {
		tb.Fatal(err)
	}
	inbox := make([][]*SealedShare, n+1)
	for _, pa := range r.parties {
		sealed, err := pa.SealShares(recipients, r.seed)
		if err != nil {
			tb.Fatal(err)
		}
		for _, s := range sealed {
			inbox[s.To] = append(inbox[s.To], s)
		}
	}
	for i, pa := range r.parties {
		if err := pa.OpenShares(r.hpkePriv[i], inbox[i+1], r.seed); err != nil {
			tb.Fatal(err)
		}
		if !pa.Ready() {
			tb.Fatal("party not ready after OpenShares")
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
	u, err := r.parties[from-1].Encrypt(v, count, clip, b)
	if err != nil {
		tb.Fatal(err)
	}
	return u
}
