package node

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"math"
)

// contentHash builds the digests that key the node's once-per-content
// records (what a vector, an update or a model's metric sums are made of):
// SHA-256 over fixed-width numbers and length-prefixed lists, so that no
// two contents share an encoding.
type contentHash struct{ hash.Hash }

func newContentHash() contentHash { return contentHash{sha256.New()} }

func (h contentHash) u64(v uint64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	h.Write(b[:])
}

// floats writes the length, then every value's bits.
func (h contentHash) floats(vs []float64) {
	h.u64(uint64(len(vs)))
	for _, v := range vs {
		h.u64(math.Float64bits(v))
	}
}

// text writes the length, then the bytes.
func (h contentHash) text(s string) {
	h.u64(uint64(len(s)))
	h.Write([]byte(s))
}

func (h contentHash) hex() string { return hex.EncodeToString(h.Sum(nil)) }
