package jobspec

import (
	"errors"
	"fmt"
	"math"
	"slices"

	"regionfl/models"
	pb "regionfl/proto/regionfl/v1"
)

// ModelStep is what one round's decrypted aggregate makes of the model the
// round trained from. The coordinator commits it; every site computes it
// again from the round's evidence before it measures the version it is
// served, so the models a site measures are a chain from version 0 it
// checked link by link, whatever the coordinator says.
type ModelStep struct {
	// Params is the next model version.
	Params []float64
	// OptimizerState is the server optimizer's state after the step
	// (moments of the adaptive strategies, nil for FedAvg).
	OptimizerState []float64
	// RegionMetrics are the region's figures of the model trained from
	// (nil when no site released its sums).
	RegionMetrics *pb.ClinicalMetrics
	// UpdateNorm is the L2 norm of the summed update.
	UpdateNorm float64
}

// NextModel applies the job's server step to sum and count, the decrypted
// aggregate of a model round (the update, then the sites' metric sums),
// from prev, the parameters of modelVersion, and the optimizer state after
// it (nil before the first step). It changes none of its arguments.
func NextModel(spec *pb.JobSpec, modelVersion uint32, sum []float64, count uint64, prev, optimizerState []float64) (ModelStep, error) {
	np := NumParams(spec)
	switch {
	case count == 0:
		return ModelStep{}, errors.New("the aggregate holds no samples")
	case len(sum) != np+models.MetricSumsLen:
		return ModelStep{}, fmt.Errorf("an aggregate of %d values, the model takes %d and its metrics %d", len(sum), np, models.MetricSumsLen)
	case len(prev) != np:
		return ModelStep{}, fmt.Errorf("a model of %d parameters, the spec has %d", len(prev), np)
	}
	var step ModelStep
	metricSums := slices.Clone(sum[np:])
	metricScale := MetricScale(spec)
	for i := range metricSums {
		metricSums[i] *= metricScale
	}
	if m, err := models.MetricsFromSums(metricSums); err == nil {
		step.RegionMetrics = MetricsToProto(m, modelVersion)
	}
	// Sites send sample-weighted updates (SampleWeight).
	scale := MeanScale(float64(spec.SampleScale), count)
	avg := make([]float64, np)
	var norm float64
	for i, v := range sum[:np] {
		avg[i] = v * scale
		norm += float64(v * v)
	}
	step.UpdateNorm = math.Sqrt(norm)
	opt, err := models.NewServerOptimizer(Strategy(spec), np)
	if err != nil {
		return ModelStep{}, err
	}
	if s, ok := opt.(models.StatefulOptimizer); ok && len(optimizerState) > 0 {
		if err := s.SetState(optimizerState); err != nil {
			return ModelStep{}, err
		}
	}
	step.Params = opt.Step(slices.Clone(prev), avg)
	if s, ok := opt.(models.StatefulOptimizer); ok {
		step.OptimizerState = s.State()
	}
	return step, nil
}
