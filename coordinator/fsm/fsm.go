// Package fsm is the coordinator's Raft state machine: typed commands (one
// type byte, then a protobuf message), a deterministic Apply and versioned
// snapshots.
//
// Apply never reads a clock, draws randomness, runs cryptography (beyond
// the SHA-256 digest of a model it stores, jobspec.ModelDigest) or decodes
// hospital-supplied bytes: the leader validates everything before it
// proposes a command, and each entry carries the time it was proposed at
// (Meta, the one time of a command). Apply still re-checks every invariant
// it depends on (one update per hospital per round, decryptors in the
// active set, ...) because two valid proposals can race; such a command is
// refused identically on every replica and the refusal is returned to the
// proposer.
package fsm

import (
	"bufio"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"regionfl/audit"
	"regionfl/identity"
	"regionfl/jobspec"
	pb "regionfl/proto/regionfl/v1"
)

// CommandType is the first byte of every log entry. The list is append-only:
// a type's number never changes meaning.
type CommandType byte

// Command types.
const (
	CmdRegisterReplica CommandType = iota + 1
	CmdCreateRegion
	CmdEnroll
	CmdPublicKeyShare
	CmdPublicKey
	CmdSealedShares
	CmdKeyReady
	CmdSubmitJob
	CmdDecideJob
	CmdOpenRound
	CmdContribution
	CmdCloseRound
	CmdDecryptionShare
	CmdRetryDecryption
	CmdCommitModel
	CmdAbortRound
	CmdEndJob
	CmdScaling
	CmdRevoke
	CmdCheckpoint
	CmdAuthzRefused
	CmdReplicaRemoved
	CmdApproval
	CmdEndWebSessions
	CmdStartKeyEpoch
	CmdRevocationList
	CmdCloseEnrollment

	cmdEnd // one past the last type
)

// Errors returned by Apply for commands that lost a race or break a rule.
var (
	ErrRejected = errors.New("fsm: command rejected")
	ErrCorrupt  = errors.New("fsm: undecodable log entry")
)

// errUnchanged is returned by a command that repeats one already applied
// (a retried request): the client gets success, the state and the audit
// trail stay as they were.
var errUnchanged = errors.New("fsm: already applied")

func rejectf(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrRejected}, args...)...)
}

// Meta is what every entry carries besides its command: who caused it
// and when, as the leader saw it when proposing. It is part of the log, so
// every replica records the same actor and time in its audit trail.
type Meta struct {
	Actor  string // "role/name" of the certificate identity, e.g. researcher/alice
	UnixMs int64
}

// maxActor bounds the actor field of an entry.
const maxActor = 255

// Encode builds a log entry: the type byte (from the command table), the
// time (8 bytes, big endian), the actor (1-byte length, then the bytes) and
// the protobuf command.
func Encode(m proto.Message, meta Meta) ([]byte, error) {
	t, err := TypeOf(m)
	if err != nil {
		return nil, err
	}
	if len(meta.Actor) > maxActor {
		return nil, fmt.Errorf("fsm: actor of %d bytes", len(meta.Actor))
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, 10+len(meta.Actor)+len(b))
	out = append(out, byte(t))
	out = binary.BigEndian.AppendUint64(out, uint64(meta.UnixMs))
	out = append(out, byte(len(meta.Actor)))
	out = append(out, meta.Actor...)
	return append(out, b...), nil
}

// decodeEntry splits a log entry; lengths are checked before slicing.
func decodeEntry(data []byte) (CommandType, Meta, []byte, error) {
	if len(data) < 10 {
		return 0, Meta{}, nil, fmt.Errorf("entry of %d bytes is shorter than its header", len(data))
	}
	t := CommandType(data[0])
	meta := Meta{UnixMs: int64(binary.BigEndian.Uint64(data[1:9]))}
	n := int(data[9])
	if len(data) < 10+n {
		return 0, Meta{}, nil, fmt.Errorf("entry of %d bytes cannot hold a %d-byte actor", len(data), n)
	}
	meta.Actor = string(data[10 : 10+n])
	return t, meta, data[10+n:], nil
}

// FSM implements raft.FSM over State.
type FSM struct {
	mu      sync.RWMutex
	state   *State
	changed chan struct{} // closed and replaced on every applied entry
}

var _ raft.FSM = (*FSM)(nil)

// New returns an empty state machine.
func New() *FSM {
	return &FSM{state: newState(), changed: make(chan struct{})}
}

// Read calls fn with the state under a read lock. fn must not keep
// references into the state after it returns.
func (f *FSM) Read(fn func(s *State)) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	fn(f.state)
}

// Changed returns a channel closed at the next applied entry.
func (f *FSM) Changed() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.changed
}

// Apply applies one committed log entry.
func (f *FSM) Apply(l *raft.Log) any {
	if l.Type != raft.LogCommand {
		return nil
	}
	f.mu.Lock()
	defer func() {
		f.state.Index = l.Index
		close(f.changed)
		f.changed = make(chan struct{})
		f.mu.Unlock()
	}()
	t, meta, body, err := decodeEntry(l.Data)
	if err != nil {
		panic(fmt.Sprintf("%v: index %d: %v", ErrCorrupt, l.Index, err))
	}
	c, ok := commands[t]
	if !ok {
		// An entry written by a newer version: refuse loudly rather than
		// silently diverge from replicas that understand it.
		panic(fmt.Sprintf("%v: unknown command type %d at index %d", ErrCorrupt, t, l.Index))
	}
	m := c.new()
	if err := proto.Unmarshal(body, m); err != nil {
		panic(fmt.Sprintf("%v: type %d at index %d: %v", ErrCorrupt, t, l.Index, err))
	}
	// The audit record goes in with the action, in the same entry: an
	// action is never visible without its record, nor the reverse.
	rec, recorded, err := c.record(f.state, m, meta)
	if err != nil {
		return rejectf("audit record: %v", err)
	}
	if err := c.apply(f.state, m, meta.UnixMs); err == errUnchanged {
		return nil
	} else if err != nil {
		return err
	}
	if recorded {
		if _, err := f.state.Audit.Append(rec); err != nil {
			panic(fmt.Sprintf("%v: index %d: audit: %v", ErrCorrupt, l.Index, err))
		}
	}
	return nil
}

// command is one entry of the command table: how an entry's protobuf is
// made for decoding, how it changes the state, and its audit record (ok
// false for the few commands without one). Every command is listed once,
// in commands.
type command struct {
	new    func() proto.Message
	apply  func(s *State, m proto.Message, at int64) error
	record func(*State, proto.Message, Meta) (rec audit.Record, ok bool, err error)
}

// entry makes a table entry from a typed apply function and a typed record
// function (nil: the command leaves no audit record).
func entry[M any, P interface {
	*M
	proto.Message
}](apply func(*State, P) error, record func(*State, P, *draft)) command {
	return timed(func(s *State, c P, _ int64) error { return apply(s, c) }, record)
}

// timed is entry for a command whose apply needs its entry's time (Unix
// ms, from Meta: the one time a command has).
func timed[M any, P interface {
	*M
	proto.Message
}](apply func(*State, P, int64) error, record func(*State, P, *draft)) command {
	return command{
		new:   func() proto.Message { return P(new(M)) },
		apply: func(s *State, m proto.Message, at int64) error { return apply(s, m.(P), at) },
		record: func(s *State, m proto.Message, meta Meta) (audit.Record, bool, error) {
			if record == nil {
				return audit.Record{}, false, nil
			}
			r := draft{rec: audit.Record{TimeUnixMs: max(meta.UnixMs, 1)}, actor: meta.Actor}
			record(s, m.(P), &r)
			rec, err := r.finish()
			return rec, err == nil, err
		},
	}
}

// commands is the command table.
var commands = map[CommandType]command{
	CmdRegisterReplica: entry(func(s *State, c *pb.RegisterReplicaCommand) error {
		if addr, ok := s.Replicas[c.Id]; ok && addr == c.GrpcAddr {
			return errUnchanged
		}
		s.Replicas[c.Id] = c.GrpcAddr
		return nil
	}, recordReplicaJoined),
	CmdCreateRegion: timed((*State).createRegion, recordRegionCreated),
	CmdEnroll:       entry((*State).enroll, recordEnrolled),
	// Retired with the ceremony's collective public key: the entries of an
	// older region's log change nothing but replay their audit records.
	CmdPublicKeyShare:  entry(func(*State, *pb.PublicKeyShareCommand) error { return nil }, recordPublicKeyShare),
	CmdPublicKey:       entry(func(*State, *pb.PublicKeyCommand) error { return nil }, recordPublicKey),
	CmdSealedShares:    entry((*State).sealedShares, recordSealedShares),
	CmdKeyReady:        entry((*State).keyReady, recordKeyReady),
	CmdSubmitJob:       timed((*State).submitJob, recordJobSubmitted),
	CmdDecideJob:       entry((*State).decideJob, recordJobDecided),
	CmdOpenRound:       timed((*State).openRound, recordRoundOpened),
	CmdContribution:    entry((*State).contribution, recordContribution),
	CmdCloseRound:      timed((*State).closeRound, recordRoundClosed),
	CmdDecryptionShare: entry((*State).decryptionShare, recordDecryptionShare),
	CmdRetryDecryption: timed((*State).retryDecryption, recordDecryptionRetried),
	CmdCommitModel:     timed((*State).commitModel, recordModelCommitted),
	CmdAbortRound:      timed((*State).abortRound, recordRoundAborted),
	CmdEndJob:          timed((*State).endJob, recordJobEnded),
	CmdScaling:         entry((*State).scaling, recordScaling),
	CmdRevoke:          timed((*State).revoke, recordRevoked),
	// A checkpoint signs the audit log's head; it is not itself an action.
	CmdCheckpoint: entry((*State).checkpoint, nil),
	CmdAuthzRefused: entry(func(*State, *pb.AuthzRefusedCommand) error {
		return nil // recorded in the audit log only
	}, recordAuthzRefused),
	CmdReplicaRemoved: entry(func(s *State, c *pb.ReplicaRemovedCommand) error {
		if _, ok := s.Replicas[c.Id]; !ok {
			return errUnchanged
		}
		delete(s.Replicas, c.Id)
		return nil
	}, recordReplicaRemoved),
	CmdApproval:        timed((*State).approval, recordApproval),
	CmdStartKeyEpoch:   timed((*State).startKeyEpoch, recordEpochStarted),
	CmdCloseEnrollment: entry((*State).closeEnrollment, recordEnrollmentClosed),
	CmdRevocationList:  entry((*State).revocationList, recordRevocationList),
	CmdEndWebSessions: timed(func(s *State, c *pb.EndWebSessionsCommand, at int64) error {
		if _, err := identity.ParseIdentity(c.Identity); err != nil {
			return rejectf("identity: %v", err)
		}
		if s.WebSessionsEnded == nil {
			s.WebSessionsEnded = map[string]int64{}
		}
		s.WebSessionsEnded[c.Identity] = max(s.WebSessionsEnded[c.Identity], at)
		return nil
	}, recordWebSessionsEnded),
}

// typeOf maps each command's protobuf message to its type byte.
var typeOf = func() map[protoreflect.FullName]CommandType {
	m := make(map[protoreflect.FullName]CommandType, len(commands))
	for t, c := range commands {
		m[c.new().ProtoReflect().Descriptor().FullName()] = t
	}
	return m
}()

// TypeOf is the command type of m, or an error for a message that is not a
// command.
func TypeOf(m proto.Message) (CommandType, error) {
	t, ok := typeOf[m.ProtoReflect().Descriptor().FullName()]
	if !ok {
		return 0, fmt.Errorf("fsm: %T is not a command", m)
	}
	return t, nil
}

func (s *State) createRegion(c *pb.CreateRegionCommand, at int64) error {
	if s.Region != nil {
		return rejectf("the region already exists")
	}
	n := len(c.Hospitals)
	if n == 0 || c.Threshold == 0 || int(c.Threshold) > n {
		return rejectf("threshold %d of %d hospitals", c.Threshold, n)
	}
	if !slices.IsSorted(c.Hospitals) || len(slices.Compact(slices.Clone(c.Hospitals))) != n {
		return rejectf("hospitals must be sorted and distinct")
	}
	if c.Committee != 0 && (c.Committee < c.Threshold || int64(c.Committee) > int64(n)) {
		return rejectf("committee of %d, threshold %d of %d hospitals", c.Committee, c.Threshold, n)
	}
	s.Region = &Region{
		Params:      c.Params,
		Hospitals:   slices.Clone(c.Hospitals),
		Threshold:   int(c.Threshold),
		Committee:   c.Committee,
		Seed:        c.Seed,
		CreatedMs:   at,
		GenesisSig:  c.GenesisSignature,
		GenesisCert: c.GenesisCertificate,
		// Checked against its range by the server; the genesis signature
		// covers it.
		RevocationMaxAgeS: c.RevocationMaxAgeS,
	}
	s.Region.resetCeremony()
	s.Region.memoizePoints()
	return nil
}

// startKeyEpoch begins the ceremony of the next key epoch, once the
// current one is done or, abandoning it, when the leader found it stalled.
// Rounds that are open keep their epoch; rounds opened from now on use the
// newest completed epoch's key until the new ceremony is done.
func (s *State) startKeyEpoch(c *pb.StartKeyEpochCommand, at int64) error {
	r := s.Region
	switch {
	case r == nil:
		return rejectf("no region yet")
	case c.Epoch <= r.Epoch:
		return rejectf("key epoch %d has already started", c.Epoch)
	case c.Epoch != r.Epoch+1:
		return rejectf("key epoch %d does not follow the region's %d", c.Epoch, r.Epoch)
	case c.Abandon && (r.Epoch == 0 || r.Step() == pb.CeremonyStep_CEREMONY_STEP_DONE):
		return rejectf("key epoch %d is not a stalled re-key to abandon", r.Epoch)
	case !c.Abandon && r.Step() != pb.CeremonyStep_CEREMONY_STEP_DONE:
		return rejectf("the ceremony of key epoch %d is still running", r.Epoch)
	}
	if c.Abandon {
		r.Abandoned = append(r.Abandoned, r.Epoch)
	}
	r.Epoch = c.Epoch
	r.EpochStartedMs = at
	r.resetCeremony()
	return nil
}

// closeEnrollment fixes the members of a re-key's ceremony to the
// hospitals enrolled so far. The genesis ceremony has every hospital: its
// enrollment never closes early.
func (s *State) closeEnrollment(c *pb.CloseEnrollmentCommand) error {
	r := s.Region
	switch {
	case r == nil:
		return rejectf("no region yet")
	case c.Epoch != r.Epoch:
		return rejectf("enrollment of key epoch %d, the region's ceremony is of epoch %d", c.Epoch, r.Epoch)
	case c.Epoch == 0:
		return rejectf("the genesis ceremony takes every hospital")
	case !r.enrollmentOpen():
		return rejectf("the enrollment of key epoch %d is closed", c.Epoch)
	case len(c.Members) < r.MinMembers():
		return rejectf("%d members, a key epoch needs at least %d", len(c.Members), r.MinMembers())
	case !slices.IsSorted(c.Members) || len(slices.Compact(slices.Clone(c.Members))) != len(c.Members):
		return rejectf("members must be sorted and distinct")
	}
	for _, h := range c.Members {
		i := r.Index(h)
		if i < 0 || r.HPKE[i] == nil {
			return rejectf("%q did not enroll in key epoch %d", h, c.Epoch)
		}
	}
	if r.EpochMembers == nil {
		r.EpochMembers = map[uint32][]string{}
	}
	r.EpochMembers[c.Epoch] = slices.Clone(c.Members)
	return nil
}

// ceremonyMember returns the position in the region's per-hospital lists
// of h, a member of the current ceremony, once its members are fixed.
func (s *State) ceremonyMember(h string) (int, error) {
	i, err := s.member(h)
	if err != nil {
		return -1, err
	}
	r := s.Region
	if r.enrollmentOpen() {
		return -1, rejectf("the enrollment of key epoch %d is still open", r.Epoch)
	}
	if !r.Member(r.Epoch, h) {
		return -1, rejectf("%s is not a member of key epoch %d", h, r.Epoch)
	}
	return i, nil
}

func (s *State) member(h string) (int, error) {
	if s.Region == nil {
		return -1, rejectf("no region yet")
	}
	i := s.Region.Index(h)
	if i < 0 {
		return -1, rejectf("%q is not a hospital of this region", h)
	}
	return i, nil
}

func (s *State) enroll(c *pb.EnrollCommand) error {
	i, err := s.member(c.Hospital)
	if err != nil {
		return err
	}
	if s.Region.HPKE[i] != nil {
		return rejectf("%s already enrolled", c.Hospital)
	}
	if !s.Region.enrollmentOpen() {
		return rejectf("the enrollment of key epoch %d is closed", s.Region.Epoch)
	}
	s.Region.HPKE[i] = c.HpkePublicKey
	s.Region.HPKESig[i] = c.Signature
	s.Region.Certs[i] = c.Certificate
	return nil
}

func (s *State) sealedShares(c *pb.SealedSharesCommand) error {
	from, err := s.ceremonyMember(c.From)
	if err != nil {
		return err
	}
	r := s.Region
	// One share per committee member, in the order of their points.
	holders := r.holderIndexes()
	if r.sealed(from) {
		return rejectf("%s already sent its sealed shares", c.From)
	}
	if len(c.Signatures) != 0 && len(c.Signatures) != len(holders) {
		return rejectf("%d signatures for a committee of %d", len(c.Signatures), len(holders))
	}
	d := &Dealing{Digests: c.Digests, Size: c.Size}
	if len(c.Signatures) != 0 {
		d.Sigs = c.Signatures
	}
	switch {
	case len(c.Shares) != 0 && len(c.Digests) != 0:
		return rejectf("sealed shares and their digests both")
	case len(c.Shares) != 0:
		// A log written when commands carried the shares.
		if len(c.Shares) != len(holders) {
			return rejectf("%d sealed shares for a committee of %d", len(c.Shares), len(holders))
		}
		d.Shares, d.Digests, d.Size = c.Shares, make([][]byte, len(holders)), 0
		for k, b := range c.Shares {
			sum := sha256.Sum256(b)
			d.Digests[k], d.Size = sum[:], d.Size+uint64(len(b))
		}
	case len(c.Digests) != len(holders):
		return rejectf("%d sealed-share digests for a committee of %d", len(c.Digests), len(holders))
	case slices.ContainsFunc(c.Digests, func(b []byte) bool { return len(b) != sha256.Size }):
		return rejectf("a sealed-share digest is not %d bytes", sha256.Size)
	}
	r.Dealt[from] = d
	return nil
}

func (s *State) keyReady(c *pb.KeyReadyCommand) error {
	i, err := s.ceremonyMember(c.Hospital)
	if err != nil {
		return err
	}
	if !s.Region.allSealed() {
		return rejectf("key ready before all shares were sealed")
	}
	if s.Region.Ready[i] {
		return errUnchanged
	}
	s.Region.Ready[i] = true
	return nil
}

func (s *State) submitJob(c *pb.SubmitJobCommand, at int64) error {
	if c.RequestId != "" {
		if _, ok := s.Requests[c.RequestId]; ok {
			return errUnchanged // a retry: the job exists already
		}
	}
	if _, ok := s.Jobs[c.JobId]; ok {
		return rejectf("job %s exists", c.JobId)
	}
	j := &Job{
		ID:          c.JobId,
		Spec:        c.Spec,
		ModelHash:   c.ModelHash,
		SubmittedBy: c.SubmittedBy,
		SubmittedMs: at,
		RequestID:   c.RequestId,
		Signature:   c.Signature,
		Certificate: c.Certificate,
		State:       JobPending,
		Refused:     map[string]string{},
		Models:      []*Model{newModel(0, c.InitialParams, at)},
	}
	s.Jobs[j.ID] = j
	s.JobOrder = append(s.JobOrder, j.ID)
	if c.RequestId != "" {
		s.Requests[c.RequestId] = j.ID
	}
	return nil
}

func (s *State) job(id string) (*Job, error) {
	j, ok := s.Jobs[id]
	if !ok {
		return nil, rejectf("no job %q", id)
	}
	return j, nil
}

func (s *State) decideJob(c *pb.DecideJobCommand) error {
	j, err := s.job(c.JobId)
	if err != nil {
		return err
	}
	if _, err := s.member(c.Hospital); err != nil {
		return err
	}
	if j.Decided(c.Hospital) {
		return rejectf("%s already decided on job %s", c.Hospital, j.ID)
	}
	if j.Finished() {
		return rejectf("job %s is %s", j.ID, j.State)
	}
	if c.Accept {
		j.Accepted = append(j.Accepted, c.Hospital)
		slices.Sort(j.Accepted)
	} else {
		j.Refused[c.Hospital] = c.Reason
	}
	return nil
}

func (s *State) openRound(c *pb.OpenRoundCommand, at int64) error {
	j, err := s.job(c.JobId)
	if err != nil {
		return err
	}
	if j.Finished() {
		return rejectf("job %s is %s", j.ID, j.State)
	}
	if cur := j.Current(); cur != nil && (cur.State == RoundCollecting || cur.State == RoundDecrypting) {
		return rejectf("round %d of job %s is still %s", cur.Number, j.ID, cur.State)
	}
	if want := j.NextRound(); c.Round != want {
		return rejectf("round %d opened out of order (next is %d)", c.Round, want)
	}
	epoch, ok := s.Region.KeyEpoch()
	if !ok {
		return rejectf("round %d of job %s opened before the region has a key", c.Round, j.ID)
	}
	version := j.Latest().Version
	// A round reopened on the same model keeps its predecessor's epoch:
	// the hospitals resend the updates they kept, encrypted in it. The
	// switch to a new key happens at a model-version boundary only.
	if cur := j.Current(); cur != nil && cur.ModelVersion == version {
		epoch = cur.Epoch
	}
	j.State = JobRunning
	j.Rounds = append(j.Rounds, &Round{
		Number:       c.Round,
		ModelVersion: version,
		Epoch:        epoch,
		State:        RoundCollecting,
		OpenedMs:     at,
		DeadlineMs:   c.DeadlineUnixMs,
		OpenedBy:     c.Leader,
	})
	return nil
}

// round returns the job's current round if it has the given number and state.
func (s *State) round(jobID string, number uint32, state string) (*Job, *Round, error) {
	j, err := s.job(jobID)
	if err != nil {
		return nil, nil, err
	}
	r := j.Current()
	if r == nil || r.Number != number {
		return nil, nil, rejectf("round %d of job %s is not the current round", number, jobID)
	}
	if r.State != state {
		return nil, nil, rejectf("round %d of job %s is %s, not %s", number, jobID, r.State, state)
	}
	return j, r, nil
}

func (s *State) contribution(c *pb.ContributionCommand) error {
	j, r, err := s.round(c.JobId, c.Round, RoundCollecting)
	if err != nil {
		return err
	}
	if !slices.Contains(j.Accepted, c.Hospital) {
		return rejectf("%s has not accepted job %s", c.Hospital, j.ID)
	}
	if r.Contributed(c.Hospital) {
		return rejectf("%s already contributed to round %d", c.Hospital, r.Number)
	}
	if !s.Region.Member(r.Epoch, c.Hospital) {
		return rejectf("%s sits out key epoch %d, the key of round %d", c.Hospital, r.Epoch, r.Number)
	}
	if r.HasDigest(c.Digest) {
		return rejectf("an update with this digest was already counted in round %d", r.Number)
	}
	if c.SiteMetrics != nil && !j.Spec.GetShareSiteMetrics() {
		return rejectf("job %s does not share site metrics", j.ID)
	}
	r.Contributions = append(r.Contributions, Contribution{Hospital: c.Hospital, Digest: c.Digest, Size: c.Size, SiteMetrics: c.SiteMetrics, Signed: Signed{c.Signature, c.Certificate}})
	return nil
}

func (s *State) closeRound(c *pb.CloseRoundCommand, at int64) error {
	j, r, err := s.round(c.JobId, c.Round, RoundCollecting)
	if err != nil {
		return err
	}
	if len(c.Contributors) < int(j.Spec.MinHospitals) {
		return rejectf("%d contributors, job needs %d", len(c.Contributors), j.Spec.MinHospitals)
	}
	for _, h := range c.Contributors {
		if !r.Contributed(h) {
			return rejectf("manifest lists %s, which did not contribute", h)
		}
	}
	if err := s.checkActive(r.Epoch, c.Active); err != nil {
		return err
	}
	r.State = RoundDecrypting
	r.ClosedMs, r.ClosedBy = at, c.Leader
	r.Aggregate = c.Aggregate
	r.AggDigest = c.AggregateDigest
	r.Contributors = slices.Clone(c.Contributors)
	r.Attempt = 1
	r.AttemptMs = at
	r.Active = slices.Clone(c.Active)
	r.Asked = slices.Clone(c.Active)
	r.Shares = map[string][]byte{}
	r.ShareSigned = map[string]Signed{}
	r.Approvals = map[string]Approval{}
	return nil
}

// approval records a contributor's signed approval of the round's
// contributor set (the server checked the signature).
func (s *State) approval(c *pb.ApprovalCommand, at int64) error {
	_, r, err := s.round(c.JobId, c.Round, RoundDecrypting)
	if err != nil {
		return err
	}
	if !slices.Contains(r.Contributors, c.Hospital) {
		return rejectf("%s is not a contributor of round %d", c.Hospital, r.Number)
	}
	if prev, ok := r.Approvals[c.Hospital]; ok {
		if string(prev.Signature) == string(c.Signature) {
			return errUnchanged
		}
		return rejectf("%s already approved round %d", c.Hospital, r.Number)
	}
	if r.Approvals == nil {
		r.Approvals = map[string]Approval{}
	}
	r.Approvals[c.Hospital] = Approval{Signed{c.Signature, c.Certificate}, c.Fingerprint}
	if r.Approved() {
		r.AttemptMs = at // the decryptors' time starts now
	}
	return nil
}

// dropEvidence lets a round's aggregate and shares go.
func dropEvidence(r *Round) {
	r.Aggregate, r.Shares, r.ShareSigned = nil, nil, nil
}

func (s *State) checkActive(epoch uint32, active []string) error {
	if len(active) != s.Region.Threshold {
		return rejectf("%d decryptors, threshold is %d", len(active), s.Region.Threshold)
	}
	for i, h := range active {
		if !s.Region.Holds(epoch, h) || slices.Contains(active[:i], h) {
			return rejectf("decryptor %q unknown, repeated or not on the committee of key epoch %d", h, epoch)
		}
	}
	return nil
}

func (s *State) decryptionShare(c *pb.DecryptionShareCommand) error {
	_, r, err := s.round(c.JobId, c.Round, RoundDecrypting)
	if err != nil {
		return err
	}
	if c.Attempt != r.Attempt {
		return rejectf("share for attempt %d, current attempt is %d", c.Attempt, r.Attempt)
	}
	if !slices.Contains(r.Active, c.Hospital) {
		return rejectf("%s is not a decryptor of round %d", c.Hospital, r.Number)
	}
	if _, ok := r.Shares[c.Hospital]; ok {
		return rejectf("%s already gave its share", c.Hospital)
	}
	r.Shares[c.Hospital] = c.Share
	if r.ShareSigned == nil {
		r.ShareSigned = map[string]Signed{}
	}
	r.ShareSigned[c.Hospital] = Signed{c.Signature, c.Certificate}
	return nil
}

func (s *State) retryDecryption(c *pb.RetryDecryptionCommand, at int64) error {
	_, r, err := s.round(c.JobId, c.Round, RoundDecrypting)
	if err != nil {
		return err
	}
	if c.Attempt != r.Attempt+1 {
		return rejectf("retry attempt %d after %d", c.Attempt, r.Attempt)
	}
	if err := s.checkActive(r.Epoch, c.Active); err != nil {
		return err
	}
	// A share is bound to its active set, and a hospital gives one share per
	// round: a new attempt can only ask hospitals never asked in this round.
	for _, h := range c.Active {
		if slices.Contains(r.Asked, h) {
			return rejectf("%s was already asked for a share of round %d", h, r.Number)
		}
	}
	r.Attempt = c.Attempt
	r.AttemptMs = at
	r.Active = slices.Clone(c.Active)
	r.Asked = append(r.Asked, c.Active...)
	r.Shares = map[string][]byte{}
	r.ShareSigned = map[string]Signed{}
	return nil
}

func (s *State) commitModel(c *pb.CommitModelCommand, at int64) error {
	j, r, err := s.round(c.JobId, c.Round, RoundDecrypting)
	if err != nil {
		return err
	}
	if c.Version != j.Latest().Version+1 {
		return rejectf("model version %d after %d", c.Version, j.Latest().Version)
	}
	if len(c.Params) != len(j.Latest().Params) {
		return rejectf("model with %d parameters, job has %d", len(c.Params), len(j.Latest().Params))
	}
	m := newModel(c.Version, c.Params, at)
	m.Round, m.TotalSamples, m.UpdateNorm = r.Number, c.TotalSamples, c.UpdateNorm
	j.Models = append(j.Models, m)
	j.OptimizerState = c.OptimizerState
	r.RegionMetrics = c.RegionMetrics
	r.State = RoundCommitted
	// The round keeps its aggregate and shares while its model is the
	// newest: every site checks that model against them before it measures
	// it (ModelEvidence). The previous model's round lets them go.
	for _, o := range j.Rounds {
		if o != r {
			dropEvidence(o)
		}
	}
	return nil
}

// maxTreeHead bounds a checkpoint's encoded tree head (it carries the
// signer's certificate).
const maxTreeHead = 64 << 10

func (s *State) checkpoint(c *pb.CheckpointCommand) error {
	if len(c.TreeHead) > maxTreeHead {
		return rejectf("tree head of %d bytes", len(c.TreeHead))
	}
	var th audit.TreeHead
	if err := json.Unmarshal(c.TreeHead, &th); err != nil {
		return rejectf("tree head: %v", err)
	}
	if err := s.Audit.AddCheckpoint(th); err != nil {
		return rejectf("%v", err)
	}
	return nil
}

func (s *State) revoke(c *pb.RevokeCommand, at int64) error {
	if !validSerial(c.Serial) {
		return rejectf("serial %q is not lowercase hex", c.Serial)
	}
	if _, ok := s.Revoked[c.Serial]; ok {
		return rejectf("serial %s is already revoked", c.Serial)
	}
	if s.Revoked == nil {
		s.Revoked = map[string]*pb.Revocation{}
	}
	s.Revoked[c.Serial] = &pb.Revocation{Serial: c.Serial, Reason: c.Reason, RevokedBy: c.RevokedBy, UnixMs: at,
		SignedUnixMs: c.SignedUnixMs, Signature: c.Signature, Certificate: c.Certificate}
	return nil
}

// revocationList keeps an operator's signed revocation list: newer than
// the one held, and naming exactly the revoked serials (the server checked
// the signature and the time).
func (s *State) revocationList(c *pb.RevocationListCommand) error {
	if s.Region == nil {
		return rejectf("no region: a revocation list is bound to one")
	}
	if s.RevocationList != nil && c.IssuedUnixMs <= s.RevocationList.IssuedUnixMs {
		return rejectf("a list issued at %d ms is not newer than the one held (%d ms)", c.IssuedUnixMs, s.RevocationList.IssuedUnixMs)
	}
	if missing, extra := s.RevocationListDiff(c.Serials); missing != "" || extra != "" {
		return rejectf("the list does not name exactly the revoked serials (missing %q, not revoked %q)", missing, extra)
	}
	s.RevocationList = &pb.RevocationList{IssuedUnixMs: c.IssuedUnixMs, Serials: slices.Clone(c.Serials),
		Signature: c.Signature, Certificate: c.Certificate}
	return nil
}

// RevocationListDiff compares a list of serials with the revoked ones: the
// first revoked serial the list lacks, and the first listed serial not
// revoked ("" when none).
func (s *State) RevocationListDiff(serials []string) (missing, extra string) {
	listed := make(map[string]bool, len(serials))
	for _, x := range serials {
		listed[x] = true
		if _, ok := s.Revoked[x]; !ok && extra == "" {
			extra = x
		}
	}
	for x := range s.Revoked {
		if !listed[x] && (missing == "" || x < missing) {
			missing = x
		}
	}
	return missing, extra
}

// validSerial accepts what identity.SerialHex produces: 1 to 40 lowercase
// hex digits (RFC 5280 caps serials at 20 bytes), no leading zero.
func validSerial(s string) bool { return s != "" && identity.NormalizeSerial(s) == s }

func (s *State) scaling(c *pb.ScalingCommand) error {
	j, r, err := s.round(c.JobId, c.Round, RoundDecrypting)
	if err != nil {
		return err
	}
	if c.Round != jobspec.StatsRound || !jobspec.NeedsScaling(j.Spec) {
		return rejectf("job %s has no statistics round %d", j.ID, c.Round)
	}
	if err := jobspec.CheckScaling(c.FeatureMean, c.FeatureStd, int(j.Spec.Model.GetInputs())); err != nil {
		return rejectf("scaling: %v", err)
	}
	// The job's spec now carries the region's scaling: every later task
	// hands it to the sites with the model.
	spec := proto.Clone(j.Spec).(*pb.JobSpec)
	spec.FeatureMean, spec.FeatureStd = c.FeatureMean, c.FeatureStd
	j.Spec = spec
	r.State = RoundCommitted
	dropEvidence(r)
	return nil
}

func (s *State) abortRound(c *pb.AbortRoundCommand, at int64) error {
	j, err := s.job(c.JobId)
	if err != nil {
		return err
	}
	r := j.Current()
	if r == nil || r.Number != c.Round || (r.State != RoundCollecting && r.State != RoundDecrypting) {
		return rejectf("round %d of job %s is not in progress", c.Round, j.ID)
	}
	r.State = RoundAborted
	r.Reason = c.Reason
	r.ClosedMs, r.ClosedBy = at, c.Leader
	dropEvidence(r)
	return nil
}

func (s *State) endJob(c *pb.EndJobCommand, at int64) error {
	j, err := s.job(c.JobId)
	if err != nil {
		return err
	}
	if j.Finished() {
		return rejectf("job %s is already %s", j.ID, j.State)
	}
	switch c.State {
	case JobDone, JobFailed, JobCancelled:
	default:
		return rejectf("unknown end state %q", c.State)
	}
	if r := j.Current(); r != nil && (r.State == RoundCollecting || r.State == RoundDecrypting) {
		r.State = RoundAborted
		r.Reason = "job " + c.State
		r.ClosedMs = at
	}
	// A finished job trains no more: nobody will check its models.
	for _, o := range j.Rounds {
		dropEvidence(o)
	}
	j.State = c.State
	j.Reason = c.Reason
	return nil
}

// Snapshots are a stream of JSON values, one per line:
//
//	{"format":"regionfl-fsm","version":2}   the header
//	{...}                                   the state, without models and audit log
//	{"job_id":ID,"models":[...]}            one line per job, in JobOrder
//	{"version":1,"size":N,...}              the audit log (audit.Log.MarshalJSON)
//
// Snapshot encodes only the state line under the lock; models and audit
// records never change once written, so Snapshot keeps references to them
// and Persist encodes them while Apply goes on. The bulk of a long-lived
// region's state (every model version's parameters and every audit
// record) thus never holds up Apply.
//
// Changing the format: raise SnapshotVersion and teach Restore to read the
// previous version (as restoreV1 reads version 1, a single JSON document),
// so a replica restarted on the new build restores the snapshot it wrote
// on the old one. A version Restore does not know is refused, never
// guessed at.
const (
	SnapshotVersion = 2
	snapshotFormat  = "regionfl-fsm"
)

type snapshotHeader struct {
	Format  string `json:"format"`
	Version int    `json:"version"`
}

type jobModels struct {
	JobID  string   `json:"job_id"`
	Models []*Model `json:"models"`
}

// Snapshot captures the state as of the last applied entry.
func (f *FSM) Snapshot() (raft.FSMSnapshot, error) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	b, err := json.Marshal(f.state)
	if err != nil {
		return nil, err
	}
	snap := &snapshot{state: b, audit: f.state.Audit.Freeze()}
	for _, id := range f.state.JobOrder {
		snap.models = append(snap.models, jobModels{JobID: id, Models: slices.Clip(f.state.Jobs[id].Models)})
	}
	return snap, nil
}

// Restore replaces the state with a snapshot.
func (f *FSM) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	dec := json.NewDecoder(bufio.NewReader(rc))
	var first json.RawMessage
	if err := dec.Decode(&first); err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	var h snapshotHeader
	if err := json.Unmarshal(first, &h); err != nil {
		return fmt.Errorf("fsm: restore: header: %w", err)
	}
	var (
		s   *State
		err error
	)
	switch {
	case h.Format == "" && h.Version == 1:
		s, err = restoreV1(first)
	case h.Format == snapshotFormat && h.Version == SnapshotVersion:
		s, err = restoreStream(dec)
	default:
		err = fmt.Errorf("snapshot format %q version %d, this build reads %q version %d (and 1)", h.Format, h.Version, snapshotFormat, SnapshotVersion)
	}
	if err == nil && s.Region != nil {
		s.Region.memoizePoints()
		s.Region.upgradeDealt()
	}
	if err == nil {
		err = s.check()
	}
	if err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	f.mu.Lock()
	f.state = s
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
	return nil
}

// restoreStream reads what follows the header of a version-2 snapshot.
func restoreStream(dec *json.Decoder) (*State, error) {
	s := newState()
	if err := dec.Decode(s); err != nil {
		return nil, fmt.Errorf("state: %w", err)
	}
	for _, id := range s.JobOrder {
		var jm jobModels
		if err := dec.Decode(&jm); err != nil {
			return nil, fmt.Errorf("models of job %s: %w", id, err)
		}
		j := s.Jobs[id]
		if j == nil || jm.JobID != id || len(jm.Models) == 0 {
			return nil, fmt.Errorf("models of job %s: found those of job %q (%d)", id, jm.JobID, len(jm.Models))
		}
		j.Models = jm.Models
	}
	if err := dec.Decode(s.Audit); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	if dec.More() {
		return nil, errors.New("data after the audit log")
	}
	return s, nil
}

// restoreV1 reads a version-1 snapshot: one JSON document, the state with
// each job's models and the audit log inside. Models committed before
// their digests were kept get them here.
func restoreV1(doc []byte) (*State, error) {
	s := newState()
	if err := json.Unmarshal(doc, s); err != nil {
		return nil, err
	}
	var inside struct {
		Jobs map[string]struct {
			Models []*Model `json:"models"`
		} `json:"jobs"`
		Audit *audit.Log `json:"audit"`
	}
	inside.Audit = s.Audit
	if err := json.Unmarshal(doc, &inside); err != nil {
		return nil, err
	}
	for id, j := range s.Jobs {
		if j == nil {
			return nil, fmt.Errorf("job %s is null", id)
		}
		j.Models = inside.Jobs[id].Models
		if len(j.Models) == 0 {
			return nil, fmt.Errorf("job %s has no model", id)
		}
		for _, m := range j.Models {
			if m != nil && m.Digest == nil {
				d := jobspec.ModelDigest(m.Params)
				m.Digest = d[:]
			}
		}
	}
	return s, nil
}

// snapshot is what Snapshot captured: the state line, encoded, and the
// immutable models and audit records, encoded by Persist.
type snapshot struct {
	state  []byte
	models []jobModels
	audit  audit.Frozen
}

func (s *snapshot) Persist(sink raft.SnapshotSink) error {
	w := bufio.NewWriterSize(sink, 1<<20)
	enc := json.NewEncoder(w)
	err := enc.Encode(snapshotHeader{Format: snapshotFormat, Version: SnapshotVersion})
	if err == nil {
		_, err = w.Write(append(s.state, '\n'))
	}
	for _, jm := range s.models {
		if err == nil {
			err = enc.Encode(jm)
		}
	}
	if err == nil {
		err = enc.Encode(s.audit)
	}
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		sink.Cancel()
		return err
	}
	return sink.Close()
}

func (*snapshot) Release() {}
