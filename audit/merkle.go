package audit

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
)

// Hash is a SHA-256 value: a leaf hash, a node hash or a tree root.
type Hash [sha256.Size]byte

// String returns the hash in lowercase hex, the form used in records,
// tree heads and export files.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// ParseHash reads a hash written by Hash.String: exactly 64 lowercase hex
// digits. Uppercase is refused so that every hash has one spelling.
func ParseHash(s string) (Hash, error) {
	var h Hash
	if len(s) != 2*len(h) {
		return h, fmt.Errorf("hash %.80q: want %d hex digits, have %d", s, 2*len(h), len(s))
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return h, fmt.Errorf("hash %.80q: not lowercase hex", s)
		}
	}
	if _, err := hex.Decode(h[:], []byte(s)); err != nil {
		return h, err
	}
	return h, nil
}

// EmptyRoot is the root of the empty tree, SHA-256 of the empty string
// (RFC 9162 §2.1.1).
var EmptyRoot = Hash(sha256.Sum256(nil))

// MaxProofHashes bounds an inclusion or consistency proof read from outside.
// A tree of fewer than 2^63 leaves never needs more.
const MaxProofHashes = 64

// HashLeaf is the RFC 9162 leaf hash SHA-256(0x00 || data).
func HashLeaf(data []byte) Hash {
	h := sha256.New()
	h.Write([]byte{0x00})
	h.Write(data)
	var out Hash
	h.Sum(out[:0])
	return out
}

// hashChildren is the RFC 9162 interior node hash SHA-256(0x01 || l || r).
func hashChildren(l, r Hash) Hash {
	var buf [1 + 2*sha256.Size]byte
	buf[0] = 0x01
	copy(buf[1:], l[:])
	copy(buf[1+sha256.Size:], r[:])
	return sha256.Sum256(buf[:])
}

// splitPoint is k of RFC 9162 §2.1.1: the largest power of two smaller
// than n, for n >= 2.
func splitPoint(n uint64) uint64 { return 1 << (bits.Len64(n-1) - 1) }

// tree keeps every complete (perfect, aligned) subtree hash of an
// append-only list of leaves: levels[0] are the leaf hashes, levels[k][i]
// is the hash of leaves [i*2^k, (i+1)*2^k). Every node of the RFC 9162 tree
// of any size is either such a subtree or lies on that tree's right edge, so
// any root or proof costs O(log² n) hashes, and storage is about 2n hashes.
type tree struct {
	levels [][]Hash
}

func (t *tree) size() uint64 {
	if len(t.levels) == 0 {
		return 0
	}
	return uint64(len(t.levels[0]))
}

func (t *tree) append(leaf Hash) {
	if len(t.levels) == 0 {
		t.levels = append(t.levels, nil)
	}
	t.levels[0] = append(t.levels[0], leaf)
	for k := 0; len(t.levels[k])%2 == 0; k++ {
		n := len(t.levels[k])
		parent := hashChildren(t.levels[k][n-2], t.levels[k][n-1])
		if len(t.levels) == k+1 {
			t.levels = append(t.levels, nil)
		}
		t.levels[k+1] = append(t.levels[k+1], parent)
	}
}

// mth is MTH(D[start:end]) (RFC 9162 §2.1.1); the caller ensures
// end <= size.
func (t *tree) mth(start, end uint64) Hash {
	n := end - start
	switch {
	case n == 0:
		return EmptyRoot
	case n&(n-1) == 0 && start%n == 0:
		k := bits.TrailingZeros64(n)
		return t.levels[k][start>>k]
	}
	k := splitPoint(n)
	return hashChildren(t.mth(start, start+k), t.mth(start+k, end))
}

var errRange = errors.New("audit: index or size out of range")

func (t *tree) root(size uint64) (Hash, error) {
	if size > t.size() {
		return Hash{}, fmt.Errorf("%w: tree size %d, log has %d", errRange, size, t.size())
	}
	return t.mth(0, size), nil
}

// inclusion is PATH(index, D[0:size]) of RFC 9162 §2.1.3.1.
func (t *tree) inclusion(index, size uint64) ([]Hash, error) {
	if size > t.size() || index >= size {
		return nil, fmt.Errorf("%w: leaf %d of tree size %d (log has %d)", errRange, index, size, t.size())
	}
	return t.path(index, 0, size, nil), nil
}

func (t *tree) path(m, start, end uint64, out []Hash) []Hash {
	n := end - start
	if n <= 1 {
		return out
	}
	k := splitPoint(n)
	if m < k {
		out = t.path(m, start, start+k, out)
		return append(out, t.mth(start+k, end))
	}
	out = t.path(m-k, start+k, end, out)
	return append(out, t.mth(start, start+k))
}

// consistency is PROOF(m, D[0:n]) of RFC 9162 §2.1.4.1; it is empty when
// m is 0 or m == n.
func (t *tree) consistency(m, n uint64) ([]Hash, error) {
	if n > t.size() || m > n {
		return nil, fmt.Errorf("%w: consistency from size %d to %d (log has %d)", errRange, m, n, t.size())
	}
	if m == 0 || m == n {
		return nil, nil
	}
	return t.subproof(m, 0, n, true, nil), nil
}

func (t *tree) subproof(m, start, end uint64, complete bool, out []Hash) []Hash {
	n := end - start
	if m == n {
		if !complete {
			out = append(out, t.mth(start, end))
		}
		return out
	}
	k := splitPoint(n)
	if m <= k {
		out = t.subproof(m, start, start+k, complete, out)
		return append(out, t.mth(start+k, end))
	}
	out = t.subproof(m-k, start+k, end, false, out)
	return append(out, t.mth(start, start+k))
}

// ErrProof is wrapped by every proof verification failure.
var ErrProof = errors.New("audit: proof does not verify")

// rootFromInclusion runs the RFC 9162 §2.1.3.2 algorithm and returns the
// root the proof leads to, or an error if the proof has the wrong shape for
// (index, size). The caller compares the result with a trusted root.
func rootFromInclusion(leaf Hash, index, size uint64, proof []Hash) (Hash, error) {
	if index >= size {
		return Hash{}, fmt.Errorf("%w: leaf index %d is not below tree size %d", ErrProof, index, size)
	}
	if len(proof) > MaxProofHashes {
		return Hash{}, fmt.Errorf("%w: %d hashes (at most %d)", ErrProof, len(proof), MaxProofHashes)
	}
	fn, sn := index, size-1
	r := leaf
	for _, p := range proof {
		if sn == 0 {
			return Hash{}, fmt.Errorf("%w: inclusion proof too long for leaf %d of %d", ErrProof, index, size)
		}
		if fn&1 == 1 || fn == sn {
			r = hashChildren(p, r)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			r = hashChildren(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 {
		return Hash{}, fmt.Errorf("%w: inclusion proof too short for leaf %d of %d", ErrProof, index, size)
	}
	return r, nil
}

// VerifyInclusion checks that leaf is at index in the tree of the given
// size and root (RFC 9162 §2.1.3.2).
func VerifyInclusion(leaf Hash, index, size uint64, proof []Hash, root Hash) error {
	r, err := rootFromInclusion(leaf, index, size, proof)
	if err != nil {
		return err
	}
	if r != root {
		return fmt.Errorf("%w: inclusion proof for leaf %d leads to root %s, not %s", ErrProof, index, r, root)
	}
	return nil
}

// rootFromConsistency runs the RFC 9162 §2.1.4.2 algorithm for
// 0 < first <= second: it checks the proof against firstRoot and returns
// the root of size second the proof leads to.
func rootFromConsistency(first, second uint64, firstRoot Hash, proof []Hash) (Hash, error) {
	switch {
	case first == 0 || first > second:
		return Hash{}, fmt.Errorf("%w: consistency from size %d to %d", ErrProof, first, second)
	case len(proof) > MaxProofHashes:
		return Hash{}, fmt.Errorf("%w: %d hashes (at most %d)", ErrProof, len(proof), MaxProofHashes)
	case first == second:
		if len(proof) != 0 {
			return Hash{}, fmt.Errorf("%w: consistency proof between equal sizes must be empty", ErrProof)
		}
		return firstRoot, nil
	case len(proof) == 0:
		return Hash{}, fmt.Errorf("%w: empty consistency proof from size %d to %d", ErrProof, first, second)
	}
	path := proof
	if first&(first-1) == 0 {
		path = append([]Hash{firstRoot}, proof...)
	}
	fn, sn := first-1, second-1
	for fn&1 == 1 {
		fn >>= 1
		sn >>= 1
	}
	fr, sr := path[0], path[0]
	for _, c := range path[1:] {
		if sn == 0 {
			return Hash{}, fmt.Errorf("%w: consistency proof too long from size %d to %d", ErrProof, first, second)
		}
		if fn&1 == 1 || fn == sn {
			fr = hashChildren(c, fr)
			sr = hashChildren(c, sr)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			sr = hashChildren(sr, c)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 {
		return Hash{}, fmt.Errorf("%w: consistency proof too short from size %d to %d", ErrProof, first, second)
	}
	if fr != firstRoot {
		return Hash{}, fmt.Errorf("%w: consistency proof does not lead to the root of size %d", ErrProof, first)
	}
	return sr, nil
}

// VerifyConsistency checks that the tree of size second and root
// secondRoot extends the tree of size first and root firstRoot
// (RFC 9162 §2.1.4.2). Every tree extends the empty tree, and a tree is
// consistent with itself; both cases take an empty proof.
func VerifyConsistency(first, second uint64, firstRoot, secondRoot Hash, proof []Hash) error {
	if first == 0 {
		if first > second || len(proof) != 0 || firstRoot != EmptyRoot {
			return fmt.Errorf("%w: consistency from the empty tree takes an empty proof and the empty root", ErrProof)
		}
		return nil
	}
	r, err := rootFromConsistency(first, second, firstRoot, proof)
	if err != nil {
		return err
	}
	if r != secondRoot {
		return fmt.Errorf("%w: consistency proof leads to root %s, not %s", ErrProof, r, secondRoot)
	}
	return nil
}
