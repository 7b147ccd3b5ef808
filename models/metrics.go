package models

import (
	"fmt"
	"slices"
)

// Metrics are the clinical figures of a model on one test set. Counts are
// kept so sites' figures can be summed into region figures.
type Metrics struct {
	N            int     `json:"n"`
	Accuracy     float64 `json:"accuracy"`
	Loss         float64 `json:"loss"`  // mean binary cross-entropy
	AUROC        float64 `json:"auroc"` // NaN-free: 0.5 when one class is absent
	Sensitivity  float64 `json:"sensitivity"`
	Specificity  float64 `json:"specificity"`
	Brier        float64 `json:"brier"`
	AlarmsPer100 float64 `json:"alarms_per_100"` // alerts raised per 100 patients at the threshold
	PPV          float64 `json:"ppv"`            // of the alerts raised, the share that were right
	// OperatingPoints are the figures at every threshold of the AUROC
	// histogram's bins, so a threshold can be picked for a target
	// sensitivity or alarm burden.
	OperatingPoints []OperatingPoint `json:"operating_points"`
	TP              int              `json:"tp"`
	FP              int              `json:"fp"`
	TN              int              `json:"tn"`
	FN              int              `json:"fn"`
}

// Evaluate scores a model on labelled rows; threshold is the alert
// threshold on the predicted probability.
func Evaluate(s Spec, params []float64, X [][]float64, y []float64, threshold float64) (Metrics, error) {
	if len(X) != len(y) || len(X) == 0 {
		return Metrics{}, fmt.Errorf("evaluate: %d rows and %d labels", len(X), len(y))
	}
	if !(threshold > 0 && threshold < 1) {
		return Metrics{}, fmt.Errorf("evaluate: threshold must be in (0,1), got %g", threshold)
	}
	p, err := Predict(s, params, X)
	if err != nil {
		return Metrics{}, err
	}
	return Score(p, y, threshold)
}

// Score computes the metrics from predicted probabilities and 0/1 labels:
// the same sums a site encrypts for the region (MetricSums), with the exact
// rank AUROC instead of the histogram's.
func Score(p, y []float64, threshold float64) (Metrics, error) {
	sums, err := MetricSums(p, y, threshold)
	if err != nil {
		return Metrics{}, err
	}
	m, err := MetricsFromSums(sums)
	if err != nil {
		return Metrics{}, err
	}
	m.AUROC = auroc(p, y)
	return m, nil
}

func ratio(a, b int) float64 {
	if b == 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// auroc is the Mann–Whitney statistic: the probability that a random
// positive scores above a random negative, ties counting one half.
func auroc(p, y []float64) float64 {
	idx := make([]int, len(p))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmpFloat(p[a], p[b]) })
	var pos, neg, rankSum float64
	for i := 0; i < len(idx); {
		j := i
		for j < len(idx) && p[idx[j]] == p[idx[i]] {
			j++
		}
		avgRank := float64(i+j+1) / 2 // ranks are 1-based
		for k := i; k < j; k++ {
			if y[idx[k]] == 1 {
				rankSum += avgRank
			}
		}
		i = j
	}
	for _, v := range y {
		if v == 1 {
			pos++
		} else {
			neg++
		}
	}
	if pos == 0 || neg == 0 {
		return 0.5
	}
	return (rankSum - pos*(pos+1)/2) / (pos * neg)
}

func cmpFloat(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
