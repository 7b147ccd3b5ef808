package he

import (
	"bytes"
	"crypto/sha256"
	"testing"
)

// The fuzz targets check that no decoder panics or allocates beyond its
// input on hostile bytes (lattigo's own decoders do: a 9-byte ciphertext
// makes them allocate without bound). Their seed corpus, valid encodings
// and a few truncations, runs in the normal test.

// fuzzFixture is a small completed ceremony and one update, shared by the
// seed corpora.
func fuzzFixture(f *testing.F) (*region, *Update) {
	r := ceremony(f, 2, 2)
	u, err := r.parties[0].Encrypt([]float64{1, 2, 3}, 0, 5, 10, binding("fuzz"))
	if err != nil {
		f.Fatal(err)
	}
	return r, u
}

// fuzzPadded fuzzes decode on inputs made of a fuzzed prefix extended with
// one pad byte to a fuzzed total length. Go's mutator crawls on 128 KiB
// inputs; this keeps the inputs short while exact-length encodings (where
// the decoders do their work) stay easy to reach. valid seeds the corpus
// with its header and its full length.
func fuzzPadded(f *testing.F, valid []byte, header int, decode func([]byte)) {
	limit := 2*len(valid) + 1
	for _, pad := range []byte{0, 0xff} {
		f.Add(valid[:header], uint32(len(valid)), pad)
		f.Add(valid[:header], uint32(len(valid)-1), pad)
	}
	f.Add(valid[:9], uint32(0), byte(0))
	f.Add([]byte{}, uint32(0), byte(0))
	f.Add([]byte("RFHE\x02\x07\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"), uint32(0), byte(0))
	f.Fuzz(func(t *testing.T, b []byte, total uint32, pad byte) {
		if n := int(total) % limit; n > len(b) {
			b = append(b, bytes.Repeat([]byte{pad}, n-len(b))...)
		}
		decode(b)
	})
}

func FuzzUnmarshalUpdate(f *testing.F) {
	r, u := fuzzFixture(f)
	valid, _ := u.MarshalBinary()
	// Go's mutator crawls on 128 KiB inputs, so the fuzzed input is a short
	// prefix (the header, where the decisions are) extended with pad bytes
	// of one value to a fuzzed total length: exact-length inputs stay cheap
	// to reach.
	fixed := r.p.updateFixed()
	for _, l := range []uint32{3, 4, 0, MaxLength, MaxLength + 1} {
		f.Add(valid[:fixed+8], l, uint32(0), uint32(len(valid)), byte(0))
		f.Add(valid[:fixed+8], l, uint32(1), uint32(len(valid)), byte(0xff))
	}
	f.Add(valid[:9], uint32(3), uint32(0), uint32(0), byte(0))
	limit := 2 * len(valid)
	f.Fuzz(func(t *testing.T, b []byte, length, wide, total uint32, pad byte) {
		if n := int(total) % limit; n > len(b) {
			b = append(b, bytes.Repeat([]byte{pad}, n-len(b))...)
		}
		shape := Shape{Len: int(length), Wide: int(wide)}
		u, err := UnmarshalUpdate(r.p, shape, b)
		// What a coordinator does with the same bytes: open the header,
		// then check the residues as it folds them.
		var folded *Update
		e, ferr := OpenUpdate(r.p, shape, b)
		if ferr == nil {
			agg := NewAggregator(r.p, shape, e.Clip(), e.Binding())
			if ferr = agg.AddEncoded(e); ferr == nil {
				folded, ferr = agg.Result()
			}
		}
		if (err == nil) != (ferr == nil) {
			t.Fatalf("UnmarshalUpdate says %v, the fold %v", err, ferr)
		}
		if err == nil {
			if e.Digest() != u.Digest() || folded.Digest() != u.Digest() {
				t.Fatal("the fold and UnmarshalUpdate give different digests")
			}
			out, _ := u.MarshalBinary()
			if !bytes.Equal(out, b) {
				t.Fatal("decoded update re-encodes differently")
			}
			if u.Digest() != sha256.Sum256(b) {
				t.Fatal("the digest of a decoded update is not the hash of its bytes")
			}
		}
	})
}

func FuzzUnmarshalDecryptionShare(f *testing.F) {
	r, u := fuzzFixture(f)
	s, err := r.parties[0].DecryptionShare(u, []uint32{1}, []uint32{1, 2})
	if err != nil {
		f.Fatal(err)
	}
	b, _ := s.MarshalBinary()
	fuzzPadded(f, b, r.p.decryptionShareFixed()+3*4, func(b []byte) {
		if s, err := UnmarshalDecryptionShare(r.p, b); err == nil {
			// A share that decodes must not crash Combine either.
			_, _ = Combine(r.p, u, []*DecryptionShare{s, s}, 2)
		}
	})
}

func FuzzUnmarshalSealedShare(f *testing.F) {
	s := &SealedShare{From: 1, To: 2, Sealed: []byte("0123456789abcdef")}
	b, _ := s.MarshalBinary()
	fuzzPadded(f, b, sealedShareFixed, func(b []byte) {
		if s, err := UnmarshalSealedShare(b); err == nil {
			if out, err := s.MarshalBinary(); err != nil || !bytes.Equal(out, b) {
				panic("decoded sealed share re-encodes differently")
			}
		}
	})
}

func FuzzUnmarshalParty(f *testing.F) {
	r, _ := fuzzFixture(f)
	// The seeds cover both states: ready (with the Shamir shares) and
	// fresh; the fixed part is the whole fresh state.
	ready, _ := r.parties[0].MarshalBinary()
	f.Add(ready[:r.p.partyLen(2, false)], uint32(len(ready)), byte(0))
	fresh, err := NewParty(r.p, 1, 2, 2, r.seed)
	if err != nil {
		f.Fatal(err)
	}
	b, _ := fresh.MarshalBinary()
	fuzzPadded(f, b, len(b), func(b []byte) { _, _ = UnmarshalParty(r.p, b) })
}
