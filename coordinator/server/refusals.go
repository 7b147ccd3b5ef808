package server

import (
	"sync"
	"time"

	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

// refusalEvery is how often the same identity's refusal for the same
// method is recorded: enough for an auditor to see every refused identity
// and method, too rarely for a refused client to flood the log.
const refusalEvery = time.Minute

// refusals remembers when each identity and method was last recorded.
type refusals struct {
	mu   sync.Mutex
	last map[string]time.Time
}

// recordRefusal appends an authz.refused record to the audit log, from the
// leader, in the background (the refused call is not held up by Raft).
func (s *Server) recordRefusal(id identity.Identity, serial, method, reason string) {
	if !s.store.IsLeader() {
		return
	}
	key := id.String() + " " + method
	now := time.Now()
	s.refused.mu.Lock()
	if s.refused.last == nil {
		s.refused.last = map[string]time.Time{}
	}
	if now.Sub(s.refused.last[key]) < refusalEvery {
		s.refused.mu.Unlock()
		return
	}
	s.refused.last[key] = now
	if len(s.refused.last) > 10_000 {
		for k, t := range s.refused.last {
			if now.Sub(t) >= refusalEvery {
				delete(s.refused.last, k)
			}
		}
	}
	s.refused.mu.Unlock()
	go func() {
		err := s.store.Propose(&pb.AuthzRefusedCommand{
			Identity: id.String(), Method: method, Reason: reason, Serial: serial,
		})
		if err != nil {
			s.log.Warn("record refusal", "err", err)
		}
	}()
}
