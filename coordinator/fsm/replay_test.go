package fsm

import (
	"bytes"
	"errors"
	"slices"
	"testing"

	"google.golang.org/protobuf/proto"

	pb "regionfl/proto/regionfl/v1"
)

type cmd struct {
	m proto.Message
}

// Every command applied a second time (a client's retry proposed again, a
// leader's decision made twice) leaves the state as the first left it.
func TestCommandAppliedTwiceChangesStateOnce(t *testing.T) {
	open := cmd{&pb.OpenRoundCommand{JobId: "j", Round: 1, DeadlineUnixMs: 20}}
	contrib := func(h, d string) cmd {
		return cmd{&pb.ContributionCommand{JobId: "j", Round: 1, Hospital: h, Digest: []byte(d), Size: 5}}
	}
	closeRound := cmd{&pb.CloseRoundCommand{JobId: "j", Round: 1, Aggregate: []byte("agg"),
		AggregateDigest: []byte("ad"), Contributors: []string{"h1", "h2"}, Active: []string{"h1", "h2"}}}
	collected := []cmd{open, contrib("h1", "d1"), contrib("h2", "d2")}
	decrypting := append(collected[:len(collected):len(collected)], closeRound)
	tests := []struct {
		name  string
		setup []cmd
		c     cmd
	}{
		{"register replica", nil, cmd{&pb.RegisterReplicaCommand{Id: "r1", GrpcAddr: "a"}}},
		{"submit job", nil, cmd{&pb.SubmitJobCommand{JobId: "j2", Spec: &pb.JobSpec{}, RequestId: "r2", InitialParams: []float64{0}}}},
		{"decide job", []cmd{{&pb.SubmitJobCommand{JobId: "j2", Spec: &pb.JobSpec{}, InitialParams: []float64{0}}}},
			cmd{&pb.DecideJobCommand{JobId: "j2", Hospital: "h1", Accept: true}}},
		{"key ready", nil, cmd{&pb.KeyReadyCommand{Hospital: "h1"}}},
		{"open round", nil, open},
		{"contribution", []cmd{open}, contrib("h1", "d1")},
		{"close round", collected, closeRound},
		{"decryption share", decrypting, cmd{&pb.DecryptionShareCommand{JobId: "j", Round: 1, Attempt: 1, Hospital: "h1", Share: []byte("s")}}},
		{"retry decryption", decrypting, cmd{&pb.RetryDecryptionCommand{JobId: "j", Round: 1, Attempt: 2, Active: []string{"h3"}}}},
		{"commit model", decrypting, cmd{&pb.CommitModelCommand{JobId: "j", Round: 1, Version: 1, Params: []float64{1, 2}, TotalSamples: 9}}},
		{"abort round", collected, cmd{&pb.AbortRoundCommand{JobId: "j", Round: 1, Reason: "test"}}},
		{"end job", nil, cmd{&pb.EndJobCommand{JobId: "j", State: JobCancelled}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			a := readyRegion(t)
			if tc.name == "retry decryption" {
				// A threshold of one lets h3 alone decrypt after h1.
				a.f.state.Region.Threshold = 1
				c := proto.Clone(closeRound.m).(*pb.CloseRoundCommand)
				c.Active = []string{"h1"}
				tc.setup = append(slices.Clone(collected), cmd{c})
			}
			for _, c := range tc.setup {
				a.must(c.m)
			}
			a.must(tc.c.m)
			once := stripIndex(t, snapshotBytes(t, a.f))
			if err := a.apply(tc.c.m); err != nil && !errors.Is(err, ErrRejected) {
				t.Fatalf("second apply: %v", err)
			}
			if !bytes.Equal(once, stripIndex(t, snapshotBytes(t, a.f))) {
				t.Fatal("the second apply changed the state")
			}
		})
	}
}

// A new decryption attempt may only ask hospitals never asked in the round:
// a hospital gives one share per round.
func TestRetryDecryptionAsksNewHospitals(t *testing.T) {
	a := readyRegion(t)
	a.f.state.Region.Threshold = 1
	a.must(&pb.OpenRoundCommand{JobId: "j", Round: 1, DeadlineUnixMs: 20})
	a.must(&pb.ContributionCommand{JobId: "j", Round: 1, Hospital: "h1", Digest: []byte("d1")})
	a.must(&pb.ContributionCommand{JobId: "j", Round: 1, Hospital: "h2", Digest: []byte("d2")})
	a.must(&pb.CloseRoundCommand{JobId: "j", Round: 1, Contributors: []string{"h1", "h2"}, Active: []string{"h1"}})
	a.must(&pb.DecryptionShareCommand{JobId: "j", Round: 1, Attempt: 1, Hospital: "h1", Share: []byte("s")})
	retryAt := int64(a.idx+1) * 1000 // the time applier gives the next entry
	a.must(&pb.RetryDecryptionCommand{JobId: "j", Round: 1, Attempt: 2, Active: []string{"h2"}})
	for _, h := range []string{"h1", "h2"} {
		err := a.apply(&pb.RetryDecryptionCommand{JobId: "j", Round: 1, Attempt: 3, Active: []string{h}})
		if !errors.Is(err, ErrRejected) {
			t.Errorf("attempt 3 asking %s again: %v, want a rejection", h, err)
		}
	}
	a.f.Read(func(s *State) {
		r := s.Jobs["j"].Current()
		if r.Attempt != 2 || r.AttemptMs != retryAt || len(r.Shares) != 0 || len(r.Asked) != 2 {
			t.Fatalf("attempt %d from %d, %d shares, asked %v", r.Attempt, r.AttemptMs, len(r.Shares), r.Asked)
		}
	})
	// An old attempt's share is refused.
	if err := a.apply(&pb.DecryptionShareCommand{JobId: "j", Round: 1, Attempt: 1, Hospital: "h2", Share: []byte("s")}); !errors.Is(err, ErrRejected) {
		t.Errorf("a share for attempt 1 during attempt 2: %v", err)
	}
}
