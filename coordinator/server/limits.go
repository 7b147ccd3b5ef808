package server

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"regionfl/identity"
	pb "regionfl/proto/regionfl/v1"
)

// costly are the RPCs that make a replica do real work (verify and fold
// ciphertexts, stream models and aggregates, propose jobs); each identity
// gets a token bucket for them, so one misbehaving certificate cannot
// starve the region. Cheap reads and long polls are not limited.
var costly = map[string]bool{
	pb.HospitalService_SubmitUpdate_FullMethodName:          true,
	pb.HospitalService_SubmitDecryptionShare_FullMethodName: true,
	pb.HospitalService_ApproveContributors_FullMethodName:   true,
	pb.HospitalService_GetAggregate_FullMethodName:          true,
	pb.HospitalService_FetchModel_FullMethodName:            true,
	pb.HospitalService_GetModelEvidence_FullMethodName:      true,
	pb.HospitalService_SubmitSealedShares_FullMethodName:    true,
	pb.ResearcherService_SubmitJob_FullMethodName:           true,
	pb.ResearcherService_GetModel_FullMethodName:            true,
	pb.ResearcherService_CancelJob_FullMethodName:           true,
}

// Limits are the per-identity budget for costly RPCs.
type Limits struct {
	PerSecond float64 // sustained rate
	Burst     int     // calls allowed at once
}

// DefaultLimits fit a hospital's round traffic (an update, an approval, a
// share, a few model fetches and a model's evidence per round) with a wide margin, even with the seconds-
// long rounds of an in-process demo.
var DefaultLimits = Limits{PerSecond: 50, Burst: 100}

// limiter holds one token bucket per identity; idle buckets are dropped so
// memory follows the number of active identities, not of all ever seen.
type limiter struct {
	limits Limits
	mu     sync.Mutex
	by     map[identity.Identity]*bucket
	sweep  time.Time
}

type bucket struct {
	lim  *rate.Limiter
	used time.Time
}

func newLimiter(l Limits) *limiter {
	return &limiter{limits: l, by: map[identity.Identity]*bucket{}}
}

// allow spends one token of id's bucket for a costly method.
func (l *limiter) allow(ctx context.Context, id identity.Identity, method string) error {
	if l == nil || !costly[method] {
		return nil
	}
	now := time.Now()
	l.mu.Lock()
	b := l.by[id]
	if b == nil {
		b = &bucket{lim: rate.NewLimiter(rate.Limit(l.limits.PerSecond), l.limits.Burst)}
		l.by[id] = b
	}
	b.used = now
	if now.Sub(l.sweep) > time.Minute {
		for k, v := range l.by {
			if now.Sub(v.used) > 10*time.Minute {
				delete(l.by, k)
			}
		}
		l.sweep = now
	}
	ok := b.lim.AllowN(now, 1)
	l.mu.Unlock()
	if !ok {
		return status.Errorf(codes.ResourceExhausted, "%s: rate limit of %g calls/s (burst %d) for %s exceeded; retry later",
			method, l.limits.PerSecond, l.limits.Burst, id)
	}
	return nil
}
