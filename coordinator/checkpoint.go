package coordinator

import (
	"context"
	"crypto"
	"encoding/json"
	"errors"
	"log/slog"
	"time"

	"regionfl/audit"
	"regionfl/coordinator/fsm"
	"regionfl/coordinator/store"
	pb "regionfl/proto/regionfl/v1"
)

// Audit checkpoints: while a replica leads, it signs a tree head of the
// audit log with its own key every checkpointRecords new records, or every
// checkpointAge when fewer arrived, and commits it. Every replica checks a
// checkpoint against its own copy of the log before keeping it, so a
// checkpoint vouches for the log all of them hold.
const (
	checkpointRecords = 64
	checkpointAge     = time.Minute
)

func (r *Replica) checkpoints(ctx context.Context, log *slog.Logger) {
	signer, ok := r.cfg.Cert.PrivateKey.(crypto.Signer)
	if !ok || len(r.cfg.Cert.Certificate) == 0 {
		log.Error("audit checkpoints disabled: the replica's key cannot sign")
		return
	}
	tick, age := time.Second, checkpointAge
	if r.cfg.Fast {
		tick, age = 100*time.Millisecond, 2*time.Second
	}
	var lastAt time.Time
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(tick):
		}
		if !r.store.IsLeader() {
			continue
		}
		var (
			l          *audit.Log
			size, last uint64
		)
		r.store.FSM().Read(func(s *fsm.State) {
			l, size = s.Audit, s.Audit.Len()
			if cps := s.Audit.Checkpoints(); len(cps) > 0 {
				last = cps[len(cps)-1].Size
			}
		})
		if size == last || (size-last < checkpointRecords && time.Since(lastAt) < age) {
			continue
		}
		th, err := l.SignHead(signer, r.cfg.Cert.Certificate[0], size, time.Now().UnixMilli())
		if err != nil {
			log.Warn("audit checkpoint", "err", err)
			continue
		}
		b, err := json.Marshal(th)
		if err != nil {
			continue
		}
		err = r.store.Propose(&pb.CheckpointCommand{TreeHead: b})
		switch {
		case err == nil:
			lastAt = time.Now()
			log.Info("audit checkpoint", "size", size, "root", th.RootHash[:16])
		case !errors.Is(err, store.ErrNotLeader):
			log.Warn("audit checkpoint", "err", err)
		}
	}
}
