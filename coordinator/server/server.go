// Package server holds the coordinator's gRPC services. Handlers take the
// caller's identity from its client certificate, validate every input
// (lengths first), and turn decisions into Raft commands through the store;
// errors leave as gRPC statuses with a reason the caller can act on.
package server

import (
	"context"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"regionfl/client"
	"regionfl/coordinator/fsm"
	"regionfl/coordinator/round"
	"regionfl/coordinator/store"
	"regionfl/identity"
	"regionfl/jobspec"
	pb "regionfl/proto/regionfl/v1"
)

// ChunkSize is the largest chunk of an encrypted update or aggregate in one
// gRPC message.
const ChunkSize = 1 << 20

// Server implements the coordinator's services.
type Server struct {
	pb.UnimplementedHospitalServiceServer
	pb.UnimplementedResearcherServiceServer
	pb.UnimplementedOperatorServiceServer

	store  *store.Store
	engine *round.Engine
	log    *slog.Logger
}

var (
	_ pb.HospitalServiceServer   = (*Server)(nil)
	_ pb.ResearcherServiceServer = (*Server)(nil)
	_ pb.OperatorServiceServer   = (*Server)(nil)
)

// New returns the services of one replica.
func New(st *store.Store, engine *round.Engine, log *slog.Logger) *Server {
	return &Server{store: st, engine: engine, log: log}
}

// Register adds the services to a gRPC server.
func (s *Server) Register(g *grpc.Server) {
	pb.RegisterHospitalServiceServer(g, hospitalService{s})
	pb.RegisterResearcherServiceServer(g, researcherService{s})
	pb.RegisterOperatorServiceServer(g, s)
}

// GRPCOptions are the server options every replica uses: message caps and
// the authorization interceptors.
func GRPCOptions() []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.MaxRecvMsgSize(client.MaxMessage),
		grpc.MaxSendMsgSize(client.MaxMessage),
		grpc.UnaryInterceptor(authorizeUnary),
		grpc.StreamInterceptor(authorizeStream),
	}
}

// allowed says which roles may call each service.
var allowed = map[string][]identity.Role{
	pb.HospitalService_ServiceDesc.ServiceName:   {identity.RoleHospital},
	pb.ResearcherService_ServiceDesc.ServiceName: {identity.RoleResearcher},
	pb.OperatorService_ServiceDesc.ServiceName:   {identity.RoleOperator},
}

// joinMethod may also be called by replicas joining the cluster.
var joinMethod = pb.OperatorService_JoinReplica_FullMethodName

func authorize(ctx context.Context, method string) (context.Context, error) {
	id, err := identity.FromContext(ctx)
	if err != nil {
		return nil, status.Error(codes.Unauthenticated, err.Error())
	}
	svc := strings.TrimPrefix(method, "/")
	if i := strings.LastIndex(svc, "/"); i >= 0 {
		svc = svc[:i]
	}
	ok := slices.Contains(allowed[svc], id.Role) || (method == joinMethod && id.Role == identity.RoleCoordinator)
	if !ok {
		return nil, status.Errorf(codes.PermissionDenied, "%s may not call %s", id, method)
	}
	return withCaller(ctx, id), nil
}

func authorizeUnary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	ctx, err := authorize(ctx, info.FullMethod)
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

func authorizeStream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	ctx, err := authorize(ss.Context(), info.FullMethod)
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
	}
	return status.Error(codes.Internal, err.Error())
}

// leader fails unless this replica leads; every call is served by the leader
// so answers are never stale.
func (s *Server) leader(ctx context.Context) error {
	if !s.store.IsLeader() {
		return toStatus(ctx, s.store.NotLeader())
	}
	return nil
}

func (s *Server) read(fn func(st *fsm.State)) { s.store.FSM().Read(fn) }

// ---- Operator service ----

// CreateRegion fixes the hospitals and the threshold and starts the key
// ceremony with a fresh public seed.
func (s *Server) CreateRegion(ctx context.Context, req *pb.CreateRegionRequest) (*pb.CreateRegionResponse, error) {
	if err := s.leader(ctx); err != nil {
		return nil, err
	}
	hs := slices.Clone(req.Hospitals)
	slices.Sort(hs)
	if len(hs) == 0 || len(slices.Compact(slices.Clone(hs))) != len(hs) {
		return nil, status.Error(codes.InvalidArgument, "hospitals: need at least one, without repeats")
	}
	for _, h := range hs {
		if err := identity.ValidName(h); err != nil {
			return nil, status.Errorf(codes.InvalidArgument, "hospitals: %v", err)
		}
	}
	if len(hs) > s.engine.Params().MaxParties() {
		return nil, status.Errorf(codes.InvalidArgument, "hospitals: %d, the region parameters allow at most %d", len(hs), s.engine.Params().MaxParties())
	}
	if req.Threshold < 1 || int(req.Threshold) > len(hs) {
		return nil, status.Errorf(codes.InvalidArgument, "threshold: %d is not between 1 and %d", req.Threshold, len(hs))
	}
	seed := make([]byte, 32)
	rand.Read(seed)
	err := s.store.Propose(fsm.CmdCreateRegion, &pb.CreateRegionCommand{
		Params: s.engine.Params().Name(), Hospitals: hs, Threshold: req.Threshold, Seed: seed, UnixMs: s.engine.NowMs(),
	})
	if err != nil {
		return nil, toStatus(ctx, err)
	}
	s.log.Info("region created", "hospitals", len(hs), "threshold", req.Threshold)
	return &pb.CreateRegionResponse{}, nil
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
	if err := s.store.Propose(fsm.CmdRegisterReplica, &pb.RegisterReplicaCommand{Id: req.Id, GrpcAddr: req.GrpcAddr}); err != nil {
		return nil, toStatus(ctx, err)
	}
	s.log.Info("replica joined", "replica", req.Id, "raft_addr", req.RaftAddr)
	return &pb.JoinReplicaResponse{}, nil
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
	return s.store.Propose(fsm.CmdRegisterReplica, &pb.RegisterReplicaCommand{Id: s.store.ID(), GrpcAddr: grpcAddr})
}

// ---- shared ----

func digestHex(b []byte) string {
	d := sha256.Sum256(b)
	return hex.EncodeToString(d[:8])
}

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

// receiveAll reads a chunked upload of exactly size bytes.
func receiveAll(size int, next func() ([]byte, error)) ([]byte, error) {
	buf := make([]byte, 0, size)
	for {
		chunk, err := next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, err
		}
		if len(chunk) > ChunkSize {
			return nil, fmt.Errorf("%w: chunk of %d bytes, the limit is %d", round.ErrBadUpdate, len(chunk), ChunkSize)
		}
		if len(buf)+len(chunk) > size {
			return nil, fmt.Errorf("%w: more than the announced %d bytes", round.ErrBadUpdate, size)
		}
		buf = append(buf, chunk...)
	}
	if len(buf) != size {
		return nil, fmt.Errorf("%w: %d of the announced %d bytes arrived", round.ErrBadUpdate, len(buf), size)
	}
	return buf, nil
}
