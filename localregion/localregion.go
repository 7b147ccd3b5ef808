// Package localregion runs a whole region in one process: coordinator
// replicas and hospital nodes talking gRPC over mutual TLS on loopback,
// with a throwaway CA. regionfl demo and the coordinator's tests run their
// regions with it. Replicas and nodes can be stopped and started again on
// their data directories; a restarted replica keeps its Raft and gRPC
// addresses and comes back from its own log.
//
// It is the one package besides cmd that links both sides of the trust
// boundary, for running them side by side; neither side imports it.
package localregion

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"regionfl/client"
	"regionfl/coordinator"
	"regionfl/he"
	"regionfl/identity"
	"regionfl/node"
	"regionfl/node/dataset"
)

// certValidity is how long the region's certificates last: longer than any
// run in one process.
const certValidity = 24 * time.Hour

// Config describes a region to start.
type Config struct {
	// Replicas is the number of coordinator replicas (replica-1, ...); the
	// first bootstraps, the others join it.
	Replicas int
	// Sites are the hospitals, one node each, named by the site's name;
	// nodes run only once StartNode is called.
	Sites []dataset.Site
	// Dir holds every replica's and node's data directory.
	Dir    string
	Logger *slog.Logger // nil: discard
	// Replica, if set, adjusts replica i's configuration (0-based) before
	// its first start; restarts reuse it.
	Replica func(i int, cfg *coordinator.Config)
	// Node, if set, adjusts hospital i's node configuration before each
	// start.
	Node func(i int, cfg *node.Config)
	// RevocationMaxAge is the region's limit on the age of the newest
	// signed revocation list (0: none; see client.PublishRevocationList).
	RevocationMaxAge time.Duration
	// Committee is how many hospitals of each key epoch hold the key
	// shares (0: every hospital).
	Committee int
}

// Region is a running region.
type Region struct {
	CA    *identity.CA
	Names []string // the hospitals, in the order of Config.Sites

	cfg      Config
	mu       sync.Mutex
	cfgs     []coordinator.Config
	replicas []*coordinator.Replica // nil while stopped
	addrs    []string               // gRPC addresses, fixed for the region's life
	nodes    []*runningNode         // nil while stopped
}

type runningNode struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// Start starts the replicas and waits until every one is a voter with its
// address known, or ctx ends.
func Start(ctx context.Context, cfg Config) (*Region, error) {
	switch {
	case cfg.Replicas < 1:
		return nil, fmt.Errorf("localregion: %d replicas", cfg.Replicas)
	case cfg.Dir == "":
		return nil, errors.New("localregion: no directory")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	ca, err := identity.NewCA("local region", certValidity)
	if err != nil {
		return nil, err
	}
	r := &Region{CA: ca, cfg: cfg, nodes: make([]*runningNode, len(cfg.Sites))}
	for _, s := range cfg.Sites {
		r.Names = append(r.Names, s.Name)
	}
	for i := range cfg.Replicas {
		id := fmt.Sprintf("replica-%d", i+1)
		cert, err := ca.Issue(identity.Identity{Name: id, Role: identity.RoleCoordinator}, certValidity)
		if err != nil {
			r.Close()
			return nil, err
		}
		c := coordinator.Config{ID: id, DataDir: filepath.Join(cfg.Dir, id), RaftAddr: "127.0.0.1:0", GRPCAddr: "127.0.0.1:0",
			Bootstrap: i == 0, Cert: cert, CA: ca.Pool(), Logger: cfg.Logger, Fast: true}
		if i > 0 {
			c.Join = []string{r.addrs[0]}
		}
		if cfg.Replica != nil {
			cfg.Replica(i, &c)
		}
		rep, err := coordinator.Start(context.Background(), c)
		if err != nil {
			r.Close()
			return nil, fmt.Errorf("localregion: %s: %w", id, err)
		}
		// A restart reuses the addresses and the directory, and rejoins
		// through its own log rather than through a peer.
		c.RaftAddr, c.GRPCAddr, c.Join, c.Bootstrap = rep.RaftAddr(), rep.GRPCAddr(), nil, false
		r.cfgs = append(r.cfgs, c)
		r.replicas = append(r.replicas, rep)
		r.addrs = append(r.addrs, rep.GRPCAddr())
	}
	if err := r.waitVoters(ctx); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

// waitVoters waits until every replica is a voter with its gRPC address
// recorded: on loopback that takes a second or two, so 30 s means trouble.
func (r *Region) waitVoters(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if i, ok := r.Leader(); ok {
			rs, err := r.Replica(i).Store().Replicas()
			ready := 0
			for _, x := range rs {
				if x.Voter && x.GRPCAddr != "" {
					ready++
				}
			}
			if err == nil && ready == r.cfg.Replicas {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("localregion: waiting for %d voters: %w", r.cfg.Replicas, ctx.Err())
		case <-tick.C:
		}
	}
}

// Addrs are the replicas' gRPC addresses, what clients and nodes dial.
func (r *Region) Addrs() []string { return r.addrs }

// Replica is replica i (0-based), nil while stopped.
func (r *Region) Replica(i int) *coordinator.Replica {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.replicas[i]
}

// Replicas are the replicas in order, nil for one stopped.
func (r *Region) Replicas() []*coordinator.Replica {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.replicas)
}

// ReplicaConfig is replica i's configuration as a restart uses it.
func (r *Region) ReplicaConfig(i int) coordinator.Config { return r.cfgs[i] }

// Leader is the running replica that leads now, if any.
func (r *Region) Leader() (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for i, rep := range r.replicas {
		if rep != nil && rep.IsLeader() {
			return i, true
		}
	}
	return 0, false
}

// StopReplica stops replica i; its data directory stays.
func (r *Region) StopReplica(i int) error {
	r.mu.Lock()
	rep := r.replicas[i]
	r.replicas[i] = nil
	r.mu.Unlock()
	if rep == nil {
		return nil
	}
	return rep.Stop()
}

// RestartReplica starts replica i again on its data directory and
// addresses.
func (r *Region) RestartReplica(i int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.replicas[i] != nil {
		return fmt.Errorf("localregion: %s is running", r.cfgs[i].ID)
	}
	rep, err := coordinator.Start(context.Background(), r.cfgs[i])
	if err != nil {
		return fmt.Errorf("localregion: restarting %s: %w", r.cfgs[i].ID, err)
	}
	r.replicas[i] = rep
	return nil
}

// Client connects to every replica with a new certificate for name and
// role, which it returns too (for signing as that identity).
func (r *Region) Client(name string, role identity.Role) (*client.Client, tls.Certificate, error) {
	cert, err := r.CA.Issue(identity.Identity{Name: name, Role: role}, certValidity)
	if err != nil {
		return nil, tls.Certificate{}, err
	}
	c, err := client.New(r.addrs, identity.ClientConfig(cert, r.CA.Pool()))
	return c, cert, err
}

// CreateRegion has an operator create the region of every site's hospital
// with decryption threshold t, on the smallest parameter set that holds
// them (he.ParamsFor), and publish its first signed revocation list, as
// regionfl operator create-region does.
func (r *Region) CreateRegion(ctx context.Context, t int) error {
	op, cert, err := r.Client("operator", identity.RoleOperator)
	if err != nil {
		return err
	}
	defer op.Close()
	params, err := he.ParamsFor(len(r.Names))
	if err != nil {
		return err
	}
	req, err := client.CreateRegionRequest(cert, params.Name(), r.Names, uint32(t), uint32(r.cfg.Committee), r.cfg.RevocationMaxAge)
	if err != nil {
		return err
	}
	err = op.Do(ctx, func(ctx context.Context, conn client.Conn) error {
		_, err := conn.Operator.CreateRegion(ctx, req)
		return err
	})
	if err != nil {
		return err
	}
	return r.PublishRevocations(ctx)
}

// PublishRevocations has an operator sign and publish the region's
// revocation list as it is now (client.PublishRevocationList).
func (r *Region) PublishRevocations(ctx context.Context) error {
	op, cert, err := r.Client("operator", identity.RoleOperator)
	if err != nil {
		return err
	}
	defer op.Close()
	_, err = client.PublishRevocationList(ctx, op, cert, r.CA.Pool(), time.Now)
	return err
}

// StartNode runs hospital i's node on its data directory (again, after
// StopNode: what it keeps on disk survives).
func (r *Region) StartNode(i int) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.nodes[i] != nil {
		return fmt.Errorf("localregion: %s is running", r.Names[i])
	}
	cert, err := r.CA.Issue(identity.Identity{Name: r.Names[i], Role: identity.RoleHospital}, certValidity)
	if err != nil {
		return err
	}
	cfg := node.Config{ID: r.Names[i], Coordinators: r.addrs, Cert: cert, CA: r.CA.Pool(),
		DataDir: filepath.Join(r.cfg.Dir, r.Names[i]), Data: r.cfg.Sites[i], Logger: r.cfg.Logger}
	if r.cfg.Node != nil {
		r.cfg.Node(i, &cfg)
	}
	n, err := node.New(cfg)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	rn := &runningNode{cancel: cancel, done: make(chan struct{})}
	go func() { defer close(rn.done); n.Run(ctx) }()
	r.nodes[i] = rn
	return nil
}

// StopNode ends hospital i's node and waits until it stopped.
func (r *Region) StopNode(i int) {
	r.mu.Lock()
	n := r.nodes[i]
	r.nodes[i] = nil
	r.mu.Unlock()
	if n != nil {
		n.cancel()
		<-n.done
	}
}

// Close stops every node, then every replica.
func (r *Region) Close() {
	for i := range r.nodes {
		r.StopNode(i)
	}
	for i := range r.replicas {
		r.StopReplica(i)
	}
}
