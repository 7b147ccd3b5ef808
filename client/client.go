// Package client connects to a coordinator cluster over mutual TLS and
// follows the leader: a replica that is not the leader answers
// FailedPrecondition with the leader's address in the "regionfl-leader"
// trailer, and the call is retried there. Nodes and CLIs use it alike.
//
// A hint is followed only to an address the client was configured with:
// one compromised replica must not be able to redirect every hospital to a
// server of its choosing. A hint naming any other address ends the call
// with ErrUnlistedLeader.
package client

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"regionfl/models"
	pb "regionfl/proto/regionfl/v1"
)

// ChunkSize is the largest chunk of an encrypted update, an aggregate or an
// audit export in one gRPC message, on both sides of the wire: senders cut
// at it and receivers refuse larger chunks.
const ChunkSize = 1 << 20

// ErrUnlistedLeader means a replica named a leader outside the configured
// coordinator addresses, and the client did not follow it.
var ErrUnlistedLeader = errors.New("client: leader hint names an address that is not a configured coordinator")

// ErrUnreachable means no configured coordinator answered within
// ReachTimeout: every address refused the connection, timed out or failed
// the TLS handshake (a wrong CA, say).
var ErrUnreachable = errors.New("cannot reach any coordinator")

// ReachTimeout is how long a call tries the configured addresses, none of
// which answers, before it gives up with ErrUnreachable. A replica that
// answers at all (even "not the leader") keeps the call going until its
// context ends.
const ReachTimeout = 5 * time.Second

// LeaderKey is the trailer that names the leader's gRPC address.
const LeaderKey = "regionfl-leader"

// MaxMessage caps every gRPC message; encrypted updates travel in chunks
// below it.
const MaxMessage = 4 << 20

// MaxModelMessage caps a message carrying a model's parameters (FetchModel,
// GetModel): eight bytes a parameter for the largest model a job may name,
// and room for the rest. Replicas may send that much; a client accepts only
// what the model it expects needs (ModelMessage).
const MaxModelMessage = 9*models.MaxParams + 1<<20

// ModelMessage lets one call receive a model of numParams parameters
// (beyond MaxMessage, never beyond what that model needs).
func ModelMessage(numParams int) grpc.CallOption {
	return grpc.MaxCallRecvMsgSize(min(MaxModelMessage, max(MaxMessage, 9*numParams+1<<20)))
}

// MaxEvidenceMessage bounds the evidence of one round (GetModelEvidence):
// an aggregate and t decryption shares of the largest model.
const MaxEvidenceMessage = 1 << 30

// EvidenceMessage lets one call receive a round's evidence of size bytes
// (beyond MaxMessage, never beyond MaxEvidenceMessage).
func EvidenceMessage(size int) grpc.CallOption {
	return grpc.MaxCallRecvMsgSize(min(MaxEvidenceMessage, max(MaxMessage, size+1<<20)))
}

// Client holds connections to the replicas of one region.
type Client struct {
	tls *tls.Config

	mu     sync.Mutex
	addrs  []string
	conns  map[string]*grpc.ClientConn
	leader string               // the address that answered last
	failed map[string]time.Time // addresses that were just unreachable
}

// New prepares a client for the given replica addresses; it dials lazily.
func New(addrs []string, cfg *tls.Config) (*Client, error) {
	if len(addrs) == 0 {
		return nil, errors.New("client: no coordinator address")
	}
	return &Client{tls: cfg, addrs: slices.Clone(addrs), conns: map[string]*grpc.ClientConn{}, leader: addrs[0], failed: map[string]time.Time{}}, nil
}

// Close closes every connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	for a, conn := range c.conns {
		conn.Close()
		delete(c.conns, a)
	}
	return nil
}

func (c *Client) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if conn, ok := c.conns[addr]; ok {
		return conn, nil
	}
	conn, err := grpc.NewClient(addr,
		grpc.WithTransportCredentials(credentials.NewTLS(c.tls)),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(MaxMessage), grpc.MaxCallSendMsgSize(MaxMessage)),
		// A dead replica must cost seconds, not gRPC's default 20 s
		// connect timeout, and a half-open connection must be noticed.
		grpc.WithConnectParams(grpc.ConnectParams{
			Backoff:           backoff.Config{BaseDelay: 200 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
			MinConnectTimeout: 2 * time.Second,
		}),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 5 * time.Second, PermitWithoutStream: true}),
		grpc.WithChainUnaryInterceptor(captureTrailer),
		grpc.WithChainStreamInterceptor(captureStreamTrailer),
	)
	if err != nil {
		return nil, err
	}
	c.conns[addr] = conn
	return conn, nil
}

// Conn is what a call gets: typed stubs on one replica's connection.
type Conn struct {
	Hospital   pb.HospitalServiceClient
	Researcher pb.ResearcherServiceClient
	Operator   pb.OperatorServiceClient
	Auditor    pb.AuditorServiceClient
}

// trailerKey carries, in the context Do gives a call, where the call's
// trailer goes: a "not the leader" answer names the leader there.
type trailerKey struct{}

func trailerOf(ctx context.Context) *metadata.MD {
	md, _ := ctx.Value(trailerKey{}).(*metadata.MD)
	return md
}

// captureTrailer keeps every unary call's trailer for Do.
func captureTrailer(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	if md := trailerOf(ctx); md != nil {
		opts = append(opts, grpc.Trailer(md))
	}
	return invoker(ctx, method, req, reply, cc, opts...)
}

// captureStreamTrailer keeps a stream's trailer for Do once a receive
// ends it (with the server's status or io.EOF).
func captureStreamTrailer(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, opts ...grpc.CallOption) (grpc.ClientStream, error) {
	cs, err := streamer(ctx, desc, cc, method, opts...)
	md := trailerOf(ctx)
	if err != nil || md == nil {
		return cs, err
	}
	return &trailerStream{ClientStream: cs, md: md}, nil
}

type trailerStream struct {
	grpc.ClientStream
	md *metadata.MD
}

func (s *trailerStream) RecvMsg(m any) error {
	err := s.ClientStream.RecvMsg(m)
	if err != nil {
		*s.md = s.ClientStream.Trailer()
	}
	return err
}

// Do runs fn against the leader, following "not leader" answers and trying
// the other replicas when one is unreachable, until ctx ends.
//
// When no address answers at all for ReachTimeout (each one tried), Do
// returns ErrUnreachable naming the addresses and the last error, rather
// than wait out ctx.
func (c *Client) Do(ctx context.Context, fn func(ctx context.Context, conn Conn) error) error {
	backoff := 50 * time.Millisecond
	var (
		answered   bool                // some replica answered during this call
		firstMiss  time.Time           // when the first address failed
		unanswered = map[string]bool{} // addresses that failed during this call
	)
	for attempt := 0; ; attempt++ {
		c.mu.Lock()
		addr := c.leader
		c.mu.Unlock()
		cc, err := c.conn(addr)
		if err != nil {
			return err
		}
		md := metadata.MD{}
		conn := Conn{
			Hospital:   pb.NewHospitalServiceClient(cc),
			Researcher: pb.NewResearcherServiceClient(cc),
			Operator:   pb.NewOperatorServiceClient(cc),
			Auditor:    pb.NewAuditorServiceClient(cc),
		}
		err = fn(context.WithValue(ctx, trailerKey{}, &md), conn)
		if err == nil {
			return nil
		}
		st := status.Convert(err)
		switch st.Code() {
		case codes.FailedPrecondition:
			hint := md.Get(LeaderKey)
			if len(hint) == 0 || hint[0] == "" {
				if !IsNotLeader(err) {
					return err
				}
				c.next(addr) // no leader known yet: wait and look around
			} else if !c.listed(hint[0]) {
				return fmt.Errorf("%w: %s answered that the leader is %q; add that address to the coordinator list if it is a replica of the region", ErrUnlistedLeader, addr, hint[0])
			} else {
				c.setLeader(hint[0])
			}
		case codes.Unavailable:
			c.markFailed(addr)
			c.next(addr)
			if firstMiss.IsZero() {
				firstMiss = time.Now()
			}
			unanswered[addr] = true
			if !answered && len(unanswered) == len(c.addrs) && time.Since(firstMiss) >= ReachTimeout {
				return fmt.Errorf("%w (tried %s): %s", ErrUnreachable, strings.Join(c.addrs, ", "), st.Message())
			}
		case codes.DeadlineExceeded:
			// The call's time ran out on this replica: it may hang (a
			// partitioned or paused leader keeps its connections open).
			// The next call starts at the next replica, which sends it
			// back here if this one still leads.
			c.markFailed(addr)
			c.next(addr)
			return err
		default:
			return err
		}
		if st.Code() != codes.Unavailable {
			answered = true
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last error: %v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, time.Second)
	}
}

// IsNotLeader reports whether err is a replica's "not the leader" answer.
func IsNotLeader(err error) bool {
	st := status.Convert(err)
	return st.Code() == codes.FailedPrecondition && strings.HasPrefix(st.Message(), NotLeaderPrefix)
}

// NotLeaderPrefix starts every "not the leader" status message.
const NotLeaderPrefix = "not the leader"

// setLeader follows a leader hint, unless the hinted replica was just
// unreachable (a follower may still name a leader that died): then the
// next replica is tried.
func (c *Client) setLeader(addr string) {
	c.mu.Lock()
	failed := time.Since(c.failed[addr]) < 3*time.Second
	if !failed {
		c.leader = addr
	}
	c.mu.Unlock()
	if failed {
		c.next(c.leader)
	}
}

// listed reports whether addr is one of the configured addresses.
func (c *Client) listed(addr string) bool {
	return slices.Contains(c.addrs, addr)
}

func (c *Client) markFailed(addr string) {
	c.mu.Lock()
	c.failed[addr] = time.Now()
	c.mu.Unlock()
}

// next moves to the replica after addr in the configured list.
func (c *Client) next(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, a := range c.addrs {
		if a == addr {
			c.leader = c.addrs[(i+1)%len(c.addrs)]
			return
		}
	}
	c.leader = c.addrs[0]
}

// Receive reads a server stream to its end, handing each message to fn.
// (Do keeps the stream's trailer, to follow a "not the leader" hint.)
func Receive[T any](stream grpc.ServerStreamingClient[T], fn func(*T) error) error {
	for {
		m, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := fn(m); err != nil {
			return err
		}
	}
}
