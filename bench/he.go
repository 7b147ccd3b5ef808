package bench

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"runtime"
	"time"

	"regionfl/he"
	"regionfl/models"
	"regionfl/node/dataset"
	"regionfl/privacy"
)

// HEConfig is a run of the encryption benchmark (regionfl bench he): every
// combination of a model size and a region size.
type HEConfig struct {
	Params    []int // values per update, each 1 to he.MaxLength
	Hospitals []int // updates per aggregate, each 2 to 1,024 (beyond 64, a committee decrypts: LargeCommittee)
	Threshold int   // decryptors; 0 means min(3, hospitals)
	// Round adds, to the row of 1M parameters and 4 hospitals (when there
	// is one), an end-to-end round of a ~1M-parameter MLP with the
	// encrypted and with the plain sum.
	Round    bool
	Seed     uint64
	Progress io.Writer // nil: quiet
}

// HERow is one measured combination. Times are seconds per operation: one
// hospital's encryption, the coordinator's fold of every update (decoding
// included), one decryptor's share, the combination of t shares.
type HERow struct {
	Params               int     `json:"params"`
	Hospitals            int     `json:"hospitals"`
	Threshold            int     `json:"threshold"`
	Committee            int     `json:"committee"` // parties holding Shamir shares
	QuantBits            int     `json:"quant_bits"`
	BytesPerParam        float64 `json:"bytes_per_param"`
	ShareBytesPerParam   float64 `json:"share_bytes_per_param"`
	EncryptS             float64 `json:"encrypt_s"`
	FoldS                float64 `json:"fold_s"`
	FoldVsFloat32        float64 `json:"fold_vs_float32"`
	ShareS               float64 `json:"share_s"`
	CombineS             float64 `json:"combine_s"`
	CoordinatorPeakBytes int64   `json:"coordinator_peak_bytes"`
	UpdateBytes          int     `json:"update_bytes"`
	MaxRelError          float64 `json:"max_rel_error"`
	// The end-to-end MLP round (HEConfig.Round), at 1M parameters and 4
	// hospitals only.
	RoundEncryptedS *float64 `json:"round_encrypted_s,omitempty"`
	RoundPlainS     *float64 `json:"round_plain_s,omitempty"`
	RoundRatio      *float64 `json:"round_ratio,omitempty"`
}

// roundParams and roundHospitals are where the end-to-end round runs.
const (
	roundParams    = 1_000_000
	roundHospitals = 4
)

func (c HEConfig) validate() error {
	max := he.LargeRegionParams().MaxParties()
	if len(c.Params) == 0 || len(c.Hospitals) == 0 {
		return errors.New("bench he: at least one model size and one region size")
	}
	for _, p := range c.Params {
		if p < 1 || p > he.MaxLength {
			return fmt.Errorf("bench he: %d parameters: want 1 to %d", p, he.MaxLength)
		}
	}
	for _, h := range c.Hospitals {
		if h < 2 || h > max {
			return fmt.Errorf("bench he: %d hospitals: want 2 to %d (%s)", h, max, he.LargeRegionParamsName)
		}
		if c.Threshold > min(h, LargeCommittee) && h > he.RegionParams().MaxParties() {
			return fmt.Errorf("bench he: threshold %d above the committee of %d that decrypts for %d hospitals", c.Threshold, LargeCommittee, h)
		}
		if c.Threshold > h {
			return fmt.Errorf("bench he: threshold %d above %d hospitals", c.Threshold, h)
		}
	}
	if c.Threshold < 0 || c.Threshold == 1 {
		return fmt.Errorf("bench he: threshold %d: want at least 2", c.Threshold)
	}
	return nil
}

// RunHE measures every combination of HEConfig, one after the other (run
// it alone on the machine: it is timed).
func RunHE(cfg HEConfig) ([]HERow, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var rows []HERow
	for _, h := range cfg.Hospitals {
		t := cfg.Threshold
		if t == 0 {
			t = min(3, h)
		}
		enc, err := NewEncrypted(h, t)
		if err != nil {
			return nil, err
		}
		for _, p := range cfg.Params {
			if cfg.Progress != nil {
				fmt.Fprintf(cfg.Progress, "bench he: %d parameters, %d hospitals, threshold %d\n", p, h, t)
			}
			row, err := enc.measure(p, cfg.Seed)
			if err != nil {
				return nil, err
			}
			if cfg.Round && p == roundParams && h == roundHospitals {
				if err := enc.round(&row, cfg.Seed); err != nil {
					return nil, err
				}
			}
			rows = append(rows, row)
		}
	}
	return rows, nil
}

// measure streams one aggregate as the coordinator sees it: hospital i
// encrypts its update and sends the bytes, the coordinator parses and
// folds them into its running sum and drops them; then t decryptors make
// their shares and the sum is combined. The float32 baseline folds the
// same vectors, sent as little-endian float32, the same way in the same
// run. Nothing but one update in flight and the running sums is held.
func (e *Encrypted) measure(params int, seed uint64) (HERow, error) {
	row := HERow{Params: params, Hospitals: e.n, Threshold: e.t, Committee: e.c, QuantBits: e.p.QuantBits()}
	const clip = 1.0
	var binding [32]byte
	binary.BigEndian.PutUint64(binding[:], uint64(params)<<8|uint64(e.n))
	binding = sha256.Sum256(append([]byte("regionfl/bench/he\x00"), binding[:]...))

	exact := make([]float64, params)
	plain := make([]float32, params)
	for j := range plain { // fault its pages in now, not in the first timed fold
		plain[j] = 0
	}
	v := make([]float64, params)
	wire32 := make([]byte, 4*params)
	agg := he.NewAggregator(e.p, he.Values(params), clip, binding)

	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := int64(ms.HeapAlloc)
	var encrypt, fold, fold32 time.Duration
	for i := range e.n {
		rng := rand.New(rand.NewPCG(seed, uint64(i)))
		for j := range v {
			v[j] = rng.NormFloat64()
		}
		privacy.Clip(v, clip)
		t0 := time.Now()
		u, err := e.parties[i].Encrypt(v, 0, 100, clip, binding)
		if err != nil {
			return row, fmt.Errorf("bench he: encrypting update %d: %w", i, err)
		}
		encrypt += time.Since(t0)
		raw, err := u.MarshalBinary()
		if err != nil {
			return row, err
		}
		u = nil
		row.UpdateBytes = len(raw)
		// Collect the encryption's garbage first, so that neither fold
		// below pays for it.
		runtime.GC()

		t0 = time.Now()
		got, err := he.OpenUpdate(e.p, he.Values(params), raw)
		if err != nil {
			return row, fmt.Errorf("bench he: parsing update %d: %w", i, err)
		}
		if err := agg.AddEncoded(got); err != nil {
			return row, fmt.Errorf("bench he: folding update %d: %w", i, err)
		}
		fold += time.Since(t0)
		// What the coordinator holds live at its peak: the running sum and
		// the update's bytes (the scratch polynomials of the fold are
		// garbage now; garbage collected first).
		runtime.GC()
		runtime.ReadMemStats(&ms)
		row.CoordinatorPeakBytes = max(row.CoordinatorPeakBytes, int64(ms.HeapAlloc)-base)
		runtime.KeepAlive(got)
		runtime.KeepAlive(raw)

		for j, x := range v {
			exact[j] += x
			binary.LittleEndian.PutUint32(wire32[4*j:], math.Float32bits(float32(x)))
		}
		t0 = time.Now()
		for j := range plain {
			plain[j] += math.Float32frombits(binary.LittleEndian.Uint32(wire32[4*j:]))
		}
		fold32 += time.Since(t0)
	}
	t0 := time.Now()
	sum, err := agg.Result()
	if err != nil {
		return row, err
	}
	fold += time.Since(t0)

	contributors := make([]uint32, e.n)
	for i := range contributors {
		contributors[i] = uint32(i + 1)
	}
	active := contributors[:e.t] // committee members
	var shares []*he.DecryptionShare
	var share time.Duration
	for _, a := range active {
		t0 := time.Now()
		s, err := e.parties[a-1].DecryptionShare(sum, contributors, active)
		if err != nil {
			return row, fmt.Errorf("bench he: decryption share of party %d: %w", a, err)
		}
		share += time.Since(t0)
		raw, err := s.MarshalBinary()
		if err != nil {
			return row, err
		}
		row.ShareBytesPerParam = float64(len(raw)) / float64(params)
		shares = append(shares, s)
	}
	t0 = time.Now()
	res, err := he.Combine(e.p, sum, shares, e.t)
	if err != nil {
		return row, fmt.Errorf("bench he: combining: %w", err)
	}
	combine := time.Since(t0)
	e.used++

	var maxErr, maxAbs float64
	for j, x := range exact {
		maxErr = max(maxErr, math.Abs(res.Sum[j]-x))
		maxAbs = max(maxAbs, math.Abs(x))
	}
	row.MaxRelError = maxErr / maxAbs
	row.BytesPerParam = float64(row.UpdateBytes) / float64(params)
	row.EncryptS = encrypt.Seconds() / float64(e.n)
	row.FoldS = fold.Seconds()
	row.FoldVsFloat32 = fold.Seconds() / fold32.Seconds()
	row.ShareS = share.Seconds() / float64(e.t)
	row.CombineS = combine.Seconds()
	return row, nil
}

// roundModel is the end-to-end round's MLP on the synthetic cohort's
// features: hidden layers of 960 and 1000 units give about 1M parameters.
func roundModel(inputs int) models.Spec {
	return models.Spec{Kind: "mlp", Inputs: inputs, Hidden: []int{960, 1000}}
}

// round times one federated round of the MLP on a synthetic region of
// e.n hospitals, each training the default 50 local steps of batch 32
// (jobspec.Defaults) and sending its clipped,
// weighted update: once summed encrypted (Encrypted.Sum: encrypt, parse,
// fold, t shares, combine), once in the clear, on the same seed.
func (e *Encrypted) round(row *HERow, seed uint64) error {
	sites, _, err := dataset.Synthetic(dataset.SyntheticConfig{Hospitals: e.n, Seed: int64(seed)})
	if err != nil {
		return err
	}
	spec := roundModel(len(sites[0].Train.Features))
	global := spec.Init(int64(seed))
	run := func(agg Aggregator) (time.Duration, error) {
		start := time.Now()
		updates := make([][]float64, len(sites))
		counts := make([]uint64, len(sites))
		for i, s := range sites {
			local, err := models.Train(spec, global, s.Train.X, s.Train.Y, models.TrainConfig{Steps: 50, BatchSize: 32, LR: 0.01, Seed: int64(i)})
			if err != nil {
				return 0, err
			}
			u := make([]float64, len(local))
			for j := range u {
				u[j] = local[j] - global[j]
			}
			privacy.Clip(u, 1)
			updates[i], counts[i] = u, uint64(s.Train.Len())
		}
		if _, _, err := agg.Sum(updates, 0, counts, 1); err != nil {
			return 0, err
		}
		return time.Since(start), nil
	}
	// Twice each, interleaved, the best of each: training dominates the
	// round, and its time varies more between runs than encryption costs.
	encrypted, plain := time.Duration(math.MaxInt64), time.Duration(math.MaxInt64)
	for range 2 {
		d, err := run(e)
		if err != nil {
			return fmt.Errorf("bench he: encrypted round: %w", err)
		}
		encrypted = min(encrypted, d)
		if d, err = run(plainSum{}); err != nil {
			return fmt.Errorf("bench he: plain round: %w", err)
		}
		plain = min(plain, d)
	}
	es, ps := encrypted.Seconds(), plain.Seconds()
	ratio := es / ps
	row.RoundEncryptedS, row.RoundPlainS, row.RoundRatio = &es, &ps, &ratio
	return nil
}
