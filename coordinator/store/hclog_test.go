package store

import (
	"testing"
	"time"
)

// The errors Raft repeats while a peer is down are logged with backoff:
// the first at once, then after 1 s, 2 s, 4 s ... up to a minute, each
// with the number left out; another peer, or another message, is not held
// back, and a message gone for two minutes starts over.
func TestRepeatsBackOff(t *testing.T) {
	r := &repeats{last: map[string]*repeat{}}
	t0 := time.Unix(1_800_000_000, 0)
	peerA := []any{"peer", "replica-2", "error", "refused"}
	peerB := []any{"peer", "replica-3"}
	var logged []time.Duration
	counted, since := 0, 0                 // repeats reported, and attempts since the last line
	for ms := 0; ms <= 20_000; ms += 650 { // Raft's pace: every 650 ms
		now := t0.Add(time.Duration(ms) * time.Millisecond)
		ok, n := r.allow("failed to heartbeat to", peerA, now)
		since++
		if ok {
			logged = append(logged, now.Sub(t0))
			counted += 1 + n
			since = 0
		}
	}
	// 31 attempts in 20 s: logged at 0 s, then after >= 1, 2, 4, 8 s, each
	// line counting the repeats left out before it.
	if len(logged) != 5 || counted+since != 31 {
		t.Fatalf("logged at %v (%d counted, %d since), want 5 lines accounting for all 31", logged, counted, since)
	}
	for i := 1; i < len(logged); i++ {
		if gap := logged[i] - logged[i-1]; gap < time.Second<<(i-1) {
			t.Errorf("line %d came %v after the one before, want at least %v", i, gap, time.Second<<(i-1))
		}
	}
	if ok, _ := r.allow("failed to heartbeat to", peerB, t0.Add(20*time.Second)); !ok {
		t.Error("the first failure for another peer was held back")
	}
	if ok, _ := r.allow("entering leader state", nil, t0.Add(20*time.Second)); !ok {
		t.Error("a message Raft does not repeat was held back")
	}
	if ok, n := r.allow("failed to heartbeat to", peerA, t0.Add(20*time.Second+3*time.Minute)); !ok || n != 0 {
		t.Errorf("after a quiet spell: %v %d, want a fresh start", ok, n)
	}
}
