package server

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"regionfl/client"
	"regionfl/coordinator/fsm"
	"regionfl/he"
	"regionfl/identity"
	"regionfl/jobspec"
	pb "regionfl/proto/regionfl/v1"
)

// hospitalService is the API hospital nodes call; the hospital is always the
// caller's certified identity.
type hospitalService struct{ *Server }

// maxPollWait bounds a long poll.
const maxPollWait = 30 * time.Second

func (s hospitalService) Poll(ctx context.Context, req *pb.PollRequest) (*pb.PollResponse, error) {
	if err := s.leader(ctx); err != nil {
		return nil, err
	}
	h := caller(ctx).Name
	s.engine.Seen(h)
	wait := min(time.Duration(req.WaitMs)*time.Millisecond, maxPollWait)
	s.waitChange(ctx, req.AfterVersion, wait)
	if err := s.leader(ctx); err != nil {
		return nil, err
	}
	var resp *pb.PollResponse
	var err error
	var resend bool
	s.read(func(st *fsm.State) {
		if resp, err = work(st, h); err == nil {
			resend = s.lacksSealed(st.Region, h)
		}
	})
	if err != nil {
		return nil, err
	}
	if resend {
		// Sealed to an earlier leader: the hospital sends the same shares
		// again (it keeps them until its key epoch is retired).
		resp.Ceremony = &pb.CeremonyTask{Step: pb.CeremonyStep_CEREMONY_STEP_SEAL_SHARES}
	}
	// Asked outside the state's lock: the engine holds its own lock while it
	// waits for a contribution to be applied.
	for _, k := range resp.Kept {
		k.Resend = !s.engine.Holds(k.JobId, k.Round, k.Digest)
	}
	return resp, nil
}

// lacksSealed reports whether hospital h sealed its shares in the
// ceremony under way and this replica misses one its committee member
// still needs.
func (s hospitalService) lacksSealed(r *fsm.Region, h string) bool {
	if r == nil {
		return false
	}
	// The dealing first: a lookup, where the step walks every member.
	d := r.DealingOf(h)
	if d == nil || d.Shares != nil {
		return false
	}
	if step := r.Step(); step != pb.CeremonyStep_CEREMONY_STEP_SEAL_SHARES && step != pb.CeremonyStep_CEREMONY_STEP_OPEN_SHARES {
		return false
	}
	return s.relay.lacks(r.Epoch, h, d, r.CommitteeReady())
}

// GetRevocations returns the revocation list with the operators'
// signatures; the node verifies them itself.
func (s hospitalService) GetRevocations(ctx context.Context, _ *pb.GetRevocationsRequest) (*pb.GetRevocationsResponse, error) {
	if err := s.leader(ctx); err != nil {
		return nil, err
	}
	return &pb.GetRevocationsResponse{Revoked: s.revocations(), List: s.revocationList()}, nil
}

// work lists what hospital h has to do in state st.
func work(st *fsm.State, h string) (*pb.PollResponse, error) {
	resp := &pb.PollResponse{Version: st.Index, Revocations: uint32(len(st.Revoked))}
	if l := st.RevocationList; l != nil {
		resp.RevocationListIssuedMs = l.IssuedUnixMs
	}
	r := st.Region
	if r == nil {
		return resp, nil
	}
	i := r.Index(h)
	if i < 0 {
		return nil, status.Errorf(codes.PermissionDenied, "%s is not a hospital of this region", h)
	}
	step := pb.CeremonyStep_CEREMONY_STEP_DONE
	switch at := r.Step(); {
	case at == pb.CeremonyStep_CEREMONY_STEP_ENROLL && r.HPKE[i] == nil:
		step = pb.CeremonyStep_CEREMONY_STEP_ENROLL
	case at == pb.CeremonyStep_CEREMONY_STEP_ENROLL:
		step = pb.CeremonyStep_CEREMONY_STEP_UNSPECIFIED // waiting for the others
	case !r.Member(r.Epoch, h):
		// Enrolled too late (or not at all): this hospital sits the key
		// epoch out, and joins the next one.
	case !r.SealedAll(h):
		step = pb.CeremonyStep_CEREMONY_STEP_SEAL_SHARES
	case r.Step() == pb.CeremonyStep_CEREMONY_STEP_SEAL_SHARES:
		step = pb.CeremonyStep_CEREMONY_STEP_UNSPECIFIED
	case !r.Ready[i]:
		step = pb.CeremonyStep_CEREMONY_STEP_OPEN_SHARES
	}
	resp.Ceremony = &pb.CeremonyTask{Step: step}
	keyEpoch, keyed := r.KeyEpoch()
	if !keyed {
		return resp, nil
	}
	resp.RetiredBelow = retiredBelow(st, keyEpoch)
	for _, id := range st.JobOrder {
		j := st.Jobs[id]
		if j.Finished() {
			continue
		}
		if !j.Decided(h) {
			if j.State == fsm.JobPending {
				resp.JobOffers = append(resp.JobOffers, jobOffer(j))
			}
			continue
		}
		cur := j.Current()
		if cur == nil || !slices.Contains(j.Accepted, h) {
			continue
		}
		if v := j.Latest().Version; v > 0 {
			resp.Models = append(resp.Models, &pb.ModelTask{JobId: j.ID, Version: v, ModelHash: j.ModelHash, Spec: j.Spec})
		}
		switch cur.State {
		case fsm.RoundCollecting:
			if c := cur.ContributionOf(h); c != nil {
				resp.Kept = append(resp.Kept, &pb.KeptUpdate{JobId: j.ID, Round: cur.Number, Digest: c.Digest})
			} else if r.Member(cur.Epoch, h) { // a hospital sitting the round's key epoch out has no key to encrypt in
				resp.Train = append(resp.Train, &pb.TrainTask{
					JobId: j.ID, Round: cur.Number, ModelVersion: cur.ModelVersion, ModelHash: j.ModelHash, Spec: j.Spec, Job: jobOffer(j),
					Epoch: cur.Epoch,
				})
			}
		case fsm.RoundDecrypting:
			if _, approved := cur.Approvals[h]; !approved && slices.Contains(cur.Contributors, h) {
				resp.Approve = append(resp.Approve, &pb.ApprovalTask{
					JobId: j.ID, Round: cur.Number, ModelVersion: cur.ModelVersion, ModelHash: j.ModelHash,
					Contributors: cur.Contributors, Spec: j.Spec, ModelDigest: jobspec.WireModelDigest(j.ModelDigest(cur)),
					AggregateDigest: cur.AggDigest,
				})
			}
			// Decryptors are asked once every contributor approved the set.
			if _, gave := cur.Shares[h]; !gave && slices.Contains(cur.Active, h) && cur.Approved() {
				approvals := approvalsOf(cur)
				resp.Decrypt = append(resp.Decrypt, &pb.DecryptTask{
					JobId: j.ID, Round: cur.Number, AggregateDigest: cur.AggDigest, Active: cur.Active,
					Attempt: cur.Attempt, Contributors: cur.Contributors, ModelHash: j.ModelHash,
					AggregateSize: uint64(len(cur.Aggregate)), Spec: j.Spec, ModelVersion: cur.ModelVersion,
					Approvals: approvals, Job: jobOffer(j), Epoch: cur.Epoch, ModelDigest: jobspec.WireModelDigest(j.ModelDigest(cur)),
				})
			}
		}
	}
	return resp, nil
}

// retiredBelow is the oldest key epoch a round may still be decrypted in:
// the current key's, or an older one an unfinished round was encrypted in.
// Hospitals erase their Shamir shares of every epoch below it.
func retiredBelow(st *fsm.State, keyEpoch uint32) uint32 {
	oldest := keyEpoch
	for _, id := range st.JobOrder {
		j := st.Jobs[id]
		if j.Finished() {
			continue
		}
		// A round reopened on the same model keeps its epoch (see
		// fsm openRound): the last round of an unfinished job holds its
		// epoch's key in use until a model version is committed from it.
		if cur := j.Current(); cur != nil && cur.ModelVersion == j.Latest().Version {
			oldest = min(oldest, cur.Epoch)
		}
	}
	return oldest
}

// jobOffer is a job as its researcher signed it, for a node to vet.
func jobOffer(j *fsm.Job) *pb.JobOffer {
	return &pb.JobOffer{JobId: j.ID, Spec: j.Spec, RequestId: j.RequestID, Signature: j.Signature, Certificate: j.Certificate}
}

func (s hospitalService) Enroll(ctx context.Context, req *pb.EnrollRequest) (*pb.EnrollResponse, error) {
	if err := checkHPKEKey(req.HpkePublicKey); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "hpke_public_key: %v", err)
	}
	h := caller(ctx).Name
	r, err := s.region(ctx)
	if err != nil {
		return nil, err
	}
	cert, err := peerCert(ctx)
	if err != nil {
		return nil, err
	}
	rd := r.CeremonyDigest()
	if err := identity.CheckSignature(cert.Raw, req.Signature, identity.StatementHPKEKey, rd[:], []byte(h), req.HpkePublicKey); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "signature: %v", err)
	}
	if err := s.store.Propose(&pb.EnrollCommand{Hospital: h, HpkePublicKey: req.HpkePublicKey,
		Signature: req.Signature, Certificate: cert.Raw}); err != nil {
		return nil, toStatus(ctx, err)
	}
	s.log.Info("hospital enrolled", "hospital", h)
	return &pb.EnrollResponse{}, nil
}

func (s hospitalService) region(ctx context.Context) (*fsm.Region, error) {
	if err := s.leader(ctx); err != nil {
		return nil, err
	}
	var r *fsm.Region
	s.read(func(st *fsm.State) {
		if st.Region != nil {
			r = st.Region.Clone()
		}
	})
	if r == nil {
		return nil, status.Error(codes.FailedPrecondition, "the region has not been created yet")
	}
	if r.Index(caller(ctx).Name) < 0 {
		return nil, status.Errorf(codes.PermissionDenied, "%s is not a hospital of this region", caller(ctx))
	}
	return r, nil
}

// ceremonyRegion is region for a step of the ceremony after enrollment:
// the caller must be a member of the current key epoch.
func (s hospitalService) ceremonyRegion(ctx context.Context) (*fsm.Region, error) {
	r, err := s.region(ctx)
	if err != nil {
		return nil, err
	}
	if r.MembersOf(r.Epoch) == nil {
		return nil, status.Errorf(codes.FailedPrecondition, "the enrollment of key epoch %d is still open", r.Epoch)
	}
	if !r.Member(r.Epoch, caller(ctx).Name) {
		return nil, status.Errorf(codes.FailedPrecondition, "%s is not a member of key epoch %d: it joins the next one", caller(ctx), r.Epoch)
	}
	return r, nil
}

func (s hospitalService) SubmitSealedShares(ctx context.Context, req *pb.SubmitSealedSharesRequest) (*pb.SubmitSealedSharesResponse, error) {
	r, err := s.ceremonyRegion(ctx)
	if err != nil {
		return nil, err
	}
	h := caller(ctx).Name
	point := r.MemberPoint(r.Epoch, h)
	holders := r.CommitteeOf(r.Epoch)
	if len(req.Shares) != len(holders) {
		return nil, status.Errorf(codes.InvalidArgument, "shares: %d, key epoch %d has a committee of %d", len(req.Shares), r.Epoch, len(holders))
	}
	ordered := make([][]byte, len(holders))
	sigs := make([][]byte, len(holders))
	digests := make([][]byte, len(holders))
	var size uint64
	rd := r.MembersDigest()
	cert := r.Cert(uint32(r.Index(h) + 1))
	for _, sh := range req.Shares {
		i := slices.Index(holders, sh.To) // the committee holds points 1..c
		if i < 0 || ordered[i] != nil {
			return nil, status.Errorf(codes.InvalidArgument, "shares: recipient %q not on the committee of key epoch %d, or repeated", sh.To, r.Epoch)
		}
		ss, err := he.UnmarshalSealedShare(sh.Sealed)
		if err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "shares[%s]: %v", sh.To, err)
		}
		if ss.From != point || ss.To != uint32(i+1) {
			return nil, status.Errorf(codes.InvalidArgument, "shares[%s]: addressed from %d to %d, want from %d to %d", sh.To, ss.From, ss.To, point, i+1)
		}
		d := sha256.Sum256(sh.Sealed)
		if err := identity.CheckSignature(cert, sh.Signature, identity.StatementSealedShare, rd[:], []byte(h), []byte(sh.To), d[:]); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "shares[%s].signature: %v", sh.To, err)
		}
		ordered[i], sigs[i], digests[i] = sh.Sealed, sh.Signature, d[:]
		size += uint64(len(sh.Sealed))
	}
	ready := r.CommitteeReady()
	if d := r.DealingOf(h); d != nil {
		// Sent before: to a leader that has lost them since, or the reply
		// was lost. Only the very shares the log records are kept.
		for i := range digests {
			if d.Digests[i] != nil && !bytes.Equal(digests[i], d.Digests[i]) {
				return nil, status.Errorf(codes.AlreadyExists, "%s sealed other shares to the committee of key epoch %d already (to %s)", h, r.Epoch, holders[i])
			}
		}
		s.relay.put(r.Epoch, h, ordered, ready)
		s.log.Info("sealed shares relayed again", "hospital", h, "count", len(ordered))
		return &pb.SubmitSealedSharesResponse{}, nil
	}
	// Kept before the log records them, so that a member told they are
	// sealed finds them here.
	s.relay.put(r.Epoch, h, ordered, ready)
	if err := s.store.Propose(&pb.SealedSharesCommand{From: h, Digests: digests, Signatures: sigs, Size: size}); err != nil {
		return nil, toStatus(ctx, err)
	}
	s.log.Info("sealed shares relayed", "hospital", h, "count", len(ordered), "bytes", size)
	return &pb.SubmitSealedSharesResponse{}, nil
}

func (s hospitalService) GetSealedShares(ctx context.Context, req *pb.GetSealedSharesRequest) (*pb.GetSealedSharesResponse, error) {
	r, err := s.ceremonyRegion(ctx)
	if err != nil {
		return nil, err
	}
	h := caller(ctx).Name
	if !r.Holds(r.Epoch, h) {
		return nil, status.Errorf(codes.FailedPrecondition, "%s is not on the committee of key epoch %d: no shares are sealed to it", h, r.Epoch)
	}
	// The shares sealed to the caller, one from each member, by the
	// senders' points, a page at a time.
	points := r.PointsOf(r.Epoch)
	if int64(req.Offset) > int64(len(points)) {
		return nil, status.Errorf(codes.InvalidArgument, "offset: %d, key epoch %d has %d members", req.Offset, r.Epoch, len(points))
	}
	if r.Ready[r.Index(h)] {
		return nil, status.Errorf(codes.FailedPrecondition, "%s holds its key of epoch %d already: its sealed shares were let go", h, r.Epoch)
	}
	k := int(r.MemberPoint(r.Epoch, h)) - 1
	resp := &pb.GetSealedSharesResponse{Members: uint32(len(points))}
	var missing []string
	for _, m := range points[req.Offset:min(len(points), int(req.Offset)+MaxSealedPerMessage(s.engine.Params()))] {
		d := r.DealingOf(m)
		if d == nil {
			return nil, status.Error(codes.FailedPrecondition, "not every member has sealed its shares yet")
		}
		var b []byte
		if d.Shares != nil {
			b = d.Shares[k] // from a log that carried them
		} else {
			b = s.relay.get(r.Epoch, m, k, d)
		}
		if b == nil {
			missing = append(missing, m)
			continue
		}
		resp.Shares = append(resp.Shares, b)
		if d.Sigs != nil {
			resp.Signatures = append(resp.Signatures, d.Sigs[k])
		} else {
			resp.Signatures = append(resp.Signatures, nil)
		}
	}
	if len(missing) > 0 {
		// Sent to an earlier leader: Poll asks their senders again.
		return nil, status.Errorf(codes.FailedPrecondition, "this leader does not hold the shares %d members sealed to an earlier one (%s first); they are asked to send them again", len(missing), missing[0])
	}
	return resp, nil
}

func (s hospitalService) ConfirmKeyReady(ctx context.Context, req *pb.ConfirmKeyReadyRequest) (*pb.ConfirmKeyReadyResponse, error) {
	r, err := s.ceremonyRegion(ctx)
	if err != nil {
		return nil, err
	}
	if d := r.MembersDigest(); string(d[:]) != string(req.MembersDigest) {
		return nil, status.Errorf(codes.InvalidArgument, "members_digest: not the digest of key epoch %d's members", r.Epoch)
	}
	h := caller(ctx).Name
	if err := s.store.Propose(&pb.KeyReadyCommand{Hospital: h}); err != nil {
		return nil, toStatus(ctx, err)
	}
	if p := r.MemberPoint(r.Epoch, h); r.Holds(r.Epoch, h) {
		s.relay.forget(r.Epoch, int(p)-1)
	}
	s.log.Info("hospital holds its threshold key", "hospital", h)
	return &pb.ConfirmKeyReadyResponse{}, nil
}

func (s hospitalService) GetRegion(ctx context.Context, _ *pb.GetRegionRequest) (*pb.GetRegionResponse, error) {
	r, err := s.region(ctx)
	if err != nil {
		return nil, err
	}
	out := &pb.Region{Params: r.Params, Hospitals: r.Hospitals, Threshold: uint32(r.Threshold), Seed: r.Seed,
		HpkePublicKeys: r.HPKE, Step: r.Step(),
		Certificates: r.Certs, HpkeSignatures: r.HPKESig,
		GenesisSignature: r.GenesisSig, GenesisCertificate: r.GenesisCert, Epoch: r.Epoch, RevocationMaxAgeS: r.RevocationMaxAgeS,
		Members: r.MembersOf(r.Epoch), Committee: r.Committee}
	for i, ok := range r.Ready {
		if ok {
			out.Ready = append(out.Ready, r.Hospitals[i])
		}
	}
	return &pb.GetRegionResponse{Region: out}, nil
}

func (s hospitalService) DecideJob(ctx context.Context, req *pb.DecideJobRequest) (*pb.DecideJobResponse, error) {
	if err := s.leader(ctx); err != nil {
		return nil, err
	}
	if len(req.Reason) > 1024 {
		return nil, status.Error(codes.InvalidArgument, "reason: longer than 1024 bytes")
	}
	h := caller(ctx).Name
	var (
		found, same bool
	)
	s.read(func(st *fsm.State) {
		j, ok := st.Jobs[req.JobId]
		if !ok {
			return
		}
		found = true
		_, refused := j.Refused[h]
		same = (req.Accept && slices.Contains(j.Accepted, h)) || (!req.Accept && refused)
	})
	switch {
	case !found:
		return nil, status.Errorf(codes.NotFound, "job_id: no job %q", req.JobId)
	case same:
		return &pb.DecideJobResponse{}, nil // a retry after a lost answer
	}
	err := s.store.Propose(&pb.DecideJobCommand{JobId: req.JobId, Hospital: h, Accept: req.Accept, Reason: req.Reason})
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	s.log.Info("job decision", "job_id", req.JobId, "hospital", h, "accept", req.Accept, "reason", req.Reason)
	return &pb.DecideJobResponse{}, nil
}

func (s hospitalService) SubmitUpdate(stream pb.HospitalService_SubmitUpdateServer) (err error) {
	ctx := stream.Context()
	defer func() {
		if err != nil {
			s.metrics.RefusedUpdate(refusalReason(err))
		}
	}()
	// Refusals carry their metrics label (see refusal); an error without
	// one (the stream broke, not the leader) is labelled by refusalReason.
	if err := s.leader(ctx); err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hdr := first.GetHeader()
	if hdr == nil {
		return refuse("bad_encoding", status.Error(codes.InvalidArgument, "the first message must be the update header"))
	}
	if len(hdr.Digest) != 32 {
		return refuse("bad_encoding", status.Error(codes.InvalidArgument, "digest: want 32 bytes (SHA-256)"))
	}
	h := caller(ctx).Name
	// Everything the header says is checked before a byte of the update is
	// buffered; the size is fixed by the region parameters and the model.
	want, binding, err := s.engine.CheckHeader(h, hdr)
	if err != nil {
		return refuseEngine(ctx, err)
	}
	if hdr.Size != uint64(want) {
		return refuse("bad_length", status.Errorf(codes.InvalidArgument, "size: %d bytes announced, an update of this model is exactly %d", hdr.Size, want))
	}
	// The update is the hospital's own statement, signed with the key of
	// the certificate it connects with (the CA verified it for this name):
	// the signature and certificate go into the audit record.
	region, err := s.region(ctx)
	if err != nil {
		return err
	}
	cert, err := peerCert(ctx)
	if err != nil {
		return err
	}
	rd := region.Digest()
	if err := identity.CheckSignature(cert.Raw, hdr.Signature, identity.StatementContribution,
		identity.ContributionFields(rd[:], binding[:], hdr.Digest, h, hdr.Size)...); err != nil {
		return refuse("bad_signature", status.Errorf(codes.InvalidArgument, "signature: %v", err))
	}
	raw, err := s.receiveChunks(want, "update", func() ([]byte, error) {
		m, err := stream.Recv()
		return m.GetChunk(), err
	})
	if err != nil {
		return refuseEngine(ctx, err)
	}
	if err := s.engine.Accept(h, hdr, raw, cert.Raw); err != nil {
		return refuseEngine(ctx, err)
	}
	s.metrics.ReceivedBytes(len(raw))
	return stream.SendAndClose(&pb.SubmitUpdateResponse{Digest: hdr.Digest})
}

// receiveChunks receives an upload of exactly size bytes (an update or a
// decryption share, what) from next, which returns each message's chunk
// (nil for a message that is not one). A slow sender must not hold a
// stream (and its buffer) open for long: the upload gets a deadline from
// its size at a modest minimum rate.
func (s *Server) receiveChunks(size int, what string, next func() ([]byte, error)) ([]byte, error) {
	type received struct {
		raw []byte
		err error
	}
	done := make(chan received, 1)
	go func() {
		raw, err := receiveAll(size, func() ([]byte, error) {
			chunk, err := next()
			if err == nil && chunk == nil {
				err = status.Error(codes.InvalidArgument, "only chunks may follow the header")
			}
			return chunk, err
		})
		done <- received{raw, err}
	}()
	select {
	case got := <-done:
		return got.raw, got.err
	case <-time.After(s.uploadDeadline(size)):
		return nil, fmt.Errorf("%w: %s of %d bytes not received within %s", errTooSlow, what, size, s.uploadDeadline(size))
	}
}

// MinUploadRate is the slowest upload the coordinator waits for.
const MinUploadRate = 64 << 10 // bytes per second

// DefaultUploadTimeout is the base of an upload's deadline.
const DefaultUploadTimeout = 30 * time.Second

// uploadDeadline is how long an update of size bytes may take to arrive:
// the base timeout plus its transfer at MinUploadRate.
func (s *Server) uploadDeadline(size int) time.Duration {
	return s.uploadTimeout + time.Duration(size/MinUploadRate)*time.Second
}

// decryptingRound returns the caller's view of a round waiting for shares.
func (s hospitalService) decryptingRound(ctx context.Context, jobID string, number uint32) (*fsm.Round, he.Shape, [32]byte, error) {
	var binding [32]byte
	if err := s.leader(ctx); err != nil {
		return nil, he.Shape{}, binding, err
	}
	var (
		r   *fsm.Round
		n   he.Shape
		err error
	)
	s.read(func(st *fsm.State) {
		j, ok := st.Jobs[jobID]
		if !ok {
			err = status.Errorf(codes.NotFound, "job_id: no job %q", jobID)
			return
		}
		cur := j.Current()
		if cur == nil || cur.Number != number || cur.State != fsm.RoundDecrypting {
			err = status.Errorf(codes.FailedPrecondition, "round %d of job %s is not waiting for decryption", number, jobID)
			return
		}
		c := *cur
		r, n, binding = &c, jobspec.VectorShape(j.Spec, number), j.Binding(cur)
	})
	return r, n, binding, err
}

func (s hospitalService) GetAggregate(req *pb.GetAggregateRequest, stream pb.HospitalService_GetAggregateServer) error {
	r, _, _, err := s.decryptingRound(stream.Context(), req.JobId, req.Round)
	if err != nil {
		return err
	}
	for b := r.Aggregate; len(b) > 0; {
		n := min(len(b), client.ChunkSize)
		if err := stream.Send(&pb.GetAggregateResponse{Chunk: b[:n]}); err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// ApproveContributors records a contributor's signed approval of the
// contributor set of a closed round, after checking the signature against
// its enrolled certificate, over the round's set and its own update.
func (s hospitalService) ApproveContributors(ctx context.Context, req *pb.ApproveContributorsRequest) (*pb.ApproveContributorsResponse, error) {
	region, err := s.region(ctx)
	if err != nil {
		return nil, err
	}
	cert, err := peerCert(ctx)
	if err != nil {
		return nil, err
	}
	h := caller(ctx).Name
	var (
		contributors                 []string
		version                      uint32
		hash                         string
		rerr                         error
		updateDigest, had, aggDigest []byte
		model                        [32]byte
	)
	s.read(func(st *fsm.State) {
		j, ok := st.Jobs[req.JobId]
		if !ok {
			rerr = status.Errorf(codes.NotFound, "job_id: no job %q", req.JobId)
			return
		}
		cur := j.Current()
		if cur == nil || cur.Number != req.Round || cur.State != fsm.RoundDecrypting {
			rerr = status.Errorf(codes.FailedPrecondition, "round %d of job %s is not waiting for decryption", req.Round, req.JobId)
			return
		}
		contributors, version, hash, had = slices.Clone(cur.Contributors), cur.ModelVersion, j.ModelHash, cur.Approvals[h].Signature
		aggDigest = cur.AggDigest
		model = j.ModelDigest(cur)
		if u := cur.ContributionOf(h); u != nil && slices.Contains(cur.Contributors, h) {
			updateDigest = u.Digest
		}
	})
	if rerr != nil {
		return nil, rerr
	}
	if updateDigest == nil {
		return nil, status.Errorf(codes.PermissionDenied, "%s is not a contributor of round %d", h, req.Round)
	}
	if had != nil && string(had) == string(req.Signature) {
		return &pb.ApproveContributorsResponse{}, nil // a retry after a lost answer
	}
	if want := he.FingerprintLen(s.engine.Params()); len(req.Fingerprint) != want {
		return nil, status.Errorf(codes.InvalidArgument, "fingerprint: %d bytes, want %d", len(req.Fingerprint), want)
	}
	rd, binding := region.Digest(), jobspec.Binding(req.JobId, req.Round, version, hash, model)
	if err := identity.CheckSignature(cert.Raw, req.Signature, identity.StatementApproval,
		identity.ApprovalFields(rd[:], binding[:], updateDigest, aggDigest, req.Fingerprint, h, contributors)...); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "signature: %v", err)
	}
	err = s.store.Propose(&pb.ApprovalCommand{JobId: req.JobId, Round: req.Round, Hospital: h, Signature: req.Signature, Certificate: cert.Raw,
		Fingerprint: req.Fingerprint})
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	s.log.Info("contributor set approved", "job_id", req.JobId, "round", req.Round, "hospital", h)
	return &pb.ApproveContributorsResponse{}, nil
}

// SubmitDecryptionShare receives one decryptor's share of a round's
// aggregate, as large as the aggregate: a header, then chunks of exactly
// the size the round fixes, checked before a byte is buffered.
func (s hospitalService) SubmitDecryptionShare(stream pb.HospitalService_SubmitDecryptionShareServer) error {
	// Who the share is from is checked first: identity comes from the
	// certificate only, whatever the state of the round.
	ctx := stream.Context()
	region, err := s.region(ctx)
	if err != nil {
		return err
	}
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	hdr := first.GetHeader()
	if hdr == nil {
		return status.Error(codes.InvalidArgument, "the first message must be the share header")
	}
	r, shape, binding, err := s.decryptingRound(ctx, hdr.JobId, hdr.Round)
	if err != nil {
		return err
	}
	h := caller(ctx).Name
	if !slices.Contains(r.Active, h) {
		return status.Errorf(codes.PermissionDenied, "%s is not a decryptor of attempt %d of round %d", h, r.Attempt, r.Number)
	}
	if hdr.Attempt != r.Attempt {
		return status.Errorf(codes.FailedPrecondition, "attempt: a share for attempt %d, round %d is at attempt %d", hdr.Attempt, r.Number, r.Attempt)
	}
	size := he.DecryptionShareSize(s.engine.Params(), shape, len(r.Contributors), len(r.Active))
	if hdr.Size != uint64(size) {
		return status.Errorf(codes.InvalidArgument, "size: %d bytes announced, a share of this round is exactly %d", hdr.Size, size)
	}
	cert, err := peerCert(ctx)
	if err != nil {
		return err
	}
	raw, err := s.receiveChunks(size, "share", func() ([]byte, error) {
		m, err := stream.Recv()
		return m.GetChunk(), err
	})
	if err != nil {
		return toStatus(ctx, err)
	}
	// The share is the decryptor's own statement, signed with the key of
	// the certificate it connects with, over what this round decrypts:
	// the signature and certificate go into the share's audit record.
	rd := region.Digest()
	digest := sha256.Sum256(raw)
	if err := identity.CheckSignature(cert.Raw, hdr.Signature, identity.StatementDecryptionShare,
		identity.DecryptionShareFields(rd[:], binding[:], r.AggDigest, digest[:], h, r.Attempt, r.Contributors, r.Active)...); err != nil {
		return status.Errorf(codes.InvalidArgument, "signature: %v", err)
	}
	share, err := he.UnmarshalDecryptionShare(s.engine.Params(), raw)
	if err != nil {
		return status.Errorf(codes.InvalidArgument, "share: %v", err)
	}
	// Points are the parties' places in the round's key epoch
	// (identity.EpochPoints).
	if point := region.MemberPoint(r.Epoch, h); share.From() != point {
		return status.Errorf(codes.PermissionDenied, "share is from party %d, the caller is party %d of key epoch %d", share.From(), point, r.Epoch)
	}
	want := region.MemberPoints(r.Epoch, r.Contributors)
	slices.Sort(want)
	if got := share.Contributors(); !slices.Equal(got, want) {
		return status.Errorf(codes.InvalidArgument, "share decrypts the updates of parties %v, round %d holds those of %v", got, r.Number, want)
	}
	var retry bool
	s.read(func(st *fsm.State) {
		if cur := st.Jobs[hdr.JobId].Current(); cur.Number == hdr.Round && cur.Attempt == hdr.Attempt {
			given, ok := cur.Shares[h]
			retry = ok && string(given) == string(raw)
		}
	})
	if !retry {
		err = s.store.Propose(&pb.DecryptionShareCommand{
			JobId: hdr.JobId, Round: hdr.Round, Attempt: hdr.Attempt, Hospital: h, Share: raw,
			Signature: hdr.Signature, Certificate: cert.Raw,
		})
		if err != nil {
			return toStatus(ctx, err)
		}
		s.log.Info("decryption share accepted", "job_id", hdr.JobId, "round", hdr.Round, "hospital", h, "size", len(raw))
	}
	return stream.SendAndClose(&pb.SubmitDecryptionShareResponse{})
}

// FetchModel serves a job's model only to a hospital of the region that
// accepted that job; any other hospital's request is refused and the
// refusal goes into the audit log.
func (s hospitalService) FetchModel(ctx context.Context, req *pb.FetchModelRequest) (*pb.FetchModelResponse, error) {
	if err := s.acceptedOnly(ctx, req.JobId, pb.HospitalService_FetchModel_FullMethodName, "model"); err != nil {
		return nil, err
	}
	m, err := s.model(ctx, req.JobId, req.Version)
	if err != nil {
		return nil, err
	}
	return &pb.FetchModelResponse{Model: m}, nil
}

// acceptedOnly lets a hospital of the region read what (a model, a round's
// evidence) of a job only if it accepted that job; any other hospital's
// call to method is refused, and the refusal goes into the audit log.
func (s hospitalService) acceptedOnly(ctx context.Context, jobID, method, what string) error {
	if _, err := s.region(ctx); err != nil {
		return err
	}
	h := caller(ctx).Name
	var accepted bool
	s.read(func(st *fsm.State) {
		if j, ok := st.Jobs[jobID]; ok {
			accepted = slices.Contains(j.Accepted, h)
		}
	})
	if accepted {
		return nil
	}
	serial := ""
	if cert, err := identity.PeerCertificate(ctx); err == nil {
		serial = identity.SerialHex(cert)
	}
	s.recordRefusal(caller(ctx), serial, method, what+" of a job this hospital did not accept")
	return status.Errorf(codes.PermissionDenied, "job_id: %s did not accept job %q", h, jobID)
}

// approvalsOf lists a round's approvals in the order of its contributors.
func approvalsOf(r *fsm.Round) []*pb.Approval {
	approvals := make([]*pb.Approval, len(r.Contributors))
	for i, c := range r.Contributors {
		a := r.Approvals[c]
		approvals[i] = &pb.Approval{Hospital: c, UpdateDigest: r.ContributionOf(c).Digest, Signature: a.Signature, Certificate: a.Certificate,
			Fingerprint: a.Fingerprint}
	}
	return approvals
}

// GetModelEvidence serves the round that made a model version, for a
// hospital that accepted the job to check the version itself before it
// measures it. Only the newest version's round keeps what that takes. Like
// FetchModel, it serves only hospitals that accepted the job.
func (s hospitalService) GetModelEvidence(ctx context.Context, req *pb.GetModelEvidenceRequest) (*pb.GetModelEvidenceResponse, error) {
	if err := s.acceptedOnly(ctx, req.JobId, pb.HospitalService_GetModelEvidence_FullMethodName, "the evidence of a model"); err != nil {
		return nil, err
	}
	if err := s.leaderRead(ctx); err != nil {
		return nil, err
	}
	var (
		out  *pb.ModelEvidence
		rerr error
	)
	s.read(func(st *fsm.State) {
		j := st.Jobs[req.JobId] // accepted: it exists, and jobs are never deleted
		if req.Version == 0 || int(req.Version) >= len(j.Models) {
			rerr = status.Errorf(codes.NotFound, "version: job %s has versions made by rounds 1..%d", req.JobId, len(j.Models)-1)
			return
		}
		var r *fsm.Round
		for _, x := range j.Rounds {
			if x.Number == j.Models[req.Version].Round && x.State == fsm.RoundCommitted {
				r = x
			}
		}
		if r == nil || !r.Evidence() {
			rerr = status.Errorf(codes.NotFound, "version: the round that made version %d of job %s is no longer kept (only the newest version's is)", req.Version, req.JobId)
			return
		}
		out = &pb.ModelEvidence{
			JobId: j.ID, Version: req.Version, Round: r.Number, Epoch: r.Epoch, Aggregate: r.Aggregate,
			Contributors: r.Contributors, Approvals: approvalsOf(r), Attempt: r.Attempt, Active: r.Active,
		}
		for _, d := range r.Active {
			sig := r.ShareSigned[d]
			out.Shares = append(out.Shares, &pb.SignedShare{Hospital: d, Share: r.Shares[d], Signature: sig.Signature, Certificate: sig.Certificate})
		}
	})
	if rerr != nil {
		return nil, rerr
	}
	return &pb.GetModelEvidenceResponse{Evidence: out}, nil
}

// model returns a committed model version (0 = latest).
func (s *Server) model(ctx context.Context, jobID string, version uint32) (*pb.Model, error) {
	if err := s.leaderRead(ctx); err != nil {
		return nil, err
	}
	var (
		out *pb.Model
		err error
	)
	s.read(func(st *fsm.State) {
		j, ok := st.Jobs[jobID]
		if !ok {
			err = status.Errorf(codes.NotFound, "job_id: no job %q", jobID)
			return
		}
		m := j.Latest()
		if version != 0 {
			if int(version) >= len(j.Models) {
				err = status.Errorf(codes.NotFound, "version: job %s has versions 0..%d", jobID, len(j.Models)-1)
				return
			}
			m = j.Models[version]
		}
		out = &pb.Model{JobId: j.ID, Version: m.Version, Model: j.Spec.Model, ModelHash: j.ModelHash, Params: slices.Clone(m.Params)}
	})
	return out, err
}
