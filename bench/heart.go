package bench

import (
	"cmp"
	"errors"
	"fmt"
	"io"
	"math"
	"runtime"
	"slices"
	"sync"
	"time"

	"regionfl/jobspec"
	"regionfl/models"
	"regionfl/node/dataset"
	"regionfl/privacy"
)

// Scalings.
const (
	ScalingSite   = "site"   // each centre standardizes with its own training mean/std (FLamby)
	ScalingRegion = "region" // every centre uses the region's mean/std, summed under encryption
)

// Hyper is one strategy's hyperparameters: the local SGD learning rate,
// FedProx's μ, and the server optimizer.
type Hyper struct {
	ClientLR float64               `json:"client_lr"`
	ProxMu   float64               `json:"prox_mu,omitempty"`
	Server   models.StrategyConfig `json:"server"`
}

// FLambyHyper returns the hyperparameters of FLamby's Fed-Heart-Disease
// benchmark (flamby/config_heart_disease.json): FedAvg client lr 0.001;
// FedProx client lr 0.001, μ 0.01; FedAdam client 0.01, server 0.01;
// FedYogi client 0.003162, server 0.01; FedAdagrad client 0.003162, server
// 0.316228; the adaptive ones with β1 0.9, β2 0.999, τ 1e-8 (FLamby's
// values, not models' defaults of β2 0.99, τ 1e-3).
func FLambyHyper(name string) (Hyper, error) {
	adaptive := func(n string, client, server float64) Hyper {
		return Hyper{ClientLR: client, Server: models.StrategyConfig{Name: n, ServerLR: server, Beta1: 0.9, Beta2: 0.999, Tau: 1e-8}}
	}
	switch name {
	case models.StrategyFedAvg:
		return Hyper{ClientLR: 0.001, Server: models.StrategyConfig{Name: name, ServerLR: 1}}, nil
	case models.StrategyFedProx:
		return Hyper{ClientLR: 0.001, ProxMu: 0.01, Server: models.StrategyConfig{Name: name, ServerLR: 1}}, nil
	case models.StrategyFedAdam:
		return adaptive(name, 0.01, 0.01), nil
	case models.StrategyFedYogi:
		return adaptive(name, 0.003162, 0.01), nil
	case models.StrategyFedAdagrad:
		return adaptive(name, 0.003162, 0.316228), nil
	}
	return Hyper{}, fmt.Errorf("bench: unknown strategy %q", name)
}

// AllStrategies are the strategies the benchmark runs by default.
var AllStrategies = []string{models.StrategyFedAvg, models.StrategyFedProx, models.StrategyFedAdam, models.StrategyFedYogi, models.StrategyFedAdagrad}

// Config is a Fed-Heart-Disease benchmark run.
type Config struct {
	Data  string  // directory with the four UCI files
	Seeds []int64 // each seed: the training order (and with Resplit the split)

	// Resplit draws every seed's own per-centre split (scikit-learn's
	// random_state = seed) instead of FLamby's fixed random_state 43, so
	// the spread over seeds includes the split's.
	Resplit bool

	// Model is the architecture on the 13 features, as
	// models.ParseArchitecture reads it: "" or "logreg" is FLamby's
	// Linear(13→1) + sigmoid; "mlp:H1,H2" trains an MLP under the same
	// protocol.
	Model string

	Rounds     int // federated rounds (FLamby: 15)
	LocalSteps int // local SGD steps per round (FLamby: 100)
	BatchSize  int // FLamby: 4

	Strategies []string // subset of AllStrategies
	Scalings   []string // ScalingSite and/or ScalingRegion

	// SampleScale S: a centre sends (n_i/S)·Δ_i and the server divides the
	// decrypted sum by Σn_i/S (Σn_i decrypted from the count digits).
	SampleScale float64
	// Clip is the L2 clip of one centre's weighted update (n_i/S)·Δ_i, and
	// the he clip it is encrypted with.
	Clip float64

	// StatsScale divides the statistics vectors (dataset.Stats.Vector) and
	// StatsBound is the bound on one centre's vector norm, the he clip of
	// the statistics aggregate. A centre above it is an error.
	StatsScale float64
	StatsBound float64

	// PlainReference runs every federated experiment but the DP ones a
	// second time with the plain sum (region statistics included), on the
	// same seeds, and reports how far the encrypted run's accuracy and
	// parameters are from it.
	PlainReference bool

	Pooled bool // pooled-training baseline, per scaling
	Local  bool // local-training baselines, per scaling and centre

	// Synthetic adds the synthetic region with case-mix shift (the region
	// of `regionfl demo`): FedAvg and pooled training under each scaling,
	// one region per seed, with the statistics and every round encrypted.
	Synthetic bool

	// Differential privacy: DPStrategy with DPScaling, one run per noise
	// multiplier and seed; each centre clips its weighted update to DPClip
	// and adds privacy.ShareStd(σ, DPClip, centres) of Gaussian noise.
	DPStrategy string
	DPScaling  string
	DPSigmas   []float64
	DPClip     float64
	DPDelta    float64

	Workers  int       // experiments run in parallel (default GOMAXPROCS)
	Progress io.Writer // one line per finished experiment; nil = quiet
}

// DefaultConfig is FLamby's protocol with the choices documented in the
// package comment, over seeds 1..5.
func DefaultConfig(data string) Config {
	return Config{
		Data:           data,
		Seeds:          []int64{1, 2, 3, 4, 5},
		Rounds:         15,
		LocalSteps:     100,
		BatchSize:      4,
		Strategies:     slices.Clone(AllStrategies),
		Scalings:       []string{ScalingSite, ScalingRegion},
		SampleScale:    1000,
		Clip:           1,
		StatsScale:     1000,
		StatsBound:     jobspec.StatsBound,
		PlainReference: true,
		Pooled:         true,
		Local:          true,
		Synthetic:      true,
		DPStrategy:     models.StrategyFedAvg,
		DPScaling:      ScalingRegion,
		DPSigmas:       []float64{0, 0.5, 1, 2, 4},
		DPClip:         0.005,
		DPDelta:        1e-5,
	}
}

// Pooled and local training follow FLamby's single-centre baselines:
// Adam, lr 0.001, batch 4. Pooled training takes as many steps as all
// centres take in a federated run (centres × rounds × local steps = 6000,
// FLamby's 50 epochs of the 486 pooled rows are 6100); a local model takes
// FLamby's 50 epochs of its centre's rows.
const (
	baselineLR     = 0.001
	baselineEpochs = 50
)

func (c Config) validate() error {
	switch {
	case c.Data == "":
		return errors.New("bench: no data directory")
	case len(c.Seeds) == 0:
		return errors.New("bench: no seeds")
	case c.Resplit && slices.ContainsFunc(c.Seeds, func(s int64) bool { return s < 0 || s > math.MaxUint32 }):
		return errors.New("bench: with Resplit every seed is a random_state, from 0 to 2^32−1")
	case c.Rounds < 1 || c.LocalSteps < 1 || c.BatchSize < 1:
		return fmt.Errorf("bench: rounds %d, local steps %d, batch size %d must be positive", c.Rounds, c.LocalSteps, c.BatchSize)
	case !(c.SampleScale > 0) || !(c.Clip > 0) || !(c.StatsScale > 0) || !(c.StatsBound > 0):
		return errors.New("bench: sample scale, clip, stats scale and stats bound must be positive")
	}
	if _, err := c.spec(); err != nil {
		return fmt.Errorf("bench: %w", err)
	}
	for _, s := range c.Strategies {
		if _, err := FLambyHyper(s); err != nil {
			return err
		}
	}
	for _, s := range c.Scalings {
		if s != ScalingSite && s != ScalingRegion {
			return fmt.Errorf("bench: unknown scaling %q (want site or region)", s)
		}
	}
	if len(c.DPSigmas) > 0 {
		if _, err := FLambyHyper(c.DPStrategy); err != nil {
			return fmt.Errorf("bench: DP strategy: %w", err)
		}
		if c.DPScaling != ScalingSite && c.DPScaling != ScalingRegion {
			return fmt.Errorf("bench: unknown DP scaling %q", c.DPScaling)
		}
		if !(c.DPClip > 0) || !(c.DPDelta > 0 && c.DPDelta < 1) {
			return errors.New("bench: DP clip must be positive and delta in (0, 1)")
		}
		for _, s := range c.DPSigmas {
			if s < 0 || math.IsNaN(s) || math.IsInf(s, 0) {
				return fmt.Errorf("bench: noise multiplier %g", s)
			}
		}
	}
	return nil
}

// heartFeatures is the number of features of Fed-Heart-Disease.
const heartFeatures = 13

// spec is the benchmark's model: FLamby's Linear(13→1) + sigmoid unless
// Model names another.
func (c Config) spec() (models.Spec, error) {
	return models.ParseArchitecture(cmp.Or(c.Model, models.KindLogReg), heartFeatures)
}

// split is one seed's data under one scaling, and the model trained on it.
type split struct {
	spec        models.Spec
	names       []string
	train, test []dataset.Table
}

// regionStats is the encrypted computation of one seed's region scaling
// and its error against the plain pooled statistics.
type regionStats struct {
	mean, std      []float64
	maxSiteNorm    float64 // largest centre statistics vector norm
	maxMeanErr     float64 // max_j |mean_enc − mean_plain| / std_plain
	maxStdRelErr   float64 // max_j |std_enc − std_plain| / std_plain
	encryptedCount uint64
}

// computeRegionStats sums the centres' statistics vectors through agg and
// turns them into the region scaling, as the node and the coordinator do
// (dataset.Stats.Vector, jobspec.RegionScaling).
func computeRegionStats(sites []dataset.Site, agg Aggregator, scale, bound float64) (*regionStats, error) {
	vecs := make([][]float64, len(sites))
	counts := make([]uint64, len(sites))
	var plain dataset.Stats
	rs := &regionStats{}
	for i, s := range sites {
		st := s.Train.Stats()
		plain = plain.Add(st)
		vecs[i] = st.Vector(scale, bound)
		counts[i] = uint64(s.Train.Len())
		n := norm2(vecs[i])
		rs.maxSiteNorm = max(rs.maxSiteNorm, n)
		if n > bound {
			return nil, fmt.Errorf("%w: centre %s: statistics vector norm %.6g exceeds the bound %.6g (raise the stats scale or bound)", ErrOverBound, s.Name, n, bound)
		}
	}
	sum, count, err := agg.Sum(vecs, len(vecs[0]), counts, bound)
	if err != nil {
		return nil, fmt.Errorf("bench: region statistics: %w", err)
	}
	mean, std, err := jobspec.RegionScaling(sum, count, scale, bound)
	if err != nil {
		return nil, fmt.Errorf("bench: region statistics: %w", err)
	}
	rs.mean, rs.std, rs.encryptedCount = mean, std, count
	plainMean, plainStd := plain.MeanStd()
	for j := range mean {
		rs.maxMeanErr = max(rs.maxMeanErr, math.Abs(mean[j]-plainMean[j])/plainStd[j])
		rs.maxStdRelErr = max(rs.maxStdRelErr, math.Abs(std[j]-plainStd[j])/plainStd[j])
	}
	if float64(count) != plain.Count {
		return nil, fmt.Errorf("bench: region statistics: decrypted count %d, the centres hold %g rows", count, plain.Count)
	}
	return rs, nil
}

// scaleSites standardizes every centre's train and test rows.
func scaleSites(spec models.Spec, sites []dataset.Site, scaling string, rs *regionStats) split {
	sp := split{spec: spec}
	for _, s := range sites {
		mean, std := s.Train.Stats().MeanStd()
		if scaling == ScalingRegion {
			mean, std = rs.mean, rs.std
		}
		sp.names = append(sp.names, s.Name)
		sp.train = append(sp.train, s.Train.Standardize(mean, std))
		sp.test = append(sp.test, s.Test.Standardize(mean, std))
	}
	return sp
}

// mix derives a training seed from the experiment seed and a position.
func mix(vals ...uint64) int64 {
	h := uint64(0x9e3779b97f4a7c15)
	for _, v := range vals {
		h ^= v + 0x9e3779b97f4a7c15 + (h << 6) + (h >> 2)
		// splitmix64 finalizer
		h ^= h >> 30
		h *= 0xbf58476d1ce4e5b9
		h ^= h >> 27
		h *= 0x94d049bb133111eb
		h ^= h >> 31
	}
	return int64(h >> 1)
}

// dpSetting is a federated run's differential privacy.
type dpSetting struct{ sigma float64 }

// fedStats are a federated run's clipping figures.
type fedStats struct {
	maxNorm float64 // largest weighted update norm before clipping
	clipped int     // updates the clip shortened
	updates int
}

// federated runs one federated training: per round each centre trains from
// the global model, sends its clipped weighted update (noised under DP)
// through agg, and the server optimizer steps with the decrypted mean.
func federated(cfg Config, sp split, h Hyper, seed int64, agg Aggregator, dp *dpSetting) ([]float64, fedStats, error) {
	var fs fedStats
	spec := sp.spec
	opt, err := models.NewServerOptimizer(h.Server, spec.NumParams())
	if err != nil {
		return nil, fs, err
	}
	clip := cfg.Clip
	if dp != nil {
		clip = cfg.DPClip
	}
	k := len(sp.train)
	global := spec.Init(seed)
	counts := make([]uint64, k)
	var total uint64
	for i, t := range sp.train {
		counts[i] = uint64(t.Len())
		total += counts[i]
	}
	for r := range cfg.Rounds {
		updates := make([][]float64, k)
		bound := clip
		for i, t := range sp.train {
			local, err := models.Train(spec, global, t.X, t.Y, models.TrainConfig{
				Steps: cfg.LocalSteps, BatchSize: cfg.BatchSize, LR: h.ClientLR, Optimizer: models.OptSGD,
				ProxMu: h.ProxMu, Seed: mix(uint64(seed), uint64(r), uint64(i)),
			})
			if err != nil {
				return nil, fs, fmt.Errorf("round %d, centre %s: %w", r+1, sp.names[i], err)
			}
			w := jobspec.SampleWeight(t.Len(), cfg.SampleScale)
			u := make([]float64, len(local))
			for j := range u {
				u[j] = (local[j] - global[j]) * w
			}
			n := privacy.Clip(u, clip)
			fs.maxNorm = max(fs.maxNorm, n)
			fs.updates++
			if n > clip {
				fs.clipped++
			}
			if dp != nil && dp.sigma > 0 {
				std := privacy.ShareStd(dp.sigma, clip, k)
				if err := privacy.AddNoise(u, std); err != nil {
					return nil, fs, err
				}
				bound = privacy.EncodingBound(clip, std, len(u))
				// The node's encoder clips at the encoding bound; exceeding
				// it has probability below e^-32. Do it explicitly here.
				privacy.Clip(u, bound)
			}
			updates[i] = u
		}
		sum, count, err := agg.Sum(updates, 0, counts, bound)
		if err != nil {
			return nil, fs, fmt.Errorf("round %d: %w", r+1, err)
		}
		if count != total {
			return nil, fs, fmt.Errorf("round %d: aggregate counts %d samples, the centres hold %d", r+1, count, total)
		}
		avg := make([]float64, len(sum))
		scale := jobspec.MeanScale(cfg.SampleScale, count)
		for j, v := range sum {
			avg[j] = v * scale
		}
		global = opt.Step(global, avg)
	}
	return global, fs, nil
}

// evaluate scores params on every centre's test split.
func evaluate(params []float64, sp split) ([]CentreResult, float64, float64, error) {
	out := make([]CentreResult, len(sp.test))
	var acc, auc float64
	for i, t := range sp.test {
		m, err := models.Evaluate(sp.spec, params, t.X, t.Y, 0.5)
		if err != nil {
			return nil, 0, 0, err
		}
		out[i] = CentreResult{Centre: sp.names[i], N: m.N, Accuracy: m.Accuracy, AUROC: m.AUROC}
		acc += m.Accuracy
		auc += m.AUROC
	}
	k := float64(len(sp.test))
	return out, acc / k, auc / k, nil
}

// job is one experiment; it fills its result slot.
type job struct {
	name  string
	run   func() (RunResult, error)
	plain bool // a Config.PlainReference run
}

// Run runs the benchmark with agg as the aggregation of every federated
// round and of the region statistics. With an *Encrypted aggregator the
// report includes the encrypted path's timings.
func Run(cfg Config, agg Aggregator) (*Report, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if agg == nil {
		return nil, errors.New("bench: nil aggregator")
	}
	start := time.Now()
	workers := cfg.Workers
	if workers < 1 {
		workers = runtime.GOMAXPROCS(0)
	}
	rep := newReport(cfg, workers)
	spec, _ := cfg.spec() // validated

	// Per seed: the data, and the region statistics (one encrypted
	// aggregate per seed, sequential), then the scaled splits.
	needRegion := slices.Contains(cfg.Scalings, ScalingRegion) || (len(cfg.DPSigmas) > 0 && cfg.DPScaling == ScalingRegion)
	splits := map[int64]map[string]split{}
	plainSplits := map[int64]map[string]split{} // Config.PlainReference
	var jobs []job
	for _, seed := range cfg.Seeds {
		sites, err := dataset.HeartDisease(cfg.Data, cfg.splitSeed(seed))
		if err != nil {
			return nil, err
		}
		if len(sites) != 4 {
			return nil, fmt.Errorf("bench: %d centres, want 4", len(sites))
		}
		var rs *regionStats
		if needRegion {
			if rs, err = computeRegionStats(sites, agg, cfg.StatsScale, cfg.StatsBound); err != nil {
				return nil, fmt.Errorf("seed %d: %w", seed, err)
			}
			rep.addRegionStats(seed, rs)
		}
		splits[seed] = map[string]split{}
		scalings := slices.Clone(cfg.Scalings)
		if len(cfg.DPSigmas) > 0 && !slices.Contains(scalings, cfg.DPScaling) {
			scalings = append(scalings, cfg.DPScaling)
		}
		for _, sc := range scalings {
			splits[seed][sc] = scaleSites(spec, sites, sc, rs)
		}
		if cfg.PlainReference {
			var plainRS *regionStats
			if slices.Contains(cfg.Scalings, ScalingRegion) {
				if plainRS, err = computeRegionStats(sites, plainSum{}, cfg.StatsScale, cfg.StatsBound); err != nil {
					return nil, fmt.Errorf("seed %d: %w", seed, err)
				}
			}
			plainSplits[seed] = map[string]split{}
			for _, sc := range cfg.Scalings {
				plainSplits[seed][sc] = scaleSites(spec, sites, sc, plainRS)
			}
		}
	}

	for _, seed := range cfg.Seeds {
		for _, sc := range cfg.Scalings {
			sp := splits[seed][sc]
			if cfg.Pooled {
				jobs = append(jobs, job{name: fmt.Sprintf("pooled %s seed %d", sc, seed), run: func() (RunResult, error) {
					return pooled(cfg, sp, sc, seed)
				}})
			}
			if cfg.Local {
				for c := range sp.train {
					jobs = append(jobs, job{name: fmt.Sprintf("local %s %s seed %d", sp.names[c], sc, seed), run: func() (RunResult, error) {
						return local(cfg, sp, c, sc, seed)
					}})
				}
			}
			for _, st := range cfg.Strategies {
				jobs = append(jobs, job{name: fmt.Sprintf("%s %s seed %d", st, sc, seed), run: func() (RunResult, error) {
					return fedRun(cfg, sp, st, sc, seed, agg, nil)
				}})
				if cfg.PlainReference {
					psp := plainSplits[seed][sc]
					jobs = append(jobs, job{name: fmt.Sprintf("plain %s %s seed %d", st, sc, seed), plain: true, run: func() (RunResult, error) {
						return fedRun(cfg, psp, st, sc, seed, plainSum{}, nil)
					}})
				}
			}
		}
		for _, sigma := range cfg.DPSigmas {
			sp := splits[seed][cfg.DPScaling]
			jobs = append(jobs, job{name: fmt.Sprintf("dp σ=%g %s %s seed %d", sigma, cfg.DPStrategy, cfg.DPScaling, seed), run: func() (RunResult, error) {
				return fedRun(cfg, sp, cfg.DPStrategy, cfg.DPScaling, seed, agg, &dpSetting{sigma: sigma})
			}})
		}
	}

	if cfg.Synthetic {
		synJobs, err := syntheticJobs(cfg, agg, rep)
		if err != nil {
			return nil, err
		}
		jobs = append(jobs, synJobs...)
	}

	results := make([]RunResult, len(jobs))
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
		next     int
		done     int
	)
	for range min(workers, len(jobs)) {
		wg.Go(func() {
			for {
				mu.Lock()
				if firstErr != nil || next == len(jobs) {
					mu.Unlock()
					return
				}
				i := next
				next++
				mu.Unlock()
				r, err := jobs[i].run()
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = fmt.Errorf("bench: %s: %w", jobs[i].name, err)
				}
				results[i] = r
				done++
				if err == nil && cfg.Progress != nil {
					fmt.Fprintf(cfg.Progress, "[%3d/%d] %-34s avg accuracy %.3f  (%.1fs)\n", done, len(jobs), jobs[i].name, r.AvgAccuracy, r.Seconds)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if firstErr != nil {
		return nil, firstErr
	}
	var runs, plain []RunResult
	for i, r := range results {
		if jobs[i].plain {
			plain = append(plain, r)
		} else {
			runs = append(runs, r)
		}
	}
	attachPlain(runs, plain)
	rep.finish(runs, agg, time.Since(start))
	return rep, nil
}

// splitSeed is the random_state that splits the centres for seed.
func (c Config) splitSeed(seed int64) uint32 {
	if c.Resplit {
		return uint32(seed)
	}
	return dataset.FLambySplitSeed
}

// splitName says in the report which split the runs used.
func (c Config) splitName() string {
	if c.Resplit {
		return "scikit-learn's stratified train_test_split with random_state = seed"
	}
	return fmt.Sprintf("FLamby's, scikit-learn's stratified train_test_split with random_state %d, the same for every seed", dataset.FLambySplitSeed)
}

// fedRun is one Fed-Heart-Disease federated run of a strategy with
// FLamby's hyperparameters.
func fedRun(cfg Config, sp split, strategy, scaling string, seed int64, agg Aggregator, dp *dpSetting) (RunResult, error) {
	h, err := FLambyHyper(strategy)
	if err != nil {
		return RunResult{}, err
	}
	return runFederated(cfg, sp, BenchmarkHeart, h, scaling, seed, agg, dp)
}

// runFederated trains with federated and evaluates the model into a
// RunResult of benchmark.
func runFederated(cfg Config, sp split, benchmark string, h Hyper, scaling string, seed int64, agg Aggregator, dp *dpSetting) (RunResult, error) {
	t0 := time.Now()
	params, fs, err := federated(cfg, sp, h, seed, agg, dp)
	if err != nil {
		return RunResult{}, err
	}
	res := RunResult{Benchmark: benchmark, Method: h.Server.Name, Scaling: scaling, Seed: seed,
		MaxUpdateNorm: fs.maxNorm, ClippedUpdates: fs.clipped, Updates: fs.updates, Clip: cfg.Clip}
	if dp != nil {
		res.Clip = cfg.DPClip
		s := dp.sigma
		res.Sigma = &s
	}
	return finishRun(res, params, sp, t0)
}

// finishRun evaluates params on every test split into res.
func finishRun(res RunResult, params []float64, sp split, t0 time.Time) (RunResult, error) {
	var err error
	res.Centres, res.AvgAccuracy, res.AvgAUROC, err = evaluate(params, sp)
	res.Params = params
	res.Seconds = time.Since(t0).Seconds()
	return res, err
}

// baselineTrain trains one model on rows alone: Adam, lr 0.001, batch 4.
func baselineTrain(spec models.Spec, X [][]float64, Y []float64, steps int, cfg Config, seed int64) ([]float64, error) {
	return models.Train(spec, spec.Init(seed), X, Y, models.TrainConfig{
		Steps: steps, BatchSize: cfg.BatchSize, LR: baselineLR, Optimizer: models.OptAdam, Seed: seed,
	})
}

// pooledRows puts every centre's training rows together.
func (sp split) pooledRows() (X [][]float64, Y []float64) {
	for _, t := range sp.train {
		X = append(X, t.X...)
		Y = append(Y, t.Y...)
	}
	return X, Y
}

func pooled(cfg Config, sp split, scaling string, seed int64) (RunResult, error) {
	t0 := time.Now()
	X, Y := sp.pooledRows()
	steps := len(sp.train) * cfg.Rounds * cfg.LocalSteps
	params, err := baselineTrain(sp.spec, X, Y, steps, cfg, mix(uint64(seed), 1<<40))
	if err != nil {
		return RunResult{}, err
	}
	res := RunResult{Benchmark: BenchmarkHeart, Method: MethodPooled, Scaling: scaling, Seed: seed, Steps: steps}
	return finishRun(res, params, sp, t0)
}

func local(cfg Config, sp split, c int, scaling string, seed int64) (RunResult, error) {
	t0 := time.Now()
	t := sp.train[c]
	steps := baselineEpochs * ((t.Len() + cfg.BatchSize - 1) / cfg.BatchSize)
	params, err := baselineTrain(sp.spec, t.X, t.Y, steps, cfg, mix(uint64(seed), 1<<41, uint64(c)))
	if err != nil {
		return RunResult{}, err
	}
	res := RunResult{Benchmark: BenchmarkHeart, Method: MethodLocal + sp.names[c], Scaling: scaling, Seed: seed, Steps: steps}
	return finishRun(res, params, sp, t0)
}
