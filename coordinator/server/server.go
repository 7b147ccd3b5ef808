// Package server holds the coordinator's gRPC services. Handlers take the
// caller's identity from its client certificate, validate every input
// (lengths first), and turn decisions into Raft commands through the store;
// errors leave as gRPC statuses with a reason the caller can act on.
package server

import (
	"cmp"
	"context"
	"crypto"
	"crypto/hpke"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	reflectionv1alpha "google.golang.org/grpc/reflection/grpc_reflection_v1alpha"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"regionfl/client"
	"regionfl/coordinator/fsm"
	"regionfl/coordinator/metrics"
	"regionfl/coordinator/round"
	"regionfl/coordinator/store"
	"regionfl/he"
	"regionfl/identity"
	"regionfl/jobspec"
	pb "regionfl/proto/regionfl/v1"
)

// Server implements the coordinator's services.
type Server struct {
	pb.UnimplementedHospitalServiceServer
	pb.UnimplementedResearcherServiceServer
	pb.UnimplementedOperatorServiceServer

	store  *store.Store
	engine *round.Engine
	log    *slog.Logger
	limit  *limiter
	// signer and certDER sign the head of audit exports (SetSigner).
	signer  crypto.Signer
	certDER []byte
	refused refusals
	metrics *metrics.Metrics // nil-safe
	// uploadTimeout is the base of an update upload's deadline.
	uploadTimeout time.Duration
	relay         *sealedRelay
}

// SetUploadTimeout changes the base of the upload deadline (tests use a
// short one to exercise slow senders).
func (s *Server) SetUploadTimeout(d time.Duration) { s.uploadTimeout = d }

// SetMetrics makes the server count refused updates and bytes received.
func (s *Server) SetMetrics(m *metrics.Metrics) { s.metrics = m }

var (
	_ pb.HospitalServiceServer   = (*Server)(nil)
	_ pb.ResearcherServiceServer = (*Server)(nil)
	_ pb.OperatorServiceServer   = (*Server)(nil)
)

// New returns the services of one replica.
func New(st *store.Store, engine *round.Engine, log *slog.Logger) *Server {
	return &Server{store: st, engine: engine, log: log, limit: newLimiter(DefaultLimits), uploadTimeout: DefaultUploadTimeout, relay: newSealedRelay()}
}

// Register adds the services to a gRPC server, with the standard health
// service (grpc.health.v1): SERVING while the replica runs, for any
// certificate of the region.
func (s *Server) Register(g *grpc.Server) *health.Server {
	pb.RegisterHospitalServiceServer(g, hospitalService{s})
	pb.RegisterResearcherServiceServer(g, researcherService{s})
	pb.RegisterOperatorServiceServer(g, s)
	pb.RegisterAuditorServiceServer(g, auditorService{Server: s})
	hs := health.NewServer()
	healthpb.RegisterHealthServer(g, hs)
	return hs
}

// GRPCOptions are the server options every replica uses: message caps and
// the interceptors that authenticate, check revocation, authorize and
// rate-limit every call.
func (s *Server) GRPCOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(client.MaxMessage),
		grpc.MaxSendMsgSize(client.MaxModelMessage), // models go out whole; nothing larger is received
		// Clients ping every 10 s to notice dead replicas; allow it.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		grpc.UnaryInterceptor(s.authorizeUnary),
		grpc.StreamInterceptor(s.authorizeStream),
	}
}

// allowed says which roles may call each service.
var allowed = map[string][]identity.Role{
	pb.HospitalService_ServiceDesc.ServiceName:   {identity.RoleHospital},
	pb.ResearcherService_ServiceDesc.ServiceName: {identity.RoleResearcher},
	pb.OperatorService_ServiceDesc.ServiceName:   {identity.RoleOperator},
	pb.AuditorService_ServiceDesc.ServiceName:    {identity.RoleAuditor},
	healthpb.Health_ServiceDesc.ServiceName:      everyRole,
	// gRPC reflection, registered only when a replica runs with
	// --reflection (for grpcurl and similar tools): the schema only.
	reflectionpb.ServerReflection_ServiceDesc.ServiceName:      everyRole,
	reflectionv1alpha.ServerReflection_ServiceDesc.ServiceName: everyRole,
}

var everyRole = []identity.Role{identity.RoleHospital, identity.RoleResearcher, identity.RoleOperator,
	identity.RoleAuditor, identity.RoleCoordinator}

// joinMethod may also be called by replicas joining the cluster.
var joinMethod = pb.OperatorService_JoinReplica_FullMethodName

func (s *Server) authorize(ctx context.Context, method string) (context.Context, error) {
	cert, err := peerCert(ctx)
	if err != nil {
		return nil, err
	}
	id, err := identity.FromCertificate(cert)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	// Revocation is checked on every call against the replicated list, so
	// a revoked certificate is refused from the request after the
	// revocation commits, even on a connection opened before it.
	serial := identity.SerialHex(cert)
	if serial == "" || s.revoked(serial) {
		s.log.Warn("refused: revoked certificate", "caller", id.String(), "serial", serial, "method", method)
		s.recordRefusal(id, serial, method, "certificate revoked")
		return nil, status.Errorf(codes.Unauthenticated, "certificate %s of %s is revoked", serial, id)
	}
	svc := strings.TrimPrefix(method, "/")
	if i := strings.LastIndex(svc, "/"); i >= 0 {
		svc = svc[:i]
	}
	ok := slices.Contains(allowed[svc], id.Role) || (method == joinMethod && id.Role == identity.RoleCoordinator)
	if !ok {
		s.log.Warn("refused: role", "caller", id.String(), "method", method)
		s.recordRefusal(id, serial, method, "role "+string(id.Role)+" may not call this method")
		return nil, status.Errorf(codes.PermissionDenied, "%s may not call %s", id, method)
	}
	if err := s.limit.allow(ctx, id, method); err != nil {
		return nil, err
	}
	return withCaller(ctx, id), nil
}

// peerCert is the caller's verified TLS certificate, or Unauthenticated.
func peerCert(ctx context.Context) (*x509.Certificate, error) {
	cert, err := identity.PeerCertificate(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	return cert, nil
}

func (s *Server) revoked(serial string) bool {
	var r bool
	s.read(func(st *fsm.State) { r = st.IsRevoked(serial) })
	return r
}

func (s *Server) authorizeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := s.authorize(ctx, info.FullMethod)
	if err != nil {
		return nil, err
	}
	return h(ctx, req)
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w wrappedStream) Context() context.Context { return w.ctx }

func (s *Server) authorizeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := s.authorize(ss.Context(), info.FullMethod)
	if err != nil {
		return err
	}
	return h(srv, wrappedStream{ss, ctx})
}

type callerKey struct{}

func withCaller(ctx context.Context, id identity.Identity) context.Context {
	return context.WithValue(ctx, callerKey{}, id)
}

func caller(ctx context.Context) identity.Identity {
	id, _ := ctx.Value(callerKey{}).(identity.Identity)
	return id
}

// toStatus maps internal errors to gRPC statuses. A "not leader" answer
// carries the leader's address in a trailer that clients follow.
func toStatus(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	var nl *store.NotLeaderError
	switch {
	case errors.As(err, &nl):
		if nl.LeaderAddr != "" {
			grpc.SetTrailer(ctx, metadata.Pairs(client.LeaderKey, nl.LeaderAddr))
		}
		return status.Errorf(codes.FailedPrecondition, "%s; leader: %s", client.NotLeaderPrefix, nl.LeaderID)
	case errors.Is(err, store.ErrNoQuorum):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, round.ErrUnknownJob):
		return status.Error(codes.NotFound, err.Error())
	case errors.Is(err, round.ErrRoundClosed), errors.Is(err, round.ErrStaleModel):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, round.ErrDuplicate):
		return status.Error(codes.AlreadyExists, err.Error())
	case errors.Is(err, round.ErrNotAccepted):
		return status.Error(codes.PermissionDenied, err.Error())
	case errors.Is(err, round.ErrBadUpdate), errors.Is(err, jobspec.ErrInvalid):
		return status.Error(codes.InvalidArgument, err.Error())
	case errors.Is(err, fsm.ErrRejected):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, errTooSlow):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// errTooSlow means an upload did not arrive within its deadline.
var errTooSlow = errors.New("the sender is too slow")

// refusal is a refused update's gRPC status with its metrics label
// (metrics.RefusalReasons), decided where the refusal is made, from the
// round engine's sentinel errors, never from the message's text.
type refusal struct {
	reason string
	st     *status.Status
}

func (r refusal) Error() string              { return r.st.Err().Error() }
func (r refusal) GRPCStatus() *status.Status { return r.st }

func refuse(reason string, err error) error { return refusal{reason, status.Convert(err)} }

// refuseEngine labels an error of the round engine (or of receiveAll) by
// its sentinel and turns it into the status the hospital gets.
func refuseEngine(ctx context.Context, err error) error {
	reason := "other"
	var nl *store.NotLeaderError
	switch {
	case errors.As(err, &nl):
		reason = "not_leader"
	case errors.Is(err, round.ErrDuplicate):
		reason = "duplicate"
	case errors.Is(err, round.ErrNotAccepted):
		reason = "not_accepted"
	case errors.Is(err, round.ErrBadLength):
		reason = "bad_length"
	case errors.Is(err, round.ErrDigestMismatch):
		reason = "digest_mismatch"
	case errors.Is(err, round.ErrRoundClosed), errors.Is(err, round.ErrStaleModel), errors.Is(err, round.ErrUnknownJob):
		reason = "wrong_round"
	case errors.Is(err, round.ErrBadUpdate):
		reason = "bad_encoding"
	case errors.Is(err, errTooSlow):
		reason = "too_slow"
	}
	return refuse(reason, toStatus(ctx, err))
}

// refusalReason is the metrics label of a refused update: the one its
// refusal carries, "not_leader" for a follower's answer, else "other".
func refusalReason(err error) string {
	var r refusal
	switch {
	case errors.As(err, &r):
		return r.reason
	case client.IsNotLeader(err):
		return "not_leader"
	}
	return "other"
}

// leader fails unless this replica leads and has applied everything its
// predecessors committed; every call is served by the leader so answers are
// never stale.
func (s *Server) leader(ctx context.Context) error {
	_, err := s.store.Ready()
	return toStatus(ctx, err)
}

// leaderRead is leader for reads that people and scripts act on (a job's
// state, a model, the audit log): the leader first confirms with a quorum
// that it still leads, so a deposed leader that has not noticed yet (cut
// off, its lease not yet run out) never answers from its stale state.
func (s *Server) leaderRead(ctx context.Context) error {
	if err := s.leader(ctx); err != nil {
		return err
	}
	return toStatus(ctx, s.store.VerifyLeader())
}

func (s *Server) read(fn func(st *fsm.State)) { s.store.FSM().Read(fn) }

// ---- Operator service ----

// CreateRegion records the region an operator signed (hospitals,
// threshold, parameter set, ceremony seed) and starts the key ceremony.
// Nodes check the operator's signature themselves.
func (s *Server) CreateRegion(ctx context.Context, req *pb.CreateRegionRequest) (*pb.CreateRegionResponse, error) {
	if err := s.leader(ctx); err != nil {
		return nil, err
	}
	hs := req.Hospitals
	if len(hs) < 2 || !slices.IsSorted(hs) || len(slices.Compact(slices.Clone(hs))) != len(hs) {
		return nil, status.Error(codes.InvalidArgument, "hospitals: need at least two, sorted, without repeats")
	}
	params, err := he.ParamsByName(req.Params)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "params: %v", err)
	}
	if len(req.Seed) != he.SeedLen {
		return nil, status.Errorf(codes.InvalidArgument, "seed: %d bytes, want %d", len(req.Seed), he.SeedLen)
	}
	cert, err := peerCert(ctx)
	if err != nil {
		return nil, err
	}
	for _, h := range hs {
		if err := identity.ValidName(h); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "hospitals: %v", err)
		}
	}
	if len(hs) > params.MaxParties() {
		return nil, status.Errorf(codes.InvalidArgument, "hospitals: %d, parameters %s allow at most %d", len(hs), params.Name(), params.MaxParties())
	}
	// t = 1 would let any single hospital decrypt any aggregate, and so
	// (with the coordinator) any one hospital's update.
	if req.Threshold < 2 || int(req.Threshold) > len(hs) {
		return nil, status.Errorf(codes.InvalidArgument, "threshold: %d is not between 2 and %d (the number of hospitals)", req.Threshold, len(hs))
	}
	if req.Committee != 0 && (req.Committee < req.Threshold || int64(req.Committee) > int64(len(hs))) {
		return nil, status.Errorf(codes.InvalidArgument, "committee: %d is neither 0 (every hospital) nor between the threshold %d and the %d hospitals", req.Committee, req.Threshold, len(hs))
	}
	// Each hospital sends a sealed share to every committee member in one
	// message: a larger committee cannot finish its ceremony.
	if holders, most := identity.CommitteeSize(req.Committee, len(hs)), MaxSealedPerMessage(params); holders > most {
		return nil, status.Errorf(codes.InvalidArgument, "committee: %d hospitals would hold key shares, and each hospital sends one sealed share of %d KiB to each in one message; at most %d fit: name a committee of %d to %d",
			holders, he.SealedShareSize(params)>>10, most, req.Threshold, most)
	}
	if err := identity.CheckRevocationMaxAge(time.Duration(req.RevocationMaxAgeS) * time.Second); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "revocation_max_age_s: %v", err)
	}
	d := identity.RegionDigest(req.Params, hs, req.Threshold, req.Committee, req.Seed, req.RevocationMaxAgeS)
	if err := identity.CheckSignature(cert.Raw, req.Signature, identity.StatementGenesis, d[:]); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "signature: %v", err)
	}
	err = s.store.ProposeAs(caller(ctx).String(), &pb.CreateRegionCommand{
		Params: req.Params, Hospitals: hs, Threshold: req.Threshold, Committee: req.Committee, Seed: req.Seed,
		GenesisSignature: req.Signature, GenesisCertificate: cert.Raw, RevocationMaxAgeS: req.RevocationMaxAgeS,
	})
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	s.log.Info("region created", "hospitals", len(hs), "threshold", req.Threshold, "committee", identity.CommitteeSize(req.Committee, len(hs)))
	return &pb.CreateRegionResponse{}, nil
}

// MaxSealedPerMessage is how many sealed shares of parameter set p fit in
// one gRPC message, with room for their signatures and names.
func MaxSealedPerMessage(p he.Params) int {
	return (client.MaxMessage - 64<<10) / (he.SealedShareSize(p) + 1<<10)
}

// ListReplicas shows the Raft configuration.
func (s *Server) ListReplicas(ctx context.Context, _ *pb.ListReplicasRequest) (*pb.ListReplicasResponse, error) {
	rs, err := s.store.Replicas()
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	out := &pb.ListReplicasResponse{}
	for _, r := range rs {
		suffrage := "nonvoter"
		if r.Voter {
			suffrage = "voter"
		}
		out.Replicas = append(out.Replicas, &pb.Replica{Id: r.ID, RaftAddr: r.RaftAddr, GrpcAddr: r.GRPCAddr, Leader: r.Leader, Suffrage: suffrage})
	}
	return out, nil
}

// JoinReplica adds a replica and records its gRPC address.
func (s *Server) JoinReplica(ctx context.Context, req *pb.JoinReplicaRequest) (*pb.JoinReplicaResponse, error) {
	if err := s.leader(ctx); err != nil {
		return nil, err
	}
	if err := identity.ValidName(req.Id); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "id: %v", err)
	}
	if c := caller(ctx); c.Role == identity.RoleCoordinator && c.Name != req.Id {
		return nil, status.Errorf(codes.PermissionDenied, "%s may not join as %s", c, req.Id)
	}
	if req.RaftAddr == "" || req.GrpcAddr == "" {
		return nil, status.Error(codes.InvalidArgument, "raft_addr and grpc_addr are required")
	}
	if err := s.store.AddVoter(req.Id, req.RaftAddr); err != nil {
		return nil, toStatus(ctx, err)
	}
	if err := s.store.ProposeAs(caller(ctx).String(), &pb.RegisterReplicaCommand{Id: req.Id, GrpcAddr: req.GrpcAddr}); err != nil {
		return nil, toStatus(ctx, err)
	}
	s.log.Info("replica joined", "replica", req.Id, "raft_addr", req.RaftAddr)
	return &pb.JoinReplicaResponse{}, nil
}

// RevokeCertificate adds a serial to the replicated revocation list. The
// request carries the operator's signature over it, kept with the
// certificate that made it, for hospitals to verify (GetRevocations).
func (s *Server) RevokeCertificate(ctx context.Context, req *pb.RevokeCertificateRequest) (*pb.RevokeCertificateResponse, error) {
	if err := s.leader(ctx); err != nil {
		return nil, err
	}
	serial := identity.NormalizeSerial(req.Serial)
	switch {
	case serial == "":
		return nil, status.Errorf(codes.InvalidArgument, "serial: %q is not a hexadecimal certificate serial", req.Serial)
	case serial != req.Serial:
		return nil, status.Errorf(codes.InvalidArgument, "serial: %q is not written as signed revocations are (lowercase hex, no separators or leading zeros: %s)", req.Serial, serial)
	case len(req.Reason) > identity.MaxRevocationReason:
		return nil, status.Errorf(codes.InvalidArgument, "reason: longer than %d bytes", identity.MaxRevocationReason)
	case len(req.Signature) == 0:
		return nil, status.Error(codes.InvalidArgument, "signature: a revocation must be signed by the operator (regionfl operator revoke does)")
	}
	now := s.engine.NowMs()
	if d := req.SignedUnixMs - now; d > identity.MaxClockSkew.Milliseconds() || -d > identity.MaxClockSkew.Milliseconds() {
		return nil, status.Errorf(codes.InvalidArgument, "signed_unix_ms: %d is more than %v from this replica's clock", req.SignedUnixMs, identity.MaxClockSkew)
	}
	cert, err := peerCert(ctx)
	if err != nil {
		return nil, err
	}
	if err := identity.CheckSignature(cert.Raw, req.Signature, identity.StatementRevocation, identity.RevocationFields(serial, req.Reason, req.SignedUnixMs)...); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "signature: %v", err)
	}
	err = s.store.Propose(&pb.RevokeCommand{
		Serial: serial, Reason: req.Reason, RevokedBy: caller(ctx).String(),
		SignedUnixMs: req.SignedUnixMs, Signature: req.Signature, Certificate: cert.Raw,
	})
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	s.log.Info("certificate revoked", "serial", serial, "by", caller(ctx).String())
	return &pb.RevokeCertificateResponse{}, nil
}

// EndWebSessions ends the web-view sessions of one identity that began
// before now, on every replica.
func (s *Server) EndWebSessions(ctx context.Context, req *pb.EndWebSessionsRequest) (*pb.EndWebSessionsResponse, error) {
	if err := s.leader(ctx); err != nil {
		return nil, err
	}
	id, err := identity.ParseIdentity(req.Identity)
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "identity: %v", err)
	}
	if err := s.store.Propose(&pb.EndWebSessionsCommand{Identity: id.String(), EndedBy: caller(ctx).String()}); err != nil {
		return nil, toStatus(ctx, err)
	}
	s.log.Info("web sessions ended", "identity", id.String(), "by", caller(ctx).String())
	return &pb.EndWebSessionsResponse{}, nil
}

// MaxKeyEpochReason caps the reason an operator gives for a re-key, in bytes.
const MaxKeyEpochReason = 512

// StartKeyEpoch starts the ceremony of the next key epoch now (the engine
// does on its own once the current key's decryption budget is half spent).
func (s *Server) StartKeyEpoch(ctx context.Context, req *pb.StartKeyEpochRequest) (*pb.StartKeyEpochResponse, error) {
	if err := s.leader(ctx); err != nil {
		return nil, err
	}
	reason := strings.TrimSpace(req.Reason)
	switch {
	case reason == "":
		return nil, status.Error(codes.InvalidArgument, "reason: empty; say why the region re-keys (it goes into the audit log)")
	case len(reason) > MaxKeyEpochReason || !utf8.ValidString(reason):
		return nil, status.Errorf(codes.InvalidArgument, "reason: not UTF-8 of at most %d bytes", MaxKeyEpochReason)
	}
	var (
		exists, done bool
		epoch        uint32
		step         string
	)
	s.read(func(st *fsm.State) {
		if r := st.Region; r != nil {
			exists, done, epoch, step = true, r.Step() == pb.CeremonyStep_CEREMONY_STEP_DONE, r.Epoch, r.StepName()
		}
	})
	switch {
	case !exists:
		return nil, status.Error(codes.FailedPrecondition, "the region has not been created yet")
	case !done:
		return nil, status.Errorf(codes.FailedPrecondition, "the ceremony of key epoch %d is still running (step %s)", epoch, step)
	}
	next := epoch + 1
	if err := s.store.Propose(&pb.StartKeyEpochCommand{Epoch: next, Reason: reason, StartedBy: caller(ctx).String()}); err != nil {
		return nil, toStatus(ctx, err)
	}
	s.log.Info("key epoch started", "epoch", next, "by", caller(ctx).String())
	return &pb.StartKeyEpochResponse{Epoch: next}, nil
}

// ListRevoked returns the revocation list, oldest first.
func (s *Server) ListRevoked(ctx context.Context, _ *pb.ListRevokedRequest) (*pb.ListRevokedResponse, error) {
	if err := s.leader(ctx); err != nil {
		return nil, err
	}
	resp := &pb.ListRevokedResponse{Revoked: s.revocations(), List: s.revocationList()}
	s.read(func(st *fsm.State) {
		if st.Region != nil {
			d := st.Region.Digest()
			resp.RegionDigest = d[:]
		}
	})
	return resp, nil
}

// revocationList is the newest operator-signed revocation list (nil
// before the first).
func (s *Server) revocationList() *pb.RevocationList {
	var l *pb.RevocationList
	s.read(func(st *fsm.State) {
		if st.RevocationList != nil {
			l = proto.Clone(st.RevocationList).(*pb.RevocationList)
		}
	})
	return l
}

// PublishRevocationList stores an operator's signed, dated list of every
// revoked serial, bound to the region: hospitals verify it themselves and,
// in a region with a revocation maximum age, act only while they hold one
// younger than that.
func (s *Server) PublishRevocationList(ctx context.Context, req *pb.PublishRevocationListRequest) (*pb.PublishRevocationListResponse, error) {
	if err := s.leader(ctx); err != nil {
		return nil, err
	}
	now := s.engine.NowMs()
	if d := req.IssuedUnixMs - now; d > identity.MaxClockSkew.Milliseconds() || -d > identity.MaxClockSkew.Milliseconds() {
		return nil, status.Errorf(codes.InvalidArgument, "issued_unix_ms: %d is more than %v from this replica's clock", req.IssuedUnixMs, identity.MaxClockSkew)
	}
	if len(req.Serials) > identity.MaxListedRevocations {
		return nil, status.Errorf(codes.InvalidArgument, "serials: %d, more than %d", len(req.Serials), identity.MaxListedRevocations)
	}
	cert, err := peerCert(ctx)
	if err != nil {
		return nil, err
	}
	var (
		region         [32]byte
		exists         bool
		missing, extra string
		heldMs         int64
	)
	s.read(func(st *fsm.State) {
		if exists = st.Region != nil; exists {
			region = st.Region.Digest()
		}
		missing, extra = st.RevocationListDiff(req.Serials)
		if st.RevocationList != nil {
			heldMs = st.RevocationList.IssuedUnixMs
		}
	})
	switch {
	case !exists:
		return nil, status.Error(codes.FailedPrecondition, "no region yet: a revocation list is bound to one")
	case missing != "" || extra != "":
		return nil, status.Errorf(codes.FailedPrecondition, "serials: the list must name exactly the revoked serials (it lacks %q, names %q not revoked); sign the current list again", missing, extra)
	case req.IssuedUnixMs <= heldMs:
		return nil, status.Errorf(codes.FailedPrecondition, "issued_unix_ms: %d is not newer than the list held (%d)", req.IssuedUnixMs, heldMs)
	}
	if err := identity.CheckSignature(cert.Raw, req.Signature, identity.StatementRevocationList, identity.RevocationListFields(region, req.IssuedUnixMs, req.Serials)...); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "signature: %v", err)
	}
	err = s.store.Propose(&pb.RevocationListCommand{
		IssuedUnixMs: req.IssuedUnixMs, Serials: req.Serials, Signature: req.Signature, Certificate: cert.Raw,
		SignedBy: caller(ctx).String(),
	})
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	s.log.Info("revocation list published", "serials", len(req.Serials), "issued_unix_ms", req.IssuedUnixMs, "by", caller(ctx).String())
	return &pb.PublishRevocationListResponse{}, nil
}

// revocations is the revocation list, oldest first.
func (s *Server) revocations() []*pb.Revocation {
	var out []*pb.Revocation
	s.read(func(st *fsm.State) {
		for _, r := range st.Revoked {
			out = append(out, proto.Clone(r).(*pb.Revocation))
		}
	})
	slices.SortFunc(out, func(a, b *pb.Revocation) int {
		return cmp.Or(cmp.Compare(a.UnixMs, b.UnixMs), cmp.Compare(a.Serial, b.Serial))
	})
	return out
}

// TransferLeadership hands leadership to another voter and answers once it
// leads. Rounds go on under the new leader: it re-collects what the
// running sums held from the hospitals, as after a failover.
func (s *Server) TransferLeadership(ctx context.Context, req *pb.TransferLeadershipRequest) (*pb.TransferLeadershipResponse, error) {
	if err := s.leader(ctx); err != nil {
		return nil, err
	}
	if req.To != "" {
		if err := identity.ValidName(req.To); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "to: %v", err)
		}
	}
	from, _ := s.store.Leader()
	if req.To == from {
		return nil, status.Errorf(codes.FailedPrecondition, "to: %s leads already", from)
	}
	leader, err := s.store.TransferLeadership(req.To, 15*time.Second)
	switch {
	case errors.Is(err, store.ErrUnknownReplica):
		return nil, status.Errorf(codes.InvalidArgument, "to: %q is not a voter of the cluster (regionfl operator raft list-replicas)", req.To)
	case err != nil:
		return nil, toStatus(ctx, err)
	}
	s.log.Info("leadership transferred", "from", from, "to", leader, "by", caller(ctx).String())
	return &pb.TransferLeadershipResponse{From: from, Leader: leader}, nil
}

// TakeSnapshot has the leader snapshot its state now and compact its log
// behind the snapshot.
func (s *Server) TakeSnapshot(ctx context.Context, _ *pb.TakeSnapshotRequest) (*pb.TakeSnapshotResponse, error) {
	if err := s.leader(ctx); err != nil {
		return nil, err
	}
	index, err := s.store.TakeSnapshot()
	if errors.Is(err, store.ErrNothingNewToSnapshot) {
		return nil, status.Error(codes.FailedPrecondition, "nothing new to snapshot since the last snapshot")
	}
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	s.log.Info("snapshot taken", "index", index, "by", caller(ctx).String())
	return &pb.TakeSnapshotResponse{Replica: s.store.ID(), Index: index}, nil
}

// RemoveReplica takes a replica out of the cluster.
func (s *Server) RemoveReplica(ctx context.Context, req *pb.RemoveReplicaRequest) (*pb.RemoveReplicaResponse, error) {
	if err := s.leader(ctx); err != nil {
		return nil, err
	}
	rs, err := s.store.Replicas()
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	if !slices.ContainsFunc(rs, func(r store.Replica) bool { return r.ID == req.Id }) {
		return nil, status.Errorf(codes.NotFound, "no replica %q", req.Id)
	}
	// The removal goes into the audit log first, then into Raft's
	// configuration.
	if err := s.store.ProposeAs(caller(ctx).String(), &pb.ReplicaRemovedCommand{Id: req.Id}); err != nil {
		return nil, toStatus(ctx, err)
	}
	if err := s.store.Remove(req.Id); err != nil {
		return nil, toStatus(ctx, err)
	}
	s.log.Info("replica removed", "replica", req.Id)
	return &pb.RemoveReplicaResponse{}, nil
}

// RegisterSelf records this replica's gRPC address once it leads (the
// bootstrap replica has nobody to join through).
func (s *Server) RegisterSelf(grpcAddr string) error {
	var known string
	s.read(func(st *fsm.State) { known = st.Replicas[s.store.ID()] })
	if known == grpcAddr {
		return nil
	}
	return s.store.Propose(&pb.RegisterReplicaCommand{Id: s.store.ID(), GrpcAddr: grpcAddr})
}

// ---- shared ----

func checkHPKEKey(b []byte) error {
	if len(b) == 0 || len(b) > 4096 {
		return fmt.Errorf("hpke_public_key: %d bytes", len(b))
	}
	_, err := hpke.MLKEM768X25519().NewPublicKey(b)
	return err
}

// waitChange blocks until the state moves past version or d passes.
func (s *Server) waitChange(ctx context.Context, version uint64, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		ch := s.store.FSM().Changed()
		var idx uint64
		s.read(func(st *fsm.State) { idx = st.Index })
		if idx > version {
			return
		}
		select {
		case <-ch:
		case <-t.C:
			return
		case <-ctx.Done():
			return
		}
	}
}

// receiveAll reads a chunked upload of exactly size bytes. The buffer grows
// with the bytes that arrived, never past size: a stream that announces an
// update and sends nothing holds no memory.
func receiveAll(size int, next func() ([]byte, error)) ([]byte, error) {
	var buf []byte
	for {
		chunk, err := next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if len(chunk) > client.ChunkSize {
			return nil, fmt.Errorf("%w: %w: chunk of %d bytes, the limit is %d", round.ErrBadUpdate, round.ErrBadLength, len(chunk), client.ChunkSize)
		}
		if len(buf)+len(chunk) > size {
			return nil, fmt.Errorf("%w: %w: more than the announced %d bytes", round.ErrBadUpdate, round.ErrBadLength, size)
		}
		if need := len(buf) + len(chunk); need > cap(buf) {
			grown := make([]byte, len(buf), min(size, max(need, 2*cap(buf))))
			copy(grown, buf)
			buf = grown
		}
		buf = append(buf, chunk...)
	}
	if len(buf) != size {
		return nil, fmt.Errorf("%w: %w: %d of the announced %d bytes arrived", round.ErrBadUpdate, round.ErrBadLength, len(buf), size)
	}
	return buf, nil
}
