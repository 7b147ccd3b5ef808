package coordinator_test

import (
	"bytes"
	"cmp"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"regionfl/client"
	"regionfl/coordinator"
	"regionfl/coordinator/fsm"
	"regionfl/identity"
	"regionfl/jobspec"
	"regionfl/localregion"
	"regionfl/models"
	"regionfl/node"
	"regionfl/node/dataset"
	"regionfl/node/policy"
	pb "regionfl/proto/regionfl/v1"
)

// regionOpts describes a test region.
type regionOpts struct {
	replicas  int
	hospitals int
	threshold int
	// trailingLogs and segmentSize are passed to every replica (0: the
	// defaults); small values make a compacted log lose its old entries.
	trailingLogs uint64
	segmentSize  int
	// serverOptions are passed to every replica (e.g. a recorder of what
	// it receives).
	serverOptions []grpc.ServerOption
	uploadTimeout time.Duration
	metrics       bool // serve /metrics on a loopback port
	rekeyAt       int  // coordinator.Config.RekeyAt
	// enrollmentWait is coordinator.Config.EnrollmentWait (0: the default).
	enrollmentWait time.Duration
	reflection     bool // coordinator.Config.Reflection
	// clockSkew[i] shifts replica i's clock (coordinator.Config.Clock).
	clockSkew []time.Duration
	// steppedClock gives every replica a clock the test moves forward
	// (region.passDeadlines).
	steppedClock bool
	// revocationMaxAge is the region's limit on its signed revocation
	// list's age (0: none).
	revocationMaxAge time.Duration
	// sitePolicy is every node's policy (YAML) unless a test sets
	// region.policies; "" is testSitePolicy. noPolicy runs the nodes
	// without a policy file, under the defaults.
	sitePolicy string
	noPolicy   bool
	// committee is how many hospitals of each key epoch hold the key
	// shares (0: every hospital).
	committee int
}

// testSitePolicy lets the tests' small regions run jobs of K = 2 at
// t = 2 (below a site's default minimum of t + 1), so one hospital of
// three can drop out of a round.
const testSitePolicy = "min_participants: 2\n"

// region is a whole region in this process (localregion), with what the
// tests check it by: the sites' rows, the logs, the researcher.
type region struct {
	*localregion.Region
	t        *testing.T
	ca       *identity.CA
	dir      string
	sites    []dataset.Site
	heldOut  dataset.Table
	names    []string
	logs     *logRecorder
	policies map[int]*policy.File // site policies by hospital index
	// sitePolicy is the policy of a node policies leaves out (nil: none).
	sitePolicy *policy.File

	researcher     *client.Client
	researcherCert tls.Certificate

	clockOffset atomic.Int64 // added to every replica's clock (steppedClock)
}

// newRegion starts the replicas (the first bootstraps, the others join it),
// waits until all are voters and creates the region. Hospitals are named
// hospital-1.. and get one synthetic site each; nothing runs for them until
// startNode.
func newRegion(t *testing.T, o regionOpts) *region {
	t.Helper()
	sites, heldOut, err := dataset.Synthetic(dataset.SyntheticConfig{Hospitals: o.hospitals, Seed: 7, CaseMixShift: 1})
	if err != nil {
		t.Fatal(err)
	}
	r := &region{t: t, dir: t.TempDir(), sites: sites, heldOut: heldOut, logs: &logRecorder{}}
	if !o.noPolicy {
		text := cmp.Or(o.sitePolicy, testSitePolicy)
		r.sitePolicy = writePolicy(t, filepath.Join(r.dir, "site-policy.yaml"), text)
	}
	reg, err := localregion.Start(r.ctx(), localregion.Config{Replicas: o.replicas, Sites: sites, Dir: r.dir, Logger: slog.New(r.logs),
		RevocationMaxAge: o.revocationMaxAge, Committee: o.committee,
		Replica: func(i int, cfg *coordinator.Config) {
			cfg.TrailingLogs, cfg.SegmentSize = o.trailingLogs, o.segmentSize
			cfg.ServerOptions, cfg.UploadTimeout, cfg.RekeyAt, cfg.Reflection = o.serverOptions, o.uploadTimeout, o.rekeyAt, o.reflection
			cfg.EnrollmentWait = o.enrollmentWait
			if o.metrics {
				cfg.MetricsAddr = "127.0.0.1:0"
			}
			if i < len(o.clockSkew) {
				skew := o.clockSkew[i]
				cfg.Clock = func() time.Time { return time.Now().Add(skew) }
			}
			if o.steppedClock {
				cfg.Clock = func() time.Time { return time.Now().Add(time.Duration(r.clockOffset.Load())) }
			}
		},
		Node: func(i int, cfg *node.Config) { cfg.Policy = cmp.Or(r.policies[i], r.sitePolicy) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(reg.Close)
	r.Region, r.ca, r.names = reg, reg.CA, reg.Names
	r.researcher, r.researcherCert = r.clientCert("alice", identity.RoleResearcher)
	if err := reg.CreateRegion(r.ctx(), o.threshold); err != nil {
		t.Fatal(err)
	}
	return r
}

// ctx bounds one call of the test.
func (r *region) ctx() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	r.t.Cleanup(cancel)
	return ctx
}

// client connects to every replica as name with role.
func (r *region) client(name string, role identity.Role) *client.Client {
	c, _ := r.clientCert(name, role)
	return c
}

// regionDigest is the region's digest as the leader holds it.
func (r *region) regionDigest() [32]byte {
	var d [32]byte
	r.leader().Store().FSM().Read(func(st *fsm.State) { d = st.Region.Digest() })
	return d
}

// signHeader signs an update header as hospital name would, with the key
// of cert (identity.StatementContribution).
func (r *region) signHeader(cert tls.Certificate, name string, h *pb.UpdateHeader) {
	r.t.Helper()
	rd := r.regionDigest()
	b := r.binding(h.JobId, h.Round, h.ModelVersion, h.ModelHash)
	sig, err := identity.SignStatement(cert.PrivateKey, identity.StatementContribution, identity.ContributionFields(rd[:], b[:], h.Digest, name, h.Size)...)
	if err != nil {
		r.t.Fatal(err)
	}
	h.Signature = sig
}

// clientCert is client, with the certificate it connects with (for tests
// that sign as that identity).
func (r *region) clientCert(name string, role identity.Role) (*client.Client, tls.Certificate) {
	r.t.Helper()
	return dial(r.t, r.ca, r.Addrs(), name, role)
}

// startNode runs hospital i's node on its data directory (again, after
// stopNode: what it keeps on disk survives).
func (r *region) startNode(i int) {
	r.t.Helper()
	if err := r.StartNode(i); err != nil {
		r.t.Fatal(err)
	}
}

func (r *region) startNodes(idx ...int) {
	for _, i := range idx {
		r.startNode(i)
	}
}

// stopNode ends hospital i's node and waits until it stopped.
func (r *region) stopNode(i int) { r.StopNode(i) }

func (r *region) stopReplica(i int) {
	r.t.Helper()
	if err := r.StopReplica(i); err != nil {
		r.t.Errorf("stopping replica %d: %v", i, err)
	}
}

func (r *region) restartReplica(i int) {
	r.t.Helper()
	if err := r.RestartReplica(i); err != nil {
		r.t.Fatal(err)
	}
}

// leaderIndex waits for a running replica that leads.
func (r *region) leaderIndex() int {
	r.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for time.Now().Before(deadline) {
		if i, ok := r.Leader(); ok {
			return i
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.t.Fatal("no leader within 15s")
	return -1
}

func (r *region) leader() *coordinator.Replica { return r.Replica(r.leaderIndex()) }

// slow stretches a round deadline or a wait under the race detector, which
// makes training, encryption and every replica several times slower: on a
// loaded machine a deadline a test does not mean to reach would otherwise
// abort its rounds. Tests of what happens at a deadline keep their shape,
// only later.
func slow(d time.Duration) time.Duration {
	if raceDetector {
		return 4 * d
	}
	return d
}

// waitFor polls cond until it holds, failing the test after timeout (slow).
func (r *region) waitFor(what string, timeout time.Duration, cond func() bool) {
	r.t.Helper()
	timeout = slow(timeout)
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out after %v waiting until %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// passDeadlines moves the replicas' clocks (steppedClock) past the deadline
// of job id's current round, collecting or in a decryption attempt, once
// ready holds for it. Tests of what happens at a deadline then do not race
// the machine: a round meets its deadline only when what the test means it
// to hold is in, however slowly a loaded machine trains under -race. Their
// deadlines are long enough never to pass on their own. ready must hold
// only while the engine waits for the deadline: passed on a round about to
// close on its own, the deadline would pass its next step too.
func (r *region) passDeadlines(id string, ready func(*fsm.Job, *fsm.Round) bool) {
	type step struct {
		round, attempt uint32
		state          string
	}
	stop, stopped := make(chan struct{}), make(chan struct{})
	r.t.Cleanup(func() { close(stop); <-stopped })
	go func() {
		defer close(stopped)
		passed := map[step]bool{}
		for {
			select {
			case <-stop:
				return
			case <-time.After(10 * time.Millisecond):
			}
			i, ok := r.Leader()
			rep := r.Replica(i)
			if !ok || rep == nil {
				continue
			}
			rep.Store().FSM().Read(func(s *fsm.State) {
				j := s.Jobs[id]
				if j == nil || j.Current() == nil {
					return
				}
				cur := j.Current()
				at := step{cur.Number, cur.Attempt, cur.State}
				if (cur.State != fsm.RoundCollecting && cur.State != fsm.RoundDecrypting) || passed[at] || !ready(j, cur) {
					return
				}
				passed[at] = true
				r.clockOffset.Add(int64(time.Duration(j.Spec.RoundDeadlineMs) * time.Millisecond))
			})
		}
	}()
}

// waitCeremony waits until every hospital holds its threshold key share.
func (r *region) waitCeremony() {
	r.t.Helper()
	r.waitCeremonyWithin(30 * time.Second)
}

// waitCeremonyWithin is waitCeremony for a region whose ceremony takes
// longer (many hospitals).
func (r *region) waitCeremonyWithin(d time.Duration) {
	r.t.Helper()
	r.waitFor("the key ceremony is done", d, func() bool {
		var done bool
		r.leader().Store().FSM().Read(func(s *fsm.State) {
			done = s.Region != nil && s.Region.Step() == pb.CeremonyStep_CEREMONY_STEP_DONE
		})
		return done
	})
}

// leaderRegion is a copy of the region as the leader holds it.
func (r *region) leaderRegion() (out *fsm.Region) {
	r.leader().Store().FSM().Read(func(s *fsm.State) { out = s.Region.Clone() })
	return out
}

// spec is a small logistic-regression job on the synthetic cohorts, scaled
// with the held-out statistics so no statistics round runs first.
func (r *region) spec(rounds, minHospitals int, deadline time.Duration) *pb.JobSpec {
	mean, std := r.heldOut.Stats().MeanStd()
	return &pb.JobSpec{
		Name: "test", Model: jobspec.ToProto(models.Spec{Kind: "logreg", Inputs: len(r.heldOut.Features)}),
		Rounds: uint32(rounds), LocalSteps: 5, BatchSize: 32, LearningRate: 0.1, Optimizer: "sgd",
		MinHospitals: uint32(minHospitals), RoundDeadlineMs: uint32(slow(deadline).Milliseconds()),
		Purpose: "robustness test", LegalBasis: "synthetic data", ClipNorm: 10, SampleScale: 1000, Seed: 1,
		Strategy: &pb.Strategy{Name: "fedavg", ServerLr: 1}, FeatureMean: mean, FeatureStd: std,
	}
}

// signedJob is the researcher's signed request for a job.
func (r *region) signedJob(spec *pb.JobSpec, requestID string) *pb.SubmitJobRequest {
	r.t.Helper()
	req, err := client.SubmitJobRequest(r.researcherCert, spec, requestID)
	if err != nil {
		r.t.Fatal(err)
	}
	return req
}

// submit submits a job as the researcher and returns its ID.
func (r *region) submit(spec *pb.JobSpec, requestID string) string {
	r.t.Helper()
	req := r.signedJob(spec, requestID)
	var id string
	err := r.researcher.Do(r.ctx(), func(ctx context.Context, conn client.Conn) error {
		resp, err := conn.Researcher.SubmitJob(ctx, req)
		id = resp.GetJobId()
		return err
	})
	if err != nil {
		r.t.Fatalf("submit: %v", err)
	}
	return id
}

// revoke has op, holding opCert (an operator's), revoke a certificate
// serial with its signed revocation.
func (r *region) revoke(op *client.Client, opCert tls.Certificate, serial, reason string) {
	r.t.Helper()
	req, err := client.RevokeRequest(opCert, serial, reason, time.Now())
	if err != nil {
		r.t.Fatal(err)
	}
	if err := op.Do(r.ctx(), func(ctx context.Context, conn client.Conn) error {
		_, err := conn.Operator.RevokeCertificate(ctx, req)
		return err
	}); err != nil {
		r.t.Fatal(err)
	}
}

// jobInfo is the researcher's view of a job (GetJob).
func (r *region) jobInfo(id string) *pb.JobInfo {
	r.t.Helper()
	var info *pb.JobInfo
	err := r.researcher.Do(r.ctx(), func(ctx context.Context, conn client.Conn) error {
		resp, err := conn.Researcher.GetJob(ctx, &pb.GetJobRequest{JobId: id})
		info = resp.GetJob()
		return err
	})
	if err != nil {
		r.t.Fatalf("job status: %v", err)
	}
	return info
}

// decide records hospital i's decision on a job through a client holding
// its certificate, as a node would (used while the node is stopped).
func (r *region) decide(c *client.Client, jobID string, accept bool) error {
	return c.Do(r.ctx(), func(ctx context.Context, conn client.Conn) error {
		_, err := conn.Hospital.DecideJob(ctx, &pb.DecideJobRequest{JobId: jobID, Accept: accept})
		return err
	})
}

// job returns a deep copy of a job as the leader sees it, and the leader's
// applied index.
func (r *region) job(id string) (*fsm.Job, uint64) {
	r.t.Helper()
	return jobOf(r.t, r.leader(), id)
}

func jobOf(t *testing.T, rep *coordinator.Replica, id string) (*fsm.Job, uint64) {
	t.Helper()
	var (
		j     *fsm.Job
		index uint64
	)
	// Job.Clone copies what Apply changes in place; a JSON round trip
	// would too, at a cost that starves the region for a large model.
	rep.Store().FSM().Read(func(s *fsm.State) {
		index = s.Index
		if sj, ok := s.Jobs[id]; ok {
			j = sj.Clone()
		}
	})
	return j, index
}

// waitJob waits until cond holds for the job on the leader and returns it.
func (r *region) waitJob(id, what string, timeout time.Duration, cond func(j *fsm.Job) bool) *fsm.Job {
	r.t.Helper()
	var j *fsm.Job
	r.waitFor(what, timeout, func() bool {
		j, _ = r.job(id)
		return j != nil && cond(j)
	})
	return j
}

// waitDone waits until the job ends and requires that it is done with every
// round committed.
func (r *region) waitDone(id string, timeout time.Duration) *fsm.Job {
	r.t.Helper()
	j := r.waitJob(id, "the job ends", timeout, (*fsm.Job).Finished)
	if j.State != fsm.JobDone {
		r.t.Fatalf("job %s ended %s: %s", id, j.State, j.Reason)
	}
	if j.TrainedRounds() != int(j.Spec.Rounds) {
		r.t.Fatalf("job done after %d trained rounds, it has %d", j.TrainedRounds(), j.Spec.Rounds)
	}
	return j
}

// auditExport is an auditor's export of job id's audit records.
func (r *region) auditExport(id string) []byte {
	r.t.Helper()
	var export bytes.Buffer
	err := r.client("compliance", identity.RoleAuditor).Do(r.ctx(), func(ctx context.Context, conn client.Conn) error {
		export.Reset()
		stream, err := conn.Auditor.ExportAudit(ctx, &pb.ExportAuditRequest{JobId: id})
		if err != nil {
			return err
		}
		return client.Receive(stream, func(m *pb.ExportAuditResponse) error {
			export.Write(m.Chunk)
			return nil
		})
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return export.Bytes()
}

// rows is the number of training rows of the named hospitals: what the
// decrypted sample count of a round with exactly these contributors is.
func (r *region) rows(hospitals []string) uint64 {
	var n uint64
	for _, h := range hospitals {
		n += uint64(r.sites[slices.Index(r.names, h)].Train.Len())
	}
	return n
}

// checkCounted requires that every committed round counted each of its
// contributors' updates exactly once: the decrypted sample count is the sum
// of the contributors' rows, and the manifest lists every counted update.
func (r *region) checkCounted(j *fsm.Job) {
	r.t.Helper()
	for _, rd := range j.Rounds {
		if rd.State != fsm.RoundCommitted {
			continue
		}
		var m *fsm.Model
		for _, x := range j.Models {
			if x.Version > 0 && x.Round == rd.Number {
				m = x
			}
		}
		if m == nil {
			r.t.Fatalf("round %d committed without a model", rd.Number)
		}
		if want := r.rows(rd.Contributors); m.TotalSamples != want {
			r.t.Errorf("round %d: decrypted sample count %d, its contributors %v hold %d rows", rd.Number, m.TotalSamples, rd.Contributors, want)
		}
		if len(rd.Contributors) != len(rd.Contributions) {
			r.t.Errorf("round %d: %d updates counted, the manifest lists %d", rd.Number, len(rd.Contributions), len(rd.Contributors))
		}
	}
}

// checkMeasured requires that every contributor of every committed round
// verified the model the round trained from itself (from version 1 on,
// against the previous round's evidence) and measured it: the round's
// region figures cover every contributor's test rows.
func (r *region) checkMeasured(j *fsm.Job) {
	r.t.Helper()
	for _, rd := range j.Rounds {
		if rd.State != fsm.RoundCommitted || rd.Number == jobspec.StatsRound {
			continue
		}
		var tests uint64
		for _, h := range rd.Contributors {
			tests += uint64(min(r.sites[slices.Index(r.names, h)].Test.Len(), jobspec.MaxMetricRows(j.Spec)))
			verified := r.logs.count("model verified", map[string]string{"hospital": h, "job_id": j.ID, "version": fmt.Sprint(rd.ModelVersion)})
			if rd.ModelVersion > 0 && verified == 0 {
				r.t.Errorf("round %d: %s trained from version %d without verifying it", rd.Number, h, rd.ModelVersion)
			}
		}
		if rm := rd.RegionMetrics; rm == nil || rm.N != tests {
			r.t.Errorf("round %d: region figures %v, want %d test rows (every contributor's)", rd.Number, rm, tests)
		}
	}
}

// logRecorder is a slog handler that keeps records for assertions: which
// hospital encrypted or sent what, and what the coordinator accepted.
type logRecorder struct {
	mu      sync.Mutex
	records []logRecord
	attrs   []slog.Attr // of a handler made by WithAttrs
	parent  *logRecorder
}

type logRecord struct {
	msg   string
	attrs map[string]string
}

func (l *logRecorder) root() *logRecorder {
	if l.parent != nil {
		return l.parent.root()
	}
	return l
}

func (l *logRecorder) Enabled(_ context.Context, lvl slog.Level) bool { return lvl >= slog.LevelInfo }

func (l *logRecorder) Handle(_ context.Context, rec slog.Record) error {
	m := map[string]string{}
	for _, a := range l.attrs {
		m[a.Key] = a.Value.String()
	}
	rec.Attrs(func(a slog.Attr) bool {
		m[a.Key] = a.Value.String()
		return true
	})
	root := l.root()
	root.mu.Lock()
	root.records = append(root.records, logRecord{msg: rec.Message, attrs: m})
	root.mu.Unlock()
	return nil
}

func (l *logRecorder) WithAttrs(as []slog.Attr) slog.Handler {
	return &logRecorder{attrs: append(slices.Clone(l.attrs), as...), parent: l.root()}
}

func (l *logRecorder) WithGroup(string) slog.Handler { return l }

// count counts the records with message msg whose attributes include want.
func (l *logRecorder) count(msg string, want map[string]string) int {
	root := l.root()
	root.mu.Lock()
	defer root.mu.Unlock()
	n := 0
	for _, rec := range root.records {
		if rec.msg != msg {
			continue
		}
		ok := true
		for k, v := range want {
			ok = ok && rec.attrs[k] == v
		}
		if ok {
			n++
		}
	}
	return n
}

// writePolicy writes a site policy file and opens it.
func writePolicy(t *testing.T, path, text string) *policy.File {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := policy.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// binding is what a hospital binds its update of a job's round to
// (jobspec.Binding), with the digest of the model version the leader
// committed.
func (r *region) binding(jobID string, round, version uint32, hash string) [32]byte {
	r.t.Helper()
	var model [32]byte
	r.leader().Store().FSM().Read(func(s *fsm.State) {
		if j, ok := s.Jobs[jobID]; ok && round != jobspec.StatsRound && int(version) < len(j.Models) {
			copy(model[:], j.Models[version].Digest)
		}
	})
	return jobspec.Binding(jobID, round, version, hash, model)
}
