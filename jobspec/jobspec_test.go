package jobspec

import (
	"errors"
	"math"
	"slices"
	"strings"
	"testing"

	"regionfl/models"
	pb "regionfl/proto/regionfl/v1"
)

const valid = `
name: ews
purpose: early warning
model: {kind: logreg, inputs: 8}
rounds: 5
round_deadline: 30s
strategy: {name: fedadam, server_lr: 0.01}
`

func TestParse(t *testing.T) {
	s, err := Parse([]byte(valid))
	if err != nil {
		t.Fatal(err)
	}
	if s.Rounds != 5 || s.RoundDeadlineMs != 30_000 || s.Model.Inputs != 8 || s.Strategy.Name != "fedadam" {
		t.Fatalf("parsed %+v", s)
	}
	if s.LocalSteps == 0 || s.ClipNorm == 0 || s.MinHospitals == 0 || s.Missing != "error" {
		t.Fatal("defaults not applied")
	}
	if s, err := Parse([]byte(valid + "missing: drop\n")); err != nil || s.Missing != "drop" {
		t.Fatalf("missing: drop gave %q, %v", s.GetMissing(), err)
	}
}

// A default applies to a key left out, never in place of a value written
// as 0 or empty: those are refused, naming the key and the default.
func TestExplicitZerosRefused(t *testing.T) {
	base := strings.NewReplacer("rounds: 5\n", "", "round_deadline: 30s\n", "").Replace(valid)
	for _, line := range []string{"rounds: 0", "local_steps: 0", "batch_size: 0", "learning_rate: 0.0", "min_hospitals: 0",
		"clip_norm: 0", "sample_scale: 0", "optimizer: \"\"", "rounds:", "round_deadline: 0s"} {
		key := strings.SplitN(line, ":", 2)[0]
		_, err := Parse([]byte(base + line + "\n"))
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), key+": ") || (key != "round_deadline" && !strings.Contains(err.Error(), "leave the key out for the default")) {
			t.Errorf("%q: %v", line, err)
		}
	}
	if _, err := Parse([]byte(base)); err != nil {
		t.Errorf("keys left out: %v", err)
	}
}

// alert_threshold is a probability or {sensitivity: x}: the second keeps
// the default threshold for the sites' confusion counts and reports the
// figures at the operating point that reaches x.
func TestAlertThresholdForms(t *testing.T) {
	s, err := Parse([]byte(valid + "alert_threshold: {sensitivity: 0.8}\n"))
	if err != nil || s.AlertSensitivity != 0.8 || s.AlertThreshold != 0.5 {
		t.Fatalf("{sensitivity: 0.8}: %v, threshold %g sensitivity %g", err, s.GetAlertThreshold(), s.GetAlertSensitivity())
	}
	if s, err := Parse([]byte(valid + "alert_threshold: 0.3\n")); err != nil || s.AlertThreshold != 0.3 || s.AlertSensitivity != 0 {
		t.Fatalf("0.3: %v %v", err, s)
	}
	for _, bad := range []string{"{sensitivity: 0}", "{sensitivity: 1.5}", "{specificity: 0.9}", "[0.5]"} {
		if _, err := Parse([]byte(valid + "alert_threshold: " + bad + "\n")); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "alert_threshold") {
			t.Errorf("%s: %v", bad, err)
		}
	}
	m := MetricsToProto(models.Metrics{N: 100, Sensitivity: 0.7, PPV: 0.5, AlarmsPer100: 20, OperatingPoints: []models.OperatingPoint{
		{Threshold: 0.3, Sensitivity: 0.9, AlarmsPer100: 40}, {Threshold: 0.4, Sensitivity: 0.82, AlarmsPer100: 30}, {Threshold: 0.5, Sensitivity: 0.7, AlarmsPer100: 20}}}, 3)
	if op, target, ok := ReportedPoint(s, m); !ok || !target || op.Threshold != 0.4 {
		t.Errorf("reported at %+v (target %v, found %v), want the 0.4 row", op, target, ok)
	}
	s.AlertSensitivity = 0
	if op, target, ok := ReportedPoint(s, m); !ok || target || op.Threshold != 0.5 || op.AlarmsPer100 != 20 || op.PPV != 0.5 {
		t.Errorf("without a target: %+v", op)
	}
}

// A DP job says what each site spends, and warns when the noise drowns
// the signal at its K and model size.
func TestWarnings(t *testing.T) {
	s, err := Parse([]byte(valid + "min_hospitals: 2\ndp: {noise_multiplier: 1, delta: 1e-5}\n"))
	if err != nil {
		t.Fatal(err)
	}
	w := Warnings(s)
	if len(w) != 2 || !strings.Contains(w[0], "ε = ") || !strings.Contains(w[1], "will barely learn") || !strings.Contains(w[1], "1.5×") {
		t.Fatalf("logreg of 9 parameters, σ = 1, K = 2: %q", w)
	}
	s.MinHospitals = 4
	if w := Warnings(s); len(w) != 1 {
		t.Errorf("σ·√d/K = 0.75: %q", w)
	}
	s.DpNoiseMultiplier = 0
	if w := Warnings(s); len(w) != 0 {
		t.Errorf("no DP: %q", w)
	}
}

func TestParseErrorsNameTheField(t *testing.T) {
	tests := []struct{ name, yaml, field string }{
		{"no purpose", "model: {kind: logreg, inputs: 8}\n", "purpose"},
		{"unknown key", valid + "learning_rat: 0.1\n", "learning_rat"},
		{"bad model", "purpose: x\nmodel: {kind: forest, inputs: 8}\n", "model"},
		{"bad deadline", valid + "round_deadline: soon\n", "round_deadline"},
		{"bad optimizer", valid + "optimizer: lbfgs\n", "optimizer"},
		{"negative clip", valid + "clip_norm: -1\n", "clip_norm"},
		{"unknown strategy", "purpose: x\nmodel: {kind: logreg, inputs: 8}\nstrategy: {name: magic}\n", "strategy"},
		{"unknown missing policy", valid + "missing: impute\n", "missing"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			// Duplicate keys are themselves a YAML error; strip the first
			// occurrence the override replaces.
			_, err := Parse([]byte(dedupe(tc.yaml)))
			if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("got %v, want an error naming %q", err, tc.field)
			}
		})
	}
}

// dedupe keeps the last line of each top-level key.
func dedupe(y string) string {
	lines := strings.Split(y, "\n")
	last := map[string]int{}
	for i, l := range lines {
		if k, _, ok := strings.Cut(l, ":"); ok && !strings.HasPrefix(l, " ") {
			last[k] = i
		}
	}
	var out []string
	for i, l := range lines {
		if k, _, ok := strings.Cut(l, ":"); ok && !strings.HasPrefix(l, " ") && last[k] != i {
			continue
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}

func TestBindingSeparatesFields(t *testing.T) {
	base := Binding("job", 1, 0, "hash", [32]byte{})
	for name, b := range map[string][32]byte{
		"job":     Binding("jo", 1, 0, "bhash", [32]byte{}),
		"round":   Binding("job", 2, 0, "hash", [32]byte{}),
		"version": Binding("job", 1, 1, "hash", [32]byte{}),
		"model":   Binding("job", 1, 0, "hasi", [32]byte{}),
		"params":  Binding("job", 1, 0, "hash", ModelDigest([]float64{0})),
	} {
		if b == base {
			t.Errorf("changing the %s does not change the binding", name)
		}
	}
}

// Two models that differ in one bit of one parameter have different
// digests, and so do models that differ only in length.
func TestModelDigest(t *testing.T) {
	a := []float64{0.5, -1, 3}
	b := []float64{0.5, -1, math.Nextafter(3, 4)}
	if ModelDigest(a) == ModelDigest(b) || ModelDigest(a) == ModelDigest(a[:2]) || ModelDigest(nil) == ModelDigest([]float64{0}) {
		t.Error("distinct parameters share a digest")
	}
	big := make([]float64, 10000)
	big[9999] = 1
	if ModelDigest(big) == ModelDigest(make([]float64, 10000)) {
		t.Error("the last parameter of a large model is not covered")
	}
	if ModelDigest(a) != ModelDigest(slices.Clone(a)) {
		t.Error("the digest is not a function of the values")
	}
}

// TestValidateOffered: a region-scaled job carries the region's committed
// statistics when nodes see it; they are checked like a reference scaling,
// and the rest of the spec like any job.
func TestValidateOffered(t *testing.T) {
	spec := &pb.JobSpec{Model: ToProto(models.Spec{Kind: "logreg", Inputs: 2}), Purpose: "test"}
	Defaults(spec)
	if err := ValidateOffered(spec); err != nil {
		t.Fatalf("before the statistics round: %v", err)
	}
	spec.FeatureMean, spec.FeatureStd = []float64{0, 1}, []float64{1, 2}
	if err := ValidateOffered(spec); err != nil {
		t.Fatalf("with the region's statistics: %v", err)
	}
	if spec.FeatureMean == nil {
		t.Fatal("ValidateOffered changed the spec")
	}
	spec.FeatureStd = []float64{1, math.NaN()}
	if err := ValidateOffered(spec); err == nil || !strings.Contains(err.Error(), "feature_mean") {
		t.Fatalf("NaN in the region's statistics: %v", err)
	}
	spec.FeatureStd = []float64{1, 2}
	spec.SampleScale = math.MaxUint64
	if err := ValidateOffered(spec); err == nil || !strings.Contains(err.Error(), "sample_scale") {
		t.Fatalf("sample_scale 2^64-1: %v", err)
	}
}

// A job file from anywhere never crashes the parser; what it accepts
// passes validation.
func FuzzParse(f *testing.F) {
	f.Add([]byte(valid))
	f.Add([]byte(valid + "alert_threshold: {sensitivity: 0.8}\nmin_hospitals: 3\ndp: {noise_multiplier: 1, delta: 1e-5}\n"))
	f.Add([]byte("rounds: 0\n"))
	f.Add([]byte("alert_threshold: [1, {sensitivity: x}]\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err != nil {
			return
		}
		if err := Validate(s); err != nil {
			t.Fatalf("accepted a job that does not validate: %v", err)
		}
		Warnings(s)
	})
}
