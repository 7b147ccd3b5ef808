package node

import (
	"context"
	"fmt"
	"time"

	"regionfl/client"
	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

// maxRevocations bounds the revocation list a node takes in: beyond it the
// coordinator is flooding, not revoking.
const maxRevocations = 100_000

// refreshRevocations takes in the revocations the coordinator relays; the
// node calls it whenever a poll answer gives another length of the list
// than the last it took in (a coordinator that lies about the length can
// only delay a revocation, which it can do anyway). Each
// must carry an operator's signature that verifies against the region CA
// (a forged one is logged and ignored), and each verified serial is pinned
// on disk before the node acts on anything else. The coordinator can
// therefore hold a revocation back, but never forge one or undo one this
// node has seen.
func (n *Node) refreshRevocations(ctx context.Context) error {
	var list []*pb.Revocation
	err := n.call(ctx, controlTimeout, func(ctx context.Context, conn client.Conn) error {
		resp, err := conn.Hospital.GetRevocations(ctx, &pb.GetRevocationsRequest{})
		list = resp.GetRevoked()
		return err
	})
	if err != nil {
		return fmt.Errorf("revocation list: %w", err)
	}
	if len(list) > maxRevocations {
		return n.untrusted("the revocation list", fmt.Sprintf("%d entries, more than %d", len(list), maxRevocations))
	}
	now := time.Now()
	n.mu.Lock()
	defer n.mu.Unlock()
	added := map[string]string{}
	for _, r := range list {
		if _, ok := n.state.Revoked[r.Serial]; ok {
			continue
		}
		by, err := identity.VerifyRevocation(n.cfg.CA, r.Certificate, r.Signature, r.Serial, r.Reason, r.SignedUnixMs, now)
		if err != nil {
			n.log.Warn("refusing what the coordinator served", "what", "the revocation of "+r.Serial, "reason", "not signed by an operator of the region CA: "+err.Error())
			continue
		}
		added[r.Serial] = fmt.Sprintf("%s (revoked by %s)", r.Reason, by)
	}
	if len(added) == 0 {
		return nil
	}
	for s, why := range added {
		n.state.Revoked[s] = why
	}
	if err := n.state.save(n.cfg.DataDir); err != nil {
		for s := range added {
			delete(n.state.Revoked, s)
		}
		return err
	}
	for s := range added {
		n.log.Info("certificate revocation pinned", "serial", s)
	}
	return nil
}

// notRevoked refuses a statement whose certificate an operator revoked
// (as far as this node has seen).
func (n *Node) notRevoked(what string, certDER []byte) error {
	serial, err := identity.CertificateSerial(certDER)
	if err != nil {
		return n.untrusted(what, err.Error())
	}
	return n.serialNotRevoked(what, serial)
}

func (n *Node) serialNotRevoked(what, serial string) error {
	n.mu.Lock()
	why, revoked := n.state.Revoked[serial]
	n.mu.Unlock()
	if revoked {
		return n.untrusted(what, fmt.Sprintf("signed with certificate %s, which is revoked: %s", serial, why))
	}
	return nil
}
