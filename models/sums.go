package models

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// Region figures are built from sums that sites encrypt next to their
// update, so no site's own figures are revealed: counts of the confusion
// matrix at the alert threshold, summed log-loss and Brier score, and a
// histogram of predicted probabilities per class from which the region's
// AUROC is computed (exactly, up to ties within a bin).

// AUROCBins is the number of probability bins of the AUROC histogram.
const AUROCBins = 20

// sum layout: n, tp, fp, tn, fn, loss, brier, pos[AUROCBins], neg[AUROCBins].
const (
	sumN = iota
	sumTP
	sumFP
	sumTN
	sumFN
	sumLoss
	sumBrier
	sumPos
	sumNeg = sumPos + AUROCBins

	// MetricSumsLen is the length of a metric-sums vector.
	MetricSumsLen = sumNeg + AUROCBins
)

// MetricSums is one site's contribution to the region's metrics of a model:
// additive, so the sum over sites gives the region's figures.
func MetricSums(p, y []float64, threshold float64) ([]float64, error) {
	if len(p) != len(y) || len(p) == 0 {
		return nil, fmt.Errorf("metrics: %d predictions and %d labels", len(p), len(y))
	}
	s := make([]float64, MetricSumsLen)
	const eps = 1e-12
	for i, pi := range p {
		if math.IsNaN(pi) || pi < 0 || pi > 1 {
			return nil, fmt.Errorf("metrics: prediction %g at row %d is not a probability", pi, i)
		}
		alert := pi >= threshold
		bin := min(int(pi*AUROCBins), AUROCBins-1)
		switch y[i] {
		case 1:
			s[sumPos+bin]++
			if alert {
				s[sumTP]++
			} else {
				s[sumFN]++
			}
		case 0:
			s[sumNeg+bin]++
			if alert {
				s[sumFP]++
			} else {
				s[sumTN]++
			}
		default:
			return nil, fmt.Errorf("metrics: label %g at row %d is not 0 or 1", y[i], i)
		}
		q := min(max(pi, eps), 1-eps)
		s[sumLoss] -= y[i]*math.Log(q) + (1-y[i])*math.Log(1-q)
		s[sumBrier] += (pi - y[i]) * (pi - y[i])
		s[sumN]++
	}
	return s, nil
}

// MetricsFromSums turns summed metric vectors into figures. Counts that
// went through encryption carry a tiny error, so they are rounded.
func MetricsFromSums(s []float64) (Metrics, error) {
	if len(s) != MetricSumsLen {
		return Metrics{}, fmt.Errorf("metrics: %d sums, want %d", len(s), MetricSumsLen)
	}
	count := func(i int) int { return int(math.Round(s[i])) }
	m := Metrics{N: count(sumN), TP: count(sumTP), FP: count(sumFP), TN: count(sumTN), FN: count(sumFN)}
	if m.N <= 0 {
		return Metrics{}, errors.New("metrics: no rows")
	}
	n := float64(m.N)
	m.Loss = s[sumLoss] / n
	m.Brier = s[sumBrier] / n
	m.Accuracy = float64(m.TP+m.TN) / n
	m.Sensitivity = ratio(m.TP, m.TP+m.FN)
	m.Specificity = ratio(m.TN, m.TN+m.FP)
	m.AlarmsPer100 = 100 * float64(m.TP+m.FP) / n
	m.PPV = ratio(m.TP, m.TP+m.FP)
	m.OperatingPoints = operatingPoints(s, n)
	// Mann–Whitney over bins: a positive beats every negative in lower
	// bins and ties half of those in its own bin.
	var pos, neg, wins, below float64
	for b := range AUROCBins {
		pb, nb := max(math.Round(s[sumPos+b]), 0), max(math.Round(s[sumNeg+b]), 0)
		wins += pb * (below + nb/2)
		below += nb
		pos += pb
		neg += nb
	}
	m.AUROC = 0.5
	if pos > 0 && neg > 0 {
		m.AUROC = wins / (pos * neg)
	}
	return m, nil
}

// OperatingPoint is the alarm burden of one alert threshold: a patient
// raises an alarm when the predicted probability is at least Threshold.
type OperatingPoint struct {
	Threshold    float64 `json:"threshold"`
	Sensitivity  float64 `json:"sensitivity"`
	Specificity  float64 `json:"specificity"`
	PPV          float64 `json:"ppv"`
	AlarmsPer100 float64 `json:"alarms_per_100"`
}

// operatingPoints reads the figures at each threshold k/AUROCBins
// (k = 1..AUROCBins-1) off the histogram of predicted probabilities: an
// alarm at threshold k/AUROCBins is a prediction in bin k or above.
func operatingPoints(s []float64, n float64) []OperatingPoint {
	var pos, neg [AUROCBins]float64
	var allPos, allNeg float64
	for b := range AUROCBins {
		pos[b], neg[b] = max(math.Round(s[sumPos+b]), 0), max(math.Round(s[sumNeg+b]), 0)
		allPos += pos[b]
		allNeg += neg[b]
	}
	out := make([]OperatingPoint, 0, AUROCBins-1)
	var tp, fp float64 // alarms in bins k and above
	for b := AUROCBins - 1; b >= 1; b-- {
		tp += pos[b]
		fp += neg[b]
		op := OperatingPoint{Threshold: float64(b) / AUROCBins, AlarmsPer100: 100 * (tp + fp) / n}
		if allPos > 0 {
			op.Sensitivity = tp / allPos
		}
		if allNeg > 0 {
			op.Specificity = (allNeg - fp) / allNeg
		}
		if tp+fp > 0 {
			op.PPV = tp / (tp + fp)
		}
		out = append(out, op)
	}
	slices.Reverse(out) // increasing threshold
	return out
}

// ForSensitivity is the operating point with the highest threshold (the
// fewest alarms) whose sensitivity reaches target, or false if none does.
func ForSensitivity(ops []OperatingPoint, target float64) (OperatingPoint, bool) {
	for i := len(ops) - 1; i >= 0; i-- {
		if ops[i].Sensitivity >= target {
			return ops[i], true
		}
	}
	return OperatingPoint{}, false
}
