package main

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/spf13/cobra"

	"regionfl/node"
	"regionfl/node/dataset"
	"regionfl/node/metrics"
	"regionfl/node/policy"
)

func newNodeCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "node", Short: "Run a hospital node"}
	var (
		cfg         node.Config
		tf          tlsFlags
		coords      string
		data        string
		csv         dataset.CSVOptions
		testFrac    float64
		seed        int64
		logLevel    string
		datasetName string
		policyPath  string
		metricsAddr string
	)
	run := &cobra.Command{
		Use:   "run",
		Short: "Run the hospital agent: dials out to the coordinators, trains on local data",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg.Coordinators = splitAddrs(coords)
			if cfg.ID == "" || len(cfg.Coordinators) == 0 || data == "" || cfg.DataDir == "" {
				return usageError{errors.New("--id, --coordinator, --data and --data-dir are required")}
			}
			if !(testFrac > 0 && testFrac < 1) {
				return usageError{errors.New("--test-fraction must be between 0 and 1")}
			}
			var err error
			if cfg.Cert, cfg.CA, err = tf.load(); err != nil {
				return err
			}
			if cfg.Logger, err = logger(logLevel); err != nil {
				return err
			}
			table, dropped, err := dataset.ReadCSV(data, csv)
			if err != nil {
				return err
			}
			train, test := table.Split(testFrac, seed)
			cfg.Data = dataset.Site{Name: datasetName, Train: train, Test: test, Dropped: dropped}
			cfg.Logger.Info("site data loaded", "rows", table.Len(), "dropped", dropped.Rows,
				"features", len(table.Features), "train", train.Len(), "test", test.Len())
			if dropped.Rows > 0 {
				cfg.Logger.Warn("rows with missing or unusable cells dropped; jobs with missing: error will be declined",
					"rows", dropped.Rows, "first_line", dropped.Line, "first_column", dropped.Column)
			}
			if cfg.HPKEKeyFile, err = node.HPKEKeyBeside(tf.key); err != nil {
				return err
			}
			if policyPath != "" {
				if cfg.Policy, err = policy.Open(policyPath); err != nil {
					return err
				}
			}
			if metricsAddr != "" {
				cfg.Metrics = metrics.NewNode()
				_, stop, err := cfg.Metrics.Serve(metricsAddr)
				if err != nil {
					return fmt.Errorf("--metrics-addr: %w", err)
				}
				defer stop()
			}
			n, err := node.New(cfg)
			if err != nil {
				return err
			}
			err = n.Run(cmd.Context())
			if cmd.Context().Err() != nil {
				return nil
			}
			return err
		},
	}
	f := run.Flags()
	f.StringVar(&cfg.ID, "id", "", "hospital ID (must match the name in its certificate)")
	f.StringVar(&coords, "coordinator", "", "coordinator gRPC addresses, comma-separated")
	f.StringVar(&data, "data", "", "the site's CSV file (header row, binary label column)")
	f.StringVar(&cfg.DataDir, "data-dir", "", "directory for the node's keys and state (0600)")
	f.StringVar(&csv.Label, "label", "label", "name of the 0/1 label column")
	f.StringSliceVar(&csv.Columns, "columns", nil, "feature columns to use (default: all but the label)")
	f.StringVar(&csv.Missing, "missing", "error", "missing or non-numeric cells: error, or drop the row")
	f.StringVar(&datasetName, "dataset", "", "name of the dataset this site serves; jobs naming another are refused")
	f.Float64Var(&testFrac, "test-fraction", 0.3, "share of rows kept for local evaluation")
	f.Int64Var(&seed, "seed", 1, "seed of the train/test split")
	f.StringVar(&policyPath, "policy", "", "the site's policy file (YAML, reloaded when it changes): accepted models, purposes, K, rounds, DP floor, ε budget")
	f.StringVar(&metricsAddr, "metrics-addr", "", "host:port for Prometheus /metrics (plain HTTP, no auth: keep it on loopback, e.g. 127.0.0.1:9465); empty: off")
	f.StringVar(&logLevel, "log-level", "info", "debug, info, warn or error")
	tf.register(f)
	cmd.AddCommand(run, newNodeInspectCmd(), newIdentityInitCmd("hospital"), newIdentityRenewCmd("hospital"))
	return cmd
}

// newNodeInspectCmd is `regionfl node inspect`: what a job on this CSV
// must say (its model's inputs), read exactly as node run reads it, and
// without printing a single value.
func newNodeInspectCmd() *cobra.Command {
	var (
		data   string
		csv    dataset.CSVOptions
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "inspect",
		Short: "Show the features a job on this CSV must use (count, names, rows, label balance); prints no values",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if data == "" {
				return usageError{errors.New("--data is required")}
			}
			table, dropped, err := dataset.ReadCSV(data, csv)
			if err != nil {
				return err
			}
			var positives int
			for _, y := range table.Y {
				if y == 1 {
					positives++
				}
			}
			if asJSON {
				return json.NewEncoder(cmd.OutOrStdout()).Encode(map[string]any{
					"features": len(table.Features), "columns": table.Features, "label": csv.Label,
					"rows": table.Len(), "positives": positives, "dropped_rows": dropped.Rows,
				})
			}
			w := cmd.OutOrStdout()
			fmt.Fprintf(w, "%s: %d rows (%d with label 1), %d dropped\n", data, table.Len(), positives, dropped.Rows)
			fmt.Fprintf(w, "label column: %s\n", csv.Label)
			fmt.Fprintf(w, "features: %d (a job's model needs inputs: %d)\n", len(table.Features), len(table.Features))
			for i, c := range table.Features {
				fmt.Fprintf(w, "  %2d  %s\n", i+1, c)
			}
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&data, "data", "", "the site's CSV file")
	f.StringVar(&csv.Label, "label", "label", "name of the 0/1 label column")
	f.StringSliceVar(&csv.Columns, "columns", nil, "feature columns to use (default: all but the label)")
	f.StringVar(&csv.Missing, "missing", "error", "missing or non-numeric cells: error, or drop the row")
	f.BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}
