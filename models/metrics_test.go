package models

import (
	"math"
	"math/rand/v2"
	"testing"
)

// The alarm burden read off the encrypted histogram (operating points,
// PPV) matches a plain count on the same predictions at every threshold.
func TestOperatingPointsMatchPlainCounts(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	p, y := make([]float64, 5000), make([]float64, 5000)
	for i := range p {
		p[i] = rng.Float64()
		if rng.Float64() < 0.2+0.6*p[i] { // more positives at high risk
			y[i] = 1
		}
	}
	m, err := Score(p, y, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	if len(m.OperatingPoints) != AUROCBins-1 {
		t.Fatalf("%d operating points", len(m.OperatingPoints))
	}
	for _, op := range m.OperatingPoints {
		var tp, fp, fn, tn float64
		for i := range p {
			switch alarm := p[i] >= op.Threshold; {
			case alarm && y[i] == 1:
				tp++
			case alarm:
				fp++
			case y[i] == 1:
				fn++
			default:
				tn++
			}
		}
		want := OperatingPoint{Threshold: op.Threshold, Sensitivity: tp / (tp + fn), Specificity: tn / (tn + fp),
			PPV: tp / (tp + fp), AlarmsPer100: 100 * (tp + fp) / float64(len(p))}
		if math.Abs(op.Sensitivity-want.Sensitivity) > 1e-12 || math.Abs(op.Specificity-want.Specificity) > 1e-12 ||
			math.Abs(op.PPV-want.PPV) > 1e-12 || math.Abs(op.AlarmsPer100-want.AlarmsPer100) > 1e-9 {
			t.Errorf("threshold %.2f: %+v, plain count %+v", op.Threshold, op, want)
		}
	}
	if at := m.OperatingPoints[9]; at.Threshold != 0.5 || math.Abs(at.PPV-m.PPV) > 1e-12 || math.Abs(at.AlarmsPer100-m.AlarmsPer100) > 1e-9 {
		t.Errorf("the 0.5 operating point %+v differs from the figures at the alert threshold (PPV %g, alarms %g)", at, m.PPV, m.AlarmsPer100)
	}
	op, ok := ForSensitivity(m.OperatingPoints, 0.8)
	if !ok || op.Sensitivity < 0.8 {
		t.Fatalf("for sensitivity 0.8: %+v %v", op, ok)
	}
	for _, o := range m.OperatingPoints {
		if o.Threshold > op.Threshold && o.Sensitivity >= 0.8 {
			t.Errorf("threshold %.2f also reaches 0.8 with fewer alarms than the chosen %.2f", o.Threshold, op.Threshold)
		}
	}
	if _, ok := ForSensitivity(m.OperatingPoints, 1.01); ok {
		t.Error("a sensitivity above 1 was reached")
	}
}
