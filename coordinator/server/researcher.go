package server

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"regionfl/coordinator/fsm"
	"regionfl/coordinator/round"
	"regionfl/identity"
	"regionfl/jobspec"
	pb "regionfl/proto/regionfl/v1"
)

// researcherService is the API of researchers' CLIs.
type researcherService struct{ *Server }

func (s researcherService) SubmitJob(ctx context.Context, req *pb.SubmitJobRequest) (*pb.SubmitJobResponse, error) {
	if err := s.leader(ctx); err != nil {
		return nil, err
	}
	if req.Spec == nil {
		return nil, status.Error(codes.InvalidArgument, "spec: missing")
	}
	switch {
	case req.RequestId == "":
		return nil, status.Error(codes.InvalidArgument, "request_id: missing (it is signed with the spec)")
	case len(req.RequestId) > 128:
		return nil, status.Error(codes.InvalidArgument, "request_id: longer than 128 bytes")
	}
	spec := proto.Clone(req.Spec).(*pb.JobSpec)
	if err := jobspec.Validate(spec); err != nil {
		return nil, toStatus(ctx, err)
	}
	// Nodes accept only what the researcher signed, so the server adds no
	// default of its own: the signature must cover the spec as sent.
	cert, err := peerCert(ctx)
	if err != nil {
		return nil, err
	}
	digest := jobspec.SignedDigest(spec)
	if err := identity.CheckSignature(cert.Raw, req.Signature, identity.StatementJob, identity.JobFields(digest[:], req.RequestId)...); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "signature: %v (sign the spec with its defaults filled in, as client.SubmitJobRequest does)", err)
	}
	// A job needing more hospitals than the region has would only fail
	// after its decision window.
	var hospitals int
	s.read(func(st *fsm.State) {
		if st.Region != nil {
			hospitals = len(st.Region.Hospitals)
		}
	})
	if hospitals > 0 && int(spec.MinHospitals) > hospitals {
		return nil, status.Errorf(codes.InvalidArgument, "min_hospitals: %d is more than the region's %d hospitals", spec.MinHospitals, hospitals)
	}
	by := caller(ctx)
	{
		// A retry returns the job the key made; the key is its submitter's
		// (the job's spec may have changed since, e.g. its region scaling).
		var existing, owner string
		s.read(func(st *fsm.State) {
			existing = st.Requests[req.RequestId]
			if j := st.Jobs[existing]; j != nil {
				owner = j.SubmittedBy
			}
		})
		switch {
		case existing != "" && owner == by.String():
			return &pb.SubmitJobResponse{JobId: existing}, nil
		case existing != "":
			return nil, status.Errorf(codes.AlreadyExists, "request_id: %q was used by another researcher", req.RequestId)
		}
	}
	// A site contributes its statistics to one decryption per dataset
	// (two would let their difference isolate a site): a job wanting region
	// scaling reuses the statistics the region committed for an earlier
	// job on the same dataset and inputs, if there is one.
	// A job still computing that scaling has every site's statistics
	// promised to it: a second statistics round would be refused by every
	// site, so the submit is refused until the first one committed.
	var scalingFrom, computing string
	if jobspec.NeedsScaling(spec) {
		s.read(func(st *fsm.State) {
			for _, id := range slices.Backward(st.JobOrder) {
				j := st.Jobs[id]
				if j.Spec.GetScaling() != jobspec.ScalingRegion || j.Spec.Dataset != spec.Dataset || j.Spec.Model.GetInputs() != spec.Model.GetInputs() {
					continue
				}
				if len(j.Spec.FeatureMean) > 0 {
					spec.FeatureMean, spec.FeatureStd, scalingFrom = slices.Clone(j.Spec.FeatureMean), slices.Clone(j.Spec.FeatureStd), j.ID
					return
				}
				if !j.Finished() && computing == "" {
					computing = j.ID
				}
			}
		})
	}
	if scalingFrom == "" && computing != "" {
		return nil, status.Errorf(codes.FailedPrecondition,
			"scaling: job %s is still computing the region scaling of this dataset and inputs (its statistics round has not committed); submit again once it has, to reuse it, or use scaling: site or reference", computing)
	}
	model := jobspec.FromProto(spec.Model)
	id := newJobID()
	err = s.store.Propose(&pb.SubmitJobCommand{
		JobId: id, Spec: spec, RequestId: req.RequestId, SubmittedBy: by.String(),
		InitialParams: model.Init(int64(spec.Seed)), ModelHash: model.Hash(),
		Signature: req.Signature, Certificate: cert.Raw,
	})
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	s.read(func(st *fsm.State) { id = st.Requests[req.RequestId] })
	s.log.Info("job submitted", "job_id", id, "by", by.String(), "model_hash", model.Hash(), "purpose", spec.Purpose, "scaling_from", scalingFrom)
	return &pb.SubmitJobResponse{JobId: id, ScalingFrom: scalingFrom}, nil
}

func newJobID() string {
	b := make([]byte, 6)
	rand.Read(b)
	return "job-" + hex.EncodeToString(b)
}

func (s researcherService) GetJob(ctx context.Context, req *pb.GetJobRequest) (*pb.GetJobResponse, error) {
	if err := s.leaderRead(ctx); err != nil {
		return nil, err
	}
	info, err := s.jobInfo(req.JobId)
	if err != nil {
		return nil, err
	}
	return &pb.GetJobResponse{Job: info}, nil
}

func (s researcherService) ListJobs(ctx context.Context, _ *pb.ListJobsRequest) (*pb.ListJobsResponse, error) {
	if err := s.leaderRead(ctx); err != nil {
		return nil, err
	}
	out := &pb.ListJobsResponse{}
	s.read(func(st *fsm.State) {
		for _, id := range st.JobOrder {
			out.Jobs = append(out.Jobs, jobInfo(st.Jobs[id]))
		}
	})
	return out, nil
}

func (s researcherService) WatchJob(req *pb.WatchJobRequest, stream pb.ResearcherService_WatchJobServer) error {
	ctx := stream.Context()
	var last *pb.JobInfo
	for {
		if err := s.leaderRead(ctx); err != nil {
			return err
		}
		ch := s.store.FSM().Changed()
		info, err := s.jobInfo(req.JobId)
		if err != nil {
			return err
		}
		if !proto.Equal(info, last) {
			if err := stream.Send(&pb.WatchJobResponse{Job: info}); err != nil {
				return err
			}
			last = info
		}
		if info.State == fsm.JobDone || info.State == fsm.JobFailed || info.State == fsm.JobCancelled {
			return nil
		}
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

func (s researcherService) CancelJob(ctx context.Context, req *pb.CancelJobRequest) (*pb.CancelJobResponse, error) {
	if err := s.leader(ctx); err != nil {
		return nil, err
	}
	info, err := s.jobInfo(req.JobId)
	if err != nil {
		return nil, err
	}
	if info.State == fsm.JobCancelled {
		return &pb.CancelJobResponse{}, nil // a retry after a lost answer
	}
	reason := req.Reason
	if reason == "" {
		reason = "cancelled by " + caller(ctx).String()
	}
	err = s.store.ProposeAs(caller(ctx).String(), &pb.EndJobCommand{JobId: req.JobId, State: fsm.JobCancelled, Reason: reason})
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	s.log.Info("job cancelled", "job_id", req.JobId, "by", caller(ctx).String())
	return &pb.CancelJobResponse{}, nil
}

func (s researcherService) GetModel(ctx context.Context, req *pb.GetModelRequest) (*pb.GetModelResponse, error) {
	m, err := s.model(ctx, req.JobId, req.Version)
	if err != nil {
		return nil, err
	}
	return &pb.GetModelResponse{Model: m}, nil
}

func (s *Server) jobInfo(id string) (*pb.JobInfo, error) {
	var (
		info *pb.JobInfo
		job  *fsm.Job
	)
	s.read(func(st *fsm.State) {
		if j, ok := st.Jobs[id]; ok {
			info, job = jobInfo(j), j.Clone()
		}
	})
	if info == nil {
		return nil, status.Errorf(codes.NotFound, "job_id: no job %q", id)
	}
	// Outside the FSM's lock: the engine folds updates under its own lock
	// and reads the FSM while holding it.
	info.Offline = s.engine.Offline(job)
	return info, nil
}

// missingWhy says why accepted hospital h has nothing counted in the
// job's round i, or "" if it has: offline (nothing from it in that round
// and the round.OfflineAfterRounds before, round.SilentBefore, since the
// first of them), no update by the deadline, or an update that arrived
// but is not in the contributor set.
func missingWhy(j *fsm.Job, i int, h string) string {
	r := j.Rounds[i]
	switch {
	case slices.Contains(r.Contributors, h):
		return ""
	case r.Contributed(h):
		return "sent, not counted: it arrived after the contributor set was fixed"
	}
	if n := round.SilentBefore(j, i, h); n >= round.OfflineAfterRounds {
		s := j.Rounds[i-n]
		return fmt.Sprintf("offline since round %d (opened %s)", s.Number, time.UnixMilli(s.OpenedMs).UTC().Format(time.RFC3339))
	}
	return "no update by the deadline"
}

// jobInfo is the researcher's view of a job: decisions, rounds and
// contributors, never update contents.
func jobInfo(j *fsm.Job) *pb.JobInfo {
	info := &pb.JobInfo{
		JobId: j.ID, Spec: j.Spec, State: j.State, Reason: j.Reason,
		Accepted: slices.Clone(j.Accepted), Refused: map[string]string{},
		ModelVersion: j.Latest().Version, SubmittedBy: j.SubmittedBy, SubmittedUnixMs: j.SubmittedMs,
	}
	for h, r := range j.Refused {
		info.Refused[h] = r
	}
	info.EpsilonSpent = j.EpsilonSpent()
	for i, r := range j.Rounds {
		ri := &pb.RoundInfo{Round: r.Number, State: r.State, Reason: r.Reason, OpenedUnixMs: r.OpenedMs, ClosedUnixMs: r.ClosedMs,
			RegionMetrics: r.RegionMetrics, Attempts: r.Attempt, Decryptors: slices.Clone(r.Active),
			OpenedBy: r.OpenedBy, ClosedBy: r.ClosedBy}
		if r.State != fsm.RoundCollecting {
			for _, h := range j.Accepted {
				if why := missingWhy(j, i, h); why != "" {
					ri.Missing = append(ri.Missing, h)
					if ri.MissingWhy == nil {
						ri.MissingWhy = map[string]string{}
					}
					ri.MissingWhy[h] = why
				}
			}
			slices.Sort(ri.Missing)
		}
		for _, c := range r.Contributions {
			ri.Contributors = append(ri.Contributors, c.Hospital)
			if c.SiteMetrics != nil && j.Spec.GetShareSiteMetrics() {
				if ri.SiteMetrics == nil {
					ri.SiteMetrics = map[string]*pb.ClinicalMetrics{}
				}
				ri.SiteMetrics[c.Hospital] = c.SiteMetrics
			}
		}
		slices.Sort(ri.Contributors)
		for _, m := range j.Models {
			if m.Version > 0 && m.Round == r.Number {
				ri.TotalSamples, ri.UpdateNorm = m.TotalSamples, m.UpdateNorm
			}
		}
		info.Rounds = append(info.Rounds, ri)
	}
	return info
}
