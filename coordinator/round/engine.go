// Package round is the leader's round engine: it finishes the key ceremony,
// opens rounds, folds encrypted updates into the running aggregate as they
// arrive, closes rounds when every accepted hospital has sent or at the
// deadline, collects t decryption shares, applies the server optimizer to
// the decrypted aggregate and commits the next model version.
//
// Every decision becomes a Raft command; the engine's own memory holds only
// what is large and short-lived (the running encrypted sum of the round in
// progress, which hospitals were recently seen).
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
	"regionfl/coordinator/store"
	"regionfl/he"
	"regionfl/jobspec"
	"regionfl/models"
	"regionfl/node/dataset"
	pb "regionfl/proto/regionfl/v1"
)

// Errors the gRPC layer turns into status codes.
var (
	ErrRoundClosed = errors.New("round is not collecting updates")
	ErrDuplicate   = errors.New("update already received")
	ErrStaleModel  = errors.New("update trained on another model version")
	ErrNotAccepted = errors.New("hospital has not accepted this job")
	ErrBadUpdate   = errors.New("encrypted update refused")
)

// MaxAbortedRounds ends a job that keeps failing to gather enough updates.
const MaxAbortedRounds = 3

// Clock is injected so tests control time.
type Clock func() time.Time

// Engine runs rounds on the leader.
type Engine struct {
	store  *store.Store
	params he.Params
	log    *slog.Logger
	now    Clock

	mu       sync.Mutex
	inflight map[roundKey]*he.Aggregator // running sums of collecting rounds
	seen     map[string]time.Time        // hospital -> last poll
	mode     string                      // "leader" once this replica took over
}

type roundKey struct {
	job   string
	round uint32
}

// New returns an engine for a replica.
func New(st *store.Store, params he.Params, log *slog.Logger, now Clock) *Engine {
	if now == nil {
		now = time.Now
	}
	return &Engine{store: st, params: params, log: log, now: now,
		inflight: map[roundKey]*he.Aggregator{}, seen: map[string]time.Time{}}
}

// Params are the region's HE parameters.
func (e *Engine) Params() he.Params { return e.params }

// Seen records that a hospital polled: decryptors are chosen among
// hospitals seen recently.
func (e *Engine) Seen(hospital string) {
	e.mu.Lock()
	e.seen[hospital] = e.now()
	e.mu.Unlock()
}

// NowMs is the engine's clock in Unix milliseconds, stamped into commands.
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
		if !e.store.IsLeader() {
			e.mu.Lock()
			e.mode = ""
			clear(e.inflight)
			e.mu.Unlock()
			continue
		}
		if e.mode == "" {
			// A new leader first applies everything its predecessor
			// committed, so it acts on the whole state.
			if err := e.store.Barrier(5 * time.Second); err != nil {
				continue
			}
			e.mode = "leader"
			e.log.Info("leading rounds")
		}
		if err := e.step(); err != nil && !errors.Is(err, store.ErrNotLeader) {
			e.log.Warn("round engine step", "err", err)
		}
	}
}

// step looks at the state once and proposes at most one decision per job.
func (e *Engine) step() error {
	var (
		region *fsm.Region
		jobs   []*fsm.Job
	)
	e.store.FSM().Read(func(s *fsm.State) {
		if s.Region != nil {
			r := *s.Region
			region = &r
		}
		for _, id := range s.JobOrder {
			if j := s.Jobs[id]; !j.Finished() {
				jobs = append(jobs, cloneJob(j))
			}
		}
	})
	if region == nil {
		return nil
	}
	if region.PublicKey == nil && !slices.ContainsFunc(region.PKShares, func(b []byte) bool { return b == nil }) {
		return e.publishPublicKey(region)
	}
	if region.Step() != pb.CeremonyStep_CEREMONY_STEP_DONE {
		return nil
	}
	var errs []error
	for _, j := range jobs {
		if err := e.stepJob(region, j); err != nil {
			errs = append(errs, fmt.Errorf("job %s: %w", j.ID, err))
		}
	}
	return errors.Join(errs...)
}

func (e *Engine) publishPublicKey(r *fsm.Region) error {
	shares := make([]*he.PublicKeyShare, len(r.PKShares))
	for i, b := range r.PKShares {
		s, err := he.UnmarshalPublicKeyShare(e.params, b)
		if err != nil {
			return fmt.Errorf("public-key share of %s: %w", r.Hospitals[i], err)
		}
		shares[i] = s
	}
	pk, err := he.AggregatePublicKey(e.params, r.Seed, len(shares), shares)
	if err != nil {
		return err
	}
	b, err := pk.MarshalBinary()
	if err != nil {
		return err
	}
	d := pk.Digest()
	e.log.Info("collective public key ready", "size", len(b), "digest", fmt.Sprintf("%x", d[:8]))
	return e.store.Propose(fsm.CmdPublicKey, &pb.PublicKeyCommand{PublicKey: b})
}

func (e *Engine) stepJob(region *fsm.Region, j *fsm.Job) error {
	now := e.NowMs()
	if j.State == fsm.JobPending {
		decided := len(j.Accepted) + len(j.Refused)
		waited := now - j.SubmittedMs
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
	e.log.Info("round open", "job_id", j.ID, "round", number)
	return e.store.Propose(fsm.CmdOpenRound, &pb.OpenRoundCommand{
		JobId: j.ID, Round: number, UnixMs: now, DeadlineUnixMs: now + int64(j.Spec.RoundDeadlineMs),
	})
}

func (e *Engine) endJob(j *fsm.Job, state, reason string) error {
	e.log.Info("job end", "job_id", j.ID, "state", state, "reason", reason)
	return e.store.Propose(fsm.CmdEndJob, &pb.EndJobCommand{JobId: j.ID, State: state, Reason: reason, UnixMs: e.NowMs()})
}

func (e *Engine) abort(j *fsm.Job, r *fsm.Round, reason string) error {
	e.mu.Lock()
	delete(e.inflight, roundKey{j.ID, r.Number})
	e.mu.Unlock()
	e.log.Warn("round aborted", "job_id", j.ID, "round", r.Number, "reason", reason)
	return e.store.Propose(fsm.CmdAbortRound, &pb.AbortRoundCommand{JobId: j.ID, Round: r.Number, Reason: reason, UnixMs: e.NowMs()})
}

func (e *Engine) stepCollecting(region *fsm.Region, j *fsm.Job, r *fsm.Round, now int64) error {
	key := roundKey{j.ID, r.Number}
	e.mu.Lock()
	agg := e.inflight[key]
	e.mu.Unlock()
	if len(r.Contributions) > 0 && agg == nil {
		// The encrypted sum lived in the previous leader's memory.
		return e.abort(j, r, "leader changed while collecting; updates must be sent again")
	}
	all := len(r.Contributions) == len(j.Accepted)
	late := now >= r.DeadlineMs
	if !all && !late {
		return nil
	}
	k := int(j.Spec.MinHospitals)
	if len(r.Contributions) < k {
		return e.abort(j, r, fmt.Sprintf("%d of the %d updates needed arrived by the deadline", len(r.Contributions), k))
	}
	sum, err := agg.Result()
	if err != nil {
		return e.abort(j, r, "aggregate: "+err.Error())
	}
	b, err := sum.MarshalBinary()
	if err != nil {
		return err
	}
	digest := sum.Digest()
	contributors := make([]string, len(r.Contributions))
	for i, c := range r.Contributions {
		contributors[i] = c.Hospital
	}
	slices.Sort(contributors)
	active := e.chooseDecryptors(region, contributors)
	e.log.Info("round closed", "job_id", j.ID, "round", r.Number, "contributors", len(contributors),
		"aggregate_size", len(b), "aggregate_digest", fmt.Sprintf("%x", digest[:8]), "decryptors", active)
	err = e.store.Propose(fsm.CmdCloseRound, &pb.CloseRoundCommand{
		JobId: j.ID, Round: r.Number, UnixMs: now, Aggregate: b, AggregateDigest: digest[:],
		Contributors: contributors, Active: active,
	})
	if err == nil {
		e.mu.Lock()
		delete(e.inflight, key)
		e.mu.Unlock()
	}
	return err
}

// chooseDecryptors picks t hospitals, most recently seen first, preferring
// the round's contributors (they were just online).
func (e *Engine) chooseDecryptors(region *fsm.Region, contributors []string) []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	cand := slices.Clone(region.Hospitals)
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
	if len(r.Shares) < len(r.Active) {
		if now >= r.ClosedMs+int64(j.Spec.RoundDeadlineMs) {
			var missing []string
			for _, h := range r.Active {
				if _, ok := r.Shares[h]; !ok {
					missing = append(missing, h)
				}
			}
			return e.abort(j, r, fmt.Sprintf("no decryption share from %v before the deadline", missing))
		}
		return nil
	}
	agg, err := he.UnmarshalUpdate(e.params, jobspec.VectorLen(j.Spec, r.Number), r.Aggregate)
	if err != nil {
		return e.abort(j, r, "committed aggregate unreadable: "+err.Error())
	}
	shares := make([]*he.DecryptionShare, 0, len(r.Shares))
	for _, h := range r.Active {
		s, err := he.UnmarshalDecryptionShare(e.params, r.Shares[h])
		if err != nil {
			return e.abort(j, r, fmt.Sprintf("decryption share of %s: %v", h, err))
		}
		shares = append(shares, s)
	}
	res, err := he.Combine(e.params, agg, shares, region.Threshold)
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
		mean, std, err := dataset.RegionScaling(res.Sum, res.Count, float64(j.Spec.SampleScale))
		if err != nil {
			return e.abort(j, r, "region statistics: "+err.Error())
		}
		e.log.Info("region scaling committed", "job_id", j.ID, "contributors", len(r.Contributors), "total_samples", res.Count)
		return e.store.Propose(fsm.CmdScaling, &pb.ScalingCommand{
			JobId: j.ID, Round: r.Number, FeatureMean: mean, FeatureStd: std, TotalSamples: res.Count, UnixMs: e.NowMs(),
		})
	}
	// Nodes send (n_i / sample_scale)·Δ_i; dividing the sum by Σn_i /
	// sample_scale gives the sample-weighted mean update.
	scale := float64(j.Spec.SampleScale) / float64(res.Count)
	avg := make([]float64, len(res.Sum))
	for i, v := range res.Sum {
		avg[i] = v * scale
	}
	opt, err := models.NewServerOptimizer(jobspec.Strategy(j.Spec), len(avg))
	if err != nil {
		return e.abort(j, r, "strategy: "+err.Error())
	}
	if err := restoreOptimizer(opt, j.OptimizerState); err != nil {
		return e.abort(j, r, "strategy state: "+err.Error())
	}
	next := opt.Step(slices.Clone(j.Latest().Params), avg)
	v := j.Latest().Version + 1
	e.log.Info("model committed", "job_id", j.ID, "round", r.Number, "version", v,
		"contributors", len(r.Contributors), "total_samples", res.Count, "update_norm", norm)
	return e.store.Propose(fsm.CmdCommitModel, &pb.CommitModelCommand{
		JobId: j.ID, Round: r.Number, Version: v, Params: next, TotalSamples: res.Count,
		UpdateNorm: norm, UnixMs: e.NowMs(), OptimizerState: saveOptimizer(opt),
	})
}

func l2(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x * x
	}
	return math.Sqrt(s)
}

// Accept checks an encrypted update for the current round, records it in the
// log and folds it into the round's running sum. It is called by the
// SubmitUpdate handler with the bytes already length-checked.
func (e *Engine) Accept(hospital string, h *pb.UpdateHeader, raw []byte) error {
	var (
		j   *fsm.Job
		err error
	)
	e.store.FSM().Read(func(s *fsm.State) {
		job, ok := s.Jobs[h.JobId]
		if !ok {
			err = fmt.Errorf("%w: no job %q", ErrBadUpdate, h.JobId)
			return
		}
		j = cloneJob(job)
	})
	if err != nil {
		return err
	}
	r := j.Current()
	switch {
	case r == nil || r.Number != h.Round || r.State != fsm.RoundCollecting:
		return fmt.Errorf("%w: round %d of job %s", ErrRoundClosed, h.Round, j.ID)
	case !slices.Contains(j.Accepted, hospital):
		return fmt.Errorf("%w: %s, job %s", ErrNotAccepted, hospital, j.ID)
	case h.ModelVersion != r.ModelVersion:
		return fmt.Errorf("%w: trained on version %d, round %d uses version %d", ErrStaleModel, h.ModelVersion, r.Number, r.ModelVersion)
	case r.Contributed(hospital):
		return fmt.Errorf("%w: %s already contributed to round %d", ErrDuplicate, hospital, r.Number)
	}
	n := jobspec.VectorLen(j.Spec, r.Number)
	u, err := he.UnmarshalUpdate(e.params, n, raw)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadUpdate, err)
	}
	digest := u.Digest()
	if string(digest[:]) != string(h.Digest) {
		return fmt.Errorf("%w: digest does not match the header", ErrBadUpdate)
	}
	binding := jobspec.Binding(j.ID, r.Number, r.ModelVersion, j.ModelHash)
	if u.Binding() != binding {
		return fmt.Errorf("%w: bound to another job, round or model", ErrBadUpdate)
	}
	clip := jobspec.EncodingClip(j.Spec, r.Number)
	if u.Clip() != clip {
		return fmt.Errorf("%w: clip norm %g, the round uses %g", ErrBadUpdate, u.Clip(), clip)
	}

	// One fold at a time per engine: the check, the log entry and the fold
	// must not interleave with another update for the same round.
	e.mu.Lock()
	defer e.mu.Unlock()
	key := roundKey{j.ID, r.Number}
	agg := e.inflight[key]
	if agg == nil {
		if len(r.Contributions) > 0 {
			return fmt.Errorf("%w: this replica became leader mid-round", ErrRoundClosed)
		}
		agg = he.NewAggregator(e.params, n, clip, binding)
		e.inflight[key] = agg
	}
	err = e.store.Propose(fsm.CmdContribution, &pb.ContributionCommand{
		JobId: j.ID, Round: r.Number, Hospital: hospital, Digest: digest[:], Size: uint64(len(raw)),
	})
	if err != nil {
		if errors.Is(err, fsm.ErrRejected) {
			return fmt.Errorf("%w: %v", ErrDuplicate, err)
		}
		return err
	}
	if err := agg.Add(u); err != nil {
		// The log now counts an update the sum lacks: the round cannot
		// produce a correct aggregate any more.
		delete(e.inflight, key)
		return fmt.Errorf("%w: %v", ErrBadUpdate, err)
	}
	e.log.Info("update accepted", "job_id", j.ID, "round", r.Number, "hospital", hospital,
		"size", len(raw), "digest", fmt.Sprintf("%x", digest[:8]))
	return nil
}

// UpdateSize is the exact byte size of an encrypted update for a job.
func (e *Engine) UpdateSize(numParams int) int { return he.UpdateSize(e.params, numParams) }

// cloneJob copies what the engine reads outside the FSM lock.
func cloneJob(j *fsm.Job) *fsm.Job {
	c := *j
	c.Accepted = slices.Clone(j.Accepted)
	c.Rounds = make([]*fsm.Round, len(j.Rounds))
	for i, r := range j.Rounds {
		rc := *r
		rc.Contributions = slices.Clone(r.Contributions)
		rc.Active = slices.Clone(r.Active)
		rc.Shares = make(map[string][]byte, len(r.Shares))
		for k, v := range r.Shares {
			rc.Shares[k] = v
		}
		c.Rounds[i] = &rc
	}
	c.Models = slices.Clone(j.Models)
	return &c
}

// stateful is implemented by server optimizers with moments; their state
// rides in the commit command so a new leader continues the same optimizer.
type stateful interface {
	State() []float64
	SetState([]float64) error
}

func restoreOptimizer(opt models.ServerOptimizer, state []float64) error {
	if s, ok := opt.(stateful); ok && len(state) > 0 {
		return s.SetState(state)
	}
	return nil
}

func saveOptimizer(opt models.ServerOptimizer) []float64 {
	if s, ok := opt.(stateful); ok {
		return s.State()
	}
	return nil
}
