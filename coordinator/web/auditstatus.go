package web

import (
	"crypto/x509"
	"sync"
	"time"

	"regionfl/audit"
	"regionfl/coordinator/fsm"
)

// AuditFromState returns an Audit callback for Config that reports the
// replicated audit log (fsm.State.Audit): its record count and its last
// checkpoint, which counts as verified when its signature verifies (a
// coordinator's certificate issued by roots). That the checkpoint's root
// and job index match this replica's log at its size needs no check here:
// the log keeps no checkpoint that does not (audit.Log.AddCheckpoint, also
// on restoring a snapshot). The result is kept until a new checkpoint
// arrives, so a page view costs one lock and a comparison.
func AuditFromState(read func(func(*fsm.State)), roots *x509.CertPool) func() AuditStatus {
	var (
		mu        sync.Mutex
		cached    AuditStatus
		cachedFor audit.TreeHead
	)
	return func() AuditStatus {
		var (
			records      int
			last         audit.TreeHead
			has, missing bool
		)
		read(func(s *fsm.State) {
			if s.Audit == nil {
				missing = true
				return
			}
			records = int(s.Audit.Len())
			if cps := s.Audit.Checkpoints(); len(cps) > 0 {
				last, has = cps[len(cps)-1], true
			}
		})
		switch {
		case missing:
			return AuditStatus{Err: "this replica's state holds no audit log"}
		case !has:
			return AuditStatus{Records: records}
		}
		mu.Lock()
		if cachedFor != last {
			cached, cachedFor = verifyCheckpoint(last, roots), last
		}
		out := cached
		mu.Unlock()
		out.Records = records
		return out
	}
}

func verifyCheckpoint(th audit.TreeHead, roots *x509.CertPool) AuditStatus {
	st := AuditStatus{
		LastCheckpointSize: th.Size,
		LastCheckpointTime: time.UnixMilli(th.TimeUnixMs),
		LastCheckpointRoot: th.RootHash,
	}
	if roots == nil {
		st.Err = "no region CA given: the checkpoint's signer cannot be checked"
		return st
	}
	// VerifyTreeHead also refuses a signer that is not a coordinator.
	if _, err := audit.VerifyTreeHead(th, roots); err != nil {
		st.Err = err.Error()
		return st
	}
	st.Verified = true
	return st
}
