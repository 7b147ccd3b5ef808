package web

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"regionfl/coordinator/fsm"
	"regionfl/jobspec"
	pb "regionfl/proto/regionfl/v1"
)

// The views below are plain copies of replicated state, built under
// FSM.Read: templates never touch fsm.State.

type regionView struct {
	Present   bool
	Hospitals []string
	Threshold int
	Ceremony  string
}

type replicaView struct {
	ID, Addr string
}

type jobRow struct {
	ID, Name, Purpose, LegalBasis, State, Reason string
	SubmittedBy, Submitted                       string
	RoundsDone, RoundsTotal                      int
	ModelVersion                                 uint32
	Live                                         bool
}

type indexView struct {
	Region   regionView
	Replicas []replicaView
	Jobs     []jobRow
	Index    uint64
}

type roundRow struct {
	Number       uint32
	Label        string // "1", or "statistics" for the scaling round
	State        string
	ModelVersion uint32
	Contributors int // in the manifest (or accepted so far while collecting)
	Sent         int // accepted updates
	Bytes        string
	TotalSamples string
	UpdateNorm   string
	Reason       string
	Opened       string
	Collect      string // opened → closed
	Decrypt      string // closed → committed
	Decryptors   string
}

type participantCell struct {
	Mark, Title, Class string
}

type participantRow struct {
	Hospital string
	Cells    []participantCell
}

type budgetRow struct {
	Hospital string
	Rounds   int
	Epsilon  string
}

type refusalRow struct {
	Hospital, Reason string
}

type jobView struct {
	jobRow
	Dataset, Strategy, Scaling, ModelHash string
	MinHospitals                          uint32
	Accepted                              []string
	Undecided                             []string
	Refused                               []refusalRow
	Rounds                                []roundRow
	RoundLabels                           []string
	Participants                          []participantRow
	DP                                    bool
	NoiseMultiplier, Delta, ClipNorm      string
	Budget                                []budgetRow
	Plots                                 []PlotView
	Alarms                                *alarmView
}

// alarmView is the alarm burden of the newest model with region figures:
// each threshold's figures from the encrypted histogram, and the row the
// job reports at.
type alarmView struct {
	ModelVersion uint32
	Patients     uint64
	Target       string // the job's target sensitivity, "" for its alert threshold
	Missed       bool   // no threshold reaches the target
	Rows         []alarmRow
}

type alarmRow struct {
	Threshold, Sensitivity, Specificity, PPV, AlarmsPer100 string
	Reported                                               bool
}

func fmtMs(ms int64) string {
	if ms == 0 {
		return ""
	}
	return time.UnixMilli(ms).UTC().Format("2006-01-02 15:04:05Z")
}

func fmtDur(fromMs, toMs int64) string {
	if fromMs == 0 || toMs == 0 || toMs < fromMs {
		return ""
	}
	d := time.Duration(toMs-fromMs) * time.Millisecond
	switch {
	case d < time.Second:
		return d.String()
	case d < time.Minute:
		return fmt.Sprintf("%.1fs", d.Seconds())
	default:
		return d.Round(time.Second).String()
	}
}

func fmtBytes(n uint64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := uint64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func fmtFloat(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return fmt.Sprint(v)
	}
	return fmt.Sprintf("%.4g", v)
}

func newJobRow(j *fsm.Job) jobRow {
	return jobRow{
		ID:           j.ID,
		Name:         j.Spec.GetName(),
		Purpose:      j.Spec.GetPurpose(),
		LegalBasis:   j.Spec.GetLegalBasis(),
		State:        j.State,
		Reason:       j.Reason,
		SubmittedBy:  j.SubmittedBy,
		Submitted:    fmtMs(j.SubmittedMs),
		RoundsDone:   j.TrainedRounds(),
		RoundsTotal:  int(j.Spec.GetRounds()),
		ModelVersion: j.Latest().Version,
		Live:         !j.Finished(),
	}
}

func buildIndex(s *fsm.State) indexView {
	v := indexView{Index: s.Index}
	if r := s.Region; r != nil {
		v.Region = regionView{Present: true, Hospitals: slices.Clone(r.Hospitals), Threshold: r.Threshold,
			Ceremony: fmt.Sprintf("key epoch %d: %s", r.Epoch, r.StepName())}
		if m := r.MembersOf(r.Epoch); m != nil && len(m) < len(r.Hospitals) {
			var out []string
			for _, h := range r.Hospitals {
				if !slices.Contains(m, h) {
					out = append(out, h)
				}
			}
			v.Region.Ceremony += fmt.Sprintf(" (%d of %d hospitals; sitting out: %s)", len(m), len(r.Hospitals), strings.Join(out, ", "))
		}
		if c := r.CommitteeOf(r.Epoch); len(c) < len(r.MembersOf(r.Epoch)) {
			v.Region.Ceremony += fmt.Sprintf("; decryption committee: %s", strings.Join(c, ", "))
		}
	}
	for id, addr := range s.Replicas {
		v.Replicas = append(v.Replicas, replicaView{ID: id, Addr: addr})
	}
	sort.Slice(v.Replicas, func(i, k int) bool { return v.Replicas[i].ID < v.Replicas[k].ID })
	for i := len(s.JobOrder) - 1; i >= 0; i-- { // newest first
		if j := s.Jobs[s.JobOrder[i]]; j != nil {
			v.Jobs = append(v.Jobs, newJobRow(j))
		}
	}
	return v
}

// modelOf returns the model version committed by round n, or nil.
func modelOf(j *fsm.Job, n uint32) *fsm.Model {
	for _, m := range j.Models[1:] { // version 0 is the initial model
		if m.Round == n {
			return m
		}
	}
	return nil
}

func roundLabel(r *fsm.Round) string {
	if r.Number == jobspec.StatsRound {
		return "statistics"
	}
	return fmt.Sprint(r.Number)
}

func buildJob(s *fsm.State, j *fsm.Job) jobView {
	v := jobView{
		jobRow:       newJobRow(j),
		Dataset:      j.Spec.GetDataset(),
		Strategy:     jobspec.Strategy(j.Spec).WithDefaults().Name,
		Scaling:      j.Spec.GetScaling(),
		ModelHash:    j.ModelHash,
		MinHospitals: j.Spec.GetMinHospitals(),
		Accepted:     slices.Clone(j.Accepted),
	}
	if s.Region != nil {
		for _, h := range s.Region.Hospitals {
			if !j.Decided(h) {
				v.Undecided = append(v.Undecided, h)
			}
		}
	}
	for h, why := range j.Refused {
		v.Refused = append(v.Refused, refusalRow{Hospital: h, Reason: why})
	}
	sort.Slice(v.Refused, func(a, b int) bool { return v.Refused[a].Hospital < v.Refused[b].Hospital })

	// Rounds, and the per-round series the plots draw.
	var norm, contrib, samples, secs Series
	norm = Series{Name: "update norm"}
	contrib = Series{Name: "contributors"}
	samples = Series{Name: "samples"}
	secs = Series{Name: "round time (s)"}
	for _, r := range j.Rounds {
		row := roundRow{
			Number: r.Number, Label: roundLabel(r), State: r.State, ModelVersion: r.ModelVersion,
			Contributors: len(r.Contributors), Sent: len(r.Contributions), Reason: r.Reason,
			Opened: fmtMs(r.OpenedMs), Collect: fmtDur(r.OpenedMs, r.ClosedMs),
			Decryptors: strings.Join(r.Asked, ", "),
		}
		if r.State == fsm.RoundCollecting {
			row.Contributors = len(r.Contributions)
		}
		var bytes uint64
		for _, c := range r.Contributions {
			bytes += c.Size
		}
		row.Bytes = fmtBytes(bytes)
		x := float64(r.Number)
		if m := modelOf(j, r.Number); m != nil {
			row.TotalSamples = fmt.Sprint(m.TotalSamples)
			row.UpdateNorm = fmtFloat(m.UpdateNorm)
			row.Decrypt = fmtDur(r.ClosedMs, m.CommittedMs)
			norm.Points = append(norm.Points, Point{x, m.UpdateNorm})
			samples.Points = append(samples.Points, Point{x, float64(m.TotalSamples)})
			if m.CommittedMs > r.OpenedMs && r.OpenedMs > 0 {
				secs.Points = append(secs.Points, Point{x, float64(m.CommittedMs-r.OpenedMs) / 1000})
			}
		}
		if r.Number != jobspec.StatsRound && (r.State == fsm.RoundDecrypting || r.State == fsm.RoundCommitted) {
			contrib.Points = append(contrib.Points, Point{x, float64(row.Contributors)}) // closed rounds: the manifest
		}
		v.Rounds = append(v.Rounds, row)
		v.RoundLabels = append(v.RoundLabels, row.Label)
	}

	// Participants: one row per hospital that accepted or took part, one
	// cell per round.
	hs := slices.Clone(j.Accepted)
	for _, r := range j.Rounds {
		for _, c := range r.Contributions {
			hs = append(hs, c.Hospital)
		}
		hs = append(hs, r.Asked...)
	}
	slices.Sort(hs)
	hs = slices.Compact(hs)
	for _, h := range hs {
		pr := participantRow{Hospital: h}
		for _, r := range j.Rounds {
			pr.Cells = append(pr.Cells, cellOf(r, h))
		}
		v.Participants = append(v.Participants, pr)
	}

	// Privacy budget.
	if nm := j.Spec.GetDpNoiseMultiplier(); nm > 0 {
		v.DP = true
		v.NoiseMultiplier = fmtFloat(nm)
		v.Delta = fmt.Sprintf("%g", j.Spec.GetDpDelta())
		v.ClipNorm = fmtFloat(j.Spec.GetClipNorm())
		spent := j.EpsilonSpent()
		for _, h := range hs {
			n := j.ContributedRounds(h)
			v.Budget = append(v.Budget, budgetRow{Hospital: h, Rounds: n, Epsilon: fmtEps(spent[h], n)})
		}
	}

	// The region's clinical figures, decrypted from the sites' encrypted
	// metric sums: x is the model version they describe.
	acc, auroc, loss := Series{Name: "accuracy"}, Series{Name: "AUROC"}, Series{Name: "log loss"}
	for _, r := range j.Rounds {
		if m := r.RegionMetrics; m != nil {
			x := float64(m.ModelVersion)
			acc.Points = append(acc.Points, Point{x, m.Accuracy})
			auroc.Points = append(auroc.Points, Point{x, m.Auroc})
			loss.Points = append(loss.Points, Point{x, m.Loss})
		}
	}
	v.Alarms = alarmsOf(j)
	v.Plots = append(v.Plots,
		NewPlot("Accuracy and AUROC on the sites' tests, by model version (encrypted sums)", acc, auroc),
		NewPlot("Log loss on the sites' tests, by model version", loss),
		NewPlot("Update norm per round", norm),
		NewPlot("Contributors per round", contrib),
		NewPlot("Samples per round", samples),
		NewPlot("Round duration (open to commit, s)", secs),
	)
	return v
}

func alarmsOf(j *fsm.Job) *alarmView {
	var m *pb.ClinicalMetrics
	for i := len(j.Rounds) - 1; i >= 0 && m == nil; i-- {
		m = j.Rounds[i].RegionMetrics
	}
	b, ok := jobspec.AlarmBurdenOf(j.Spec, m)
	if !ok {
		return nil
	}
	a := &alarmView{ModelVersion: b.ModelVersion, Patients: b.Patients, Missed: b.Target > 0 && !b.Found}
	if b.Target > 0 {
		a.Target = fmtFloat(b.Target)
	}
	for _, op := range b.Points {
		a.Rows = append(a.Rows, alarmRow{Threshold: fmt.Sprintf("%.2f", op.Threshold), Sensitivity: fmt.Sprintf("%.2f", op.Sensitivity),
			Specificity: fmt.Sprintf("%.2f", op.Specificity), PPV: fmt.Sprintf("%.2f", op.PPV), AlarmsPer100: fmt.Sprintf("%.1f", op.AlarmsPer100),
			Reported: b.Found && op.Threshold == b.Reported.Threshold})
	}
	return a
}

func fmtEps(eps float64, rounds int) string {
	if rounds == 0 {
		return "0"
	}
	return fmtFloat(eps)
}

func cellOf(r *fsm.Round, h string) participantCell {
	sent := r.Contributed(h)
	counted := slices.Contains(r.Contributors, h)
	asked := slices.Contains(r.Asked, h)
	var c participantCell
	switch {
	case counted:
		c = participantCell{Mark: "✓", Title: "update counted in the aggregate", Class: "counted"}
	case sent && (r.State == fsm.RoundCollecting):
		c = participantCell{Mark: "↑", Title: "update received, round still collecting", Class: "sent"}
	case sent:
		c = participantCell{Mark: "–", Title: "update received but not in the manifest", Class: "late"}
	default:
		c = participantCell{Mark: "·", Title: "no update", Class: "absent"}
	}
	if asked {
		c.Mark += "*"
		c.Title += "; asked for a decryption share"
		if _, gave := r.Shares[h]; gave {
			c.Title += " (given)"
		}
	}
	return c
}
