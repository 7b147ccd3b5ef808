package server

import (
	"bytes"
	"crypto/sha256"
	"sync"

	"regionfl/coordinator/fsm"
)

// sealedRelay holds the sealed Shamir shares of the current key ceremony
// on the replica that received them, outside the Raft log: the log
// records each dealing's digests and signatures (fsm.Dealing), and the
// bytes wait here until their committee member has read them. A region of
// N hospitals and a committee of c seals N·c shares (730 MB at N = 1,024,
// c = 5): through the log, every replica would write, replicate and
// snapshot them for a ceremony that reads each once. A new leader starts
// with none; Poll asks each sender for its shares again (they keep the
// exact bytes), and every share is checked against the logged digest
// before it is kept. The shares are sealed to their committee member
// (HPKE): the relay holds nothing it can open.
type sealedRelay struct {
	mu     sync.Mutex
	epoch  uint32
	shares map[string][]relayed // by sender, then committee point
}

// relayed is one sealed share and its digest (nil once read by its
// committee member).
type relayed struct {
	share  []byte
	digest [sha256.Size]byte
}

func newSealedRelay() *sealedRelay { return &sealedRelay{shares: map[string][]relayed{}} }

// put keeps the shares sender sealed to the committee of key epoch epoch,
// one per point, dropping those of any other epoch. A share whose member
// already holds its key (ready[k]) is not kept.
func (r *sealedRelay) put(epoch uint32, sender string, shares [][]byte, ready []bool) {
	kept := make([]relayed, len(shares))
	for k, b := range shares {
		if k >= len(ready) || !ready[k] {
			kept[k] = relayed{share: b, digest: sha256.Sum256(b)}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if epoch != r.epoch {
		r.epoch, r.shares = epoch, map[string][]relayed{}
	}
	r.shares[sender] = kept
}

// get returns the share sender sealed to the committee member at point
// k+1 of key epoch epoch, if this replica holds the one the log records
// (d).
func (r *sealedRelay) get(epoch uint32, sender string, k int, d *fsm.Dealing) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.holds(epoch, sender, k, d) {
		return nil
	}
	return r.shares[sender][k].share
}

func (r *sealedRelay) holds(epoch uint32, sender string, k int, d *fsm.Dealing) bool {
	s := r.shares[sender]
	return epoch == r.epoch && k < len(s) && k < len(d.Digests) && s[k].share != nil && bytes.Equal(s[k].digest[:], d.Digests[k])
}

// lacks reports whether this replica misses a share of d, sender's
// dealing in key epoch epoch, to a committee member that is not ready
// yet (ready[k]).
func (r *sealedRelay) lacks(epoch uint32, sender string, d *fsm.Dealing, ready []bool) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, done := range ready {
		if !done && !r.holds(epoch, sender, k, d) {
			return true
		}
	}
	return false
}

// forget lets go of the shares sealed to the committee member at point
// k+1 of key epoch epoch: it holds its key and never reads them again.
func (r *sealedRelay) forget(epoch uint32, k int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if epoch != r.epoch {
		return
	}
	for _, s := range r.shares {
		if k < len(s) {
			s[k] = relayed{}
		}
	}
}
