// Package models holds the clinical models regionfl trains: their
// specification and stable hash, the flat parameter layout that crosses the
// network (encrypted), local training on gorgonia, evaluation with clinical
// metrics, and the server-side strategies applied to the decrypted average.
package models

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
)

// Model kinds.
const (
	KindLogReg = "logreg" // logistic regression: Linear(inputs→1) + sigmoid
	KindMLP    = "mlp"    // ReLU hidden layers, then Linear(→1) + sigmoid
)

// Limits that keep a job's model within what a region can encrypt and a
// hospital can train; larger models need a new parameter-set decision.
const (
	MaxInputs    = 10_000
	MaxLayers    = 4
	MaxParams    = 10_000_000
	maxHiddenDim = 4096
)

// Spec describes a model; its Hash binds every update, manifest and model
// version to the exact architecture.
type Spec struct {
	Kind   string `json:"kind" yaml:"kind"`
	Inputs int    `json:"inputs" yaml:"inputs"`
	Hidden []int  `json:"hidden,omitempty" yaml:"hidden,omitempty"`
}

// ParseArchitecture reads a model as a command line names it, "logreg" or
// "mlp:H1,H2,..." (the hidden layers' widths), for inputs features, and
// validates it.
func ParseArchitecture(s string, inputs int) (Spec, error) {
	kind, layers, hasLayers := strings.Cut(strings.TrimSpace(s), ":")
	spec := Spec{Kind: kind, Inputs: inputs}
	switch {
	case kind == KindLogReg && !hasLayers:
	case kind == KindMLP && hasLayers:
		for _, f := range strings.Split(layers, ",") {
			h, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil {
				return Spec{}, fmt.Errorf("model %q: hidden width %q is not a number", s, f)
			}
			spec.Hidden = append(spec.Hidden, h)
		}
	default:
		return Spec{}, fmt.Errorf("model %q: want %s or %s:H1,H2,... (hidden widths)", s, KindLogReg, KindMLP)
	}
	if err := spec.Validate(); err != nil {
		return Spec{}, err
	}
	return spec, nil
}

// String names the architecture as ParseArchitecture reads it.
func (s Spec) String() string {
	if len(s.Hidden) == 0 {
		return s.Kind
	}
	hs := make([]string, len(s.Hidden))
	for i, h := range s.Hidden {
		hs[i] = strconv.Itoa(h)
	}
	return s.Kind + ":" + strings.Join(hs, ",")
}

// Validate refuses specs the trainer cannot build or the region cannot carry.
func (s Spec) Validate() error {
	switch s.Kind {
	case KindLogReg:
		if len(s.Hidden) != 0 {
			return errors.New("model: logreg takes no hidden layers")
		}
	case KindMLP:
		if len(s.Hidden) == 0 || len(s.Hidden) > MaxLayers {
			return fmt.Errorf("model: mlp needs 1 to %d hidden layers, got %d", MaxLayers, len(s.Hidden))
		}
		for i, h := range s.Hidden {
			if h < 1 || h > maxHiddenDim {
				return fmt.Errorf("model: hidden layer %d has %d units, want 1 to %d", i+1, h, maxHiddenDim)
			}
		}
	default:
		return fmt.Errorf("model: unknown kind %q (want %s or %s)", s.Kind, KindLogReg, KindMLP)
	}
	if s.Inputs < 1 || s.Inputs > MaxInputs {
		return fmt.Errorf("model: inputs must be 1 to %d, got %d", MaxInputs, s.Inputs)
	}
	if n := s.numParams(); n > MaxParams {
		return fmt.Errorf("model: %d parameters exceed the limit of %d", n, MaxParams)
	}
	return nil
}

// Hash is a stable identifier of the architecture: the same spec gives the
// same hash on every machine and in every version of regionfl that keeps
// this parameter layout.
func (s Spec) Hash() string {
	var b strings.Builder
	b.WriteString("regionfl/model/v1\x00")
	b.WriteString(s.Kind)
	b.WriteString("\x00")
	b.WriteString(strconv.Itoa(s.Inputs))
	for _, h := range s.Hidden {
		b.WriteString(",")
		b.WriteString(strconv.Itoa(h))
	}
	sum := sha256.Sum256([]byte(b.String()))
	return "sha256:" + hex.EncodeToString(sum[:16])
}

// layer is one dense layer's place in the flat parameter vector: the
// weights (in×out, row-major) then the biases (out).
type layer struct{ in, out, offset int }

func (s Spec) layers() []layer {
	dims := append([]int{s.Inputs}, s.Hidden...)
	dims = append(dims, 1)
	var ls []layer
	off := 0
	for i := 0; i+1 < len(dims); i++ {
		ls = append(ls, layer{in: dims[i], out: dims[i+1], offset: off})
		off += dims[i]*dims[i+1] + dims[i+1]
	}
	return ls
}

func (s Spec) numParams() int {
	n := 0
	for _, l := range s.layers() {
		n += l.in*l.out + l.out
	}
	return n
}

// NumParams is the length of the flat parameter vector.
func (s Spec) NumParams() int { return s.numParams() }

// Init returns seeded starting parameters: zeros for logistic regression
// (a convex problem, any start works), Glorot-uniform weights and zero
// biases for an MLP (zero weights would keep hidden units identical).
func (s Spec) Init(seed int64) []float64 {
	p := make([]float64, s.numParams())
	if s.Kind != KindMLP {
		return p
	}
	rng := rand.New(rand.NewPCG(uint64(seed), 0x6d6f64656c73))
	for _, l := range s.layers() {
		limit := math.Sqrt(6 / float64(l.in+l.out))
		for i := range l.in * l.out {
			p[l.offset+i] = (rng.Float64()*2 - 1) * limit
		}
	}
	return p
}

// Predict returns the predicted probability of the positive class for each
// row. It runs in plain Go: evaluation needs no gradients.
func Predict(s Spec, params []float64, X [][]float64) ([]float64, error) {
	if err := s.check(params, X); err != nil {
		return nil, err
	}
	ls := s.layers()
	out := make([]float64, len(X))
	act := make([][]float64, len(ls)+1)
	for r, row := range X {
		act[0] = row
		for li, l := range ls {
			next := act[li+1]
			if cap(next) < l.out {
				next = make([]float64, l.out)
			}
			next = next[:l.out]
			w, b := params[l.offset:l.offset+l.in*l.out], params[l.offset+l.in*l.out:l.offset+l.in*l.out+l.out]
			copy(next, b)
			for i, x := range act[li] {
				wi := w[i*l.out : (i+1)*l.out]
				for j := range next {
					next[j] += x * wi[j]
				}
			}
			if li < len(ls)-1 {
				for j := range next {
					next[j] = max(next[j], 0)
				}
			}
			act[li+1] = next
		}
		out[r] = sigmoid(act[len(ls)][0])
	}
	return out, nil
}

func sigmoid(z float64) float64 {
	if z >= 0 {
		return 1 / (1 + math.Exp(-z))
	}
	e := math.Exp(z)
	return e / (1 + e)
}

func (s Spec) check(params []float64, X [][]float64) error {
	if err := s.Validate(); err != nil {
		return err
	}
	if len(params) != s.numParams() {
		return fmt.Errorf("model: %d parameters, the spec needs %d", len(params), s.numParams())
	}
	for i, row := range X {
		if len(row) != s.Inputs {
			return fmt.Errorf("model: row %d has %d features, the model takes %d", i, len(row), s.Inputs)
		}
	}
	return nil
}
