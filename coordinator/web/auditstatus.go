package web

import (
	"crypto/x509"
	"fmt"
	"sync"
	"time"

	"regionfl/audit"
	"regionfl/coordinator/fsm"
	"regionfl/identity"
)

// AuditFromState returns an Audit callback for Config that reports the
// replicated audit log (fsm.State.Audit): its record count and its last
// checkpoint, which counts as verified when its signature verifies (signer
// certificate issued by roots, with the coordinator role) and its root hash
// matches this replica's own log at that size. The last result is kept
// until a new checkpoint arrives, so a page view costs one lock and a
// comparison.
func AuditFromState(read func(func(*fsm.State)), roots *x509.CertPool) func() AuditStatus {
	var (
		mu        sync.Mutex
		cached    AuditStatus
		cachedFor audit.TreeHead
	)
	return func() AuditStatus {
		var (
			st       AuditStatus
			last     audit.TreeHead
			has      bool
			missing  bool
			computed bool
			rootErr  error
			root     string
		)
		read(func(s *fsm.State) {
			if s.Audit == nil {
				missing = true
				return
			}
			st.Records = int(s.Audit.Len())
			cps := s.Audit.Checkpoints()
			if len(cps) == 0 {
				return
			}
			last, has = cps[len(cps)-1], true
			mu.Lock()
			same := cachedFor == last
			mu.Unlock()
			if !same {
				c, err := s.Audit.CommitmentAt(last.Size)
				root, rootErr, computed = c.Root.String(), err, true
			}
		})
		switch {
		case missing:
			return AuditStatus{Err: "this replica's state holds no audit log"}
		case !has:
			return st
		}
		var out AuditStatus
		if computed {
			out = verifyCheckpoint(last, root, rootErr, roots)
			mu.Lock()
			cached, cachedFor = out, last
			mu.Unlock()
		} else {
			mu.Lock()
			out = cached
			mu.Unlock()
		}
		out.Records = st.Records
		return out
	}
}

func verifyCheckpoint(th audit.TreeHead, root string, rootErr error, roots *x509.CertPool) AuditStatus {
	st := AuditStatus{
		LastCheckpointSize: th.Size,
		LastCheckpointTime: time.UnixMilli(th.TimeUnixMs),
		LastCheckpointRoot: th.RootHash,
	}
	switch {
	case rootErr != nil:
		st.Err = fmt.Sprintf("checkpoint at size %d: %v", th.Size, rootErr)
	case root != th.RootHash:
		st.Err = fmt.Sprintf("checkpoint at size %d does not match this replica's log (root %s)", th.Size, root)
	case roots == nil:
		st.Err = "no region CA given: the checkpoint's signer cannot be checked"
	default:
		id, err := audit.VerifyTreeHead(th, roots)
		switch {
		case err != nil:
			st.Err = err.Error()
		case id.Role != identity.RoleCoordinator:
			st.Err = fmt.Sprintf("checkpoint signed by %s, not a coordinator", id)
		default:
			st.Verified = true
		}
	}
	return st
}
