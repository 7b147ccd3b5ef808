// Package demo runs a whole region in one process: a throwaway CA, three
// coordinator replicas and several hospital nodes on loopback with
// synthetic cohorts, all over mutual TLS. It runs the key ceremony and a
// training job, and compares the federated model with models each hospital
// could train alone.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"google.golang.org/grpc"

	"regionfl/client"
	"regionfl/coordinator"
	"regionfl/coordinator/fsm"
	"regionfl/identity"
	"regionfl/jobspec"
	"regionfl/models"
	"regionfl/node"
	"regionfl/node/dataset"
	pb "regionfl/proto/regionfl/v1"
)

// Options configure a demo run.
type Options struct {
	Replicas   int
	Hospitals  int
	Rounds     int
	Seed       int64
	LocalSteps int
	Dir        string       // where state goes; "" = a temporary directory removed at the end
	Logger     *slog.Logger // component logs (discarded by default)
	Progress   io.Writer    // one line per round; nil = quiet
}

// DefaultOptions is what `regionfl demo` runs with no flags.
func DefaultOptions() Options {
	return Options{Replicas: 3, Hospitals: 4, Rounds: 10, Seed: 1, LocalSteps: 20}
}

// Round is one committed or aborted round as the researcher sees it.
type Round struct {
	Round        uint32  `json:"round"`
	Contributors int     `json:"contributors"`
	Accuracy     float64 `json:"accuracy"`
	State        string  `json:"state"`
}

// Final compares, for one hospital, a model trained on its data alone with
// the federated model, both on the hospital's own test split.
type Final struct {
	Hospital          string  `json:"hospital"`
	TrainRows         int     `json:"train_rows"`
	LocalAccuracy     float64 `json:"local_accuracy"`
	FederatedAccuracy float64 `json:"federated_accuracy"`
}

// Result is the demo's summary (`regionfl demo --json`).
type Result struct {
	Replicas       int     `json:"replicas"`
	Hospitals      int     `json:"hospitals"`
	Threshold      int     `json:"threshold"`
	JobID          string  `json:"job_id"`
	Rounds         []Round `json:"rounds"`
	Final          []Final `json:"final"`
	GlobalAccuracy float64 `json:"global_accuracy"`
	Seconds        float64 `json:"seconds"`
}

// Run runs the demo region until the job ends.
func Run(ctx context.Context, opt Options) (*Result, error) {
	if opt.Replicas < 1 || opt.Hospitals < 2 || opt.Rounds < 1 {
		return nil, errors.New("demo: need at least 1 replica, 2 hospitals and 1 round")
	}
	if opt.Logger == nil {
		opt.Logger = slog.New(slog.DiscardHandler)
	}
	start := time.Now()
	dir := opt.Dir
	if dir == "" {
		tmp, err := os.MkdirTemp("", "regionfl-demo-")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	ca, err := identity.NewCA("demo", 24*time.Hour)
	if err != nil {
		return nil, err
	}
	// Coordinator replicas: the first bootstraps, the others join it.
	var replicas []*coordinator.Replica
	defer func() {
		for _, r := range replicas {
			r.Stop()
		}
	}()
	for i := 1; i <= opt.Replicas; i++ {
		id := fmt.Sprintf("replica-%d", i)
		c, err := ca.Issue(identity.Identity{Name: id, Role: identity.RoleCoordinator}, 24*time.Hour)
		if err != nil {
			return nil, err
		}
		cfg := coordinator.Config{
			ID: id, DataDir: filepath.Join(dir, id), RaftAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
			Bootstrap: i == 1, Cert: c, CA: ca.Pool(), Logger: opt.Logger, Fast: true,
		}
		if i > 1 {
			cfg.Join = []string{replicas[0].GRPCAddr()}
		}
		r, err := coordinator.Start(ctx, cfg)
		if err != nil {
			return nil, err
		}
		replicas = append(replicas, r)
	}
	addrs := make([]string, len(replicas))
	for i, r := range replicas {
		addrs[i] = r.GRPCAddr()
	}
	if err := waitVoters(ctx, replicas, opt.Replicas); err != nil {
		return nil, err
	}

	sites, heldOut, err := dataset.Synthetic(dataset.SyntheticConfig{Hospitals: opt.Hospitals, Seed: opt.Seed, CaseMixShift: 1})
	if err != nil {
		return nil, err
	}
	hospitals := make([]string, len(sites))
	for i, s := range sites {
		hospitals[i] = s.Name
	}
	threshold := opt.Hospitals/2 + 1

	operator, err := newClient(ca, "operator", identity.RoleOperator, addrs)
	if err != nil {
		return nil, err
	}
	defer operator.Close()
	err = operator.Do(ctx, func(ctx context.Context, conn client.Conn) error {
		_, err := conn.Operator.CreateRegion(ctx, &pb.CreateRegionRequest{Hospitals: hospitals, Threshold: uint32(threshold)}, grpc.Trailer(conn.Trailer))
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("create region: %w", err)
	}

	// Hospital nodes, each with its own data directory and only its own rows.
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for _, s := range sites {
		c, err := ca.Issue(identity.Identity{Name: s.Name, Role: identity.RoleHospital}, 24*time.Hour)
		if err != nil {
			return nil, err
		}
		n, err := node.New(node.Config{
			ID: s.Name, Coordinators: addrs, Cert: c, CA: ca.Pool(),
			DataDir: filepath.Join(dir, s.Name), Data: s, Logger: opt.Logger,
		})
		if err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() { defer wg.Done(); n.Run(ctx) }()
	}

	researcher, err := newClient(ca, "researcher", identity.RoleResearcher, addrs)
	if err != nil {
		return nil, err
	}
	defer researcher.Close()
	mean, std := heldOut.Stats().MeanStd()
	model := models.Spec{Kind: "logreg", Inputs: len(heldOut.Features)}
	spec := &pb.JobSpec{
		Name: "deterioration-early-warning", Dataset: "", Model: jobspec.ToProto(model),
		Rounds: uint32(opt.Rounds), LocalSteps: uint32(opt.LocalSteps), BatchSize: 32, LearningRate: 0.1, Optimizer: "sgd",
		MinHospitals: uint32(threshold), RoundDeadlineMs: 20_000, Purpose: "early warning of clinical deterioration (demo)",
		LegalBasis: "demo: synthetic data", ClipNorm: 10, SampleScale: 1000, Seed: uint64(opt.Seed),
		Strategy: &pb.Strategy{Name: "fedavg", ServerLr: 1}, FeatureMean: mean, FeatureStd: std,
	}
	var jobID string
	err = researcher.Do(ctx, func(ctx context.Context, conn client.Conn) error {
		resp, err := conn.Researcher.SubmitJob(ctx, &pb.SubmitJobRequest{Spec: spec, RequestId: fmt.Sprintf("demo-%d", opt.Seed)}, grpc.Trailer(conn.Trailer))
		jobID = resp.GetJobId()
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("submit job: %w", err)
	}

	res := &Result{Replicas: opt.Replicas, Hospitals: opt.Hospitals, Threshold: threshold, JobID: jobID}
	scaledHeldOut := heldOut.Standardize(mean, std)
	reported := map[uint32]bool{}
	var final *pb.JobInfo
	err = researcher.Do(ctx, func(ctx context.Context, conn client.Conn) error {
		stream, err := conn.Researcher.WatchJob(ctx, &pb.WatchJobRequest{JobId: jobID})
		if err != nil {
			return err
		}
		for {
			m, err := stream.Recv()
			if err == io.EOF {
				return nil
			}
			if err != nil {
				*conn.Trailer = stream.Trailer()
				return err
			}
			final = m.Job
			for _, r := range m.Job.Rounds {
				if reported[r.Round] || (r.State != fsm.RoundCommitted && r.State != fsm.RoundAborted) {
					continue
				}
				reported[r.Round] = true
				row := Round{Round: r.Round, Contributors: len(r.Contributors), State: r.State}
				if r.State == fsm.RoundCommitted {
					params, err := fetchModel(ctx, researcher, jobID, versionOf(m.Job, r.Round))
					if err != nil {
						return err
					}
					met, err := models.Evaluate(model, params, scaledHeldOut.X, scaledHeldOut.Y, 0.5)
					if err != nil {
						return err
					}
					row.Accuracy = met.Accuracy
				}
				res.Rounds = append(res.Rounds, row)
				if opt.Progress != nil {
					fmt.Fprintf(opt.Progress, "round %2d  %-9s  hospitals %d/%d  global accuracy %.3f\n",
						row.Round, row.State, row.Contributors, opt.Hospitals, row.Accuracy)
				}
			}
		}
	})
	if err != nil {
		return nil, fmt.Errorf("watch job: %w", err)
	}
	if final.State != fsm.JobDone {
		return nil, fmt.Errorf("job %s ended %s: %s", jobID, final.State, final.Reason)
	}
	params, err := fetchModel(ctx, researcher, jobID, 0)
	if err != nil {
		return nil, err
	}
	met, err := models.Evaluate(model, params, scaledHeldOut.X, scaledHeldOut.Y, 0.5)
	if err != nil {
		return nil, err
	}
	res.GlobalAccuracy = met.Accuracy

	// Baseline: what each hospital gets alone with the same training budget.
	for _, s := range sites {
		train := node.Scale(spec, s.Train, s.Train)
		test := node.Scale(spec, s.Train, s.Test)
		cfg := jobspec.TrainConfig(spec, s.Name, 0)
		cfg.Steps = opt.Rounds * opt.LocalSteps
		local, err := models.Train(model, model.Init(opt.Seed), train.X, train.Y, cfg)
		if err != nil {
			return nil, err
		}
		lm, err := models.Evaluate(model, local, test.X, test.Y, 0.5)
		if err != nil {
			return nil, err
		}
		fm, err := models.Evaluate(model, params, test.X, test.Y, 0.5)
		if err != nil {
			return nil, err
		}
		res.Final = append(res.Final, Final{Hospital: s.Name, TrainRows: s.Train.Len(), LocalAccuracy: lm.Accuracy, FederatedAccuracy: fm.Accuracy})
	}
	res.Seconds = time.Since(start).Seconds()
	return res, nil
}

func versionOf(j *pb.JobInfo, round uint32) uint32 {
	v := uint32(0)
	for _, r := range j.Rounds {
		if r.State == fsm.RoundCommitted {
			v++
		}
		if r.Round == round {
			break
		}
	}
	return v
}

func fetchModel(ctx context.Context, c *client.Client, jobID string, version uint32) ([]float64, error) {
	var params []float64
	err := c.Do(ctx, func(ctx context.Context, conn client.Conn) error {
		resp, err := conn.Researcher.GetModel(ctx, &pb.GetModelRequest{JobId: jobID, Version: version}, grpc.Trailer(conn.Trailer))
		params = resp.GetModel().GetParams()
		return err
	})
	return params, err
}

func newClient(ca *identity.CA, name string, role identity.Role, addrs []string) (*client.Client, error) {
	c, err := ca.Issue(identity.Identity{Name: name, Role: role}, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	return client.New(addrs, identity.ClientConfig(c, ca.Pool()))
}

// waitVoters waits until the cluster has n voters with known addresses.
func waitVoters(ctx context.Context, replicas []*coordinator.Replica, n int) error {
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, r := range replicas {
			if !r.IsLeader() {
				continue
			}
			rs, err := r.Store().Replicas()
			if err != nil {
				break
			}
			ready := 0
			for _, x := range rs {
				if x.Voter && x.GRPCAddr != "" {
					ready++
				}
			}
			if ready >= n {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
	return fmt.Errorf("demo: cluster of %d replicas did not form within 30s", n)
}
