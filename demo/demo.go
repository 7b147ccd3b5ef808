// Package demo runs a whole region in one process: a throwaway CA, three
// coordinator replicas and several hospital nodes on loopback with
// synthetic cohorts, all over mutual TLS. It runs the key ceremony and a
// training job, and compares the federated model with models each hospital
// could train alone.
package demo

import (
	"bytes"
	"cmp"
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"regionfl/client"
	"regionfl/coordinator"
	"regionfl/coordinator/fsm"
	"regionfl/coordinator/server"
	"regionfl/coordinator/web"
	"regionfl/he"
	"regionfl/identity"
	"regionfl/jobspec"
	"regionfl/localregion"
	"regionfl/models"
	"regionfl/node"
	"regionfl/node/dataset"
	pb "regionfl/proto/regionfl/v1"
)

// syntheticTestRows is the size of each synthetic hospital's test set,
// large enough that per-hospital accuracies differ by more than noise.
const syntheticTestRows = 2000

// Options configure a demo run.
type Options struct {
	Replicas   int
	Hospitals  int // synthetic hospitals (ignored when Sites is set)
	Rounds     int
	Seed       int64
	LocalSteps int
	BatchSize  int
	LR         float64
	Optimizer  string
	// Model is the architecture, as models.ParseArchitecture reads it:
	// "logreg" (the default) or "mlp:H1,H2,...".
	Model    string
	Strategy models.StrategyConfig
	ProxMu   float64
	// Scaling is region (default: the region's statistics, computed under
	// encryption before the first round) or site (each hospital its own).
	Scaling string
	// Sites are real site tables, one hospital each (e.g. from --csv or
	// --heart-disease); nil runs a synthetic region.
	Sites []dataset.Site
	// Missing is the job's policy for sites that dropped incomplete rows
	// (jobspec.MissingError, the default, or MissingDrop).
	Missing  string
	Dir      string       // where state goes; "" = a temporary directory removed at the end
	Logger   *slog.Logger // component logs (discarded by default)
	Progress io.Writer    // one line per round; nil = quiet
	// KillLeaderRound stops the leader replica when round N starts
	// collecting (0: never); the others elect a new leader that finishes it.
	KillLeaderRound int
	// DropHospitals takes this many hospitals offline from the middle of
	// the run on (at most hospitals − K, so every round still has K
	// updates and t decryptors).
	DropHospitals int
	// Hold, when set, is called with the result before the region shuts
	// down (e.g. to keep the web view up until interrupted).
	Hold func(*Result)
	// RoundDeadline is each round's deadline (0: 5 s, and 20 s more per
	// million parameters); a machine much slower than the demo expects
	// needs more, or its rounds close without every hospital.
	RoundDeadline time.Duration
}

// DefaultOptions is what `regionfl demo` runs with no flags.
func DefaultOptions() Options {
	return Options{Replicas: 3, Hospitals: 4, Rounds: 10, Seed: 1, LocalSteps: 20, BatchSize: 32, LR: 0.1,
		Optimizer: models.OptSGD, Strategy: models.StrategyConfig{Name: models.StrategyFedAvg}, Scaling: jobspec.ScalingRegion}
}

// Round is one committed or aborted round as the researcher sees it.
type Round struct {
	Round        uint32  `json:"round"`
	Contributors int     `json:"contributors"`
	Accuracy     float64 `json:"accuracy"`
	State        string  `json:"state"`
	// SiteMetrics are the figures of the model this round started from on
	// the hospitals' own test rows, decrypted from encrypted sums: what a
	// researcher sees without any site's data or own figures.
	SiteMetrics *SiteMetrics `json:"site_metrics,omitempty"`
}

// SiteMetrics are region figures built from the sites' encrypted sums.
type SiteMetrics struct {
	ModelVersion uint32  `json:"model_version"`
	N            uint64  `json:"n"`
	Accuracy     float64 `json:"accuracy"`
	AUROC        float64 `json:"auroc"`
	Sensitivity  float64 `json:"sensitivity"`
	Specificity  float64 `json:"specificity"`
	AlarmsPer100 float64 `json:"alarms_per_100"`
	Brier        float64 `json:"brier"`
	PPV          float64 `json:"ppv"`
	// OperatingPoints are the figures at each threshold k/20, from the
	// encrypted histogram of predicted probabilities.
	OperatingPoints []models.OperatingPoint `json:"operating_points"`
}

// Final compares, for one hospital, a model trained on its data alone, the
// federated model and a model trained on the pooled data, all on the
// hospital's own test split.
type Final struct {
	Hospital          string  `json:"hospital"`
	TrainRows         int     `json:"train_rows"`
	TestRows          int     `json:"test_rows"`
	LocalAccuracy     float64 `json:"local_accuracy"`
	FederatedAccuracy float64 `json:"federated_accuracy"`
	PooledAccuracy    float64 `json:"pooled_accuracy"`
	FederatedAUROC    float64 `json:"federated_auroc"`
}

// roundDeadlineMs gives a round 5 s, 20 s more per million parameters
// and 40 ms more per hospital: every hospital of the demo trains,
// evaluates, encrypts and checks the others' signatures in this one
// process.
func roundDeadlineMs(m models.Spec, hospitals int) uint32 {
	return 5_000 + uint32(int64(m.NumParams())*20_000/1_000_000) + 40*uint32(hospitals)
}

// demoCommittee is the decryption committee of a demo region too large
// for every hospital to hold key shares.
const demoCommittee = 5

// DemoTargetSensitivity is the sensitivity the demo's job reports its
// alarm burden at.
const DemoTargetSensitivity = 0.8

// Result is the demo's summary (`regionfl demo --json`).
type Result struct {
	Model     string `json:"model"`  // the architecture, e.g. mlp:1024,1024
	Params    int    `json:"params"` // its parameter count
	Replicas  int    `json:"replicas"`
	Hospitals int    `json:"hospitals"`
	Threshold int    `json:"threshold"`
	// Committee is how many hospitals of each key epoch hold the key
	// shares (0: every hospital).
	Committee int    `json:"committee,omitempty"`
	JobID     string `json:"job_id"`
	Data      string `json:"data"` // synthetic, or the sites' source
	Scaling   string `json:"scaling"`
	Strategy  string `json:"strategy"`
	// Accuracy of each round's model: on held-out data for a synthetic
	// region, else the mean over the hospitals' test splits.
	Rounds []Round `json:"rounds"`
	Final  []Final `json:"final"`
	// GlobalAccuracy is the final model's accuracy measured like Rounds.
	GlobalAccuracy float64 `json:"global_accuracy"`
	// PooledAccuracy is a model trained on all hospitals' rows put
	// together (what federation tries to match), measured the same way.
	PooledAccuracy float64 `json:"pooled_accuracy"`
	// Mean over hospitals of the Final accuracies.
	MeanLocalAccuracy     float64 `json:"mean_local_accuracy"`
	MeanFederatedAccuracy float64 `json:"mean_federated_accuracy"`
	MeanPooledAccuracy    float64 `json:"mean_pooled_accuracy"`
	// WebURL is a login link to the web view (valid while the demo runs).
	WebURL string `json:"web_url"`
	// LeaderChanges counts changes of the Raft leader after the first
	// election; AbortedRounds the rounds that ended without a model.
	LeaderChanges int `json:"leader_changes"`
	AbortedRounds int `json:"aborted_rounds"`
	// DroppedAfterRound is, with DropHospitals, the last round the job
	// had opened when the hospitals were offline: every later round ran
	// without them.
	DroppedAfterRound uint32 `json:"dropped_after_round,omitempty"`
	// AuditFile is the exported audit log (with --keep).
	AuditFile string  `json:"audit_file,omitempty"`
	Seconds   float64 `json:"seconds"`
}

// Run runs the demo region until the job ends.
func Run(ctx context.Context, opt Options) (*Result, error) {
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	if opt.Progress != nil {
		// Faults and measured rounds are told from two goroutines.
		opt.Progress = &lockedWriter{w: opt.Progress}
	}
	start := time.Now()
	res := &Result{Replicas: opt.Replicas, Data: "synthetic", Scaling: opt.Scaling, Strategy: opt.Strategy.WithDefaults().Name}
	sites := opt.Sites
	var heldOut *dataset.Table
	if sites == nil {
		s, h, err := dataset.Synthetic(dataset.SyntheticConfig{Hospitals: opt.Hospitals, Seed: opt.Seed, CaseMixShift: 1, TestRows: syntheticTestRows})
		if err != nil {
			return nil, err
		}
		sites, heldOut = s, &h
	} else {
		res.Data = "site files"
	}
	if opt.Replicas < 1 || len(sites) < 3 || opt.Rounds < 1 {
		return nil, errors.New("demo: need at least 1 replica, 3 hospitals (K = t + 1 contributors with t ≥ 2) and 1 round")
	}
	heParams, err := he.ParamsFor(len(sites))
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	features := sites[0].Train.Features
	for _, s := range sites {
		if !slices.Equal(s.Train.Features, features) || !slices.Equal(s.Test.Features, features) {
			return nil, fmt.Errorf("demo: site %s has other feature columns than %s", s.Name, sites[0].Name)
		}
	}
	res.Hospitals = len(sites)
	dir := opt.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "regionfl-demo-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	// t = half the region (at least 2), and K = t + 1, the sites' default
	// minimum: an update hides among K − (t − 1) = 2 honest contributors
	// even if t − 1 hospitals collude with the coordinator.
	threshold := max(2, len(sites)/2)
	if len(sites) > server.MaxSealedPerMessage(heParams) {
		// Too many for every hospital to hold key shares: a committee
		// drawn per key epoch does, and any majority of it decrypts.
		res.Committee, threshold = demoCommittee, demoCommittee/2+1
	}
	k := threshold + 1
	res.Threshold = threshold
	if opt.DropHospitals < 0 || opt.DropHospitals > len(sites)-k {
		return nil, fmt.Errorf("demo: can drop at most %d of %d hospitals (K = t + 1 = %d must keep sending)", len(sites)-k, len(sites), k)
	}
	if opt.KillLeaderRound > 0 && opt.Replicas < 3 {
		return nil, errors.New("demo: killing the leader needs at least 3 replicas")
	}
	model, err := models.ParseArchitecture(cmp.Or(opt.Model, models.KindLogReg), len(features))
	if err != nil {
		return nil, fmt.Errorf("demo: %w", err)
	}
	res.Model, res.Params = model.String(), model.NumParams()
	spec, err := jobSpec(opt, model, k, len(sites))
	if err != nil {
		return nil, err
	}

	reg, err := setup(ctx, opt, sites, dir, threshold, res)
	if err != nil {
		return nil, err
	}
	defer reg.Close()
	leaderChanges := watchLeader(ctx, reg.Leader)
	for i := range sites {
		if err := reg.StartNode(i); err != nil {
			return nil, err
		}
	}
	researcher, researcherCert, err := reg.Client("researcher", identity.RoleResearcher)
	if err != nil {
		return nil, err
	}
	defer researcher.Close()
	submit, err := client.SubmitJobRequest(researcherCert, spec, fmt.Sprintf("demo-%d", opt.Seed))
	if err != nil {
		return nil, err
	}
	err = researcher.Do(ctx, func(ctx context.Context, conn client.Conn) error {
		resp, err := conn.Researcher.SubmitJob(ctx, submit)
		res.JobID = resp.GetJobId()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("submit job: %w", err)
	}

	f := &faults{opt: opt, reg: reg, res: res, researcher: researcher}
	w := &watcher{opt: opt, res: res, researcher: researcher, model: model, sites: sites, heldOut: heldOut, inject: f.inject}
	final, err := w.watch(ctx)
	if err != nil {
		return nil, fmt.Errorf("watch job: %w", err)
	}
	res.LeaderChanges = leaderChanges()
	if final.State != fsm.JobDone {
		return nil, fmt.Errorf("job %s ended %s: %s", res.JobID, final.State, final.Reason)
	}
	ev := w.evaluator(final.Spec)
	params, err := fetchModel(ctx, researcher, model, res.JobID, 0)
	if err != nil {
		return nil, err
	}
	if res.GlobalAccuracy, err = ev.global(params); err != nil {
		return nil, err
	}
	if err := baselines(opt, spec, model, sites, ev, params, res); err != nil {
		return nil, err
	}
	if opt.Dir != "" {
		// Leave what an auditor needs to check the run offline.
		if err := exportAudit(ctx, reg, opt.Dir); err != nil {
			return nil, fmt.Errorf("audit export: %w", err)
		}
		res.AuditFile = filepath.Join(opt.Dir, "audit.jsonl")
	}
	res.Seconds = time.Since(start).Seconds()
	if opt.Hold != nil {
		opt.Hold(res)
	}
	return res, nil
}

// setup starts the replicas (the first with the web view), links the web
// view and has the operator create the region with threshold t.
func setup(ctx context.Context, opt Options, sites []dataset.Site, dir string, t int, res *Result) (*localregion.Region, error) {
	// The region's hospitals act only on a revocation list signed within
	// the day, as regionfl operator create-region sets by default.
	reg, err := localregion.Start(ctx, localregion.Config{Replicas: opt.Replicas, Sites: sites, Dir: dir, Logger: opt.Logger,
		RevocationMaxAge: 24 * time.Hour, Committee: res.Committee,
		Replica: func(i int, cfg *coordinator.Config) {
			if i == 0 {
				cfg.WebAddr = "127.0.0.1:0" // the read-only web view, linked below
			}
		}})
	if err != nil {
		return nil, err
	}
	if res.WebURL, err = webLink(dir, reg.Replica(0)); err != nil {
		reg.Close()
		return nil, err
	}
	if opt.Progress != nil {
		fmt.Fprintf(opt.Progress, "web view (while the demo runs): %s\n", res.WebURL)
	}
	if err := reg.CreateRegion(ctx, t); err != nil {
		reg.Close()
		return nil, fmt.Errorf("create region: %w", err)
	}
	return reg, nil
}

// jobSpec is the demo's job: K = k contributors per round, the model and
// training options of opt.
func jobSpec(opt Options, model models.Spec, k, hospitals int) (*pb.JobSpec, error) {
	st := opt.Strategy.WithDefaults()
	spec := &pb.JobSpec{
		Name: "deterioration-early-warning", Model: jobspec.ToProto(model),
		Rounds: uint32(opt.Rounds), LocalSteps: uint32(opt.LocalSteps), BatchSize: uint32(opt.BatchSize),
		LearningRate: opt.LR, Optimizer: opt.Optimizer, ProxMu: opt.ProxMu,
		MinHospitals: uint32(k), RoundDeadlineMs: cmp.Or(uint32(opt.RoundDeadline/time.Millisecond), roundDeadlineMs(model, hospitals)), Purpose: "early warning of clinical deterioration (demo)",
		LegalBasis: "demo data, no patients", ClipNorm: 10, SampleScale: 1000, Seed: uint64(opt.Seed),
		Strategy: &pb.Strategy{Name: st.Name, ServerLr: st.ServerLR, Beta1: st.Beta1, Beta2: st.Beta2, Tau: st.Tau},
		Scaling:  opt.Scaling,
		Missing:  opt.Missing,
		// Report the alarm burden at the threshold that catches 80% of
		// deteriorations with the fewest alarms.
		AlertSensitivity: DemoTargetSensitivity,
	}
	jobspec.Defaults(spec)
	if err := jobspec.Validate(spec); err != nil {
		return nil, err
	}
	return spec, nil
}

// faults injects the demo's faults, once each, as the watch sees rounds
// open: the leader stopped (KillLeaderRound), hospitals taken offline
// (DropHospitals, from the middle round on).
type faults struct {
	opt             Options
	reg             *localregion.Region
	res             *Result
	researcher      *client.Client
	killed, dropped bool
}

func (f *faults) inject(ctx context.Context, r *pb.RoundInfo) error {
	if r.State != fsm.RoundCollecting {
		return nil
	}
	if !f.killed && f.opt.KillLeaderRound > 0 && int(r.Round) == f.opt.KillLeaderRound {
		f.killed = true
		if i, ok := f.reg.Leader(); ok {
			id := f.reg.Replica(i).ID()
			f.reg.StopReplica(i)
			if f.opt.Progress != nil {
				fmt.Fprintf(f.opt.Progress, "round %2d  collecting: stopped the leader %s\n", r.Round, id)
			}
		}
	}
	if !f.dropped && f.opt.DropHospitals > 0 && int(r.Round) >= f.opt.Rounds/2+1 {
		f.dropped = true
		n := len(f.reg.Names)
		for i := n - f.opt.DropHospitals; i < n; i++ {
			f.reg.StopNode(i)
		}
		// The job may have moved on while the hospitals stopped: the last
		// round open now is the last one they could still have joined.
		err := f.researcher.Do(ctx, func(ctx context.Context, conn client.Conn) error {
			resp, err := conn.Researcher.GetJob(ctx, &pb.GetJobRequest{JobId: f.res.JobID})
			if rs := resp.GetJob().GetRounds(); len(rs) > 0 {
				f.res.DroppedAfterRound = rs[len(rs)-1].Round
			}
			return err
		})
		if err != nil {
			return fmt.Errorf("job state after taking hospitals offline: %w", err)
		}
		if f.opt.Progress != nil {
			fmt.Fprintf(f.opt.Progress, "round %2d  collecting: took %s offline\n", r.Round, strings.Join(f.reg.Names[n-f.opt.DropHospitals:], ", "))
		}
	}
	return nil
}

// watcher follows the job as the researcher would, reports each round as
// it ends and measures each committed model like the summary does.
type watcher struct {
	opt        Options
	res        *Result
	researcher *client.Client
	model      models.Spec
	sites      []dataset.Site
	heldOut    *dataset.Table
	inject     func(context.Context, *pb.RoundInfo) error
	ev         *evaluator
}

// evaluator measures models with the job's scaling as the coordinator
// recorded it (known once the statistics round committed).
func (w *watcher) evaluator(spec *pb.JobSpec) *evaluator {
	if w.ev == nil {
		w.ev = newEvaluator(w.model, spec, w.sites, w.heldOut)
	}
	return w.ev
}

// lockedWriter serializes writes to w.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// watch follows the job until it ends and returns its last state. Faults
// are injected as soon as a round is seen open; measuring ended rounds
// (a model fetch and an evaluation each) runs beside the stream, on the
// latest state, so it never delays them.
func (w *watcher) watch(ctx context.Context) (*pb.JobInfo, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	latest := make(chan *pb.JobInfo, 1) // holds only the newest state
	reportErr := make(chan error, 1)
	go func() {
		reported := map[uint32]bool{}
		var err error
		for j := range latest {
			for _, r := range j.Rounds {
				if err != nil || reported[r.Round] || (r.State != fsm.RoundCommitted && r.State != fsm.RoundAborted) {
					continue
				}
				reported[r.Round] = true
				if err = w.report(ctx, j, r); err != nil {
					cancel()
				}
			}
		}
		reportErr <- err
	}()
	var final *pb.JobInfo
	err := w.researcher.Do(ctx, func(ctx context.Context, conn client.Conn) error {
		stream, err := conn.Researcher.WatchJob(ctx, &pb.WatchJobRequest{JobId: w.res.JobID})
		if err != nil {
			return err
		}
		return client.Receive(stream, func(m *pb.WatchJobResponse) error {
			final = m.Job
			if cur := m.Job.Rounds; len(cur) > 0 {
				if err := w.inject(ctx, cur[len(cur)-1]); err != nil {
					return err
				}
			}
			// Every state holds every round so far: replacing one not yet
			// measured loses nothing. This is the only sender, so the
			// send after the drain never blocks.
			select {
			case <-latest:
			default:
			}
			latest <- m.Job
			return nil
		})
	})
	close(latest)
	if rerr := <-reportErr; rerr != nil {
		return final, rerr
	}
	return final, err
}

// report adds round r of job j, just ended, to the result and the
// progress output.
func (w *watcher) report(ctx context.Context, j *pb.JobInfo, r *pb.RoundInfo) error {
	out := w.opt.Progress
	if r.Round == jobspec.StatsRound {
		if out != nil {
			fmt.Fprintf(out, "region statistics  %-9s  hospitals %d/%d  (encrypted Σx, Σx² per feature)\n",
				r.State, len(r.Contributors), len(w.sites))
		}
		return nil
	}
	row := Round{Round: r.Round, Contributors: len(r.Contributors), State: r.State}
	if m := r.RegionMetrics; m != nil {
		row.SiteMetrics = &SiteMetrics{ModelVersion: m.ModelVersion, N: m.N, Accuracy: m.Accuracy, AUROC: m.Auroc,
			Sensitivity: m.Sensitivity, Specificity: m.Specificity, AlarmsPer100: m.AlarmsPer_100, Brier: m.Brier,
			PPV: m.Ppv, OperatingPoints: jobspec.OperatingPointsFromProto(m)}
	}
	if r.State == fsm.RoundCommitted {
		params, err := fetchModel(ctx, w.researcher, w.model, j.JobId, versionOf(j, r.Round))
		if err != nil {
			return err
		}
		if row.Accuracy, err = w.evaluator(j.Spec).global(params); err != nil {
			return err
		}
	}
	if r.State == fsm.RoundAborted {
		w.res.AbortedRounds++
	}
	w.res.Rounds = append(w.res.Rounds, row)
	if out != nil {
		fmt.Fprintf(out, "round %2d  %-9s  hospitals %d/%d  global accuracy %.3f", row.Round, row.State, row.Contributors, len(w.sites), row.Accuracy)
		if m := row.SiteMetrics; m != nil {
			fmt.Fprintf(out, "   sites' tests, model v%d (encrypted sums): accuracy %.3f AUROC %.3f alarms/100 %.1f",
				m.ModelVersion, m.Accuracy, m.AUROC, m.AlarmsPer100)
		}
		fmt.Fprintln(out)
	}
	return nil
}

// baselines measures, with the same training budget, what each hospital
// could train alone (with its own scaling, all it would have) and a model
// on all rows pooled, against the federated model params.
func baselines(opt Options, spec *pb.JobSpec, model models.Spec, sites []dataset.Site, ev *evaluator, params []float64, res *Result) error {
	budget := jobspec.TrainConfig(spec, "pooled", 0)
	budget.Steps = opt.Rounds * opt.LocalSteps
	var pooledX [][]float64
	var pooledY []float64
	for i := range sites {
		pooledX = append(pooledX, ev.train[i].X...)
		pooledY = append(pooledY, ev.train[i].Y...)
	}
	pooled, err := models.Train(model, model.Init(opt.Seed), pooledX, pooledY, budget)
	if err != nil {
		return err
	}
	if res.PooledAccuracy, err = ev.global(pooled); err != nil {
		return err
	}
	for i, s := range sites {
		own := s.Train.Stats()
		mean, std := own.MeanStd()
		cfg := jobspec.TrainConfig(spec, s.Name, 0)
		cfg.Steps = budget.Steps
		local, err := models.Train(model, model.Init(opt.Seed), s.Train.Standardize(mean, std).X, s.Train.Y, cfg)
		if err != nil {
			return err
		}
		lm, err := models.Evaluate(model, local, s.Test.Standardize(mean, std).X, s.Test.Y, 0.5)
		if err != nil {
			return err
		}
		test := ev.test[i]
		fm, err := models.Evaluate(model, params, test.X, test.Y, 0.5)
		if err != nil {
			return err
		}
		pm, err := models.Evaluate(model, pooled, test.X, test.Y, 0.5)
		if err != nil {
			return err
		}
		res.Final = append(res.Final, Final{Hospital: s.Name, TrainRows: s.Train.Len(), TestRows: s.Test.Len(),
			LocalAccuracy: lm.Accuracy, FederatedAccuracy: fm.Accuracy, PooledAccuracy: pm.Accuracy, FederatedAUROC: fm.AUROC})
		res.MeanLocalAccuracy += lm.Accuracy / float64(len(sites))
		res.MeanFederatedAccuracy += fm.Accuracy / float64(len(sites))
		res.MeanPooledAccuracy += pm.Accuracy / float64(len(sites))
	}
	return nil
}

// watchLeader counts changes of leader after the first one it sees, until
// ctx ends; the returned function reads the count so far.
func watchLeader(ctx context.Context, leader func() (int, bool)) func() int {
	var (
		mu      sync.Mutex
		changes int
	)
	go func() {
		last, seen := -1, false
		for {
			if i, ok := leader(); ok {
				if seen && i != last {
					mu.Lock()
					changes++
					mu.Unlock()
				}
				last, seen = i, true
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	return func() int {
		mu.Lock()
		defer mu.Unlock()
		return changes
	}
}

// webLink mints a one-hour login link to the first replica's web view for
// a demo auditor, as `regionfl ui login` does for a real region.
func webLink(dir string, r *coordinator.Replica) (string, error) {
	secret, err := web.ReadSecret(filepath.Join(dir, r.ID(), web.SecretFileName))
	if err != nil {
		return "", err
	}
	tok := web.MintLoginToken(secret, identity.Identity{Name: "demo-auditor", Role: identity.RoleAuditor}, time.Hour, time.Now())
	return web.LoginURL("https://"+r.WebAddr(), tok), nil
}

// exportAudit writes DIR/audit.jsonl (the whole audit log with proofs and
// a signed head) and DIR/ca.crt, for `regionfl audit verify`.
func exportAudit(ctx context.Context, reg *localregion.Region, dir string) error {
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: reg.CA.Cert.Raw})
	if err := os.WriteFile(filepath.Join(dir, identity.CACertFile), caPEM, 0o644); err != nil {
		return err
	}
	auditor, _, err := reg.Client("auditor", identity.RoleAuditor)
	if err != nil {
		return err
	}
	defer auditor.Close()
	var buf bytes.Buffer
	err = auditor.Do(ctx, func(ctx context.Context, conn client.Conn) error {
		buf.Reset()
		stream, err := conn.Auditor.ExportAudit(ctx, &pb.ExportAuditRequest{})
		if err != nil {
			return err
		}
		return client.Receive(stream, func(m *pb.ExportAuditResponse) error {
			buf.Write(m.Chunk)
			return nil
		})
	})
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "audit.jsonl"), buf.Bytes(), 0o644)
}

// evaluator holds every site's rows scaled as the job scales them: with
// the region's statistics the coordinator recorded (region, reference) or
// with each site's own (site).
type evaluator struct {
	model       models.Spec
	train, test []dataset.Table
	heldOut     *dataset.Table
}

func newEvaluator(model models.Spec, spec *pb.JobSpec, sites []dataset.Site, heldOut *dataset.Table) *evaluator {
	ev := &evaluator{model: model}
	for _, s := range sites {
		ev.train = append(ev.train, node.Scale(spec, s.Train, s.Train))
		ev.test = append(ev.test, node.Scale(spec, s.Train, s.Test))
	}
	if heldOut != nil {
		// The held-out population is scaled like a new site would: with the
		// region's statistics, or with its own under site scaling.
		h := node.Scale(spec, *heldOut, *heldOut)
		ev.heldOut = &h
	}
	return ev
}

// global is the held-out accuracy, or the mean over the sites' test splits.
func (ev *evaluator) global(params []float64) (float64, error) {
	if ev.heldOut != nil {
		m, err := models.Evaluate(ev.model, params, ev.heldOut.X, ev.heldOut.Y, 0.5)
		return m.Accuracy, err
	}
	var sum float64
	for _, t := range ev.test {
		m, err := models.Evaluate(ev.model, params, t.X, t.Y, 0.5)
		if err != nil {
			return 0, err
		}
		sum += m.Accuracy
	}
	return sum / float64(len(ev.test)), nil
}

func versionOf(j *pb.JobInfo, round uint32) uint32 {
	v := uint32(0)
	for _, r := range j.Rounds {
		if r.State == fsm.RoundCommitted && r.Round != jobspec.StatsRound {
			v++
		}
		if r.Round == round {
			break
		}
	}
	return v
}

func fetchModel(ctx context.Context, c *client.Client, model models.Spec, jobID string, version uint32) ([]float64, error) {
	var params []float64
	err := c.Do(ctx, func(ctx context.Context, conn client.Conn) error {
		resp, err := conn.Researcher.GetModel(ctx, &pb.GetModelRequest{JobId: jobID, Version: version}, client.ModelMessage(model.NumParams()))
		params = resp.GetModel().GetParams()
		return err
	})
	return params, err
}
