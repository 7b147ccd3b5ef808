package node

import (
	"context"
	"fmt"
	"slices"
	"time"

	"regionfl/client"
	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

// maxRevocations bounds the revocation list a node takes in: beyond it the
// coordinator is flooding, not revoking.
const maxRevocations = identity.MaxListedRevocations

// refreshRevocations takes in the revocations the coordinator relays; the
// node calls it whenever a poll answer gives another length of the list,
// or another issue time of the signed list, than the last it took in.
// Each revocation must carry an operator's signature that verifies
// against the region CA (a forged one is logged and ignored), and each
// verified serial is pinned on disk before the node acts on anything
// else. The coordinator can therefore hold a revocation back, but never
// forge one or undo one this node has seen.
//
// The operator's signed list (every revoked serial at a time, bound to
// the region) bounds how long it can hold one back: the node pins the
// newest list's issue time and every serial it names, refuses a list
// older than one it has seen or one that leaves out a pinned serial, and
// in a region with a revocation maximum age acts only while its list is
// younger than that (revocationsFresh). listTaken is false when the
// signed list waits for the region to be pinned (it is bound to it).
func (n *Node) refreshRevocations(ctx context.Context) (listTaken bool, err error) {
	var resp *pb.GetRevocationsResponse
	err = n.call(ctx, controlTimeout, func(ctx context.Context, conn client.Conn) error {
		var err error
		resp, err = conn.Hospital.GetRevocations(ctx, &pb.GetRevocationsRequest{})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("revocation list: %w", err)
	}
	if len(resp.Revoked) > maxRevocations {
		return false, n.untrusted("the revocation list", fmt.Sprintf("%d entries, more than %d", len(resp.Revoked), maxRevocations))
	}
	now := time.Now()
	added := map[string]string{}
	for _, r := range resp.Revoked {
		if n.isRevoked(r.Serial) {
			continue
		}
		by, err := identity.VerifyRevocation(n.cfg.CA, r.Certificate, r.Signature, r.Serial, r.Reason, r.SignedUnixMs, now)
		if err != nil {
			n.log.Warn("refusing what the coordinator served", "what", "the revocation of "+r.Serial, "reason", "not signed by an operator of the region CA: "+err.Error())
			continue
		}
		added[r.Serial] = fmt.Sprintf("%s (revoked by %s)", r.Reason, by)
	}
	// A refused list still leaves the revocations that verified on their
	// own pinned: a revocation only ever takes away.
	listMs, listTaken, listErr := n.takeList(resp.List, added, now)
	n.mu.Lock()
	defer n.mu.Unlock()
	for s := range added {
		if _, ok := n.state.Revoked[s]; ok {
			delete(added, s)
		}
	}
	if len(added) == 0 && listMs <= n.state.RevocationListMs {
		return listTaken, listErr
	}
	prevMs := n.state.RevocationListMs
	for s, why := range added {
		n.state.Revoked[s] = why
	}
	n.state.RevocationListMs = max(prevMs, listMs)
	if err := n.state.save(n.cfg.DataDir); err != nil {
		for s := range added {
			delete(n.state.Revoked, s)
		}
		n.state.RevocationListMs = prevMs
		return false, err
	}
	for s := range added {
		n.log.Info("certificate revocation pinned", "serial", s)
	}
	if listMs > prevMs {
		n.log.Info("revocation list pinned", "issued_unix_ms", listMs, "serials", len(resp.List.GetSerials()))
	}
	return listTaken, listErr
}

// takeList verifies the operator's signed revocation list l and adds to
// added the serials it names that the node has not pinned; it returns the
// list's issue time (0 when there is none to take) and whether the node
// could check it (the region is pinned).
func (n *Node) takeList(l *pb.RevocationList, added map[string]string, now time.Time) (issuedMs int64, checked bool, err error) {
	n.mu.Lock()
	region, heldMs := n.state.RegionDigest, n.state.RevocationListMs
	pinned := make([]string, 0, len(n.state.Revoked))
	for s := range n.state.Revoked {
		pinned = append(pinned, s)
	}
	n.mu.Unlock()
	switch {
	case len(region) != 32:
		return 0, false, nil // bound to the region: checked once it is pinned
	case l == nil:
		return 0, true, nil
	case l.IssuedUnixMs < heldMs:
		return 0, false, n.untrusted("the revocation list", fmt.Sprintf("issued at %s, before the list of %s this node holds (a list never goes back)",
			time.UnixMilli(l.IssuedUnixMs).UTC().Format(time.RFC3339), time.UnixMilli(heldMs).UTC().Format(time.RFC3339)))
	case l.IssuedUnixMs == heldMs:
		return 0, true, nil
	}
	by, err := identity.VerifyRevocationList(n.cfg.CA, l.Certificate, l.Signature, [32]byte(region), l.IssuedUnixMs, l.Serials, now)
	if err != nil {
		return 0, false, n.untrusted("the revocation list", "not signed by an operator of the region CA for this region: "+err.Error())
	}
	// A revoked operator's key (stolen, say) must not keep the list fresh.
	signer, err := identity.CertificateSerial(l.Certificate)
	if err != nil {
		return 0, false, n.untrusted("the revocation list", err.Error())
	}
	_, revokedNow := added[signer]
	if _, listed := slices.BinarySearch(l.Serials, signer); revokedNow || listed || n.isRevoked(signer) {
		return 0, false, n.untrusted("the revocation list", fmt.Sprintf("signed by %s with certificate %s, which is revoked", by, signer))
	}
	for _, s := range pinned {
		if _, found := slices.BinarySearch(l.Serials, s); !found {
			return 0, false, n.untrusted("the revocation list", fmt.Sprintf("it leaves out %s, which this node holds revoked (a revocation is never undone)", s))
		}
	}
	for _, s := range l.Serials {
		if _, ok := added[s]; !ok && !n.isRevoked(s) {
			added[s] = fmt.Sprintf("named in the revocation list %s signed at %s", by, time.UnixMilli(l.IssuedUnixMs).UTC().Format(time.RFC3339))
		}
	}
	return l.IssuedUnixMs, true, nil
}

// revocationsFresh refuses all work for the region while the newest
// signed revocation list this node holds is older than the region's
// revocation maximum age: a coordinator withholding a revocation from
// every hospital can do so only until then. Work resumes once an operator
// publishes a fresh list (regionfl operator publish-revocations).
func (n *Node) revocationsFresh(now time.Time) error {
	n.mu.Lock()
	maxAge := time.Duration(n.state.RevocationMaxAgeS) * time.Second
	issued := n.state.RevocationListMs
	n.mu.Unlock()
	if maxAge == 0 {
		return nil
	}
	age := now.Sub(time.UnixMilli(issued))
	if issued != 0 && age <= maxAge {
		return nil
	}
	reason := "no operator-signed revocation list yet"
	if issued != 0 {
		reason = fmt.Sprintf("the newest operator-signed revocation list this node holds was issued %s ago (%s)",
			age.Round(time.Second), time.UnixMilli(issued).UTC().Format(time.RFC3339))
	}
	reason += fmt.Sprintf("; the region allows %v, so this node does no work for it until an operator publishes a fresh list", maxAge)
	if n.staleLogged != issued+1 { // once per list
		n.staleLogged = issued + 1
		return n.untrusted("work for the region", reason)
	}
	return fmt.Errorf("%w: work for the region: %s", ErrUntrusted, reason)
}

// isRevoked reports whether the node holds serial revoked.
func (n *Node) isRevoked(serial string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	_, ok := n.state.Revoked[serial]
	return ok
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
