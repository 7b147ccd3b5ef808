package he

import (
	"crypto/cipher"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"math/bits"
)

// fingerprintReps is how many independent inner products a fingerprint
// takes per prime: with primes of at least 2^33 (the smallest, the noise
// prime, has 34 bits), a forged sum passes all of them with probability
// at most (2/q)^4 <= 2^-128.
const fingerprintReps = 4

// labelFingerprint separates the fingerprint's challenge vectors from every
// other stream expanded from a hash (uniformA's).
const labelFingerprint = "regionfl/he/fingerprint/v1"

// FingerprintLen is the length in bytes of a fingerprint under p.
func FingerprintLen(p Params) int { return 8 * fingerprintReps * len(p.rlwe.Q()) }

// Fingerprint is a linear digest of the update's ciphertexts under a
// public challenge: for each prime q of Q, fingerprintReps inner products
// modulo q of the c0 residues with vectors expanded from the challenge by
// AES-256-CTR. It is linear: the fingerprint of a sum of updates is the sum
// of their fingerprints, prime by prime. Ciphertexts are fingerprinted in
// parallel.
//
// That is what lets a hospital check that an aggregate is the sum of the
// updates its contributors approved without seeing those updates: each
// contributor signs the fingerprint of its own update under a challenge
// derived from the aggregate's digest (AggregateChallenge), and CheckFold
// compares their sum with the aggregate's. A coordinator that adds anything
// to the sum (a plaintext offset that would steer the decrypted model, a
// replayed update) fixes the challenge with the aggregate it commits to,
// and then passes with probability at most 2^-128 per try. The
// fingerprint tells nothing the update's bytes do not: whoever holds it
// holds the bytes.
func (u *Update) Fingerprint(challenge [32]byte) []byte {
	q := u.p.rlwe.Q()
	width := fingerprintReps * len(q)
	// One partial sum per ciphertext, in parallel; each ciphertext's
	// vectors come from a stream of their own.
	partial := make([]uint64, len(u.c0)*width)
	_ = parallel(len(u.c0), func() func(int) error {
		w := newKeyWords()
		return func(i int) error {
			acc := partial[i*width : (i+1)*width]
			for rep := range fingerprintReps {
				w.reset(fingerprintStream(challenge, rep, i))
				for j, qj := range q {
					// r is read at q's bit width, not reduced: r mod q
					// takes no value with probability above 2/q, which
					// is all the soundness bound needs. Products (below
					// 2^122) are summed in 128 bits and reduced every
					// 32 terms (a sum below 2^61 + 32·2^122 < 2^128).
					mask := uint64(1)<<bits.Len64(qj) - 1
					var hiSum, loSum uint64
					for k, x := range u.c0[i].Coeffs[j] {
						hi, lo := bits.Mul64(w.next()&mask, x)
						var carry uint64
						loSum, carry = bits.Add64(loSum, lo, 0)
						hiSum += hi + carry
						if k%32 == 31 {
							hiSum, loSum = 0, bits.Rem64(hiSum, loSum, qj)
						}
					}
					acc[rep*len(q)+j] = bits.Rem64(hiSum, loSum, qj)
				}
			}
			return nil
		}
	})
	out := make([]byte, 0, 8*width)
	for k := range width {
		qj := q[k%len(q)]
		var v uint64
		for i := range u.c0 {
			if v += partial[i*width+k]; v >= qj {
				v -= qj
			}
		}
		out = binary.BigEndian.AppendUint64(out, v)
	}
	return out
}

func fingerprintStream(challenge [32]byte, rep, index int) cipher.Stream {
	key := make([]byte, 0, len(labelFingerprint)+1+32+8)
	key = append(key, labelFingerprint+"\x00"...)
	key = append(key, challenge[:]...)
	key = binary.LittleEndian.AppendUint32(key, uint32(rep))
	key = binary.LittleEndian.AppendUint32(key, uint32(index))
	return keyedStream(key)
}

// AggregateChallenge is the fingerprint challenge of an aggregate: a hash
// of its digest, so it is fixed only once the aggregate is.
func AggregateChallenge(aggDigest []byte) [32]byte {
	h := sha256.New()
	h.Write([]byte(labelFingerprint + "/challenge\x00"))
	h.Write(aggDigest)
	var c [32]byte
	h.Sum(c[:0])
	return c
}

// CheckFold checks that agg is the sum of the updates whose fingerprints
// under AggregateChallenge(agg.Digest()) are parts: one update per part,
// and the sum of the parts equal to agg's own fingerprint.
func CheckFold(p Params, agg *Update, parts [][]byte) error {
	if agg == nil {
		return fmt.Errorf("%w: nil aggregate", ErrInvalidValue)
	}
	if agg.p.tag != p.tag {
		return fmt.Errorf("%w: aggregate", ErrWrongParams)
	}
	if agg.parties != len(parts) {
		return fmt.Errorf("%w: aggregate claims %d updates, %d fingerprints", ErrShareMismatch, agg.parties, len(parts))
	}
	q := p.rlwe.Q()
	n := fingerprintReps * len(q)
	sum := make([]uint64, n)
	for i, f := range parts {
		if len(f) != 8*n {
			return fmt.Errorf("%w: fingerprint %d has %d bytes, want %d", ErrMalformed, i, len(f), 8*n)
		}
		for k := range sum {
			qj := q[k%len(q)]
			v := binary.BigEndian.Uint64(f[8*k:])
			if v >= qj {
				return fmt.Errorf("%w: fingerprint %d: value not reduced", ErrMalformed, i)
			}
			if sum[k] += v; sum[k] >= qj {
				sum[k] -= qj
			}
		}
	}
	d := agg.Digest()
	want := agg.Fingerprint(AggregateChallenge(d[:]))
	for k, v := range sum {
		if binary.BigEndian.Uint64(want[8*k:]) != v {
			return fmt.Errorf("%w: the aggregate is not the sum of the approved updates", ErrShareMismatch)
		}
	}
	return nil
}
