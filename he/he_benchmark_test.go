package he

import (
	"math/rand/v2"
	"testing"
	"time"
)

const benchLen = 1_000_000

// benchFixture: a region of 4 hospitals with threshold 3 (the prototype's
// shape) and one encrypted 1M-value update.
func benchFixture(b *testing.B) (*region, *Party, []float64, *Update) {
	b.Helper()
	r := ceremony(b, 4, 3)
	enc := r.parties[0]
	v := randomUpdate(rand.New(rand.NewPCG(5, 6)), benchLen, 1)
	u, err := enc.Encrypt(v, 0, 1000, 1, binding("bench"))
	if err != nil {
		b.Fatal(err)
	}
	return r, enc, v, u
}

func perMillion(b *testing.B, d time.Duration) float64 {
	return float64(d.Nanoseconds()) / 1e6 / float64(b.N) * 1e6 / benchLen
}

func BenchmarkEncrypt1M(b *testing.B) {
	r, enc, v, _ := benchFixture(b)
	b.SetBytes(benchLen * 8)
	b.ResetTimer()
	for b.Loop() {
		if _, err := enc.Encrypt(v, 0, 1000, 1, binding("bench")); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(perMillion(b, b.Elapsed()), "ms/1Mparams")
	b.ReportMetric(float64(UpdateSize(r.p, Values(benchLen)))/benchLen, "bytes/param")
}

func BenchmarkAdd1M(b *testing.B) {
	r, _, v, u := benchFixture(b)
	// The plain baseline, measured in the same run: one float64 vector
	// added into another.
	acc := make([]float64, benchLen)
	copy(acc, v) // fault the pages in before timing
	const reps = 20
	start := time.Now()
	for range reps {
		for i, x := range v {
			acc[i] += x
		}
	}
	plain := time.Since(start) / reps

	agg := NewAggregator(r.p, Values(benchLen), 1, binding("bench"))
	if err := agg.Add(u); err != nil { // the first Add copies; time the sums
		b.Fatal(err)
	}
	var enc time.Duration
	for b.Loop() {
		if agg.Len() == r.p.MaxParties() {
			b.StopTimer()
			agg = NewAggregator(r.p, Values(benchLen), 1, binding("bench"))
			_ = agg.Add(u)
			b.StartTimer()
		}
		t0 := time.Now()
		if err := agg.Add(u); err != nil {
			b.Fatal(err)
		}
		enc += time.Since(t0)
	}
	b.ReportMetric(perMillion(b, enc), "ms/1Mparams")
	b.ReportMetric(float64(plain.Nanoseconds())/1e6, "plain-ms/1Mparams")
	b.ReportMetric(float64(enc.Nanoseconds())/float64(b.N)/float64(plain.Nanoseconds()), "enc/plain")
}

func BenchmarkDecryptionShare1M(b *testing.B) {
	r, _, _, u := benchFixture(b)
	active := []uint32{1, 2, 3}
	for b.Loop() {
		if _, err := r.parties[0].DecryptionShare(u, []uint32{1}, active); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(perMillion(b, b.Elapsed()), "ms/1Mparams")
}

func BenchmarkCombine1M(b *testing.B) {
	r, _, _, u := benchFixture(b)
	active := []uint32{1, 2, 3}
	var shares []*DecryptionShare
	for _, a := range active {
		s, err := r.parties[a-1].DecryptionShare(u, []uint32{1}, active)
		if err != nil {
			b.Fatal(err)
		}
		shares = append(shares, s)
	}
	for b.Loop() {
		if _, err := Combine(r.p, u, shares, 3); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(perMillion(b, b.Elapsed()), "ms/1Mparams")
}

// BenchmarkFingerprint1M is what a contributor's approval adds, and what
// a site's check of a model version adds per update, against one
// encryption of the same update timed in the same run.
func BenchmarkFingerprint1M(b *testing.B) {
	_, enc, v, u := benchFixture(b)
	start := time.Now()
	if _, err := enc.Encrypt(v, 0, 1000, 1, binding("bench")); err != nil {
		b.Fatal(err)
	}
	encrypt := time.Since(start)
	challenge := AggregateChallenge([]byte("bench"))
	b.ResetTimer()
	for b.Loop() {
		u.Fingerprint(challenge)
	}
	b.ReportMetric(perMillion(b, b.Elapsed()), "ms/1Mparams")
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(encrypt.Nanoseconds()), "fingerprint/encrypt")
}

func BenchmarkUnmarshalUpdate1M(b *testing.B) {
	r, _, _, u := benchFixture(b)
	raw, _ := u.MarshalBinary()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if _, err := UnmarshalUpdate(r.p, Values(benchLen), raw); err != nil {
			b.Fatal(err)
		}
	}
}
