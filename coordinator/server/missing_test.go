package server

import (
	"strings"
	"testing"
	"time"

	"regionfl/coordinator/fsm"
)

// job status says why an accepted hospital has nothing counted in a round:
// no update by the deadline, offline (silent for the rounds the engine
// stops waiting after, since the first of them), or sent but not counted.
func TestMissingWhy(t *testing.T) {
	t0 := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC).UnixMilli()
	round := func(n uint32, sent []string, counted []string) *fsm.Round {
		r := &fsm.Round{Number: n, State: fsm.RoundCommitted, OpenedMs: t0 + int64(n)*60_000, Contributors: counted}
		for _, h := range sent {
			r.Contributions = append(r.Contributions, fsm.Contribution{Hospital: h})
		}
		return r
	}
	j := &fsm.Job{Accepted: []string{"h1", "h2", "h3"}, Rounds: []*fsm.Round{
		round(1, []string{"h1", "h2", "h3"}, []string{"h1", "h2", "h3"}),
		round(2, []string{"h1", "h2"}, []string{"h1", "h2"}),
		round(3, []string{"h1", "h2"}, []string{"h1", "h2"}),
		round(4, []string{"h1", "h2"}, []string{"h1", "h2"}),
		round(5, []string{"h1", "h2", "h3"}, []string{"h1", "h2"}),
	}}
	for _, tc := range []struct {
		i    int
		h    string
		want string
	}{
		{0, "h3", ""},
		{1, "h3", "no update by the deadline"},
		{2, "h3", "no update by the deadline"}, // silent in 1 of the 2 rounds before
		{3, "h3", "offline since round 2 (opened 2026-12-01T08:02:00Z)"},
		{4, "h3", "sent, not counted"},
		{4, "h1", ""},
	} {
		got := missingWhy(j, tc.i, tc.h)
		if (tc.want == "") != (got == "") || !strings.HasPrefix(got, tc.want) {
			t.Errorf("round %d, %s: %q, want %q", tc.i+1, tc.h, got, tc.want)
		}
	}
}
