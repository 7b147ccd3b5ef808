//go:build linux

package faulttest

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// A history of researchers' calls, checked for linearizability with
// porcupine (the checker etcd's robustness tests use): jobs submitted and
// job lists read, each call a CLI run in a container against all three
// replicas, timed from its start to its answer. The model is the set of
// submitted job names: a list must show every job whose submit answered
// before the list began, none whose submit began after the list answered,
// and two lists must never disagree about the order in which jobs appeared.
// A submit that failed or timed out may or may not have taken effect: it is
// kept in the history with no end (porcupine then places it anywhere after
// its start, or never observes it).

// jobsOp is one call of the history.
type jobsOp struct {
	submit string   // the job name submitted; empty for a list
	seen   []string // a list's answer: the history's job names, sorted
}

// jobSetModel is a set of job names, as a sorted comma-joined string so
// that states compare with ==.
var jobSetModel = porcupine.Model{
	Init: func() any { return "" },
	Step: func(state, input, output any) (bool, any) {
		in := input.(jobsOp)
		set := state.(string)
		if in.submit != "" {
			names := splitSet(set)
			if !slices.Contains(names, in.submit) {
				names = append(names, in.submit)
				slices.Sort(names)
			}
			return true, strings.Join(names, ",")
		}
		return strings.Join(output.(jobsOp).seen, ",") == set, set
	},
	DescribeOperation: func(input, output any) string {
		if in := input.(jobsOp); in.submit != "" {
			return "submit " + in.submit
		}
		return fmt.Sprintf("list -> %v", output.(jobsOp).seen)
	},
	DescribeState: func(state any) string { return "{" + state.(string) + "}" },
}

func splitSet(s string) []string {
	if s == "" {
		return nil
	}
	return strings.Split(s, ",")
}

// history records the calls of several clients.
type history struct {
	mu    sync.Mutex
	start time.Time
	ops   []porcupine.Operation
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

func (h *history) add(client int, call int64, in, out jobsOp, ret int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret})
}

// historyJobPrefix marks the history's jobs among a region's jobs.
const historyJobPrefix = "hist-"

// listHistoryJobs reads the region's job list and returns the history's job
// names, sorted. A name listed twice is an error: a submit applied twice.
func (d *dockerRegion) listHistoryJobs() ([]string, error) {
	jobs, err := d.listJobs()
	if err != nil {
		return nil, err
	}
	names := []string{}
	for _, j := range jobs {
		if !strings.HasPrefix(j.Name, historyJobPrefix) {
			continue
		}
		if slices.Contains(names, j.Name) {
			return nil, fmt.Errorf("%w: %s", errSubmittedTwice, j.Name)
		}
		names = append(names, j.Name)
	}
	slices.Sort(names)
	return names, nil
}

var errSubmittedTwice = errors.New("one submit made two jobs")

// submitHistoryJob submits a one-round job named name, with the name as its
// idempotency key: the CLI's own retries cannot make two jobs.
func (d *dockerRegion) submitHistoryJob(name string) error {
	job := d.suiteJob(name, 1)
	job.LocalSteps = 20
	if err := os.WriteFile(d.path("alice", name+".yaml"), []byte(job.yaml()), 0o644); err != nil {
		return err
	}
	_, err := d.cli("alice", d.coordinators(), "job", "submit", "/srv/"+name+".yaml", "--request-id", name)
	return err
}

// TestFaultLinearizableJobs runs three researchers' clients, submitting
// jobs and reading the job list through every replica, while a random
// replica is cut off the network for 1 to 3 s, again and again for 30 s.
// The history of their calls must be linearizable, no submit may make two
// jobs, and every job acknowledged must be listed at the end and finish by
// its rules with nothing lost or counted twice. The seed is logged to
// replay a run; a history that fails is drawn with porcupine's
// visualization in the directory of REGIONFL_FAULTTEST_LOGS.
func TestFaultLinearizableJobs(t *testing.T) {
	requireSuite(t)
	res := record(t, "jobs submitted and listed by 3 clients under flapping links: history linearizable")
	d := startDockerRegion(t, 3)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	h := &history{start: time.Now()}

	const clients = 3
	const maxJobsPerClient = 4 // each job trains a round on every hospital
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var acked sync.Map // names whose submit answered OK
	var failures sync.Map
	for c := range clients {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(seed, uint64(c)+2))
			submitted := 0
			for {
				select {
				case <-stop:
					return
				default:
				}
				call := h.now()
				if submitted < maxJobsPerClient && rng.IntN(3) == 0 {
					name := fmt.Sprintf("%sc%d-%d", historyJobPrefix, c, submitted)
					submitted++
					if err := d.submitHistoryJob(name); err != nil {
						t.Logf("client %d: submit %s: outcome unknown: %v", c, name, firstLine(err))
						h.add(c, call, jobsOp{submit: name}, jobsOp{}, math.MaxInt64)
						continue
					}
					acked.Store(name, true)
					h.add(c, call, jobsOp{submit: name}, jobsOp{}, h.now())
					continue
				}
				seen, err := d.listHistoryJobs()
				if errors.Is(err, errSubmittedTwice) {
					failures.Store(err.Error(), true)
				}
				if err != nil { // a read that failed observed nothing
					continue
				}
				h.add(c, call, jobsOp{}, jobsOp{seen: seen}, h.now())
			}
		})
	}

	d.flap(res, seed, 30*time.Second)
	close(stop)
	wg.Wait()

	// One last read, after every call: what the region kept.
	call := h.now()
	final, err := d.listHistoryJobs()
	if err != nil {
		t.Fatal(err)
	}
	h.add(clients, call, jobsOp{}, jobsOp{seen: final}, h.now())
	failures.Range(func(k, _ any) bool {
		t.Error(k)
		return true
	})

	result, info := porcupine.CheckOperationsVerbose(jobSetModel, h.ops, time.Minute)
	lists, submits := 0, 0
	for _, op := range h.ops {
		if op.Input.(jobsOp).submit != "" {
			submits++
		} else {
			lists++
		}
	}
	t.Logf("history: %d submits, %d lists, %d jobs kept: %s", submits, lists, len(final), result)
	if result != porcupine.Ok {
		if dir := os.Getenv(keepLogsEnvVar); dir != "" {
			path := filepath.Join(dir, "linearizability.html")
			if err := porcupine.VisualizePath(jobSetModel, info, path); err == nil {
				t.Logf("the history drawn in %s", path)
			}
		}
		t.Fatalf("the history of %d calls is %s, not linearizable", len(h.ops), result)
	}
	acked.Range(func(k, _ any) bool {
		if !slices.Contains(final, k.(string)) {
			t.Errorf("job %s was acknowledged, then lost", k)
		}
		return true
	})

	jobs, err := d.listJobs()
	if err != nil {
		t.Fatal(err)
	}
	for _, job := range jobs {
		j := waitJobEnd(t, job.ID, d.jobStatus)
		checkFinishedJob(t, j, 1, 2, d.trainRows)
		res.counted(j, d.trainRows)
	}
	d.checkAudit()
}

// listedJob is a row of job list --json.
type listedJob struct {
	ID   string `json:"job_id"`
	Name string `json:"name"`
}

func (d *dockerRegion) listJobs() ([]listedJob, error) {
	out, err := d.cli("alice", d.coordinators(), "job", "list", "--json")
	return decodeJSON[[]listedJob]("job list", out, err)
}

func firstLine(err error) string {
	s, _, _ := strings.Cut(strings.TrimSpace(err.Error()), "\n")
	return s
}

// TestJobSetModelRefusesStaleReads checks the checker: histories that a
// stale or lossy region would make are refused, the linearizable ones
// accepted (no Docker needed).
func TestJobSetModelRefusesStaleReads(t *testing.T) {
	op := func(client int, call int64, in, out jobsOp, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
	}
	submit := func(name string) jobsOp { return jobsOp{submit: name} }
	list := func(names ...string) jobsOp { return jobsOp{seen: names} }
	cases := []struct {
		name string
		ops  []porcupine.Operation
		want porcupine.CheckResult
	}{
		{"a list after an acknowledged submit sees it", []porcupine.Operation{
			op(0, 0, submit("a"), jobsOp{}, 10),
			op(1, 20, jobsOp{}, list("a"), 30),
		}, porcupine.Ok},
		{"a list concurrent with a submit may miss it", []porcupine.Operation{
			op(0, 0, submit("a"), jobsOp{}, 10),
			op(1, 5, jobsOp{}, list(), 8),
		}, porcupine.Ok},
		{"a submit with no answer may never show", []porcupine.Operation{
			op(0, 0, submit("a"), jobsOp{}, math.MaxInt64),
			op(1, 20, jobsOp{}, list(), 30),
		}, porcupine.Ok},
		{"a stale read: an acknowledged submit missing", []porcupine.Operation{
			op(0, 0, submit("a"), jobsOp{}, 10),
			op(1, 20, jobsOp{}, list(), 30),
		}, porcupine.Illegal},
		{"a read from the future: a job listed before its submit", []porcupine.Operation{
			op(1, 0, jobsOp{}, list("a"), 10),
			op(0, 20, submit("a"), jobsOp{}, 30),
		}, porcupine.Illegal},
		{"two lists in opposite orders", []porcupine.Operation{
			op(0, 0, submit("a"), jobsOp{}, 100),
			op(1, 0, submit("b"), jobsOp{}, 100),
			op(2, 10, jobsOp{}, list("a"), 20),
			op(3, 30, jobsOp{}, list("b"), 40),
		}, porcupine.Illegal},
		{"a job that disappeared", []porcupine.Operation{
			op(0, 0, submit("a"), jobsOp{}, math.MaxInt64),
			op(1, 10, jobsOp{}, list("a"), 20),
			op(2, 30, jobsOp{}, list(), 40),
		}, porcupine.Illegal},
	}
	for _, c := range cases {
		if got := porcupine.CheckOperationsTimeout(jobSetModel, c.ops, 10*time.Second); got != c.want {
			t.Errorf("%s: %s, want %s", c.name, got, c.want)
		}
	}
}
