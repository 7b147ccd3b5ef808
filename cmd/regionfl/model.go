package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"regionfl/client"
	"regionfl/jobspec"
	pb "regionfl/proto/regionfl/v1"
)

// modelFile is the JSON a downloaded model is saved as.
type modelFile struct {
	JobID       string    `json:"job_id"`
	Version     uint32    `json:"version"`
	ModelHash   string    `json:"model_hash"`
	Model       any       `json:"model"`
	Params      []float64 `json:"params"`
	FeatureMean []float64 `json:"feature_mean,omitempty"`
	FeatureStd  []float64 `json:"feature_std,omitempty"`
}

func newModelCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "model", Short: "Download trained models"}
	var (
		cf      clientFlags
		out     string
		version uint32
	)
	dl := &cobra.Command{
		Use:   "download ID",
		Short: "Download a job's model (the latest version unless --version) as JSON",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return usageError{errors.New("-o FILE is required")}
			}
			c, err := cf.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			// The job first: its model fixes how large an answer to accept.
			info, err := getJob(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			spec := info.Spec
			var m *pb.Model
			err = call(cmd.Context(), c, func(ctx context.Context, conn client.Conn) error {
				resp, err := conn.Researcher.GetModel(ctx, &pb.GetModelRequest{JobId: args[0], Version: version},
					client.ModelMessage(jobspec.FromProto(spec.GetModel()).NumParams()))
				m = resp.GetModel()
				return err
			})
			if err != nil {
				return err
			}
			if version == 0 && m.Version == 0 {
				// Only the initial model exists: nothing was trained.
				why := ""
				if info.GetReason() != "" {
					why = ": " + info.GetReason()
				}
				return fmt.Errorf("job %s has no trained model (state %s%s)", args[0], info.GetState(), why)
			}
			f := modelFile{JobID: m.JobId, Version: m.Version, ModelHash: m.ModelHash,
				Model: jobspec.FromProto(m.Model), Params: m.Params,
				FeatureMean: spec.GetFeatureMean(), FeatureStd: spec.GetFeatureStd()}
			b, err := json.MarshalIndent(f, "", "  ")
			if err != nil {
				return err
			}
			if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
				return err
			}
			fmt.Fprintf(cmd.ErrOrStderr(), "saved %s version %d (%d parameters, model %s) to %s\n", m.JobId, m.Version, len(m.Params), m.ModelHash[:12], out)
			return nil
		},
	}
	cf.register(dl.Flags())
	dl.Flags().StringVarP(&out, "output", "o", "", "file to write")
	dl.Flags().Uint32Var(&version, "version", 0, "model version (0 = latest)")
	cmd.AddCommand(dl)
	return cmd
}
