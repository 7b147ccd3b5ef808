package coordinator_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"regionfl/audit"
	"regionfl/client"
	"regionfl/coordinator/fsm"
	"regionfl/he"
	"regionfl/identity"
	"regionfl/jobspec"
	"regionfl/models"
	"regionfl/node"
	"regionfl/node/policy"
	"regionfl/privacy"
	pb "regionfl/proto/regionfl/v1"
)

// A site refuses a job outside its policy, with the reason visible to the
// researcher, and the others carry on since K still holds. A site whose
// privacy budget covers two rounds contributes to two and then declines;
// the replicated ledger shows what it spent.
func TestSitePolicyAndPrivacyBudget(t *testing.T) {
	r := newRegion(t, regionOpts{replicas: 1, hospitals: 4, threshold: 2, steppedClock: true})
	dir := t.TempDir()
	acc := privacy.Accountant{NoiseMultiplier: 1, Delta: 1e-5}
	budget := (acc.Epsilon(2) + acc.Epsilon(3)) / 2
	write := func(name, text string) *policy.File {
		return writePolicy(t, filepath.Join(dir, name), testSitePolicy+text)
	}
	// hospital-1 and hospital-2 let the node share their own figures;
	// hospital-3 does not (the default), whatever the job asks.
	r.policies = map[int]*policy.File{
		0: write("h1.yaml", "share_site_metrics: true\n"),
		1: write("h2.yaml", "share_site_metrics: true\n"),
		2: write("h3.yaml", "epsilon_budget: "+strconv.FormatFloat(budget, 'g', -1, 64)+"\n"),
		3: write("h4.yaml", "purposes: [sepsis screening]\n"),
	}
	r.startNodes(0, 1, 2, 3)
	r.waitCeremony()

	spec := r.spec(4, 2, time.Minute)
	spec.DpNoiseMultiplier, spec.DpDelta = 1, 1e-5
	spec.ShareSiteMetrics = true
	id := r.submit(spec, "policy-and-budget")
	// Once hospital-3's budget is spent, rounds wait out their deadline for
	// it: each reaches it as soon as the two others sent. (A round all
	// three sent to closes on its own; passing its deadline too could
	// land in its approvals.)
	r.passDeadlines(id, func(j *fsm.Job, rd *fsm.Round) bool {
		spent := 0
		for _, prev := range j.Rounds {
			if prev.State == fsm.RoundCommitted && prev.Contributed("hospital-3") {
				spent++
			}
		}
		return rd.State == fsm.RoundCollecting && rd.Contributed("hospital-1") && rd.Contributed("hospital-2") && spent >= 2
	})
	j := r.waitDone(id, 90*time.Second)

	if reason := j.Refused["hospital-4"]; !strings.Contains(reason, "purpose") {
		t.Errorf("hospital-4 refused with %q, want a purpose reason", reason)
	}
	if slices.Contains(j.Accepted, "hospital-4") {
		t.Error("hospital-4 accepted a job outside its policy")
	}
	rounds := 0
	for _, rd := range j.Rounds {
		if rd.Number != jobspec.StatsRound && rd.State == fsm.RoundCommitted && slices.Contains(rd.Contributors, "hospital-3") {
			rounds++
		}
	}
	if rounds != 2 {
		for _, rd := range j.Rounds {
			t.Logf("round %d %s %v %s", rd.Number, rd.State, rd.Contributors, rd.Reason)
		}
		t.Errorf("hospital-3 contributed to %d rounds, its budget covers 2", rounds)
	}
	eps := j.EpsilonSpent()
	if got := eps["hospital-3"]; math.Abs(got-acc.Epsilon(2)) > 1e-9 || got > budget {
		t.Errorf("ledger: hospital-3 spent ε %.4f, want %.4f within %.4f", got, acc.Epsilon(2), budget)
	}
	// The audit log carries the ledger with each contribution.
	var last string
	r.leader().Store().FSM().Read(func(s *fsm.State) {
		for i := range s.Audit.Len() {
			rec, _ := s.Audit.Record(i)
			if rec.JobID == id && rec.Action == audit.ActionContributionAccepted && rec.Hospital == "hospital-3" {
				last = rec.Details["epsilon"]
			}
		}
	})
	if got, _ := strconv.ParseFloat(last, 64); math.Abs(got-acc.Epsilon(2)) > 1e-4 {
		t.Errorf("audit: hospital-3's last contribution records ε %q, want %.4f", last, acc.Epsilon(2))
	}
	if eps["hospital-1"] <= eps["hospital-3"] {
		t.Errorf("ledger: hospital-1 spent %.3f, no more than the capped hospital-3 %.3f", eps["hospital-1"], eps["hospital-3"])
	}
	// The researcher sees the refusal and the ledger.
	var info *pb.JobInfo
	err := r.researcher.Do(r.ctx(), func(ctx context.Context, conn client.Conn) error {
		resp, err := conn.Researcher.GetJob(ctx, &pb.GetJobRequest{JobId: id})
		info = resp.GetJob()
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(info.Refused["hospital-4"], "site policy") || info.EpsilonSpent["hospital-3"] != eps["hospital-3"] {
		t.Errorf("job status: refused %v, ε %v", info.Refused, info.EpsilonSpent)
	}
	// The job asks for site figures: each contributor whose policy allows
	// it sends its own, hospital-3 none; the region's come from the
	// encrypted sums, whose row count is every contributor's tests.
	for _, ri := range info.Rounds {
		if ri.State != fsm.RoundCommitted {
			continue
		}
		var tests uint64
		for _, h := range ri.Contributors {
			m := ri.SiteMetrics[h]
			if h == "hospital-3" {
				if m != nil {
					t.Fatalf("round %d: hospital-3 sent its own figures without its policy's consent", ri.Round)
				}
				tests += uint64(min(r.sites[2].Test.Len(), jobspec.MaxMetricRows(spec)))
				continue
			}
			if m == nil || m.ModelVersion != ri.RegionMetrics.GetModelVersion() {
				t.Fatalf("round %d: no figures of %s's own test (%v)", ri.Round, h, ri.SiteMetrics)
			}
			tests += m.N
		}
		if rm := ri.RegionMetrics; rm == nil || rm.N != tests {
			t.Fatalf("round %d: region figures %v, want %d test rows", ri.Round, rm, tests)
		}
	}
}

// Every replica holds the same audit log after a leader failover, and an
// export from the new leader verifies offline against the region CA.
func TestAuditChainSameOnEveryReplica(t *testing.T) {
	r := newRegion(t, regionOpts{replicas: 3, hospitals: 3, threshold: 2})
	r.startNodes(0, 1, 2)
	r.waitCeremony()
	id := r.submit(r.spec(4, 2, 5*time.Second), "audit-failover")
	r.waitJob(id, "round 1 commits", 30*time.Second, func(j *fsm.Job) bool { return j.TrainedRounds() >= 1 })
	old := r.leaderIndex()
	r.stopReplica(old)
	j := r.waitDone(id, 60*time.Second)
	r.restartReplica(old)

	var roots []audit.Hash
	r.waitFor("every replica holds the same audit log", 20*time.Second, func() bool {
		roots = roots[:0]
		var sizes []uint64
		for _, rep := range r.Replicas() {
			rep.Store().FSM().Read(func(s *fsm.State) {
				roots = append(roots, s.Audit.Root())
				sizes = append(sizes, s.Audit.Len())
			})
		}
		return len(roots) == 3 && roots[0] == roots[1] && roots[1] == roots[2] && sizes[0] > 0
	})

	// The log tells the job's story: submitted, accepted by each site,
	// every contribution with its digest, every model version.
	counts := map[audit.Action]int{}
	r.leader().Store().FSM().Read(func(s *fsm.State) {
		for i := range s.Audit.Len() {
			rec, err := s.Audit.Record(i)
			if err != nil {
				t.Fatal(err)
			}
			if rec.JobID == id {
				counts[rec.Action]++
				if rec.Purpose != j.Spec.Purpose || rec.LegalBasis != j.Spec.LegalBasis {
					t.Fatalf("record %d lacks the job's purpose and legal basis: %+v", i, rec)
				}
			}
		}
	})
	contributions := 0
	for _, rd := range j.Rounds {
		contributions += len(rd.Contributions)
	}
	if counts[audit.ActionJobSubmitted] != 1 || counts[audit.ActionJobAccepted] != 3 ||
		counts[audit.ActionModelCommitted] != 4 || counts[audit.ActionContributionAccepted] != contributions {
		t.Errorf("audit counts %v; %d contributions", counts, contributions)
	}

	rep, err := audit.Verify(bytes.NewReader(r.auditExport(id)), r.ca.Pool())
	if err != nil {
		t.Fatalf("export of job %s does not verify: %v", id, err)
	}
	if rep.Records == 0 {
		t.Fatalf("empty export: %+v", rep)
	}
	if rep.SignedContributions != contributions {
		t.Errorf("%d contributions verified offline as signed by their hospitals, want %d", rep.SignedContributions, contributions)
	}
	if rep.SignedJobs != 1 {
		t.Errorf("%d job submissions verified offline as signed by their researcher, want 1", rep.SignedJobs)
	}
	if shares := counts[audit.ActionDecryptionShareGiven]; shares == 0 || rep.SignedShares != shares {
		t.Errorf("%d of %d decryption shares verified offline as signed by their decryptors", rep.SignedShares, shares)
	}
	// This job does not share site figures: none were kept.
	for _, rd := range j.Rounds {
		for _, c := range rd.Contributions {
			if c.SiteMetrics != nil {
				t.Fatalf("round %d kept %s's own figures", rd.Number, c.Hospital)
			}
		}
	}
}

// recorder keeps the bytes of every message a replica receives.
type recorder struct {
	mu   sync.Mutex
	msgs [][]byte
}

func (rc *recorder) keep(m any) {
	if pm, ok := m.(proto.Message); ok {
		b, _ := proto.Marshal(pm)
		rc.mu.Lock()
		rc.msgs = append(rc.msgs, b)
		rc.mu.Unlock()
	}
}

func (rc *recorder) options() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			rc.keep(req)
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			return h(srv, recordingStream{ss, rc})
		}),
	}
}

type recordingStream struct {
	grpc.ServerStream
	rc *recorder
}

func (s recordingStream) RecvMsg(m any) error {
	err := s.ServerStream.RecvMsg(m)
	if err == nil {
		s.rc.keep(m)
	}
	return err
}

// Over a whole job, nothing the coordinator receives or stores holds a
// hospital's plaintext update or a secret key share. The test recomputes
// each site's update exactly as its node did (training is deterministic)
// and looks for its values, as float64 or float32 in either byte order,
// in every message the replicas received and every file they wrote; and
// for the secret key shares in the nodes' state files.
func TestCoordinatorNeverSeesPlaintext(t *testing.T) {
	rc := &recorder{}
	r := newRegion(t, regionOpts{replicas: 3, hospitals: 3, threshold: 2, serverOptions: rc.options()})
	r.startNodes(0, 1, 2)
	r.waitCeremony()
	spec := r.spec(3, 3, 10*time.Second)
	id := r.submit(spec, "plaintext")
	j := r.waitDone(id, 60*time.Second)
	r.Close()

	var haystack [][]byte
	rc.mu.Lock()
	haystack = append(haystack, rc.msgs...)
	rc.mu.Unlock()
	for i := range r.Replicas() {
		filepath.Walk(r.ReplicaConfig(i).DataDir, func(path string, fi os.FileInfo, err error) error {
			if err == nil && fi.Mode().IsRegular() {
				if b, err := os.ReadFile(path); err == nil {
					haystack = append(haystack, b)
				}
			}
			return nil
		})
	}
	if len(haystack) < 10 {
		t.Fatalf("only %d messages and files recorded", len(haystack))
	}
	find := func(needle []byte) bool {
		for _, h := range haystack {
			if bytes.Contains(h, needle) {
				return true
			}
		}
		return false
	}

	// Secret key shares: the party state each node keeps (0600, never sent).
	for _, name := range r.names {
		b, err := os.ReadFile(filepath.Join(r.dir, name, "node-state.json"))
		if err != nil {
			t.Fatal(err)
		}
		party, err := partyState(b, 0)
		if err != nil || len(party) < 1024 {
			t.Fatalf("%s: no party state (%v)", name, err)
		}
		// The second half is the threshold secret share (the first holds
		// the region's public seed).
		party = party[len(party)/2:]
		for off := 0; off+32 <= len(party); off += len(party) / 16 {
			if find(party[off : off+32]) {
				t.Fatalf("32 bytes of %s's secret key share reached the coordinator", name)
			}
		}
	}

	// Plaintext updates, recomputed round by round from the committed models.
	model := jobspec.FromProto(spec.Model)
	checked := 0
	for _, rd := range j.Rounds {
		if rd.State != fsm.RoundCommitted || rd.Number == jobspec.StatsRound {
			continue
		}
		global := j.Models[rd.ModelVersion].Params
		for _, h := range rd.Contributors {
			site := r.sites[slices.Index(r.names, h)]
			data := node.Scale(j.Spec, site.Train, site.Train)
			local, err := models.Train(model, global, data.X, data.Y, jobspec.TrainConfig(j.Spec, h, rd.Number))
			if err != nil {
				t.Fatal(err)
			}
			w := float64(data.Len()) / float64(j.Spec.SampleScale)
			update := make([]float64, len(local))
			for i := range local {
				update[i] = (local[i] - global[i]) * w
			}
			for i := range update {
				if update[i] == 0 {
					continue
				}
				for _, enc := range encodings(update[i:min(i+2, len(update))]) {
					if find(enc) {
						t.Fatalf("%s's plaintext update (value %d of round %d) reached the coordinator", h, i, rd.Number)
					}
				}
				checked++
			}
		}
	}
	if checked < 3*3*model.NumParams()/2 {
		t.Fatalf("only %d update values checked", checked)
	}
}

// encodings of consecutive update values as a node might leak them: each
// value alone as float64 (8 bytes), and a pair as float32, big and little
// endian. Shorter patterns would match ciphertext bytes by chance.
func encodings(v []float64) [][]byte {
	var out [][]byte
	for _, order := range []binary.AppendByteOrder{binary.BigEndian, binary.LittleEndian} {
		out = append(out, order.AppendUint64(nil, math.Float64bits(v[0])))
		if len(v) > 1 {
			pair := order.AppendUint32(nil, math.Float32bits(float32(v[0])))
			out = append(out, order.AppendUint32(pair, math.Float32bits(float32(v[1]))))
		}
	}
	return out
}

// A hospital that announces an update and then sends it too slowly is cut
// off at the upload deadline; nothing is counted and the round goes on.
func TestSlowSenderIsCutOff(t *testing.T) {
	r := newRegion(t, regionOpts{replicas: 1, hospitals: 3, threshold: 2, uploadTimeout: 500 * time.Millisecond})
	r.startNodes(0, 1, 2)
	r.waitCeremony()
	r.stopNode(2)
	spec := r.spec(1, 2, time.Minute)
	id := r.submit(spec, "slow")
	slow, slowCert := r.clientCert(r.names[2], identity.RoleHospital)
	if err := r.decide(slow, id, true); err != nil {
		t.Fatal(err)
	}
	r.waitJob(id, "the other two sent round 1", 20*time.Second, func(j *fsm.Job) bool {
		c := j.Current()
		return c != nil && c.Number == 1 && c.State == fsm.RoundCollecting && len(c.Contributions) == 2
	})
	j, _ := r.job(id)
	size := he.UpdateSize(he.RegionParams(), jobspec.VectorShape(spec, 1))
	start := time.Now()
	err := slow.Do(r.ctx(), func(ctx context.Context, conn client.Conn) error {
		stream, err := conn.Hospital.SubmitUpdate(ctx)
		if err != nil {
			return err
		}
		hdr := &pb.UpdateHeader{JobId: id, Round: 1, ModelVersion: 0, ModelHash: j.ModelHash, Size: uint64(size), Digest: make([]byte, 32)}
		r.signHeader(slowCert, r.names[2], hdr)
		stream.Send(&pb.SubmitUpdateRequest{Msg: &pb.SubmitUpdateRequest_Header{Header: hdr}})
		stream.Send(&pb.SubmitUpdateRequest{Msg: &pb.SubmitUpdateRequest_Chunk{Chunk: make([]byte, 1024)}})
		// ...and nothing more: wait for the coordinator's answer.
		err = stream.RecvMsg(new(pb.SubmitUpdateResponse))
		return err
	})
	if status.Code(err) != codes.DeadlineExceeded || !strings.Contains(err.Error(), "too slow") {
		t.Fatalf("slow upload: %v, want DeadlineExceeded", err)
	}
	if took := time.Since(start); took > 20*time.Second {
		t.Fatalf("cut off after %s", took)
	}
	if j, _ := r.job(id); j.Current().ContributionOf(r.names[2]) != nil {
		t.Fatal("the slow update was counted")
	}
}

// Every replica serves the standard gRPC health service to any certificate
// of the region (a container health check, grpcurl), and nothing to a
// connection without one.
func TestHealthService(t *testing.T) {
	reg := newRegion(t, regionOpts{replicas: 1, hospitals: 2, threshold: 2})
	rep := reg.Replica(0)
	check := func(cfg *tls.Config) (healthpb.HealthCheckResponse_ServingStatus, error) {
		conn, err := grpc.NewClient(rep.GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			return 0, err
		}
		defer conn.Close()
		resp, err := healthpb.NewHealthClient(conn).Check(reg.ctx(), &healthpb.HealthCheckRequest{})
		return resp.GetStatus(), err
	}
	for _, role := range []identity.Role{identity.RoleHospital, identity.RoleOperator, identity.RoleAuditor} {
		cert, err := reg.ca.Issue(identity.Identity{Name: "probe", Role: role}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if st, err := check(identity.ClientConfig(cert, reg.ca.Pool())); err != nil || st != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("%s: %v %v", role, st, err)
		}
	}
	if _, err := check(&tls.Config{RootCAs: reg.ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS13}); err == nil {
		t.Error("a connection without a client certificate got an answer")
	}
}

// gRPC reflection is off unless a replica runs with --reflection; then
// any certificate of the region lists the services (as grpcurl does), and
// a connection without one gets nothing.
func TestReflectionBehindAFlag(t *testing.T) {
	for _, on := range []bool{false, true} {
		reg := newRegion(t, regionOpts{replicas: 1, hospitals: 2, threshold: 2, reflection: on})
		list := func(cfg *tls.Config) ([]string, error) {
			conn, err := grpc.NewClient(reg.Replica(0).GRPCAddr(), grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
			if err != nil {
				return nil, err
			}
			defer conn.Close()
			stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(reg.ctx())
			if err != nil {
				return nil, err
			}
			// A stream the server refused ends Send with io.EOF; Recv
			// then has the status.
			if err := stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}}); err != nil && err != io.EOF {
				return nil, err
			}
			resp, err := stream.Recv()
			if err != nil {
				return nil, err
			}
			var names []string
			for _, s := range resp.GetListServicesResponse().GetService() {
				names = append(names, s.Name)
			}
			return names, nil
		}
		cert, err := reg.ca.Issue(identity.Identity{Name: "probe", Role: identity.RoleResearcher}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		names, err := list(identity.ClientConfig(cert, reg.ca.Pool()))
		switch {
		case !on && status.Code(err) != codes.Unimplemented:
			t.Errorf("reflection off: %v %v, want Unimplemented", names, err)
		case on && (err != nil || !slices.Contains(names, pb.ResearcherService_ServiceDesc.ServiceName)):
			t.Errorf("reflection on: services %v, %v", names, err)
		}
		if on {
			if _, err := list(&tls.Config{RootCAs: reg.ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS13}); err == nil {
				t.Error("a connection without a client certificate got the schema")
			}
		}
	}
}

// A site's statistics go into one decryption per dataset: a second job
// wanting region scaling on the same dataset reuses the committed scaling
// of the first (no statistics round); a coordinator that hides the
// committed scaling to ask the sites for their statistics again (two
// decryptions with different contributors would isolate a site) gets a
// refusal from every node.
func TestStatisticsOncePerDataset(t *testing.T) {
	hide := &evilLeader{method: "Poll", tamper: func(resp any) {
		for _, o := range resp.(*pb.PollResponse).JobOffers {
			o.Spec = proto.Clone(o.Spec).(*pb.JobSpec) // the state's own spec is not ours to change
			o.Spec.FeatureMean, o.Spec.FeatureStd = nil, nil
		}
	}}
	reg := newRegion(t, regionOpts{replicas: 1, hospitals: 3, threshold: 2, serverOptions: []grpc.ServerOption{hide.option()}})
	reg.startNodes(0, 1, 2)
	reg.waitCeremony()
	// Each job starts from another initial model: a site trains one
	// update per model, rows and configuration, ever.
	regionScaled := func(seed uint64) *pb.JobSpec {
		s := reg.spec(1, 2, 10*time.Second)
		s.Scaling, s.FeatureMean, s.FeatureStd, s.Seed = jobspec.ScalingRegion, nil, nil, seed
		return s
	}
	trySubmit := func(requestID string, seed uint64) (id, from string, err error) {
		req := reg.signedJob(regionScaled(seed), requestID)
		err = reg.researcher.Do(reg.ctx(), func(ctx context.Context, conn client.Conn) error {
			resp, err := conn.Researcher.SubmitJob(ctx, req)
			id, from = resp.GetJobId(), resp.GetScalingFrom()
			return err
		})
		return id, from, err
	}
	submit := func(requestID string, seed uint64) (id, from string) {
		id, from, err := trySubmit(requestID, seed)
		if err != nil {
			t.Fatal(err)
		}
		return id, from
	}
	// The hospitals are away while the first job is submitted, so it is
	// still waiting for its scaling when the second one comes.
	for i := range 3 {
		reg.stopNode(i)
	}
	first := reg.submit(regionScaled(1), "stats-1")
	// While the first job computes the scaling, every site's statistics
	// are promised to it: a second job on the dataset is refused at submit
	// (every site would refuse its statistics round), and nothing changes.
	if _, _, err := trySubmit("stats-early", 2); status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), first) {
		t.Fatalf("a second region-scaled job while the first computes the scaling: %v", err)
	} else {
		t.Logf("refused: %v", err)
	}
	reg.leader().Store().FSM().Read(func(s *fsm.State) {
		if _, ok := s.Requests["stats-early"]; ok || len(s.JobOrder) != 1 {
			t.Errorf("the refused submit made a job: %d jobs", len(s.JobOrder))
		}
	})
	reg.startNodes(0, 1, 2)
	j1 := reg.waitDone(first, 60*time.Second)
	if j1.Rounds[0].Number != jobspec.StatsRound || len(j1.Spec.FeatureMean) == 0 {
		t.Fatalf("first job: first round %d, scaling %v", j1.Rounds[0].Number, j1.Spec.FeatureMean)
	}
	second, from := submit("stats-2", 2)
	if from != first {
		t.Fatalf("second job: scaling from %q, want %q", from, first)
	}
	j2 := reg.waitDone(second, 60*time.Second)
	if j2.Rounds[0].Number == jobspec.StatsRound || !slices.Equal(j2.Spec.FeatureMean, j1.Spec.FeatureMean) {
		t.Fatalf("second job: first round %d", j2.Rounds[0].Number)
	}
	hide.on.Store(true)
	third, _ := submit("stats-3", 3)
	j3 := reg.waitJob(third, "the third job ends", 60*time.Second, (*fsm.Job).Finished)
	if j3.State != fsm.JobFailed || len(j3.Refused) != 3 {
		t.Fatalf("third job: %s (%s), refused by %v", j3.State, j3.Reason, j3.Refused)
	}
	for h, why := range j3.Refused {
		if !strings.Contains(why, "statistics were already contributed") {
			t.Errorf("%s refused the third job for another reason: %s", h, why)
		}
	}
}

// A job needing more hospitals than the region has is refused at submit,
// naming the field, instead of failing after its decision window.
func TestSubmitRefusesMoreHospitalsThanTheRegion(t *testing.T) {
	reg := newRegion(t, regionOpts{replicas: 1, hospitals: 3, threshold: 2})
	req := reg.signedJob(reg.spec(1, 4, time.Minute), "too-many")
	err := reg.researcher.Do(reg.ctx(), func(ctx context.Context, conn client.Conn) error {
		_, err := conn.Researcher.SubmitJob(ctx, req)
		return err
	})
	if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), "min_hospitals: 4 is more than the region's 3") {
		t.Fatalf("got %v", err)
	}
}

// A job reaches the log only as its researcher signed it: unsigned,
// signed by someone else, signed without its defaults, or without a
// request id, it is refused at submit, naming the field.
func TestSubmitNeedsTheResearchersSignature(t *testing.T) {
	reg := newRegion(t, regionOpts{replicas: 1, hospitals: 3, threshold: 2})
	spec := reg.spec(1, 2, time.Minute)
	_, bobCert := reg.clientCert("bob", identity.RoleResearcher)
	bobs, err := client.SubmitJobRequest(bobCert, spec, "r")
	if err != nil {
		t.Fatal(err)
	}
	undefaulted := reg.signedJob(spec, "r")
	undefaulted.Spec.Optimizer = ""
	for name, tc := range map[string]struct {
		req  *pb.SubmitJobRequest
		want string
	}{
		"unsigned":             {&pb.SubmitJobRequest{Spec: reg.signedJob(spec, "r").Spec, RequestId: "r"}, "signature:"},
		"signed by bob":        {bobs, "signature:"},
		"defaults left out":    {undefaulted, "optimizer"},
		"request id rewritten": {func() *pb.SubmitJobRequest { r := reg.signedJob(spec, "r"); r.RequestId = "r2"; return r }(), "signature:"},
		"no request id":        {&pb.SubmitJobRequest{Spec: spec}, "request_id: missing"},
	} {
		err := reg.researcher.Do(reg.ctx(), func(ctx context.Context, conn client.Conn) error {
			_, err := conn.Researcher.SubmitJob(ctx, tc.req)
			return err
		})
		if st := status.Convert(err); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tc.want) {
			t.Errorf("%s: %v, want InvalidArgument naming %q", name, err, tc.want)
		}
	}
	reg.leader().Store().FSM().Read(func(s *fsm.State) {
		if len(s.Jobs) != 0 {
			t.Errorf("%d jobs in the log after refused submits", len(s.Jobs))
		}
	})
}

// Without a policy file a site takes part only in jobs of K ≥ t + 1: at
// K = t, the coordinator and the t − 1 other decryptors could isolate one
// update. Every hospital declines a K = t job with the reason; a job of
// K = t + 1 runs.
func TestDefaultMinimumK(t *testing.T) {
	reg := newRegion(t, regionOpts{replicas: 1, hospitals: 3, threshold: 2, noPolicy: true})
	reg.startNodes(0, 1, 2)
	reg.waitCeremony()
	low := reg.submit(reg.spec(1, 2, 5*time.Second), "k-equals-t")
	j := reg.waitJob(low, "every hospital decided", 30*time.Second, func(j *fsm.Job) bool {
		return len(j.Refused)+len(j.Accepted) == 3
	})
	for _, h := range reg.names {
		if reason := j.Refused[h]; !strings.Contains(reason, "below the default minimum of 3 (threshold 2 + 1)") {
			t.Errorf("%s on a K = t job: refused %q (accepted: %v)", h, reason, j.Accepted)
		}
	}
	ok := reg.submit(reg.spec(1, 3, 10*time.Second), "k-above-t")
	if j := reg.waitDone(ok, time.Minute); j.State != fsm.JobDone || len(j.Accepted) != 3 {
		t.Errorf("a K = t + 1 job: %s, accepted by %v, refused %v", j.State, j.Accepted, j.Refused)
	}
}
