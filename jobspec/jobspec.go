// Package jobspec is the training-job contract shared by researchers, the
// coordinator and hospital nodes: the YAML job file, its defaults and
// validation, and the binding that ties an encrypted update to one round of
// one job on one model version.
package jobspec

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"os"
	"time"

	"google.golang.org/protobuf/proto"
	"gopkg.in/yaml.v3"

	"regionfl/he"
	"regionfl/models"
	"regionfl/privacy"
	pb "regionfl/proto/regionfl/v1"
)

// ErrInvalid marks a job that cannot run; the message names the field.
var ErrInvalid = errors.New("invalid job")

// File is the YAML job file a researcher writes.
type File struct {
	Name         string                `yaml:"name"`
	Dataset      string                `yaml:"dataset"`
	Model        models.Spec           `yaml:"model"`
	Rounds       uint32                `yaml:"rounds"`
	LocalSteps   uint32                `yaml:"local_steps"`
	BatchSize    uint32                `yaml:"batch_size"`
	LearningRate float64               `yaml:"learning_rate"`
	Optimizer    string                `yaml:"optimizer"`
	MinHospitals uint32                `yaml:"min_hospitals"`
	Deadline     string                `yaml:"round_deadline"` // Go duration, e.g. "30s"
	Purpose      string                `yaml:"purpose"`
	LegalBasis   string                `yaml:"legal_basis"`
	ClipNorm     float64               `yaml:"clip_norm"`
	SampleScale  uint64                `yaml:"sample_scale"`
	ProxMu       float64               `yaml:"prox_mu"`
	Seed         uint64                `yaml:"seed"`
	Strategy     models.StrategyConfig `yaml:"strategy"`
	// Scaling is region (default), site or reference; reference takes
	// FeatureMean and FeatureStd, e.g. clinical reference ranges.
	Scaling          string         `yaml:"scaling"`
	FeatureMean      []float64      `yaml:"feature_mean"`
	FeatureStd       []float64      `yaml:"feature_std"`
	DP               DP             `yaml:"dp"`
	AlertThreshold   AlertThreshold `yaml:"alert_threshold"`
	ShareSiteMetrics bool           `yaml:"share_site_metrics"`
	// Missing is what sites may do with incomplete rows: error (default:
	// a site that dropped any declines the job) or drop.
	Missing string `yaml:"missing"`
}

// AlertThreshold is a job file's alert_threshold: a probability (the
// alarm fires at or above it), or {sensitivity: x}, which reports the
// figures at the threshold with the fewest alarms that reaches
// sensitivity x on the region's test rows.
type AlertThreshold struct {
	Probability float64
	Sensitivity float64
}

// UnmarshalYAML reads either form.
func (a *AlertThreshold) UnmarshalYAML(n *yaml.Node) error {
	switch n.Kind {
	case yaml.ScalarNode:
		return n.Decode(&a.Probability)
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			if k := n.Content[i].Value; k != "sensitivity" {
				return fmt.Errorf("alert_threshold: unknown key %q (a probability, or {sensitivity: 0.8})", k)
			}
			if err := n.Content[i+1].Decode(&a.Sensitivity); err != nil {
				return fmt.Errorf("alert_threshold: sensitivity: %w", err)
			}
		}
		if !(a.Sensitivity > 0 && a.Sensitivity <= 1) {
			return fmt.Errorf("alert_threshold: sensitivity %v is not in (0, 1]", a.Sensitivity)
		}
		return nil
	}
	return errors.New("alert_threshold: a probability, or {sensitivity: 0.8}")
}

// DP is the job's per-site differential privacy.
type DP struct {
	NoiseMultiplier float64 `yaml:"noise_multiplier"`
	Delta           float64 `yaml:"delta"`
}

// Scaling modes.
const (
	ScalingRegion    = "region"
	ScalingSite      = "site"
	ScalingReference = "reference"
)

// Load reads and validates a job file.
func Load(path string) (*pb.JobSpec, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(b)
}

// Parse decodes a YAML job file; unknown keys are an error so a typo does
// not silently fall back to a default.
func Parse(b []byte) (*pb.JobSpec, error) {
	var f File
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	spec := &pb.JobSpec{
		Name:         f.Name,
		Dataset:      f.Dataset,
		Model:        ToProto(f.Model),
		Rounds:       f.Rounds,
		LocalSteps:   f.LocalSteps,
		BatchSize:    f.BatchSize,
		LearningRate: f.LearningRate,
		Optimizer:    f.Optimizer,
		MinHospitals: f.MinHospitals,
		Purpose:      f.Purpose,
		LegalBasis:   f.LegalBasis,
		ClipNorm:     f.ClipNorm,
		SampleScale:  f.SampleScale,
		ProxMu:       f.ProxMu,
		Seed:         f.Seed,
		Strategy: &pb.Strategy{
			Name: f.Strategy.Name, ServerLr: f.Strategy.ServerLR,
			Beta1: f.Strategy.Beta1, Beta2: f.Strategy.Beta2, Tau: f.Strategy.Tau,
		},
		Scaling:           f.Scaling,
		FeatureMean:       f.FeatureMean,
		FeatureStd:        f.FeatureStd,
		DpNoiseMultiplier: f.DP.NoiseMultiplier,
		DpDelta:           f.DP.Delta,
		AlertThreshold:    f.AlertThreshold.Probability,
		AlertSensitivity:  f.AlertThreshold.Sensitivity,
		ShareSiteMetrics:  f.ShareSiteMetrics,
		Missing:           f.Missing,
	}
	if f.Deadline != "" {
		d, err := parseDuration(f.Deadline)
		if err != nil {
			return nil, fmt.Errorf("%w: round_deadline: %v", ErrInvalid, err)
		}
		if d == 0 {
			return nil, fmt.Errorf("%w: round_deadline: %q is no time; leave the key out for the default (60s)", ErrInvalid, f.Deadline)
		}
		spec.RoundDeadlineMs = d
	}
	if err := refuseExplicitZeros(b); err != nil {
		return nil, err
	}
	Defaults(spec)
	if err := Validate(spec); err != nil {
		return nil, err
	}
	return spec, nil
}

// defaulted are the job-file keys Defaults fills when they are left out,
// and the field each fills (its default is read off Defaults itself).
var defaulted = []struct {
	key   string
	field func(*pb.JobSpec) any
}{
	{"rounds", func(s *pb.JobSpec) any { return s.Rounds }},
	{"local_steps", func(s *pb.JobSpec) any { return s.LocalSteps }},
	{"batch_size", func(s *pb.JobSpec) any { return s.BatchSize }},
	{"learning_rate", func(s *pb.JobSpec) any { return s.LearningRate }},
	{"min_hospitals", func(s *pb.JobSpec) any { return s.MinHospitals }},
	{"clip_norm", func(s *pb.JobSpec) any { return s.ClipNorm }},
	{"sample_scale", func(s *pb.JobSpec) any { return s.SampleScale }},
	{"optimizer", func(s *pb.JobSpec) any { return s.Optimizer }},
}

// refuseExplicitZeros refuses a key with a default written as 0 (or
// empty): a default applies only to a key left out, never silently in
// place of a value someone wrote.
func refuseExplicitZeros(b []byte) error {
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	defaults := &pb.JobSpec{}
	Defaults(defaults)
	for _, d := range defaulted {
		v, ok := raw[d.key]
		if !ok {
			continue
		}
		zero := v == nil
		switch x := v.(type) {
		case int:
			zero = x == 0
		case uint64:
			zero = x == 0
		case float64:
			zero = x == 0
		case string:
			zero = x == ""
		}
		if zero {
			return fmt.Errorf("%w: %s: %v is not a value; leave the key out for the default (%v)", ErrInvalid, d.key, v, d.field(defaults))
		}
	}
	return nil
}

// Warnings are what a researcher should read before a valid job runs:
// the privacy each site spends, and DP noise so large for the model's
// size and K that the model cannot learn.
func Warnings(s *pb.JobSpec) []string {
	sigma := s.GetDpNoiseMultiplier()
	if sigma == 0 {
		return nil
	}
	acc := privacy.Accountant{NoiseMultiplier: sigma, Delta: s.GetDpDelta()}
	eps := acc.Epsilon(int(s.GetRounds()))
	out := []string{fmt.Sprintf("dp: each site that takes part in every round spends ε = %.2f at δ = %g over %d rounds", eps, s.GetDpDelta(), s.GetRounds())}
	// The K sites' noise shares sum to std σ·C per coordinate; K clipped
	// updates sum to a norm of at most K·C, so at best K·C/√d per
	// coordinate. Past a ratio of 1 the noise drowns the whole signal.
	d := float64(FromProto(s.GetModel()).NumParams())
	k := float64(max(s.GetMinHospitals(), 1))
	if ratio := sigma * math.Sqrt(d) / k; ratio > 1 {
		out = append(out, fmt.Sprintf("dp: with noise_multiplier %g and min_hospitals %d, the noise in each round's sum is %.1f× the largest possible signal per parameter of this %d-parameter model: it will barely learn; raise min_hospitals or lower noise_multiplier",
			sigma, s.GetMinHospitals(), ratio, int(d)))
	}
	return out
}

// Defaults fills the fields a job file may leave out.
func Defaults(s *pb.JobSpec) {
	if s.Rounds == 0 {
		s.Rounds = 10
	}
	if s.LocalSteps == 0 {
		s.LocalSteps = 50
	}
	if s.BatchSize == 0 {
		s.BatchSize = 32
	}
	if s.LearningRate == 0 {
		s.LearningRate = 0.1
	}
	if s.Optimizer == "" {
		s.Optimizer = "sgd"
	}
	if s.MinHospitals == 0 {
		s.MinHospitals = 2
	}
	if s.RoundDeadlineMs == 0 {
		s.RoundDeadlineMs = 60_000
	}
	if s.ClipNorm == 0 {
		s.ClipNorm = 10
	}
	if s.SampleScale == 0 {
		s.SampleScale = 1000
	}
	if s.Strategy == nil {
		s.Strategy = &pb.Strategy{}
	}
	if s.Strategy.Name == "" {
		s.Strategy.Name = "fedavg"
	}
	if s.Scaling == "" {
		s.Scaling = ScalingRegion
		if len(s.FeatureMean) > 0 {
			s.Scaling = ScalingReference
		}
	}
	if s.DpNoiseMultiplier > 0 && s.DpDelta == 0 {
		s.DpDelta = 1e-5
	}
	if s.AlertThreshold == 0 {
		s.AlertThreshold = 0.5
	}
	if s.Missing == "" {
		s.Missing = MissingError
	}
}

// MaxHospitals bounds min_hospitals: no region is larger.
const MaxHospitals = 1024

// MaxSampleScale bounds sample_scale, the divisor of every site's row
// count: above it the weights underflow the encoding's precision, and the
// rows a site evaluates on (MaxMetricRows) would overflow.
const MaxSampleScale = 1_000_000

// Validate checks a job spec; the error names the offending field. Nodes
// run it too (ValidateOffered), on what the coordinator offers: a job
// outside these ranges is declined, never run.
func Validate(s *pb.JobSpec) error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrInvalid, field, fmt.Sprintf(format, args...))
	}
	if s.Model == nil {
		return bad("model", "missing")
	}
	if err := FromProto(s.Model).Validate(); err != nil {
		return bad("model", "%v", err)
	}
	switch {
	case s.Purpose == "":
		return bad("purpose", "missing: say what the model is for")
	case s.Rounds > 10_000:
		return bad("rounds", "%d is more than 10000", s.Rounds)
	case s.LocalSteps > 100_000:
		return bad("local_steps", "%d is more than 100000", s.LocalSteps)
	case s.BatchSize > 65_536:
		return bad("batch_size", "%d is more than 65536", s.BatchSize)
	case !(s.LearningRate > 0 && s.LearningRate <= 10):
		return bad("learning_rate", "%v is not in (0, 10]", s.LearningRate)
	case s.Optimizer != "sgd" && s.Optimizer != "adam":
		return bad("optimizer", "%q is not sgd or adam", s.Optimizer)
	case s.MinHospitals < 2 || s.MinHospitals > MaxHospitals:
		// An aggregate of one contributor is that hospital's update.
		return bad("min_hospitals", "%d is not between 2 and %d", s.MinHospitals, MaxHospitals)
	case s.SampleScale < 1 || s.SampleScale > MaxSampleScale:
		return bad("sample_scale", "%d is not between 1 and %d", s.SampleScale, MaxSampleScale)
	case s.RoundDeadlineMs < 100 || s.RoundDeadlineMs > 24*3600*1000:
		return bad("round_deadline", "%dms is not between 100ms and 24h", s.RoundDeadlineMs)
	case !(s.ClipNorm > 0) || math.IsInf(s.ClipNorm, 0):
		return bad("clip_norm", "%v is not a positive number", s.ClipNorm)
	case s.ProxMu < 0 || math.IsNaN(s.ProxMu):
		return bad("prox_mu", "%v is negative", s.ProxMu)
	}
	if _, err := models.NewServerOptimizer(Strategy(s), 1); err != nil {
		return bad("strategy", "%v", err)
	}
	inputs := int(s.Model.Inputs)
	switch s.Scaling {
	case ScalingRegion, ScalingSite:
		if len(s.FeatureMean)+len(s.FeatureStd) > 0 {
			return bad("feature_mean", "given with scaling %s; use scaling: reference", s.Scaling)
		}
	case ScalingReference:
		if err := CheckScaling(s.FeatureMean, s.FeatureStd, inputs); err != nil {
			return bad("feature_mean", "reference scaling: %v", err)
		}
	default:
		return bad("scaling", "%q is not region, site or reference", s.Scaling)
	}
	if s.DpNoiseMultiplier != 0 {
		acc := privacy.Accountant{NoiseMultiplier: s.DpNoiseMultiplier, Delta: s.DpDelta}
		if err := acc.Validate(); err != nil {
			return bad("dp", "%v", err)
		}
	}
	if !(s.AlertThreshold > 0 && s.AlertThreshold < 1) {
		return bad("alert_threshold", "%v is not in (0, 1)", s.AlertThreshold)
	}
	if !(s.AlertSensitivity >= 0 && s.AlertSensitivity <= 1) {
		return bad("alert_threshold", "sensitivity %v is not in (0, 1]", s.AlertSensitivity)
	}
	if s.Missing != MissingError && s.Missing != MissingDrop {
		return bad("missing", "%q is not %s or %s", s.Missing, MissingError, MissingDrop)
	}
	return nil
}

// ValidateOffered is Validate for a job as the coordinator serves it to
// nodes: with region scaling, the region's statistics are committed into
// feature_mean and feature_std once decrypted, and are checked as a
// reference scaling would be.
func ValidateOffered(s *pb.JobSpec) error {
	if s.GetScaling() != ScalingRegion || len(s.FeatureMean)+len(s.FeatureStd) == 0 {
		return Validate(s)
	}
	if s.Model == nil {
		return fmt.Errorf("%w: model: missing", ErrInvalid)
	}
	if err := CheckScaling(s.FeatureMean, s.FeatureStd, int(s.Model.Inputs)); err != nil {
		return fmt.Errorf("%w: feature_mean: region scaling: %v", ErrInvalid, err)
	}
	c := proto.Clone(s).(*pb.JobSpec)
	c.FeatureMean, c.FeatureStd = nil, nil
	return Validate(c)
}

// Strategy converts the job's strategy for models.NewServerOptimizer.
func Strategy(s *pb.JobSpec) models.StrategyConfig {
	st := s.GetStrategy()
	return models.StrategyConfig{Name: st.GetName(), ServerLR: st.GetServerLr(), Beta1: st.GetBeta1(), Beta2: st.GetBeta2(), Tau: st.GetTau()}
}

// TrainConfig is what a node uses for local training in a round.
func TrainConfig(s *pb.JobSpec, hospital string, round uint32) models.TrainConfig {
	h := sha256.Sum256([]byte(hospital))
	return models.TrainConfig{
		Steps:     int(s.LocalSteps),
		BatchSize: int(s.BatchSize),
		LR:        s.LearningRate,
		Optimizer: s.Optimizer,
		ProxMu:    s.ProxMu,
		Seed:      int64(s.Seed) ^ int64(binary.BigEndian.Uint64(h[:8])) ^ int64(round)<<32,
	}
}

// ToProto converts a model spec.
func ToProto(m models.Spec) *pb.ModelSpec {
	hidden := make([]uint32, len(m.Hidden))
	for i, h := range m.Hidden {
		hidden[i] = uint32(h)
	}
	return &pb.ModelSpec{Kind: m.Kind, Inputs: uint32(m.Inputs), Hidden: hidden}
}

// MetricsToProto converts a model version's clinical figures.
func MetricsToProto(m models.Metrics, modelVersion uint32) *pb.ClinicalMetrics {
	out := &pb.ClinicalMetrics{N: uint64(m.N), Accuracy: m.Accuracy, Auroc: m.AUROC, Sensitivity: m.Sensitivity,
		Specificity: m.Specificity, AlarmsPer_100: m.AlarmsPer100, Brier: m.Brier, Loss: m.Loss, ModelVersion: modelVersion, Ppv: m.PPV}
	for _, op := range m.OperatingPoints {
		out.OperatingPoints = append(out.OperatingPoints, &pb.OperatingPoint{Threshold: op.Threshold, Sensitivity: op.Sensitivity,
			Specificity: op.Specificity, Ppv: op.PPV, AlarmsPer_100: op.AlarmsPer100})
	}
	return out
}

// OperatingPointsFromProto converts the alarm-burden table back.
func OperatingPointsFromProto(m *pb.ClinicalMetrics) []models.OperatingPoint {
	var out []models.OperatingPoint
	for _, op := range m.GetOperatingPoints() {
		out = append(out, models.OperatingPoint{Threshold: op.Threshold, Sensitivity: op.Sensitivity,
			Specificity: op.Specificity, PPV: op.Ppv, AlarmsPer100: op.AlarmsPer_100})
	}
	return out
}

// ReportedPoint is the operating point a job's figures are reported at:
// the one with the fewest alarms that reaches the job's target
// sensitivity (alert_sensitivity), else the alert threshold's. ok is false
// when no figures or no such point exist.
func ReportedPoint(s *pb.JobSpec, m *pb.ClinicalMetrics) (op models.OperatingPoint, target bool, ok bool) {
	if m == nil {
		return op, false, false
	}
	if t := s.GetAlertSensitivity(); t > 0 {
		op, ok = models.ForSensitivity(OperatingPointsFromProto(m), t)
		return op, true, ok
	}
	return models.OperatingPoint{Threshold: s.GetAlertThreshold(), Sensitivity: m.Sensitivity, Specificity: m.Specificity,
		PPV: m.Ppv, AlarmsPer100: m.AlarmsPer_100}, false, true
}

// AlarmBurden is a model's figures at every threshold of the region's
// encrypted histogram, and the point the job reports at: what a ward would
// live with, whichever view shows it.
type AlarmBurden struct {
	ModelVersion uint32
	Patients     uint64
	Points       []models.OperatingPoint
	Reported     models.OperatingPoint
	Found        bool    // Reported exists
	Target       float64 // the job's target sensitivity; 0: reported at its alert threshold
}

// AlarmBurdenOf is the alarm burden of the region's figures m under job
// spec s; ok is false when m has no operating points.
func AlarmBurdenOf(s *pb.JobSpec, m *pb.ClinicalMetrics) (a AlarmBurden, ok bool) {
	if m == nil || len(m.OperatingPoints) == 0 {
		return a, false
	}
	op, target, found := ReportedPoint(s, m)
	a = AlarmBurden{ModelVersion: m.ModelVersion, Patients: m.N, Points: OperatingPointsFromProto(m), Reported: op, Found: found}
	if target {
		a.Target = s.GetAlertSensitivity()
	}
	return a, true
}

// FromProto converts a model spec.
func FromProto(m *pb.ModelSpec) models.Spec {
	var hidden []int
	for _, h := range m.GetHidden() {
		hidden = append(hidden, int(h))
	}
	return models.Spec{Kind: m.GetKind(), Inputs: int(m.GetInputs()), Hidden: hidden}
}

// Binding ties an encrypted update to one round of one job, the model
// version it was trained from and the exact parameters of that model
// (model, ModelDigest): a hospital derives its update's mask a from it,
// so an update trained on a model that differs for one hospital (the
// model-inconsistency attack) has another a and cannot be summed with the
// others' into anything that decrypts. A zero model digest leaves the
// digest out (the statistics round, which trains no model, and contribution
// records written before model digests); the encoding stays injective, as
// the digest is a fixed-length suffix.
func Binding(jobID string, round, modelVersion uint32, modelHash string, model [32]byte) [32]byte {
	h := sha256.New()
	h.Write([]byte("regionfl/update-binding/v1\x00"))
	for _, s := range []string{jobID, modelHash} {
		binary.Write(h, binary.BigEndian, uint32(len(s)))
		h.Write([]byte(s))
	}
	binary.Write(h, binary.BigEndian, round)
	binary.Write(h, binary.BigEndian, modelVersion)
	if model != ([32]byte{}) {
		h.Write(model[:])
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// WireModelDigest is a model digest as tasks and kept updates carry it:
// empty for the zero digest (the statistics round), else its 32 bytes.
func WireModelDigest(d [32]byte) []byte {
	if d == ([32]byte{}) {
		return nil
	}
	return d[:]
}

// ParseModelDigest reads WireModelDigest's form; ok is false for any other
// length.
func ParseModelDigest(b []byte) (d [32]byte, ok bool) {
	if len(b) != 0 && len(b) != len(d) {
		return d, false
	}
	copy(d[:], b)
	return d, true
}

// ModelDigest is the SHA-256 of a model's exact parameters (IEEE 754
// bits, big endian, after a domain tag and the count).
func ModelDigest(params []float64) [32]byte {
	h := sha256.New()
	h.Write([]byte("regionfl/model-params/v1\x00"))
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(len(params)))
	h.Write(b[:])
	buf := make([]byte, 0, 8*min(len(params), 4096))
	for i, v := range params {
		buf = binary.BigEndian.AppendUint64(buf, math.Float64bits(v))
		if len(buf) == cap(buf) || i == len(params)-1 {
			h.Write(buf)
			buf = buf[:0]
		}
	}
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

// SignedDigest is the digest of what a researcher signs of a job
// (identity.StatementJob): the deterministic protobuf encoding of the spec
// after Defaults, without the region scaling's mean and deviation when the
// job asks for region scaling, which the region computes (or reuses) after
// submission. A node compares it with the digest it pinned when it
// accepted the job; an encoder that orders fields differently gives another
// digest, which fails safe (the job is refused).
func SignedDigest(s *pb.JobSpec) [32]byte {
	c := proto.Clone(s).(*pb.JobSpec)
	if c.GetScaling() == ScalingRegion {
		c.FeatureMean, c.FeatureStd = nil, nil
	}
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(c)
	if err != nil {
		// A JobSpec of scalars and lists always marshals; a failure is a
		// broken build, and a zero digest matches nothing signed.
		return [32]byte{}
	}
	h := sha256.New()
	h.Write([]byte("regionfl/job-spec/v1\x00"))
	h.Write(b)
	var out [32]byte
	copy(out[:], h.Sum(nil))
	return out
}

func parseDuration(s string) (uint32, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, err
	}
	if d < 0 || d > 24*time.Hour {
		return 0, fmt.Errorf("%s is not between 0 and 24h", s)
	}
	return uint32(d.Milliseconds()), nil
}

// CheckScaling checks a feature scaling: one mean and one standard
// deviation per model input, all finite, every deviation positive.
func CheckScaling(mean, std []float64, inputs int) error {
	if len(mean) != inputs || len(std) != inputs {
		return fmt.Errorf("%d means and %d standard deviations for %d inputs", len(mean), len(std), inputs)
	}
	for i, v := range std {
		if !(v > 0) || math.IsInf(v, 0) || math.IsNaN(mean[i]) || math.IsInf(mean[i], 0) {
			return fmt.Errorf("feature %d: mean %v std %v (std must be positive, both finite)", i, mean[i], v)
		}
	}
	return nil
}

// StatsRound is the round number of a region-scaled job's statistics
// round: before training, every site encrypts its per-feature Σx and Σx²
// (StatsVector) and only the region's sums are decrypted.
const StatsRound = 0

// StatsBound is the L2 bound of a site's statistics vector
// (StatsVector with the job's sample scale). Its values travel wide
// (VectorShape): a decrypted value is off by at most one step of
// StatsBound/2^47, 1.4e-8, per site, so the integer parts round to exact
// integers with a wide margin and the region's means and standard
// deviations come back within about 1e-12 of the exact ones. The integer
// parts fit for a site whose sums per feature stay below about 2·10⁶
// times the sample scale (Σx² of 30,000 rows of values near 250 at the
// default scale); a site whose vector is longer refuses the round rather
// than distort the region's scaling, and the job can raise sample_scale.
const StatsBound = 2e6

// NeedsScaling reports whether a job still waits for the region's
// statistics before it can train.
func NeedsScaling(s *pb.JobSpec) bool {
	return s.GetScaling() == ScalingRegion && len(s.GetFeatureMean()) == 0
}

// VectorLen is the length of the vector a site encrypts in a round: the
// statistics vector in the statistics round; otherwise the model update
// followed by the site's metric sums for the model it trained from
// (models.MetricSums), from which the region's clinical figures are
// decrypted without any site's own.
func VectorLen(s *pb.JobSpec, round uint32) int {
	if round == StatsRound {
		return StatsVectorLen(int(s.GetModel().GetInputs()))
	}
	return NumParams(s) + models.MetricSumsLen
}

// VectorShape is the shape of the vector a site encrypts in a round
// (VectorLen values): the statistics vector is all wide, so its integer
// parts round to exact integers; after a model update, quantized to
// he's QuantBits, the metric sums are wide, so the region's counts come
// back exact.
func VectorShape(s *pb.JobSpec, round uint32) he.Shape {
	n := VectorLen(s, round)
	if round == StatsRound {
		return he.Shape{Len: n, Wide: n}
	}
	return he.Shape{Len: n, Wide: models.MetricSumsLen}
}

// NumParams is the number of model parameters of a job.
func NumParams(s *pb.JobSpec) int { return FromProto(s.GetModel()).NumParams() }

// MetricsBound is the L2 bound of the metric block of a site's vector.
const MetricsBound = 10

// MetricScale divides a site's metric sums before encryption. The sums of
// n test rows have norm at most 28·n, so dividing by 30·sample_scale keeps
// the block below n/sample_scale; sites evaluate on at most MaxMetricRows
// rows so it stays within MetricsBound. The sums travel wide
// (VectorShape): counts come back within 1e-9.
func MetricScale(s *pb.JobSpec) float64 { return 30 * float64(s.GetSampleScale()) }

// MaxMetricRows is the most test rows a site evaluates on.
func MaxMetricRows(s *pb.JobSpec) int { return MetricsBound * int(s.GetSampleScale()) }

// UpdateBound is the L2 bound of the update part: the clip norm, or with
// DP the clip norm plus room for the noise (so the encoding never clips
// the noise away).
func UpdateBound(s *pb.JobSpec) float64 {
	if std := NoiseShareStd(s); std > 0 {
		return privacy.EncodingBound(s.GetClipNorm(), std, NumParams(s))
	}
	return s.GetClipNorm()
}

// NoiseShareStd is the standard deviation of the Gaussian noise one site
// adds to its clipped update so that an aggregate of at least
// min_hospitals updates carries dp_noise_multiplier · clip_norm.
func NoiseShareStd(s *pb.JobSpec) float64 {
	if s.GetDpNoiseMultiplier() == 0 {
		return 0
	}
	return privacy.ShareStd(s.GetDpNoiseMultiplier(), s.GetClipNorm(), int(s.GetMinHospitals()))
}

// EncodingClip is the L2 bound an encrypted vector is encoded with: the
// statistics bound, or the update's bound plus the metric block's. Sites
// bound each part themselves, so the encoding never rescales anything.
func EncodingClip(s *pb.JobSpec, round uint32) float64 {
	if round == StatsRound {
		return StatsBound
	}
	return UpdateBound(s) + MetricsBound
}
