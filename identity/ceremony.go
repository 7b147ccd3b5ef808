package identity

import (
	"crypto"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Statement kinds of the key ceremony. Every hospital signs each of its
// ceremony messages with its certificate key, and every hospital verifies
// every other's before acting on it: the coordinator relays them and can
// neither forge, swap nor re-address one.
const (
	// StatementHPKEKey: (region digest, hospital, HPKE public key).
	StatementHPKEKey = "ceremony hpke key"
	// StatementSealedShare: (members digest, sender, recipient, SHA-256 of
	// the sealed share's encoding).
	StatementSealedShare = "ceremony sealed share"
)

// StatementGenesis is the statement (region digest), signed by an operator:
// the region's hospitals, threshold, parameter set and ceremony seed, as
// the operator fixed them. Nodes accept no other region.
const StatementGenesis = "region genesis"

// Genesis is a region as an operator signs it.
type Genesis struct {
	Params    string
	Hospitals []string // sorted
	Threshold uint32
	// Committee is how many members of each key epoch hold the Shamir
	// shares (see EpochPoints); 0: every member.
	Committee uint32
	Seed      []byte
	// RevocationMaxAgeS is how old, in seconds, the newest signed
	// revocation list may be before hospitals stop acting for the region
	// (0: no limit; see StatementRevocationList).
	RevocationMaxAgeS uint32
	Signature         []byte // StatementGenesis over RegionDigest
}

// NewGenesis draws a ceremony seed and signs the region with key (an
// operator certificate's). Hospitals are sorted; duplicates are the
// coordinator's to refuse.
func NewGenesis(key crypto.PrivateKey, params string, hospitals []string, threshold, committee uint32, revocationMaxAge time.Duration) (*Genesis, error) {
	if err := CheckRevocationMaxAge(revocationMaxAge); err != nil {
		return nil, err
	}
	g := &Genesis{Params: params, Hospitals: slices.Sorted(slices.Values(hospitals)), Threshold: threshold, Committee: committee, Seed: make([]byte, 32),
		RevocationMaxAgeS: uint32(revocationMaxAge / time.Second)}
	if _, err := rand.Read(g.Seed); err != nil {
		return nil, fmt.Errorf("identity: ceremony seed: %w", err)
	}
	d := RegionDigest(g.Params, g.Hospitals, g.Threshold, g.Committee, g.Seed, g.RevocationMaxAgeS)
	sig, err := SignStatement(key, StatementGenesis, d[:])
	if err != nil {
		return nil, err
	}
	g.Signature = sig
	return g, nil
}

// CeremonyDigest is what the ceremony statements of key epoch epoch are
// bound to: the region digest itself for the first ceremony, and for a
// later one (a re-key, see he.EpochSeed) the digest of (region digest,
// epoch), so no statement of one epoch's ceremony can be replayed in
// another's.
func CeremonyDigest(region [32]byte, epoch uint32) [32]byte {
	if epoch == 0 {
		return region
	}
	var e [4]byte
	binary.BigEndian.PutUint32(e[:], epoch)
	var d [32]byte
	copy(d[:], lengthPrefixed([]byte("regionfl/identity/v1 key epoch"), region[:], e[:]))
	return d
}

// MembersDigest is what the sealed-share statements of a ceremony, and
// each member's confirmation that it holds its key, are bound to: the
// ceremony digest itself when every hospital of the region takes part
// (the genesis ceremony, or a re-key every hospital enrolled in),
// otherwise the digest of (ceremony digest, the sorted members). A
// hospital's Shamir point in the epoch follows from the members
// (EpochPoints), so a coordinator that showed two hospitals two
// different member lists gets statements that verify for neither.
func MembersDigest(ceremony [32]byte, hospitals, members []string) [32]byte {
	if slices.Equal(hospitals, members) {
		return ceremony
	}
	var count [8]byte
	binary.BigEndian.PutUint64(count[:], uint64(len(members)))
	fields := [][]byte{[]byte("regionfl/identity/v1 epoch members"), ceremony[:], count[:]}
	for _, m := range members {
		fields = append(fields, []byte(m))
	}
	var d [32]byte
	copy(d[:], lengthPrefixed(fields...))
	return d
}

// CommitteeSize is how many of a key epoch's members members hold the
// Shamir shares in a region whose genesis names committee: all of them
// when committee is 0 or at least members.
func CommitteeSize(committee uint32, members int) int {
	if committee == 0 || int64(committee) >= int64(members) {
		return members
	}
	return int(committee)
}

// EpochPoints orders the members of a key epoch (sorted) by Shamir point:
// out[k] has point k+1. With a committee smaller than the members, the
// members whose SHA-256 of (ceremony digest, name) is lowest hold the
// Shamir shares, at points 1..c sorted by name, and the others follow at
// c+1..n, sorted by name. Nobody picks the committee: the ceremony digest
// is fixed by the operator-signed region and the epoch, so a coordinator
// can only take names out of the draw, by leaving hospitals out of a
// re-key, never put one in. Every hospital computes the order itself.
// Without a committee the points follow the sorted members.
func EpochPoints(ceremony [32]byte, members []string, committee uint32) []string {
	c := CommitteeSize(committee, len(members))
	if c == len(members) {
		return members
	}
	rank := make(map[string]string, len(members))
	for _, m := range members {
		rank[m] = string(lengthPrefixed([]byte("regionfl/identity/v1 committee draw"), ceremony[:], []byte(m)))
	}
	byRank := slices.SortedFunc(slices.Values(members), func(a, b string) int {
		return strings.Compare(rank[a], rank[b])
	})
	in, out := byRank[:c], byRank[c:]
	slices.Sort(in)
	slices.Sort(out)
	return append(slices.Clip(in), out...)
}

// Statement kinds of a round. A hospital signs each update it sends and
// its approval of the round's contributor set; decryptors check every
// approval, an auditor every contribution.
const (
	// StatementContribution: (region digest, hospital, update binding,
	// SHA-256 of the update, its size as 8 bytes big endian).
	StatementContribution = "round contribution"
	// StatementApproval: (region digest, hospital, update binding, the
	// hospital's own update digest, the aggregate's digest, the
	// fingerprint of the hospital's update under the aggregate's challenge
	// (he.Update.Fingerprint), then the sorted contributor names).
	StatementApproval = "round contributor set and aggregate"
	// StatementDecryptionShare: (region digest, hospital, update binding,
	// the aggregate's digest, SHA-256 of the share, the decryption attempt
	// as 4 bytes big endian, the number of contributors as 8 bytes big
	// endian, the sorted contributors, then the sorted decryptors).
	StatementDecryptionShare = "decryption share"
)

// StatementJob is a researcher's signature over a job: (the job spec's
// digest, jobspec.SignedDigest, and the submit's request_id). A node
// accepts only a job a researcher of the region CA signed, pins its digest,
// and holds every later task of the job against it, so no coordinator can
// lower K, change the purpose or the model, or offer one signed job twice.
const StatementJob = "job spec"

// JobFields are the signed fields of a StatementJob.
func JobFields(specDigest []byte, requestID string) [][]byte {
	return [][]byte{specDigest, []byte(requestID)}
}

// ApprovalFields are the signed fields of a StatementApproval: the
// contributor set a hospital agrees its update is decrypted with, and the
// fingerprint by which anyone holding the aggregate checks that it is the
// sum of the approved updates (he.CheckFold).
func ApprovalFields(region, binding, updateDigest, aggregateDigest, fingerprint []byte, hospital string, contributors []string) [][]byte {
	f := [][]byte{region, []byte(hospital), binding, updateDigest, aggregateDigest, fingerprint}
	for _, c := range contributors {
		f = append(f, []byte(c))
	}
	return f
}

// DecryptionShareFields are the signed fields of a
// StatementDecryptionShare: a decryptor's word that it gave this share for
// this aggregate, contributor set and decryptor set, so an auditor can
// check offline who made every share a model came from.
func DecryptionShareFields(region, binding, aggregateDigest, shareDigest []byte, hospital string, attempt uint32, contributors, decryptors []string) [][]byte {
	var a [4]byte
	binary.BigEndian.PutUint32(a[:], attempt)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(contributors)))
	f := [][]byte{region, []byte(hospital), binding, aggregateDigest, shareDigest, a[:], n[:]}
	for _, c := range slices.Sorted(slices.Values(contributors)) {
		f = append(f, []byte(c))
	}
	for _, d := range slices.Sorted(slices.Values(decryptors)) {
		f = append(f, []byte(d))
	}
	return f
}

// ContributionFields are the signed fields of a StatementContribution.
func ContributionFields(region, binding, updateDigest []byte, hospital string, size uint64) [][]byte {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], size)
	return [][]byte{region, []byte(hospital), binding, updateDigest, n[:]}
}

// RegionDigest is the SHA-256 of an injective encoding of what fixes a
// region: its parameter set, its sorted hospitals, its threshold, its
// ceremony seed, the revocation list's maximum age in seconds and the size
// of its decryption committee (trailing fields, each only when it or a
// later one is set, so regions made before them keep their digest; the
// length prefixes keep the encoding injective). Hospitals pin it on first
// sight and bind every ceremony statement to it.
func RegionDigest(params string, hospitals []string, threshold, committee uint32, seed []byte, revocationMaxAgeS uint32) [32]byte {
	var count, t [8]byte
	binary.BigEndian.PutUint64(count[:], uint64(len(hospitals)))
	binary.BigEndian.PutUint64(t[:], uint64(threshold))
	fields := [][]byte{[]byte("regionfl/identity/v1 region"), []byte(params), count[:]}
	for _, name := range hospitals {
		fields = append(fields, []byte(name))
	}
	fields = append(fields, t[:], seed)
	if revocationMaxAgeS > 0 || committee > 0 {
		var age [8]byte
		binary.BigEndian.PutUint64(age[:], uint64(revocationMaxAgeS))
		fields = append(fields, age[:])
	}
	if committee > 0 {
		var c [8]byte
		binary.BigEndian.PutUint64(c[:], uint64(committee))
		fields = append(fields, c[:])
	}
	var d [32]byte
	copy(d[:], lengthPrefixed(fields...))
	return d
}
