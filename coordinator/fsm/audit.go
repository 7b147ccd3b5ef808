package fsm

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"strconv"
	"strings"

	"google.golang.org/protobuf/proto"

	"regionfl/audit"
	"regionfl/jobspec"
	pb "regionfl/proto/regionfl/v1"
)

// auditRecord builds the audit record of a command before it is applied;
// Apply refuses a command whose record would be invalid, then appends the
// record in the same entry as the action, so a record is exactly as durable
// and as replicated as its action. What leaves a site is described by size
// and digest, never by content. ok is false for commands without a record.
func (s *State) auditRecord(m proto.Message, meta Meta) (rec audit.Record, ok bool, err error) {
	rec = audit.Record{TimeUnixMs: max(meta.UnixMs, 1)}
	actor := meta.Actor
	job := func(id string) {
		rec.JobID = id
		if j, ok := s.Jobs[id]; ok {
			rec.Purpose, rec.LegalBasis = j.Spec.GetPurpose(), j.Spec.GetLegalBasis()
		}
	}
	switch c := m.(type) {
	case *pb.RegisterReplicaCommand:
		rec.Action = audit.ActionReplicaJoined
		rec.Details = map[string]string{"replica": c.Id, "grpc_addr": c.GrpcAddr}
	case *pb.CreateRegionCommand:
		rec.Action = audit.ActionRegionCreated
		rec.Details = map[string]string{"hospitals": strings.Join(c.Hospitals, ","),
			"threshold": strconv.Itoa(int(c.Threshold)), "params": c.Params}
	case *pb.EnrollCommand:
		actor, rec.Hospital = "hospital/"+c.Hospital, c.Hospital
		rec.Action = audit.ActionCeremonyEnrolled
		rec.Digest, rec.Size = digest(c.HpkePublicKey), uint64(len(c.HpkePublicKey))
	case *pb.PublicKeyShareCommand:
		actor, rec.Hospital = "hospital/"+c.Hospital, c.Hospital
		rec.Action = audit.ActionCeremonyPublicKeyShare
		rec.Digest, rec.Size = digest(c.Share), uint64(len(c.Share))
	case *pb.PublicKeyCommand:
		rec.Action = audit.ActionCeremonyPublicKey
		rec.Digest, rec.Size = digest(c.PublicKey), uint64(len(c.PublicKey))
	case *pb.SealedSharesCommand:
		actor, rec.Hospital = "hospital/"+c.From, c.From
		rec.Action = audit.ActionCeremonySealedShares
		var size uint64
		for _, b := range c.Shares {
			size += uint64(len(b))
		}
		rec.Size = size
	case *pb.KeyReadyCommand:
		actor, rec.Hospital = "hospital/"+c.Hospital, c.Hospital
		rec.Action = audit.ActionCeremonyKeyReady
		if s.Region != nil && s.Region.Epoch > 0 {
			rec.Details = map[string]string{"epoch": strconv.FormatUint(uint64(s.Region.Epoch), 10)}
		}
	case *pb.StartKeyEpochCommand:
		if c.StartedBy != "" {
			actor = c.StartedBy
		}
		rec.Action, rec.Reason = audit.ActionCeremonyEpochStarted, c.Reason
		rec.Details = map[string]string{"epoch": strconv.FormatUint(uint64(c.Epoch), 10)}
	case *pb.SubmitJobCommand:
		if c.SubmittedBy != "" {
			actor = c.SubmittedBy
		}
		rec.JobID, rec.Purpose, rec.LegalBasis = c.JobId, c.Spec.GetPurpose(), c.Spec.GetLegalBasis()
		rec.Action, rec.ModelHash = audit.ActionJobSubmitted, c.ModelHash
		if len(c.Signature) > 0 {
			// The researcher's signed statement of the job, checkable
			// offline (audit.Verify).
			d := jobspec.SignedDigest(c.Spec)
			rec.Details = map[string]string{
				"spec_digest": hex.EncodeToString(d[:]), "request_id": c.RequestId,
				"signature": hex.EncodeToString(c.Signature), "certificate": hex.EncodeToString(c.Certificate),
			}
		}
	case *pb.DecideJobCommand:
		actor, rec.Hospital = "hospital/"+c.Hospital, c.Hospital
		job(c.JobId)
		rec.Action = audit.ActionJobAccepted
		if !c.Accept {
			rec.Action, rec.Reason = audit.ActionJobRefused, c.Reason
		}
	case *pb.OpenRoundCommand:
		job(c.JobId)
		rec.Action, rec.Round = audit.ActionRoundOpened, c.Round
	case *pb.ContributionCommand:
		actor, rec.Hospital = "hospital/"+c.Hospital, c.Hospital
		job(c.JobId)
		rec.Action, rec.Round = audit.ActionContributionAccepted, c.Round
		rec.Digest, rec.Size = hex.EncodeToString(c.Digest), c.Size
		rec.Details = map[string]string{}
		if len(c.Signature) > 0 {
			// identity.StatementContribution with what it covers, checked
			// offline by audit.Verify: the region, the job's model and the
			// round's model version fix the binding.
			rec.Details["signature"] = hex.EncodeToString(c.Signature)
			rec.Details["certificate"] = hex.EncodeToString(c.Certificate)
			if s.Region != nil {
				d := s.Region.Digest()
				rec.Details["region_digest"] = hex.EncodeToString(d[:])
			}
			if j, ok := s.Jobs[c.JobId]; ok {
				rec.ModelHash = j.ModelHash
				if r := j.Current(); r != nil && r.Number == c.Round {
					rec.Details["model_version"] = strconv.Itoa(int(r.ModelVersion))
					if d := j.ModelDigest(r); d != ([32]byte{}) {
						rec.Details["model_digest"] = hex.EncodeToString(d[:])
					}
				}
			}
		}
		if j, ok := s.Jobs[c.JobId]; ok && j.Spec.GetDpNoiseMultiplier() > 0 && c.Round != jobspec.StatsRound {
			// The privacy ledger, as of this contribution.
			rounds := j.ContributedRounds(c.Hospital) + 1
			rec.Details["epsilon"] = strconv.FormatFloat(j.accountant().Epsilon(rounds), 'g', 6, 64)
			rec.Details["delta"] = strconv.FormatFloat(j.Spec.DpDelta, 'g', -1, 64)
		}
		if len(rec.Details) == 0 {
			rec.Details = nil
		}
	case *pb.CloseRoundCommand:
		job(c.JobId)
		rec.Action, rec.Round = audit.ActionRoundClosed, c.Round
		rec.Digest, rec.Size = hex.EncodeToString(c.AggregateDigest), uint64(len(c.Aggregate))
		rec.Details = map[string]string{"contributors": strings.Join(c.Contributors, ","), "decryptors": strings.Join(c.Active, ",")}
	case *pb.ApprovalCommand:
		actor, rec.Hospital = "hospital/"+c.Hospital, c.Hospital
		job(c.JobId)
		rec.Action, rec.Round = audit.ActionContributorsApproved, c.Round
		rec.Details = map[string]string{"signature": hex.EncodeToString(c.Signature), "certificate": hex.EncodeToString(c.Certificate)}
		if j, ok := s.Jobs[c.JobId]; ok {
			if r := j.Current(); r != nil && r.Number == c.Round {
				rec.Details["contributors"] = strings.Join(r.Contributors, ",")
			}
		}
	case *pb.DecryptionShareCommand:
		actor, rec.Hospital = "hospital/"+c.Hospital, c.Hospital
		job(c.JobId)
		rec.Action, rec.Round = audit.ActionDecryptionShareGiven, c.Round
		rec.Digest, rec.Size = digest(c.Share), uint64(len(c.Share))
	case *pb.RetryDecryptionCommand:
		job(c.JobId)
		rec.Action, rec.Round = audit.ActionDecryptionRetried, c.Round
		rec.Details = map[string]string{"decryptors": strings.Join(c.Active, ","), "attempt": strconv.Itoa(int(c.Attempt))}
	case *pb.CommitModelCommand:
		job(c.JobId)
		rec.Action, rec.Round = audit.ActionModelCommitted, c.Round
		rec.ModelHash = paramsDigest(c.Params)
		rec.Details = map[string]string{"version": strconv.Itoa(int(c.Version)), "total_samples": strconv.FormatUint(c.TotalSamples, 10)}
	case *pb.ScalingCommand:
		job(c.JobId)
		rec.Action, rec.Round = audit.ActionModelCommitted, c.Round
		rec.Details = map[string]string{"region_scaling": "committed", "total_samples": strconv.FormatUint(c.TotalSamples, 10)}
	case *pb.AbortRoundCommand:
		job(c.JobId)
		rec.Action, rec.Round, rec.Reason = audit.ActionRoundAborted, c.Round, c.Reason
	case *pb.EndJobCommand:
		job(c.JobId)
		rec.Action, rec.Reason = audit.ActionJobEnded, c.Reason
		if c.State == JobCancelled {
			rec.Action = audit.ActionJobCancelled
		}
		rec.Details = map[string]string{"state": c.State}
	case *pb.RevokeCommand:
		if c.RevokedBy != "" {
			actor = c.RevokedBy
		}
		rec.Action, rec.Reason = audit.ActionCertificateRevoked, c.Reason
		rec.Details = map[string]string{"serial": c.Serial}
	case *pb.EndWebSessionsCommand:
		if c.EndedBy != "" {
			actor = c.EndedBy
		}
		rec.Action = audit.ActionWebSessionsEnded
		rec.Details = map[string]string{"identity": c.Identity}
	case *pb.ReplicaRemovedCommand:
		rec.Action = audit.ActionReplicaRemoved
		rec.Details = map[string]string{"replica": c.Id}
	case *pb.AuthzRefusedCommand:
		actor = c.Identity
		rec.Action, rec.Reason = audit.ActionAuthzRefused, c.Reason
		rec.Details = map[string]string{"method": c.Method, "serial": c.Serial}
	default:
		return audit.Record{}, false, nil
	}
	role, name, found := strings.Cut(actor, "/")
	if !found {
		return audit.Record{}, false, fmt.Errorf("actor %q is not role/name", actor)
	}
	rec.Role, rec.Actor = role, name
	// Check the record as the log will: a record at position 0.
	probe := rec
	probe.PrevHash, probe.PrevJobSeq = strings.Repeat("0", 64), -1
	if err := probe.Validate(); err != nil {
		return audit.Record{}, false, err
	}
	return rec, true, nil
}

func digest(b []byte) string {
	d := sha256.Sum256(b)
	return hex.EncodeToString(d[:])
}

// paramsDigest is the SHA-256 of a model version's parameters as
// big-endian float64s: what `regionfl model download` files can be
// checked against.
func paramsDigest(p []float64) string {
	h := sha256.New()
	var b [8]byte
	for _, v := range p {
		binary.BigEndian.PutUint64(b[:], math.Float64bits(v))
		h.Write(b[:])
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil))
}
