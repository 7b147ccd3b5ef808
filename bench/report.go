package bench

import (
	"fmt"
	"math"
	"runtime"
	"slices"
	"strings"
	"time"

	"regionfl/he"
	"regionfl/models"
	"regionfl/privacy"
)

// Method names of the baselines; federated runs are named by strategy.
const (
	MethodPooled = "pooled"
	MethodLocal  = "local_" // followed by the centre's name
)

// FLambyAccuracy are FLamby's published average accuracies (per-centre
// scaling, mean of 5 seeds) for the methods that have one.
var FLambyAccuracy = map[string]float64{
	MethodPooled:              0.735,
	MethodLocal + "cleveland": 0.722,
	models.StrategyFedAvg:     0.685,
	models.StrategyFedProx:    0.685,
	models.StrategyFedAdam:    0.726,
	models.StrategyFedYogi:    0.731,
}

// CentreResult is a model's figures on one centre's test split.
type CentreResult struct {
	Centre   string  `json:"centre"`
	N        int     `json:"n"`
	Accuracy float64 `json:"accuracy"`
	AUROC    float64 `json:"auroc"`
}

// Benchmarks a run belongs to.
const (
	BenchmarkHeart     = "fed_heart_disease"
	BenchmarkSynthetic = "synthetic"
)

// RunResult is one experiment on one seed.
type RunResult struct {
	Benchmark      string         `json:"benchmark"`
	Method         string         `json:"method"`
	Scaling        string         `json:"scaling"`
	Seed           int64          `json:"seed"`
	Sigma          *float64       `json:"sigma,omitempty"` // DP runs only
	Centres        []CentreResult `json:"centres"`
	AvgAccuracy    float64        `json:"avg_accuracy"` // unweighted mean over the centres
	AvgAUROC       float64        `json:"avg_auroc"`
	Steps          int            `json:"steps,omitempty"` // baselines: training steps
	Clip           float64        `json:"clip,omitempty"`  // federated: L2 clip of a weighted update
	MaxUpdateNorm  float64        `json:"max_update_norm,omitempty"`
	ClippedUpdates int            `json:"clipped_updates"`
	Updates        int            `json:"updates,omitempty"`
	Params         []float64      `json:"params"`
	Seconds        float64        `json:"seconds"`
	// Plain is the same experiment with the plain sum (Config.PlainReference).
	Plain *PlainComparison `json:"plain,omitempty"`
}

// PlainComparison sets a run against the identical run with the plain sum.
type PlainComparison struct {
	AvgAccuracy  float64 `json:"avg_accuracy"`   // the plain run's
	AccuracyDiff float64 `json:"accuracy_diff"`  // encrypted − plain average accuracy
	MaxParamDiff float64 `json:"max_param_diff"` // max_j |w_enc − w_plain|
}

// Stat is a mean and sample standard deviation over seeds.
type Stat struct {
	Mean float64 `json:"mean"`
	Std  float64 `json:"std"`
}

func stat(v []float64) Stat {
	if len(v) == 0 {
		return Stat{}
	}
	var m float64
	for _, x := range v {
		m += x
	}
	m /= float64(len(v))
	if len(v) == 1 {
		return Stat{Mean: m}
	}
	var s float64
	for _, x := range v {
		s += (x - m) * (x - m)
	}
	return Stat{Mean: m, Std: math.Sqrt(s / float64(len(v)-1))}
}

func (s Stat) String() string { return fmt.Sprintf("%.3f ± %.3f", s.Mean, s.Std) }

// SummaryRow is one method under one scaling over all seeds.
type SummaryRow struct {
	Method         string          `json:"method"`
	Scaling        string          `json:"scaling"`
	Seeds          int             `json:"seeds"`
	Centres        map[string]Stat `json:"centres"` // accuracy per test centre
	AvgAccuracy    Stat            `json:"avg_accuracy"`
	AvgAUROC       Stat            `json:"avg_auroc"`
	FLamby         *float64        `json:"flamby,omitempty"` // published figure (site scaling only)
	MaxUpdateNorm  float64         `json:"max_update_norm,omitempty"`
	ClippedUpdates int             `json:"clipped_updates"`
	Updates        int             `json:"updates,omitempty"`
	// Against the plain sum on the same seeds (Config.PlainReference):
	// the largest |encrypted − plain| average accuracy and parameter.
	MaxPlainAccuracyDiff *float64 `json:"max_plain_accuracy_diff,omitempty"`
	MaxPlainParamDiff    *float64 `json:"max_plain_param_diff,omitempty"`
}

// DPRow is the DP strategy at one noise multiplier over all seeds.
type DPRow struct {
	Sigma          float64  `json:"sigma"`
	Epsilon        *float64 `json:"epsilon"` // null for σ = 0 (no guarantee)
	Delta          float64  `json:"delta"`
	Rounds         int      `json:"rounds"`
	Clip           float64  `json:"clip"`
	ShareStd       float64  `json:"share_std"`
	EncodingBound  float64  `json:"encoding_bound"`
	AvgAccuracy    Stat     `json:"avg_accuracy"`
	AvgAUROC       Stat     `json:"avg_auroc"`
	ClippedUpdates int      `json:"clipped_updates"`
	Updates        int      `json:"updates"`
}

// RegionStatsSeed is the precision of one seed's encrypted region scaling.
type RegionStatsSeed struct {
	Seed         int64   `json:"seed"`
	Rows         uint64  `json:"rows"`
	MaxSiteNorm  float64 `json:"max_site_norm"`
	MaxMeanErr   float64 `json:"max_mean_err_std_units"`
	MaxStdRelErr float64 `json:"max_std_rel_err"`
}

// RegionStatsReport is the precision of the encrypted region statistics
// against the plain pooled statistics.
type RegionStatsReport struct {
	Scale        float64           `json:"scale"`
	Bound        float64           `json:"bound"`
	MaxSiteNorm  float64           `json:"max_site_norm"`
	MaxMeanErr   float64           `json:"max_mean_err_std_units"`
	MaxStdRelErr float64           `json:"max_std_rel_err"`
	Seeds        []RegionStatsSeed `json:"seeds"`
}

// HEReport is the cost of the encrypted path, per aggregate (one round).
type HEReport struct {
	Params          string  `json:"params"`
	QuantBits       int     `json:"quant_bits"` // model updates; statistics travel at wide_bits
	WideBits        int     `json:"wide_bits"`
	Parties         int     `json:"parties"`
	Threshold       int     `json:"threshold"`
	Ceremonies      int     `json:"ceremonies"`
	CeremonyMs      float64 `json:"ceremony_ms"` // per ceremony
	Aggregates      int     `json:"aggregates"`
	UpdatesPerRound float64 `json:"updates_per_round"`
	EncryptMs       float64 `json:"encrypt_ms"` // all contributions of a round
	TransportMs     float64 `json:"transport_ms"`
	AggregateMs     float64 `json:"aggregate_ms"`
	DecryptSharesMs float64 `json:"decrypt_shares_ms"` // t shares
	CombineMs       float64 `json:"combine_ms"`
	TotalMs         float64 `json:"total_ms"`
	UpdateBytes     int     `json:"update_bytes"`
	ShareBytes      int     `json:"share_bytes"`
	TotalSeconds    float64 `json:"total_seconds"`
}

// Protocol records what was run.
type Protocol struct {
	Benchmark   string           `json:"benchmark"`
	Model       string           `json:"model"` // e.g. logreg, mlp:64,32
	Params      int              `json:"params"`
	Centres     []string         `json:"centres"`
	Split       string           `json:"split"`
	Rounds      int              `json:"rounds"`
	LocalSteps  int              `json:"local_steps"`
	BatchSize   int              `json:"batch_size"`
	SampleScale float64          `json:"sample_scale"`
	Clip        float64          `json:"clip"`
	Strategies  map[string]Hyper `json:"strategies"`
	Scalings    []string         `json:"scalings"`
	BaselineLR  float64          `json:"baseline_lr"`
	Threshold   float64          `json:"threshold"`
	DPStrategy  string           `json:"dp_strategy,omitempty"`
	DPScaling   string           `json:"dp_scaling,omitempty"`
}

// Report is the benchmark's result.
type Report struct {
	Protocol    Protocol           `json:"protocol"`
	Seeds       []int64            `json:"seeds"`
	Summary     []SummaryRow       `json:"summary"`
	DP          []DPRow            `json:"dp,omitempty"`
	RegionStats *RegionStatsReport `json:"region_stats,omitempty"`
	Synthetic   *SyntheticReport   `json:"synthetic,omitempty"`
	HE          *HEReport          `json:"he,omitempty"`
	Runs        []RunResult        `json:"runs"`
	Workers     int                `json:"workers"`
	GoMaxProcs  int                `json:"gomaxprocs"`
	WallSeconds float64            `json:"wall_seconds"`

	cfg Config
}

func newReport(cfg Config, workers int) *Report {
	r := &Report{cfg: cfg, Seeds: slices.Clone(cfg.Seeds), Workers: workers, GoMaxProcs: runtime.GOMAXPROCS(0)}
	r.Protocol = Protocol{
		Benchmark: "fed_heart_disease", Model: specName(cfg), Params: specParams(cfg), Rounds: cfg.Rounds, LocalSteps: cfg.LocalSteps, BatchSize: cfg.BatchSize,
		SampleScale: cfg.SampleScale, Clip: cfg.Clip, Strategies: map[string]Hyper{}, Scalings: slices.Clone(cfg.Scalings),
		BaselineLR: baselineLR, Threshold: 0.5, Split: cfg.splitName(),
	}
	for _, s := range cfg.Strategies {
		r.Protocol.Strategies[s], _ = FLambyHyper(s)
	}
	if len(cfg.DPSigmas) > 0 {
		r.Protocol.DPStrategy, r.Protocol.DPScaling = cfg.DPStrategy, cfg.DPScaling
		r.Protocol.Strategies[cfg.DPStrategy], _ = FLambyHyper(cfg.DPStrategy)
	}
	return r
}

func (r *Report) addRegionStats(seed int64, rs *regionStats) {
	if r.RegionStats == nil {
		r.RegionStats = &RegionStatsReport{Scale: r.cfg.StatsScale, Bound: r.cfg.StatsBound}
	}
	g := r.RegionStats
	g.Seeds = append(g.Seeds, RegionStatsSeed{Seed: seed, Rows: rs.encryptedCount, MaxSiteNorm: rs.maxSiteNorm,
		MaxMeanErr: rs.maxMeanErr, MaxStdRelErr: rs.maxStdRelErr})
	g.MaxSiteNorm = max(g.MaxSiteNorm, rs.maxSiteNorm)
	g.MaxMeanErr = max(g.MaxMeanErr, rs.maxMeanErr)
	g.MaxStdRelErr = max(g.MaxStdRelErr, rs.maxStdRelErr)
}

// Summarize groups runs by (method, scaling) in a stable order: pooled,
// local per centre, then strategies, each under every scaling.
func summarize(runs []RunResult, strategies, scalings []string) []SummaryRow {
	var methods []string
	seen := map[string]bool{}
	add := func(m string) {
		if !seen[m] {
			seen[m] = true
			methods = append(methods, m)
		}
	}
	add(MethodPooled)
	for _, r := range runs {
		if strings.HasPrefix(r.Method, MethodLocal) && r.Sigma == nil {
			add(r.Method)
		}
	}
	for _, s := range strategies {
		add(s)
	}
	var rows []SummaryRow
	for _, m := range methods {
		for _, sc := range scalings {
			var sel []RunResult
			for _, r := range runs {
				if r.Method == m && r.Scaling == sc && r.Sigma == nil {
					sel = append(sel, r)
				}
			}
			if len(sel) == 0 {
				continue
			}
			row := summaryOf(sel)
			row.Method, row.Scaling = m, sc
			if f, ok := FLambyAccuracy[m]; ok && sc == ScalingSite {
				row.FLamby = &f
			}
			rows = append(rows, row)
		}
	}
	return rows
}

func summaryOf(sel []RunResult) SummaryRow {
	row := SummaryRow{Seeds: len(sel), Centres: map[string]Stat{}}
	var acc, auc []float64
	for c := range sel[0].Centres {
		var v []float64
		for _, r := range sel {
			v = append(v, r.Centres[c].Accuracy)
		}
		row.Centres[sel[0].Centres[c].Centre] = stat(v)
	}
	for _, r := range sel {
		acc = append(acc, r.AvgAccuracy)
		auc = append(auc, r.AvgAUROC)
		row.MaxUpdateNorm = max(row.MaxUpdateNorm, r.MaxUpdateNorm)
		row.ClippedUpdates += r.ClippedUpdates
		row.Updates += r.Updates
		if c := r.Plain; c != nil {
			if row.MaxPlainAccuracyDiff == nil {
				row.MaxPlainAccuracyDiff, row.MaxPlainParamDiff = new(float64), new(float64)
			}
			*row.MaxPlainAccuracyDiff = max(*row.MaxPlainAccuracyDiff, math.Abs(c.AccuracyDiff))
			*row.MaxPlainParamDiff = max(*row.MaxPlainParamDiff, c.MaxParamDiff)
		}
	}
	row.AvgAccuracy, row.AvgAUROC = stat(acc), stat(auc)
	return row
}

func (r *Report) finish(runs []RunResult, agg Aggregator, wall time.Duration) {
	cfg := r.cfg
	r.Runs = runs
	var heart, synthetic []RunResult
	for _, x := range runs {
		if x.Benchmark == BenchmarkSynthetic {
			synthetic = append(synthetic, x)
		} else {
			heart = append(heart, x)
		}
	}
	if len(heart) > 0 {
		for _, c := range heart[0].Centres {
			r.Protocol.Centres = append(r.Protocol.Centres, c.Centre)
		}
	}
	r.Summary = summarize(heart, cfg.Strategies, cfg.Scalings)
	if r.Protocol.Model != models.KindLogReg {
		for i := range r.Summary {
			r.Summary[i].FLamby = nil // FLamby's figures are of its logistic regression
		}
	}
	if r.Synthetic != nil {
		r.Synthetic.finish(synthetic, cfg.Scalings)
	}
	for _, sigma := range cfg.DPSigmas {
		var sel []RunResult
		for _, x := range runs {
			if x.Sigma != nil && *x.Sigma == sigma {
				sel = append(sel, x)
			}
		}
		if len(sel) == 0 {
			continue
		}
		s := summaryOf(sel)
		row := DPRow{Sigma: sigma, Delta: cfg.DPDelta, Rounds: cfg.Rounds, Clip: cfg.DPClip,
			AvgAccuracy: s.AvgAccuracy, AvgAUROC: s.AvgAUROC, ClippedUpdates: s.ClippedUpdates, Updates: s.Updates}
		row.ShareStd = privacy.ShareStd(sigma, cfg.DPClip, len(sel[0].Centres))
		spec, _ := cfg.spec() // validated by Run
		row.EncodingBound = privacy.EncodingBound(cfg.DPClip, row.ShareStd, spec.NumParams())
		if sigma > 0 {
			e := privacy.Accountant{NoiseMultiplier: sigma, Delta: cfg.DPDelta}.Epsilon(cfg.Rounds)
			row.Epsilon = &e
		}
		r.DP = append(r.DP, row)
	}
	if enc, ok := agg.(*Encrypted); ok {
		t := enc.Timing()
		ms := func(d time.Duration) float64 {
			if t.Aggregates == 0 {
				return 0
			}
			return float64(d.Microseconds()) / 1000 / float64(t.Aggregates)
		}
		p := he.RegionParams()
		h := &HEReport{Params: p.Name(), QuantBits: p.QuantBits(), WideBits: p.WideBits(), Parties: t.Parties, Threshold: t.Threshold,
			Ceremonies: t.Ceremonies, Aggregates: t.Aggregates,
			EncryptMs: ms(t.Encrypt), TransportMs: ms(t.Transport), AggregateMs: ms(t.Aggregate),
			DecryptSharesMs: ms(t.DecryptShares), CombineMs: ms(t.Combine),
			UpdateBytes: t.UpdateBytes, ShareBytes: t.ShareBytes}
		if t.Ceremonies > 0 {
			h.CeremonyMs = float64(t.Ceremony.Microseconds()) / 1000 / float64(t.Ceremonies)
		}
		if t.Aggregates > 0 {
			h.UpdatesPerRound = float64(t.Updates) / float64(t.Aggregates)
		}
		h.TotalMs = h.EncryptMs + h.TransportMs + h.AggregateMs + h.DecryptSharesMs + h.CombineMs
		total := t.Ceremony + t.Encrypt + t.Transport + t.Aggregate + t.DecryptShares + t.Combine
		h.TotalSeconds = total.Seconds()
		r.HE = h
	}
	r.WallSeconds = wall.Seconds()
}

// attachPlain sets on every heart run but the DP ones the identical run
// of plain (Config.PlainReference), matched by method, scaling and seed.
func attachPlain(runs, plain []RunResult) {
	type key struct {
		method, scaling string
		seed            int64
	}
	byKey := map[key]RunResult{}
	for _, p := range plain {
		byKey[key{p.Method, p.Scaling, p.Seed}] = p
	}
	for i := range runs {
		x := &runs[i]
		p, ok := byKey[key{x.Method, x.Scaling, x.Seed}]
		if !ok || x.Benchmark != BenchmarkHeart || x.Sigma != nil {
			continue
		}
		c := &PlainComparison{AvgAccuracy: p.AvgAccuracy, AccuracyDiff: x.AvgAccuracy - p.AvgAccuracy}
		for j := range x.Params {
			c.MaxParamDiff = max(c.MaxParamDiff, math.Abs(x.Params[j]-p.Params[j]))
		}
		x.Plain = c
	}
}

// Markdown renders the report.
func (r *Report) Markdown() string {
	var b strings.Builder
	cfg := r.cfg
	p := r.Protocol
	agg := "plain sum (no encryption)"
	if r.HE != nil {
		agg = fmt.Sprintf("threshold RLWE %d-of-%d (%s): every round encrypted (updates quantized to %d bits with stochastic rounding, statistics to %d), summed, decrypted by %d decryption shares",
			r.HE.Threshold, r.HE.Parties, r.HE.Params, r.HE.QuantBits, r.HE.WideBits, r.HE.Threshold)
	}
	fmt.Fprintf(&b, "## Fed-Heart-Disease (FLamby protocol), %s\n\n", map[bool]string{true: "encrypted aggregation", false: "plain aggregation"}[r.HE != nil])
	fmt.Fprintf(&b, "Model %s (%d parameters). ", p.Model, p.Params)
	fmt.Fprintf(&b, "%d centres (%s), %d rounds × %d local SGD steps, batch %d; aggregation: %s. "+
		"Per-centre 66/34 train/test split: %s. Seeds %s (each seed: the training order%s). "+
		"Accuracy at 0.5 on each centre's test split, mean ± sample std over seeds; *average* is the unweighted mean over the centres (FLamby's metric); "+
		"AUROC is the mean of the per-centre AUROCs. Updates are (n_i/%g)·Δ_i clipped to L2 %g; *clipped* counts updates the clip shortened.\n\n",
		len(p.Centres), strings.Join(p.Centres, ", "), p.Rounds, p.LocalSteps, p.BatchSize, agg, p.Split, seedList(r.Seeds),
		map[bool]string{true: " and the split", false: ""}[cfg.Resplit], p.SampleScale, p.Clip)

	fmt.Fprintf(&b, "| method | scaling |")
	for _, c := range p.Centres {
		fmt.Fprintf(&b, " %s |", c)
	}
	fmt.Fprintf(&b, " **average** | FLamby | AUROC | clipped |\n|---|---|")
	for range p.Centres {
		b.WriteString("---|")
	}
	b.WriteString("---|---|---|---|\n")
	for _, row := range r.Summary {
		fmt.Fprintf(&b, "| %s | %s |", methodLabel(row.Method), row.Scaling)
		for _, c := range p.Centres {
			fmt.Fprintf(&b, " %s |", row.Centres[c])
		}
		fl := "—"
		if row.FLamby != nil {
			fl = fmt.Sprintf("%.3f", *row.FLamby)
		}
		clipped := "—"
		if row.Updates > 0 {
			clipped = fmt.Sprintf("%d/%d", row.ClippedUpdates, row.Updates)
		}
		fmt.Fprintf(&b, " **%s** | %s | %s | %s |\n", row.AvgAccuracy, fl, row.AvgAUROC, clipped)
	}
	b.WriteString("\nFLamby's figures are for per-centre (site) scaling; with pooled statistics FLamby's earlier results were about 0.79–0.81. ")
	fmt.Fprintf(&b, "Pooled: Adam lr %g, %d steps on all centres' training rows. Local: Adam lr %g, %d epochs of one centre's rows, evaluated on every centre's test split.\n", baselineLR, len(p.Centres)*p.Rounds*p.LocalSteps, baselineLR, baselineEpochs)
	b.WriteString("\nHyperparameters (FLamby's config_heart_disease.json): ")
	var hs []string
	for _, s := range cfg.Strategies {
		h := p.Strategies[s]
		d := fmt.Sprintf("%s client lr %g", s, h.ClientLR)
		if h.ProxMu > 0 {
			d += fmt.Sprintf(", μ %g", h.ProxMu)
		}
		if h.Server.ServerLR != 1 || h.Server.Beta1 != 0 {
			d += fmt.Sprintf(", server lr %g (β1 %g, β2 %g, τ %g)", h.Server.ServerLR, h.Server.Beta1, h.Server.Beta2, h.Server.Tau)
		}
		hs = append(hs, d)
	}
	b.WriteString(strings.Join(hs, "; ") + ".\n")
	r.perSeedMarkdown(&b)
	r.plainMarkdown(&b)

	if g := r.RegionStats; g != nil {
		b.WriteString("\n### Region statistics under encryption\n\n")
		fmt.Fprintf(&b, "Each centre encrypts Stats.Vector(%g, %g) of its training rows (Σx, Σx² per feature, each as an integer part, exact after rounding, and an amplified fraction; its row count in the count digits) with the he clip set to the bound %g on one centre's vector norm "+
			"(a centre above it is refused, never clipped), exactly as a node does in a job's statistics round. Largest centre norm: %.4g. "+
			"Error of the decrypted region scaling against the plain pooled statistics, worst feature over %d seed(s):\n\n",
			g.Scale, g.Bound, g.Bound, g.MaxSiteNorm, len(g.Seeds))
		b.WriteString("| seed | rows | max \\|Δmean\\|/std | max \\|Δstd\\|/std |\n|---|---|---|---|\n")
		for _, s := range g.Seeds {
			fmt.Fprintf(&b, "| %d | %d | %.2e | %.2e |\n", s.Seed, s.Rows, s.MaxMeanErr, s.MaxStdRelErr)
		}
		fmt.Fprintf(&b, "| **max** | | **%.2e** | **%.2e** |\n", g.MaxMeanErr, g.MaxStdRelErr)
	}

	if h := r.HE; h != nil {
		b.WriteString("\n### Cost of the encrypted path\n\n")
		fmt.Fprintf(&b, "Mean per aggregate (one round: %.0f contributions of %d values; %d aggregates in all, region statistics included), measured with %d experiment(s) running in parallel:\n\n",
			h.UpdatesPerRound, p.Params, h.Aggregates, r.Workers)
		b.WriteString("| encrypt (all centres) | serialize + parse | aggregate | decryption shares (t) | combine | **total per round** |\n|---|---|---|---|---|---|\n")
		fmt.Fprintf(&b, "| %.2f ms | %.2f ms | %.2f ms | %.2f ms | %.2f ms | **%.2f ms** |\n\n", h.EncryptMs, h.TransportMs, h.AggregateMs, h.DecryptSharesMs, h.CombineMs, h.TotalMs)
		fmt.Fprintf(&b, "Encrypted update %d bytes, decryption share %d bytes. Key ceremony (%d-of-%d, HPKE-sealed Shamir shares): %.0f ms, %d run. Encrypted path in all: %.1f s of %.1f s wall time.\n",
			h.UpdateBytes, h.ShareBytes, h.Threshold, h.Parties, h.CeremonyMs, h.Ceremonies, h.TotalSeconds, r.WallSeconds)
	}

	if r.Synthetic != nil {
		r.Synthetic.markdown(&b)
	}

	if len(r.DP) > 0 {
		b.WriteString("\n### Differential privacy (site-level, distributed Gaussian noise)\n\n")
		fmt.Fprintf(&b, "%s, %s scaling; each centre clips its weighted update to L2 %g, adds N(0, (σ·C)²/%d) per value (privacy.ShareStd, %d contributors) and encrypts with privacy.EncodingBound; "+
			"ε from privacy.Accountant after %d rounds. Noise comes from the OS CSPRNG, so these runs are not reproducible bit for bit.\n\n",
			p.DPStrategy, p.DPScaling, cfg.DPClip, len(p.Centres), len(p.Centres), cfg.Rounds)
		fmt.Fprintf(&b, "| σ | ε (δ=%g) | average accuracy | AUROC | clipped |\n|---|---|---|---|---|\n", cfg.DPDelta)
		for _, d := range r.DP {
			eps := "∞ (no noise)"
			if d.Epsilon != nil {
				eps = fmt.Sprintf("%.2f", *d.Epsilon)
			}
			fmt.Fprintf(&b, "| %g | %s | %s | %s | %d/%d |\n", d.Sigma, eps, d.AvgAccuracy, d.AvgAUROC, d.ClippedUpdates, d.Updates)
		}
	}
	fmt.Fprintf(&b, "\nWall time %.1f s (%d workers, GOMAXPROCS %d).\n", r.WallSeconds, r.Workers, r.GoMaxProcs)
	return b.String()
}

func methodLabel(m string) string {
	if c, ok := strings.CutPrefix(m, MethodLocal); ok {
		return "local (" + c + ")"
	}
	return m
}

func seedList(s []int64) string {
	parts := make([]string, len(s))
	for i, v := range s {
		parts[i] = fmt.Sprint(v)
	}
	return strings.Join(parts, ", ")
}

// plainMarkdown lists, per federated strategy, scaling and seed, how far
// the encrypted run's average accuracy is from the identical run with the
// plain sum, and the largest parameter difference.
func (r *Report) plainMarkdown(b *strings.Builder) {
	rows := slices.DeleteFunc(slices.Clone(r.Summary), func(row SummaryRow) bool { return row.MaxPlainAccuracyDiff == nil })
	if len(rows) == 0 {
		return
	}
	b.WriteString("\nEncrypted minus plain aggregation, the identical runs on the same seeds (the plain runs sum in the clear, region statistics included): average accuracy per seed, and the largest parameter difference over the seeds:\n\n| method | scaling |")
	for _, seed := range r.Seeds {
		fmt.Fprintf(b, " seed %d |", seed)
	}
	b.WriteString(" max \\|Δ accuracy\\| | max \\|Δ parameter\\| |\n|---|---|" + strings.Repeat("---|", len(r.Seeds)+2) + "\n")
	for _, row := range rows {
		fmt.Fprintf(b, "| %s | %s |", row.Method, row.Scaling)
		for _, seed := range r.Seeds {
			cell := " — |"
			for _, x := range r.Runs {
				if x.Plain != nil && x.Method == row.Method && x.Scaling == row.Scaling && x.Seed == seed {
					cell = fmt.Sprintf(" %+.4f |", x.Plain.AccuracyDiff)
				}
			}
			b.WriteString(cell)
		}
		fmt.Fprintf(b, " %.4f | %.2g |\n", *row.MaxPlainAccuracyDiff, *row.MaxPlainParamDiff)
	}
}

// perSeedMarkdown lists every federated strategy's average accuracy per
// seed next to its target, so a mean is never the only figure.
func (r *Report) perSeedMarkdown(b *strings.Builder) {
	if len(r.cfg.Strategies) == 0 {
		return
	}
	b.WriteString("\nAverage accuracy per seed (encrypted runs exactly as in the table):\n\n| method | scaling |")
	for _, seed := range r.Seeds {
		fmt.Fprintf(b, " seed %d |", seed)
	}
	b.WriteString(" mean |\n|---|---|" + strings.Repeat("---|", len(r.Seeds)+1) + "\n")
	for _, st := range r.cfg.Strategies {
		for _, sc := range r.cfg.Scalings {
			acc := map[int64]float64{}
			var all []float64
			for _, x := range r.Runs {
				if x.Benchmark == BenchmarkHeart && x.Method == st && x.Scaling == sc && x.Sigma == nil {
					acc[x.Seed] = x.AvgAccuracy
					all = append(all, x.AvgAccuracy)
				}
			}
			if len(all) == 0 {
				continue
			}
			fmt.Fprintf(b, "| %s | %s |", st, sc)
			for _, seed := range r.Seeds {
				fmt.Fprintf(b, " %.3f |", acc[seed])
			}
			fmt.Fprintf(b, " %.3f |\n", stat(all).Mean)
		}
	}
}

func specName(cfg Config) string {
	s, _ := cfg.spec()
	return s.String()
}

func specParams(cfg Config) int {
	s, _ := cfg.spec()
	return s.NumParams()
}
