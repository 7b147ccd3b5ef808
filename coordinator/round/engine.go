// Package round is the leader's round engine: it finishes the key ceremony,
// opens rounds, folds encrypted updates into the running aggregate as they
// arrive, closes rounds when every accepted hospital has sent or at the
// deadline, collects t decryption shares, applies the server optimizer to
// the decrypted aggregate and commits the next model version.
//
// Every decision becomes a Raft command; the engine's own memory holds only
// what is large and short-lived (the running encrypted sum of the round in
// progress, which hospitals were recently seen). The log records the digest
// of every update counted, so a new leader, whose memory holds no sum, asks
// the hospitals to resend those updates by digest and folds them again:
// nobody retrains and no update is counted twice.
package round

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"sort"
	"sync"
	"time"

	"regionfl/coordinator/fsm"
	"regionfl/coordinator/metrics"
	"regionfl/coordinator/store"
	"regionfl/he"
	"regionfl/jobspec"
	pb "regionfl/proto/regionfl/v1"
)

// Errors the gRPC layer turns into status codes.
var (
	ErrUnknownJob  = errors.New("no such job")
	ErrRoundClosed = errors.New("round is not collecting updates")
	ErrDuplicate   = errors.New("update already received")
	ErrStaleModel  = errors.New("update trained on another model version")
	ErrNotAccepted = errors.New("hospital has not accepted this job")
	ErrBadUpdate   = errors.New("encrypted update refused")
	// ErrBadLength and ErrDigestMismatch refine ErrBadUpdate (an error
	// wraps both): the update's size is not the one its model fixes, or
	// its bytes do not hash to the announced digest.
	ErrBadLength      = errors.New("wrong length")
	ErrDigestMismatch = errors.New("digest mismatch")
)

// MaxAbortedRounds ends a job that keeps failing to gather enough updates.
const MaxAbortedRounds = 3

// OfflineAfterRounds is how many silent rounds make a hospital offline:
// an accepted hospital that sent nothing in the job's last
// OfflineAfterRounds rounds and has not polled since the current round
// opened is offline, and rounds no longer wait for it until it polls
// again.
const OfflineAfterRounds = 2

// Clock is injected so tests control time.
type Clock func() time.Time

// Engine runs rounds on the leader.
type Engine struct {
	store  *store.Store
	params he.Params // the set before the region exists (Params)
	log    *slog.Logger
	now    Clock
	// metrics times the combining of decryption shares (nil-safe).
	metrics *metrics.Metrics

	mu       sync.Mutex
	term     uint64                // the term the in-memory sums belong to; 0 when not leading
	inflight map[roundKey]*running // running sums of collecting rounds
	// finished caches the ciphertexts each finished job decrypted under
	// a key epoch (see step); only step touches it.
	finished map[finishedKey]int
	seen     map[string]time.Time // hospital -> last poll
	// regionReadyMs is when this engine first saw the key ceremony done.
	regionReadyMs int64
	// revocationWarned is when the engine last warned that the signed
	// revocation list is getting old.
	revocationWarned time.Time
	// rekeyAt is how many ciphertexts the current key may have decrypted
	// before the engine starts the next key epoch's ceremony.
	rekeyAt int
	// enrollmentWait is how long a re-key's enrollment stays open before
	// the leader closes it with the hospitals enrolled by then.
	enrollmentWait time.Duration
}

type finishedKey struct {
	job   string
	epoch uint32
}

type roundKey struct {
	job   string
	round uint32
}

// running is what this leader, in this term, holds of a collecting round:
// when it opened or first stepped the round, on its own clock (see late),
// and, from the first update on, the encrypted sum and the digests of the
// updates folded into it: always a subset of the round's contributions in
// the log, since an update is folded only once its contribution is
// committed.
type running struct {
	since  int64          // 0 until the round is opened or first stepped
	agg    *he.Aggregator // nil until the first update
	folded map[string]bool
	// closing is set while this leader proposes the round's close: an
	// update arriving then is refused as late rather than counted in the
	// log after the manifest was drawn up without it.
	closing bool
}

// run is this leader's record of a collecting round, made on first use.
// Callers hold e.mu.
func (e *Engine) run(key roundKey) *running {
	r := e.inflight[key]
	if r == nil {
		r = &running{folded: map[string]bool{}}
		e.inflight[key] = r
	}
	return r
}

// lead makes the in-memory sums those of term, dropping sums left from an
// earlier term: between two terms another leader may have counted updates
// this replica never saw. Callers hold e.mu.
func (e *Engine) lead(term uint64) {
	if e.term != term {
		clear(e.inflight)
		e.term = term
		if term != 0 {
			e.log.Info("leading rounds", "term", term)
		}
	}
}

// New returns an engine for a replica.
func New(st *store.Store, params he.Params, log *slog.Logger, now Clock) *Engine {
	if now == nil {
		now = time.Now
	}
	return &Engine{store: st, params: params, log: log, now: now,
		inflight: map[roundKey]*running{}, finished: map[finishedKey]int{}, seen: map[string]time.Time{}, rekeyAt: params.MaxDecryptions() / 2,
		enrollmentWait: DefaultEnrollmentWait}
}

// DefaultEnrollmentWait is how long a re-key waits for every hospital to
// enroll before it goes ahead with those that did (at least threshold+1):
// long enough for a hospital restarting or briefly cut off, short enough
// that one hospital down for the day does not hold the region's new key
// back.
const DefaultEnrollmentWait = 15 * time.Minute

// SetEnrollmentWait sets how long a re-key's enrollment stays open
// (DefaultEnrollmentWait); d is clamped to at least one second.
func (e *Engine) SetEnrollmentWait(d time.Duration) {
	e.mu.Lock()
	e.enrollmentWait = max(d, time.Second)
	e.mu.Unlock()
}

// SetRekeyAt makes the engine start a new key epoch once the current key
// has decrypted n ciphertexts (default: half the parameter set's
// MaxDecryptions, so the new ceremony ends long before hospitals refuse to
// decrypt under the old key). n is clamped to [1, MaxDecryptions].
func (e *Engine) SetRekeyAt(n int) {
	e.mu.Lock()
	e.rekeyAt = min(max(n, 1), e.params.MaxDecryptions())
	e.mu.Unlock()
}

// SetMetrics makes the engine time the combining of decryption shares.
func (e *Engine) SetMetrics(m *metrics.Metrics) { e.metrics = m }

// Params are the region's HE parameters: the set its signed genesis
// names (the server created it only with a set he.ParamsByName knows), or
// the default set before the region exists.
func (e *Engine) Params() he.Params {
	if e.store == nil {
		return e.params
	}
	var name string
	e.store.FSM().Read(func(s *fsm.State) {
		if s.Region != nil {
			name = s.Region.Params
		}
	})
	return e.paramsNamed(name)
}

// paramsOf is Params for a region in hand.
func (e *Engine) paramsOf(r *fsm.Region) he.Params { return e.paramsNamed(r.Params) }

func (e *Engine) paramsNamed(name string) he.Params {
	if p, err := he.ParamsByName(name); err == nil {
		return p
	}
	return e.params
}

// Seen records that a hospital polled: decryptors are chosen among
// hospitals seen recently.
func (e *Engine) Seen(hospital string) {
	e.mu.Lock()
	e.seen[hospital] = e.now()
	e.mu.Unlock()
}

// NowMs is the engine's clock in Unix milliseconds (round deadlines, the
// skew check of signed revocations); log entries get the store's.
func (e *Engine) NowMs() int64 { return e.now().UnixMilli() }

// Run drives rounds while this replica leads; it returns when ctx ends.
func (e *Engine) Run(ctx context.Context) {
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		case <-e.store.FSM().Changed():
		}
		// A new leader first applies everything its predecessor committed,
		// so it acts on the whole state.
		term, err := e.store.Ready()
		e.mu.Lock()
		e.lead(term)
		e.mu.Unlock()
		if err != nil {
			continue
		}
		if err := e.step(); err != nil && !errors.Is(err, store.ErrNotLeader) {
			e.log.Warn("round engine step", "err", err)
		}
	}
}

// step looks at the state once and proposes at most one decision per job.
func (e *Engine) step() error {
	var (
		region    *fsm.Region
		jobs      []*fsm.Job
		decrypted int
		listMs    int64 // the newest signed revocation list's issue time
	)
	e.store.FSM().Read(func(s *fsm.State) {
		if s.Region == nil {
			return
		}
		region = s.Region.Clone()
		if s.RevocationList != nil {
			listMs = s.RevocationList.IssuedUnixMs
		}
		for _, id := range s.JobOrder {
			j := s.Jobs[id]
			if !j.Finished() {
				jobs = append(jobs, j.Clone())
				decrypted += decryptedIn(e.paramsOf(region), j, region.Epoch)
				continue
			}
			// A finished job's count never changes: counted once per
			// key epoch, not on every tick.
			k := finishedKey{j.ID, region.Epoch}
			n, ok := e.finished[k]
			if !ok {
				n = decryptedIn(e.paramsOf(region), j, region.Epoch)
				e.finished[k] = n
			}
			decrypted += n
		}
	})
	if region == nil {
		return nil
	}
	e.warnRevocationListAge(region, listMs)
	switch region.Step() {
	case pb.CeremonyStep_CEREMONY_STEP_ENROLL:
		if err := e.closeEnrollment(region); err != nil {
			return err
		}
	case pb.CeremonyStep_CEREMONY_STEP_DONE:
	default:
		if err := e.abandonStalled(region); err != nil {
			return err
		}
	}
	if _, keyed := region.KeyEpoch(); !keyed {
		return nil
	}
	e.mu.Lock()
	rekeyAt := e.rekeyAt
	e.mu.Unlock()
	if region.Step() == pb.CeremonyStep_CEREMONY_STEP_DONE && decrypted >= rekeyAt {
		e.log.Info("starting a new key epoch", "epoch", region.Epoch+1, "decrypted", decrypted, "budget", e.paramsOf(region).MaxDecryptions())
		err := e.store.Propose(&pb.StartKeyEpochCommand{Epoch: region.Epoch + 1,
			Reason: fmt.Sprintf("key epoch %d decrypted %d of its %d ciphertexts", region.Epoch, decrypted, e.paramsOf(region).MaxDecryptions())})
		if err != nil && !errors.Is(err, fsm.ErrRejected) {
			return err
		}
	}
	e.mu.Lock()
	if e.regionReadyMs == 0 {
		e.regionReadyMs = e.NowMs()
	}
	e.mu.Unlock()
	var errs []error
	for _, j := range jobs {
		if err := e.stepJob(region, j); err != nil {
			errs = append(errs, fmt.Errorf("job %s: %w", j.ID, err))
		}
	}
	return errors.Join(errs...)
}

// revocationWarnEvery spaces the leader's warnings that the signed
// revocation list is getting old.
const revocationWarnEvery = 10 * time.Minute

// warnRevocationListAge tells the operators, in the leader's log, before
// the hospitals stop working for the region because the newest signed
// revocation list is older than the region allows.
func (e *Engine) warnRevocationListAge(region *fsm.Region, listMs int64) {
	now := e.now()
	msg := RevocationListWarning(region.RevocationMaxAgeS, listMs, now)
	if msg == "" {
		return
	}
	e.mu.Lock()
	due := now.Sub(e.revocationWarned) >= revocationWarnEvery
	if due {
		e.revocationWarned = now
	}
	e.mu.Unlock()
	if due {
		e.log.Warn(msg, "revocation_max_age_s", region.RevocationMaxAgeS, "list_issued_unix_ms", listMs)
	}
}

// RevocationListWarning is what operators need to hear about a region's
// signed revocation list at now ("" when nothing): none yet, or one past
// half the region's maximum age (hospitals stop working for the region
// past all of it).
func RevocationListWarning(maxAgeS uint32, listMs int64, now time.Time) string {
	maxAge := time.Duration(maxAgeS) * time.Second
	switch age := now.Sub(time.UnixMilli(listMs)); {
	case maxAge == 0:
		return ""
	case listMs == 0:
		return "no signed revocation list yet: hospitals do no work for the region until an operator publishes one (regionfl operator publish-revocations)"
	case age > maxAge:
		return fmt.Sprintf("the signed revocation list is %v old, past the region's %v: hospitals do no work for the region until an operator publishes a fresh one (regionfl operator publish-revocations)", age.Round(time.Second), maxAge)
	case age > maxAge/2:
		return fmt.Sprintf("the signed revocation list is %v old; hospitals stop working for the region at %v: publish a fresh one (regionfl operator publish-revocations)", age.Round(time.Second), maxAge)
	}
	return ""
}

// decryptedIn bounds the ciphertexts any hospital decrypted under key
// epoch epoch for job j: each decryption attempt of a round asks each of
// its decryptors for one share of every ciphertext of the aggregate.
func decryptedIn(params he.Params, j *fsm.Job, epoch uint32) int {
	n := 0
	for _, r := range j.Rounds {
		if r.Epoch == epoch && r.Attempt > 0 {
			n += int(r.Attempt) * params.Ciphertexts(jobspec.VectorShape(j.Spec, r.Number))
		}
	}
	return n
}

// closeEnrollment goes ahead with a re-key once its enrollment has been
// open for the engine's wait: the hospitals enrolled by then are the key
// epoch's members, if there are enough of them; the others join the next
// epoch. The genesis ceremony waits for every hospital.
func (e *Engine) closeEnrollment(r *fsm.Region) error {
	e.mu.Lock()
	wait := e.enrollmentWait
	e.mu.Unlock()
	if r.Epoch == 0 || e.now().Sub(time.UnixMilli(r.EpochStartedMs)) < wait {
		return nil
	}
	enrolled := r.Enrolled()
	if len(enrolled) < r.MinMembers() {
		return nil // rounds keep the current key meanwhile
	}
	e.log.Warn("closing the enrollment of a key epoch without every hospital", "epoch", r.Epoch, "members", enrolled,
		"enrolled", len(enrolled), "hospitals", len(r.Hospitals))
	err := e.store.Propose(&pb.CloseEnrollmentCommand{Epoch: r.Epoch, Members: enrolled})
	if errors.Is(err, fsm.ErrRejected) {
		return nil // a hospital enrolled meanwhile and completed it
	}
	return err
}

// abandonStalled gives up a re-key whose ceremony has not completed
// within twice the enrollment wait (a member went down after enrolling)
// and starts the next epoch's, which the hospitals online at that time
// enroll in. Rounds keep the newest completed epoch's key meanwhile.
func (e *Engine) abandonStalled(r *fsm.Region) error {
	e.mu.Lock()
	wait := e.enrollmentWait
	e.mu.Unlock()
	if r.Epoch == 0 || e.now().Sub(time.UnixMilli(r.EpochStartedMs)) < 2*wait {
		return nil
	}
	var behind []string
	for _, h := range r.MembersOf(r.Epoch) {
		i := r.Index(h)
		switch step := r.Step(); {
		case step == pb.CeremonyStep_CEREMONY_STEP_SEAL_SHARES && !r.SealedAll(h),
			step == pb.CeremonyStep_CEREMONY_STEP_OPEN_SHARES && !r.Ready[i]:
			behind = append(behind, h)
		}
	}
	reason := fmt.Sprintf("the ceremony of key epoch %d stalled at step %s: %v did not do their part within %v", r.Epoch, r.StepName(), behind, 2*wait)
	e.log.Warn("abandoning a stalled key ceremony", "epoch", r.Epoch, "step", r.StepName(), "behind", behind)
	err := e.store.Propose(&pb.StartKeyEpochCommand{Epoch: r.Epoch + 1, Reason: reason, Abandon: true})
	if errors.Is(err, fsm.ErrRejected) {
		return nil // it completed meanwhile
	}
	return err
}

func (e *Engine) stepJob(region *fsm.Region, j *fsm.Job) error {
	now := e.NowMs()
	if j.State == fsm.JobPending {
		decided := len(j.Accepted) + len(j.Refused)
		// Hospitals see offers only once the key ceremony is done: a job
		// submitted before gets its full decision window from then (as
		// this leader saw it; a new leader starts the window again).
		e.mu.Lock()
		from := max(j.SubmittedMs, e.regionReadyMs)
		e.mu.Unlock()
		waited := now - from
		switch {
		case len(j.Accepted) >= int(j.Spec.MinHospitals) && (decided == len(region.Hospitals) || waited > int64(j.Spec.RoundDeadlineMs)):
			return e.openRound(j, j.NextRound())
		case decided == len(region.Hospitals) || waited > int64(j.Spec.RoundDeadlineMs):
			return e.endJob(j, fsm.JobFailed, fmt.Sprintf("%d hospitals accepted, the job needs %d", len(j.Accepted), j.Spec.MinHospitals))
		}
		return nil
	}
	r := j.Current()
	switch r.State {
	case fsm.RoundCommitted, fsm.RoundAborted:
		if aborted := trailingAborts(j); aborted >= MaxAbortedRounds {
			return e.endJob(j, fsm.JobFailed, fmt.Sprintf("%d rounds in a row aborted; last: %s", aborted, r.Reason))
		}
		if j.TrainedRounds() >= int(j.Spec.Rounds) {
			return e.endJob(j, fsm.JobDone, "")
		}
		return e.openRound(j, j.NextRound())
	case fsm.RoundCollecting:
		return e.stepCollecting(region, j, r, now)
	case fsm.RoundDecrypting:
		return e.stepDecrypting(region, j, r, now)
	}
	return nil
}

func trailingAborts(j *fsm.Job) int {
	n := 0
	for i := len(j.Rounds) - 1; i >= 0 && j.Rounds[i].State == fsm.RoundAborted; i-- {
		n++
	}
	return n
}

func (e *Engine) openRound(j *fsm.Job, number uint32) error {
	now := e.NowMs()
	e.mu.Lock()
	e.run(roundKey{j.ID, number}).since = now // the opener's clock is the deadline's
	e.mu.Unlock()
	e.log.Info("round open", "job_id", j.ID, "round", number)
	return e.store.Propose(&pb.OpenRoundCommand{
		JobId: j.ID, Round: number, DeadlineUnixMs: now + int64(j.Spec.RoundDeadlineMs), Leader: e.store.ID(),
	})
}

func (e *Engine) endJob(j *fsm.Job, state, reason string) error {
	e.log.Info("job end", "job_id", j.ID, "state", state, "reason", reason)
	return e.store.Propose(&pb.EndJobCommand{JobId: j.ID, State: state, Reason: reason})
}

func (e *Engine) abort(j *fsm.Job, r *fsm.Round, reason string) error {
	e.mu.Lock()
	delete(e.inflight, roundKey{j.ID, r.Number})
	e.mu.Unlock()
	e.log.Warn("round aborted", "job_id", j.ID, "round", r.Number, "reason", reason)
	return e.store.Propose(&pb.AbortRoundCommand{JobId: j.ID, Round: r.Number, Reason: reason, Leader: e.store.ID()})
}

// resendGrace is the least time a leader gives hospitals to resend the
// updates an earlier leader counted before it closes a round.
const resendGrace = 3 * time.Second

// late reports whether a collecting round's time is up for this leader.
// The deadline in the log was set on the clock of the leader that opened
// the round; replicas' clocks differ. So a leader that took the round
// over closes it no earlier than resendGrace after it first saw it (a
// clock ahead would otherwise close it at once, before any resend), and
// no later than one round deadline after (a clock behind would otherwise
// hold it open for the skew). On the opener's own clock this is the
// deadline in the log.
func (e *Engine) late(key roundKey, r *fsm.Round, deadline, now int64) bool {
	e.mu.Lock()
	run := e.run(key)
	if run.since == 0 {
		run.since = now
	}
	first := run.since
	e.mu.Unlock()
	return now >= min(r.DeadlineMs, first+deadline) && now >= first+min(deadline, resendGrace.Milliseconds())
}

func (e *Engine) stepCollecting(region *fsm.Region, j *fsm.Job, r *fsm.Round, now int64) error {
	key := roundKey{j.ID, r.Number}
	// The contributors and the sum are read together: an update folded in
	// between would be in the sum but not in the manifest.
	var (
		contributors []string
		sum          *he.Update
		sumErr       error
	)
	e.mu.Lock()
	if run := e.inflight[key]; run != nil && run.agg != nil {
		for _, c := range r.Contributions {
			if run.folded[string(c.Digest)] {
				contributors = append(contributors, c.Hospital)
			}
		}
		sum, sumErr = run.agg.Result()
	}
	e.mu.Unlock()
	// Updates counted under an earlier leader are missing from this one's
	// sum until their hospitals resend them (Poll asks them to). A round
	// waits for every accepted hospital that is not offline, and closes
	// early only with at least K updates: with fewer, it waits out its
	// deadline for anyone coming back.
	all := len(r.Contributions) >= e.expected(region, j, r) && len(contributors) == len(r.Contributions) &&
		len(contributors) >= int(j.Spec.MinHospitals)
	late := e.late(key, r, int64(j.Spec.RoundDeadlineMs), now)
	if !all && !late {
		return nil
	}
	k := int(j.Spec.MinHospitals)
	if len(contributors) < k {
		reason := fmt.Sprintf("%d of the %d updates needed arrived by the deadline", len(contributors), k)
		if lost := len(r.Contributions) - len(contributors); lost > 0 {
			reason += fmt.Sprintf(" (%d more were counted before a leader change and not sent again)", lost)
		}
		return e.abort(j, r, reason)
	}
	// The manifest is drawn up now, and no update is counted from here
	// until the close is proposed: one counted in between would be in the
	// log, acknowledged to its hospital, and in neither the sum nor the
	// manifest. (The decision above may have read fewer: more is fine.)
	e.mu.Lock()
	if run := e.inflight[key]; run != nil && run.agg != nil {
		contributors = contributors[:0]
		e.store.FSM().Read(func(s *fsm.State) {
			if sj := s.Jobs[j.ID]; sj != nil && sj.Current() != nil && sj.Current().Number == r.Number {
				for _, c := range sj.Current().Contributions {
					if run.folded[string(c.Digest)] {
						contributors = append(contributors, c.Hospital)
					}
				}
			}
		})
		sum, sumErr = run.agg.Result()
		run.closing = true
	}
	e.mu.Unlock()
	closed := false
	defer func() {
		e.mu.Lock()
		if run := e.inflight[key]; run != nil && !closed {
			run.closing = false // not closed (leadership lost, say): updates count again
		}
		e.mu.Unlock()
	}()
	if sumErr != nil {
		return e.abort(j, r, "aggregate: "+sumErr.Error())
	}
	b, err := sum.MarshalBinary()
	if err != nil {
		return err
	}
	digest := sum.Digest()
	// The manifest lists exactly the updates in the sum: one counted under
	// an earlier leader and never sent again is left out.
	slices.Sort(contributors)
	active := e.chooseDecryptors(region, r.Epoch, contributors, nil, 0)
	e.log.Info("round closed", "job_id", j.ID, "round", r.Number, "contributors", len(contributors),
		"aggregate_size", len(b), "aggregate_digest", fmt.Sprintf("%x", digest[:8]), "decryptors", active)
	err = e.store.Propose(&pb.CloseRoundCommand{
		JobId: j.ID, Round: r.Number, Aggregate: b, AggregateDigest: digest[:],
		Contributors: contributors, Active: active, Leader: e.store.ID(),
	})
	if err == nil {
		closed = true
		e.mu.Lock()
		delete(e.inflight, key)
		e.mu.Unlock()
	}
	return err
}

// expected is how many updates round r waits for: one from every accepted
// member of its key epoch that contributed already or is not offline (see
// OfflineAfterRounds).
func (e *Engine) expected(region *fsm.Region, j *fsm.Job, r *fsm.Round) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, h := range j.Accepted {
		if !region.Member(r.Epoch, h) {
			continue // sits the round's key epoch out: it has no key to send in
		}
		if r.Contributed(h) || !e.offline(j, r, h) {
			n++
		}
	}
	return n
}

// Offline lists the accepted hospitals of job j that its current round
// does not wait for (see OfflineAfterRounds); nil when no round collects.
// Only the leader knows: it sees the polls.
func (e *Engine) Offline(j *fsm.Job) []string {
	r := j.Current()
	if r == nil || r.State != fsm.RoundCollecting {
		return nil
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []string
	for _, h := range j.Accepted {
		if !r.Contributed(h) && e.offline(j, r, h) {
			out = append(out, h)
		}
	}
	return out
}

// offline reports whether accepted hospital h of job j counts as offline in
// round r: nothing from it in the job's last OfflineAfterRounds rounds,
// and no poll since r opened. Callers hold e.mu.
func (e *Engine) offline(j *fsm.Job, r *fsm.Round, h string) bool {
	if e.seen[h].UnixMilli() >= r.OpenedMs {
		return false
	}
	return SilentBefore(j, len(j.Rounds)-1, h) >= OfflineAfterRounds // the current round is last
}

// SilentBefore is how many of job j's rounds right before its round at
// index i received nothing from hospital h: the log's half of the offline
// rule (the other half, no poll since the round opened, only the leader
// knows).
func SilentBefore(j *fsm.Job, i int, h string) int {
	n := 0
	for k := i - 1; k >= 0 && !j.Rounds[k].Contributed(h); k-- {
		n++
	}
	return n
}

// chooseDecryptors picks t of the committee of key epoch epoch, preferring the
// round's contributors (they were just online), then the most recently
// seen. It leaves out the hospitals in exclude and, when sinceMs is set,
// those not seen since then; it returns nil when fewer than t remain.
func (e *Engine) chooseDecryptors(region *fsm.Region, epoch uint32, contributors, exclude []string, sinceMs int64) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	var cand []string
	for _, h := range region.CommitteeOf(epoch) {
		if !slices.Contains(exclude, h) && (sinceMs == 0 || e.seen[h].UnixMilli() >= sinceMs) {
			cand = append(cand, h)
		}
	}
	if len(cand) < region.Threshold {
		return nil
	}
	sort.SliceStable(cand, func(a, b int) bool {
		ca, cb := slices.Contains(contributors, cand[a]), slices.Contains(contributors, cand[b])
		if ca != cb {
			return ca
		}
		return e.seen[cand[a]].After(e.seen[cand[b]])
	})
	active := cand[:region.Threshold]
	slices.Sort(active)
	return active
}

func (e *Engine) stepDecrypting(region *fsm.Region, j *fsm.Job, r *fsm.Round, now int64) error {
	if !r.Approved() {
		// Decryptors serve a contributor set only once every contributor
		// signed it; a contributor that does not approve within the
		// deadline ends the round, and the next one runs without it.
		if now < r.AttemptMs+int64(j.Spec.RoundDeadlineMs) {
			return nil
		}
		var missing []string
		for _, h := range r.Contributors {
			if _, ok := r.Approvals[h]; !ok {
				missing = append(missing, h)
			}
		}
		return e.abort(j, r, fmt.Sprintf("%v did not approve the contributor set before the deadline; the round runs again", missing))
	}
	if len(r.Shares) < len(r.Active) {
		if now < r.AttemptMs+int64(j.Spec.RoundDeadlineMs) {
			return nil
		}
		var missing []string
		for _, h := range r.Active {
			if _, ok := r.Shares[h]; !ok {
				missing = append(missing, h)
			}
		}
		// Shares are bound to the active set and a hospital gives one per
		// round, so the next attempt needs t hospitals never asked in this
		// round, all of them polling since this attempt began (alive).
		active := e.chooseDecryptors(region, r.Epoch, r.Contributors, r.Asked, r.AttemptMs)
		if active == nil {
			return e.abort(j, r, fmt.Sprintf("no decryption share from %v before the deadline, and fewer than %d other hospitals are online; the round runs again", missing, region.Threshold))
		}
		e.log.Warn("decryption retried", "job_id", j.ID, "round", r.Number, "attempt", r.Attempt+1, "missing", missing, "decryptors", active)
		return e.store.Propose(&pb.RetryDecryptionCommand{
			JobId: j.ID, Round: r.Number, Attempt: r.Attempt + 1, Active: active,
		})
	}
	params := e.paramsOf(region)
	agg, err := he.UnmarshalUpdate(params, jobspec.VectorShape(j.Spec, r.Number), r.Aggregate)
	if err != nil {
		return e.abort(j, r, "committed aggregate unreadable: "+err.Error())
	}
	shares := make([]*he.DecryptionShare, 0, len(r.Shares))
	for _, h := range r.Active {
		s, err := he.UnmarshalDecryptionShare(params, r.Shares[h])
		if err != nil {
			return e.abort(j, r, fmt.Sprintf("decryption share of %s: %v", h, err))
		}
		shares = append(shares, s)
	}
	t0 := time.Now()
	res, err := he.Combine(params, agg, shares, region.Threshold)
	e.metrics.ObserveDecryption(time.Since(t0))
	if err != nil {
		return e.abort(j, r, "combining decryption shares: "+err.Error())
	}
	return e.commit(j, r, res)
}

// commit turns the decrypted sum into the next model version.
func (e *Engine) commit(j *fsm.Job, r *fsm.Round, res *he.Result) error {
	if res.Count == 0 {
		return e.abort(j, r, "aggregate holds no samples")
	}
	// Each contribution is encoded within its clip bound C, so the sum
	// cannot be longer than K·C; anything longer means a corrupted aggregate.
	norm := l2(res.Sum)
	clip := jobspec.EncodingClip(j.Spec, r.Number)
	if math.IsNaN(norm) || norm > float64(len(r.Contributors))*clip*(1+1e-6) {
		return e.abort(j, r, fmt.Sprintf("aggregate norm %.4g exceeds %d·%g", norm, len(r.Contributors), clip))
	}
	if r.Number == jobspec.StatsRound {
		mean, std, err := jobspec.RegionScaling(res.Sum, res.Count, float64(j.Spec.SampleScale), jobspec.StatsBound)
		if err != nil {
			return e.abort(j, r, "region statistics: "+err.Error())
		}
		e.log.Info("region scaling committed", "job_id", j.ID, "contributors", len(r.Contributors), "total_samples", res.Count)
		return e.store.Propose(&pb.ScalingCommand{
			JobId: j.ID, Round: r.Number, FeatureMean: mean, FeatureStd: std, TotalSamples: res.Count,
		})
	}
	// The vector is the update, then the sites' metric sums.
	step, err := jobspec.NextModel(j.Spec, r.ModelVersion, res.Sum, res.Count, j.Latest().Params, j.OptimizerState)
	if err != nil {
		return e.abort(j, r, "server step: "+err.Error())
	}
	v := j.Latest().Version + 1
	e.log.Info("model committed", "job_id", j.ID, "round", r.Number, "version", v,
		"contributors", len(r.Contributors), "total_samples", res.Count, "update_norm", norm)
	return e.store.Propose(&pb.CommitModelCommand{
		JobId: j.ID, Round: r.Number, Version: v, Params: step.Params, TotalSamples: res.Count,
		UpdateNorm: step.UpdateNorm, OptimizerState: step.OptimizerState, RegionMetrics: step.RegionMetrics,
	})
}

func l2(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x * x
	}
	return math.Sqrt(s)
}

// CheckHeader refuses an update from its header alone, before any of its
// bytes are received, and returns the exact size the update must have and
// the round's binding (fsm.Job.Binding), which the hospital's signed
// contribution must cover. It refuses an unknown job, another model, a
// round that is not collecting, a hospital that has not accepted the job,
// another model version, and a second update of a hospital in a round; the
// update a hospital was counted with passes again while this leader's sum
// lacks it (a resend).
func (e *Engine) CheckHeader(hospital string, h *pb.UpdateHeader) (size int, binding [32]byte, err error) {
	j, r, err := e.check(hospital, h)
	if err != nil {
		return 0, binding, err
	}
	return he.UpdateSize(e.Params(), jobspec.VectorShape(j.Spec, r.Number)), j.Binding(r), nil
}

func (e *Engine) check(hospital string, h *pb.UpdateHeader) (*fsm.Job, *fsm.Round, error) {
	var j *fsm.Job
	e.store.FSM().Read(func(s *fsm.State) {
		if job, ok := s.Jobs[h.JobId]; ok {
			j = job.Clone()
		}
	})
	if j == nil {
		return nil, nil, fmt.Errorf("%w: job_id %q", ErrUnknownJob, h.JobId)
	}
	r := j.Current()
	switch {
	case h.ModelHash != j.ModelHash:
		return nil, nil, fmt.Errorf("%w: model_hash: the update is for model %q, job %s trains %q", ErrBadUpdate, h.ModelHash, j.ID, j.ModelHash)
	case r == nil || r.Number != h.Round || r.State != fsm.RoundCollecting:
		return nil, nil, fmt.Errorf("%w: round %d of job %s", ErrRoundClosed, h.Round, j.ID)
	case !slices.Contains(j.Accepted, hospital):
		return nil, nil, fmt.Errorf("%w: %s, job %s", ErrNotAccepted, hospital, j.ID)
	case h.ModelVersion != r.ModelVersion:
		return nil, nil, fmt.Errorf("%w: trained on version %d, round %d uses version %d", ErrStaleModel, h.ModelVersion, r.Number, r.ModelVersion)
	case h.SiteMetrics != nil && !j.Spec.GetShareSiteMetrics():
		return nil, nil, fmt.Errorf("%w: site_metrics: job %s does not share site figures", ErrBadUpdate, j.ID)
	}
	if c := r.ContributionOf(hospital); c != nil {
		if string(c.Digest) != string(h.Digest) {
			return nil, nil, fmt.Errorf("%w: %s already contributed another update to round %d", ErrDuplicate, hospital, r.Number)
		}
		if e.Holds(j.ID, r.Number, h.Digest) {
			return nil, nil, fmt.Errorf("%w: the update of %s is already counted in round %d", ErrDuplicate, hospital, r.Number)
		}
	} else if r.HasDigest(h.Digest) {
		return nil, nil, fmt.Errorf("%w: an update with this digest is already counted in round %d", ErrDuplicate, r.Number)
	}
	return j, r, nil
}

// Accept checks an encrypted update for the current round, records it in the
// log and folds it into the round's running sum; the update a hospital was
// already counted with is folded without a second log entry (a resend to a
// new leader). The SubmitUpdate handler calls it with exactly the size
// CheckHeader returned, and the certificate whose key signed the header.
func (e *Engine) Accept(hospital string, h *pb.UpdateHeader, raw, certificate []byte) error {
	j, r, err := e.check(hospital, h)
	if err != nil {
		return err
	}
	n := jobspec.VectorShape(j.Spec, r.Number)
	// The header is checked here; the residues as they are folded,
	// straight from the bytes below: the leader holds the running sum and
	// these bytes, not a second copy, and reads them once.
	params := e.Params()
	u, err := he.OpenUpdate(params, n, raw)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadUpdate, err)
	}
	digest := u.Digest()
	if string(digest[:]) != string(h.Digest) {
		return fmt.Errorf("%w: %w: the bytes do not hash to the header's digest", ErrBadUpdate, ErrDigestMismatch)
	}
	binding := j.Binding(r)
	if u.Binding() != binding {
		return fmt.Errorf("%w: bound to another job, round or model", ErrBadUpdate)
	}
	clip := jobspec.EncodingClip(j.Spec, r.Number)
	if u.Clip() != clip {
		return fmt.Errorf("%w: clip norm %g, the round uses %g", ErrBadUpdate, u.Clip(), clip)
	}
	// An update claiming several parties would pass for several hospitals
	// in the sum the decryptors check against the manifest.
	if u.Parties() != 1 {
		return fmt.Errorf("%w: parties: %d, a hospital's update counts one", ErrBadUpdate, u.Parties())
	}

	// One fold at a time per engine: the check, the log entry and the fold
	// must not interleave with another update for the same round.
	e.mu.Lock()
	defer e.mu.Unlock()
	term, err := e.store.Ready()
	if err != nil {
		return err
	}
	e.lead(term)
	// Decide on the log as it is now, under the lock: the round may have
	// closed, or another stream of the hospital been counted, since check.
	var (
		collecting bool
		counted    []byte
	)
	e.store.FSM().Read(func(s *fsm.State) {
		cur := s.Jobs[j.ID].Current()
		collecting = cur.Number == r.Number && cur.State == fsm.RoundCollecting
		if c := cur.ContributionOf(hospital); collecting && c != nil {
			counted = c.Digest
		}
	})
	key := roundKey{j.ID, r.Number}
	run := e.inflight[key]
	resend := counted != nil
	switch {
	case !collecting:
		return fmt.Errorf("%w: round %d of job %s", ErrRoundClosed, r.Number, j.ID)
	case resend && string(counted) != string(digest[:]):
		return fmt.Errorf("%w: %s already contributed another update to round %d", ErrDuplicate, hospital, r.Number)
	case run != nil && run.folded[string(digest[:])]:
		return fmt.Errorf("%w: the update of %s is already counted in round %d", ErrDuplicate, hospital, r.Number)
	case run != nil && run.closing:
		return fmt.Errorf("%w: round %d of job %s is closing", ErrRoundClosed, r.Number, j.ID)
	}
	if run == nil || run.agg == nil {
		run = e.run(key)
		run.agg = he.NewAggregator(params, n, clip, binding)
	}
	// Folded first (a residue not below its prime is refused and leaves
	// the sum as it was), then logged; an update the log does not take is
	// taken out of the sum again.
	if err := run.agg.AddEncoded(u); err != nil {
		return fmt.Errorf("%w: %v", ErrBadUpdate, err)
	}
	if !resend {
		err = e.store.Propose(&pb.ContributionCommand{
			JobId: j.ID, Round: r.Number, Hospital: hospital, Digest: digest[:], Size: uint64(len(raw)),
			SiteMetrics: h.SiteMetrics, Signature: h.Signature, Certificate: certificate,
		})
		if err != nil {
			if serr := run.agg.SubtractEncoded(u); serr != nil {
				return fmt.Errorf("%w (and the sum could not be restored: %v)", err, serr)
			}
			return err // leadership lost, or refused: the round closed meanwhile
		}
	}
	run.folded[string(digest[:])] = true
	e.log.Info("update accepted", "job_id", j.ID, "round", r.Number, "hospital", hospital,
		"size", len(raw), "digest", fmt.Sprintf("%x", digest[:8]), "resent", resend)
	return nil
}

// Holds reports whether this leader's running sum of a collecting round
// includes the update with the given digest. Poll asks hospitals to resend
// the updates counted in the log that it lacks.
func (e *Engine) Holds(jobID string, round uint32, digest []byte) bool {
	term, err := e.store.Ready()
	e.mu.Lock()
	defer e.mu.Unlock()
	if err != nil {
		return false
	}
	e.lead(term)
	run := e.inflight[roundKey{jobID, round}]
	return run != nil && run.folded[string(digest)]
}
