package he_test

import (
	"crypto/rand"
	"fmt"

	"regionfl/he"
)

// A region of three hospitals where any two can decrypt. In production
// each step runs on a different machine and the coordinator relays the
// messages; here everything runs in one process.
func Example() {
	p := he.RegionParams()
	const n, t = 3, 2
	seed := make([]byte, he.SeedLen) // the region's public seed, committed in the log
	rand.Read(seed)

	// 1. Key ceremony: each hospital makes its secret state and an HPKE key
	// to receive its Shamir shares.
	parties := make([]*he.Party, n)
	hpkePriv := make([][]byte, n)
	recipients := map[uint32][]byte{}
	for i := range parties {
		parties[i], _ = he.NewParty(p, uint32(i+1), n, t, seed)
		var pub []byte
		hpkePriv[i], pub, _ = he.NewHPKEKey()
		recipients[uint32(i+1)] = pub
	}

	// 2. Threshold: every hospital seals a Shamir share to every other one;
	// the coordinator relays them without being able to open them.
	inbox := map[uint32][]*he.SealedShare{}
	for _, pa := range parties {
		sealed, _ := pa.SealShares(recipients, seed)
		for _, s := range sealed {
			inbox[s.To] = append(inbox[s.To], s)
		}
	}
	for i, pa := range parties {
		if err := pa.OpenShares(hpkePriv[i], inbox[pa.Self()], seed); err != nil {
			fmt.Println(err)
			return
		}
	}

	// 3. A round: each hospital encrypts its update (clip norm 10) with its
	// sample count under its own key; the coordinator sums them without
	// decrypting anything.
	var round [32]byte
	copy(round[:], "job-1/round-1/model-hash")
	updates := [][]float64{{1, 2, 3}, {0.5, -1, 0}, {100, 0, 0}} // the last is clipped to norm 10
	counts := []uint64{120, 80, 200}
	agg := he.NewAggregator(p, he.Values(3), 10, round)
	for i, u := range updates {
		ct, _ := parties[i].Encrypt(u, 0, counts[i], 10, round)
		if err := agg.Add(ct); err != nil {
			fmt.Println(err)
			return
		}
	}
	sum, _ := agg.Result()

	// 4. Decryption: the coordinator picks two hospitals; each sends a share
	// of the decryption of the sum of the three contributors' updates, for
	// this set of decryptors; only the sum is revealed.
	contributors := []uint32{1, 2, 3}
	active := []uint32{1, 3}
	var shares []*he.DecryptionShare
	for _, a := range active {
		s, _ := parties[a-1].DecryptionShare(sum, contributors, active)
		shares = append(shares, s)
	}
	res, err := he.Combine(p, sum, shares, t)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("sum: [%.2f %.2f %.2f]\n", res.Sum[0], res.Sum[1], res.Sum[2])
	fmt.Println("samples:", res.Count)

	// One share is not enough.
	_, err = he.Combine(p, sum, shares[:1], t)
	fmt.Println(err)
	// Output:
	// sum: [11.50 1.00 3.00]
	// samples: 400
	// he: too few shares: 1 decryption shares, threshold is 2
}
