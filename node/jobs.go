package node

import (
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"regionfl/identity"
	"regionfl/jobspec"
	pb "regionfl/proto/regionfl/v1"
)

// vettedJob is a job offer whose researcher's signature this node checked:
// the digest of the signed spec (jobspec.SignedDigest), the signed request
// id, who signed, and what the site decided.
type vettedJob struct {
	SpecDigest []byte `json:"spec_digest"`
	RequestID  string `json:"request_id"`
	Submitter  string `json:"submitter"`
	// Serial is the researcher's certificate serial: once it is revoked,
	// no task of the job is served.
	Serial   string   `json:"serial,omitempty"`
	Decision decision `json:"decision,omitempty"`
}

// decision is what a site decided on a job it vetted.
type decision string

const (
	// undecided: vetted for a decryption only, never offered.
	undecided decision = ""
	accepted  decision = "accepted"
	refused   decision = "refused"
)

// vet checks that a researcher of the region CA signed the offered job as
// offered, and that the coordinator has not offered the same signed job
// under another job ID: it returns the signer, or the reason to refuse.
// The coordinator relays the job; it cannot change K, the model, the
// purpose or anything else the researcher signed.
func (n *Node) vet(o *pb.JobOffer) (identity.Identity, string) {
	d := jobspec.SignedDigest(o.Spec)
	by, err := identity.VerifyRoleStatement(n.cfg.CA, o.Certificate, identity.RoleResearcher, time.Now(), o.Signature, identity.StatementJob, identity.JobFields(d[:], o.RequestId)...)
	if err != nil {
		return by, n.untrusted("a job offer", "not signed as offered by a researcher of the region CA: "+err.Error()).Error()
	}
	if err := n.notRevoked("a job offer", o.Certificate); err != nil {
		return by, err.Error()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if v, ok := n.state.Jobs[o.JobId]; ok && string(v.SpecDigest) != string(d[:]) {
		return by, n.untrusted("a job offer", fmt.Sprintf("job %s was offered before with another spec", o.JobId)).Error()
	}
	for id, v := range n.state.Jobs {
		if id != o.JobId && v.RequestID == o.RequestId && string(v.SpecDigest) == string(d[:]) {
			return by, n.untrusted("a job offer", fmt.Sprintf("the signed job %q was offered before as job %s (one job per signed request)", o.RequestId, id)).Error()
		}
	}
	return by, ""
}

// pinJob records, fsync'd before the decision leaves, the signed job this
// node vetted and what it decided.
func (n *Node) pinJob(o *pb.JobOffer, by identity.Identity, d decision) error {
	digest := jobspec.SignedDigest(o.Spec)
	n.mu.Lock()
	defer n.mu.Unlock()
	serial, _ := identity.CertificateSerial(o.Certificate) // vet parsed it
	n.state.Jobs[o.JobId] = vettedJob{SpecDigest: digest[:], RequestID: o.RequestId, Submitter: by.String(), Serial: serial, Decision: d}
	return n.state.save(n.cfg.DataDir)
}

// vetted says why a task of a job cannot be served: the job is not one
// this node vetted (and, to train, accepted), or the task carries another
// spec than the one the researcher signed.
func (n *Node) vetted(jobID string, spec *pb.JobSpec, train bool) error {
	n.mu.Lock()
	v, ok := n.state.Jobs[jobID]
	n.mu.Unlock()
	d := jobspec.SignedDigest(spec)
	switch {
	case !ok:
		return n.untrusted("a task of job "+jobID, "this node was never offered the job signed by a researcher")
	case train && v.Decision != accepted:
		return n.untrusted("a task of job "+jobID, "this node did not accept the job")
	case string(v.SpecDigest) != string(d[:]):
		return n.untrusted("a task of job "+jobID, fmt.Sprintf("its spec (digest %s) is not the one %s signed (%s)", hex.EncodeToString(d[:8]), v.Submitter, hex.EncodeToString(v.SpecDigest[:min(8, len(v.SpecDigest))])))
	case v.Serial != "":
		return n.serialNotRevoked("a task of job "+jobID, v.Serial)
	}
	return nil
}

// vetTask holds a task to the job its researcher signed. A node that was
// never offered the job (offline while it was decided, or, for a
// decryption, a hospital that is no contributor) vets the signed job the
// task carries: to train for it, as it would vet and check an offer.
func (n *Node) vetTask(jobID string, job *pb.JobOffer, spec *pb.JobSpec, train bool) error {
	n.mu.Lock()
	v, known := n.state.Jobs[jobID]
	n.mu.Unlock()
	if (!known || train && v.Decision == undecided) && job != nil && job.JobId == jobID {
		by, reason := n.vet(job)
		d := undecided
		if reason == "" && train {
			reason, d = n.check(jobID, job.Spec), accepted
		}
		if reason != "" {
			return errors.New(reason)
		}
		if err := n.pinJob(job, by, d); err != nil {
			return err
		}
	}
	return n.vetted(jobID, spec, train)
}
