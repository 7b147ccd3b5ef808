package identity

import "encoding/binary"

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
	var count, t [8]byte
	binary.BigEndian.PutUint64(count[:], uint64(len(hospitals)))
	binary.BigEndian.PutUint64(t[:], uint64(threshold))
	fields := [][]byte{[]byte("regionfl/identity/v1 region"), []byte(params), count[:]}
	for _, name := range hospitals {
		fields = append(fields, []byte(name))
	}
	var d [32]byte
	copy(d[:], lengthPrefixed(append(fields, t[:], seed)...))
	return d
}
