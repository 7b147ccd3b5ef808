package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"regionfl/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Run published benchmarks in process, with the real encrypted aggregation"}
	var (
		data    string
		seeds   int
		resplit bool
		model   string
		outMD   string
		outJSON string
		quick   bool
		workers int
	)
	heart := &cobra.Command{
		Use:   "heart",
		Short: "FLamby's Fed-Heart-Disease benchmark: 5 strategies × 2 scalings, baselines and DP",
		Long: `Runs FLamby's Fed-Heart-Disease protocol (4 centres, logistic regression,
15 rounds × 100 local SGD steps, batch 4) with every round aggregated under
threshold encryption: a 3-of-4 key ceremony, then per round each centre
encrypts its clipped weighted update, the sum is decrypted by 3 decryption
shares, and the server optimizer steps.

It runs FedAvg, FedProx, FedAdam, FedYogi and FedAdagrad with per-centre
("site", FLamby's choice) and region-wide scaling (statistics summed under
the same encryption), pooled and local baselines, and FedAvg with
differential privacy at several noise multipliers, over seeds 1..N. Each
seed sets the training order; every centre is split as FLamby splits it
(scikit-learn's stratified train_test_split, random_state 43, reproduced
exactly), or with --resplit by random_state = seed. Every federated run
is repeated with the plain sum on the same seed, and the report shows the
encrypted minus plain accuracy per seed.

The Markdown report goes to stdout (and to --out-md); --out-json writes the
same as JSON. Progress goes to stderr.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if data == "" {
				return usageError{errors.New("--data DIR is required (the four UCI Heart Disease files; scripts/fetch-heart-disease.sh)")}
			}
			if quick {
				seeds = 1
			}
			if seeds < 1 || seeds > 100 {
				return usageError{fmt.Errorf("--seeds: %d is not between 1 and 100", seeds)}
			}
			cfg := bench.DefaultConfig(data)
			cfg.Seeds = cfg.Seeds[:0]
			for s := 1; s <= seeds; s++ {
				cfg.Seeds = append(cfg.Seeds, int64(s))
			}
			cfg.Workers = workers
			cfg.Resplit = resplit
			cfg.Model = model
			cfg.Progress = cmd.ErrOrStderr()
			agg, err := bench.NewEncrypted(4, 3)
			if err != nil {
				return err
			}
			rep, err := bench.Run(cfg, agg)
			if err != nil {
				return err
			}
			md := rep.Markdown()
			if outMD != "" {
				if err := os.WriteFile(outMD, []byte(md), 0o644); err != nil {
					return err
				}
			}
			if outJSON != "" {
				b, err := json.MarshalIndent(rep, "", "  ")
				if err != nil {
					return err
				}
				if err := os.WriteFile(outJSON, append(b, '\n'), 0o644); err != nil {
					return err
				}
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), md)
			return err
		},
	}
	f := heart.Flags()
	f.StringVar(&data, "data", "", "directory with the four UCI Heart Disease files")
	f.IntVar(&seeds, "seeds", 5, "run seeds 1..N")
	f.StringVar(&outMD, "out-md", "", "also write the Markdown report to this file")
	f.StringVar(&outJSON, "out-json", "", "write the report as JSON to this file")
	f.BoolVar(&quick, "quick", false, "one seed only")
	f.BoolVar(&resplit, "resplit", false, "each seed splits the centres anew (random_state = seed) instead of FLamby's random_state 43")
	f.IntVar(&workers, "workers", 0, "experiments run in parallel (default: GOMAXPROCS)")
	f.StringVar(&model, "model", "logreg", "the model on the 13 features: logreg (FLamby's) or mlp:H1,H2,...")
	cmd.AddCommand(heart, newBenchHECmd())
	return cmd
}

func newBenchHECmd() *cobra.Command {
	var (
		params, hospitals string
		threshold         int
		asJSON, noRound   bool
		seed              uint64
	)
	cmd := &cobra.Command{
		Use:   "he",
		Short: "What encryption costs: bytes, encrypt, fold, share and combine per model and region size",
		Long: `Measures the encrypted aggregation of package he in one process, for every
combination of --params and --hospitals: each hospital encrypts a clipped
random update under its own key and sends the bytes; the coordinator parses
and folds each into its running sum as it arrives (memory: the sums and one
update in flight); t decryptors give their shares and the sum is combined.
Up to 64 hospitals every hospital holds Shamir shares; beyond, up to 1,024,
a committee of the first 5 does (one ceremony of all hospitals, each
sealing 5 shares), under the parameter set with 10 bits of headroom.
The same vectors, sent as float32, are folded in the same run as the
baseline of fold_vs_float32. At 1M parameters and 4 hospitals it also times
one end-to-end round of a ~1M-parameter MLP with the encrypted and the
plain sum (round_ratio). Run it alone on the machine: it is timed.

Keys of --json, one object per row: params, hospitals, threshold,
committee, quant_bits, bytes_per_param (what one hospital sends), share_bytes_per_param,
encrypt_s (one hospital), fold_s (all updates, parsing included),
fold_vs_float32, share_s (one decryptor), combine_s,
coordinator_peak_bytes, update_bytes, max_rel_error (largest error over
the largest value of the exact sum), round_encrypted_s, round_plain_s,
round_ratio.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ps, err := intList("--params", params)
			if err != nil {
				return err
			}
			hs, err := intList("--hospitals", hospitals)
			if err != nil {
				return err
			}
			rows, err := bench.RunHE(bench.HEConfig{Params: ps, Hospitals: hs, Threshold: threshold, Round: !noRound, Seed: seed, Progress: cmd.ErrOrStderr()})
			if err != nil {
				return err
			}
			if asJSON {
				enc := json.NewEncoder(cmd.OutOrStdout())
				enc.SetIndent("", "  ")
				return enc.Encode(rows)
			}
			printHERows(cmd.OutOrStdout(), rows)
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&params, "params", "10000,1000000", "model sizes (values per update), comma-separated, each 1 to 10000000")
	f.StringVar(&hospitals, "hospitals", "4,16", "region sizes (updates per aggregate), comma-separated, each 2 to 1024")
	f.IntVar(&threshold, "threshold", 0, "decryptors per aggregate (default: 3, or fewer hospitals)")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	f.BoolVar(&noRound, "no-round", false, "skip the end-to-end MLP round")
	f.Uint64Var(&seed, "seed", 1, "seed of the random updates and the round's data")
	return cmd
}

// intList parses a comma-separated list of positive integers.
func intList(flag, s string) ([]int, error) {
	var out []int
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		n, err := strconv.Atoi(f)
		if err != nil || n < 1 {
			return nil, usageError{fmt.Errorf("%s: %q is not a positive integer", flag, f)}
		}
		out = append(out, n)
	}
	return out, nil
}

func printHERows(w io.Writer, rows []bench.HERow) {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "params\thospitals\tt of c\tB/param\tshare B/param\tencrypt s\tfold s\tfold/float32\tshare s\tcombine s\tpeak MB\tmax rel err\tround enc s\tround plain s\tround ratio\t")
	for _, r := range rows {
		round := "-\t-\t-"
		if r.RoundRatio != nil {
			round = fmt.Sprintf("%.3f\t%.3f\t%.2f", *r.RoundEncryptedS, *r.RoundPlainS, *r.RoundRatio)
		}
		fmt.Fprintf(tw, "%d\t%d\t%d of %d\t%.3f\t%.3f\t%.4f\t%.4f\t%.2f\t%.4f\t%.4f\t%.1f\t%.1e\t%s\t\n",
			r.Params, r.Hospitals, r.Threshold, r.Committee, r.BytesPerParam, r.ShareBytesPerParam, r.EncryptS, r.FoldS, r.FoldVsFloat32,
			r.ShareS, r.CombineS, float64(r.CoordinatorPeakBytes)/1e6, r.MaxRelError, round)
	}
	tw.Flush()
}
