//go:build linux

package faulttest

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"text/tabwriter"
	"time"
)

// The fault suite: the reliability scenarios (README, "Fault suite") that need separate
// hosts, each on a region of its own in containers (startDockerRegion).
// TestDockerRegion runs whenever Docker answers (it is CI's quick subset);
// the TestFault* scenarios run only with REGIONFL_FAULT_SUITE=1, which
// scripts/fault-suite.sh sets. Every scenario records a result; TestMain
// prints them as a table and, with REGIONFL_FAULT_JSON=FILE, writes them
// as a JSON array with the keys of scenarioResult.
const (
	suiteEnvVar = "REGIONFL_FAULT_SUITE"
	jsonEnvVar  = "REGIONFL_FAULT_JSON"
)

func requireSuite(t *testing.T) {
	t.Helper()
	skipUnlessLong(t)
	if os.Getenv(suiteEnvVar) != "1" {
		t.Skipf("a fault-suite scenario: set %s=1 (scripts/fault-suite.sh does)", suiteEnvVar)
	}
	t.Setenv(dockerEnvVar, "1") // the suite needs Docker: its absence fails it
	requireDocker(t)
}

// scenarioResult is one scenario's line of the suite's table.
type scenarioResult struct {
	Scenario string `json:"scenario"`
	Passed   bool   `json:"passed"`
	// RecoveryS is the time from the fault to the region working again
	// (a new leader elected, or the first round committed after it).
	RecoveryS       float64 `json:"recovery_s"`
	RoundsCommitted int     `json:"rounds_committed"`
	// UpdatesLost and DoubleCounted count the committed rounds whose
	// decrypted sample count falls short of, or exceeds, the training rows
	// of the contributors the log acknowledged (each is at least one
	// update lost or counted twice).
	UpdatesLost   int `json:"updates_lost"`
	DoubleCounted int `json:"double_counted"`
}

var results struct {
	sync.Mutex
	list []*scenarioResult
}

// record starts a scenario's result; it is filed, passed or not, when the
// test ends.
func record(t *testing.T, scenario string) *scenarioResult {
	r := &scenarioResult{Scenario: scenario}
	t.Cleanup(func() {
		r.Passed = !t.Failed() && !t.Skipped()
		if t.Skipped() {
			return
		}
		results.Lock()
		results.list = append(results.list, r)
		results.Unlock()
	})
	return r
}

// counted fills the counts of a finished job.
func (r *scenarioResult) counted(j *jobStatus, trainRows map[string]int) {
	for _, rd := range j.Rounds {
		if rd.State != "committed" || rd.Round == 0 {
			continue
		}
		r.RoundsCommitted++
		want := 0
		for _, h := range rd.Contributors {
			want += trainRows[h]
		}
		switch {
		case rd.TotalSamples < uint64(want):
			r.UpdatesLost++
		case rd.TotalSamples > uint64(want):
			r.DoubleCounted++
		}
	}
}

// reportScenarios prints the suite's table and writes its JSON file.
func reportScenarios(w io.Writer) error {
	results.Lock()
	defer results.Unlock()
	if len(results.list) == 0 {
		return nil
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SCENARIO\tRESULT\tRECOVERY\tROUNDS COMMITTED\tUPDATES LOST\tDOUBLE COUNTED")
	for _, r := range results.list {
		result := "pass"
		if !r.Passed {
			result = "FAIL"
		}
		fmt.Fprintf(tw, "%s\t%s\t%.1f s\t%d\t%d\t%d\n", r.Scenario, result, r.RecoveryS, r.RoundsCommitted, r.UpdatesLost, r.DoubleCounted)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	file := os.Getenv(jsonEnvVar)
	if file == "" {
		return nil
	}
	b, err := json.MarshalIndent(results.list, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(file, append(b, '\n'), 0o644)
}

// metrics scrapes replica i's /metrics (1-based) from the host, which
// reaches the private network's addresses.
func (d *dockerRegion) metrics(i int) (map[string]string, error) {
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(fmt.Sprintf("http://%s:%d/metrics", d.ip(i), metricsPort))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if k, v, ok := strings.Cut(line, " "); ok {
			out[k] = v
		}
	}
	return out, sc.Err()
}

// auditHead is a replica's audit log size and root, from its metrics.
func (d *dockerRegion) auditHead(i int) (string, error) {
	m, err := d.metrics(i)
	if err != nil {
		return "", err
	}
	for k := range m {
		if root, ok := strings.CutPrefix(k, `regionfl_audit_root_info{root_hash="`); ok {
			return m["regionfl_audit_records"] + " " + strings.TrimSuffix(root, `"}`), nil
		}
	}
	return "", fmt.Errorf("replica %d: no audit root in its metrics", i)
}

// checkAudit waits until every replica holds the same audit log (size and
// Merkle root: no split brain left a replica with another history), then
// exports it through the coordinators as the auditor and verifies the
// export offline against the region CA.
func (d *dockerRegion) checkAudit() {
	d.t.Helper()
	var heads []string
	waitFor(d.t, clusterTimeout, "the same audit log on every replica", func() (bool, error) {
		heads = heads[:0]
		for i := range d.replicas {
			h, err := d.auditHead(i + 1)
			if err != nil {
				return false, err
			}
			heads = append(heads, h)
		}
		return len(slices.Compact(slices.Clone(heads))) == 1, nil
	})
	d.t.Logf("audit log on every replica: %s", heads[0])
	out := d.path("export")
	if err := os.MkdirAll(out, 0o777); err != nil {
		d.t.Fatal(err)
	}
	if _, err := d.docker(append([]string{"run", "--rm", "--network", d.network, "--user", d.user(),
		"--label", "regionfl.faulttest=" + d.prefix, "-v", d.path("compliance") + ":/srv:ro", "-v", out + ":/out", d.image,
		"audit", "export", "-o", "/out/audit.jsonl", "--coordinator", d.coordinators()}, tlsArgs...)...); err != nil {
		d.t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	rep, err := exec.CommandContext(ctx, regionflBinary(d.t), "audit", "verify", filepath.Join(out, "audit.jsonl"),
		"--ca", d.path("ca", "ca.crt"), "--json").CombinedOutput()
	if err != nil {
		d.t.Fatalf("audit verify: %v: %s", err, rep)
	}
	d.t.Logf("audit verify: %s", strings.TrimSpace(string(rep)))
}

// leader is the replica that leads, asked through the given addresses.
func (d *dockerRegion) leader(coordinators string) string {
	d.t.Helper()
	rs, err := d.listReplicas(coordinators)
	if err != nil {
		d.t.Fatal(err)
	}
	return leaderOf(rs)
}

// others is the gRPC addresses of every replica but one.
func (d *dockerRegion) others(but string) string {
	var addrs []string
	for _, r := range d.replicas {
		if r != but {
			addrs = append(addrs, fmt.Sprintf("%s:%d", r, grpcPort))
		}
	}
	return strings.Join(addrs, ",")
}

// waitNewLeader waits for a leader other than old among the replicas
// reachable at coordinators and returns it.
func (d *dockerRegion) waitNewLeader(old, coordinators string) string {
	d.t.Helper()
	var l string
	waitFor(d.t, clusterTimeout, "a leader other than "+old, func() (bool, error) {
		rs, err := d.listReplicas(coordinators)
		if err != nil {
			return false, err
		}
		l = leaderOf(rs)
		return l != "" && l != old, nil
	})
	return l
}

// submit submits a job as the researcher and returns its ID.
func (d *dockerRegion) submit(job jobFile) string {
	d.t.Helper()
	if err := os.WriteFile(d.path("alice", "job.yaml"), []byte(job.yaml()), 0o644); err != nil {
		d.t.Fatal(err)
	}
	out, err := d.cli("alice", d.coordinators(), "job", "submit", "/srv/job.yaml")
	if err != nil {
		d.t.Fatal(err)
	}
	return strings.TrimSpace(string(out))
}

// waitSent waits until some hospital sent an update of the job's round.
func (d *dockerRegion) waitSent(id string, round int) {
	d.t.Helper()
	waitEvery(d.t, jobTimeout, 50*time.Millisecond, fmt.Sprintf("an update of round %d", round), func() (bool, error) {
		for _, h := range d.hospitals {
			if d.logHas(h, `msg="update sent"`, "job_id="+id, fmt.Sprintf("round=%d ", round)) {
				return true, nil
			}
		}
		return false, nil
	})
}

// finish waits for the job to end, checks that it finished by its rules
// with nothing lost or counted twice, and fills res's counts.
func (d *dockerRegion) finish(res *scenarioResult, id string, job jobFile) *jobStatus {
	d.t.Helper()
	j := waitJobEnd(d.t, id, d.jobStatus)
	checkFinishedJob(d.t, j, uint32(job.Rounds), job.MinHospitals, d.trainRows)
	res.counted(j, d.trainRows)
	return j
}

// waitVoters waits for three voters and a leader, asked through every
// replica.
func (d *dockerRegion) waitVoters() {
	d.t.Helper()
	waitFor(d.t, clusterTimeout, "3 voters and a leader", func() (bool, error) {
		rs, err := d.listReplicas(d.coordinators())
		if err != nil {
			return false, err
		}
		return countVoters(rs) == 3 && leaderOf(rs) != "", nil
	})
}

// suiteJob is the scenarios' job: enough rounds to outlast the fault, and
// a seed of its own (from its name), so that two jobs of a scenario train
// differently.
func (d *dockerRegion) suiteJob(name string, rounds int) jobFile {
	h := sha256.Sum256([]byte(name))
	return jobFile{Name: name, Seed: binary.BigEndian.Uint64(h[:8]) >> 1, Inputs: d.features, Rounds: rounds, LocalSteps: 200, MinHospitals: 2, RoundDeadline: "5s"}
}

// reconnectReplica puts a replica cut off with docker network disconnect
// back with its address and name: the others know it by both.
func (d *dockerRegion) reconnectReplica(r string) {
	d.t.Helper()
	d.mustDocker("network", "connect", "--ip", d.ip(slices.Index(d.replicas, r)+1), "--alias", r, d.network, d.container(r))
}

// flap cuts a random replica off the network and reconnects it, again and
// again for about dur (a flapping link; each cut is a random minority
// partition of 1 to 3 s, 0.5 to 2 s apart, drawn from seed), then waits
// for three voters and a leader and records how long that took after the
// last reconnection.
func (d *dockerRegion) flap(res *scenarioResult, seed uint64, dur time.Duration) {
	d.t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	start := time.Now()
	cuts := 0
	for time.Since(start) < dur {
		r := d.replicas[rng.IntN(len(d.replicas))]
		d.mustDocker("network", "disconnect", d.network, d.container(r))
		time.Sleep(time.Duration(1000+rng.IntN(2000)) * time.Millisecond)
		d.reconnectReplica(r)
		cuts++
		time.Sleep(time.Duration(500+rng.IntN(1500)) * time.Millisecond)
	}
	healed := time.Now()
	d.waitVoters()
	res.RecoveryS = time.Since(healed).Seconds()
	d.t.Logf("%d cuts in %v; 3 voters and a leader %.1f s after the last", cuts, time.Since(start).Round(time.Second), res.RecoveryS)
}

// TestFaultMinorityPartition cuts the leader off the network mid-round. The
// two others elect a leader and the job goes on; nothing the cut-off
// leader did while alone reaches the log (every round that closed during
// the cut was closed by the majority's leader); healed, it rejoins and
// every replica holds the same audit log.
func TestFaultMinorityPartition(t *testing.T) {
	requireSuite(t)
	res := record(t, "minority partition: the leader cut off mid-round")
	d := startDockerRegion(t, 3)
	job := d.suiteJob("partition", 8)
	id := d.submit(job)
	old := d.leader(d.coordinators())
	d.waitSent(id, 2)
	d.mustDocker("network", "disconnect", d.network, d.container(old))
	cut := time.Now()
	t.Logf("disconnected the leader %s", old)
	majority := d.waitNewLeader(old, d.others(old))
	res.RecoveryS = time.Since(cut).Seconds()
	t.Logf("%s leads the majority %.1f s after the cut", majority, res.RecoveryS)
	var during []roundInfo
	waitFor(t, jobTimeout, "a round to commit on the majority side", func() (bool, error) {
		j, err := d.jobStatus(id)
		if err != nil {
			return false, err
		}
		during = nil
		for _, r := range j.Rounds {
			if r.OpenedBy == majority && r.State == "committed" {
				during = append(during, r)
			}
		}
		return len(during) > 0 || j.finished(), nil
	})
	d.reconnectReplica(old)
	t.Logf("reconnected %s after %d rounds committed without it", old, len(during))
	j := d.finish(res, id, job)
	for _, r := range j.Rounds {
		if r.OpenedBy == majority && r.ClosedBy == old {
			t.Errorf("round %d, opened by the majority's %s, was closed by the cut-off %s", r.Round, majority, old)
		}
	}
	d.waitVoters()
	d.checkAudit()
}

// TestFaultLeaderPaused freezes the leader's container (docker pause: every
// process stopped, as by SIGSTOP, connections left open) for longer than
// an election takes. The others elect a leader and the job goes on; the
// frozen leader, thawed, finds a newer term, steps down and catches up.
func TestFaultLeaderPaused(t *testing.T) {
	requireSuite(t)
	res := record(t, "leader paused (SIGSTOP) for 10 s, then resumed")
	d := startDockerRegion(t, 3)
	job := d.suiteJob("pause", 8)
	id := d.submit(job)
	old := d.leader(d.coordinators())
	d.waitSent(id, 2)
	d.mustDocker("pause", d.container(old))
	paused := time.Now()
	t.Logf("paused the leader %s", old)
	d.waitNewLeader(old, d.others(old))
	res.RecoveryS = time.Since(paused).Seconds()
	// Frozen for 10 s in all, whatever the election took: long enough that
	// the others move on, short enough to leave rounds for after.
	waitEvery(t, 15*time.Second, time.Second, "10 s of pause", func() (bool, error) { return time.Since(paused) >= 10*time.Second, nil })
	d.mustDocker("unpause", d.container(old))
	t.Logf("resumed %s after %v; a new leader came %.1f s after the pause", old, time.Since(paused).Round(time.Second), res.RecoveryS)
	d.finish(res, id, job)
	d.waitVoters()
	if l := d.leader(d.coordinators()); l == "" {
		t.Error("no leader after the resume")
	}
	d.checkAudit()
}

// TestFaultAllReplicasKilled kills every replica's container mid-round
// (docker kill -s KILL) and starts them again on their data: the region
// recovers from disk alone, the hospitals resend what the new leader lacks,
// and the job finishes with nothing counted twice.
func TestFaultAllReplicasKilled(t *testing.T) {
	requireSuite(t)
	res := record(t, "every replica killed -9 mid-round, then restarted")
	d := startDockerRegion(t, 3)
	job := d.suiteJob("kill-all", 6)
	id := d.submit(job)
	d.waitSent(id, 2)
	for _, r := range d.replicas {
		d.mustDocker("kill", "-s", "KILL", d.container(r))
	}
	killed := time.Now()
	t.Log("killed every replica")
	for _, r := range d.replicas {
		d.mustDocker("start", d.container(r))
	}
	d.waitVoters()
	res.RecoveryS = time.Since(killed).Seconds()
	t.Logf("3 voters and a leader %.1f s after the kill", res.RecoveryS)
	d.finish(res, id, job)
	d.checkAudit()
}

// TestFaultPoisonJob submits the job that once crashed every hospital
// (sample_scale: 18446744073709551615): it is refused at submit, naming
// the field, no node restarts, and the next job runs.
func TestFaultPoisonJob(t *testing.T) {
	requireSuite(t)
	res := record(t, "poison job (sample_scale 2^64-1)")
	d := startDockerRegion(t, 3)
	poison := d.suiteJob("poison", 2).yaml() + "sample_scale: 18446744073709551615\n"
	if err := os.WriteFile(d.path("alice", "poison.yaml"), []byte(poison), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := d.cli("alice", d.coordinators(), "job", "submit", "/srv/poison.yaml")
	if err == nil || !strings.Contains(string(out)+err.Error(), "sample_scale") {
		t.Fatalf("the poison job: %v: %s", err, out)
	}
	start := time.Now()
	job := d.suiteJob("after-poison", 3)
	d.finish(res, d.submit(job), job)
	res.RecoveryS = time.Since(start).Seconds()
	for _, h := range d.hospitals {
		out := d.mustDocker("inspect", "--format", "{{.RestartCount}} {{.State.Running}}", d.container(h))
		if strings.TrimSpace(string(out)) != "0 true" {
			t.Errorf("%s: restarts and running: %s", h, out)
		}
	}
	d.checkAudit()
}

// TestFaultLeadershipTransferUnderLoad hands leadership to another
// replica twice while a job runs (regionfl operator raft
// transfer-leadership, as before maintenance on the leader's host): each
// new leader re-collects the running sum from the hospitals, and the job
// finishes with nothing counted twice.
func TestFaultLeadershipTransferUnderLoad(t *testing.T) {
	requireSuite(t)
	res := record(t, "leadership transferred twice while rounds collect")
	d := startDockerRegion(t, 3)
	job := d.suiteJob("transfer", 8)
	id := d.submit(job)
	for i, round := range []int{2, 4} {
		d.waitSent(id, round)
		old := d.leader(d.coordinators())
		start := time.Now()
		out, err := d.cli("ops", d.coordinators(), "operator", "raft", "transfer-leadership")
		if err != nil {
			t.Fatalf("transfer %d: %v: %s", i+1, err, out)
		}
		nl := d.waitNewLeader(old, d.coordinators())
		res.RecoveryS = max(res.RecoveryS, time.Since(start).Seconds())
		t.Logf("transfer %d during round %d: %s (%s leads)", i+1, round, strings.TrimSpace(string(out)), nl)
	}
	d.finish(res, id, job)
	d.waitVoters()
	d.checkAudit()
}

// TestFaultFlappingLinks cuts a random replica off the network and
// reconnects it, again and again for 30 s while a job runs (a flapping
// link; each cut is a random minority partition of 1 to 3 s). The job
// goes on, nothing is counted twice, and every replica ends with the same
// audit log. The seed is logged to replay a run.
func TestFaultFlappingLinks(t *testing.T) {
	requireSuite(t)
	res := record(t, "flapping links: a random replica cut off for 1-3 s, again and again for 30 s")
	d := startDockerRegion(t, 3)
	job := d.suiteJob("flapping", 10)
	id := d.submit(job)
	d.waitSent(id, 1)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	d.flap(res, seed, 30*time.Second)
	d.finish(res, id, job)
	d.checkAudit()
}

// TestFaultHospitalCutDuringUpload cuts a hospital off the network the
// moment it has encrypted its update of a round (docker network
// disconnect: its stream to the leader breaks or never starts), until a
// later round commits without it, then puts it back. Every round closes by
// its rules, without its update or with it counted once; the hospital
// resends or moves on, contributes again, and nothing is lost or counted
// twice.
func TestFaultHospitalCutDuringUpload(t *testing.T) {
	requireSuite(t)
	res := record(t, "a hospital cut off during its upload until a round commits without it")
	d := startDockerRegion(t, 3)
	job := d.suiteJob("upload-cut", 12)
	id := d.submit(job)
	h := d.hospitals[0]
	const round = 2
	waitEvery(t, jobTimeout, 20*time.Millisecond, fmt.Sprintf("%s to encrypt its update of round %d", h, round), func() (bool, error) {
		return d.logHas(h, `msg="update encrypted"`, "job_id="+id, fmt.Sprintf("round=%d ", round)), nil
	})
	d.mustDocker("network", "disconnect", d.network, d.container(h))
	t.Logf("cut %s off after it encrypted its update of round %d", h, round)
	var without uint32
	waitFor(t, jobTimeout, "a round to commit without "+h, func() (bool, error) {
		j, err := d.jobStatus(id)
		if err != nil {
			return false, err
		}
		for _, r := range j.Rounds {
			if r.Round > round && r.State == "committed" && !slices.Contains(r.Contributors, h) {
				without = r.Round
				return true, nil
			}
		}
		return j.finished(), nil
	})
	d.mustDocker("network", "connect", d.network, d.container(h))
	back := time.Now()
	t.Logf("reconnected %s after round %d committed without it", h, without)
	var again uint32
	waitFor(t, jobTimeout, h+" to contribute again", func() (bool, error) {
		j, err := d.jobStatus(id)
		if err != nil {
			return false, err
		}
		for _, r := range j.Rounds {
			if r.Round > without && r.State == "committed" && slices.Contains(r.Contributors, h) {
				again = r.Round
				return true, nil
			}
		}
		return j.finished(), nil
	})
	res.RecoveryS = time.Since(back).Seconds()
	j := d.finish(res, id, job)
	for _, r := range j.Rounds {
		if r.Round == round && !slices.Contains(r.Contributors, h) && r.MissingWhy[h] == "" {
			t.Errorf("round %d left %s out without saying why: %+v", round, h, r)
		}
	}
	if without == 0 || again == 0 {
		t.Errorf("%s: no round without it (%d) or none with it after (%d):\n%s", h, without, again, j)
	}
	t.Logf("%s contributed again to round %d, %.1f s after it was back", h, again, res.RecoveryS)
	d.checkAudit()
}

// TestFaultCorruptSnapshot restarts a replica whose newest snapshot was
// damaged on disk while it was down. Raft checks every snapshot's CRC: the
// replica skips the damaged one, restores the one before and replays its
// log from there, rejoins as a voter, and ends with the audit log every
// other replica holds; the region runs a job after.
func TestFaultCorruptSnapshot(t *testing.T) {
	requireSuite(t)
	res := record(t, "corrupt snapshot on restart (newest snapshot damaged on disk)")
	d := startDockerRegion(t, 3)
	for i, name := range []string{"before-snapshot-1", "before-snapshot-2"} {
		job := d.suiteJob(name, 2)
		// No fault yet: every round of a healthy region commits.
		for _, r := range d.finish(res, d.submit(job), job).Rounds {
			if r.State != "committed" {
				t.Errorf("%s: round %d %s in a healthy region: %s", name, r.Round, r.State, r.Reason)
			}
		}
		out, err := d.cli("ops", d.coordinators(), "operator", "raft", "snapshot")
		if err != nil {
			t.Fatalf("snapshot %d: %v: %s", i+1, err, out)
		}
		t.Logf("snapshot %d: %s", i+1, strings.TrimSpace(string(out)))
	}
	victim := d.leader(d.coordinators())
	d.mustDocker("stop", "-t", "10", d.container(victim))
	snaps, err := filepath.Glob(d.path(victim, "data", "snapshots", "*", "state.bin"))
	if err != nil || len(snaps) < 2 {
		t.Fatalf("%s's snapshots: %v %v", victim, snaps, err)
	}
	slices.Sort(snaps) // term-index-time names: the last is the newest
	newest := snaps[len(snaps)-1]
	b, err := os.ReadFile(newest)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(b) / 3; i < len(b)/3+64 && i < len(b); i++ {
		b[i] ^= 0xa5
	}
	if err := os.WriteFile(newest, b, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Logf("damaged %s", strings.TrimPrefix(newest, d.dir))
	restarted := time.Now()
	d.mustDocker("start", d.container(victim))
	d.waitVoters()
	res.RecoveryS = time.Since(restarted).Seconds()
	logs := string(d.logs(victim, restarted))
	if strings.Contains(logs, "panic:") {
		t.Fatalf("%s panicked on the damaged snapshot:\n%s", victim, logs)
	}
	if !strings.Contains(logs, "snapshot") {
		t.Errorf("%s said nothing about its damaged snapshot:\n%s", victim, logs)
	}
	t.Logf("%s back as a voter %.1f s after its restart", victim, res.RecoveryS)
	d.checkAudit()
	job := d.suiteJob("after-restore", 2)
	d.finish(res, d.submit(job), job)
	d.checkAudit()
}

// TestFaultFullDisk runs every replica on a 64 MiB data disk (a tmpfs) with
// 1 MiB Raft log segments, and fills the leader's disk mid-job. The leader
// cannot write its log: it steps down and stops, saying why (raft-wal
// cannot append again after a failed write, so a replica that stayed up
// would lag for ever), and the two others carry the job on. With the disk
// freed and the replica started again on its data, it catches up and every
// replica holds the same audit log.
func TestFaultFullDisk(t *testing.T) {
	requireSuite(t)
	res := record(t, "full disk on the leader (64 MiB tmpfs filled mid-round), then freed")
	d := startDockerRegion(t, 3, withSmallDisks(64))
	job := d.suiteJob("full-disk", 10)
	id := d.submit(job)
	old := d.leader(d.coordinators())
	d.waitSent(id, 2)
	filler := d.path(old, "data", "filler")
	n, err := fillDisk(filler)
	if err != nil {
		t.Fatal(err)
	}
	full := time.Now()
	t.Logf("filled %s's disk with %d MiB", old, n>>20)
	d.waitNewLeader(old, d.others(old))
	res.RecoveryS = time.Since(full).Seconds()
	t.Logf("a new leader %.1f s after the disk filled", res.RecoveryS)
	waitFor(t, jobTimeout, old+" to stop, saying why", func() (bool, error) {
		out, err := d.docker("inspect", "--format", "{{.State.Running}}", d.container(old))
		if err != nil {
			return false, err
		}
		return strings.TrimSpace(string(out)) == "false" &&
			d.logHas(old, "cannot write its Raft log", "no space left on device"), nil
	})
	t.Logf("%s stopped %.1f s after its disk filled", old, time.Since(full).Seconds())
	d.finish(res, id, job)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	d.mustDocker("start", d.container(old))
	d.waitVoters()
	d.checkAudit()
}

// fillDisk writes zeros to path until its file system is full and says how
// many bytes it wrote.
func fillDisk(path string) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	chunk := make([]byte, 1<<20)
	var n int64
	for {
		w, err := f.Write(chunk)
		n += int64(w)
		if errors.Is(err, syscall.ENOSPC) {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// TestFaultClockSkew runs replica-2 40 s ahead of the others and replica-3
// 40 s behind (an injected clock: containers share the host's, so the
// suite's faultinject build shifts a replica's through
// REGIONFL_CLOCK_OFFSET) and hands leadership to each of them mid-job. A
// round's deadline is on the clock of the leader that opened it: a leader
// ahead must not abort a round it takes over before the hospitals resend,
// nor a leader behind hold one open for long. The job finishes with
// nothing lost or counted twice, and rounds commit under both.
func TestFaultClockSkew(t *testing.T) {
	requireSuite(t)
	res := record(t, "clock skew: replicas 40 s ahead and 40 s behind, leadership moved to each")
	d := startDockerRegion(t, 3, withClockOffsets(0, 40*time.Second, -40*time.Second))
	job := d.suiteJob("clock-skew", 30)
	id := d.submit(job)
	d.waitSent(id, 2)
	for i, to := range d.replicas[1:] {
		start := time.Now()
		if d.leader(d.coordinators()) != to {
			out, err := d.cli("ops", d.coordinators(), "operator", "raft", "transfer-leadership", "--to", to)
			if err != nil {
				t.Fatalf("transfer to %s: %v: %s", to, err, out)
			}
		}
		// A round committed under the new leader: it took the running
		// round over and opened the next on its own clock.
		var under int
		waitFor(t, jobTimeout, "a round committed under "+to, func() (bool, error) {
			j, err := d.jobStatus(id)
			if err != nil {
				return false, err
			}
			for _, r := range j.Rounds {
				if r.State == "committed" && r.ClosedBy == to {
					under = int(r.Round)
					return true, nil
				}
			}
			return false, nil
		})
		res.RecoveryS = max(res.RecoveryS, time.Since(start).Seconds())
		t.Logf("%s (clock %s) committed round %d, %.1f s after the transfer began", to, d.clockOffsets[i+1], under, time.Since(start).Seconds())
	}
	d.finish(res, id, job)
	d.checkAudit()
}
