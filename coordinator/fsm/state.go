package fsm

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"regionfl/audit"
	"regionfl/identity"
	"regionfl/jobspec"
	"regionfl/privacy"
	pb "regionfl/proto/regionfl/v1"
)

// Job states.
const (
	JobPending   = "pending"   // waiting for hospitals to decide
	JobRunning   = "running"   // rounds in progress
	JobDone      = "done"      // all rounds ran
	JobFailed    = "failed"    // stopped with a reason (too few hospitals, too many aborted rounds)
	JobCancelled = "cancelled" // stopped by a researcher
)

// Round states.
const (
	RoundCollecting = "collecting" // waiting for encrypted updates
	RoundDecrypting = "decrypting" // aggregate committed, waiting for decryption shares
	RoundCommitted  = "committed"  // new model version committed
	RoundAborted    = "aborted"    // closed without a model, with a reason
)

// State is everything the coordinator replicates. Only Apply and Restore
// change it; readers see it under FSM.Read.
type State struct {
	Replicas map[string]string `json:"replicas"` // replica ID -> gRPC address
	Region   *Region           `json:"region,omitempty"`
	Jobs     map[string]*Job   `json:"jobs"`
	JobOrder []string          `json:"job_order"`
	Requests map[string]string `json:"requests"` // idempotency key -> job ID
	// Revoked certificate serials (lowercase hex): refused on every request.
	Revoked map[string]*pb.Revocation `json:"revoked,omitempty"`
	// RevocationList is the newest operator-signed list of Revoked (nil
	// before the first).
	RevocationList *pb.RevocationList `json:"revocation_list,omitempty"`
	// WebSessionsEnded holds, per identity (ROLE/NAME), the time (Unix ms)
	// before which its web-view sessions are ended.
	WebSessionsEnded map[string]int64 `json:"web_sessions_ended,omitempty"`
	// Audit is the tamper-evident record of every action, appended in the
	// same entry as the action. Snapshots carry it in a section of its own.
	Audit *audit.Log `json:"-"`
	Index uint64     `json:"index"` // last applied Raft index
}

// Region is the set of hospitals and the state of their key ceremony.
type Region struct {
	Params    string   `json:"params"`
	Hospitals []string `json:"hospitals"` // sorted
	Threshold int      `json:"threshold"`
	// Committee is how many members of each key epoch hold the Shamir
	// shares (identity.EpochPoints); 0: every member.
	Committee uint32   `json:"committee,omitempty"`
	Seed      []byte   `json:"seed"`
	CreatedMs int64    `json:"created_ms"`
	HPKE      [][]byte `json:"hpke"` // per hospital, public
	// Dealt[i] is what hospital i sealed to the committee of the current
	// ceremony (nil until it has): the digests of its sealed shares and
	// its signatures over them. The shares themselves stay out of the log:
	// the leader relays them, and their sender sends them again to a new
	// leader. A region's worth is N·c digests, not N·c shares.
	Dealt []*Dealing `json:"dealt,omitempty"`
	Ready []bool     `json:"ready"`
	// What each hospital signed (identity.Statement*), relayed so every
	// hospital verifies every other's ceremony messages itself: its
	// certificate as enrolled and its signature over its HPKE key.
	Certs   [][]byte `json:"certs,omitempty"`
	HPKESig [][]byte `json:"hpke_sig,omitempty"`
	// The sealed shares as states written before Dealt kept them:
	// Sealed[to][from], SealedSig[to][from] and who sealed (SealedBy, nil in
	// still older states). Restore turns them into Dealt (upgradeDealt).
	Sealed    [][][]byte `json:"sealed,omitempty"`
	SealedSig [][][]byte `json:"sealed_sig,omitempty"`
	SealedBy  []bool     `json:"sealed_by,omitempty"`
	// The operator's identity.StatementGenesis of the region, and the
	// certificate that made it.
	GenesisSig  []byte `json:"genesis_sig,omitempty"`
	GenesisCert []byte `json:"genesis_cert,omitempty"`
	// Epoch is the key epoch of the ceremony held above: 0 for the
	// genesis ceremony, one more per re-key (StartKeyEpochCommand). While
	// a re-key runs, rounds keep using the previous epoch's key.
	Epoch uint32 `json:"epoch,omitempty"`
	// RevocationMaxAgeS is how old the newest signed revocation list may
	// be before hospitals stop acting for the region (0: no limit).
	RevocationMaxAgeS uint32 `json:"revocation_max_age_s,omitempty"`
	// EpochStartedMs is when the ceremony of key epoch Epoch began (0 for
	// the genesis ceremony): the leader closes a re-key's enrollment a
	// while after it.
	EpochStartedMs int64 `json:"epoch_started_ms,omitempty"`
	// EpochMembers lists, for each key epoch whose enrollment was closed
	// with hospitals missing (CloseEnrollmentCommand), the sorted
	// hospitals that take part in it. Every other epoch has every hospital.
	EpochMembers map[uint32][]string `json:"epoch_members,omitempty"`
	// Abandoned lists the re-keys whose ceremony stalled and was given up
	// for the next epoch's: they never had a key.
	Abandoned []uint32 `json:"abandoned,omitempty"`

	// points remembers PointsOf by epoch, shared by the region's clones:
	// every hospital's poll asks for the committee, and drawing it hashes
	// every member. An epoch's points never change once its members are
	// fixed. Nil (in regions built by hand) computes them each time.
	points *pointsMemo
}

type pointsMemo struct {
	mu      sync.Mutex
	byEpoch map[uint32][]string
}

// memoizePoints makes the region remember its epochs' points.
func (r *Region) memoizePoints() { r.points = &pointsMemo{byEpoch: map[uint32][]string{}} }

// MembersOf is the sorted list of hospitals that take part in key epoch e,
// or nil while e is a re-key whose enrollment is still open.
func (r *Region) MembersOf(e uint32) []string {
	if m, ok := r.EpochMembers[e]; ok {
		return m
	}
	if e > 0 && e == r.Epoch && r.enrollmentOpen() {
		return nil
	}
	return r.Hospitals
}

// PointsOf lists the members of key epoch e by Shamir point, the
// committee first (identity.EpochPoints), or nil while its members are not
// fixed. The list is shared: callers only read it.
func (r *Region) PointsOf(e uint32) []string {
	m := r.MembersOf(e)
	if m == nil {
		return nil
	}
	if r.points == nil {
		return identity.EpochPoints(identity.CeremonyDigest(r.Digest(), e), m, r.Committee)
	}
	r.points.mu.Lock()
	defer r.points.mu.Unlock()
	p, ok := r.points.byEpoch[e]
	if !ok {
		p = identity.EpochPoints(identity.CeremonyDigest(r.Digest(), e), m, r.Committee)
		r.points.byEpoch[e] = p
	}
	return p
}

// CommitteeOf lists the members of key epoch e that hold the Shamir
// shares and decrypt, by point.
func (r *Region) CommitteeOf(e uint32) []string {
	p := r.PointsOf(e)
	c := identity.CommitteeSize(r.Committee, len(p))
	return p[:c:c] // the points are shared: an append must not write into them
}

// MemberPoint is hospital h's Shamir point in key epoch e (1-based), or 0
// if h does not take part in it (or its members are not fixed yet).
func (r *Region) MemberPoint(e uint32, h string) uint32 { return r.MemberPoints(e, []string{h})[0] }

// MemberPoints are the Shamir points in key epoch e of hs (0 for a
// hospital that does not take part in it).
func (r *Region) MemberPoints(e uint32, hs []string) []uint32 {
	point := map[string]uint32{}
	for k, h := range r.PointsOf(e) {
		point[h] = uint32(k + 1)
	}
	out := make([]uint32, len(hs))
	for i, h := range hs {
		out[i] = point[h]
	}
	return out
}

// Member reports whether h takes part in key epoch e.
func (r *Region) Member(e uint32, h string) bool {
	_, ok := slices.BinarySearch(r.MembersOf(e), h)
	return ok
}

// Holds reports whether h is on the committee of key epoch e.
func (r *Region) Holds(e uint32, h string) bool {
	return slices.Contains(r.CommitteeOf(e), h)
}

// MembersDigest is what the current ceremony's member confirmations and
// sealed-share statements are bound to (identity.MembersDigest).
func (r *Region) MembersDigest() [32]byte {
	return identity.MembersDigest(r.CeremonyDigest(), r.Hospitals, r.MembersOf(r.Epoch))
}

// enrollmentOpen reports whether the current ceremony still takes
// enrollments: until every hospital enrolled or the leader closed it.
func (r *Region) enrollmentOpen() bool {
	_, closed := r.EpochMembers[r.Epoch]
	return !closed && !all(r.HPKE)
}

// Enrolled lists the hospitals enrolled in the current ceremony.
func (r *Region) Enrolled() []string {
	var out []string
	for i, b := range r.HPKE {
		if b != nil {
			out = append(out, r.Hospitals[i])
		}
	}
	return out
}

// MinMembers is the fewest hospitals a re-key's ceremony may close its
// enrollment with: threshold+1, so that rounds of K = t+1 (the default
// site policy) can still run, or every hospital in a region that small.
func (r *Region) MinMembers() int { return min(len(r.Hospitals), r.Threshold+1) }

// CeremonyDigest is what the statements of the region's current ceremony
// are bound to (identity.CeremonyDigest).
func (r *Region) CeremonyDigest() [32]byte {
	return identity.CeremonyDigest(r.Digest(), r.Epoch)
}

// KeyEpoch is the newest key epoch whose ceremony is done, the one new
// rounds encrypt in; ok is false before the genesis ceremony is done.
func (r *Region) KeyEpoch() (epoch uint32, ok bool) {
	if r.Step() == pb.CeremonyStep_CEREMONY_STEP_DONE {
		return r.Epoch, true
	}
	// A new epoch's ceremony starts only once the last one is done, or
	// gave up on a stalled one (never the genesis ceremony).
	for e := r.Epoch; e > 0; {
		e--
		if !slices.Contains(r.Abandoned, e) {
			return e, true
		}
	}
	return 0, false
}

// resetCeremony clears the ceremony messages for a new key epoch.
func (r *Region) resetCeremony() {
	n := len(r.Hospitals)
	r.HPKE, r.HPKESig, r.Certs = make([][]byte, n), make([][]byte, n), make([][]byte, n)
	r.Dealt = make([]*Dealing, n)
	r.Ready = make([]bool, n)
}

// Digest is identity.RegionDigest of the region: what its operator signed
// and what every ceremony and round statement is bound to.
func (r *Region) Digest() [32]byte {
	return identity.RegionDigest(r.Params, r.Hospitals, uint32(r.Threshold), r.Committee, r.Seed, r.RevocationMaxAgeS)
}

// Clone copies the region deeply enough to be read outside the state's
// lock: Apply writes into its per-hospital slices.
func (r *Region) Clone() *Region {
	c := *r
	c.HPKE = slices.Clone(r.HPKE)
	c.Ready = slices.Clone(r.Ready)
	c.Certs = slices.Clone(r.Certs)
	c.HPKESig = slices.Clone(r.HPKESig)
	c.Dealt = slices.Clone(r.Dealt)             // a dealing is never written in place
	c.EpochMembers = maps.Clone(r.EpochMembers) // lists are never written in place
	c.Abandoned = slices.Clone(r.Abandoned)
	return &c
}

// Cert returns the certificate hospital point (1-based) enrolled with, or
// nil.
func (r *Region) Cert(point uint32) []byte {
	if point < 1 || int(point) > len(r.Certs) {
		return nil
	}
	return r.Certs[point-1]
}

// Index returns the position of hospital h, or -1.
func (r *Region) Index(h string) int {
	i, ok := slices.BinarySearch(r.Hospitals, h)
	if !ok {
		return -1
	}
	return i
}

// StepName is Step for people: enroll, seal_shares, open_shares, done.
func (r *Region) StepName() string {
	return strings.ToLower(strings.TrimPrefix(r.Step().String(), "CEREMONY_STEP_"))
}

// Step reports how far the key ceremony is.
func (r *Region) Step() pb.CeremonyStep {
	switch {
	case r.enrollmentOpen():
		return pb.CeremonyStep_CEREMONY_STEP_ENROLL
	case !r.allSealed():
		return pb.CeremonyStep_CEREMONY_STEP_SEAL_SHARES
	case !r.membersHave(func(i int) bool { return r.Ready[i] }):
		return pb.CeremonyStep_CEREMONY_STEP_OPEN_SHARES
	default:
		return pb.CeremonyStep_CEREMONY_STEP_DONE
	}
}

func all(bs [][]byte) bool {
	for _, b := range bs {
		if b == nil {
			return false
		}
	}
	return true
}

// allSealed reports whether every member of the current ceremony sealed
// its shares to every committee member.
func (r *Region) allSealed() bool {
	return r.membersHave(r.sealed)
}

func (r *Region) sealed(from int) bool { return from < len(r.Dealt) && r.Dealt[from] != nil }

// SealedAll reports whether member h of the current ceremony sealed its
// shares (to every committee member: one command seals to all of them).
func (r *Region) SealedAll(h string) bool {
	from := r.Index(h)
	return from >= 0 && r.sealed(from)
}

// DealingOf is what member h sealed to the current ceremony's committee,
// or nil.
func (r *Region) DealingOf(h string) *Dealing {
	if from := r.Index(h); from >= 0 && r.sealed(from) {
		return r.Dealt[from]
	}
	return nil
}

// CommitteeReady says, by point, which members of the current
// ceremony's committee hold their key.
func (r *Region) CommitteeReady() []bool {
	holders := r.holderIndexes()
	out := make([]bool, len(holders))
	for k, i := range holders {
		out[k] = i >= 0 && r.Ready[i]
	}
	return out
}

// Dealing is what one member sealed to the committee of a key epoch, by
// the committee's points: entry k is for the member at point k+1.
type Dealing struct {
	// Digests are the SHA-256 of the sealed shares (nil for a share a
	// state written before dealings were kept had let go).
	Digests [][]byte `json:"digests"`
	// Sigs are the sender's identity.StatementSealedShare over each (nil
	// in logs older than those signatures).
	Sigs [][]byte `json:"sigs,omitempty"`
	// Shares are the sealed shares themselves, only from a log or state
	// written when the log carried them.
	Shares [][]byte `json:"shares,omitempty"`
	// Size is the sealed shares' total size in bytes.
	Size uint64 `json:"size"`
}

// upgradeDealt turns the sealed shares of a state written before Dealt
// kept them (Sealed, SealedSig, SealedBy) into dealings. Who sealed is
// SealedBy or, in states older than it, whether the first committee
// member's row holds the sender's share: a command seals to every
// committee member at once. A malformed state is check's to refuse; this
// only must not panic.
func (r *Region) upgradeDealt() {
	sealed, sigs, by := r.Sealed, r.SealedSig, r.SealedBy
	r.Sealed, r.SealedSig, r.SealedBy = nil, nil, nil
	if r.Dealt != nil || sealed == nil {
		return
	}
	n := len(r.Hospitals)
	r.Dealt = make([]*Dealing, n)
	holders := r.holderIndexes()
	for _, to := range holders {
		if to < 0 || to >= len(sealed) || len(sealed[to]) != n || (sigs != nil && (to >= len(sigs) || len(sigs[to]) != n)) {
			return
		}
	}
	for from := range n {
		if by != nil && (from >= len(by) || !by[from]) || by == nil && (len(holders) == 0 || sealed[holders[0]][from] == nil) {
			continue
		}
		d := &Dealing{Digests: make([][]byte, len(holders)), Shares: make([][]byte, len(holders))}
		if sigs != nil {
			d.Sigs = make([][]byte, len(holders))
		}
		for k, to := range holders {
			if b := sealed[to][from]; b != nil {
				sum := sha256.Sum256(b)
				d.Digests[k], d.Shares[k], d.Size = sum[:], b, d.Size+uint64(len(b))
			}
			if sigs != nil {
				d.Sigs[k] = sigs[to][from]
			}
		}
		r.Dealt[from] = d
	}
}

// memberIndexes are the positions in Hospitals of the current ceremony's
// members (nil while enrollment is open).
func (r *Region) memberIndexes() []int { return r.indexes(r.MembersOf(r.Epoch)) }

// holderIndexes are the positions in Hospitals of the current ceremony's
// committee, by point (nil while enrollment is open).
func (r *Region) holderIndexes() []int { return r.indexes(r.CommitteeOf(r.Epoch)) }

func (r *Region) indexes(hs []string) []int {
	if hs == nil {
		return nil
	}
	out := make([]int, len(hs))
	for k, h := range hs {
		out[k] = r.Index(h)
	}
	return out
}

// membersHave reports whether has holds for the position of every member
// of the current ceremony (false while enrollment is open).
func (r *Region) membersHave(has func(i int) bool) bool {
	members := r.memberIndexes()
	if members == nil {
		return false
	}
	for _, i := range members {
		if !has(i) {
			return false
		}
	}
	return true
}

// Job is a training job and its rounds.
type Job struct {
	ID          string      `json:"id"`
	Spec        *pb.JobSpec `json:"spec"`
	ModelHash   string      `json:"model_hash"`
	SubmittedBy string      `json:"submitted_by"`
	SubmittedMs int64       `json:"submitted_ms"`
	// RequestID, Signature and Certificate are the submitter's signed
	// statement of the job (identity.StatementJob), relayed to the nodes,
	// which accept only a job a researcher signed.
	RequestID   string            `json:"request_id,omitempty"`
	Signature   []byte            `json:"signature,omitempty"`
	Certificate []byte            `json:"certificate,omitempty"`
	State       string            `json:"state"`
	Reason      string            `json:"reason,omitempty"`
	Accepted    []string          `json:"accepted"`
	Refused     map[string]string `json:"refused"`
	Rounds      []*Round          `json:"rounds"`
	// Models holds version v at index v. A model never changes once
	// committed; snapshots carry them in a section of their own.
	Models []*Model `json:"-"`
	// OptimizerState is the server optimizer's state after the last commit.
	OptimizerState []float64 `json:"optimizer_state,omitempty"`
}

// Clone copies a job deep enough to be read outside the FSM's lock (the
// round engine and the server do): every slice and map a command changes
// in place. Byte slices are shared; commands replace them, never edit them.
func (j *Job) Clone() *Job {
	c := *j
	c.Accepted = slices.Clone(j.Accepted)
	c.Refused = maps.Clone(j.Refused)
	c.Rounds = make([]*Round, len(j.Rounds))
	for i, r := range j.Rounds {
		rc := *r
		rc.Contributions = slices.Clone(r.Contributions)
		rc.Contributors = slices.Clone(r.Contributors)
		rc.Active = slices.Clone(r.Active)
		rc.Asked = slices.Clone(r.Asked)
		rc.Shares = maps.Clone(r.Shares)
		rc.ShareSigned = maps.Clone(r.ShareSigned)
		rc.Approvals = maps.Clone(r.Approvals)
		c.Rounds[i] = &rc
	}
	c.Models = slices.Clone(j.Models)
	return &c
}

// Decided reports whether hospital h has accepted or refused the job.
func (j *Job) Decided(h string) bool {
	_, refused := j.Refused[h]
	return refused || slices.Contains(j.Accepted, h)
}

// Current returns the last round, or nil.
func (j *Job) Current() *Round {
	if len(j.Rounds) == 0 {
		return nil
	}
	return j.Rounds[len(j.Rounds)-1]
}

// IsRevoked reports whether a certificate serial (lowercase hex) is revoked.
func (s *State) IsRevoked(serial string) bool {
	_, ok := s.Revoked[serial]
	return ok
}

// NextRound is the number of the round to open next: the statistics round
// while a region-scaled job lacks the region's scaling, else one past the
// current round (round numbers keep counting across aborted rounds).
func (j *Job) NextRound() uint32 {
	if jobspec.NeedsScaling(j.Spec) {
		return jobspec.StatsRound
	}
	if cur := j.Current(); cur != nil {
		return cur.Number + 1
	}
	return 1
}

// EpsilonSpent is the privacy ledger of a DP job: per hospital, the ε
// (at the job's δ) of the training rounds its update was counted in.
// It is derived from replicated state, so every replica reports the same.
func (j *Job) EpsilonSpent() map[string]float64 {
	if j.Spec.GetDpNoiseMultiplier() == 0 {
		return nil
	}
	rounds, acc := j.contributedRounds(), j.accountant()
	out := make(map[string]float64, len(rounds))
	for h, n := range rounds {
		out[h] = acc.Epsilon(n)
	}
	return out
}

// accountant turns a DP job's rounds into ε at its δ.
func (j *Job) accountant() privacy.Accountant {
	return privacy.Accountant{NoiseMultiplier: j.Spec.GetDpNoiseMultiplier(), Delta: j.Spec.GetDpDelta()}
}

// ContributedRounds counts the training rounds a hospital's update was
// counted in.
func (j *Job) ContributedRounds(h string) int { return j.contributedRounds()[h] }

// contributedRounds counts, per hospital, the training rounds its update
// was counted in (a round holds at most one update per hospital).
func (j *Job) contributedRounds() map[string]int {
	rounds := map[string]int{}
	for _, r := range j.Rounds {
		if r.Number == jobspec.StatsRound {
			continue
		}
		for _, c := range r.Contributions {
			rounds[c.Hospital]++
		}
	}
	return rounds
}

// TrainedRounds counts the rounds that committed a model version.
func (j *Job) TrainedRounds() int { return len(j.Models) - 1 }

// Latest returns the newest committed model.
func (j *Job) Latest() *Model { return j.Models[len(j.Models)-1] }

// Finished reports whether the job will not change any more.
func (j *Job) Finished() bool {
	return j.State == JobDone || j.State == JobFailed || j.State == JobCancelled
}

// Model is one committed version of a job's global model.
type Model struct {
	Version uint32    `json:"version"`
	Params  []float64 `json:"params"`
	// Digest is jobspec.ModelDigest(Params): what a round trained from
	// this model binds its updates to.
	Digest       []byte  `json:"digest"`
	Round        uint32  `json:"round"`
	TotalSamples uint64  `json:"total_samples"`
	UpdateNorm   float64 `json:"update_norm"`
	CommittedMs  int64   `json:"committed_ms"`
}

// Contribution records one accepted encrypted update (never its content).
type Contribution struct {
	Hospital string `json:"hospital"`
	Digest   []byte `json:"digest"`
	Size     uint64 `json:"size"`
	// SiteMetrics are the site's own test figures, kept only for jobs that
	// allow sharing them.
	SiteMetrics *pb.ClinicalMetrics `json:"site_metrics,omitempty"`
	// Signed is the hospital's identity.StatementContribution.
	Signed Signed `json:"signed"`
}

// Signed is a statement's signature and the certificate whose key made it.
type Signed struct {
	Signature   []byte `json:"signature,omitempty"`
	Certificate []byte `json:"certificate,omitempty"`
}

// Round is one round of a job.
type Round struct {
	// RegionMetrics are the region's figures of the model this round
	// trained from, decrypted with the update (sums over sites only).
	RegionMetrics *pb.ClinicalMetrics `json:"region_metrics,omitempty"`
	Number        uint32              `json:"number"`
	ModelVersion  uint32              `json:"model_version"`
	// Epoch is the key epoch the round's updates are encrypted in.
	Epoch      uint32 `json:"epoch,omitempty"`
	State      string `json:"state"`
	Reason     string `json:"reason,omitempty"`
	OpenedMs   int64  `json:"opened_ms"`
	DeadlineMs int64  `json:"deadline_ms"`
	ClosedMs   int64  `json:"closed_ms,omitempty"`
	// OpenedBy and ClosedBy are the replicas that led when the round
	// opened and when it closed (or was aborted): a leader change
	// mid-round shows as two names.
	OpenedBy      string            `json:"opened_by,omitempty"`
	ClosedBy      string            `json:"closed_by,omitempty"`
	Contributions []Contribution    `json:"contributions"`
	Aggregate     []byte            `json:"aggregate,omitempty"` // dropped once the round ends
	AggDigest     []byte            `json:"agg_digest,omitempty"`
	Contributors  []string          `json:"contributors,omitempty"` // the manifest
	Attempt       uint32            `json:"attempt"`
	AttemptMs     int64             `json:"attempt_ms,omitempty"` // when the current attempt began
	Active        []string          `json:"active,omitempty"`     // decryptors of the current attempt
	Asked         []string          `json:"asked,omitempty"`      // decryptors of every attempt so far
	Shares        map[string][]byte `json:"shares,omitempty"`
	// ShareSigned holds each share's identity.StatementDecryptionShare.
	ShareSigned map[string]Signed `json:"share_signed,omitempty"`
	// Approvals holds each contributor's identity.StatementApproval of
	// Contributors; decryptors are asked only once all are in.
	Approvals map[string]Approval `json:"approvals,omitempty"`
}

// Approval is a contributor's signed approval with the fingerprint of its
// update it signs (he.Update.Fingerprint).
type Approval struct {
	Signed
	Fingerprint []byte `json:"fingerprint,omitempty"`
}

// Evidence reports whether the round still holds what a hospital needs to
// check the model it made: its aggregate and signed shares. A committed
// round keeps them while its model is the job's newest.
func (r *Round) Evidence() bool {
	return r.State == RoundCommitted && r.Aggregate != nil && len(r.Shares) == len(r.Active) && len(r.ShareSigned) == len(r.Active)
}

// Approved reports whether every contributor approved the contributor set.
func (r *Round) Approved() bool {
	for _, h := range r.Contributors {
		if _, ok := r.Approvals[h]; !ok {
			return false
		}
	}
	return true
}

// Contributed reports whether hospital h has an accepted update in the round.
func (r *Round) Contributed(h string) bool { return r.ContributionOf(h) != nil }

// ContributionOf returns hospital h's accepted update in the round, or nil.
func (r *Round) ContributionOf(h string) *Contribution {
	for i := range r.Contributions {
		if r.Contributions[i].Hospital == h {
			return &r.Contributions[i]
		}
	}
	return nil
}

// HasDigest reports whether an update with this digest was already accepted.
func (r *Round) HasDigest(d []byte) bool {
	for _, c := range r.Contributions {
		if string(c.Digest) == string(d) {
			return true
		}
	}
	return false
}

// check refuses a restored state that Apply and the readers could not
// work on: what a state built by Apply always has (every job listed once in
// JobOrder, under its own ID, with its spec, its models in version order,
// no missing round; per-hospital slices of the region's size). A snapshot
// is written by a replica of the region and checksummed by Raft, so this
// is a guard against a damaged or foreign file, not a validation of
// untrusted input.
func (s *State) check() error {
	if s.Replicas == nil || s.Jobs == nil || s.Requests == nil || s.Audit == nil {
		return errors.New("state: a map or the audit log is missing")
	}
	if len(s.JobOrder) != len(s.Jobs) {
		return fmt.Errorf("state: %d jobs in order, %d jobs", len(s.JobOrder), len(s.Jobs))
	}
	listed := map[string]bool{}
	for _, id := range s.JobOrder {
		j := s.Jobs[id]
		switch {
		case listed[id]:
			return fmt.Errorf("state: job %s listed twice", id)
		case j == nil:
			return fmt.Errorf("state: job %s listed but missing", id)
		case j.ID != id || j.Spec == nil:
			return fmt.Errorf("state: job %s holds job %q with spec %v", id, j.ID, j.Spec != nil)
		case len(j.Models) == 0:
			return fmt.Errorf("state: job %s has no model", id)
		case slices.Contains(j.Rounds, nil):
			return fmt.Errorf("state: job %s has a null round", id)
		}
		listed[id] = true
		for v, m := range j.Models {
			if m == nil || m.Version != uint32(v) {
				return fmt.Errorf("state: job %s: model %d out of place", id, v)
			}
		}
	}
	if r := s.Region; r != nil {
		n := len(r.Hospitals)
		bad := len(r.HPKE) != n || len(r.Dealt) != n || len(r.Ready) != n
		for _, x := range [][][]byte{r.HPKESig, r.Certs} {
			bad = bad || (x != nil && len(x) != n)
		}
		c := len(r.holderIndexes())
		for _, d := range r.Dealt {
			bad = bad || d != nil && (len(d.Digests) != c || d.Sigs != nil && len(d.Sigs) != c || d.Shares != nil && len(d.Shares) != c)
		}
		if bad || n == 0 {
			return fmt.Errorf("state: the region's per-hospital lists are not of its %d hospitals", n)
		}
		for i, e := range r.Abandoned {
			if e == 0 || e >= r.Epoch || (i > 0 && e <= r.Abandoned[i-1]) {
				return fmt.Errorf("state: abandoned key epoch %d out of place", e)
			}
		}
		for e, m := range r.EpochMembers {
			if e == 0 || e > r.Epoch || len(m) < r.MinMembers() || !slices.IsSorted(m) || len(slices.Compact(slices.Clone(m))) != len(m) ||
				slices.ContainsFunc(m, func(h string) bool { return r.Index(h) < 0 }) {
				return fmt.Errorf("state: the members of key epoch %d are not a sorted list of at least %d of the region's hospitals", e, r.MinMembers())
			}
		}
	}
	return nil
}

func newState() *State {
	return &State{
		Replicas: map[string]string{},
		Jobs:     map[string]*Job{},
		Requests: map[string]string{},
		Audit:    &audit.Log{},
	}
}

func newModel(version uint32, params []float64, unixMs int64) *Model {
	d := jobspec.ModelDigest(params)
	return &Model{Version: version, Params: params, Digest: d[:], CommittedMs: unixMs}
}

// ModelDigest is the digest of the model round r trains from, or zero
// for the statistics round, which trains none.
func (j *Job) ModelDigest(r *Round) [32]byte {
	var d [32]byte
	if r.Number != jobspec.StatsRound && int(r.ModelVersion) < len(j.Models) {
		copy(d[:], j.Models[r.ModelVersion].Digest)
	}
	return d
}

// Binding is what round r's updates are bound to (jobspec.Binding).
func (j *Job) Binding(r *Round) [32]byte {
	return jobspec.Binding(j.ID, r.Number, r.ModelVersion, j.ModelHash, j.ModelDigest(r))
}
