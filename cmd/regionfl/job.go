package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"regionfl/client"
	"regionfl/jobspec"
	"regionfl/models"
	pb "regionfl/proto/regionfl/v1"
)

func newJobCmd() *cobra.Command {
	cmd := &cobra.Command{Use: "job", Short: "Submit and follow training jobs"}
	cmd.AddCommand(newJobSubmitCmd(), newJobStatusCmd(), newJobWatchCmd(), newJobListCmd(), newJobCancelCmd())
	return cmd
}

func newJobSubmitCmd() *cobra.Command {
	var (
		cf        clientFlags
		asJSON    bool
		requestID string
	)
	cmd := &cobra.Command{
		Use:   "submit FILE",
		Short: "Submit a job described in a YAML file",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			spec, err := jobspec.Load(args[0])
			if err != nil {
				return fmt.Errorf("%s: %w", args[0], err)
			}
			if requestID == "" {
				requestID = fmt.Sprintf("%s-%d", spec.Name, time.Now().UnixNano())
			}
			// Signed here, with the researcher's key: hospitals accept
			// only the job as signed, whatever the coordinator relays.
			cert, _, err := cf.load()
			if err != nil {
				return err
			}
			req, err := client.SubmitJobRequest(cert, spec, requestID)
			if err != nil {
				return err
			}
			resp, err := request(cmd.Context(), &cf, func(ctx context.Context, conn client.Conn) (*pb.SubmitJobResponse, error) {
				return conn.Researcher.SubmitJob(ctx, req)
			})
			if err != nil {
				return err
			}
			id, scalingFrom := resp.GetJobId(), resp.GetScalingFrom()
			warnings := jobspec.Warnings(spec)
			if asJSON {
				out := map[string]any{"job_id": id, "warnings": nonNil(warnings)}
				if scalingFrom != "" {
					out["scaling_from"] = scalingFrom
				}
				return json.NewEncoder(cmd.OutOrStdout()).Encode(out)
			}
			for _, w := range warnings {
				fmt.Fprintln(cmd.ErrOrStderr(), "warning:", w)
			}
			if scalingFrom != "" {
				fmt.Fprintf(cmd.ErrOrStderr(), "region scaling: reusing the statistics committed for job %s (a site's statistics are decrypted once per dataset)\n", scalingFrom)
			}
			fmt.Fprintln(cmd.OutOrStdout(), id)
			return nil
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	cmd.Flags().StringVar(&requestID, "request-id", "", "idempotency key: resubmitting with the same key returns the same job")
	return cmd
}

func call(ctx context.Context, c *client.Client, fn func(context.Context, client.Conn) error) error {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	return c.Do(ctx, fn)
}

// request dials the coordinators of cf, makes one call through the leader
// (with call's deadline) and hangs up: the whole life of most commands'
// connection.
func request[T any](ctx context.Context, cf *clientFlags, fn func(context.Context, client.Conn) (T, error)) (T, error) {
	var out T
	c, err := cf.dial()
	if err != nil {
		return out, err
	}
	defer c.Close()
	err = call(ctx, c, func(ctx context.Context, conn client.Conn) error {
		var err error
		out, err = fn(ctx, conn)
		return err
	})
	return out, err
}

func getJob(ctx context.Context, c *client.Client, id string) (*pb.JobInfo, error) {
	var info *pb.JobInfo
	err := call(ctx, c, func(ctx context.Context, conn client.Conn) error {
		resp, err := conn.Researcher.GetJob(ctx, &pb.GetJobRequest{JobId: id})
		info = resp.GetJob()
		return err
	})
	return info, err
}

func newJobStatusCmd() *cobra.Command {
	var (
		cf     clientFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "status ID",
		Short: "Show a job: state, hospitals' decisions, rounds",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			info, err := getJob(cmd.Context(), c, args[0])
			if err != nil {
				return err
			}
			if asJSON {
				return printJSON(cmd.OutOrStdout(), jobJSON(info))
			}
			printJob(cmd.OutOrStdout(), info)
			return nil
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON")
	return cmd
}

func newJobListCmd() *cobra.Command { return newListCmd(jobListing) }

var jobListing = listing[*pb.JobInfo]{
	use:   "list",
	short: "List jobs",
	fetch: func(ctx context.Context, conn client.Conn) ([]*pb.JobInfo, error) {
		resp, err := conn.Researcher.ListJobs(ctx, &pb.ListJobsRequest{})
		return resp.GetJobs(), err
	},
	json:   jobJSON,
	header: "JOB\tNAME\tSTATE\tROUNDS\tHOSPITALS",
	row: func(j *pb.JobInfo) string {
		// ROUNDS counts trained rounds (the model version): the
		// statistics round and aborted attempts train none.
		// HOSPITALS are those that accepted the job.
		return fmt.Sprintf("%s\t%s\t%s\t%d/%d\t%d", j.JobId, j.Spec.GetName(), j.State, j.ModelVersion, j.Spec.GetRounds(), len(j.Accepted))
	},
}

func newJobCancelCmd() *cobra.Command {
	var (
		cf     clientFlags
		reason string
	)
	cmd := &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a job",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			_, err := request(cmd.Context(), &cf, func(ctx context.Context, conn client.Conn) (*pb.CancelJobResponse, error) {
				return conn.Researcher.CancelJob(ctx, &pb.CancelJobRequest{JobId: args[0], Reason: reason})
			})
			return err
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().StringVar(&reason, "reason", "", "why the job is cancelled (recorded)")
	return cmd
}

func newJobWatchCmd() *cobra.Command {
	var (
		cf     clientFlags
		asJSON bool
	)
	cmd := &cobra.Command{
		Use:   "watch ID",
		Short: "Follow a job's rounds until it ends (a progress bar on a terminal, lines otherwise)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := cf.dial()
			if err != nil {
				return err
			}
			defer c.Close()
			out := cmd.OutOrStdout()
			tty := false
			if f, ok := out.(*os.File); ok && !asJSON {
				tty = term.IsTerminal(int(f.Fd()))
			}
			var last *pb.JobInfo
			seen := map[uint32]string{}
			err = c.Do(cmd.Context(), func(ctx context.Context, conn client.Conn) error {
				stream, err := conn.Researcher.WatchJob(ctx, &pb.WatchJobRequest{JobId: args[0]})
				if err != nil {
					return err
				}
				return client.Receive(stream, func(m *pb.WatchJobResponse) error {
					last = m.Job
					if asJSON {
						return json.NewEncoder(out).Encode(jobJSON(m.Job))
					}
					for _, r := range m.Job.Rounds {
						if seen[r.Round] == r.State {
							continue
						}
						seen[r.Round] = r.State
						if tty {
							fmt.Fprint(out, "\r\033[K")
						}
						fmt.Fprintf(out, "round %d %s: %d hospitals %s\n", r.Round, r.State, len(r.Contributors), r.Reason)
					}
					if tty {
						fmt.Fprint(out, "\r\033[K"+progressBar(m.Job, 30))
					}
					return nil
				})
			})
			if tty {
				fmt.Fprintln(out)
			}
			if err != nil {
				return err
			}
			if last != nil && last.State != "done" {
				return fmt.Errorf("job %s ended %s: %s", last.JobId, last.State, last.Reason)
			}
			return nil
		},
	}
	cf.register(cmd.Flags())
	cmd.Flags().BoolVar(&asJSON, "json", false, "print one JSON object per change")
	return cmd
}

// progressBar renders committed rounds out of the job's total.
func progressBar(j *pb.JobInfo, width int) string {
	total := int(max(j.Spec.GetRounds(), 1))
	done := int(j.ModelVersion)
	filled := min(width, done*width/total)
	return fmt.Sprintf("[%s%s] %d/%d rounds  %s", strings.Repeat("#", filled), strings.Repeat(".", width-filled), done, total, j.State)
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// metricsJSON is the stable JSON form of clinical figures.
func metricsJSON(m *pb.ClinicalMetrics) map[string]any {
	ops := []map[string]any{}
	for _, op := range jobspec.OperatingPointsFromProto(m) {
		ops = append(ops, operatingPointJSON(op))
	}
	return map[string]any{"model_version": m.ModelVersion, "n": m.N, "accuracy": m.Accuracy, "auroc": m.Auroc,
		"sensitivity": m.Sensitivity, "specificity": m.Specificity, "alarms_per_100": m.AlarmsPer_100, "brier": m.Brier,
		"ppv": m.Ppv, "operating_points": ops}
}

func operatingPointJSON(op models.OperatingPoint) map[string]any {
	return map[string]any{"threshold": op.Threshold, "sensitivity": op.Sensitivity, "specificity": op.Specificity,
		"ppv": op.PPV, "alarms_per_100": op.AlarmsPer100}
}

// metricsText is clinical figures on one line.
func metricsText(m *pb.ClinicalMetrics) string {
	return fmt.Sprintf("v%d acc %.3f AUROC %.3f sens %.2f spec %.2f PPV %.2f alarms/100 %.1f",
		m.ModelVersion, m.Accuracy, m.Auroc, m.Sensitivity, m.Specificity, m.Ppv, m.AlarmsPer_100)
}

// latestRegionMetrics are the region's figures of the newest model that
// has them, or nil.
func latestRegionMetrics(j *pb.JobInfo) *pb.ClinicalMetrics {
	for i := len(j.Rounds) - 1; i >= 0; i-- {
		if m := j.Rounds[i].RegionMetrics; m != nil {
			return m
		}
	}
	return nil
}

// printAlarmBurden writes each threshold's sensitivity, specificity, PPV
// and alarms per 100 patients, marking the row the job reports at, so a
// researcher can pick the threshold a ward can live with.
func printAlarmBurden(w io.Writer, a jobspec.AlarmBurden) {
	fmt.Fprintf(w, "\nalarm burden of model v%d on the sites' test rows (%d patients, from the encrypted histogram):\n", a.ModelVersion, a.Patients)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "THRESHOLD\tSENSITIVITY\tSPECIFICITY\tPPV\tALARMS/100\t")
	for _, op := range a.Points {
		mark := ""
		if a.Found && op.Threshold == a.Reported.Threshold {
			mark = "← reported (alert threshold)"
			if a.Target > 0 {
				mark = fmt.Sprintf("← reported (fewest alarms at sensitivity ≥ %g)", a.Target)
			}
		}
		fmt.Fprintf(tw, "%.2f\t%.2f\t%.2f\t%.2f\t%.1f\t%s\n", op.Threshold, op.Sensitivity, op.Specificity, op.PPV, op.AlarmsPer100, mark)
	}
	tw.Flush()
	if a.Target > 0 && !a.Found {
		fmt.Fprintf(w, "no threshold reaches the job's target sensitivity %g\n", a.Target)
	}
}

// jobJSON is the stable JSON form of a job for scripts.
func jobJSON(j *pb.JobInfo) map[string]any {
	rounds := make([]map[string]any, len(j.Rounds))
	for i, r := range j.Rounds {
		rounds[i] = map[string]any{
			"round": r.Round, "state": r.State, "contributors": nonNil(r.Contributors), "reason": r.Reason,
			"total_samples": r.TotalSamples, "update_norm": r.UpdateNorm,
			"attempts": r.Attempts, "decryptors": nonNil(r.Decryptors), "missing": nonNil(r.Missing), "missing_why": nonNilMap(r.MissingWhy),
			"opened_by": r.OpenedBy, "closed_by": r.ClosedBy,
		}
		if len(r.SiteMetrics) > 0 {
			site := map[string]any{}
			for h, m := range r.SiteMetrics {
				site[h] = metricsJSON(m)
			}
			rounds[i]["site_metrics"] = site
		}
		if m := r.RegionMetrics; m != nil {
			region := metricsJSON(m)
			region["loss"] = m.Loss // sites' figures carry no loss
			rounds[i]["region_metrics"] = region
		}
	}
	return map[string]any{
		"job_id": j.JobId, "name": j.Spec.GetName(), "state": j.State, "reason": j.Reason,
		"purpose": j.Spec.GetPurpose(), "legal_basis": j.Spec.GetLegalBasis(),
		"accepted": nonNil(j.Accepted), "refused": j.Refused, "rounds": rounds,
		"model_version": j.ModelVersion, "submitted_by": j.SubmittedBy,
		"epsilon_spent": nonNilMap(j.EpsilonSpent), "offline": nonNil(j.Offline),
		"warnings": nonNil(jobspec.Warnings(j.Spec)), "reported": reportedJSON(j),
		"leader_changes": leaderChanges(j),
	}
}

// leaderChanges counts the times the replica leading the job's rounds
// changed (a round opened by one leader and closed by another, or opened
// by another than the one that closed the round before).
func leaderChanges(j *pb.JobInfo) int {
	n, prev := 0, ""
	for _, r := range j.Rounds {
		for _, by := range []string{r.OpenedBy, r.ClosedBy} {
			if by == "" {
				continue
			}
			if prev != "" && by != prev {
				n++
			}
			prev = by
		}
	}
	return n
}

// reportedJSON is the operating point the job reports at for its newest
// model with region figures, or nil.
func reportedJSON(j *pb.JobInfo) map[string]any {
	m := latestRegionMetrics(j)
	op, target, ok := jobspec.ReportedPoint(j.Spec, m)
	if !ok {
		return nil
	}
	out := operatingPointJSON(op)
	out["model_version"] = m.ModelVersion
	if target {
		out["target_sensitivity"] = j.Spec.GetAlertSensitivity()
	}
	return out
}

func nonNilMap[V any](m map[string]V) map[string]V {
	if m == nil {
		return map[string]V{}
	}
	return m
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// roundLeader names the replica that led the round, or the change of
// leader mid-round ("replica-1→replica-2").
func roundLeader(r *pb.RoundInfo) string {
	switch {
	case r.OpenedBy == "":
		return "-"
	case r.ClosedBy == "" || r.ClosedBy == r.OpenedBy:
		return r.OpenedBy
	}
	return r.OpenedBy + "→" + r.ClosedBy
}

// roundNotes says what a researcher needs to know about a round beyond
// its state: why it ended, who did not send, decryption retries.
func roundNotes(r *pb.RoundInfo) string {
	var notes []string
	if r.Reason != "" {
		notes = append(notes, r.Reason)
	}
	for _, h := range r.Missing {
		why := r.MissingWhy[h]
		if why == "" {
			why = "no update"
		}
		notes = append(notes, h+": "+why)
	}
	if r.Attempts > 1 {
		notes = append(notes, fmt.Sprintf("decryption attempt %d, by %s", r.Attempts, strings.Join(r.Decryptors, ",")))
	}
	return strings.Join(notes, "; ")
}

func printJob(w io.Writer, j *pb.JobInfo) {
	fmt.Fprintf(w, "job %s (%s): %s", j.JobId, j.Spec.GetName(), j.State)
	if j.Reason != "" {
		fmt.Fprintf(w, " (%s)", j.Reason)
	}
	fmt.Fprintf(w, "\npurpose: %s\nmodel version: %d of %d rounds\naccepted: %s\n",
		j.Spec.GetPurpose(), j.ModelVersion, j.Spec.GetRounds(), strings.Join(j.Accepted, ", "))
	refused := slices.Sorted(func(yield func(string) bool) {
		for h := range j.Refused {
			if !yield(h) {
				return
			}
		}
	})
	for _, h := range refused {
		fmt.Fprintf(w, "refused by %s: %s\n", h, j.Refused[h])
	}
	if len(j.Offline) > 0 {
		fmt.Fprintf(w, "offline: %s (silent for the last rounds; rounds stop waiting for them until they poll again)\n", strings.Join(j.Offline, ", "))
	}
	for _, s := range jobspec.Warnings(j.Spec) {
		fmt.Fprintln(w, "warning:", s)
	}
	if len(j.EpsilonSpent) > 0 {
		fmt.Fprintf(w, "differential privacy: noise multiplier %g, δ %g; ε spent:", j.Spec.GetDpNoiseMultiplier(), j.Spec.GetDpDelta())
		for _, h := range slices.Sorted(maps.Keys(j.EpsilonSpent)) {
			fmt.Fprintf(w, " %s %.3f", h, j.EpsilonSpent[h])
		}
		fmt.Fprintln(w)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nROUND\tSTATE\tHOSPITALS\tSAMPLES\tSTARTING MODEL ON SITES' TESTS\tLEADER\tNOTES")
	for _, r := range j.Rounds {
		figures := "-"
		if m := r.RegionMetrics; m != nil {
			figures = metricsText(m)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%s\n", r.Round, r.State, strings.Join(r.Contributors, ","), r.TotalSamples, figures, roundLeader(r), roundNotes(r))
		for _, h := range slices.Sorted(maps.Keys(r.SiteMetrics)) {
			fmt.Fprintf(tw, "\t  %s (own test, shared by the job)\t\t\t%s\t\n", h, metricsText(r.SiteMetrics[h]))
		}
	}
	tw.Flush()
	if a, ok := jobspec.AlarmBurdenOf(j.Spec, latestRegionMetrics(j)); ok {
		printAlarmBurden(w, a)
	}
}
