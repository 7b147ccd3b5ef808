package main

import (
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"regionfl/demo"
	"regionfl/jobspec"
	"regionfl/models"
	"regionfl/node/dataset"
)

func newDemoCmd() *cobra.Command {
	opt := demo.DefaultOptions()
	var (
		asJSON   bool
		logLevel string
		csvSites []string
		csvOpts  dataset.CSVOptions
		heart    string
		testFrac float64
		stay     bool
	)
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run a whole region in one process: 3 replicas, hospital nodes, synthetic or real site data",
		Long: `Starts a throwaway region CA, coordinator replicas and hospital nodes on
loopback (all over mutual TLS), runs the threshold key ceremony and a training
job, prints one line per round, and compares on each hospital's test split the
federated model with a model trained on that hospital alone and one trained on
the pooled rows.

Data: a synthetic non-IID region by default; --csv NAME=PATH (repeated, one
hospital per file) with --label COLUMN; or --heart-disease DIR, the four UCI
Heart Disease centres with the FLamby preprocessing.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opt.Hospitals < 3 || opt.Hospitals > dataset.MaxSyntheticHospitals {
				return usageError{fmt.Errorf("--hospitals: %d is not between 3 and %d", opt.Hospitals, dataset.MaxSyntheticHospitals)}
			}
			if opt.Rounds < 1 || opt.Rounds > 1000 {
				return usageError{fmt.Errorf("--rounds: %d is not between 1 and 1000", opt.Rounds)}
			}
			if !(testFrac > 0 && testFrac < 1) {
				return usageError{fmt.Errorf("--test-fraction: %v is not between 0 and 1", testFrac)}
			}
			switch {
			case len(csvSites) > 0 && heart != "":
				return usageError{fmt.Errorf("--csv and --heart-disease exclude each other")}
			case len(csvSites) > 0:
				sites, err := loadCSVSites(csvSites, csvOpts, testFrac, opt.Seed)
				if err != nil {
					return err
				}
				// The demo's job allows what the hospitals' files needed.
				opt.Sites, opt.Missing = sites, csvOpts.Missing
			case heart != "":
				// FLamby's own split, so figures compare with its benchmark.
				sites, err := dataset.HeartDisease(heart, dataset.FLambySplitSeed)
				if err != nil {
					return err
				}
				opt.Sites = sites
			}
			if logLevel != "" {
				l, err := logger(logLevel)
				if err != nil {
					return err
				}
				opt.Logger = l
			}
			out := cmd.OutOrStdout()
			if !asJSON {
				opt.Progress = out
				n := opt.Hospitals
				if opt.Sites != nil {
					n = len(opt.Sites)
				}
				fmt.Fprintf(out, "regionfl demo: %d coordinator replicas, %d hospitals, %d rounds, %s, %s scaling (seed %d)\n",
					opt.Replicas, n, opt.Rounds, opt.Strategy.WithDefaults().Name, opt.Scaling, opt.Seed)
			}
			printed := false
			if stay {
				opt.Hold = func(res *demo.Result) {
					if !asJSON {
						printSummary(out, res)
						printed = true
					}
					fmt.Fprintf(cmd.ErrOrStderr(), "\nthe region keeps running for the web view: %s\npress Ctrl-C to stop\n", res.WebURL)
					<-cmd.Context().Done()
				}
			}
			res, err := demo.Run(cmd.Context(), opt)
			if err != nil {
				return err
			}
			if printed {
				return nil
			}
			if asJSON {
				enc := json.NewEncoder(out)
				enc.SetIndent("", "  ")
				return enc.Encode(res)
			}
			printSummary(out, res)
			return nil
		},
	}
	f := cmd.Flags()
	f.IntVar(&opt.Rounds, "rounds", opt.Rounds, "training rounds")
	f.IntVar(&opt.Hospitals, "hospitals", opt.Hospitals, fmt.Sprintf("synthetic hospital nodes (3-%d; a region too large for every hospital to hold key shares gets a committee of 5)", dataset.MaxSyntheticHospitals))
	f.Int64Var(&opt.Seed, "seed", opt.Seed, "seed of the synthetic region, the --csv train/test splits and training (--heart-disease: FLamby's split)")
	f.IntVar(&opt.LocalSteps, "local-steps", opt.LocalSteps, "local mini-batch steps per round")
	f.IntVar(&opt.BatchSize, "batch-size", opt.BatchSize, "rows per local step")
	f.Float64Var(&opt.LR, "lr", opt.LR, "local learning rate")
	f.StringVar(&opt.Optimizer, "optimizer", opt.Optimizer, "local optimizer: sgd or adam")
	f.StringVar(&opt.Model, "model", "logreg", "the model: logreg, or mlp:H1,H2,... (hidden widths; mlp:1024,1024 has about 1M parameters)")
	f.StringVar(&opt.Strategy.Name, "strategy", opt.Strategy.Name, "fedavg, fedprox, fedadam, fedyogi or fedadagrad")
	f.Float64Var(&opt.Strategy.ServerLR, "server-lr", 0, "server learning rate (default: 1 for fedavg/fedprox, 0.01 adaptive)")
	f.Float64Var(&opt.ProxMu, "prox-mu", 0, "FedProx proximal weight μ")
	f.StringVar(&opt.Scaling, "scaling", opt.Scaling, "feature scaling: region (encrypted region statistics) or site (each its own)")
	f.StringArrayVar(&csvSites, "csv", nil, "a hospital's CSV file as NAME=PATH (repeat for each hospital)")
	f.StringVar(&csvOpts.Label, "label", "label", "with --csv: the 0/1 label column")
	f.StringSliceVar(&csvOpts.Columns, "columns", nil, "with --csv: feature columns (default: all but the label)")
	f.StringVar(&csvOpts.Missing, "missing", "error", "with --csv: missing or non-numeric cells: error, or drop the row (the demo's job then allows dropped rows: missing: drop)")
	f.Float64Var(&testFrac, "test-fraction", 0.3, "with --csv: share of each site's rows kept for testing")
	f.StringVar(&heart, "heart-disease", "", "directory with the four UCI Heart Disease files (scripts/fetch-heart-disease.sh)")
	f.IntVar(&opt.KillLeaderRound, "kill-leader-round", 0, "stop the leader replica while round N collects updates (0: never)")
	f.IntVar(&opt.DropHospitals, "drop-hospitals", 0, "take this many hospitals offline from the middle of the run")
	f.BoolVar(&asJSON, "json", false, "print one JSON object instead of tables")
	f.StringVar(&logLevel, "log-level", "", "also write component logs to stderr at this level (debug, info, warn, error)")
	f.StringVar(&opt.Dir, "keep", "", "keep the region's state in this directory (and write audit.jsonl and ca.crt there)")
	f.BoolVar(&stay, "stay", false, "after the job, keep the region running (for the web view) until Ctrl-C")
	return cmd
}

// loadCSVSites reads one hospital per NAME=PATH argument.
func loadCSVSites(args []string, opts dataset.CSVOptions, testFrac float64, seed int64) ([]dataset.Site, error) {
	var sites []dataset.Site
	seen := map[string]bool{}
	for _, a := range args {
		name, path, ok := strings.Cut(a, "=")
		if !ok || name == "" || path == "" {
			return nil, usageError{fmt.Errorf("--csv %q: want NAME=PATH", a)}
		}
		if seen[name] {
			return nil, usageError{fmt.Errorf("--csv: hospital %q named twice", name)}
		}
		seen[name] = true
		t, dropped, err := dataset.ReadCSV(path, opts)
		if err != nil {
			return nil, err
		}
		train, test := t.Split(testFrac, seed)
		if train.Len() == 0 || test.Len() == 0 {
			return nil, fmt.Errorf("%s: %d rows are too few to split into train and test", path, t.Len())
		}
		sites = append(sites, dataset.Site{Name: name, Train: train, Test: test, Dropped: dropped})
	}
	return sites, nil
}

func printSummary(w io.Writer, res *demo.Result) {
	holders := ""
	if res.Committee > 0 {
		holders = fmt.Sprintf(" (a committee of %d per key epoch)", res.Committee)
	}
	fmt.Fprintf(w, "\njob %s: threshold %d of %d hospitals%s, %.1fs\n", res.JobID, res.Threshold, res.Hospitals, holders, res.Seconds)
	what := "held-out"
	if res.Data != "synthetic" {
		what = "mean test"
	}
	fmt.Fprintf(w, "%s accuracy: federated %.3f, pooled training %.3f\n\n", what, res.GlobalAccuracy, res.PooledAccuracy)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "HOSPITAL\tTRAIN\tTEST\tLOCAL-ONLY\tFEDERATED\tPOOLED")
	for _, f := range res.Final {
		fmt.Fprintf(tw, "%s\t%d\t%d\t%.3f\t%.3f\t%.3f\n", f.Hospital, f.TrainRows, f.TestRows, f.LocalAccuracy, f.FederatedAccuracy, f.PooledAccuracy)
	}
	fmt.Fprintf(tw, "mean\t\t\t%.3f\t%.3f\t%.3f\n", res.MeanLocalAccuracy, res.MeanFederatedAccuracy, res.MeanPooledAccuracy)
	tw.Flush()
	// The region's figures of the last model the sites evaluated.
	for i := len(res.Rounds) - 1; i >= 0; i-- {
		m := res.Rounds[i].SiteMetrics
		if m == nil || len(m.OperatingPoints) == 0 {
			continue
		}
		a := jobspec.AlarmBurden{ModelVersion: m.ModelVersion, Patients: m.N, Points: m.OperatingPoints, Target: demo.DemoTargetSensitivity}
		a.Reported, a.Found = models.ForSensitivity(m.OperatingPoints, demo.DemoTargetSensitivity)
		printAlarmBurden(w, a)
		break
	}
	if res.AuditFile != "" {
		dir := filepath.Dir(res.AuditFile)
		fmt.Fprintf(w, "\naudit log: %s\ncheck it:  regionfl audit verify %s --ca %s\n", res.AuditFile, res.AuditFile, filepath.Join(dir, "ca.crt"))
	}
}
