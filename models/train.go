package models

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Optimizers for local training.
const (
	OptSGD  = "sgd"
	OptAdam = "adam"
)

// TrainConfig is one hospital's local training in one round.
type TrainConfig struct {
	Steps     int     // mini-batch steps
	BatchSize int     // rows per step; a site with fewer rows uses them all
	LR        float64 // learning rate of the local optimizer
	Optimizer string  // sgd (default) or adam
	ProxMu    float64 // FedProx: weight of (μ/2)·‖w − w_global‖², 0 for none
	Seed      int64   // order of the mini-batches
}

func (c TrainConfig) validate() error {
	switch {
	case c.Steps < 1:
		return fmt.Errorf("train: steps must be at least 1, got %d", c.Steps)
	case c.BatchSize < 1:
		return fmt.Errorf("train: batch size must be at least 1, got %d", c.BatchSize)
	case !(c.LR > 0) || math.IsInf(c.LR, 0):
		return fmt.Errorf("train: learning rate must be positive, got %g", c.LR)
	case c.ProxMu < 0 || math.IsNaN(c.ProxMu) || math.IsInf(c.ProxMu, 0):
		return fmt.Errorf("train: prox mu must be finite and ≥ 0, got %g", c.ProxMu)
	}
	switch c.Optimizer {
	case "", OptSGD, OptAdam:
		return nil
	}
	return fmt.Errorf("train: unknown optimizer %q (want sgd or adam)", c.Optimizer)
}

// Train runs local mini-batch training from the global parameters on a
// site's rows and returns the new parameters; the global slice is not
// modified. The loss is binary cross-entropy on the logit (softplus form,
// stable for large logits) plus the FedProx term when ProxMu > 0.
func Train(s Spec, global []float64, X [][]float64, y []float64, cfg TrainConfig) ([]float64, error) {
	if err := s.check(global, X); err != nil {
		return nil, err
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if len(X) == 0 || len(X) != len(y) {
		return nil, fmt.Errorf("train: %d rows and %d labels", len(X), len(y))
	}
	batch := min(cfg.BatchSize, len(X))

	g := G.NewGraph()
	xb := make([]float64, batch*s.Inputs)
	yb := make([]float64, batch)
	xT := tensor.New(tensor.WithShape(batch, s.Inputs), tensor.WithBacking(xb))
	yT := tensor.New(tensor.WithShape(batch, 1), tensor.WithBacking(yb))
	x := G.NewMatrix(g, tensor.Float64, G.WithShape(batch, s.Inputs), G.WithName("x"), G.WithValue(xT))
	yn := G.NewMatrix(g, tensor.Float64, G.WithShape(batch, 1), G.WithName("y"), G.WithValue(yT))

	var learn G.Nodes
	var prox []*G.Node
	h := x
	ls := s.layers()
	for i, l := range ls {
		wEnd := l.offset + l.in*l.out
		w := G.NewMatrix(g, tensor.Float64, G.WithShape(l.in, l.out), G.WithName(fmt.Sprintf("w%d", i)),
			G.WithValue(tensor.New(tensor.WithShape(l.in, l.out), tensor.WithBacking(cloneRange(global, l.offset, wEnd)))))
		b := G.NewMatrix(g, tensor.Float64, G.WithShape(1, l.out), G.WithName(fmt.Sprintf("b%d", i)),
			G.WithValue(tensor.New(tensor.WithShape(1, l.out), tensor.WithBacking(cloneRange(global, wEnd, wEnd+l.out)))))
		learn = append(learn, w, b)
		z, err := G.Mul(h, w)
		if err != nil {
			return nil, err
		}
		if h, err = G.BroadcastAdd(z, b, nil, []byte{0}); err != nil {
			return nil, err
		}
		if i < len(ls)-1 {
			if h, err = G.Rectify(h); err != nil {
				return nil, err
			}
		}
		if cfg.ProxMu > 0 {
			for _, p := range []struct {
				n        *G.Node
				from, to int
				rows     int
			}{{w, l.offset, wEnd, l.in}, {b, wEnd, wEnd + l.out, 1}} {
				anchor := G.NewMatrix(g, tensor.Float64, G.WithShape(p.rows, l.out),
					G.WithValue(tensor.New(tensor.WithShape(p.rows, l.out), tensor.WithBacking(cloneRange(global, p.from, p.to)))))
				d, err := G.Sub(p.n, anchor)
				if err != nil {
					return nil, err
				}
				sq, err := G.Square(d)
				if err != nil {
					return nil, err
				}
				sum, err := G.Sum(sq)
				if err != nil {
					return nil, err
				}
				prox = append(prox, sum)
			}
		}
	}
	// BCE(z, y) = softplus(z) − y·z, averaged over the batch.
	sp, err := G.Softplus(h)
	if err != nil {
		return nil, err
	}
	yz, err := G.HadamardProd(yn, h)
	if err != nil {
		return nil, err
	}
	diff, err := G.Sub(sp, yz)
	if err != nil {
		return nil, err
	}
	loss, err := G.Mean(diff)
	if err != nil {
		return nil, err
	}
	for _, p := range prox {
		term, err := G.Mul(p, G.NewConstant(cfg.ProxMu/2))
		if err != nil {
			return nil, err
		}
		if loss, err = G.Add(loss, term); err != nil {
			return nil, err
		}
	}
	if _, err := G.Grad(loss, learn...); err != nil {
		return nil, err
	}
	vm := G.NewTapeMachine(g, G.BindDualValues(learn...))
	defer vm.Close()
	var solver G.Solver
	if cfg.Optimizer == OptAdam {
		solver = G.NewAdamSolver(G.WithLearnRate(cfg.LR))
	} else {
		solver = G.NewVanillaSolver(G.WithLearnRate(cfg.LR))
	}

	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 0x747261696e))
	order := rng.Perm(len(X))
	next := 0
	grads := G.NodesToValueGrads(learn)
	for range cfg.Steps {
		for i := range batch {
			if next == len(order) {
				rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
				next = 0
			}
			r := order[next]
			next++
			copy(xb[i*s.Inputs:], X[r])
			yb[i] = y[r]
		}
		if err := vm.RunAll(); err != nil {
			return nil, fmt.Errorf("train: %w", err)
		}
		if err := solver.Step(grads); err != nil {
			return nil, fmt.Errorf("train: %w", err)
		}
		vm.Reset()
	}

	out := make([]float64, 0, len(global))
	for _, n := range learn {
		v, ok := n.Value().Data().([]float64)
		if !ok {
			return nil, errors.New("train: unexpected parameter type")
		}
		out = append(out, v...)
	}
	for _, v := range out {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, errors.New("train: diverged (NaN or Inf); lower the learning rate")
		}
	}
	return out, nil
}

func cloneRange(p []float64, from, to int) []float64 {
	return append([]float64(nil), p[from:to]...)
}

// gorgonia's Grad adds a package-level constant node (its float64 "one")
// to every graph, and that node computes and caches its hash the first
// time it is asked: the first trainings running at once in one process
// (the demo's hospitals, the tests' regions) raced on that write. One
// gradient taken here, before anything runs concurrently, leaves only
// reads of it.
func init() {
	g := G.NewGraph()
	x := G.NewScalar(g, tensor.Float64, G.WithName("x"), G.WithValue(1.0))
	sq, err := G.Square(x)
	if err == nil {
		_, err = G.Grad(sq, x)
	}
	if err != nil {
		panic(fmt.Sprintf("models: warming gorgonia's constants: %v", err))
	}
}
