package he

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"

	"github.com/tuneinsight/lattigo/v5/ring"
)

// Every encoding starts with a 6-byte header: a 4-byte magic, a format
// version and a kind byte, so that a blob handed to the wrong decoder fails
// at once with ErrMalformed. Kinds bound to a parameter set follow with the
// set's 8-byte tag (ErrWrongParams on mismatch).
//
// Key polynomials are written as raw little-endian uint64 coefficients, one
// modulus after the other. Ciphertexts and decryption shares, the bulk of
// the traffic, are packed: each residue takes its prime's bit width
// (writer.packed). We never call lattigo's own decoders on outside
// bytes: they trust length prefixes inside the input and allocate without
// bound on a short input. Instead every decoder here computes the exact
// length from Params first, checks it, and then checks that every
// coefficient is reduced modulo its modulus (lattigo's arithmetic assumes
// it).
const (
	magic       = "RFHE"
	wireVersion = 3 // 3: quantized packing, bit-packed residues; 2: contributor-keyed CKKS
	headerLen   = 4 + 1 + 1
	tagLen      = 8
)

// Kinds of encodings. Append only: 1 and 2 were the retired public-key
// share and collective public key.
const (
	kindSealedShare byte = iota + 3
	kindShamirShare      // inside the HPKE plaintext of a SealedShare
	kindParty
	kindUpdate
	kindDecryptionShare
)

func kindName(k byte) string {
	switch k {
	case kindSealedShare:
		return "sealed share"
	case kindShamirShare:
		return "Shamir share"
	case kindParty:
		return "party state"
	case kindUpdate:
		return "update"
	case kindDecryptionShare:
		return "decryption share"
	}
	return "unknown"
}

// writer appends to a pre-sized buffer.
type writer struct{ b []byte }

func newWriter(size int, kind byte) *writer {
	w := &writer{b: make([]byte, 0, size)}
	w.b = append(w.b, magic...)
	w.b = append(w.b, wireVersion, kind)
	return w
}

func (w *writer) bytes(b []byte) { w.b = append(w.b, b...) }
func (w *writer) u8(v byte)      { w.b = append(w.b, v) }
func (w *writer) u32(v uint32)   { w.b = binary.LittleEndian.AppendUint32(w.b, v) }
func (w *writer) u64(v uint64)   { w.b = binary.LittleEndian.AppendUint64(w.b, v) }
func (w *writer) f64(v float64)  { w.u64(math.Float64bits(v)) }
func (w *writer) tag(p Params)   { w.b = append(w.b, p.tag[:]...) }
func (w *writer) poly(p ring.Poly) {
	for _, c := range p.Coeffs {
		for _, v := range c {
			w.b = binary.LittleEndian.AppendUint64(w.b, v)
		}
	}
}

// packed appends a polynomial mod Q, each prime's residues packed to the
// prime's bit width, least significant bits first.
func (w *writer) packed(p Params, poly ring.Poly) {
	for j, width := range p.polyBits() {
		var acc uint64 // pending bits, n of them
		n := 0
		for _, v := range poly.Coeffs[j] {
			acc |= v << n
			if n+width >= 64 {
				w.b = binary.LittleEndian.AppendUint64(w.b, acc)
				acc = v >> (64 - n) // n == 0 shifts everything out: acc = 0
				n = n + width - 64
			} else {
				n += width
			}
		}
		for ; n > 0; n -= 8 {
			w.b = append(w.b, byte(acc))
			acc >>= 8
		}
	}
}

// packedPolys appends polys packed (as packed does), in parallel over the
// polynomials. The writer was sized for them.
func (w *writer) packedPolys(p Params, polys []ring.Poly) {
	plen := p.packedPolyLen()
	start := len(w.b)
	w.b = slices.Grow(w.b, len(polys)*plen)[:start+len(polys)*plen]
	_ = parallel(len(polys), func() func(int) error {
		return func(i int) error {
			at := start + i*plen
			sub := writer{b: w.b[at:at:(at + plen)]}
			sub.packed(p, polys[i])
			return nil
		}
	})
}

// reader consumes a buffer whose total length was already checked; its
// methods therefore never fail on length, only on content.
type reader struct {
	b    []byte
	kind byte
}

// newReader checks the header. want is the exact length expected, or -1 if
// the caller checks the length itself after reading a fixed prefix.
func newReader(b []byte, kind byte, want int) (*reader, error) {
	name := kindName(kind)
	if len(b) < headerLen || string(b[:4]) != magic {
		return nil, fmt.Errorf("%w: %s: bad magic", ErrMalformed, name)
	}
	if b[4] != wireVersion {
		return nil, fmt.Errorf("%w: %s: format version %d, want %d", ErrMalformed, name, b[4], wireVersion)
	}
	if b[5] != kind {
		return nil, fmt.Errorf("%w: %s: got a %s", ErrMalformed, name, kindName(b[5]))
	}
	if want >= 0 && len(b) != want {
		return nil, fmt.Errorf("%w: %s: %d bytes, want %d", ErrMalformed, name, len(b), want)
	}
	return &reader{b: b[headerLen:], kind: kind}, nil
}

func (r *reader) need(n int) error {
	if len(r.b) < n {
		return fmt.Errorf("%w: %s: truncated", ErrMalformed, kindName(r.kind))
	}
	return nil
}

func (r *reader) bytes(n int) []byte { v := r.b[:n]; r.b = r.b[n:]; return v }
func (r *reader) u8() byte           { v := r.b[0]; r.b = r.b[1:]; return v }
func (r *reader) u32() uint32        { v := binary.LittleEndian.Uint32(r.b); r.b = r.b[4:]; return v }
func (r *reader) u64() uint64        { v := binary.LittleEndian.Uint64(r.b); r.b = r.b[8:]; return v }
func (r *reader) f64() float64       { return math.Float64frombits(r.u64()) }

// points reads a count, then that many sorted distinct points in 1..max,
// followed by at least one more u32 (the caller's next count). The count
// is checked before anything is allocated.
func (r *reader) points(max int, what string) ([]uint32, error) {
	n := int(r.u32())
	if n < 1 || n > max {
		return nil, fmt.Errorf("%w: %s: %s of %d", ErrMalformed, kindName(r.kind), what, n)
	}
	if err := r.need(4*n + 4); err != nil {
		return nil, err
	}
	out := make([]uint32, n)
	for i := range out {
		out[i] = r.u32()
		if out[i] < 1 || int(out[i]) > max || (i > 0 && out[i] <= out[i-1]) {
			return nil, fmt.Errorf("%w: %s: %s not sorted distinct points in 1..%d", ErrMalformed, kindName(r.kind), what, max)
		}
	}
	return out, nil
}

func (r *reader) tag(p Params) error {
	if string(r.bytes(tagLen)) != string(p.tag[:]) {
		return fmt.Errorf("%w: %s was made under another parameter set than %q", ErrWrongParams, kindName(r.kind), p.name)
	}
	return nil
}

// poly fills p (already allocated at the right levels) and checks that each
// coefficient is reduced modulo its modulus.
func (r *reader) poly(p ring.Poly, moduli []uint64, field string) error {
	for i, c := range p.Coeffs {
		q := moduli[i]
		for j := range c {
			v := binary.LittleEndian.Uint64(r.b[8*j:])
			if v >= q {
				return fmt.Errorf("%w: %s: %s: coefficient %d not reduced", ErrMalformed, kindName(r.kind), field, j)
			}
			c[j] = v
		}
		r.b = r.b[8*len(c):]
	}
	return nil
}

// eachBlock runs unpackBlock in the given mode over the packed blocks of
// one polynomial (all of Q), consuming them. It returns how many blocks it
// ran, the failing one included.
func (r *reader) eachBlock(p Params, dst ring.Poly, what string, index int, mode unpackMode) (int, error) {
	q := p.rlwe.Q()
	n := 1 << p.logN
	for j, width := range p.polyBits() {
		block := r.bytes(width * n / 8)
		if c := unpackBlock(block, dst.Coeffs[j], n, width, q[j], mode); c >= 0 {
			return j + 1, fmt.Errorf("%w: %s: %s %d: coefficient %d mod prime %d not reduced", ErrMalformed, kindName(r.kind), what, index, c, j)
		}
	}
	return len(q), nil
}

// residueAt reads the width bits at bit position pos of b (at least 9
// bytes from pos/8 on), unmasked.
func residueAt(b []byte, pos, width int) uint64 {
	i, off := pos>>3, uint(pos&7)
	v := binary.LittleEndian.Uint64(b[i:i+8]) >> off
	if off+uint(width) > 64 {
		v |= uint64(b[i+8]) << (64 - off)
	}
	return v
}

// unpackMode is what unpackBlock does with each residue.
type unpackMode int

const (
	unpackStore unpackMode = iota // store it in dst
	unpackAdd                     // add it to dst modulo q
	// unpackSub undoes unpackAdd exactly, even for a residue not below q
	// (which unpackAdd added before it could tell).
	unpackSub
)

// unpackBlock reads n residues packed at width bits (at most 61) in block,
// checks each against q and, by mode, stores or adds them into dst. It
// returns the index of the first residue not below q (dst is then partly
// written), or -1. The bulk reads one unaligned 8-byte word per residue
// (a ninth byte when the residue straddles it); the last few come from a
// padded copy of the block's tail.
func unpackBlock(block []byte, dst []uint64, n, width int, q uint64, mode unpackMode) int {
	mask := uint64(1)<<width - 1
	fast := n
	for fast > 0 && ((fast-1)*width)>>3+9 > len(block) {
		fast--
	}
	var over uint64 // top bit set once some residue is not below q
	switch mode {
	case unpackStore:
		dst = dst[:n]
		for c := range fast {
			v := residueAt(block, c*width, width) & mask
			over |= q - 1 - v
			dst[c] = v
		}
	case unpackAdd:
		dst = dst[:n]
		for c := range fast {
			v := residueAt(block, c*width, width) & mask
			over |= q - 1 - v
			s := dst[c] + v // both below q < 2^61: no overflow
			if s >= q {
				s -= q
			}
			dst[c] = s
		}
	case unpackSub:
		dst = dst[:n]
		for c := range fast {
			v := residueAt(block, c*width, width) & mask
			over |= q - 1 - v
			dst[c] = sub(dst[c], v, q)
		}
	}
	// The last few residues, from a padded copy of the block's tail.
	var tail [32]byte
	tailStart := (fast * width) >> 3
	copy(tail[:], block[tailStart:])
	for c := fast; c < n; c++ {
		v := residueAt(tail[:], c*width-8*tailStart, width) & mask
		over |= q - 1 - v
		switch mode {
		case unpackStore:
			dst[c] = v
		case unpackAdd:
			s := dst[c] + v
			if s >= q {
				s -= q
			}
			dst[c] = s
		case unpackSub:
			dst[c] = sub(dst[c], v, q)
		}
	}
	if over>>63 == 0 {
		return -1
	}
	for c := range n { // the error path: find the first bad residue
		src, pos := block, c*width
		if c >= fast {
			src, pos = tail[:], pos-8*tailStart
		}
		if residueAt(src, pos, width)&mask >= q {
			return c
		}
	}
	return 0
}

// sub is the inverse of unpackAdd's step s = x + v (− q when s ≥ q) for x
// below q: if s ≥ v no q was taken off (x would be s − v + q ≥ q), else
// one was. For v below q it is s − v modulo q.
func sub(s, v, q uint64) uint64 {
	if s >= v {
		return s - v
	}
	return s + q - v
}

// packedPolys fills polys (allocating each) from consecutive polynomials
// packed by writer.packed, checking that each residue is reduced modulo
// its prime, in parallel; the caller checked the total length.
func (r *reader) packedPolys(p Params, polys []ring.Poly, what string) error {
	for i := range polys {
		polys[i] = p.rlwe.RingQ().NewPoly()
	}
	return unpackPolys(p, r.kind, r.bytes(len(polys)*p.packedPolyLen()), polys, what, unpackStore, nil)
}

// unpackPolys runs unpackBlock in mode over the consecutive packed
// polynomials of body (all of Q each), in parallel: polynomial i goes
// into dst[i]. Each prime's block is width·N/8 bytes, with no bits to
// spare. When done is not nil, done[i] is set to the number of polynomial
// i's blocks that ran (the failing one included): polynomials after a
// failure may not run at all.
func unpackPolys(p Params, kind byte, body []byte, dst []ring.Poly, what string, mode unpackMode, done []int) error {
	plen := p.packedPolyLen()
	return parallel(len(body)/plen, func() func(int) error {
		return func(i int) error {
			r := reader{b: body[i*plen : (i+1)*plen], kind: kind}
			blocks, err := r.eachBlock(p, dst[i], what, i, mode)
			if done != nil {
				done[i] = blocks
			}
			return err
		}
	})
}

// undoPolys undoes an unpackAdd of body into dst that stopped on a
// residue not below its prime: the first done[i] blocks of polynomial i
// are subtracted again, which leaves dst exactly as it was.
func undoPolys(p Params, body []byte, dst []ring.Poly, done []int) {
	plen := p.packedPolyLen()
	q := p.rlwe.Q()
	n := 1 << p.logN
	for i, blocks := range done {
		r := reader{b: body[i*plen : (i+1)*plen]}
		for j, width := range p.polyBits()[:blocks] {
			unpackBlock(r.bytes(width*n/8), dst[i].Coeffs[j], n, width, q[j], unpackSub)
		}
	}
}

func (r *reader) done() error {
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %s: %d trailing bytes", ErrMalformed, kindName(r.kind), len(r.b))
	}
	return nil
}

// polyQLen and polyQPLen are the encoded sizes of a polynomial modulo Q and
// modulo QP.
func (p Params) polyQPLen() int { return 8 * (p.rlwe.QCount() + p.rlwe.PCount()) << p.logN }
