package node

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"regionfl/client"
	"regionfl/he"
	"regionfl/identity"
	"regionfl/jobspec"
	pb "regionfl/proto/regionfl/v1"
)

// chainDir holds, per job, the newest model version this node checked
// itself (chainLink): its parameters and the server optimizer's state
// after it. A site measures a model (its metric sums go out with an
// update) only if it is on that chain: version 0 made from the signed
// spec, each later version the previous one plus the server step of the
// aggregate the site decrypted itself from the round's signed shares.
// So a coordinator cannot have the sites' test rows scored by weights of
// its choosing.
const chainDir = "chain"

// errUnverifiable: a model this node cannot check from what it holds,
// though nothing shows it false.
var errUnverifiable = errors.New("the model cannot be checked here")

// chainLink is the newest version of a job's model this node verified.
type chainLink struct {
	JobID   string `json:"job_id"`
	Version uint32 `json:"version"`
	// Digest is jobspec.ModelDigest of Params.
	Digest []byte `json:"digest"`
	// Params and OptimizerState are stored after the metadata line, as
	// little-endian float64s; these are their lengths.
	Params         int `json:"params"`
	OptimizerState int `json:"optimizer_state"`

	params, optimizerState []float64
}

func chainPath(dir, jobID string) string {
	h := sha256.Sum256([]byte(jobID))
	return filepath.Join(dir, chainDir, hex.EncodeToString(h[:16])+".chain")
}

// saveLink writes a job's link, replacing the previous one.
func saveLink(dir string, l *chainLink) error {
	l.Params, l.OptimizerState = len(l.params), len(l.optimizerState)
	raw := make([]byte, 0, 8*(l.Params+l.OptimizerState))
	for _, v := range append(slices.Clone(l.params), l.optimizerState...) {
		raw = binary.LittleEndian.AppendUint64(raw, math.Float64bits(v))
	}
	return writeMetaFile(chainPath(dir, l.JobID), l, raw)
}

// pin writes a job's link and notes the job for pruneChains.
func (n *Node) pin(l *chainLink) error {
	if err := saveLink(n.cfg.DataDir, l); err != nil {
		return err
	}
	n.mu.Lock()
	if n.chained == nil {
		n.chained = map[string]bool{}
	}
	n.chained[l.JobID] = true
	n.mu.Unlock()
	return nil
}

// loadLink reads a job's link, or nil if the node verified none of its
// models beyond version 0. The file is the node's own, but it is read as
// if it were not (readMetaFile): the link is checked against the job and
// its parameter count before its values are read.
func loadLink(dir, jobID string, numParams int) (*chainLink, error) {
	l := &chainLink{}
	raw, err := readMetaFile(chainPath(dir, jobID), l, func() (int, error) {
		if l.JobID != jobID || l.Params != numParams || l.OptimizerState < 0 || l.OptimizerState > 2*numParams {
			return 0, fmt.Errorf("a link of job %q with %d parameters and %d optimizer values", l.JobID, l.Params, l.OptimizerState)
		}
		return 8 * (l.Params + l.OptimizerState), nil
	})
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("node: model chain of job %s: %w", jobID, err)
	}
	v := make([]float64, l.Params+l.OptimizerState)
	for i := range v {
		v[i] = math.Float64frombits(binary.LittleEndian.Uint64(raw[8*i:]))
	}
	l.params, l.optimizerState = v[:l.Params:l.Params], v[l.Params:]
	if len(l.optimizerState) == 0 {
		l.optimizerState = nil
	}
	return l, nil
}

// onChain reports whether params, served as version t.ModelVersion of t's
// job, is on the chain this node verified, extending the chain by one
// version when the round that made it can be checked. false with no error:
// the version cannot be checked here (the node missed a round, or the
// coordinator no longer keeps the evidence); the node trains but does not
// measure it. An error: the coordinator served something the evidence
// refutes, and the node refuses the round.
func (n *Node) onChain(ctx context.Context, t *pb.TrainTask, params []float64) (bool, error) {
	v := t.ModelVersion
	digest := jobspec.ModelDigest(params)
	link, err := loadLink(n.cfg.DataDir, t.JobId, len(params))
	if err != nil {
		return false, err
	}
	switch {
	case v == 0:
		// Checked against the signed spec already (train).
		if link == nil {
			link = &chainLink{JobID: t.JobId, Version: 0, Digest: digest[:], params: params}
			return true, n.pin(link)
		}
		return true, nil
	case link == nil:
		n.log.Warn("model not measured: this site verified none of the job's versions", "job_id", t.JobId, "version", v)
		return false, nil
	case link.Version == v:
		if string(link.Digest) != string(digest[:]) {
			return false, n.untrusted("a model", fmt.Sprintf("version %d of job %s is not the one this site verified", v, t.JobId))
		}
		return true, nil
	case link.Version+1 != v:
		n.log.Warn("model not measured: not the successor of the newest version this site verified", "job_id", t.JobId, "version", v, "verified", link.Version)
		return false, nil
	}
	var ev *pb.ModelEvidence
	err = n.call(ctx, time.Minute, func(ctx context.Context, conn client.Conn) error {
		resp, err := conn.Hospital.GetModelEvidence(ctx, &pb.GetModelEvidenceRequest{JobId: t.JobId, Version: v},
			client.EvidenceMessage(n.evidenceSize(t.Spec)))
		ev = resp.GetEvidence()
		return err
	})
	if status.Code(err) == codes.NotFound {
		n.log.Warn("model not measured: the round that made it is no longer kept", "job_id", t.JobId, "version", v)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	step, err := n.checkEvidence(ctx, t, link, ev)
	if errors.Is(err, errUnverifiable) {
		n.log.Warn("model not measured", "job_id", t.JobId, "version", v, "reason", err.Error())
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if jobspec.ModelDigest(step.Params) != digest {
		return false, n.untrusted("a model", fmt.Sprintf("version %d of job %s is not version %d plus the server step of the aggregate its round decrypted", v, t.JobId, v-1))
	}
	next := &chainLink{JobID: t.JobId, Version: v, Digest: digest[:], params: step.Params, optimizerState: step.OptimizerState}
	if err := n.pin(next); err != nil {
		return false, err
	}
	n.log.Info("model verified", "job_id", t.JobId, "version", v, "contributors", len(ev.Contributors), "digest", fmt.Sprintf("%x", digest[:8]))
	return true, nil
}

// follow checks a job's newest model version as soon as it is committed,
// whether or not this node trains the next round (it may sit a key epoch
// out, or miss a round's deadline): the chain stays unbroken, and the node
// can measure the versions it trains from later. Only a node that is away
// while a version is committed and the next one supersedes it loses the
// chain of that job.
func (n *Node) follow(ctx context.Context, m *pb.ModelTask) error {
	n.mu.Lock()
	done, seen := n.checked[m.JobId]
	n.mu.Unlock()
	if seen && done >= m.Version {
		return nil
	}
	if m.Spec == nil {
		return n.untrusted("a model", "its task carries no job spec")
	}
	if err := n.vetted(m.JobId, m.Spec, true); err != nil {
		return err
	}
	if err := jobspec.ValidateOffered(m.Spec); err != nil {
		return n.untrusted("the job of a model", err.Error())
	}
	spec := jobspec.FromProto(m.Spec.GetModel())
	if spec.Hash() != m.ModelHash {
		return n.untrusted("a model", "it names another architecture than the job's")
	}
	t := &pb.TrainTask{JobId: m.JobId, ModelVersion: m.Version, ModelHash: m.ModelHash, Spec: m.Spec}
	err := n.followTo(ctx, t, spec.NumParams())
	if err == nil || errors.Is(err, ErrUntrusted) {
		n.mu.Lock()
		if n.checked == nil {
			n.checked = map[string]uint32{}
		}
		n.checked[m.JobId] = m.Version
		n.mu.Unlock()
	}
	return err
}

// followTo extends a job's chain to t.ModelVersion when it ends one
// version before it (from version 0, which the spec makes).
func (n *Node) followTo(ctx context.Context, t *pb.TrainTask, numParams int) error {
	link, err := loadLink(n.cfg.DataDir, t.JobId, numParams)
	if err != nil {
		return err
	}
	if link == nil {
		v0 := jobspec.FromProto(t.Spec.GetModel()).Init(int64(t.Spec.Seed))
		d := jobspec.ModelDigest(v0)
		link = &chainLink{JobID: t.JobId, Digest: d[:], params: v0}
		if err := n.pin(link); err != nil {
			return err
		}
	}
	if link.Version+1 != t.ModelVersion {
		return nil
	}
	var model *pb.Model
	err = n.call(ctx, 30*time.Second, func(ctx context.Context, conn client.Conn) error {
		resp, err := conn.Hospital.FetchModel(ctx, &pb.FetchModelRequest{JobId: t.JobId, Version: t.ModelVersion}, client.ModelMessage(numParams))
		model = resp.GetModel()
		return err
	})
	if err != nil {
		return err
	}
	if model.Version != t.ModelVersion || model.ModelHash != t.ModelHash || len(model.Params) != numParams {
		return n.untrusted("a model", fmt.Sprintf("asked for version %d of job %s, served version %d of %s with %d parameters", t.ModelVersion, t.JobId, model.Version, model.ModelHash, len(model.Params)))
	}
	_, err = n.onChain(ctx, t, model.Params)
	return err
}

// pruneChains deletes the chains of the jobs a poll names neither with a
// model nor with a train task: they finished (or have no version beyond
// 0, which the spec makes again). The first poll after a start prunes
// the whole directory (an unreadable file too); later ones the jobs whose
// chain it kept or pinned since. A coordinator that leaves a live job out only costs this
// node its chain of the job, which it then no longer measures: nothing it
// pins comes from the coordinator.
func (n *Node) pruneChains(resp *pb.PollResponse) error {
	live := map[string]bool{}
	for _, m := range resp.Models {
		live[m.JobId] = true
	}
	for _, t := range resp.Train {
		live[t.JobId] = true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	var stale []string // paths
	if n.pruned {
		for job := range n.chained {
			if !live[job] {
				stale = append(stale, chainPath(n.cfg.DataDir, job))
				delete(n.chained, job)
				delete(n.checked, job)
			}
		}
	} else {
		dir := filepath.Join(n.cfg.DataDir, chainDir)
		entries, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		for _, e := range entries {
			if !strings.HasSuffix(e.Name(), ".chain") {
				continue // a temporary file of an interrupted write
			}
			path := filepath.Join(dir, e.Name())
			l := &chainLink{}
			_, err := readMetaFile(path, l, nil)
			switch {
			case err != nil || !live[l.JobID]:
				stale = append(stale, path)
			case n.chained == nil:
				n.chained = map[string]bool{l.JobID: true}
			default:
				n.chained[l.JobID] = true
			}
		}
		n.pruned = true
	}
	for _, path := range stale {
		if err := removeFile(path); err != nil {
			return err
		}
	}
	return nil
}

// evidenceSize bounds the evidence of a round of spec's job: an aggregate,
// t decryption shares, and per hospital an approval (certificate,
// signature, fingerprint).
func (n *Node) evidenceSize(spec *pb.JobSpec) int {
	n.mu.Lock()
	threshold := int(n.state.Threshold)
	n.mu.Unlock()
	shape := jobspec.VectorShape(spec, 1)
	hospitals := n.params().MaxParties()
	return he.UpdateSize(n.params(), shape) + threshold*he.DecryptionShareSize(n.params(), shape, hospitals, threshold) + hospitals*(16<<10)
}

// checkEvidence checks a round's evidence against what this node holds
// (the pinned region, the link the round trained from) and returns the
// step it makes: every contributor approved this set and the fingerprint
// of its update, the aggregate is their sum, every share is signed by the
// decryptor of the pinned region it names over this aggregate, and the
// shares decrypt it.
func (n *Node) checkEvidence(ctx context.Context, t *pb.TrainTask, from *chainLink, ev *pb.ModelEvidence) (jobspec.ModelStep, error) {
	var none jobspec.ModelStep
	refuse := func(reason string) (jobspec.ModelStep, error) {
		return none, n.untrusted("the evidence of a model", reason)
	}
	if ev.GetJobId() != t.JobId || ev.GetVersion() != t.ModelVersion || ev.GetRound() == jobspec.StatsRound {
		return refuse(fmt.Sprintf("it is of job %q version %d round %d, not of job %s version %d", ev.GetJobId(), ev.GetVersion(), ev.GetRound(), t.JobId, t.ModelVersion))
	}
	model, ok := jobspec.ParseModelDigest(from.Digest)
	if !ok {
		return none, fmt.Errorf("model chain of job %s: a digest of %d bytes", t.JobId, len(from.Digest))
	}
	binding := jobspec.Binding(t.JobId, ev.Round, from.Version, t.ModelHash, model)
	r, _, err := n.region(ctx)
	if err != nil {
		return none, err
	}
	contributors := ev.Contributors
	if !slices.IsSorted(contributors) || len(slices.Compact(slices.Clone(contributors))) != len(contributors) {
		return refuse("its contributors are not sorted and distinct")
	}
	if k := int(t.Spec.GetMinHospitals()); len(contributors) < k {
		return refuse(fmt.Sprintf("%d contributors, the job needs %d", len(contributors), k))
	}
	n.mu.Lock()
	k := n.state.Epochs[ev.Epoch]
	n.mu.Unlock()
	if ev.Epoch != 0 && (k == nil || k.Members == nil) {
		return none, fmt.Errorf("%w: this site never pinned the members of key epoch %d", errUnverifiable, ev.Epoch)
	}
	members := n.epochMembersOf(ev.Epoch, r)
	contributorPoints, err := n.memberPoints(members, "contributor", contributors)
	if err != nil {
		return none, err
	}
	shape := jobspec.VectorShape(t.Spec, ev.Round)
	agg, err := he.UnmarshalUpdate(n.params(), shape, ev.Aggregate)
	if err != nil {
		return refuse("its aggregate: " + err.Error())
	}
	aggDigest := agg.Digest()
	if agg.Binding() != binding {
		return refuse("its aggregate is bound to another job, round or model than the version this site verified")
	}
	if err := n.checkApprovals(r, binding, aggDigest[:], contributors, ev.Approvals); err != nil {
		return none, err
	}
	if err := he.CheckFold(n.params(), agg, fingerprints(ev.Approvals)); err != nil {
		return refuse(err.Error())
	}
	threshold := int(r.Threshold)
	if len(ev.Active) != threshold || len(ev.Shares) != threshold || !slices.IsSorted(ev.Active) {
		return refuse(fmt.Sprintf("%d decryptors (sorted) and %d shares, the threshold is %d", len(ev.Active), len(ev.Shares), threshold))
	}
	active, err := n.decryptorPoints(members, ev.Epoch, ev.Active)
	if err != nil {
		return none, err
	}
	rd := regionDigest(r)
	shares := make([]*he.DecryptionShare, threshold)
	for i, s := range ev.Shares {
		if s.Hospital != ev.Active[i] {
			return refuse(fmt.Sprintf("share %d is from %q, not %q", i, s.Hospital, ev.Active[i]))
		}
		d := sha256.Sum256(s.Share)
		want := identity.Identity{Name: s.Hospital, Role: identity.RoleHospital}
		serial, err := n.verifier.Verify(s.Certificate, want, time.Now(), s.Signature, identity.StatementDecryptionShare,
			identity.DecryptionShareFields(rd, binding[:], aggDigest[:], d[:], s.Hospital, ev.Attempt, contributors, ev.Active)...)
		if err != nil {
			return refuse("the share of " + s.Hospital + ": " + err.Error())
		}
		if err := n.serialNotRevoked("the share of "+s.Hospital, serial); err != nil {
			return none, err
		}
		if shares[i], err = he.UnmarshalDecryptionShare(n.params(), s.Share); err != nil {
			return refuse("the share of " + s.Hospital + ": " + err.Error())
		}
		if shares[i].From() != active[i] || !slices.Equal(shares[i].Contributors(), slices.Sorted(slices.Values(contributorPoints))) {
			return refuse("the share of " + s.Hospital + " is for other points than the names it is signed with")
		}
	}
	res, err := he.Combine(n.params(), agg, shares, threshold)
	if err != nil {
		return refuse(err.Error())
	}
	step, err := jobspec.NextModel(t.Spec, from.Version, res.Sum, res.Count, from.params, from.optimizerState)
	if err != nil {
		return refuse("the server step: " + err.Error())
	}
	return step, nil
}

// fingerprints lists the fingerprints approvals sign, in their order.
func fingerprints(approvals []*pb.Approval) [][]byte {
	out := make([][]byte, len(approvals))
	for i, a := range approvals {
		out[i] = a.Fingerprint
	}
	return out
}
