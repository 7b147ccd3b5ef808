package server

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"regionfl/coordinator/round"
	"regionfl/coordinator/store"
)

// A refused update's metrics label comes from the round engine's sentinel
// errors, and the hospital still gets the status with its code and reason.
func TestRefusalLabels(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		err    error
		reason string
		code   codes.Code
	}{
		{fmt.Errorf("%w: h1 already contributed", round.ErrDuplicate), "duplicate", codes.AlreadyExists},
		{fmt.Errorf("%w: h1, job j", round.ErrNotAccepted), "not_accepted", codes.PermissionDenied},
		{fmt.Errorf("%w: %w: 3 of 9 bytes", round.ErrBadUpdate, round.ErrBadLength), "bad_length", codes.InvalidArgument},
		{fmt.Errorf("%w: %w: bytes", round.ErrBadUpdate, round.ErrDigestMismatch), "digest_mismatch", codes.InvalidArgument},
		{fmt.Errorf("%w: round 3", round.ErrRoundClosed), "wrong_round", codes.FailedPrecondition},
		{fmt.Errorf("%w: version 2", round.ErrStaleModel), "wrong_round", codes.FailedPrecondition},
		{fmt.Errorf("%w: parties: 2", round.ErrBadUpdate), "bad_encoding", codes.InvalidArgument},
		{&store.NotLeaderError{LeaderID: "replica-2"}, "not_leader", codes.FailedPrecondition},
		{fmt.Errorf("%w: update of 9 bytes", errTooSlow), "too_slow", codes.DeadlineExceeded},
		{errors.New("disk on fire"), "other", codes.Internal},
	} {
		err := refuseEngine(ctx, tc.err)
		if got := refusalReason(err); got != tc.reason {
			t.Errorf("%v: label %q, want %q", tc.err, got, tc.reason)
		}
		if st := status.Convert(err); st.Code() != tc.code || st.Message() == "" {
			t.Errorf("%v: status %v", tc.err, st)
		}
	}
	// A message that merely mentions a digest is not a digest mismatch.
	if got := refusalReason(status.Error(codes.InvalidArgument, "digest: want 32 bytes")); got != "other" {
		t.Errorf("a bare status labelled %q", got)
	}
	if got := refusalReason(refuse("too_slow", status.Error(codes.DeadlineExceeded, "slow"))); got != "too_slow" {
		t.Errorf("an explicit refusal labelled %q", got)
	}
}
