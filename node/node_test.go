package node

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/protobuf/proto"

	"regionfl/client"
	"regionfl/he"
	"regionfl/identity"
	"regionfl/jobspec"
	"regionfl/models"
	"regionfl/node/dataset"
	"regionfl/node/policy"
	pb "regionfl/proto/regionfl/v1"
)

// fakeCoordinator serves what a decryptor fetches, and records the shares
// it is given; the test decides which aggregate it serves.
type fakeCoordinator struct {
	pb.UnimplementedHospitalServiceServer
	region *pb.Region

	mu        sync.Mutex
	agg       []byte
	shares    [][]byte
	approvals [][]byte
}

func (f *fakeCoordinator) ApproveContributors(_ context.Context, req *pb.ApproveContributorsRequest) (*pb.ApproveContributorsResponse, error) {
	f.mu.Lock()
	f.approvals = append(f.approvals, req.Signature)
	f.mu.Unlock()
	return &pb.ApproveContributorsResponse{}, nil
}

func (f *fakeCoordinator) GetRegion(context.Context, *pb.GetRegionRequest) (*pb.GetRegionResponse, error) {
	return &pb.GetRegionResponse{Region: f.region}, nil
}

func (f *fakeCoordinator) GetAggregate(_ *pb.GetAggregateRequest, stream pb.HospitalService_GetAggregateServer) error {
	f.mu.Lock()
	agg := f.agg
	f.mu.Unlock()
	return stream.Send(&pb.GetAggregateResponse{Chunk: agg})
}

func (f *fakeCoordinator) SubmitDecryptionShare(stream pb.HospitalService_SubmitDecryptionShareServer) error {
	var share []byte
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		share = append(share, m.GetChunk()...)
	}
	f.mu.Lock()
	f.shares = append(f.shares, share)
	f.mu.Unlock()
	return stream.SendAndClose(&pb.SubmitDecryptionShareResponse{})
}

func (f *fakeCoordinator) serve(agg []byte) {
	f.mu.Lock()
	f.agg = agg
	f.mu.Unlock()
}

func (f *fakeCoordinator) given() [][]byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([][]byte(nil), f.shares...)
}

// threshold runs a whole key ceremony of n parties in this process.
func threshold(t *testing.T, p he.Params, seed []byte, n, thr int) []*he.Party {
	t.Helper()
	var (
		parties []*he.Party
		privs   [][]byte
	)
	recipients := map[uint32][]byte{}
	for i := 1; i <= n; i++ {
		pa, err := he.NewParty(p, uint32(i), n, thr, seed)
		if err != nil {
			t.Fatal(err)
		}
		priv, pub, err := he.NewHPKEKey()
		if err != nil {
			t.Fatal(err)
		}
		parties, privs = append(parties, pa), append(privs, priv)
		recipients[uint32(i)] = pub
	}
	inbox := make([][]*he.SealedShare, n)
	for _, pa := range parties {
		sealed, err := pa.SealShares(recipients, seed)
		if err != nil {
			t.Fatal(err)
		}
		for _, s := range sealed {
			inbox[s.To-1] = append(inbox[s.To-1], s)
		}
	}
	for i, pa := range parties {
		if err := pa.OpenShares(privs[i], inbox[i], seed); err != nil {
			t.Fatal(err)
		}
	}
	return parties
}

// A node gives one decryption share per binding: asked again for another
// aggregate, contributor set or set of decryptors it refuses, asked again
// for the same it sends the same share, and a restart changes none of this;
// manifests of one contributor, or naming hospitals outside the region,
// are refused.
// A site that dropped incomplete rows takes only jobs that allow it
// (missing: drop), and its reason carries the count, not where the rows
// are.
func TestJobMissingPolicy(t *testing.T) {
	sites, _, err := dataset.Synthetic(dataset.SyntheticConfig{Hospitals: 1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	site := sites[0]
	spec := &pb.JobSpec{Model: jobspec.ToProto(models.Spec{Kind: "logreg", Inputs: len(site.Train.Features)}),
		Purpose: "test", MinHospitals: 3, Scaling: jobspec.ScalingSite}
	jobspec.Defaults(spec)
	complete := &Node{cfg: Config{Data: site}, state: &diskState{Threshold: 2}}
	if reason := complete.check("job-1", spec); reason != "" {
		t.Fatalf("complete data, missing: error: declined: %s", reason)
	}
	site.Dropped = dataset.Dropped{Rows: 3, Line: 17, Column: "spo2"}
	incomplete := &Node{cfg: Config{Data: site}, state: &diskState{Threshold: 2}}
	reason := incomplete.check("job-1", spec)
	if !strings.Contains(reason, "missing: error") || !strings.Contains(reason, "dropped 3 rows") || strings.Contains(reason, "17") || strings.Contains(reason, "spo2") {
		t.Errorf("3 dropped rows, missing: error: reason %q", reason)
	}
	spec.Missing = jobspec.MissingDrop
	if reason := incomplete.check("job-1", spec); reason != "" {
		t.Errorf("3 dropped rows, missing: drop: declined: %s", reason)
	}
}

func TestOneDecryptionSharePerRound(t *testing.T) {
	p := he.RegionParams()
	seed := make([]byte, he.SeedLen)
	rand.Read(seed)
	parties := threshold(t, p, seed, 3, 2)

	hospitals := []string{"h1", "h2", "h3"}
	fake := &fakeCoordinator{region: &pb.Region{Params: p.Name(), Hospitals: hospitals, Threshold: 2, Seed: seed}}

	ca, err := identity.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	coordCert, err := ca.Issue(identity.Identity{Name: "replica-1", Role: identity.RoleCoordinator}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	// The region, as its operator signed it.
	opCert, err := ca.Issue(identity.Identity{Name: "ops", Role: identity.RoleOperator}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fake.region.GenesisCertificate = opCert.Certificate[0]
	if fake.region.GenesisSignature, err = identity.SignStatement(opCert.PrivateKey, identity.StatementGenesis, regionDigest(fake.region)); err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := grpc.NewServer(grpc.Creds(credentials.NewTLS(identity.ServerConfig(coordCert, ca.Pool()))))
	pb.RegisterHospitalServiceServer(g, fake)
	go g.Serve(lis)
	t.Cleanup(g.Stop)

	// h1's data directory holds its threshold key share, as after a ceremony.
	dir := t.TempDir()
	st, err := loadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.epoch0().Party, err = parties[0].MarshalBinary(); err != nil {
		t.Fatal(err)
	}
	if err := st.save(dir); err != nil {
		t.Fatal(err)
	}
	sites, _, err := dataset.Synthetic(dataset.SyntheticConfig{Hospitals: 3, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	certs := map[string]tls.Certificate{}
	for _, h := range hospitals {
		if certs[h], err = ca.Issue(identity.Identity{Name: h, Role: identity.RoleHospital}, time.Hour); err != nil {
			t.Fatal(err)
		}
		fake.region.Certificates = append(fake.region.Certificates, certs[h].Certificate[0])
	}
	cert := certs["h1"]
	// The aggregates below hold two updates: this site accepts K = 2
	// (below its default t + 1 = 3) explicitly.
	cfg := Config{ID: "h1", Coordinators: []string{lis.Addr().String()}, Cert: cert, CA: ca.Pool(), DataDir: dir, Data: sites[0],
		Policy: sitePolicy(t, "min_participants: 2\n")}
	start := func() *Node {
		n, err := New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { n.c.Close() })
		return n
	}

	spec := &pb.JobSpec{Model: jobspec.ToProto(models.Spec{Kind: "logreg", Inputs: len(sites[0].Train.Features)}),
		Purpose: "test", MinHospitals: 2, ClipNorm: 10, Scaling: jobspec.ScalingSite}
	jobspec.Defaults(spec)
	hash := jobspec.FromProto(spec.Model).Hash()
	bind := jobspec.Binding("job-1", 1, 0, hash, [32]byte{})
	// An aggregate of h1's and h2's updates, and their digests.
	made := 0
	updates, raws := map[string][]byte{}, map[string][]byte{}
	// fingerprints holds, by aggregate digest, each contributor's
	// fingerprint of its update under that aggregate's challenge.
	fingerprints := map[string]map[string][]byte{}
	fingerprint := func(sum *he.Update, parts []*he.Update) {
		d := sum.Digest()
		fingerprints[string(d[:])] = map[string][]byte{}
		for i, u := range parts {
			fingerprints[string(d[:])][hospitals[i]] = u.Fingerprint(he.AggregateChallenge(d[:]))
		}
	}
	aggregate := func() ([]byte, []byte) {
		made++
		agg := he.NewAggregator(p, jobspec.VectorShape(spec, 1), jobspec.EncodingClip(spec, 1), bind)
		var parts []*he.Update
		for i, pa := range parties[:2] {
			v := make([]float64, jobspec.VectorLen(spec, 1))
			v[0] = float64(made)
			u, err := pa.Encrypt(v, jobspec.VectorShape(spec, 1).Wide, 10, jobspec.EncodingClip(spec, 1), bind)
			if err != nil {
				t.Fatal(err)
			}
			if made == 1 {
				d := u.Digest()
				updates[hospitals[i]] = d[:]
				if raws[hospitals[i]], err = u.MarshalBinary(); err != nil {
					t.Fatal(err)
				}
			}
			if err := agg.Add(u); err != nil {
				t.Fatal(err)
			}
			parts = append(parts, u)
		}
		u, err := agg.Result()
		if err != nil {
			t.Fatal(err)
		}
		fingerprint(u, parts)
		b, err := u.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		d := u.Digest()
		return b, d[:]
	}
	aggA, digestA := aggregate()
	aggB, digestB := aggregate()
	// Each contributor's signed approval of the set, as the coordinator
	// relays them.
	rd := regionDigest(fake.region)
	approvals := func(round uint32, aggDigest []byte, contributors []string) []*pb.Approval {
		b := jobspec.Binding("job-1", round, 0, hash, [32]byte{})
		var out []*pb.Approval
		for _, c := range contributors {
			fp := fingerprints[string(aggDigest)][c]
			sig, err := identity.SignStatement(certs[c].PrivateKey, identity.StatementApproval,
				identity.ApprovalFields(rd, b[:], updates[c], aggDigest, fp, c, contributors)...)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, &pb.Approval{Hospital: c, UpdateDigest: updates[c], Signature: sig, Certificate: certs[c].Certificate[0], Fingerprint: fp})
		}
		return out
	}
	task := func(digest []byte, active ...string) *pb.DecryptTask {
		return &pb.DecryptTask{JobId: "job-1", Round: 1, AggregateDigest: digest, Active: active, Attempt: 1,
			Contributors: []string{"h2", "h1"}, ModelHash: hash, AggregateSize: uint64(len(aggA)), Spec: spec,
			Approvals: approvals(1, digest, []string{"h1", "h2"})}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// The job, as its researcher signed it and h1 accepted it (pinned on
	// disk, so the restarted node below holds it too).
	researcher, err := ca.Issue(identity.Identity{Name: "alice", Role: identity.RoleResearcher}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	n := start()
	accept(t, n, signedOffer(t, researcher, "job-1", "req-1", spec))
	fake.serve(aggA)
	// The model-inconsistency attack: the leader served h2 other
	// parameters, so h2's update and approval are bound to another model
	// digest. Asked to serve the set anyway, h1 refuses: the approvals do
	// not agree on one binding.
	mixed := task(digestA, "h1", "h2")
	other := jobspec.Binding("job-1", 1, 0, hash, jobspec.ModelDigest([]float64{1}))
	if mixed.Approvals[1].Signature, err = identity.SignStatement(certs["h2"].PrivateKey, identity.StatementApproval,
		identity.ApprovalFields(rd, other[:], updates["h2"], digestA, mixed.Approvals[1].Fingerprint, "h2", []string{"h1", "h2"})...); err != nil {
		t.Fatal(err)
	}
	if err := n.decrypt(ctx, mixed); !errors.Is(err, ErrUntrusted) || len(fake.given()) != 0 {
		t.Fatalf("a contributor set trained from two models: %v, %d shares sent", err, len(fake.given()))
	}
	if err := n.decrypt(ctx, task(digestA, "h1", "h2")); err != nil {
		t.Fatalf("first share: %v", err)
	}
	first := fake.given()
	if len(first) != 1 {
		t.Fatalf("%d shares sent", len(first))
	}
	refused := func(n *Node, tk *pb.DecryptTask, what string) {
		t.Helper()
		before := len(fake.given())
		err := n.decrypt(ctx, tk)
		if !errors.Is(err, ErrUntrusted) {
			t.Errorf("%s: %v, want a refusal", what, err)
		}
		if len(fake.given()) != before {
			t.Errorf("%s: a share was sent", what)
		}
	}
	again := func(n *Node) {
		t.Helper()
		if err := n.decrypt(ctx, task(digestA, "h1", "h2")); err != nil {
			t.Fatalf("the same request again: %v", err)
		}
		got := fake.given()
		if string(got[len(got)-1]) != string(first[0]) {
			t.Error("the same request again got a different share")
		}
	}

	fake.serve(aggB)
	refused(n, task(digestB, "h1", "h2"), "another aggregate")
	fake.serve(aggA)
	refused(n, task(digestA, "h1", "h3"), "another set of decryptors")
	three := task(digestA, "h1", "h2")
	three.Contributors = []string{"h1", "h2", "h3"}
	refused(n, three, "another contributor set for the same binding")
	again(n)

	// A fresh round: manifests the node cannot accept are refused before
	// any share exists.
	fresh := func(mod func(*pb.DecryptTask)) *pb.DecryptTask {
		tk := task(digestA, "h1", "h2")
		tk.Round = 2
		mod(tk)
		return tk
	}
	refused(n, fresh(func(tk *pb.DecryptTask) { tk.Contributors = []string{"h2"} }), "one contributor")
	refused(n, fresh(func(tk *pb.DecryptTask) { tk.Contributors = []string{"h2", "h2"} }), "a contributor listed twice")
	refused(n, fresh(func(tk *pb.DecryptTask) { tk.Contributors = []string{"h2", "mallory"} }), "a contributor outside the region")
	refused(n, fresh(func(tk *pb.DecryptTask) {
		tk.Spec = proto.Clone(spec).(*pb.JobSpec)
		tk.Spec.MinHospitals = 1
	}), "a job of min_hospitals 1")
	refused(n, fresh(func(tk *pb.DecryptTask) { tk.Approvals = approvals(2, digestA, []string{"h1", "h2"}) }), "an aggregate bound to another round")
	refused(n, fresh(func(tk *pb.DecryptTask) {}), "approvals of another round")
	refused(n, fresh(func(tk *pb.DecryptTask) { tk.Approvals = approvals(2, digestA, []string{"h1", "h2"})[:1] }), "an approval missing")
	refused(n, fresh(func(tk *pb.DecryptTask) {
		tk.Approvals = approvals(2, digestA, []string{"h1", "h2"})
		tk.Approvals[1].Signature = tk.Approvals[0].Signature
	}), "an approval signed by another hospital")
	refused(n, fresh(func(tk *pb.DecryptTask) {
		tk.Approvals = approvals(2, digestA, []string{"h1", "h2", "h3"})[:2]
	}), "approvals of another contributor set")

	// An aggregate that is not the sum of the approved updates: one residue
	// of the real sum shifted by one (a plaintext offset is this, at a
	// scale the coordinator picks), and the contributors' fingerprints of
	// their own updates under the challenge of what was committed.
	bind3 := jobspec.Binding("job-1", 3, 0, hash, [32]byte{})
	shape := jobspec.VectorShape(spec, 3)
	agg3 := he.NewAggregator(p, shape, jobspec.EncodingClip(spec, 3), bind3)
	var parts3 []*he.Update
	for _, pa := range parties[:2] {
		u, err := pa.Encrypt(make([]float64, jobspec.VectorLen(spec, 3)), shape.Wide, 10, jobspec.EncodingClip(spec, 3), bind3)
		if err != nil {
			t.Fatal(err)
		}
		if err := agg3.Add(u); err != nil {
			t.Fatal(err)
		}
		parts3 = append(parts3, u)
	}
	sum3, _ := agg3.Result()
	shifted, _ := wire(t, sum3)
	shifted[len(shifted)-p.Ciphertexts(shape)*polyLen(p)] ^= 1 // the first residue of the first ciphertext, ±1
	forged, err := he.UnmarshalUpdate(p, shape, shifted)
	if err != nil {
		t.Fatalf("the shifted aggregate does not decode: %v", err)
	}
	d3 := forged.Digest()
	fingerprints[string(d3[:])] = map[string][]byte{}
	for i, u := range parts3 {
		fingerprints[string(d3[:])][hospitals[i]] = u.Fingerprint(he.AggregateChallenge(d3[:]))
	}
	fake.serve(shifted)
	given := len(fake.given())
	if err := n.decrypt(ctx, fresh(func(tk *pb.DecryptTask) {
		tk.Round, tk.AggregateDigest, tk.Approvals = 3, d3[:], approvals(3, d3[:], []string{"h1", "h2"})
	})); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "not the sum of the updates its contributors approved") || len(fake.given()) != given {
		t.Errorf("an aggregate that is not the sum of the approved updates: %v", err)
	}
	fake.serve(aggA)

	// The record is on disk: a restarted node refuses and resends alike.
	n2 := start()
	fake.serve(aggB)
	refused(n2, task(digestB, "h1", "h2"), "another aggregate after a restart")
	fake.serve(aggA)
	again(n2)

	// The decryption budget: a node whose key decrypted as many ciphertexts
	// as the parameters allow gives no more shares.
	n2.mu.Lock()
	spent := n2.state.Epochs[0].Decrypted
	n2.state.Epochs[0].Decrypted = p.MaxDecryptions()
	n2.mu.Unlock()
	if spent != 1 {
		t.Errorf("%d ciphertexts counted for one share of a one-ciphertext aggregate", spent)
	}
	bind2 := jobspec.Binding("job-1", 2, 0, hash, [32]byte{})
	agg2 := he.NewAggregator(p, jobspec.VectorShape(spec, 2), jobspec.EncodingClip(spec, 2), bind2)
	var parts2 []*he.Update
	for _, pa := range parties[:2] {
		u, err := pa.Encrypt(make([]float64, jobspec.VectorLen(spec, 2)), jobspec.VectorShape(spec, 2).Wide, 10, jobspec.EncodingClip(spec, 2), bind2)
		if err != nil {
			t.Fatal(err)
		}
		if err := agg2.Add(u); err != nil {
			t.Fatal(err)
		}
		parts2 = append(parts2, u)
	}
	sum2, _ := agg2.Result()
	fingerprint(sum2, parts2)
	raw2, d2 := wire(t, sum2)
	fake.serve(raw2)
	before := len(fake.given())
	if err := n2.decrypt(ctx, fresh(func(tk *pb.DecryptTask) {
		tk.AggregateDigest, tk.Approvals = d2, approvals(2, d2, []string{"h1", "h2"})
	})); err == nil || !strings.Contains(err.Error(), "spent") {
		t.Errorf("past the budget: %v", err)
	}
	if len(fake.given()) != before {
		t.Error("a share was given past the budget")
	}
	n2.mu.Lock()
	n2.state.Decrypted = spent
	n2.mu.Unlock()

	// Approvals: one contributor set per binding, naming this hospital,
	// for an update it made; the signature verifies as a decryptor checks.
	approve := func(round uint32, contributors ...string) error {
		return n2.approve(ctx, &pb.ApprovalTask{JobId: "job-1", Round: round, ModelHash: hash, Contributors: contributors, Spec: spec,
			AggregateDigest: digestA})
	}
	if err := approve(1, "h1", "h2"); !errors.Is(err, ErrUntrusted) {
		t.Errorf("approval without an update of this node: %v", err)
	}
	n2.mu.Lock()
	n2.state.Encrypted[hex.EncodeToString(bind[:])] = encryption{Vector: []byte{1}, Update: updates["h1"]}
	n2.mu.Unlock()
	// The approval signs the fingerprint of the update, read from where
	// the node keeps it until the round is approved.
	if err := approve(1, "h2", "h1"); err == nil || !strings.Contains(err.Error(), "no longer holds") {
		t.Fatalf("approval without the kept update: %v", err)
	}
	k := &keptUpdate{JobID: "job-1", Round: 1, ModelHash: hash, ModelDigest: jobspec.WireModelDigest([32]byte{}), Digest: updates["h1"], Size: uint64(len(raws["h1"]))}
	if err := saveKept(dir, k, raws["h1"]); err != nil {
		t.Fatal(err)
	}
	n2.mu.Lock()
	n2.kept["job-1"] = k
	n2.mu.Unlock()
	if err := approve(1, "h2", "h1"); err != nil {
		t.Fatalf("approval: %v", err)
	}
	fake.mu.Lock()
	sig := fake.approvals[len(fake.approvals)-1]
	fake.mu.Unlock()
	if err := identity.VerifyStatement(ca.Pool(), certs["h1"].Certificate[0], identity.Identity{Name: "h1", Role: identity.RoleHospital}, time.Now(), sig,
		identity.StatementApproval, identity.ApprovalFields(rd, bind[:], updates["h1"], digestA, fingerprints[string(digestA)]["h1"], "h1", []string{"h1", "h2"})...); err != nil {
		t.Fatalf("the approval does not verify: %v", err)
	}
	if err := approve(1, "h1", "h2"); err != nil {
		t.Fatalf("the same approval again: %v", err)
	}
	for what, set := range map[string][]string{
		"another contributor set":       {"h1", "h2", "h3"},
		"a set without this node":       {"h2", "h3"},
		"one contributor":               {"h1"},
		"a hospital outside the region": {"h1", "mallory"},
	} {
		fake.mu.Lock()
		before := len(fake.approvals)
		fake.mu.Unlock()
		if err := approve(1, set...); !errors.Is(err, ErrUntrusted) {
			t.Errorf("%s: %v", what, err)
		}
		fake.mu.Lock()
		if len(fake.approvals) != before {
			t.Errorf("%s: an approval was sent", what)
		}
		fake.mu.Unlock()
	}
}

// A kept update survives a restart with its bytes, and goes when a poll no
// longer names its round.
// signedOffer is a job offer as a coordinator relays it: the spec, signed
// by the researcher holding cert.
func signedOffer(t *testing.T, cert tls.Certificate, jobID, requestID string, spec *pb.JobSpec) *pb.JobOffer {
	t.Helper()
	req, err := client.SubmitJobRequest(cert, spec, requestID)
	if err != nil {
		t.Fatal(err)
	}
	return &pb.JobOffer{JobId: jobID, Spec: req.Spec, RequestId: requestID, Signature: req.Signature, Certificate: cert.Certificate[0]}
}

// accept vets and pins an offer as Node.decide does when the site accepts.
func accept(t *testing.T, n *Node, o *pb.JobOffer) {
	t.Helper()
	by, reason := n.vet(o)
	if reason != "" {
		t.Fatalf("offer of %s refused: %s", o.JobId, reason)
	}
	if err := n.pinJob(o, by, accepted); err != nil {
		t.Fatal(err)
	}
}

// A node acts only on a job a researcher of the region CA signed, and
// holds every later task to that spec: a coordinator cannot forge a job,
// lower K, change the purpose, or offer one signed job twice.
func TestOnlyJobsAResearcherSigned(t *testing.T) {
	ca, err := identity.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	issue := func(name string, role identity.Role) tls.Certificate {
		c, err := ca.Issue(identity.Identity{Name: name, Role: role}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	alice, hospital := issue("alice", identity.RoleResearcher), issue("h2", identity.RoleHospital)
	other, err := identity.NewCA("elsewhere", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := other.Issue(identity.Identity{Name: "alice", Role: identity.RoleResearcher}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := loadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{cfg: Config{ID: "h1", CA: ca.Pool(), DataDir: dir}, state: st, log: slog.New(slog.DiscardHandler)}
	spec := &pb.JobSpec{Model: jobspec.ToProto(models.Spec{Kind: "logreg", Inputs: 3}), Purpose: "sepsis alert", MinHospitals: 3, Scaling: jobspec.ScalingRegion}
	good := signedOffer(t, alice, "job-1", "req-1", spec)

	refusedOffer := func(o *pb.JobOffer, what, want string) {
		t.Helper()
		if _, reason := n.vet(o); !strings.Contains(reason, want) {
			t.Errorf("%s: reason %q, want it to say %q", what, reason, want)
		}
	}
	unsigned := proto.Clone(good).(*pb.JobOffer)
	unsigned.Signature = nil
	refusedOffer(unsigned, "an unsigned job", "not signed as offered")
	lowered := proto.Clone(good).(*pb.JobOffer)
	lowered.Spec.MinHospitals = 2
	refusedOffer(lowered, "K lowered by the coordinator", "not signed as offered")
	repurposed := proto.Clone(good).(*pb.JobOffer)
	repurposed.Spec.Purpose = "marketing"
	refusedOffer(repurposed, "another purpose", "not signed as offered")
	refusedOffer(signedOffer(t, hospital, "job-1", "req-1", spec), "a job signed by a hospital", "want a researcher")
	refusedOffer(signedOffer(t, stranger, "job-1", "req-1", spec), "a job signed outside the region CA", "not signed as offered")

	accept(t, n, good)
	// Region scaling is filled in by the region after submission: the
	// signature does not cover it.
	scaled := proto.Clone(good.Spec).(*pb.JobSpec)
	scaled.FeatureMean, scaled.FeatureStd = []float64{0, 0, 0}, []float64{1, 1, 1}
	if err := n.vetted("job-1", scaled, true); err != nil {
		t.Errorf("the signed job with its region scaling: %v", err)
	}
	if err := n.vetted("job-1", lowered.Spec, false); !errors.Is(err, ErrUntrusted) {
		t.Errorf("a decryption task with K lowered: %v", err)
	}
	if err := n.vetted("job-2", spec, false); !errors.Is(err, ErrUntrusted) {
		t.Errorf("a task of a job never offered: %v", err)
	}
	replay := proto.Clone(good).(*pb.JobOffer)
	replay.JobId = "job-2"
	refusedOffer(replay, "the signed job offered again as another job", "offered before as job job-1")
	changed := signedOffer(t, alice, "job-1", "req-9", &pb.JobSpec{Model: spec.Model, Purpose: "other", MinHospitals: 3})
	refusedOffer(changed, "the same job ID with another signed spec", "offered before with another spec")

	// Refused by this site: it may decrypt for the job (as signed), never
	// train or approve for it. The record survives a restart.
	declined := signedOffer(t, alice, "job-3", "req-3", spec)
	declined.Spec.Rounds = 7
	declined = signedOffer(t, alice, "job-3", "req-3", declined.Spec)
	by, reason := n.vet(declined)
	if reason != "" {
		t.Fatal(reason)
	}
	if err := n.pinJob(declined, by, refused); err != nil {
		t.Fatal(err)
	}
	if n.state, err = loadState(dir); err != nil {
		t.Fatal(err)
	}
	if err := n.vetted("job-3", declined.Spec, false); err != nil {
		t.Errorf("decrypting for a job the site declined: %v", err)
	}
	if err := n.vetted("job-3", declined.Spec, true); !errors.Is(err, ErrUntrusted) {
		t.Errorf("training for a job the site declined: %v", err)
	}
	if err := n.vetted("job-1", good.Spec, true); err != nil {
		t.Errorf("after a restart: %v", err)
	}
}

func TestKeptUpdateLifecycle(t *testing.T) {
	dir := t.TempDir()
	raw := []byte("encrypted update bytes")
	k := &keptUpdate{JobID: "job-1", Round: 3, ModelVersion: 2, ModelHash: "sha256:x", Digest: []byte{1, 2, 3}, Size: uint64(len(raw))}
	if err := saveKept(dir, k, raw); err != nil {
		t.Fatal(err)
	}
	kept, err := loadKept(dir)
	if err != nil {
		t.Fatal(err)
	}
	got, b, err := readKept(keptPath(dir, "job-1"), true)
	if err != nil || string(b) != string(raw) || kept["job-1"] == nil || kept["job-1"].Round != 3 || got.ModelVersion != 2 {
		t.Fatalf("after a restart: %+v %q %v", kept, b, err)
	}
	n := &Node{cfg: Config{DataDir: dir}, kept: kept}
	if err := n.settle(&pb.PollResponse{Kept: []*pb.KeptUpdate{{JobId: "job-1", Round: 3}}}); err != nil || n.keptFor("job-1", 3) == nil {
		t.Fatalf("a round still collecting lost its update: %v", err)
	}
	if err := n.settle(&pb.PollResponse{}); err != nil || n.keptFor("job-1", 3) != nil {
		t.Fatalf("a settled round kept its update: %v", err)
	}
	if kept, _ := loadKept(dir); len(kept) != 0 {
		t.Fatalf("the file stayed: %v", kept)
	}
}

// Sealed shares are kept per key epoch and membership: a resend carries
// the same bytes, a membership the epoch does not have finds none, and a
// file claiming more than a committee's worth is refused unread.
func TestKeptSealedShares(t *testing.T) {
	dir := t.TempDir()
	req := &pb.SubmitSealedSharesRequest{Shares: []*pb.SealedShare{{To: "h1", Sealed: []byte("sealed to h1"), Signature: []byte("sig")}}}
	if err := saveKeptSealed(dir, 2, []byte("members"), req); err != nil {
		t.Fatal(err)
	}
	got, err := loadKeptSealed(dir, 2, []byte("members"))
	if err != nil || !proto.Equal(got, req) {
		t.Fatalf("kept %v, %v", got, err)
	}
	for _, miss := range []struct {
		epoch   uint32
		members string
	}{{2, "other members"}, {3, "members"}} {
		if got, err := loadKeptSealed(dir, miss.epoch, []byte(miss.members)); got != nil || err != nil {
			t.Fatalf("epoch %d, members %q: %v, %v", miss.epoch, miss.members, got, err)
		}
	}
	if err := writeMetaFile(keptSealedPath(dir, 4), &keptSealed{Epoch: 4, MembersDigest: []byte("members"), Size: maxKeptSealed + 1}, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := loadKeptSealed(dir, 4, []byte("members")); err == nil || !strings.Contains(err.Error(), "at most") {
		t.Fatalf("an oversized kept file: %v", err)
	}
	if err := removeKeptSealed(dir, 2); err != nil {
		t.Fatal(err)
	}
	if got, err := loadKeptSealed(dir, 2, []byte("members")); got != nil || err != nil {
		t.Fatalf("after removal: %v, %v", got, err)
	}
}

// TestPoisonJobDeclined: a job at the edge of its fields' types, as a
// hostile or careless coordinator could offer it, is declined with the
// field named; the node does not crash on it.
func TestPoisonJobDeclined(t *testing.T) {
	sites, _, err := dataset.Synthetic(dataset.SyntheticConfig{Hospitals: 1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{cfg: Config{Data: sites[0]}, log: slog.New(slog.DiscardHandler)}
	base := func() *pb.JobSpec {
		s := &pb.JobSpec{Model: jobspec.ToProto(models.Spec{Kind: "logreg", Inputs: len(sites[0].Train.Features)}),
			Purpose: "test", Scaling: jobspec.ScalingSite}
		jobspec.Defaults(s)
		return s
	}
	for field, poison := range map[string]func(*pb.JobSpec){
		"sample_scale":   func(s *pb.JobSpec) { s.SampleScale = math.MaxUint64 },
		"min_hospitals":  func(s *pb.JobSpec) { s.MinHospitals = 1 },
		"learning_rate":  func(s *pb.JobSpec) { s.LearningRate = math.NaN() },
		"clip_norm":      func(s *pb.JobSpec) { s.ClipNorm = math.Inf(1) },
		"round_deadline": func(s *pb.JobSpec) { s.RoundDeadlineMs = 0 },
	} {
		s := base()
		poison(s)
		reason := n.check("job-1", s)
		if !strings.Contains(reason, field) {
			t.Errorf("%s poisoned: reason %q does not name it", field, reason)
		}
	}
	// Past validation, a panic in job work fails that work, not the node.
	err = n.safely(func() error { var s []int; _ = s[:-len(s)-1]; return nil })
	if err == nil || !strings.Contains(err.Error(), "cannot handle") {
		t.Errorf("a panic in job work: %v", err)
	}
}

// FuzzJobSpec feeds job specs built from random field values through the
// node's checks and, when they pass, its evaluation of a model on the
// site's rows (where a huge sample_scale once crashed every node).
func FuzzJobSpec(f *testing.F) {
	f.Add(uint64(1000), uint32(2), 0.1, 10.0, uint32(60000), 0.5, uint32(32))
	f.Add(uint64(math.MaxUint64), uint32(1), math.NaN(), math.Inf(1), uint32(0), 2.0, uint32(0))
	sites, _, err := dataset.Synthetic(dataset.SyntheticConfig{Hospitals: 1, Seed: 1})
	if err != nil {
		f.Fatal(err)
	}
	n := &Node{cfg: Config{Data: sites[0]}, state: &diskState{Threshold: 2}, log: slog.New(slog.DiscardHandler)}
	f.Fuzz(func(t *testing.T, scale uint64, k uint32, lr, clip float64, deadline uint32, alert float64, batch uint32) {
		spec := &pb.JobSpec{Model: jobspec.ToProto(models.Spec{Kind: "logreg", Inputs: len(sites[0].Train.Features)}),
			Purpose: "fuzz", Scaling: jobspec.ScalingSite, SampleScale: scale, MinHospitals: k, LearningRate: lr,
			ClipNorm: clip, RoundDeadlineMs: deadline, AlertThreshold: alert, BatchSize: batch,
			Rounds: 1, LocalSteps: 1, Optimizer: "sgd", Strategy: &pb.Strategy{Name: "fedavg"}, Missing: jobspec.MissingError}
		if reason := n.check("job-1", spec); reason != "" {
			return
		}
		m := jobspec.FromProto(spec.Model)
		err := n.safely(func() error {
			_, _, err := n.metricSums(spec, m, make([]float64, m.NumParams()), 0, true)
			return err
		})
		if err != nil && strings.Contains(err.Error(), "cannot handle") {
			t.Fatalf("a job that passed validation panicked: %v", err)
		}
	})
}

// A node encrypts one vector per binding, ever: the same vector again is
// fine (a region-statistics round that runs again), another one is refused
// (its difference with the first would come out of two ciphertexts under
// one a), and a restart changes nothing.
func TestOneVectorPerBinding(t *testing.T) {
	p := he.RegionParams()
	seed := make([]byte, he.SeedLen)
	rand.Read(seed)
	parties := threshold(t, p, seed, 2, 2)
	dir := t.TempDir()
	st, err := loadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{cfg: Config{DataDir: dir}, state: st, parties: map[uint32]*he.Party{0: parties[0]}, log: slog.New(slog.DiscardHandler)}
	n.heParams.Store(&p)
	spec := &pb.JobSpec{Model: jobspec.ToProto(models.Spec{Kind: "logreg", Inputs: 3}), ClipNorm: 10}
	task := &pb.TrainTask{JobId: "job-1", Round: 1, Spec: spec, ModelHash: jobspec.FromProto(spec.Model).Hash()}
	vector := func(head ...float64) []float64 {
		return append(head, make([]float64, jobspec.VectorLen(spec, 1)-len(head))...)
	}
	v := vector(0.1, 0.2, 0.3, 0.4)
	if _, err := n.encrypt(task, taskBinding(task, [32]byte{}), v, 7); err != nil {
		t.Fatal(err)
	}
	if _, err := n.encrypt(task, taskBinding(task, [32]byte{}), v, 7); err != nil {
		t.Fatalf("the same vector again: %v", err)
	}
	if _, err := n.encrypt(task, taskBinding(task, [32]byte{}), vector(0.1, 0.2, 0.3, 0.5), 7); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("another vector under the same binding: %v", err)
	}
	if _, err := n.encrypt(task, taskBinding(task, [32]byte{}), v, 8); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("another count under the same binding: %v", err)
	}
	next := proto.Clone(task).(*pb.TrainTask)
	next.Round = 2
	if _, err := n.encrypt(next, taskBinding(next, [32]byte{}), vector(0.1, 0.2, 0.3, 0.5), 7); err != nil {
		t.Fatalf("the next round: %v", err)
	}
	st2, err := loadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	n.state = st2
	if _, err := n.encrypt(task, taskBinding(task, [32]byte{}), vector(0, 0, 0, 1), 7); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("another vector after a restart: %v", err)
	}
}

func wire(t *testing.T, u *he.Update) ([]byte, []byte) {
	t.Helper()
	b, err := u.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	d := u.Digest()
	return b, d[:]
}

// A site trains one update per model, rows and training configuration,
// whatever job or round the coordinator labels it with: the same task
// again is fine (a retry), the same content under another binding is
// refused, and other content is not.
func TestOneUpdatePerContent(t *testing.T) {
	sites, _, err := dataset.Synthetic(dataset.SyntheticConfig{Hospitals: 1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := loadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{cfg: Config{ID: "h1", DataDir: dir}, state: st, log: slog.New(slog.DiscardHandler)}
	spec := &pb.JobSpec{Model: jobspec.ToProto(models.Spec{Kind: "logreg", Inputs: len(sites[0].Train.Features)}), LocalSteps: 5, BatchSize: 8, LearningRate: 0.1, ClipNorm: 1, SampleScale: 100}
	params := make([]float64, 4)
	task := func(job string, round uint32) *pb.TrainTask {
		return &pb.TrainTask{JobId: job, Round: round, Spec: spec, ModelHash: "sha256:m"}
	}
	train := func(tk *pb.TrainTask, p []float64) error {
		return n.recordTraining(tk, taskBinding(tk, jobspec.ModelDigest(p)), p, sites[0].Train, jobspec.TrainConfig(tk.Spec, "h1", tk.Round))
	}
	if err := train(task("job-1", 1), params); err != nil {
		t.Fatal(err)
	}
	if err := train(task("job-1", 1), params); err != nil {
		t.Fatalf("the same task again: %v", err)
	}
	if err := train(task("job-2", 1), params); !errors.Is(err, ErrUntrusted) {
		t.Fatalf("the same model, rows and configuration for another job: %v", err)
	}
	if err := train(task("job-2", 1), []float64{0, 0, 0, 1}); err != nil {
		t.Fatalf("another model: %v", err)
	}
	if err := train(task("job-3", 2), params); err != nil {
		t.Fatalf("another round's configuration (its seed): %v", err)
	}
}

// A site's metric sums of one model go out once: the same task again is
// fine, another binding of the same model on the same rows gets none, and
// another model gets its own.
func TestMetricSumsOncePerModel(t *testing.T) {
	sites, _, err := dataset.Synthetic(dataset.SyntheticConfig{Hospitals: 1, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	st, err := loadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := &Node{cfg: Config{ID: "h1", DataDir: dir, Data: sites[0]}, state: st, log: slog.New(slog.DiscardHandler)}
	spec := &pb.JobSpec{Model: jobspec.ToProto(models.Spec{Kind: "logreg", Inputs: len(sites[0].Train.Features)}), AlertThreshold: 0.5, Scaling: jobspec.ScalingSite, Purpose: "test"}
	jobspec.Defaults(spec)
	m := jobspec.FromProto(spec.Model)
	params := make([]float64, m.NumParams())
	release := func(job string, p []float64) bool {
		t.Helper()
		tk := &pb.TrainTask{JobId: job, Round: 1, Spec: spec, ModelHash: m.Hash()}
		ok, err := n.releaseMetrics(tk, taskBinding(tk, jobspec.ModelDigest(p)), p, n.metricRows(spec))
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	if !release("job-1", params) {
		t.Fatal("the first release was withheld")
	}
	if !release("job-1", params) {
		t.Fatal("a retry of the same task was withheld")
	}
	if release("job-2", params) {
		t.Fatal("the same model's sums were released twice")
	}
	other := slices.Clone(params)
	other[0] = 0.5
	if !release("job-2", other) {
		t.Fatal("another model's sums were withheld")
	}
	sums, _, err := n.metricSums(spec, m, params, 0, false)
	if err != nil || slices.ContainsFunc(sums, func(x float64) bool { return x != 0 }) {
		t.Fatalf("withheld sums are not zeros: %v", err)
	}
}

// epoch0 is the record of the genesis key epoch, made on first use.
func (st *diskState) epoch0() *epochKeys {
	if st.Epochs[0] == nil {
		st.Epochs[0] = &epochKeys{}
	}
	return st.Epochs[0]
}

// A state file from before key epochs held one key, epoch 0's: loading it
// moves that key into the epoch records, and the next save drops the old
// fields.
func TestStateMigratesToKeyEpochs(t *testing.T) {
	dir := t.TempDir()
	legacy := `{"hpke_private":"AQI=","hpke_public":"AwQ=","party":"BQY=","public_key":"Bwg=","decrypted":5,"shares_given":{}}`
	if err := os.WriteFile(filepath.Join(dir, stateFile), []byte(legacy), 0o600); err != nil {
		t.Fatal(err)
	}
	st, err := loadState(dir)
	if err != nil {
		t.Fatal(err)
	}
	e0 := st.Epochs[0]
	if e0 == nil || string(e0.HPKEPrivate) != "\x01\x02" || string(e0.Party) != "\x05\x06" || e0.Decrypted != 5 {
		t.Fatalf("epoch 0 after migration: %+v", e0)
	}
	if err := st.save(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		t.Fatal(err)
	}
	var top map[string]any
	if err := json.Unmarshal(b, &top); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"hpke_private", "party", "public_key", "decrypted"} {
		if _, ok := top[k]; ok {
			t.Errorf("%s still at the top of the saved state", k)
		}
	}
	again, err := loadState(dir)
	if err != nil || again.Epochs[0] == nil || again.Epochs[0].Decrypted != 5 {
		t.Fatalf("reloaded: %v, %+v", err, again.Epochs[0])
	}
}

// sitePolicy is a site policy file with the given YAML.
func sitePolicy(t *testing.T, text string) *policy.File {
	t.Helper()
	path := filepath.Join(t.TempDir(), "policy.yaml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := policy.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// polyLen is the encoded length of one ciphertext under p.
func polyLen(p he.Params) int {
	one, many := he.Values(1), he.Values(4*p.SlotsPerCiphertext())
	return (he.UpdateSize(p, many) - he.UpdateSize(p, one)) / (p.Ciphertexts(many) - p.Ciphertexts(one))
}
