package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"regionfl/bench"
)

func newBenchCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "bench", Short: "Run published benchmarks in process, with the real encrypted aggregation"}
	var (
		data    string
		seeds   int
		resplit bool
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
	cmd.AddCommand(heart)
	return cmd
}
