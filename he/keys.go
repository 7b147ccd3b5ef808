package he

import (
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"fmt"
	"slices"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/mhe"
	"github.com/tuneinsight/lattigo/v5/ring"
	"github.com/tuneinsight/lattigo/v5/ring/ringqp"
	"github.com/tuneinsight/lattigo/v5/utils/sampling"
	"github.com/tuneinsight/lattigo/v5/utils/structs"
)

// SeedLen is the length of the ceremony's public seed.
const SeedLen = 32

// maxSealedLen caps a SealedShare encoding before anything is allocated for
// it (UnmarshalSealedShare has no Params to compute the exact size): a QP
// polynomial at logN = 15 plus HPKE overhead stays well below it.
const maxSealedLen = 1 << 20

// Domain-separation labels: every PRNG key and HPKE info string starts with
// one, so that a seed used for one purpose never yields the randomness of
// another.
const (
	labelCRP    = "regionfl/he/v1 crp" // the ceremony seed's commitments (seedHash, EpochSeed)
	labelSK     = "regionfl/he/v1 secret key"
	labelShamir = "regionfl/he/v1 shamir polynomial"
	labelHPKE   = "regionfl/he/v1 shamir share"
	labelA      = "regionfl/he/v2 update a"
)

// hpkeSuite is the one HPKE suite: a hybrid post-quantum KEM, so that a
// recorded key ceremony stays confidential against a future quantum
// adversary.
func hpkeKEM() hpke.KEM { return hpke.MLKEM768X25519() }

func hpkeSuite() (hpke.KEM, hpke.KDF, hpke.AEAD) {
	return hpkeKEM(), hpke.HKDFSHA256(), hpke.AES256GCM()
}

// NewHPKEKey makes an HPKE (ML-KEM-768+X25519) key pair for receiving sealed
// Shamir shares. The private key never leaves the hospital.
func NewHPKEKey() (priv, pub []byte, err error) {
	kem, _, _ := hpkeSuite()
	k, err := kem.GenerateKey()
	if err != nil {
		return nil, nil, fmt.Errorf("he: HPKE key generation: %w", err)
	}
	priv, err = k.Bytes()
	if err != nil {
		return nil, nil, fmt.Errorf("he: HPKE key serialization: %w", err)
	}
	return priv, k.PublicKey().Bytes(), nil
}

// keyedPRNG derives a deterministic PRNG from a label and a seed.
func keyedPRNG(label string, seed []byte) *sampling.KeyedPRNG {
	k := sha256.Sum256(append([]byte(label+"\x00"), seed...))
	prng, err := sampling.NewKeyedPRNG(k[:])
	if err != nil {
		// blake2b only fails on a key longer than 64 bytes.
		panic(err)
	}
	return prng
}

func seedHash(seed []byte) [32]byte {
	return sha256.Sum256(append([]byte(labelCRP+" commitment\x00"), seed...))
}

// EpochSeed is the ceremony seed of key epoch epoch of a region whose
// genesis seed is seed: the genesis seed itself for epoch 0, then a
// domain-separated hash of it and the epoch. Nobody chooses it, every
// party derives it alone, and each epoch's keys, Shamir shares, HPKE
// contexts and update masks a are independent of every other's.
func EpochSeed(seed []byte, epoch uint32) []byte {
	if epoch == 0 {
		return seed
	}
	var e [4]byte
	binary.BigEndian.PutUint32(e[:], epoch)
	d := sha256.Sum256(slices.Concat([]byte(labelCRP+" epoch\x00"), e[:], seed))
	return d[:]
}

func checkSeed(seed []byte) error {
	if len(seed) != SeedLen {
		return fmt.Errorf("%w: ceremony seed of %d bytes, want %d", ErrInvalidValue, len(seed), SeedLen)
	}
	return nil
}

// checkRegion validates the region shape shared by the ceremony functions:
// n parties, the first c of which hold Shamir shares, any t of those
// decrypting.
func (p Params) checkRegion(n, c, t int) error {
	if n < 1 || n > p.MaxParties() {
		return fmt.Errorf("%w: region of %d parties, parameters allow 1..%d", ErrWrongShape, n, p.MaxParties())
	}
	if c < 1 || c > n {
		return fmt.Errorf("%w: committee of %d not in 1..%d", ErrWrongShape, c, n)
	}
	if t < 1 || t > c {
		return fmt.Errorf("%w: threshold %d not in 1..%d", ErrWrongShape, t, c)
	}
	return nil
}

// Party is one hospital's secret state: its own key s_i (kept as the
// 32-byte seed it is derived from), the seed of its Shamir polynomial, and,
// for a member of the decryption committee (points 1..c), after the
// ceremony the Shamir share f_i(self) of every party's key, kept apart
// (not summed) so that the party can help decrypt the sum of any set of
// contributors' updates. It never leaves the hospital except as the
// node's 0600 state file.
//
// In a region of c = n every party holds shares. A large region keeps the
// shares with a committee of c parties: each party seals c shares
// instead of n, each member holds n shares instead of every party
// holding n, and the decryption noise, which grows with t, stays within
// the parameter set (see LargeRegionParams).
type Party struct {
	p          Params
	self       uint32
	n, c, t    int
	seed       [SeedLen]byte // public ceremony seed
	skSeed     [32]byte
	shamirSeed [32]byte
	ready      bool
	shares     []ringqp.Poly // shares[i-1] = f_i(self), party i's Shamir share; valid when ready

	sk *rlwe.SecretKey // derived from skSeed
}

// NewParty starts the key ceremony for the party at Shamir point self of a
// region of n parties with threshold t. seed is the ceremony's public seed
// (from which every update's a is expanded).
//
// The secret key and the Shamir polynomial are derived from fresh random
// seeds kept in the party, so a node that crashes and repeats a step
// resends exactly the same Shamir shares.
func NewParty(p Params, self uint32, n, t int, seed []byte) (*Party, error) {
	return NewCommitteeParty(p, self, n, n, t, seed)
}

// NewCommitteeParty is NewParty for a region of n parties whose first c
// (points 1..c) hold the Shamir shares, any t of them decrypting.
func NewCommitteeParty(p Params, self uint32, n, c, t int, seed []byte) (*Party, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := p.checkRegion(n, c, t); err != nil {
		return nil, err
	}
	if self < 1 || int(self) > n {
		return nil, fmt.Errorf("%w: party point %d not in 1..%d", ErrWrongShape, self, n)
	}
	if err := checkSeed(seed); err != nil {
		return nil, err
	}
	pa := &Party{p: p, self: self, n: n, c: c, t: t}
	copy(pa.seed[:], seed)
	if _, err := rand.Read(pa.skSeed[:]); err != nil {
		return nil, fmt.Errorf("he: randomness: %w", err)
	}
	if _, err := rand.Read(pa.shamirSeed[:]); err != nil {
		return nil, fmt.Errorf("he: randomness: %w", err)
	}
	pa.sk = p.secretKey(pa.skSeed[:])
	return pa, nil
}

// secretKey derives a ternary secret key from seed, exactly as lattigo's
// KeyGenerator does from its own PRNG.
func (p Params) secretKey(seed []byte) *rlwe.SecretKey {
	rp := &p.rlwe
	sk := rlwe.NewSecretKey(rp)
	xs, err := ring.NewSampler(keyedPRNG(labelSK, seed), rp.RingQ(), rp.Xs(), false)
	if err != nil {
		panic(err) // Validate checked Xs.
	}
	xs.Read(sk.Value.Q)
	ringQP := rp.RingQP()
	ringQP.ExtendBasisSmallNormAndCenter(sk.Value.Q, rp.MaxLevelP(), sk.Value.Q, sk.Value.P)
	ringQP.NTT(sk.Value, sk.Value)
	ringQP.MForm(sk.Value, sk.Value)
	return sk
}

// Self is the party's Shamir point.
func (pa *Party) Self() uint32 { return pa.self }

// Ready reports whether the party's part of the ceremony is done: it
// holds its Shamir shares (a committee member) or has sealed its own
// (any other party).
func (pa *Party) Ready() bool { return pa.ready }

// Holder reports whether the party is on the decryption committee.
func (pa *Party) Holder() bool { return int(pa.self) <= pa.c }

// checkHolder refuses the work of a committee member to a party off it.
func (pa *Party) checkHolder() error {
	if !pa.Holder() {
		return fmt.Errorf("%w: party %d is not on the committee of %d", ErrWrongShape, pa.self, pa.c)
	}
	return nil
}

// readQP reads a polynomial mod QP written eight bytes a residue (the
// Shamir shares of a legacy party state).
func (p Params) readQP(r *reader, field string) (ringqp.Poly, error) {
	rp := &p.rlwe
	v := rp.RingQP().NewPoly()
	if err := r.poly(v.Q, rp.Q(), field+" (mod Q)"); err != nil {
		return v, err
	}
	if err := r.poly(v.P, rp.P(), field+" (mod P)"); err != nil {
		return v, err
	}
	return v, nil
}

// SealedShare is a Shamir share of one party's secret, sealed with HPKE to
// its recipient. The coordinator relays it and cannot open it.
type SealedShare struct {
	From, To uint32
	Sealed   []byte
}

const sealedShareFixed = headerLen + 4 + 4 + 4

// hpkeOverhead is what HPKE adds to a plaintext: the encapsulated key of
// ML-KEM-768+X25519 (1,088 + 32 bytes) and the AES-GCM tag.
const hpkeOverhead = 1088 + 32 + 16

// SealedShareSize is the size of a sealed Shamir share's encoding: the
// ceremony relays one from every member to every committee member.
func SealedShareSize(p Params) int { return sealedShareFixed + hpkeOverhead + p.shamirPlainLen() }

// MarshalBinary encodes the sealed share.
func (s *SealedShare) MarshalBinary() ([]byte, error) {
	if len(s.Sealed) > maxSealedLen {
		return nil, fmt.Errorf("%w: sealed share of %d bytes", ErrMalformed, len(s.Sealed))
	}
	w := newWriter(sealedShareFixed+len(s.Sealed), kindSealedShare)
	w.u32(s.From)
	w.u32(s.To)
	w.u32(uint32(len(s.Sealed)))
	w.bytes(s.Sealed)
	return w.b, nil
}

// UnmarshalSealedShare decodes a sealed share. Its content is checked only
// when the recipient opens it.
func UnmarshalSealedShare(b []byte) (*SealedShare, error) {
	if len(b) > sealedShareFixed+maxSealedLen {
		return nil, fmt.Errorf("%w: sealed share of %d bytes exceeds %d", ErrMalformed, len(b), sealedShareFixed+maxSealedLen)
	}
	r, err := newReader(b, kindSealedShare, -1)
	if err != nil {
		return nil, err
	}
	if err := r.need(12); err != nil {
		return nil, err
	}
	s := &SealedShare{From: r.u32(), To: r.u32()}
	n := int(r.u32())
	if n != len(r.b) {
		return nil, fmt.Errorf("%w: sealed share: sealed field of %d bytes, %d present", ErrMalformed, n, len(r.b))
	}
	s.Sealed = append([]byte(nil), r.bytes(n)...)
	return s, nil
}

// hpkeInfo binds a sealed share to its sender, recipient, parameter set and
// ceremony, so that the coordinator cannot replay a share to another
// recipient, position or ceremony.
func (p Params) hpkeInfo(from, to uint32, context []byte) []byte {
	w := &writer{}
	w.bytes([]byte(labelHPKE + "\x00"))
	w.tag(p)
	w.u32(from)
	w.u32(to)
	w.bytes(context)
	return w.b
}

// A Shamir share travels and is kept mod Q only, each residue packed to
// its prime's bit width: decryption uses a key share's Q part alone, so
// its P part stays zero.
func (p Params) shamirPlainLen() int { return headerLen + tagLen + 4 + 4 + 32 + p.packedPolyLen() }

// shamirPolynomial re-derives the party's secret polynomial f of degree t-1
// with f(0) = s_i.
func (pa *Party) shamirPolynomial() mhe.ShamirPolynomial {
	ringQP := pa.p.rlwe.RingQP()
	coeffs := make([]ringqp.Poly, pa.t)
	coeffs[0] = *pa.sk.Value.CopyNew()
	us := ringqp.NewUniformSampler(keyedPRNG(labelShamir, pa.shamirSeed[:]), *ringQP)
	for i := 1; i < pa.t; i++ {
		coeffs[i] = ringQP.NewPoly()
		us.Read(coeffs[i])
	}
	return mhe.ShamirPolynomial{Value: structs.Vector[ringqp.Poly](coeffs)}
}

// SealShares evaluates the party's Shamir polynomial at every committee
// point 1..c and seals each value to its recipient's HPKE key (its own
// included, on the committee). recipients maps each point to its HPKE
// public key; context identifies the ceremony (it is bound as HPKE info).
// A party off the committee is ready once its shares are sealed.
func (pa *Party) SealShares(recipients map[uint32][]byte, context []byte) ([]*SealedShare, error) {
	if len(recipients) != pa.c {
		return nil, fmt.Errorf("%w: %d recipients, the committee has %d parties", ErrWrongShape, len(recipients), pa.c)
	}
	kem, kdf, aead := hpkeSuite()
	thr := mhe.NewThresholdizer(pa.p.rlwe)
	f := pa.shamirPolynomial()
	share := thr.AllocateThresholdSecretShare()
	out := make([]*SealedShare, 0, pa.c)
	for to := uint32(1); int(to) <= pa.c; to++ {
		pubBytes, ok := recipients[to]
		if !ok {
			return nil, fmt.Errorf("%w: no HPKE key for party %d", ErrWrongShape, to)
		}
		pub, err := kem.NewPublicKey(pubBytes)
		if err != nil {
			return nil, fmt.Errorf("%w: HPKE key of party %d: %v", ErrMalformed, to, err)
		}
		thr.GenShamirSecretShare(mhe.ShamirPublicPoint(to), f, &share)
		w := newWriter(pa.p.shamirPlainLen(), kindShamirShare)
		w.tag(pa.p)
		w.u32(pa.self)
		w.u32(to)
		sh := seedHash(pa.seed[:])
		w.bytes(sh[:])
		w.packed(pa.p, share.Q)
		sealed, err := hpke.Seal(pub, kdf, aead, pa.p.hpkeInfo(pa.self, to, context), w.b)
		clear(w.b) // the plaintext is secret
		if err != nil {
			return nil, fmt.Errorf("he: sealing share for party %d: %w", to, err)
		}
		out = append(out, &SealedShare{From: pa.self, To: to, Sealed: sealed})
	}
	if !pa.Holder() {
		pa.ready = true
	}
	return out, nil
}

// OpenShares opens one sealed share from each of the N parties, all
// addressed to this party, and keeps each of them. On error the party is
// unchanged.
func (pa *Party) OpenShares(hpkePriv []byte, shares []*SealedShare, context []byte) error {
	kem, kdf, aead := hpkeSuite()
	priv, err := kem.NewPrivateKey(hpkePriv)
	if err != nil {
		return fmt.Errorf("%w: HPKE private key: %v", ErrMalformed, err)
	}
	if err := pa.checkHolder(); err != nil {
		return err
	}
	if len(shares) < pa.n {
		return fmt.Errorf("%w: %d sealed shares, need one from each of %d parties", ErrTooFewShares, len(shares), pa.n)
	}
	if len(shares) > pa.n {
		return fmt.Errorf("%w: %d sealed shares for %d parties", ErrWrongShape, len(shares), pa.n)
	}
	opened := make([]ringqp.Poly, pa.n)
	seen := make([]bool, pa.n+1)
	wantSeed := seedHash(pa.seed[:])
	for i, s := range shares {
		switch {
		case s == nil:
			return fmt.Errorf("%w: sealed share %d is nil", ErrMalformed, i)
		case s.To != pa.self:
			return fmt.Errorf("%w: sealed share from %d is addressed to %d, not %d", ErrShareMismatch, s.From, s.To, pa.self)
		case s.From < 1 || int(s.From) > pa.n:
			return fmt.Errorf("%w: sealed share from point %d, region has 1..%d", ErrShareMismatch, s.From, pa.n)
		case seen[s.From]:
			return fmt.Errorf("%w: two sealed shares from %d", ErrDuplicateShare, s.From)
		}
		seen[s.From] = true
		plain, err := hpke.Open(priv, kdf, aead, pa.p.hpkeInfo(s.From, pa.self, context), s.Sealed)
		if err != nil {
			return fmt.Errorf("%w: sealed share from %d does not open (wrong key, ceremony or tampered)", ErrDecrypt, s.From)
		}
		v, err := pa.readShamir(plain, s.From, wantSeed)
		clear(plain)
		if err != nil {
			return err
		}
		opened[s.From-1] = v.Poly
	}
	pa.shares = opened
	pa.ready = true
	return nil
}

func (pa *Party) readShamir(plain []byte, from uint32, wantSeed [32]byte) (mhe.ShamirSecretShare, error) {
	r, err := newReader(plain, kindShamirShare, pa.p.shamirPlainLen())
	if err != nil {
		return mhe.ShamirSecretShare{}, err
	}
	if err := r.tag(pa.p); err != nil {
		return mhe.ShamirSecretShare{}, err
	}
	if f, t := r.u32(), r.u32(); f != from || t != pa.self {
		return mhe.ShamirSecretShare{}, fmt.Errorf("%w: Shamir share says %d->%d, envelope %d->%d", ErrShareMismatch, f, t, from, pa.self)
	}
	if subtle.ConstantTimeCompare(r.bytes(32), wantSeed[:]) != 1 {
		return mhe.ShamirSecretShare{}, fmt.Errorf("%w: Shamir share from %d belongs to another ceremony", ErrShareMismatch, from)
	}
	v, err := pa.p.readShamirShare(r, fmt.Sprintf("Shamir share from %d", from))
	if err != nil {
		return mhe.ShamirSecretShare{}, err
	}
	return mhe.ShamirSecretShare{Poly: v}, r.done()
}

// readShamirShare reads a packed Shamir share (mod Q; its P part zero).
func (p Params) readShamirShare(r *reader, what string) (ringqp.Poly, error) {
	v := p.rlwe.RingQP().NewPoly()
	q := []ring.Poly{v.Q}
	if err := r.packedPolys(p, q, what); err != nil {
		return v, err
	}
	v.Q = q[0]
	return v, nil
}

// partyLen is the size of a party's state; withShares for a committee
// member that holds its shares.
func (p Params) partyLen(n int, withShares bool) int {
	l := headerLen + tagLen + 4 + 4 + 4 + 4 + SeedLen + 32 + 32 + 1
	if withShares {
		l += n * p.packedPolyLen()
	}
	return l
}

// legacyPartyLen is partyLen for a state written when shares were kept
// mod QP, eight bytes a residue; UnmarshalParty still reads it.
func (p Params) legacyPartyLen(n int) int { return p.partyLen(0, false) + n*p.polyQPLen() }

// MarshalBinary encodes the party's secret state for the node's 0600 state
// file. The bytes are key material: never log or send them.
func (pa *Party) MarshalBinary() ([]byte, error) {
	withShares := pa.ready && pa.Holder()
	w := newWriter(pa.p.partyLen(pa.n, withShares), kindParty)
	w.tag(pa.p)
	w.u32(pa.self)
	w.u32(uint32(pa.n))
	w.u32(uint32(pa.c))
	w.u32(uint32(pa.t))
	w.bytes(pa.seed[:])
	w.bytes(pa.skSeed[:])
	w.bytes(pa.shamirSeed[:])
	if pa.ready {
		w.u8(1)
		for _, sh := range pa.shares { // none off the committee
			w.packed(pa.p, sh.Q)
		}
	} else {
		w.u8(0)
	}
	return w.b, nil
}

// UnmarshalParty decodes a party's state written by MarshalBinary. The
// region size in the header is range-checked, and the length checked
// against it, before anything is allocated.
func UnmarshalParty(p Params, b []byte) (*Party, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	r, err := newReader(b, kindParty, -1)
	if err != nil {
		return nil, err
	}
	if err := r.need(p.partyLen(0, false) - headerLen); err != nil {
		return nil, err
	}
	if err := r.tag(p); err != nil {
		return nil, err
	}
	pa := &Party{p: p, self: r.u32(), n: int(r.u32()), c: int(r.u32()), t: int(r.u32())}
	if err := p.checkRegion(pa.n, pa.c, pa.t); err != nil {
		return nil, fmt.Errorf("%w: party state: %v", ErrMalformed, err)
	}
	if pa.self < 1 || int(pa.self) > pa.n {
		return nil, fmt.Errorf("%w: party state: point %d not in 1..%d", ErrMalformed, pa.self, pa.n)
	}
	legacy := len(b) == p.legacyPartyLen(pa.n)
	if len(b) != p.partyLen(pa.n, false) && len(b) != p.partyLen(pa.n, true) && !legacy {
		return nil, fmt.Errorf("%w: party state of %d bytes, a party of %d needs %d or %d", ErrMalformed, len(b), pa.n, p.partyLen(pa.n, false), p.partyLen(pa.n, true))
	}
	copy(pa.seed[:], r.bytes(SeedLen))
	copy(pa.skSeed[:], r.bytes(32))
	copy(pa.shamirSeed[:], r.bytes(32))
	switch flag := r.u8(); {
	case flag == 1 && !pa.Holder() && len(b) == p.partyLen(pa.n, false):
		pa.ready = true
	case flag == 1 && pa.Holder() && (len(b) == p.partyLen(pa.n, true) || legacy):
		pa.shares = make([]ringqp.Poly, pa.n)
		for i := range pa.shares {
			read := p.readShamirShare
			if legacy {
				read = p.readQP
			}
			if pa.shares[i], err = read(r, fmt.Sprintf("Shamir share from %d", i+1)); err != nil {
				return nil, err
			}
		}
		pa.ready = true
	case flag == 0 && len(b) == p.partyLen(pa.n, false):
	default:
		return nil, fmt.Errorf("%w: party state: ready flag %d does not match its length", ErrMalformed, flag)
	}
	pa.sk = p.secretKey(pa.skSeed[:])
	return pa, r.done()
}
