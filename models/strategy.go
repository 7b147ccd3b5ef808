package models

import (
	"fmt"
	"math"
)

// Strategy names a job may choose.
const (
	StrategyFedAvg     = "fedavg"
	StrategyFedProx    = "fedprox" // FedAvg on the server, proximal term at the sites
	StrategyFedAdam    = "fedadam"
	StrategyFedYogi    = "fedyogi"
	StrategyFedAdagrad = "fedadagrad"
)

// StrategyConfig is the server-side optimizer of a job (Reddi et al.,
// "Adaptive Federated Optimization", 2021). Zero values take the defaults.
type StrategyConfig struct {
	Name     string  `json:"name" yaml:"name"`
	ServerLR float64 `json:"server_lr,omitempty" yaml:"server_lr,omitempty"` // fedavg/fedprox: 1; adaptive: 0.01
	Beta1    float64 `json:"beta1,omitempty" yaml:"beta1,omitempty"`         // 0.9
	Beta2    float64 `json:"beta2,omitempty" yaml:"beta2,omitempty"`         // 0.99
	Tau      float64 `json:"tau,omitempty" yaml:"tau,omitempty"`             // 1e-3, adaptivity
}

// WithDefaults fills unset hyperparameters.
func (c StrategyConfig) WithDefaults() StrategyConfig {
	if c.Name == "" {
		c.Name = StrategyFedAvg
	}
	adaptive := c.Name == StrategyFedAdam || c.Name == StrategyFedYogi || c.Name == StrategyFedAdagrad
	if c.ServerLR == 0 {
		c.ServerLR = 1
		if adaptive {
			c.ServerLR = 0.01
		}
	}
	if adaptive {
		if c.Beta1 == 0 {
			c.Beta1 = 0.9
		}
		if c.Beta2 == 0 {
			c.Beta2 = 0.99
		}
		if c.Tau == 0 {
			c.Tau = 1e-3
		}
	}
	return c
}

// ServerOptimizer turns the decrypted average update into the next global
// model.
//
// Step is computed the same, bit for bit, on every machine (products are
// rounded before they are added: no fused multiply-add), since sites check
// the coordinator's step by computing it again.
type ServerOptimizer interface {
	Step(global, avgDelta []float64) []float64
}

// StatefulOptimizer is a server optimizer with state beyond the model
// (the adaptive ones' moments): it travels with every committed version so
// a new Raft leader, or a site checking the version, continues the same
// optimizer.
type StatefulOptimizer interface {
	ServerOptimizer
	State() []float64
	SetState([]float64) error
}

// NewServerOptimizer builds the strategy's optimizer for numParams
// parameters. Adaptive optimizers also implement State and SetState so a
// new Raft leader continues with the same moments.
func NewServerOptimizer(c StrategyConfig, numParams int) (ServerOptimizer, error) {
	c = c.WithDefaults()
	for name, v := range map[string]float64{"server_lr": c.ServerLR, "beta1": c.Beta1, "beta2": c.Beta2, "tau": c.Tau} {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			return nil, fmt.Errorf("strategy: %s must be finite and ≥ 0, got %g", name, v)
		}
	}
	if c.ServerLR <= 0 || c.ServerLR > 10 {
		return nil, fmt.Errorf("strategy: server_lr must be in (0, 10], got %g", c.ServerLR)
	}
	if c.Beta1 >= 1 || c.Beta2 >= 1 {
		return nil, fmt.Errorf("strategy: beta1 and beta2 must be below 1, got %g and %g", c.Beta1, c.Beta2)
	}
	if numParams < 1 {
		return nil, fmt.Errorf("strategy: %d parameters", numParams)
	}
	switch c.Name {
	case StrategyFedAvg, StrategyFedProx:
		return fedAvg{lr: c.ServerLR}, nil
	case StrategyFedAdam, StrategyFedYogi, StrategyFedAdagrad:
		if c.Tau <= 0 {
			return nil, fmt.Errorf("strategy: tau must be positive, got %g", c.Tau)
		}
		a := &adaptive{cfg: c, m: make([]float64, numParams), v: make([]float64, numParams)}
		for i := range a.v {
			a.v[i] = c.Tau * c.Tau
		}
		return a, nil
	}
	return nil, fmt.Errorf("strategy: unknown name %q (want fedavg, fedprox, fedadam, fedyogi or fedadagrad)", c.Name)
}

type fedAvg struct{ lr float64 }

func (f fedAvg) Step(global, delta []float64) []float64 {
	for i := range global {
		global[i] += float64(f.lr * delta[i])
	}
	return global
}

// adaptive is FedAdam, FedYogi and FedAdagrad: the same first moment, a
// different second-moment rule.
type adaptive struct {
	cfg  StrategyConfig
	m, v []float64
}

func (a *adaptive) Step(global, delta []float64) []float64 {
	c := a.cfg
	for i, d := range delta {
		a.m[i] = float64(c.Beta1*a.m[i]) + float64((1-c.Beta1)*d)
		d2 := d * d
		switch c.Name {
		case StrategyFedAdam:
			a.v[i] = float64(c.Beta2*a.v[i]) + float64((1-c.Beta2)*d2)
		case StrategyFedYogi:
			a.v[i] -= float64((1 - c.Beta2) * d2 * sign(a.v[i]-d2))
		case StrategyFedAdagrad:
			a.v[i] += d2
		}
		global[i] += float64(c.ServerLR*a.m[i]) / (math.Sqrt(a.v[i]) + c.Tau)
	}
	return global
}

func sign(x float64) float64 {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return 0
}

// State is the moments m then v.
func (a *adaptive) State() []float64 { return append(append([]float64(nil), a.m...), a.v...) }

// SetState restores moments saved by State.
func (a *adaptive) SetState(s []float64) error {
	if len(s) != 2*len(a.m) {
		return fmt.Errorf("strategy: state has %d values, want %d", len(s), 2*len(a.m))
	}
	copy(a.m, s[:len(a.m)])
	copy(a.v, s[len(a.m):])
	return nil
}
