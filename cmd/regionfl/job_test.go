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
