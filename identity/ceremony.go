package identity

import (
	"crypto/sha256"
	"encoding/binary"
)

// Statement kinds of the key ceremony. Every hospital signs each of its
// ceremony messages with its certificate key, and every hospital verifies
// every other's before acting on it: the coordinator relays them and can
// neither forge, swap nor re-address one.
const (
	// StatementHPKEKey: (region digest, hospital, HPKE public key).
	StatementHPKEKey = "ceremony hpke key"
	// StatementPublicKeyShare: (region digest, hospital, SHA-256 of the
	// public-key share's encoding).
	StatementPublicKeyShare = "ceremony public-key share"
	// StatementSealedShare: (region digest, sender, recipient, SHA-256 of
	// the sealed share's encoding).
	StatementSealedShare = "ceremony sealed share"
)

// RegionDigest is the SHA-256 of an injective encoding of what fixes a
// region: its parameter set, its sorted hospitals, its threshold and its
// ceremony seed. Hospitals pin it on first sight and bind every ceremony
// statement to it.
func RegionDigest(params string, hospitals []string, threshold uint32, seed []byte) [32]byte {
	h := sha256.New()
	var n [8]byte
	write := func(b []byte) {
		binary.BigEndian.PutUint64(n[:], uint64(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	write([]byte("regionfl/identity/v1 region"))
	write([]byte(params))
	binary.BigEndian.PutUint64(n[:], uint64(len(hospitals)))
	h.Write(n[:])
	for _, name := range hospitals {
		write([]byte(name))
	}
	binary.BigEndian.PutUint64(n[:], uint64(threshold))
	h.Write(n[:])
	write(seed)
	var d [32]byte
	h.Sum(d[:0])
	return d
}
