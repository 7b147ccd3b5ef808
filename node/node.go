// Package node is the hospital agent. It dials out to the coordinator only,
// polls for work, and does it: the key ceremony, deciding on jobs, training
// on local data, encrypting and streaming the update, and giving one
// decryption share per round for a committed aggregate it has checked.
// Patient rows never leave this package; only encrypted updates, sealed key
// shares and decryption shares do.
package node

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"regionfl/client"
	"regionfl/he"
	"regionfl/identity"
	"regionfl/jobspec"
	"regionfl/models"
	"regionfl/node/dataset"
	"regionfl/node/metrics"
	"regionfl/node/policy"
	"regionfl/privacy"
	pb "regionfl/proto/regionfl/v1"
)

// Config configures a hospital node.
type Config struct {
	ID           string
	Coordinators []string
	Cert         tls.Certificate
	CA           *x509.CertPool
	DataDir      string
	Data         dataset.Site // the hospital's own train/test split
	Logger       *slog.Logger
	// Policy is the site's own rules (nil: accept every job that fits the
	// data); reloaded from its file when it changes.
	Policy *policy.File
	// Metrics counts what the node does (nil: not counted).
	Metrics *metrics.Node
	// HPKEKeyFile is the HPKE key pair made by `regionfl node init`; ""
	// makes one on first start. Either way it stays in the node's files.
	HPKEKeyFile string
}

// ErrBudgetExhausted means the site's privacy budget does not cover another
// round; the node declines to contribute.
var ErrBudgetExhausted = errors.New("privacy budget exhausted")

// ErrUntrusted means the coordinator served something this node cannot verify
// or that contradicts what it pinned (another region, an unsigned or
// wrongly signed ceremony message, another member list). The node acts
// on nothing it cannot verify.
var ErrUntrusted = errors.New("refused: not verifiable against the region CA and this node's pinned state")

// Node is a running hospital agent.
type Node struct {
	cfg Config
	// heParams is the parameter set of the pinned region (the default
	// set until a region is pinned).
	heParams atomic.Pointer[he.Params]
	c        *client.Client
	log      *slog.Logger

	mu    sync.Mutex
	state *diskState
	// parties holds this node's secret state per key epoch (see
	// epochKeys), from the sealing step of its ceremony on.
	parties map[uint32]*he.Party
	kept    map[string]*keptUpdate // by job ID, see keptDir
	// checked holds, per job ID, the newest model version this node tried
	// to check (follow), so a poll does not check it again.
	checked map[string]uint32
	// chained holds the jobs whose model chain this node keeps (pinned
	// since it started, or kept by the first prune), and pruned is set
	// once the first poll after the start pruned the chain directory
	// (pruneChains).
	chained map[string]bool
	pruned  bool
	// trainDigest names the site's training rows (dataset.Table.Digest),
	// computed once: statistics go out once per dataset.
	trainDigest [32]byte
	// verifier checks the statements other hospitals signed, verifying
	// each certificate's chain and each statement once.
	verifier *identity.Verifier
	// revocationsTaken and listTaken are the length of the revocation
	// list and the issue time of the signed list at the last
	// refreshRevocations; staleLogged is the issue time of the last list
	// this node logged as too old (all read and written by Run's loop
	// only).
	revocationsTaken uint32
	listTaken        int64
	staleLogged      int64
}

// New loads the node's state from its data directory.
func New(cfg Config) (*Node, error) {
	if err := identity.ValidName(cfg.ID); err != nil {
		return nil, fmt.Errorf("node: hospital ID: %w", err)
	}
	if cfg.Data.Train.Len() == 0 {
		return nil, errors.New("node: no training rows")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	st, err := loadState(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	params, err := he.ParamsByName(cmp.Or(st.Params, he.RegionParamsName))
	if err != nil {
		return nil, fmt.Errorf("node: pinned region in %s: %w", cfg.DataDir, err)
	}
	kept, err := loadKept(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	n := &Node{cfg: cfg, state: st, log: cfg.Logger.With("hospital", cfg.ID), kept: kept, checked: map[string]uint32{}, chained: map[string]bool{},
		trainDigest: cfg.Data.Train.Digest(), parties: map[uint32]*he.Party{},
		verifier: identity.NewVerifier(cfg.CA)}
	n.heParams.Store(&params)
	for e, k := range st.Epochs {
		if k.Party == nil {
			continue
		}
		if n.parties[e], err = he.UnmarshalParty(params, k.Party); err != nil {
			return nil, fmt.Errorf("node: key share of epoch %d in %s: %w", e, cfg.DataDir, err)
		}
	}
	n.c, err = client.New(cfg.Coordinators, identity.ClientConfig(cfg.Cert, cfg.CA))
	if err != nil {
		return nil, err
	}
	return n, nil
}

// Run polls for work until ctx ends, reconnecting after failures.
func (n *Node) Run(ctx context.Context) error {
	defer n.c.Close()
	var version uint64
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		var resp *pb.PollResponse
		err := n.call(ctx, pollWait+controlTimeout, func(ctx context.Context, conn client.Conn) (err error) {
			resp, err = conn.Hospital.Poll(ctx, &pb.PollRequest{AfterVersion: version, WaitMs: uint32(pollWait.Milliseconds())})
			return err
		})
		if err == nil {
			err = n.handle(ctx, resp)
		}
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			n.log.Warn("work failed, retrying", "err", err)
			n.cfg.Metrics.CoordinatorError()
			version = 0 // poll again at once after the pause
			sleep(ctx, backoff)
			backoff = min(backoff*2, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
		version = resp.Version
	}
	return ctx.Err()
}

func sleep(ctx context.Context, d time.Duration) {
	select {
	case <-ctx.Done():
	case <-time.After(d):
	}
}

// call runs one RPC against the leader with a deadline.
// controlTimeout bounds one small call (a decision, an approval, a poll
// beyond its wait): a leader that stops answering mid-call (partitioned,
// paused) is given up on after it, the client turns to the next replica,
// and the node is back in time for the round, rather than waiting for
// gRPC's keepalive (10 s at least) to notice the dead connection.
const controlTimeout = 5 * time.Second

// pollWait is how long a poll waits on the leader for a change.
const pollWait = 2 * time.Second

func (n *Node) call(ctx context.Context, timeout time.Duration, fn func(context.Context, client.Conn) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return n.c.Do(ctx, fn)
}

func (n *Node) handle(ctx context.Context, resp *pb.PollResponse) error {
	if resp.Revocations != n.revocationsTaken || resp.RevocationListIssuedMs != n.listTaken {
		taken, err := n.refreshRevocations(ctx)
		if err != nil {
			return err
		}
		n.revocationsTaken = resp.Revocations
		if taken {
			n.listTaken = resp.RevocationListIssuedMs
		}
	}
	if err := n.revocationsFresh(time.Now()); err != nil {
		return err
	}
	if t := resp.GetCeremony(); t != nil {
		if err := n.ceremony(ctx, t.Step); err != nil {
			return fmt.Errorf("key ceremony step %s: %w", t.Step, err)
		}
	}
	if err := n.retire(resp.RetiredBelow); err != nil {
		return err
	}
	for _, o := range resp.JobOffers {
		if err := n.safely(func() error { return n.decide(ctx, o) }); err != nil {
			return fmt.Errorf("job %s: %w", o.JobId, err)
		}
	}
	if err := n.settle(resp); err != nil {
		return err
	}
	for _, k := range resp.Kept {
		if k.Resend {
			if err := n.resend(ctx, k); err != nil {
				return fmt.Errorf("resending the update of job %s round %d: %w", k.JobId, k.Round, err)
			}
		}
	}
	for _, m := range resp.Models {
		// A version this node cannot check now is checked when it trains
		// from it; the rest of the poll's work goes on.
		if err := n.safely(func() error { return n.follow(ctx, m) }); err != nil {
			n.log.Warn("model version not checked", "job_id", m.JobId, "version", m.Version, "err", err)
		}
	}
	if err := n.pruneChains(resp); err != nil {
		n.log.Warn("model chains of finished jobs not pruned", "err", err)
	}
	for _, t := range resp.Train {
		if err := n.safely(func() error { return n.train(ctx, t) }); err != nil {
			return fmt.Errorf("job %s round %d: %w", t.JobId, t.Round, err)
		}
	}
	for _, t := range resp.Approve {
		if err := n.safely(func() error { return n.approve(ctx, t) }); err != nil {
			return fmt.Errorf("approving the contributors of job %s round %d: %w", t.JobId, t.Round, err)
		}
	}
	for _, t := range resp.Decrypt {
		if err := n.safely(func() error { return n.decrypt(ctx, t) }); err != nil {
			return fmt.Errorf("decrypting job %s round %d: %w", t.JobId, t.Round, err)
		}
	}
	return nil
}

// safely runs one piece of work on a job and turns a panic into an error:
// an input this node cannot handle (which validation should have caught)
// fails that job's work, and never crashes the node into a restart loop.
func (n *Node) safely(work func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			n.log.Error("job work failed on an input this node cannot handle", "panic", fmt.Sprint(p))
			err = fmt.Errorf("refusing a job this node cannot handle: %v", p)
		}
	}()
	return work()
}

// ---- key ceremony ----

func (n *Node) region(ctx context.Context) (*pb.Region, uint32, error) {
	var r *pb.Region
	err := n.call(ctx, controlTimeout, func(ctx context.Context, conn client.Conn) error {
		resp, err := conn.Hospital.GetRegion(ctx, &pb.GetRegionRequest{})
		r = resp.GetRegion()
		return err
	})
	if err != nil {
		return nil, 0, err
	}
	i := slices.Index(r.Hospitals, n.cfg.ID)
	if i < 0 {
		return nil, 0, fmt.Errorf("%s is not a hospital of the region", n.cfg.ID)
	}
	params, err := he.ParamsByName(r.Params)
	if err != nil {
		return nil, 0, n.untrusted("region", err.Error())
	}
	if len(r.Hospitals) > params.MaxParties() {
		return nil, 0, n.untrusted("region", fmt.Sprintf("%d hospitals, parameters %s hold at most %d", len(r.Hospitals), params.Name(), params.MaxParties()))
	}
	if r.Threshold < 2 || int(r.Threshold) > len(r.Hospitals) {
		return nil, 0, n.untrusted("region", fmt.Sprintf("threshold %d of %d hospitals (a threshold below 2 lets one hospital decrypt alone)", r.Threshold, len(r.Hospitals)))
	}
	if r.Committee != 0 && (r.Committee < r.Threshold || int64(r.Committee) > int64(len(r.Hospitals))) {
		return nil, 0, n.untrusted("region", fmt.Sprintf("a committee of %d with threshold %d of %d hospitals", r.Committee, r.Threshold, len(r.Hospitals)))
	}
	// Only a region an operator of the region CA signed, whatever the
	// coordinator says; then only the one pinned.
	d := regionDigest(r)
	op, err := identity.VerifyRoleStatement(n.cfg.CA, r.GenesisCertificate, identity.RoleOperator, time.Now(), r.GenesisSignature, identity.StatementGenesis, d)
	if err != nil {
		return nil, 0, n.untrusted("region", "not signed by an operator of the region CA: "+err.Error())
	}
	if err := n.pinRegion(r, op, params); err != nil {
		return nil, 0, err
	}
	if r.Params != n.params().Name() { // a region pinned before its parameter set was
		return nil, 0, fmt.Errorf("region uses parameters %q, this node %q", r.Params, n.params().Name())
	}
	n.mu.Lock()
	newest, seen := n.newestEpoch()
	n.mu.Unlock()
	if seen && r.Epoch < newest {
		return nil, 0, n.untrusted("region", fmt.Sprintf("its ceremony is of key epoch %d, this node holds epoch %d already (an epoch's ceremony never runs twice)", r.Epoch, newest))
	}
	return r, uint32(i + 1), nil
}

// newestEpoch is the newest key epoch this node took part in; callers
// hold n.mu.
func (n *Node) newestEpoch() (uint32, bool) {
	var newest uint32
	for e := range n.state.Epochs {
		newest = max(newest, e)
	}
	return newest, len(n.state.Epochs) > 0
}

// epoch returns this node's record of key epoch e, made on first use;
// callers hold n.mu.
func (n *Node) epoch(e uint32) *epochKeys {
	k := n.state.Epochs[e]
	if k == nil {
		k = &epochKeys{}
		n.state.Epochs[e] = k
	}
	return k
}

// liveEpoch returns this node's record of key epoch e for a step of its
// ceremony, refusing an epoch it retired (its ceremony never runs twice);
// callers hold n.mu.
func (n *Node) liveEpoch(e uint32) (*epochKeys, error) {
	k := n.epoch(e)
	if k.Erased {
		return nil, n.untrusted("a ceremony", fmt.Sprintf("key epoch %d was retired here", e))
	}
	return k, nil
}

// readyParty returns this node's threshold key of epoch e.
func (n *Node) readyParty(e uint32) (*he.Party, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if k := n.state.Epochs[e]; k != nil && k.Erased {
		return nil, n.untrusted(fmt.Sprintf("a task of key epoch %d", e), "this node erased that epoch's keys when it was retired")
	}
	p := n.parties[e]
	if p == nil || !p.Ready() {
		return nil, fmt.Errorf("this node has not completed the key ceremony of epoch %d", e)
	}
	return p, nil
}

// retire erases the keys of every key epoch below below, except the
// newest one this node holds a ready key of (so a coordinator that says
// too much can only cost a decryption, never this node's current key).
// The HPKE key the epoch's Shamir shares were sealed to goes too: with it,
// the sealed shares the coordinator keeps would open again.
func (n *Node) retire(below uint32) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	var current uint32
	have := false
	for e, p := range n.parties {
		if p.Ready() && (!have || e > current) {
			current, have = e, true
		}
	}
	var erased []uint32
	for e, k := range n.state.Epochs {
		// A key not ready below the current one is of a ceremony the
		// region abandoned (or this node never finished): erased too.
		if e >= below || (have && e >= current) || k.Erased || (!have && n.parties[e] != nil && !n.parties[e].Ready()) {
			continue
		}
		// The members stay: they are public, and a model made in the
		// epoch is checked against them (checkEvidence).
		*k = epochKeys{Decrypted: k.Decrypted, Erased: true, Members: k.Members}
		delete(n.parties, e)
		erased = append(erased, e)
	}
	if len(erased) == 0 {
		return nil
	}
	if err := n.state.save(n.cfg.DataDir); err != nil {
		return err
	}
	for _, e := range erased {
		if err := removeKeptSealed(n.cfg.DataDir, e); err != nil {
			return err
		}
		n.log.Info("key epoch retired: its Shamir shares and HPKE key erased", "epoch", e)
	}
	return nil
}

// untrusted logs why the node refuses what the coordinator served and
// returns the error that says so.
func (n *Node) untrusted(what, reason string) error {
	n.log.Warn("refusing what the coordinator served", "what", what, "reason", reason)
	return fmt.Errorf("%w: %s: %s", ErrUntrusted, what, reason)
}

// pinnedRegionDigest is the digest of the region this node pinned (before
// any job): what its signed round statements are bound to. pinRegion
// replaces the slice, never writes into it.
func (n *Node) pinnedRegionDigest() []byte {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.state.RegionDigest
}

// pinRegion pins the region's digest on first sight (fsync'd before the
// node acts on it) and refuses any other region afterwards; op is the
// operator who signed it.
func (n *Node) pinRegion(r *pb.Region, op identity.Identity, params he.Params) error {
	d := regionDigest(r)
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state.RegionDigest != nil {
		if string(n.state.RegionDigest) != string(d) {
			return n.untrusted("region", fmt.Sprintf("digest %x differs from the pinned %x (hospitals, threshold, parameters or seed changed)", d[:8], n.state.RegionDigest[:min(8, len(n.state.RegionDigest))]))
		}
		if n.state.Threshold == 0 { // pinned before the threshold was kept
			n.state.Threshold = r.Threshold
			return n.state.save(n.cfg.DataDir)
		}
		return nil
	}
	n.state.RegionDigest, n.state.Threshold, n.state.RevocationMaxAgeS, n.state.Params = d, r.Threshold, r.RevocationMaxAgeS, r.Params
	if err := n.state.save(n.cfg.DataDir); err != nil {
		n.state.RegionDigest, n.state.Threshold, n.state.RevocationMaxAgeS, n.state.Params = nil, 0, 0, ""
		return err
	}
	n.heParams.Store(&params)
	n.log.Info("region pinned", "region_digest", fmt.Sprintf("%x", d[:8]), "hospitals", len(r.Hospitals), "threshold", r.Threshold,
		"revocation_max_age_s", r.RevocationMaxAgeS, "params", r.Params, "committee", identity.CommitteeSize(r.Committee, len(r.Hospitals)), "signed_by", op.String())
	return nil
}

// verifyStatement checks a ceremony statement of hospital i (0-based):
// the certificate the region relays for it must be the region CA's for
// exactly that hospital, and sig its signature over (kind, fields...).
func (n *Node) verifyStatement(r *pb.Region, i int, sig []byte, kind string, fields ...[]byte) error {
	if i < 0 || i >= len(r.Hospitals) || i >= len(r.Certificates) {
		return n.untrusted(kind, fmt.Sprintf("no certificate for hospital %d", i+1))
	}
	want := identity.Identity{Name: r.Hospitals[i], Role: identity.RoleHospital}
	return n.verify(kind+" of "+r.Hospitals[i], r.Certificates[i], want, sig, kind, fields...)
}

// verify checks a statement (identity.VerifyStatement) and that its
// signer's certificate is not revoked; what names it in a refusal.
func (n *Node) verify(what string, certDER []byte, want identity.Identity, sig []byte, kind string, fields ...[]byte) error {
	serial, err := n.verifier.Verify(certDER, want, time.Now(), sig, kind, fields...)
	if err != nil {
		return n.untrusted(what, err.Error())
	}
	return n.serialNotRevoked(what, serial)
}

func (n *Node) sign(kind string, fields ...[]byte) ([]byte, error) {
	return identity.SignStatement(n.cfg.Cert.PrivateKey, kind, fields...)
}

func regionDigest(r *pb.Region) []byte {
	d := identity.RegionDigest(r.Params, r.Hospitals, r.Threshold, r.Committee, r.Seed, r.RevocationMaxAgeS)
	return d[:]
}

// ceremonyDigest is what the statements of the region's current ceremony
// are bound to (identity.CeremonyDigest).
func ceremonyDigest(r *pb.Region) []byte {
	d := identity.CeremonyDigest([32]byte(regionDigest(r)), r.Epoch)
	return d[:]
}

// ceremonySeed is the seed of the region's current ceremony.
func ceremonySeed(r *pb.Region) []byte { return he.EpochSeed(r.Seed, r.Epoch) }

// membersDigest is what the sealed-share statements and the key-ready
// confirmation of the region's current ceremony are bound to
// (identity.MembersDigest).
func membersDigest(r *pb.Region, members []string) []byte {
	d := identity.MembersDigest([32]byte(ceremonyDigest(r)), r.Hospitals, members)
	return d[:]
}

// epochMembers are the members of a key epoch as this node pinned them.
type epochMembers struct {
	sorted  []string // what the ceremony statements are bound to
	points  []string // by Shamir point, the committee first (identity.EpochPoints)
	holders int      // the committee: points 1..holders hold the Shamir shares
	self    uint32   // this node's point, 0 if it sits the epoch out
}

func newEpochMembers(r *pb.Region, epoch uint32, sorted []string, self string) epochMembers {
	ceremony := identity.CeremonyDigest([32]byte(regionDigest(r)), epoch)
	m := epochMembers{sorted: sorted, points: identity.EpochPoints(ceremony, sorted, r.Committee), holders: identity.CommitteeSize(r.Committee, len(sorted))}
	m.self = uint32(slices.Index(m.points, self) + 1)
	return m
}

// holds reports whether this node is on the epoch's committee.
func (m epochMembers) holds() bool { return m.self != 0 && int(m.self) <= m.holders }

// members verifies the members of the region's current ceremony as the
// coordinator serves them, and pins them on first sight: every hospital
// for the genesis ceremony; for a re-key, at least min(N, t+1) distinct
// hospitals of the pinned region, each with an HPKE key it signed for this
// ceremony. It returns them with their Shamir points, this node's among
// them (0: this node sits the epoch out). Every later step of the
// ceremony, and every decryption in the epoch, uses the pinned list.
func (n *Node) members(r *pb.Region) (epochMembers, error) {
	m, err := n.pinMembers(r)
	if err != nil {
		return epochMembers{}, err
	}
	return newEpochMembers(r, r.Epoch, m, n.cfg.ID), nil
}

func (n *Node) pinMembers(r *pb.Region) ([]string, error) {
	m := r.Members
	minimum := min(len(r.Hospitals), int(r.Threshold)+1)
	switch {
	case len(m) == 0:
		return nil, fmt.Errorf("the members of key epoch %d are not fixed yet", r.Epoch)
	case r.Epoch == 0 && !slices.Equal(m, r.Hospitals):
		return nil, n.untrusted("ceremony members", "the genesis ceremony takes every hospital of the region")
	case len(m) < minimum:
		return nil, n.untrusted("ceremony members", fmt.Sprintf("%d members, a key epoch needs at least %d", len(m), minimum))
	case !slices.IsSorted(m) || len(slices.Compact(slices.Clone(m))) != len(m):
		return nil, n.untrusted("ceremony members", "not sorted and distinct")
	}
	if len(r.HpkePublicKeys) != len(r.Hospitals) || len(r.HpkeSignatures) != len(r.Hospitals) {
		return nil, n.untrusted("HPKE keys", fmt.Sprintf("%d keys and %d signatures for %d hospitals", len(r.HpkePublicKeys), len(r.HpkeSignatures), len(r.Hospitals)))
	}
	rd := ceremonyDigest(r)
	for _, h := range m {
		i := slices.Index(r.Hospitals, h)
		if i < 0 {
			return nil, n.untrusted("ceremony members", fmt.Sprintf("%q is not a hospital of the region", h))
		}
		// A member enrolled in this very ceremony: its signed HPKE key is
		// what its Shamir shares are sealed to.
		if err := n.verifyStatement(r, i, r.HpkeSignatures[i], identity.StatementHPKEKey, rd, []byte(h), r.HpkePublicKeys[i]); err != nil {
			return nil, err
		}
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	k, err := n.liveEpoch(r.Epoch)
	if err != nil {
		return nil, err
	}
	if k.Members != nil && !slices.Equal(k.Members, m) {
		return nil, n.untrusted("ceremony members", fmt.Sprintf("key epoch %d's members were pinned as %v, now served as %v", r.Epoch, k.Members, m))
	}
	if k.Members == nil {
		k.Members = slices.Clone(m)
		if err := n.state.save(n.cfg.DataDir); err != nil {
			k.Members = nil
			return nil, err
		}
		n.log.Info("key epoch members pinned", "epoch", r.Epoch, "members", len(m), "hospitals", len(r.Hospitals),
			"member", slices.Contains(m, n.cfg.ID))
	}
	return k.Members, nil
}

// epochMembersOf are the pinned members of key epoch e (every hospital
// of the pinned region r for an epoch pinned before re-keys could leave
// hospitals out).
func (n *Node) epochMembersOf(e uint32, r *pb.Region) epochMembers {
	n.mu.Lock()
	members := r.Hospitals
	if k := n.state.Epochs[e]; k != nil && k.Members != nil {
		members = k.Members
	}
	n.mu.Unlock()
	return newEpochMembers(r, e, members, n.cfg.ID)
}

// memberPoints are the Shamir points of the hospitals names among m.
func (n *Node) memberPoints(m epochMembers, what string, names []string) ([]uint32, error) {
	out := make([]uint32, len(names))
	for i, h := range names {
		p := slices.Index(m.points, h)
		if p < 0 {
			return nil, n.untrusted("a decryption manifest", fmt.Sprintf("%s %q is not a member of the round's key epoch", what, h))
		}
		out[i] = uint32(p + 1)
	}
	return out, nil
}

// decryptorPoints are memberPoints for the decryptors of a round, each of
// which must hold shares: on the committee this node drew itself.
func (n *Node) decryptorPoints(m epochMembers, epoch uint32, names []string) ([]uint32, error) {
	points, err := n.memberPoints(m, "decryptor", names)
	if err != nil {
		return nil, err
	}
	for i, p := range points {
		if int(p) > m.holders {
			return nil, n.untrusted("a decryption manifest", fmt.Sprintf("decryptor %q is not on the committee of key epoch %d", names[i], epoch))
		}
	}
	return points, nil
}

func (n *Node) ceremony(ctx context.Context, step pb.CeremonyStep) error {
	switch step {
	case pb.CeremonyStep_CEREMONY_STEP_ENROLL:
		return n.enroll(ctx)
	case pb.CeremonyStep_CEREMONY_STEP_SEAL_SHARES:
		return n.sealShares(ctx)
	case pb.CeremonyStep_CEREMONY_STEP_OPEN_SHARES:
		return n.openShares(ctx)
	}
	return nil
}

func (n *Node) enroll(ctx context.Context) error {
	r, _, err := n.region(ctx)
	if err != nil {
		return err
	}
	n.mu.Lock()
	k, err := n.liveEpoch(r.Epoch)
	if err != nil {
		n.mu.Unlock()
		return err
	}
	if k.HPKEPrivate == nil {
		// The key `regionfl node init` made serves the genesis ceremony;
		// every later epoch gets a fresh one, erased with the epoch.
		newKey := he.NewHPKEKey
		if n.cfg.HPKEKeyFile != "" && r.Epoch == 0 {
			newKey = func() ([]byte, []byte, error) { return LoadHPKEKey(n.cfg.HPKEKeyFile) }
		}
		priv, pub, err := newKey()
		if err != nil {
			n.mu.Unlock()
			return err
		}
		k.HPKEPrivate, k.HPKEPublic = priv, pub
		if err := n.state.save(n.cfg.DataDir); err != nil {
			k.HPKEPrivate, k.HPKEPublic = nil, nil
			n.mu.Unlock()
			return err
		}
	}
	pub := k.HPKEPublic
	n.mu.Unlock()
	sig, err := n.sign(identity.StatementHPKEKey, ceremonyDigest(r), []byte(n.cfg.ID), pub)
	if err != nil {
		return err
	}
	n.log.Info("enrolling", "epoch", r.Epoch, "hpke_key_size", len(pub))
	return n.call(ctx, controlTimeout, func(ctx context.Context, conn client.Conn) error {
		_, err := conn.Hospital.Enroll(ctx, &pb.EnrollRequest{HpkePublicKey: pub, Signature: sig})
		return err
	})
}

// party returns this node's key share of the region's current key epoch,
// made (and saved before anything derived from it leaves the node) on
// first use.
func (n *Node) party(r *pb.Region, m epochMembers) (*he.Party, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, err := n.liveEpoch(r.Epoch); err != nil {
		return nil, err
	}
	if n.parties[r.Epoch] == nil {
		p, err := he.NewCommitteeParty(n.params(), m.self, len(m.points), m.holders, int(r.Threshold), ceremonySeed(r))
		if err != nil {
			return nil, err
		}
		if err := n.saveParty(r.Epoch, p); err != nil {
			return nil, err
		}
	}
	return n.parties[r.Epoch], nil
}

// saveParty persists the secret key share of key epoch e before anything
// derived from it leaves the node. Callers hold n.mu.
func (n *Node) saveParty(e uint32, p *he.Party) error {
	b, err := p.MarshalBinary()
	if err != nil {
		return err
	}
	k := n.epoch(e)
	prev := k.Party
	k.Party = b
	if err := n.state.save(n.cfg.DataDir); err != nil {
		k.Party = prev
		return err
	}
	n.parties[e] = p
	return nil
}

func (n *Node) sealShares(ctx context.Context) error {
	r, _, err := n.region(ctx)
	if err != nil {
		return err
	}
	// Seal only to HPKE keys their hospitals signed (members verifies
	// them): a relay that swapped one for its own could open that share.
	m, err := n.members(r)
	if err != nil {
		return err
	}
	if m.self == 0 {
		return nil // this node sits the epoch out
	}
	rd := membersDigest(r, m.sorted)
	req, err := loadKeptSealed(n.cfg.DataDir, r.Epoch, rd)
	if err != nil {
		return err
	}
	if req == nil {
		if req, err = n.seal(r, m, rd); err != nil {
			return err
		}
	}
	n.log.Info("sending sealed Shamir shares", "epoch", r.Epoch, "count", len(req.Shares))
	return n.call(ctx, 30*time.Second, func(ctx context.Context, conn client.Conn) error {
		_, err := conn.Hospital.SubmitSealedShares(ctx, req)
		if status.Code(err) == codes.AlreadyExists {
			// The log holds other shares of ours: this node lost the
			// ones it kept, and a member can open only those.
			n.log.Error("the coordinator records other sealed shares of this node", "epoch", r.Epoch, "error", err)
		}
		return err
	})
}

// seal makes this node's sealed shares of the ceremony of region r (of
// members m, whose digest is rd) and keeps them before they leave.
func (n *Node) seal(r *pb.Region, m epochMembers, rd []byte) (*pb.SubmitSealedSharesRequest, error) {
	party, err := n.party(r, m)
	if err != nil {
		return nil, err
	}
	recipients := map[uint32][]byte{}
	for k, h := range m.points[:m.holders] {
		recipients[uint32(k+1)] = r.HpkePublicKeys[slices.Index(r.Hospitals, h)]
	}
	sealed, err := party.SealShares(recipients, ceremonySeed(r))
	if err != nil {
		return nil, err
	}
	if !m.holds() {
		// Off the committee, the party's part ends with its sealed
		// shares: it keeps that across a restart.
		n.mu.Lock()
		err := n.saveParty(r.Epoch, party)
		n.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
	req := &pb.SubmitSealedSharesRequest{}
	for _, s := range sealed {
		b, err := s.MarshalBinary()
		if err != nil {
			return nil, err
		}
		to := m.points[s.To-1]
		d := sha256.Sum256(b)
		sig, err := n.sign(identity.StatementSealedShare, rd, []byte(n.cfg.ID), []byte(to), d[:])
		if err != nil {
			return nil, err
		}
		req.Shares = append(req.Shares, &pb.SealedShare{To: to, Sealed: b, Signature: sig})
	}
	if err := saveKeptSealed(n.cfg.DataDir, r.Epoch, rd, req); err != nil {
		return nil, err
	}
	return req, nil
}

func (n *Node) openShares(ctx context.Context) error {
	r, _, err := n.region(ctx)
	if err != nil {
		return err
	}
	m, err := n.members(r)
	if err != nil {
		return err
	}
	if m.self == 0 {
		return nil // this node sits the epoch out
	}
	n.mu.Lock()
	party, k := n.parties[r.Epoch], n.epoch(r.Epoch)
	hpkePriv := k.HPKEPrivate
	n.mu.Unlock()
	if party == nil || hpkePriv == nil {
		return fmt.Errorf("no key share of epoch %d: the earlier ceremony steps did not run on this node", r.Epoch)
	}
	if !party.Ready() {
		if !m.holds() {
			return fmt.Errorf("key share of epoch %d: its sealed shares were not made on this node", r.Epoch)
		}
		shares, err := n.sealedToMe(ctx, r, m)
		if err != nil {
			return err
		}
		n.mu.Lock()
		err = party.OpenShares(hpkePriv, shares, ceremonySeed(r))
		if err == nil {
			err = n.saveParty(r.Epoch, party)
		}
		n.mu.Unlock()
		if err != nil {
			return err
		}
	}
	d := membersDigest(r, m.sorted)
	n.log.Info("threshold key share ready", "epoch", r.Epoch, "point", m.self, "committee", m.holds())
	return n.call(ctx, controlTimeout, func(ctx context.Context, conn client.Conn) error {
		_, err := conn.Hospital.ConfirmKeyReady(ctx, &pb.ConfirmKeyReadyRequest{MembersDigest: d})
		return err
	})
}

// sealedToMe fetches the Shamir shares sealed to this committee member,
// one from every member, a page at a time, and checks each sender's
// signature.
func (n *Node) sealedToMe(ctx context.Context, r *pb.Region, m epochMembers) ([]*he.SealedShare, error) {
	var raw, sigs [][]byte
	for len(raw) < len(m.points) {
		var page *pb.GetSealedSharesResponse
		err := n.call(ctx, 30*time.Second, func(ctx context.Context, conn client.Conn) error {
			var err error
			page, err = conn.Hospital.GetSealedShares(ctx, &pb.GetSealedSharesRequest{Offset: uint32(len(raw))})
			return err
		})
		if err != nil {
			return nil, err
		}
		if int64(page.Members) != int64(len(m.points)) || len(page.Shares) == 0 || len(page.Shares) > len(m.points)-len(raw) || len(page.Signatures) != len(page.Shares) {
			return nil, n.untrusted("sealed shares", fmt.Sprintf("a page of %d shares and %d signatures after %d, of %d members; %d pinned", len(page.Shares), len(page.Signatures), len(raw), page.Members, len(m.points)))
		}
		raw, sigs = append(raw, page.Shares...), append(sigs, page.Signatures...)
	}
	rd := membersDigest(r, m.sorted)
	shares := make([]*he.SealedShare, len(raw))
	for i, b := range raw {
		var err error
		if shares[i], err = he.UnmarshalSealedShare(b); err != nil {
			return nil, fmt.Errorf("sealed share %d: %w", i+1, err)
		}
		from := int(shares[i].From) - 1
		if from < 0 || from >= len(m.points) {
			return nil, n.untrusted("sealed shares", fmt.Sprintf("share %d claims sender %d", i+1, shares[i].From))
		}
		sender := m.points[from]
		d := sha256.Sum256(b)
		if err := n.verifyStatement(r, slices.Index(r.Hospitals, sender), sigs[i], identity.StatementSealedShare, rd, []byte(sender), []byte(n.cfg.ID), d[:]); err != nil {
			return nil, err
		}
	}
	return shares, nil
}

// ---- jobs ----

// params is the parameter set of the pinned region.
func (n *Node) params() he.Params { return *n.heParams.Load() }

// check says why this site cannot run a job, or "" if it can.
func (n *Node) check(jobID string, spec *pb.JobSpec) string {
	if err := jobspec.ValidateOffered(spec); err != nil {
		return err.Error()
	}
	if reason := n.checkPolicy(spec, jobID); reason != "" {
		return reason
	}
	m := jobspec.FromProto(spec.Model)
	features := len(n.cfg.Data.Train.Features)
	switch {
	case m.Inputs != features:
		return fmt.Sprintf("model expects %d inputs, this site has %d features", m.Inputs, features)
	case len(spec.FeatureMean) != 0 && len(spec.FeatureMean) != features,
		len(spec.FeatureStd) != len(spec.FeatureMean):
		return fmt.Sprintf("reference scaling has %d means and %d deviations for %d features", len(spec.FeatureMean), len(spec.FeatureStd), features)
	case spec.Dataset != "" && spec.Dataset != n.cfg.Data.Name && n.cfg.Data.Name != "":
		return fmt.Sprintf("job wants dataset %q, this site serves %q", spec.Dataset, n.cfg.Data.Name)
	case n.cfg.Data.Dropped.Rows > 0 && spec.Missing != jobspec.MissingDrop:
		// The count only: where the rows are stays in the node's log.
		return fmt.Sprintf("job keeps every row (missing: %s) and this site dropped %d rows with missing or unusable cells", spec.GetMissing(), n.cfg.Data.Dropped.Rows)
	case jobspec.NeedsScaling(spec) && n.statsGivenElsewhere(jobID, m.Hash()):
		return "this site's statistics were already contributed to another job's region scaling (once per dataset); submit on the same dataset to reuse the committed scaling, or use scaling: site or reference"
	}
	return ""
}

// checkPolicy applies the site policy to a job; jobID, when set, leaves
// that job's own spending out of the ε already spent elsewhere.
// Without a policy file the defaults apply (policy.Policy's zero value).
func (n *Node) checkPolicy(spec *pb.JobSpec, jobID string) string {
	var p policy.Policy
	if n.cfg.Policy != nil {
		var err error
		if p, err = n.cfg.Policy.Current(); err != nil {
			n.log.Warn("site policy file not reloaded", "err", err)
		}
	}
	n.mu.Lock()
	t := n.state.Threshold
	n.mu.Unlock()
	if t == 0 {
		return "the region is not pinned yet: this node has not seen its genesis"
	}
	return p.Check(spec, n.epsilonSpent(jobID), t)
}

// sharesSiteMetrics reports whether the site policy lets the node send its
// own figures in the clear (off without a policy).
func (n *Node) sharesSiteMetrics() bool {
	if n.cfg.Policy == nil {
		return false
	}
	p, _ := n.cfg.Policy.Current()
	return p.ShareSiteMetrics
}

// epsilonSpent is the ε this site has spent on every DP job but skip.
func (n *Node) epsilonSpent(skip string) float64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	var total float64
	for job, e := range n.state.Ledger {
		if job != skip {
			total += privacy.Accountant{NoiseMultiplier: e.NoiseMultiplier, Delta: e.Delta}.Epsilon(e.Rounds)
		}
	}
	return total
}

// spendRound records one more noised round for a job on disk before the
// update leaves, or refuses when the site's budget would be exceeded.
func (n *Node) spendRound(t *pb.TrainTask) error {
	if t.Spec.DpNoiseMultiplier == 0 {
		return nil
	}
	elsewhere := n.epsilonSpent(t.JobId)
	var pol policy.Policy
	if n.cfg.Policy != nil {
		pol, _ = n.cfg.Policy.Current()
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	e := n.state.Ledger[t.JobId]
	if ok, eps := pol.Within(t.Spec, elsewhere, e.Rounds+1); !ok {
		return fmt.Errorf("%w: this round would bring ε to %.3f on top of %.3f spent elsewhere (budget %.3f)",
			ErrBudgetExhausted, eps, elsewhere, pol.EpsilonBudget)
	}
	e.NoiseMultiplier, e.Delta, e.Rounds = t.Spec.DpNoiseMultiplier, t.Spec.DpDelta, e.Rounds+1
	n.state.Ledger[t.JobId] = e
	return n.state.save(n.cfg.DataDir)
}

func (n *Node) decide(ctx context.Context, o *pb.JobOffer) error {
	by, reason := n.vet(o)
	if reason == "" {
		reason = n.check(o.JobId, o.Spec)
		// Pinned, accepted or not: a refusing site may still be asked to
		// decrypt, and holds the decryption to the job as signed.
		d := refused
		if reason == "" {
			d = accepted
		}
		if err := n.pinJob(o, by, d); err != nil {
			return err
		}
	}
	accept := reason == ""
	n.cfg.Metrics.JobDecided(accept)
	n.log.Info("job decision", "job_id", o.JobId, "accept", accept, "reason", reason, "purpose", o.Spec.Purpose)
	return n.call(ctx, controlTimeout, func(ctx context.Context, conn client.Conn) error {
		_, err := conn.Hospital.DecideJob(ctx, &pb.DecideJobRequest{JobId: o.JobId, Accept: accept, Reason: reason})
		return err
	})
}

// Scale standardizes a table as the job says: with its reference scaling
// when it has one, else with the site's own training statistics.
func Scale(spec *pb.JobSpec, train, t dataset.Table) dataset.Table {
	if len(spec.FeatureMean) > 0 {
		return t.Standardize(spec.FeatureMean, spec.FeatureStd)
	}
	mean, std := train.Stats().MeanStd()
	return t.Standardize(mean, std)
}

func roundKey(job string, round uint32) string { return fmt.Sprintf("%s/%d", job, round) }

func (n *Node) train(ctx context.Context, t *pb.TrainTask) error {
	if k := n.keptFor(t.JobId, t.Round); k != nil {
		// The update of this round was made before (its answer was lost,
		// or the node restarted): send the same one, never a second.
		return n.sendKept(ctx, k)
	}
	if err := n.vetTask(t.JobId, t.Job, t.Spec, true); err != nil {
		return err
	}
	if reason := n.check(t.JobId, t.Spec); reason != "" {
		return errors.New(reason)
	}
	if t.Round == jobspec.StatsRound {
		return n.sendStats(ctx, t)
	}
	var model *pb.Model
	err := n.call(ctx, 30*time.Second, func(ctx context.Context, conn client.Conn) error {
		resp, err := conn.Hospital.FetchModel(ctx, &pb.FetchModelRequest{JobId: t.JobId, Version: t.ModelVersion},
			client.ModelMessage(jobspec.FromProto(t.Spec.GetModel()).NumParams()))
		model = resp.GetModel()
		return err
	})
	if err != nil {
		return err
	}
	spec := jobspec.FromProto(t.Spec.Model)
	if spec.Hash() != t.ModelHash || model.ModelHash != t.ModelHash || model.Version != t.ModelVersion {
		return fmt.Errorf("model %s v%d does not match the round (hash %s v%d)", model.ModelHash, model.Version, t.ModelHash, t.ModelVersion)
	}
	if len(model.Params) != spec.NumParams() {
		return fmt.Errorf("model has %d parameters, the spec %d", len(model.Params), spec.NumParams())
	}
	if t.ModelVersion == 0 && jobspec.ModelDigest(model.Params) != jobspec.ModelDigest(spec.Init(int64(t.Spec.Seed))) {
		// Version 0 is a function of the signed spec alone: a site makes
		// it itself and trains from nothing else. A model chosen by the
		// coordinator (trap weights that make an update, or the metric
		// sums, give rows away) never starts a job here.
		return n.untrusted("initial model", fmt.Sprintf("job %s's version 0 is not the model its architecture and seed %d make", t.JobId, t.Spec.Seed))
	}
	verified, err := n.onChain(ctx, t, model.Params)
	if err != nil {
		return err
	}
	data := Scale(t.Spec, n.cfg.Data.Train, n.cfg.Data.Train)
	cfg := jobspec.TrainConfig(t.Spec, n.cfg.ID, t.Round)
	// The update's binding covers the exact parameters this node was
	// served: a model that differs for one hospital gives its update
	// another mask a, and a sum with it decrypts to nothing.
	modelDigest := jobspec.ModelDigest(model.Params)
	binding := taskBinding(t, modelDigest)
	if err := n.recordTraining(t, binding, model.Params, data, cfg); err != nil {
		return err
	}
	start := time.Now()
	local, err := models.Train(spec, model.Params, data.X, data.Y, cfg)
	if err != nil {
		return err
	}
	// The update is the sample-weighted change (jobspec.SampleWeight).
	rows := data.Len()
	w := jobspec.SampleWeight(rows, float64(t.Spec.SampleScale))
	update := make([]float64, len(local))
	for i := range local {
		update[i] = (local[i] - model.Params[i]) * w
		if math.IsNaN(update[i]) || math.IsInf(update[i], 0) {
			return errors.New("local training diverged (NaN or Inf in the update); lower learning_rate")
		}
	}
	trainDur := time.Since(start)
	if err := n.spendRound(t); err != nil {
		return err
	}
	// Clip so one site's influence is bounded by clip_norm; with DP, add
	// this site's share of the aggregate's Gaussian noise.
	privacy.Clip(update, t.Spec.ClipNorm)
	if std := jobspec.NoiseShareStd(t.Spec); std > 0 {
		if err := privacy.AddNoise(update, std); err != nil {
			return err
		}
	}
	// Measured only on a model this site verified (onChain), once per
	// model (releaseMetrics).
	released := false
	if verified {
		if released, err = n.releaseMetrics(t, binding, model.Params, n.metricRows(t.Spec)); err != nil {
			return err
		}
	}
	sums, site, err := n.metricSums(t.Spec, spec, model.Params, t.ModelVersion, released)
	if err != nil {
		return err
	}
	ct, err := n.encrypt(t, binding, append(update, sums...), uint64(rows))
	if err != nil {
		return err
	}
	n.log.Info("update trained", "job_id", t.JobId, "round", t.Round, "rows", rows, "train_ms", trainDur.Milliseconds())
	n.cfg.Metrics.RoundTrained(trainDur)
	return n.submit(ctx, t, modelDigest, ct, site)
}

// submit keeps a round's encrypted update on disk, then sends it.
func (n *Node) submit(ctx context.Context, t *pb.TrainTask, model [32]byte, ct *encrypted, site *pb.ClinicalMetrics) error {
	raw := ct.raw
	k := &keptUpdate{JobID: t.JobId, Round: t.Round, ModelVersion: t.ModelVersion, ModelHash: t.ModelHash, ModelDigest: jobspec.WireModelDigest(model), Digest: ct.digest[:], Size: uint64(len(raw)),
		SiteMetrics: site}
	n.mu.Lock()
	err := saveKept(n.cfg.DataDir, k, raw)
	if err == nil {
		n.kept[k.JobID] = k
	}
	n.mu.Unlock()
	if err != nil {
		return err
	}
	n.log.Info("update encrypted", "job_id", k.JobID, "round", k.Round, "size", k.Size, "digest", fmt.Sprintf("%x", k.Digest[:8]))
	return n.send(ctx, k, raw, false)
}

// keptFor returns the kept update of a job's round, or nil.
func (n *Node) keptFor(jobID string, round uint32) *keptUpdate {
	n.mu.Lock()
	defer n.mu.Unlock()
	if k := n.kept[jobID]; k != nil && k.Round == round {
		return k
	}
	return nil
}

// sendKept sends a kept update again.
func (n *Node) sendKept(ctx context.Context, k *keptUpdate) error {
	_, raw, err := readKept(keptPath(n.cfg.DataDir, k.JobID), true)
	if err != nil {
		return err
	}
	return n.send(ctx, k, raw, true)
}

func (n *Node) send(ctx context.Context, k *keptUpdate, raw []byte, again bool) error {
	rd := n.pinnedRegionDigest()
	model, ok := jobspec.ParseModelDigest(k.ModelDigest)
	if !ok {
		return fmt.Errorf("kept update of job %s round %d: model digest of %d bytes", k.JobID, k.Round, len(k.ModelDigest))
	}
	binding := jobspec.Binding(k.JobID, k.Round, k.ModelVersion, k.ModelHash, model)
	sig, err := n.sign(identity.StatementContribution, identity.ContributionFields(rd, binding[:], k.Digest, n.cfg.ID, k.Size)...)
	if err != nil {
		return err
	}
	err = n.call(ctx, 2*time.Minute, func(ctx context.Context, conn client.Conn) error {
		return sendUpdate(ctx, conn, &pb.UpdateHeader{
			JobId: k.JobID, Round: k.Round, ModelVersion: k.ModelVersion, ModelHash: k.ModelHash,
			Size: k.Size, Digest: k.Digest, SiteMetrics: k.SiteMetrics, Signature: sig,
		}, raw)
	})
	if status.Code(err) == codes.AlreadyExists {
		err = nil // counted before: a retry after a lost answer
	}
	if err != nil {
		return err
	}
	n.cfg.Metrics.UpdateSent(int(k.Size))
	n.log.Info("update sent", "job_id", k.JobID, "round", k.Round, "size", k.Size,
		"digest", fmt.Sprintf("%x", k.Digest[:8]), "again", again)
	return nil
}

// resend answers a leader that lacks an update it counted: the same bytes,
// by digest.
func (n *Node) resend(ctx context.Context, want *pb.KeptUpdate) error {
	k := n.keptFor(want.JobId, want.Round)
	if k == nil || string(k.Digest) != string(want.Digest) {
		// Lost with the data directory: the round closes without it.
		n.log.Warn("asked to resend an update this node does not hold", "job_id", want.JobId, "round", want.Round)
		return nil
	}
	return n.sendKept(ctx, k)
}

// settle drops the kept updates of rounds a poll no longer names: they
// closed or aborted, so nobody will ask for them again.
func (n *Node) settle(resp *pb.PollResponse) error {
	live := map[string]bool{}
	for _, t := range resp.Train {
		live[roundKey(t.JobId, t.Round)] = true
	}
	for _, k := range resp.Kept {
		live[roundKey(k.JobId, k.Round)] = true
	}
	// A contributor fingerprints its update when it approves the round.
	for _, a := range resp.Approve {
		live[roundKey(a.JobId, a.Round)] = true
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for job, k := range n.kept {
		if live[roundKey(job, k.Round)] {
			continue
		}
		if err := removeKept(n.cfg.DataDir, job); err != nil {
			return err
		}
		delete(n.kept, job)
	}
	return nil
}

func sendUpdate(ctx context.Context, conn client.Conn, hdr *pb.UpdateHeader, raw []byte) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := conn.Hospital.SubmitUpdate(ctx)
	if err != nil {
		return err
	}
	return sendChunked(stream, cancel, &pb.SubmitUpdateRequest{Msg: &pb.SubmitUpdateRequest_Header{Header: hdr}}, raw,
		func(b []byte) *pb.SubmitUpdateRequest {
			return &pb.SubmitUpdateRequest{Msg: &pb.SubmitUpdateRequest_Chunk{Chunk: b}}
		})
}

// answerWait bounds the wait for the server's answer once an upload's last
// byte is sent: a leader cut off right then is given up on after it, not
// when gRPC's keepalive notices (15 s and more, longer than a short
// round's deadline), and the node sends the same bytes again, to the new
// leader, in time for the round. Checking, folding and logging an
// upload takes the server well under it.
const answerWait = pollWait + controlTimeout

// sendChunked sends an upload on a client stream: its header, then raw in
// chunks of at most client.ChunkSize (as chunk wraps them), and waits up
// to answerWait for the server's answer, then cancels the stream.
func sendChunked[Req, Res any](stream grpc.ClientStreamingClient[Req, Res], cancel context.CancelFunc, header *Req, raw []byte, chunk func([]byte) *Req) error {
	if err := stream.Send(header); err != nil {
		return closeErr(stream, err)
	}
	for b := raw; len(b) > 0; {
		k := min(len(b), client.ChunkSize)
		if err := stream.Send(chunk(b[:k])); err != nil {
			return closeErr(stream, err)
		}
		b = b[k:]
	}
	var late atomic.Bool
	answer := time.AfterFunc(answerWait, func() { late.Store(true); cancel() })
	defer answer.Stop()
	_, err := stream.CloseAndRecv()
	if err != nil && late.Load() {
		return fmt.Errorf("no answer within %s of the upload's end: %w", answerWait, err)
	}
	return err
}

// closeErr turns a failed send on a client stream into the server's status
// (a send fails with io.EOF when the server has already answered).
func closeErr[Req, Res any](stream grpc.ClientStreamingClient[Req, Res], err error) error {
	if err == io.EOF {
		_, err = stream.CloseAndRecv()
	}
	return err
}

// ---- decryption ----

// metricSums evaluates the model this round trains from on the site's
// test rows: the site's share of the region's clinical figures, scaled for
// encryption (jobspec.MetricScale). Only their sum over sites is decrypted.
// The site's own figures are returned too when the job shares them.
// Unless released (see releaseMetrics), the sums are zeros.
func (n *Node) metricSums(job *pb.JobSpec, spec models.Spec, params []float64, version uint32, released bool) ([]float64, *pb.ClinicalMetrics, error) {
	test := n.metricRows(job)
	var sums []float64
	switch {
	case test.Len() == 0 || !released:
		// The sums are additive over sites: zeros leave this site out of
		// the region's figures of this model.
		sums = make([]float64, models.MetricSumsLen)
	default:
		p, err := models.Predict(spec, params, test.X)
		if err != nil {
			return nil, nil, err
		}
		if sums, err = models.MetricSums(p, test.Y, job.AlertThreshold); err != nil {
			return nil, nil, err
		}
	}
	var site *pb.ClinicalMetrics
	if m, err := models.MetricsFromSums(sums); err == nil && job.ShareSiteMetrics && n.sharesSiteMetrics() {
		site = jobspec.MetricsToProto(m, version)
	}
	scale := jobspec.MetricScale(job)
	for i := range sums {
		sums[i] /= scale
	}
	return sums, site, nil
}

// encrypt encrypts a round's vector under this hospital's own key, bound
// to the job, round and model version. Two different vectors under one
// binding would give their difference away (the a·s_i terms cancel), so
// the node records a digest of every vector it encrypted, by binding, on
// disk before the update exists, and refuses a second, different one,
// whatever the coordinator asks.
func (n *Node) encrypt(t *pb.TrainTask, binding [32]byte, v []float64, count uint64) (*encrypted, error) {
	party, err := n.readyParty(t.Epoch)
	if err != nil {
		return nil, err
	}
	if err := n.recordEncryption(binding, v, count); err != nil {
		return nil, err
	}
	shape := jobspec.VectorShape(t.Spec, t.Round)
	if len(v) != shape.Len {
		return nil, fmt.Errorf("a vector of %d values for a round that takes %d", len(v), shape.Len)
	}
	u, err := party.Encrypt(v, shape.Wide, count, jobspec.EncodingClip(t.Spec, t.Round), binding)
	if err != nil {
		return nil, err
	}
	// Encoded once: the digest comes with the bytes (he.Update), for this
	// node's approval of the round's contributor set.
	raw, err := u.MarshalBinary()
	if err != nil {
		return nil, err
	}
	e := &encrypted{raw: raw, digest: u.Digest()}
	key := hex.EncodeToString(binding[:])
	n.mu.Lock()
	defer n.mu.Unlock()
	rec := n.state.Encrypted[key]
	rec.Update = e.digest[:]
	n.state.Encrypted[key] = rec
	return e, n.state.save(n.cfg.DataDir)
}

// encrypted is an encrypted update as it is sent: its encoding and the
// SHA-256 of it.
type encrypted struct {
	raw    []byte
	digest [32]byte
}

// metricRows are the site's test rows a job's metrics are computed on.
func (n *Node) metricRows(job *pb.JobSpec) dataset.Table {
	test := Scale(job, n.cfg.Data.Train, n.cfg.Data.Test)
	if max := jobspec.MaxMetricRows(job); test.Len() > max {
		test.X, test.Y = test.X[:max], test.Y[:max]
	}
	return test
}

// releaseMetrics reports whether this site's metric sums of the model
// params (on these test rows, at this alert threshold) may go out with t's
// update: once per model, ever, so that two aggregates with different
// contributor sets cannot be differenced into one site's figures. The
// first release is recorded on disk before the update exists.
func (n *Node) releaseMetrics(t *pb.TrainTask, binding [32]byte, params []float64, test dataset.Table) (bool, error) {
	h := newContentHash()
	h.text(t.ModelHash)
	h.floats(params)
	h.floats([]float64{t.Spec.AlertThreshold})
	d := test.Digest()
	h.Write(d[:])
	owned, err := n.claim(n.state.MetricsReleased, h.hex(), binding)
	if err == nil && !owned {
		n.log.Info("metric sums of this model already released; this update carries none", "job_id", t.JobId, "round", t.Round)
	}
	return owned, err
}

// recordTraining notes that this site trains the given model on the given
// (scaled) rows with cfg for t's binding, or refuses if it already did so
// for another binding: "once" is keyed on what the update is made of, not
// on labels the coordinator picks, so a second job on the same model and
// data gets no second update (overlapping sums of nearly the same updates
// would let a leader solve for each one).
func (n *Node) recordTraining(t *pb.TrainTask, binding [32]byte, params []float64, data dataset.Table, cfg models.TrainConfig) error {
	h := newContentHash()
	h.text(t.ModelHash)
	h.floats(params)
	d := data.Digest()
	h.Write(d[:])
	h.floats([]float64{cfg.LR, cfg.ProxMu, t.Spec.ClipNorm, jobspec.NoiseShareStd(t.Spec)})
	for _, v := range []uint64{uint64(cfg.Steps), uint64(cfg.BatchSize), uint64(cfg.Seed), t.Spec.SampleScale} {
		h.u64(v)
	}
	h.text(cfg.Optimizer)
	owned, err := n.claim(n.state.Trained, h.hex(), binding)
	if err == nil && !owned {
		return n.untrusted("a second update of the same training", "this site already trained this exact model on these rows with this configuration for another job or round; it sends one update per content")
	}
	return err
}

// claim makes binding the one owner of key in record, one of the node's
// once-per-content records in its state file (saved before it returns),
// and reports whether binding owns it: the key was free or already
// binding's. Another binding's key stays as it is.
func (n *Node) claim(record map[string]string, key string, binding [32]byte) (bool, error) {
	b := hex.EncodeToString(binding[:])
	n.mu.Lock()
	defer n.mu.Unlock()
	if prev, ok := record[key]; ok {
		return prev == b, nil
	}
	record[key] = b
	return true, n.state.save(n.cfg.DataDir)
}

// taskBinding is the binding of the update a train task asks for, trained
// from the model of digest model (zero for the statistics round).
func taskBinding(t *pb.TrainTask, model [32]byte) [32]byte {
	return jobspec.Binding(t.JobId, t.Round, t.ModelVersion, t.ModelHash, model)
}

// recordEncryption notes that v (with count) is encrypted under binding,
// or refuses if another vector already was.
func (n *Node) recordEncryption(binding [32]byte, v []float64, count uint64) error {
	h := newContentHash()
	h.floats(v)
	h.u64(count)
	digest := h.Sum(nil)
	key := hex.EncodeToString(binding[:])
	n.mu.Lock()
	defer n.mu.Unlock()
	if prev, ok := n.state.Encrypted[key]; ok {
		if !bytes.Equal(prev.Vector, digest) {
			return n.untrusted("a second update under one binding", "this node already encrypted another vector for this job, round and model; a second one would reveal the difference")
		}
		return nil
	}
	n.state.Encrypted[key] = encryption{Vector: digest}
	return n.state.save(n.cfg.DataDir)
}

// statsGivenElsewhere reports whether this site's statistics went to a
// statistics round other than job jobID's.
func (n *Node) statsGivenElsewhere(jobID, modelHash string) bool {
	b := jobspec.Binding(jobID, jobspec.StatsRound, 0, modelHash, [32]byte{})
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.state == nil {
		return false
	}
	prev, ok := n.state.StatsGiven[hex.EncodeToString(n.trainDigest[:])]
	return ok && prev != hex.EncodeToString(b[:])
}

// recordStats notes that this site's statistics go to the statistics
// round of t, or refuses if they went to another job's already: later
// jobs reuse the region's committed statistics (the coordinator fills
// them in) or scale otherwise.
func (n *Node) recordStats(t *pb.TrainTask) error {
	owned, err := n.claim(n.state.StatsGiven, hex.EncodeToString(n.trainDigest[:]), taskBinding(t, [32]byte{}))
	if err == nil && !owned {
		return n.untrusted("a second statistics round", "this site's statistics were already contributed to another job's region scaling; reuse its committed scaling (the coordinator does for jobs on the same dataset) or scale per site")
	}
	return err
}

// sendStats is the site's part of region-wide scaling: its per-feature Σx
// and Σx², encrypted; only the region's sums are ever decrypted.
func (n *Node) sendStats(ctx context.Context, t *pb.TrainTask) error {
	train := n.cfg.Data.Train
	v := train.Stats().Vector(float64(t.Spec.SampleScale), jobspec.StatsBound)
	var sq float64
	for _, x := range v {
		sq += x * x
	}
	if norm := math.Sqrt(sq); norm > jobspec.StatsBound {
		return fmt.Errorf("statistics vector norm %.3g exceeds the bound %g: raise the job's sample_scale", norm, jobspec.StatsBound)
	}
	if err := n.recordStats(t); err != nil {
		return err
	}
	ct, err := n.encrypt(t, taskBinding(t, [32]byte{}), v, uint64(train.Len()))
	if err != nil {
		return err
	}
	n.log.Info("statistics encrypted", "job_id", t.JobId, "rows", train.Len(), "features", len(train.Features))
	return n.submit(ctx, t, [32]byte{}, ct, nil)
}

// decrypt gives this hospital's decryption share of a round's aggregate,
// after checking what it can: the job is one its policy accepts (so at
// least K ≥ 2 contributors), the contributors are distinct hospitals of the
// pinned region, at least K of them, and the aggregate is bound to the
// job's model. One contributor set per binding, ever: a second request for
// the same binding is answered with the same share, only for the same
// contributors and decryptors. A coordinator naming contributors whose
// updates the aggregate does not hold gets noise (he.Party.DecryptionShare).
func (n *Node) decrypt(ctx context.Context, t *pb.DecryptTask) error {
	model, ok := jobspec.ParseModelDigest(t.ModelDigest)
	if !ok {
		return n.untrusted("a decryption manifest", fmt.Sprintf("a model digest of %d bytes", len(t.ModelDigest)))
	}
	binding := jobspec.Binding(t.JobId, t.Round, t.ModelVersion, t.ModelHash, model)
	key := hex.EncodeToString(binding[:])
	contributors := slices.Sorted(slices.Values(t.Contributors))
	n.mu.Lock()
	given, gave := n.state.SharesGiven[key]
	n.mu.Unlock()
	if gave {
		if string(given.AggregateDigest) != string(t.AggregateDigest) || !slices.Equal(given.Active, t.Active) || !slices.Equal(given.Contributors, contributors) {
			return n.untrusted("a second decryption", fmt.Sprintf("a share of round %d was already given for another aggregate, contributor set or decryptor set", t.Round))
		}
		return n.submitShare(ctx, t, binding, contributors, given.Share)
	}
	party, err := n.readyParty(t.Epoch)
	if err != nil {
		return err
	}
	// Check the manifest before touching the aggregate: the job as its
	// researcher signed it (K included), one this site's policy accepts,
	// enough distinct contributors, the model it names.
	if err := n.vetTask(t.JobId, t.Job, t.Spec, false); err != nil {
		return err
	}
	if err := jobspec.ValidateOffered(t.Spec); err != nil {
		return n.untrusted("the job of a decryption", err.Error())
	}
	// The pinned region (and its threshold) first: the site's minimum K
	// follows from it.
	r, _, err := n.region(ctx)
	if err != nil {
		return err
	}
	if reason := n.checkPolicy(t.Spec, t.JobId); reason != "" {
		return n.untrusted("the job of a decryption", reason)
	}
	spec := jobspec.FromProto(t.Spec.GetModel())
	k := int(t.Spec.GetMinHospitals())
	switch {
	case len(slices.Compact(slices.Clone(contributors))) != len(contributors):
		return n.untrusted("a decryption manifest", "a contributor is listed twice")
	case len(contributors) < k:
		return n.untrusted("a decryption manifest", fmt.Sprintf("%d contributors, the job needs %d", len(contributors), k))
	case spec.Hash() != t.ModelHash:
		return n.untrusted("a decryption manifest", "it names another model")
	case !slices.Contains(t.Active, n.cfg.ID):
		return errors.New("this hospital is not among the decryptors")
	}
	// Shamir points are places among the members of the round's key
	// epoch, as this node pinned them (identity.EpochPoints).
	members := n.epochMembersOf(t.Epoch, r)
	active, err := n.decryptorPoints(members, t.Epoch, t.Active)
	if err != nil {
		return err
	}
	contributorPoints, err := n.memberPoints(members, "contributor", contributors)
	if err != nil {
		return err
	}
	if err := n.checkApprovals(r, binding, t.AggregateDigest, contributors, t.Approvals); err != nil {
		return err
	}
	shape := jobspec.VectorShape(t.Spec, t.Round)
	size := he.UpdateSize(n.params(), shape)
	if t.AggregateSize != uint64(size) {
		return fmt.Errorf("aggregate of %d bytes, this model's is %d", t.AggregateSize, size)
	}
	var raw []byte
	err = n.call(ctx, time.Minute, func(ctx context.Context, conn client.Conn) error {
		stream, err := conn.Hospital.GetAggregate(ctx, &pb.GetAggregateRequest{JobId: t.JobId, Round: t.Round})
		if err != nil {
			return err
		}
		raw = raw[:0]
		return client.Receive(stream, func(m *pb.GetAggregateResponse) error {
			if len(raw)+len(m.Chunk) > size {
				return fmt.Errorf("aggregate longer than %d bytes", size)
			}
			raw = append(raw, m.Chunk...)
			return nil
		})
	})
	if err != nil {
		return err
	}
	agg, err := he.UnmarshalUpdate(n.params(), shape, raw)
	if err != nil {
		return fmt.Errorf("aggregate: %w", err)
	}
	if d := agg.Digest(); string(d[:]) != string(t.AggregateDigest) {
		return n.untrusted("an aggregate", "it does not match the committed digest")
	}
	if agg.Binding() != binding {
		return n.untrusted("an aggregate", "it is bound to another job, round or model")
	}
	// The aggregate must be the sum of exactly the updates the
	// contributors approved: a coordinator that added a plaintext of its
	// choice would steer the decrypted model, and the sites would measure
	// it.
	if err := he.CheckFold(n.params(), agg, fingerprints(t.Approvals)); err != nil {
		return n.untrusted("an aggregate", "it is not the sum of the updates its contributors approved: "+err.Error())
	}
	n.mu.Lock()
	used := n.epoch(t.Epoch).Decrypted
	n.mu.Unlock()
	if budget := n.params().MaxDecryptions(); used+agg.NumCiphertexts() > budget {
		n.log.Warn("decryption budget of this key spent", "epoch", t.Epoch, "decrypted", used, "budget", budget, "job_id", t.JobId, "round", t.Round)
		return fmt.Errorf("refusing to decrypt: %d of the %d ciphertexts the key of epoch %d may decrypt are spent, and this aggregate has %d; the region needs a new key epoch", used, budget, t.Epoch, agg.NumCiphertexts())
	}
	share, err := party.DecryptionShare(agg, contributorPoints, active)
	if err != nil {
		return err
	}
	b, err := share.MarshalBinary()
	if err != nil {
		return err
	}
	// Record the share, and count it against the budget, before it leaves:
	// a crash after this line can lose the share but never give a second
	// one.
	n.mu.Lock()
	n.state.SharesGiven[key] = givenShare{AggregateDigest: t.AggregateDigest, Contributors: contributors, Active: t.Active, Share: b}
	n.epoch(t.Epoch).Decrypted += agg.NumCiphertexts()
	err = n.state.save(n.cfg.DataDir)
	n.mu.Unlock()
	if err != nil {
		return err
	}
	return n.submitShare(ctx, t, binding, contributors, b)
}

// checkApprovals verifies that every contributor signed its approval of
// exactly this contributor set for this binding, against its enrolled
// certificate: a decryptor serves a set only its members approved.
func (n *Node) checkApprovals(r *pb.Region, binding [32]byte, aggDigest []byte, contributors []string, approvals []*pb.Approval) error {
	if len(approvals) != len(contributors) {
		return n.untrusted("a decryption manifest", fmt.Sprintf("%d approvals for %d contributors", len(approvals), len(contributors)))
	}
	rd := regionDigest(r)
	unapproved := make(map[string]bool, len(contributors))
	for _, h := range contributors {
		unapproved[h] = true
	}
	for _, a := range approvals {
		if !unapproved[a.Hospital] {
			return n.untrusted("a decryption manifest", fmt.Sprintf("approval of %q does not match the contributors", a.Hospital))
		}
		delete(unapproved, a.Hospital)
		want := identity.Identity{Name: a.Hospital, Role: identity.RoleHospital}
		if err := n.verify("the approval of "+a.Hospital, a.Certificate, want, a.Signature, identity.StatementApproval,
			identity.ApprovalFields(rd, binding[:], a.UpdateDigest, aggDigest, a.Fingerprint, a.Hospital, contributors)...); err != nil {
			return err
		}
	}
	return nil
}

// approve signs this node's approval of a closed round's contributor set,
// once per binding, after the same checks a decryptor makes: a job the site
// accepts, at least K distinct hospitals of the pinned region, this node
// among them with the update it made under this binding.
func (n *Node) approve(ctx context.Context, t *pb.ApprovalTask) error {
	model, ok := jobspec.ParseModelDigest(t.ModelDigest)
	if !ok {
		return n.untrusted("a contributor set", fmt.Sprintf("a model digest of %d bytes", len(t.ModelDigest)))
	}
	binding := jobspec.Binding(t.JobId, t.Round, t.ModelVersion, t.ModelHash, model)
	key := hex.EncodeToString(binding[:])
	contributors := slices.Sorted(slices.Values(t.Contributors))
	n.mu.Lock()
	prev, approved := n.state.Approved[key]
	made := n.state.Encrypted[key].Update
	n.mu.Unlock()
	if approved && !slices.Equal(prev, contributors) {
		return n.untrusted("a second contributor set", fmt.Sprintf("this node approved %v for round %d, not %v", prev, t.Round, contributors))
	}
	if made == nil {
		return n.untrusted("a contributor set", fmt.Sprintf("it names this hospital, which made no update for round %d", t.Round))
	}
	if err := n.vetted(t.JobId, t.Spec, true); err != nil {
		return err
	}
	if err := jobspec.ValidateOffered(t.Spec); err != nil {
		return n.untrusted("the job of a contributor set", err.Error())
	}
	// The pinned region (and its threshold) first: the site's minimum K
	// follows from it.
	r, _, err := n.region(ctx)
	if err != nil {
		return err
	}
	if reason := n.checkPolicy(t.Spec, t.JobId); reason != "" {
		return n.untrusted("the job of a contributor set", reason)
	}
	if jobspec.FromProto(t.Spec.GetModel()).Hash() != t.ModelHash {
		return n.untrusted("a contributor set", "it names another model")
	}
	if k := int(t.Spec.GetMinHospitals()); len(contributors) < k || len(slices.Compact(slices.Clone(contributors))) != len(contributors) {
		return n.untrusted("a contributor set", fmt.Sprintf("%d contributors (distinct), the job needs %d", len(contributors), k))
	}
	for _, c := range contributors {
		if !slices.Contains(r.Hospitals, c) {
			return n.untrusted("a contributor set", fmt.Sprintf("%q is not a hospital of the region", c))
		}
	}
	if !slices.Contains(contributors, n.cfg.ID) {
		return n.untrusted("a contributor set", "it does not name this hospital")
	}
	if !approved {
		// On disk before the signature leaves: one set per binding, ever.
		n.mu.Lock()
		n.state.Approved[key] = contributors
		err = n.state.save(n.cfg.DataDir)
		n.mu.Unlock()
		if err != nil {
			return err
		}
	}
	fingerprint, err := n.fingerprint(t, made)
	if err != nil {
		return err
	}
	sig, err := n.sign(identity.StatementApproval, identity.ApprovalFields(regionDigest(r), binding[:], made, t.AggregateDigest, fingerprint, n.cfg.ID, contributors)...)
	if err != nil {
		return err
	}
	n.log.Info("contributor set approved", "job_id", t.JobId, "round", t.Round, "contributors", len(contributors))
	return n.call(ctx, controlTimeout, func(ctx context.Context, conn client.Conn) error {
		_, err := conn.Hospital.ApproveContributors(ctx, &pb.ApproveContributorsRequest{JobId: t.JobId, Round: t.Round, Signature: sig, Fingerprint: fingerprint})
		return err
	})
}

// fingerprint is the fingerprint of the update this node made for an
// approval task's round (of digest made) under the challenge of the
// aggregate the round closed with: signed with the approval, it lets every
// site check that aggregate is the sum of the approved updates. The update
// is read from where it is kept until the round is approved (settle).
func (n *Node) fingerprint(t *pb.ApprovalTask, made []byte) ([]byte, error) {
	if len(t.AggregateDigest) != sha256.Size {
		return nil, n.untrusted("a contributor set", fmt.Sprintf("an aggregate digest of %d bytes", len(t.AggregateDigest)))
	}
	k := n.keptFor(t.JobId, t.Round)
	if k == nil || string(k.Digest) != string(made) {
		return nil, fmt.Errorf("this node no longer holds its update of round %d, so it cannot vouch for the aggregate", t.Round)
	}
	_, raw, err := readKept(keptPath(n.cfg.DataDir, k.JobID), true)
	if err != nil {
		return nil, err
	}
	u, err := he.UnmarshalUpdate(n.params(), jobspec.VectorShape(t.Spec, t.Round), raw)
	if err != nil {
		return nil, fmt.Errorf("kept update of round %d: %w", t.Round, err)
	}
	return u.Fingerprint(he.AggregateChallenge(t.AggregateDigest)), nil
}

// submitShare sends a share b this node made for t's aggregate (binding,
// sorted contributors), signed over what it decrypts: the signature goes
// into the share's audit record.
func (n *Node) submitShare(ctx context.Context, t *pb.DecryptTask, binding [32]byte, contributors []string, b []byte) error {
	rd := n.pinnedRegionDigest()
	digest := sha256.Sum256(b)
	sig, err := n.sign(identity.StatementDecryptionShare,
		identity.DecryptionShareFields(rd, binding[:], t.AggregateDigest, digest[:], n.cfg.ID, t.Attempt, contributors, t.Active)...)
	if err != nil {
		return err
	}
	n.cfg.Metrics.ShareGiven()
	n.log.Info("decryption share sent", "job_id", t.JobId, "round", t.Round, "size", len(b), "digest", fmt.Sprintf("%x", digest[:8]))
	return n.call(ctx, 2*time.Minute, func(ctx context.Context, conn client.Conn) error {
		ctx, cancel := context.WithCancel(ctx)
		defer cancel()
		stream, err := conn.Hospital.SubmitDecryptionShare(ctx)
		if err != nil {
			return err
		}
		hdr := &pb.DecryptionShareHeader{JobId: t.JobId, Round: t.Round, Attempt: t.Attempt, Size: uint64(len(b)), Signature: sig}
		return sendChunked(stream, cancel, &pb.SubmitDecryptionShareRequest{Msg: &pb.SubmitDecryptionShareRequest_Header{Header: hdr}}, b,
			func(c []byte) *pb.SubmitDecryptionShareRequest {
				return &pb.SubmitDecryptionShareRequest{Msg: &pb.SubmitDecryptionShareRequest_Chunk{Chunk: c}}
			})
	})
}
