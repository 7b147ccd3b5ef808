package fsm

import (
	"testing"

	pb "regionfl/proto/regionfl/v1"
)

// BenchmarkSnapshot measures what a snapshot costs Apply, which waits for
// Snapshot (raft runs it on the FSM goroutine), against the whole encoding
// (Snapshot then Persist, all of which Snapshot did before models and
// audit records were encoded in Persist). The state is a job of 40 model
// versions of 100,000 parameters and its audit trail.
func BenchmarkSnapshot(b *testing.B) {
	a := readyRegion(b)
	params := make([]float64, 100_000)
	for i := range params {
		params[i] = float64(i) * 1e-3
	}
	a.must(&pb.SubmitJobCommand{JobId: "k", Spec: &pb.JobSpec{MinHospitals: 2, Rounds: 40}, RequestId: "rk", InitialParams: params})
	for _, h := range []string{"h1", "h2", "h3"} {
		a.must(&pb.DecideJobCommand{JobId: "k", Hospital: h, Accept: true})
	}
	for r := uint32(1); r <= 40; r++ {
		a.must(&pb.OpenRoundCommand{JobId: "k", Round: r})
		a.must(&pb.ContributionCommand{JobId: "k", Round: r, Hospital: "h1", Digest: []byte{byte(r), 1}, Size: 5})
		a.must(&pb.ContributionCommand{JobId: "k", Round: r, Hospital: "h2", Digest: []byte{byte(r), 2}, Size: 5})
		a.must(&pb.CloseRoundCommand{JobId: "k", Round: r, Aggregate: []byte("agg"), AggregateDigest: []byte("ad"),
			Contributors: []string{"h1", "h2"}, Active: []string{"h1", "h3"}})
		params[0] = float64(r)
		a.must(&pb.CommitModelCommand{JobId: "k", Round: r, Version: r, Params: params, TotalSamples: 9})
	}
	var size int
	b.Run("apply-waits", func(b *testing.B) {
		for b.Loop() {
			if _, err := a.f.Snapshot(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("whole-encoding", func(b *testing.B) {
		for b.Loop() {
			size = len(snapshotBytes(b, a.f))
		}
		b.ReportMetric(float64(size)/1e6, "MB")
	})
}
