package main

import (
	"testing"

	pb "regionfl/proto/regionfl/v1"
)

// TestJobListRow: a finished 5-round job that also ran its statistics round
// and one aborted attempt shows 5/5 rounds, not its 7 round records.
func TestJobListRow(t *testing.T) {
	j := &pb.JobInfo{
		JobId: "job-1", State: "done", ModelVersion: 5,
		Spec:     &pb.JobSpec{Name: "ews", Rounds: 5},
		Accepted: []string{"hospital-1", "hospital-2", "hospital-3"},
		Rounds:   make([]*pb.RoundInfo, 7),
	}
	if got, want := jobListing.row(j), "job-1\tews\tdone\t5/5\t3"; got != want {
		t.Errorf("row %q, want %q", got, want)
	}
}
