package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
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

// TestJobJSONMetrics: the clinical figures' keys, region and site alike,
// with the loss for the region only.
func TestJobJSONMetrics(t *testing.T) {
	m := &pb.ClinicalMetrics{N: 10, Accuracy: 0.8, Loss: 0.4, ModelVersion: 2}
	j := &pb.JobInfo{Spec: &pb.JobSpec{}, Rounds: []*pb.RoundInfo{{Round: 3, RegionMetrics: m,
		SiteMetrics: map[string]*pb.ClinicalMetrics{"hospital-1": m}}}}
	r := jobJSON(j)["rounds"].([]map[string]any)[0]
	region := r["region_metrics"].(map[string]any)
	site := r["site_metrics"].(map[string]any)["hospital-1"].(map[string]any)
	for _, k := range []string{"model_version", "n", "accuracy", "auroc", "sensitivity", "specificity", "alarms_per_100", "brier"} {
		if _, ok := region[k]; !ok {
			t.Errorf("region_metrics lacks %q", k)
		}
		if _, ok := site[k]; !ok {
			t.Errorf("site_metrics lacks %q", k)
		}
	}
	if region["loss"] != 0.4 || site["loss"] != nil {
		t.Errorf("loss: region %v, site %v; want 0.4 and none", region["loss"], site["loss"])
	}
}

func TestDescribeErrors(t *testing.T) {
	for in, want := range map[string]string{
		"rpc error: code = FailedPrecondition desc = fsm: command rejected: round 2 of job j is not the current round": "round 2 of job j is not the current round (FailedPrecondition)",
		"create region: rpc error: code = InvalidArgument desc = threshold: 1 is not between 2 and 3":                  "create region: threshold: 1 is not between 2 and 3 (InvalidArgument)",
		"--coordinator is required": "--coordinator is required",
	} {
		if got := describe(errors.New(in)); got != want {
			t.Errorf("%q: got %q, want %q", in, got, want)
		}
	}
}

// node inspect tells a site what a job on its CSV must say, and never a
// value of its rows.
func TestNodeInspect(t *testing.T) {
	file := filepath.Join(t.TempDir(), "site.csv")
	if err := os.WriteFile(file, []byte("hr,spo2,deteriorated,temp\n81.5,97,0,37.25\n120.25,88,1,38.5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := newNodeInspectCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetArgs([]string{"--data", file, "--label", "deteriorated"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, want := range []string{"2 rows (1 with label 1)", "inputs: 3", "hr", "spo2", "temp"} {
		if !strings.Contains(got, want) {
			t.Errorf("output lacks %q:\n%s", want, got)
		}
	}
	for _, value := range []string{"81.5", "120.25", "37.25", "38.5"} {
		if strings.Contains(got, value) {
			t.Errorf("output shows the value %s", value)
		}
	}
}

// job status shows what a fault did to a round: a leader change, who sent
// nothing, a decryption that needed another attempt.
func TestJobStatusShowsFaults(t *testing.T) {
	j := &pb.JobInfo{JobId: "job-1", State: "running", Accepted: []string{"h1", "h2", "h3"}, Offline: []string{"h3"},
		Rounds: []*pb.RoundInfo{
			{Round: 1, State: "committed", Contributors: []string{"h1", "h2"}, Missing: []string{"h3"}, Attempts: 2,
				MissingWhy: map[string]string{"h3": "offline since round 1 (opened 2026-12-01T08:00:00Z)"},
				Decryptors: []string{"h1", "h2"}, OpenedBy: "replica-1", ClosedBy: "replica-2"},
			{Round: 2, State: "aborted", Reason: "1 of the 2 updates needed arrived by the deadline", OpenedBy: "replica-2", ClosedBy: "replica-2"},
		}}
	var out bytes.Buffer
	printJob(&out, j)
	for _, want := range []string{"offline: h3", "replica-1→replica-2", "h3: offline since round 1 (opened 2026-12-01T08:00:00Z)", "decryption attempt 2, by h1,h2", "1 of the 2 updates needed"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("status lacks %q:\n%s", want, out.String())
		}
	}
	js := jobJSON(j)
	if !slices.Equal(js["offline"].([]string), []string{"h3"}) {
		t.Errorf("offline: %v", js["offline"])
	}
	r1 := js["rounds"].([]map[string]any)[0]
	if r1["opened_by"] != "replica-1" || r1["closed_by"] != "replica-2" || r1["attempts"] != uint32(2) ||
		r1["missing_why"].(map[string]string)["h3"] == "" {
		t.Errorf("round 1 JSON: %v", r1)
	}
}

// Exit codes, as documented: 0 done, 1 failed, 2 usage (an unknown
// command, flag or argument, or a required flag missing).
func TestExitCodes(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	for _, tc := range []struct {
		args []string
		want int
	}{
		{[]string{"--help"}, exitOK},
		{[]string{"job"}, exitOK}, // a group prints its help
		{[]string{"nosuch"}, exitUsage},
		{[]string{"job", "nosuch"}, exitUsage},
		{[]string{"job", "status"}, exitUsage},
		{[]string{"job", "status", "a", "b"}, exitUsage},
		{[]string{"job", "list", "--bogus"}, exitUsage},
		{[]string{"operator", "rekey"}, exitUsage},
		{[]string{"operator", "create-region"}, exitUsage},
		{[]string{"operator", "create-region", "--hospitals", "a,b", "--threshold", "2", "--revocation-max-age", "1s"}, exitUsage},
		{[]string{"operator", "publish-revocations", "extra"}, exitUsage},
		{[]string{"job", "submit", missing}, exitError},
		{[]string{"node", "inspect", "--data", missing, "--label", "y"}, exitError},
	} {
		var stdout, stderr bytes.Buffer
		got := run(context.Background(), tc.args, &stdout, &stderr)
		if got != tc.want {
			t.Errorf("regionfl %s: exit %d, want %d (%s)", strings.Join(tc.args, " "), got, tc.want, strings.TrimSpace(stderr.String()))
		}
		if got != exitOK && !strings.HasPrefix(stderr.String(), "regionfl: ") {
			t.Errorf("regionfl %s: stderr %q does not start with the one-line error", strings.Join(tc.args, " "), stderr.String())
		}
	}
}

// leader_changes counts every change of the replica leading the rounds.
func TestLeaderChanges(t *testing.T) {
	j := &pb.JobInfo{Spec: &pb.JobSpec{}, Rounds: []*pb.RoundInfo{
		{Round: 1, OpenedBy: "replica-1", ClosedBy: "replica-1"},
		{Round: 2, OpenedBy: "replica-1", ClosedBy: "replica-2"}, // failover mid-round
		{Round: 3, OpenedBy: "replica-2", ClosedBy: "replica-2"},
		{Round: 4, OpenedBy: "replica-3"}, // a transfer between rounds; still collecting
	}}
	if got := jobJSON(j)["leader_changes"]; got != 2 {
		t.Errorf("leader_changes %v, want 2", got)
	}
}

// With --json an error is JSON too, with the gRPC code when there is one.
func TestJSONErrors(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"job", "status", "--json"}, &stdout, &stderr); code != exitUsage {
		t.Fatalf("exit %d", code)
	}
	var out map[string]any
	if err := json.Unmarshal(stderr.Bytes(), &out); err != nil || out["error"] != "accepts 1 arg(s), received 0" || out["exit_code"] != float64(exitUsage) {
		t.Errorf("stderr %q: %v", stderr.String(), out)
	}
	if grpcCode(errors.New("rpc error: code = NotFound desc = job_id: no job")) != "NotFound" || describeText(errors.New("rpc error: code = NotFound desc = job_id: no job")) != "job_id: no job" {
		t.Error("the gRPC code or the sentence is not parsed out")
	}
}
