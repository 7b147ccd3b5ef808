package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"

	"regionfl/audit"
	"regionfl/jobspec"
	pb "regionfl/proto/regionfl/v1"
)

// draft is the audit record of a command being built by the command's
// record function (see command): the actor is the proposer's identity
// unless the command names whom it acts for.
type draft struct {
	rec   audit.Record
	actor string // role/name
}

// hospital makes the record one of hospital h's own actions.
func (r *draft) hospital(h string) { r.actor, r.rec.Hospital = "hospital/"+h, h }

// job fills the job's ID, purpose and legal basis.
func (r *draft) job(s *State, id string) {
	r.rec.JobID = id
	if j, ok := s.Jobs[id]; ok {
		r.rec.Purpose, r.rec.LegalBasis = j.Spec.GetPurpose(), j.Spec.GetLegalBasis()
	}
}

// finish checks the record as the log will (as a record at position 0).
func (r *draft) finish() (audit.Record, error) {
	role, name, found := strings.Cut(r.actor, "/")
	if !found {
		return audit.Record{}, fmt.Errorf("actor %q is not role/name", r.actor)
	}
	rec := r.rec
	rec.Role, rec.Actor = role, name
	probe := rec
	probe.PrevHash, probe.PrevJobSeq = strings.Repeat("0", 64), -1
	if err := probe.Validate(); err != nil {
		return audit.Record{}, err
	}
	return rec, nil
}

// The record functions of the command table, one per audited command.
// Each runs before its command is applied; Apply refuses a command whose
// record would be invalid, then appends the record in the same entry as the
// action, so a record is exactly as durable and as replicated as its
// action. What leaves a site is described by size and digest, never by
// content.

func recordReplicaJoined(_ *State, c *pb.RegisterReplicaCommand, r *draft) {
	r.rec.Action = audit.ActionReplicaJoined
	r.rec.Details = map[string]string{"replica": c.Id, "grpc_addr": c.GrpcAddr}
}

func recordRegionCreated(_ *State, c *pb.CreateRegionCommand, r *draft) {
	r.rec.Action = audit.ActionRegionCreated
	r.rec.Details = map[string]string{"hospitals": strings.Join(c.Hospitals, ","),
		"threshold": strconv.Itoa(int(c.Threshold)), "params": c.Params}
}

func recordEnrolled(_ *State, c *pb.EnrollCommand, r *draft) {
	r.hospital(c.Hospital)
	r.rec.Action = audit.ActionCeremonyEnrolled
	r.rec.Digest, r.rec.Size = digest(c.HpkePublicKey), uint64(len(c.HpkePublicKey))
}

func recordPublicKeyShare(_ *State, c *pb.PublicKeyShareCommand, r *draft) {
	r.hospital(c.Hospital)
	r.rec.Action = audit.ActionCeremonyPublicKeyShare
	r.rec.Digest, r.rec.Size = digest(c.Share), uint64(len(c.Share))
}

func recordPublicKey(_ *State, c *pb.PublicKeyCommand, r *draft) {
	r.rec.Action = audit.ActionCeremonyPublicKey
	r.rec.Digest, r.rec.Size = digest(c.PublicKey), uint64(len(c.PublicKey))
}

func recordSealedShares(_ *State, c *pb.SealedSharesCommand, r *draft) {
	r.hospital(c.From)
	r.rec.Action = audit.ActionCeremonySealedShares
	if len(c.Shares) == 0 {
		// The shares stay out of the log: their digests stand for them.
		r.rec.Digest, r.rec.Size = digest(bytes.Join(c.Digests, nil)), c.Size
		return
	}
	var size uint64
	for _, b := range c.Shares {
		size += uint64(len(b))
	}
	r.rec.Size = size
}

func recordKeyReady(s *State, c *pb.KeyReadyCommand, r *draft) {
	r.hospital(c.Hospital)
	r.rec.Action = audit.ActionCeremonyKeyReady
	if s.Region != nil && s.Region.Epoch > 0 {
		r.rec.Details = map[string]string{"epoch": strconv.FormatUint(uint64(s.Region.Epoch), 10)}
	}
}

func recordEpochStarted(_ *State, c *pb.StartKeyEpochCommand, r *draft) {
	if c.StartedBy != "" {
		r.actor = c.StartedBy
	}
	r.rec.Action, r.rec.Reason = audit.ActionCeremonyEpochStarted, c.Reason
	r.rec.Details = map[string]string{"epoch": strconv.FormatUint(uint64(c.Epoch), 10)}
	if c.Abandon {
		r.rec.Details["abandoned"] = strconv.FormatUint(uint64(c.Epoch-1), 10)
	}
}

func recordEnrollmentClosed(s *State, c *pb.CloseEnrollmentCommand, r *draft) {
	r.rec.Action = audit.ActionCeremonyEnrollmentClosed
	var missing []string
	if s.Region != nil {
		for _, h := range s.Region.Hospitals {
			if !slices.Contains(c.Members, h) {
				missing = append(missing, h)
			}
		}
	}
	r.rec.Details = map[string]string{"epoch": strconv.FormatUint(uint64(c.Epoch), 10),
		"members": strings.Join(c.Members, ","), "sitting_out": strings.Join(missing, ",")}
}

func recordJobSubmitted(_ *State, c *pb.SubmitJobCommand, r *draft) {
	if c.SubmittedBy != "" {
		r.actor = c.SubmittedBy
	}
	r.rec.JobID, r.rec.Purpose, r.rec.LegalBasis = c.JobId, c.Spec.GetPurpose(), c.Spec.GetLegalBasis()
	r.rec.Action, r.rec.ModelHash = audit.ActionJobSubmitted, c.ModelHash
	if len(c.Signature) > 0 {
		// The researcher's signed statement of the job, checkable
		// offline (audit.Verify).
		d := jobspec.SignedDigest(c.Spec)
		r.rec.Details = map[string]string{
			"spec_digest": hex.EncodeToString(d[:]), "request_id": c.RequestId,
			"signature": hex.EncodeToString(c.Signature), "certificate": hex.EncodeToString(c.Certificate),
		}
	}
}

func recordJobDecided(s *State, c *pb.DecideJobCommand, r *draft) {
	r.hospital(c.Hospital)
	r.job(s, c.JobId)
	r.rec.Action = audit.ActionJobAccepted
	if !c.Accept {
		r.rec.Action, r.rec.Reason = audit.ActionJobRefused, c.Reason
	}
}

func recordRoundOpened(s *State, c *pb.OpenRoundCommand, r *draft) {
	r.job(s, c.JobId)
	r.rec.Action, r.rec.Round = audit.ActionRoundOpened, c.Round
}

func recordContribution(s *State, c *pb.ContributionCommand, r *draft) {
	r.hospital(c.Hospital)
	r.job(s, c.JobId)
	r.rec.Action, r.rec.Round = audit.ActionContributionAccepted, c.Round
	r.rec.Digest, r.rec.Size = hex.EncodeToString(c.Digest), c.Size
	r.rec.Details = map[string]string{}
	if len(c.Signature) > 0 {
		// identity.StatementContribution with what it covers, checked
		// offline by audit.Verify: the region, the job's model and the
		// round's model version fix the binding.
		r.signed(s, c.JobId, c.Round, c.Signature, c.Certificate)
	}
	if j, ok := s.Jobs[c.JobId]; ok && j.Spec.GetDpNoiseMultiplier() > 0 && c.Round != jobspec.StatsRound {
		// The privacy ledger, as of this contribution.
		rounds := j.ContributedRounds(c.Hospital) + 1
		r.rec.Details["epsilon"] = strconv.FormatFloat(j.accountant().Epsilon(rounds), 'g', 6, 64)
		r.rec.Details["delta"] = strconv.FormatFloat(j.Spec.DpDelta, 'g', -1, 64)
	}
	if len(r.rec.Details) == 0 {
		r.rec.Details = nil
	}
}

func recordRoundClosed(s *State, c *pb.CloseRoundCommand, r *draft) {
	r.job(s, c.JobId)
	r.rec.Action, r.rec.Round = audit.ActionRoundClosed, c.Round
	r.rec.Digest, r.rec.Size = hex.EncodeToString(c.AggregateDigest), uint64(len(c.Aggregate))
	r.rec.Details = map[string]string{"contributors": strings.Join(c.Contributors, ","), "decryptors": strings.Join(c.Active, ",")}
}

func recordApproval(s *State, c *pb.ApprovalCommand, r *draft) {
	r.hospital(c.Hospital)
	r.job(s, c.JobId)
	r.rec.Action, r.rec.Round = audit.ActionContributorsApproved, c.Round
	r.rec.Details = map[string]string{}
	// identity.StatementApproval with what it covers, checked offline by
	// audit.Verify (approvals made before fingerprints carry no
	// fingerprint and are not checked).
	rd := r.signed(s, c.JobId, c.Round, c.Signature, c.Certificate)
	if rd == nil {
		return
	}
	r.rec.Details["contributors"] = strings.Join(rd.Contributors, ",")
	if len(c.Fingerprint) > 0 {
		r.rec.Details["fingerprint"] = hex.EncodeToString(c.Fingerprint)
		r.rec.Details["aggregate_digest"] = hex.EncodeToString(rd.AggDigest)
		if u := rd.ContributionOf(c.Hospital); u != nil {
			r.rec.Details["update_digest"] = hex.EncodeToString(u.Digest)
		}
	}
}

func recordDecryptionShare(s *State, c *pb.DecryptionShareCommand, r *draft) {
	r.hospital(c.Hospital)
	r.job(s, c.JobId)
	r.rec.Action, r.rec.Round = audit.ActionDecryptionShareGiven, c.Round
	r.rec.Digest, r.rec.Size = digest(c.Share), uint64(len(c.Share))
	if len(c.Signature) == 0 {
		return
	}
	// identity.StatementDecryptionShare with what it covers, checked
	// offline by audit.Verify.
	r.rec.Details = map[string]string{"attempt": strconv.Itoa(int(c.Attempt))}
	if rd := r.signed(s, c.JobId, c.Round, c.Signature, c.Certificate); rd != nil {
		r.rec.Details["aggregate_digest"] = hex.EncodeToString(rd.AggDigest)
		r.rec.Details["contributors"] = strings.Join(rd.Contributors, ",")
		r.rec.Details["decryptors"] = strings.Join(rd.Active, ",")
	}
}

// signed adds a hospital's signed round statement to the record's details,
// with what fixes the round's binding (the region, the job's model, the
// round's model version and model digest) for audit.Verify to check it. It
// returns the round, if it is the job's current one.
func (r *draft) signed(s *State, jobID string, round uint32, signature, certificate []byte) *Round {
	r.rec.Details["signature"] = hex.EncodeToString(signature)
	r.rec.Details["certificate"] = hex.EncodeToString(certificate)
	if s.Region != nil {
		d := s.Region.Digest()
		r.rec.Details["region_digest"] = hex.EncodeToString(d[:])
	}
	j, ok := s.Jobs[jobID]
	if !ok {
		return nil
	}
	r.rec.ModelHash = j.ModelHash
	rd := j.Current()
	if rd == nil || rd.Number != round {
		return nil
	}
	r.rec.Details["model_version"] = strconv.Itoa(int(rd.ModelVersion))
	if d := j.ModelDigest(rd); d != ([32]byte{}) {
		r.rec.Details["model_digest"] = hex.EncodeToString(d[:])
	}
	return rd
}

func recordDecryptionRetried(s *State, c *pb.RetryDecryptionCommand, r *draft) {
	r.job(s, c.JobId)
	r.rec.Action, r.rec.Round = audit.ActionDecryptionRetried, c.Round
	r.rec.Details = map[string]string{"decryptors": strings.Join(c.Active, ","), "attempt": strconv.Itoa(int(c.Attempt))}
}

func recordModelCommitted(s *State, c *pb.CommitModelCommand, r *draft) {
	r.job(s, c.JobId)
	r.rec.Action, r.rec.Round = audit.ActionModelCommitted, c.Round
	r.rec.ModelHash = paramsDigest(c.Params)
	r.rec.Details = map[string]string{"version": strconv.Itoa(int(c.Version)), "total_samples": strconv.FormatUint(c.TotalSamples, 10)}
}

func recordScaling(s *State, c *pb.ScalingCommand, r *draft) {
	r.job(s, c.JobId)
	r.rec.Action, r.rec.Round = audit.ActionModelCommitted, c.Round
	r.rec.Details = map[string]string{"region_scaling": "committed", "total_samples": strconv.FormatUint(c.TotalSamples, 10)}
}

func recordRoundAborted(s *State, c *pb.AbortRoundCommand, r *draft) {
	r.job(s, c.JobId)
	r.rec.Action, r.rec.Round, r.rec.Reason = audit.ActionRoundAborted, c.Round, c.Reason
}

func recordJobEnded(s *State, c *pb.EndJobCommand, r *draft) {
	r.job(s, c.JobId)
	r.rec.Action, r.rec.Reason = audit.ActionJobEnded, c.Reason
	if c.State == JobCancelled {
		r.rec.Action = audit.ActionJobCancelled
	}
	r.rec.Details = map[string]string{"state": c.State}
}

func recordRevoked(_ *State, c *pb.RevokeCommand, r *draft) {
	if c.RevokedBy != "" {
		r.actor = c.RevokedBy
	}
	r.rec.Action, r.rec.Reason = audit.ActionCertificateRevoked, c.Reason
	r.rec.Details = map[string]string{"serial": c.Serial}
}

func recordRevocationList(_ *State, c *pb.RevocationListCommand, r *draft) {
	if c.SignedBy != "" {
		r.actor = c.SignedBy
	}
	r.rec.Action = audit.ActionRevocationListPublished
	r.rec.Details = map[string]string{"issued_unix_ms": strconv.FormatInt(c.IssuedUnixMs, 10), "serials": strconv.Itoa(len(c.Serials))}
}

func recordWebSessionsEnded(_ *State, c *pb.EndWebSessionsCommand, r *draft) {
	if c.EndedBy != "" {
		r.actor = c.EndedBy
	}
	r.rec.Action = audit.ActionWebSessionsEnded
	r.rec.Details = map[string]string{"identity": c.Identity}
}

func recordReplicaRemoved(_ *State, c *pb.ReplicaRemovedCommand, r *draft) {
	r.rec.Action = audit.ActionReplicaRemoved
	r.rec.Details = map[string]string{"replica": c.Id}
}

func recordAuthzRefused(_ *State, c *pb.AuthzRefusedCommand, r *draft) {
	r.actor = c.Identity
	r.rec.Action, r.rec.Reason = audit.ActionAuthzRefused, c.Reason
	r.rec.Details = map[string]string{"method": c.Method, "serial": c.Serial}
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
