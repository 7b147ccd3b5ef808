//go:build linux

package faulttest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Timeouts. Every wait is a poll of a condition bounded by one of these; none
// is a sleep whose length decides the outcome.
const (
	cliTimeout      = 60 * time.Second  // one CLI command
	clusterTimeout  = 60 * time.Second  // replicas electing, joining, catching up
	ceremonyTimeout = 90 * time.Second  // the threshold key ceremony
	jobTimeout      = 150 * time.Second // a whole job, faults included
	pollEvery       = 200 * time.Millisecond
	stopGrace       = 10 * time.Second // SIGTERM to SIGKILL at cleanup
)

// skipUnlessLong skips the test under -short: these tests start real
// processes and take tens of seconds.
func skipUnlessLong(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
}

// ---- processes ----

// proc is one regionfl process: a replica or a node. Its stdout and stderr
// go to a log file that survives restarts (each start appends).
type proc struct {
	t    *testing.T
	name string
	args []string
	log  string

	cmd  *exec.Cmd
	done chan struct{}
	err  error // the process's exit, valid once done is closed
}

// startProc starts the regionfl binary with args; the test's cleanup stops
// it (SIGTERM, then SIGKILL) if it still runs.
func startProc(t *testing.T, name, logFile string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, args: args, log: logFile}
	p.start()
	t.Cleanup(p.stop)
	return p
}

func (p *proc) start() {
	p.t.Helper()
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		p.t.Fatal(err)
	}
	defer f.Close()
	fmt.Fprintf(f, "=== faulttest: start %s %s\n", p.name, strings.Join(p.args, " "))
	cmd := exec.Command(regionflBinary(p.t), p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	// The process dies with the test binary even if the test is killed.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		p.t.Fatalf("start %s: %v", p.name, err)
	}
	p.cmd, p.done = cmd, make(chan struct{})
	go func(done chan struct{}) {
		p.err = cmd.Wait()
		close(done)
	}(p.done)
}

// running reports whether the process has not exited.
func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// kill9 simulates a crash: SIGKILL, then waits until the process is gone.
func (p *proc) kill9() {
	p.t.Helper()
	if !p.running() {
		p.t.Fatalf("%s is not running (exited: %v)", p.name, p.err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		p.t.Fatalf("kill -9 %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(30 * time.Second):
		p.t.Fatalf("%s did not exit after SIGKILL", p.name)
	}
	p.t.Logf("killed -9 %s (pid %d)", p.name, p.cmd.Process.Pid)
}

// pause stops the process (SIGSTOP) without killing it: it keeps its
// connections but does nothing until resume.
func (p *proc) pause() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		p.t.Fatalf("SIGSTOP %s: %v", p.name, err)
	}
	p.t.Logf("paused %s (SIGSTOP)", p.name)
}

// resume continues a paused process (SIGCONT).
func (p *proc) resume() {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		p.t.Fatalf("SIGCONT %s: %v", p.name, err)
	}
	p.t.Logf("resumed %s (SIGCONT)", p.name)
}

// restart starts the process again with the same arguments, data directory
// and addresses.
func (p *proc) restart() {
	p.t.Helper()
	if p.running() {
		p.t.Fatalf("restart %s: still running", p.name)
	}
	p.start()
	p.t.Logf("restarted %s (pid %d)", p.name, p.cmd.Process.Pid)
}

// stop ends the process at cleanup: SIGTERM, then SIGKILL after stopGrace.
func (p *proc) stop() {
	if p.cmd == nil || !p.running() {
		return
	}
	p.cmd.Process.Signal(syscall.SIGCONT) // in case it was paused
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(stopGrace):
		p.cmd.Process.Signal(syscall.SIGKILL)
		<-p.done
	}
}

// logHas reports whether the process's log has a line containing every one
// of parts.
func (p *proc) logHas(parts ...string) bool {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return false
	}
	return linesWithAll(b, parts) > 0
}

// linesWithAll counts the lines of b that contain every one of parts.
func linesWithAll(b []byte, parts []string) int {
	n := 0
	for line := range bytes.Lines(b) {
		ok := true
		for _, s := range parts {
			if !bytes.Contains(line, []byte(s)) {
				ok = false
				break
			}
		}
		if ok {
			n++
		}
	}
	return n
}

// updateSent matches a node's log line for an update it sent.
var updateSent = regexp.MustCompile(`msg="update sent" .*job_id=(\S+) round=(\d+) `)

// roundsSent lists the rounds of job that a node's log says it sent an
// update for.
func roundsSent(log []byte, job string) []int {
	var rounds []int
	for _, m := range updateSent.FindAllSubmatch(log, -1) {
		if string(m[1]) == job {
			n, _ := strconv.Atoi(string(m[2]))
			rounds = append(rounds, n)
		}
	}
	return rounds
}

// tail returns the last n lines of the process's log.
func (p *proc) tail(n int) string {
	b, err := os.ReadFile(p.log)
	if err != nil {
		return err.Error()
	}
	return lastLines(b, n)
}

func lastLines(b []byte, n int) string {
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// keepLogsEnvVar names a directory where a failed test leaves the full logs
// of its processes and containers (for CI artifacts).
const keepLogsEnvVar = "REGIONFL_FAULTTEST_LOGS"

func saveLog(t *testing.T, dir, name string, b []byte) {
	dir = filepath.Join(dir, strings.ReplaceAll(t.Name(), "/", "_"))
	err := os.MkdirAll(dir, 0o755)
	if err == nil {
		err = os.WriteFile(filepath.Join(dir, name+".log"), b, 0o644)
	}
	if err != nil {
		t.Logf("keeping the log of %s: %v", name, err)
	} else {
		t.Logf("full log of %s in %s", name, filepath.Join(dir, name+".log"))
	}
}

// ---- waiting ----

// waitFor polls cond until it reports true, failing the test with what and
// the last error after timeout.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	waitEvery(t, timeout, pollEvery, what, cond)
}

// errGiveUp, wrapped in a condition's error, ends a wait at once: what it
// waits for can no longer happen.
var errGiveUp = errors.New("giving up")

func giveUp(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errGiveUp, fmt.Sprintf(format, args...))
}

// waitEvery is waitFor with another polling interval.
func waitEvery(t *testing.T, timeout, every time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	// Fail (and clean up) well before `go test -timeout` would panic, which
	// runs no cleanup.
	if dl, ok := t.Deadline(); ok {
		timeout = max(min(timeout, time.Until(dl)-30*time.Second), time.Second)
	}
	deadline := time.Now().Add(timeout)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		if errors.Is(err, errGiveUp) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		if err != nil {
			last = err
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s (last error: %v)", timeout, what, last)
		}
		time.Sleep(every)
	}
}

// freePorts returns n free TCP ports on 127.0.0.1 for processes to listen
// on. They come from below Linux's ephemeral range (freePortRange): a port
// taken with :0 and closed is an ephemeral one, which any outgoing
// connection on a busy machine may take before the process binds it.
func freePorts(t *testing.T, n int) []int {
	t.Helper()
	base := freePortRange(t, n)
	ports := make([]int, n)
	for i := range ports {
		ports[i] = base + i
	}
	return ports
}

// ---- the CLI's JSON ----

type replicaInfo struct {
	ID       string `json:"id"`
	RaftAddr string `json:"raft_addr"`
	GRPCAddr string `json:"grpc_addr"`
	Leader   bool   `json:"leader"`
	Suffrage string `json:"suffrage"`
}

type roundInfo struct {
	Round        uint32   `json:"round"`
	State        string   `json:"state"`
	Contributors []string `json:"contributors"`
	Reason       string   `json:"reason"`
	TotalSamples uint64   `json:"total_samples"`
	OpenedBy     string   `json:"opened_by"`
	ClosedBy     string   `json:"closed_by"`
	Missing      []string `json:"missing"`
	// MissingWhy says, per hospital of Missing, why it has nothing counted.
	MissingWhy map[string]string `json:"missing_why"`
}

type jobStatus struct {
	JobID         string            `json:"job_id"`
	State         string            `json:"state"`
	Reason        string            `json:"reason"`
	Accepted      []string          `json:"accepted"`
	Refused       map[string]string `json:"refused"`
	Rounds        []roundInfo       `json:"rounds"`
	ModelVersion  uint32            `json:"model_version"`
	LeaderChanges int               `json:"leader_changes"`
}

func (j *jobStatus) finished() bool {
	return j.State == "done" || j.State == "failed" || j.State == "cancelled"
}

func (j *jobStatus) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "job %s %s", j.JobID, j.State)
	if j.Reason != "" {
		fmt.Fprintf(&b, " (%s)", j.Reason)
	}
	fmt.Fprintf(&b, ", model version %d, accepted %v", j.ModelVersion, j.Accepted)
	for _, r := range j.Rounds {
		fmt.Fprintf(&b, "\n  round %d %s %v samples %d %s", r.Round, r.State, r.Contributors, r.TotalSamples, r.Reason)
	}
	return b.String()
}

// checkFinishedJob asserts what every test wants of a job that had to survive
// its faults: it is done, every one of its training rounds committed, and no
// round counted a hospital's update twice. trainRows are each hospital's
// training rows: a committed round's decrypted sample count must be exactly
// the sum over its contributors, which a duplicate update would inflate.
func checkFinishedJob(t *testing.T, j *jobStatus, rounds uint32, minHospitals int, trainRows map[string]int) {
	t.Helper()
	t.Logf("final status: %s", j)
	if j.State != "done" {
		t.Fatalf("job %s ended %s (%s), want done", j.JobID, j.State, j.Reason)
	}
	if j.ModelVersion != rounds {
		t.Errorf("model version %d, want %d", j.ModelVersion, rounds)
	}
	committed := 0
	for _, r := range j.Rounds {
		seen := map[string]bool{}
		for _, h := range r.Contributors {
			if seen[h] {
				t.Errorf("round %d counts %s twice: %v", r.Round, h, r.Contributors)
			}
			seen[h] = true
			if !slices.Contains(j.Accepted, h) {
				t.Errorf("round %d counts %s, which did not accept the job", r.Round, h)
			}
		}
		switch r.State {
		case "committed":
			if len(r.Contributors) < minHospitals {
				t.Errorf("round %d committed with %d contributors, K=%d", r.Round, len(r.Contributors), minHospitals)
			}
			if r.Round == 0 {
				continue // the region statistics round trains nothing
			}
			committed++
			want := 0
			for _, h := range r.Contributors {
				want += trainRows[h]
			}
			if r.TotalSamples != uint64(want) {
				t.Errorf("round %d: %d samples for contributors %v, want %d (an update counted twice or lost?)",
					r.Round, r.TotalSamples, r.Contributors, want)
			}
		case "aborted":
			if r.Reason == "" {
				t.Errorf("round %d aborted without a reason", r.Round)
			}
			t.Logf("round %d aborted: %s", r.Round, r.Reason)
		default:
			t.Errorf("round %d is still %s in a done job", r.Round, r.State)
		}
	}
	if committed != int(rounds) {
		t.Errorf("%d training rounds committed, want %d", committed, rounds)
	}
}

// ---- a region of real processes on loopback ----

// region is the README's "Run a real region" on 127.0.0.1: a CA, three
// coordinator replicas, an operator, hospital nodes on synthetic CSV files
// and a researcher, every identity made and signed through the CLI.
type region struct {
	t   *testing.T
	dir string

	replicas  []*replica
	hospitals []*hospital
	// coordinators is the comma-separated gRPC addresses of every replica.
	coordinators string
	// features is the number of feature columns of the hospitals' CSVs.
	features int
}

type replica struct {
	id, raftAddr, grpcAddr string
	p                      *proc
}

type hospital struct {
	id, csv string
	p       *proc
}

// newRegion creates identities, starts the replicas (the first bootstraps,
// the others join it), creates the region with threshold t = 2, starts the
// hospital nodes and waits until the key ceremony is done.
func newRegion(t *testing.T, nReplicas, nHospitals int) *region {
	t.Helper()
	r := &region{t: t, dir: t.TempDir()}
	t.Cleanup(func() {
		if t.Failed() {
			r.dumpLogs()
		}
	})
	for _, d := range []string{"logs", "data", "csv"} {
		if err := os.MkdirAll(r.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ports := freePorts(t, 2*nReplicas)
	var grpcAddrs []string
	for i := range nReplicas {
		rp := &replica{
			id:       fmt.Sprintf("replica-%d", i+1),
			raftAddr: fmt.Sprintf("127.0.0.1:%d", ports[2*i]),
			grpcAddr: fmt.Sprintf("127.0.0.1:%d", ports[2*i+1]),
		}
		r.replicas = append(r.replicas, rp)
		grpcAddrs = append(grpcAddrs, rp.grpcAddr)
	}
	r.coordinators = strings.Join(grpcAddrs, ",")

	// 1.-2. The CA and every identity, through the CLI.
	r.mustCLI("ca", "init", "--dir", r.path("ca"))
	for _, rp := range r.replicas {
		r.mustCLI("coordinator", "init", "--id", rp.id, "--dir", r.path(rp.id))
		r.mustCLI("ca", "sign", "--dir", r.path("ca"), "--role", "coordinator", "--dns", rp.id,
			r.path(rp.id, "tls.csr"), "-o", r.path(rp.id, "tls.crt"))
	}
	csvs, features, err := WriteSyntheticCSVs(r.path("csv"), nHospitals, 1)
	if err != nil {
		t.Fatal(err)
	}
	r.features = features
	for i := range nHospitals {
		h := &hospital{id: fmt.Sprintf("hospital-%d", i+1)}
		h.csv = csvs[h.id]
		r.hospitals = append(r.hospitals, h)
		r.mustCLI("node", "init", "--id", h.id, "--dir", r.path(h.id))
		writeSitePolicy(t, r.path(h.id, "policy.yaml"))
		r.mustCLI("ca", "sign", "--dir", r.path("ca"), "--role", "hospital", r.path(h.id, "tls.csr"), "-o", r.path(h.id, "tls.crt"))
	}
	r.mustCLI("researcher", "init", "--id", "alice", "--dir", r.path("alice"))
	r.mustCLI("ca", "sign", "--dir", r.path("ca"), "--role", "researcher", r.path("alice", "tls.csr"), "-o", r.path("alice", "tls.crt"))
	r.mustCLI("operator", "init", "--id", "ops", "--dir", r.path("ops"))
	r.mustCLI("ca", "sign", "--dir", r.path("ca"), "--role", "operator", r.path("ops", "tls.csr"), "-o", r.path("ops", "tls.crt"))

	// 3. Coordinator replicas.
	for i, rp := range r.replicas {
		args := []string{"coordinator", "run", "--id", rp.id, "--data-dir", r.path("data", rp.id),
			"--raft-addr", rp.raftAddr, "--grpc-addr", rp.grpcAddr,
			"--ca", r.path("ca", "ca.crt"), "--cert", r.path(rp.id, "tls.crt"), "--key", r.path(rp.id, "tls.key")}
		if i == 0 {
			args = append(args, "--bootstrap")
		} else {
			args = append(args, "--join", r.replicas[0].grpcAddr)
		}
		rp.p = startProc(t, rp.id, r.path("logs", rp.id+".log"), args...)
	}
	waitFor(t, clusterTimeout, fmt.Sprintf("%d voting replicas with a leader", nReplicas), func() (bool, error) {
		rs, err := r.listReplicas(r.coordinators)
		if err != nil {
			return false, err
		}
		return countVoters(rs) == nReplicas && leaderOf(rs) != "", nil
	})

	// 4. The operator creates the region.
	ids := make([]string, len(r.hospitals))
	for i, h := range r.hospitals {
		ids[i] = h.id
	}
	r.mustCLI(r.operatorArgs("operator", "create-region", "--hospitals", strings.Join(ids, ","), "--threshold", "2")...)

	// 5. Hospital nodes.
	for _, h := range r.hospitals {
		h.p = startProc(t, h.id, r.path("logs", h.id+".log"),
			"node", "run", "--id", h.id, "--coordinator", r.coordinators,
			"--data", h.csv, "--label", LabelColumn, "--data-dir", r.path("data", h.id), "--policy", r.path(h.id, "policy.yaml"),
			"--ca", r.path("ca", "ca.crt"), "--cert", r.path(h.id, "tls.crt"), "--key", r.path(h.id, "tls.key"))
	}
	// No CLI command shows the key ceremony, so the nodes' logs tell when
	// every hospital holds its threshold key share. A job submitted before
	// then would count the ceremony against its round deadline.
	waitFor(t, ceremonyTimeout, "the key ceremony", func() (bool, error) {
		for _, h := range r.hospitals {
			if !h.p.logHas("threshold key share ready") {
				return false, nil
			}
		}
		return true, nil
	})
	return r
}

func (r *region) path(parts ...string) string {
	return filepath.Join(append([]string{r.dir}, parts...)...)
}

// siteLoaded matches the line a node logs when it has read its CSV.
var siteLoaded = regexp.MustCompile(`msg="site data loaded" .*\btrain=(\d+)`)

// trainRowsFromLog is how many training rows a node says it uses (the
// first start's line; a restart reads the same file).
func trainRowsFromLog(t *testing.T, name string, log []byte) int {
	t.Helper()
	m := siteLoaded.FindSubmatch(log)
	if m == nil {
		t.Fatalf("%s did not log its training rows (msg=\"site data loaded\" ... train=N)", name)
	}
	n, _ := strconv.Atoi(string(m[1]))
	return n
}

// trainRows are the training rows of each hospital, as its node reported.
func (r *region) trainRows() map[string]int {
	m := map[string]int{}
	for _, h := range r.hospitals {
		b, err := os.ReadFile(h.p.log)
		if err != nil {
			r.t.Fatal(err)
		}
		m[h.id] = trainRowsFromLog(r.t, h.id, b)
	}
	return m
}

func (r *region) dumpLogs() {
	var ps []*proc
	for _, rp := range r.replicas {
		ps = append(ps, rp.p)
	}
	for _, h := range r.hospitals {
		ps = append(ps, h.p)
	}
	keep := os.Getenv(keepLogsEnvVar)
	for _, p := range ps {
		if p == nil {
			continue
		}
		r.t.Logf("---- %s log (last lines)\n%s", p.name, p.tail(30))
		if keep != "" {
			if b, err := os.ReadFile(p.log); err == nil {
				saveLog(r.t, keep, p.name, b)
			}
		}
	}
}

// cli runs one regionfl command and returns its stdout.
func (r *region) cli(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, regionflBinary(r.t), args...)
	cmd.Env = append(os.Environ(), "REGIONFL_COORDINATOR=")
	return output(cmd, "regionfl", args)
}

// output runs a command and returns its stdout; a failure carries the
// command line and its stderr.
func output(cmd *exec.Cmd, name string, args []string) ([]byte, error) {
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.Bytes(), fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.Bytes(), nil
}

func (r *region) mustCLI(args ...string) []byte {
	r.t.Helper()
	out, err := r.cli(args...)
	if err != nil {
		r.t.Fatal(err)
	}
	return out
}

func (r *region) identityArgs(who, coordinators string, args ...string) []string {
	return append(args, "--coordinator", coordinators,
		"--ca", r.path("ca", "ca.crt"), "--cert", r.path(who, "tls.crt"), "--key", r.path(who, "tls.key"))
}

func (r *region) operatorArgs(args ...string) []string {
	return r.identityArgs("ops", r.coordinators, args...)
}

func (r *region) researcherArgs(args ...string) []string {
	return r.identityArgs("alice", r.coordinators, args...)
}

// listReplicas asks the replicas at coordinators (the first reachable one
// answers, from its own view of the Raft configuration).
func (r *region) listReplicas(coordinators string) ([]replicaInfo, error) {
	out, err := r.cli(r.identityArgs("ops", coordinators, "operator", "raft", "list-replicas", "--json")...)
	return decodeJSON[[]replicaInfo]("list-replicas", out, err)
}

// decodeJSON parses what a `regionfl ... --json` command printed, or
// passes on the error of running it; what names the command in errors.
func decodeJSON[T any](what string, out []byte, err error) (T, error) {
	var v T
	if err != nil {
		return v, err
	}
	if err := json.Unmarshal(out, &v); err != nil {
		var zero T
		return zero, fmt.Errorf("%s --json: %v: %s", what, err, out)
	}
	return v, nil
}

func countVoters(rs []replicaInfo) int {
	n := 0
	for _, r := range rs {
		if r.Suffrage == "voter" {
			n++
		}
	}
	return n
}

func leaderOf(rs []replicaInfo) string {
	for _, r := range rs {
		if r.Leader {
			return r.ID
		}
	}
	return ""
}

// leader is the replica that currently leads, as the cluster reports it.
func (r *region) leader() *replica {
	r.t.Helper()
	var id string
	waitFor(r.t, clusterTimeout, "a leader", func() (bool, error) {
		rs, err := r.listReplicas(r.coordinators)
		if err != nil {
			return false, err
		}
		id = leaderOf(rs)
		return id != "", nil
	})
	for _, rp := range r.replicas {
		if rp.id == id {
			return rp
		}
	}
	r.t.Fatalf("leader %q is not a replica of this region", id)
	return nil
}

func (r *region) submitJob(spec jobFile) string {
	r.t.Helper()
	path := filepath.Join(r.dir, fmt.Sprintf("job-%d.yaml", time.Now().UnixNano()))
	if err := os.WriteFile(path, []byte(spec.yaml()), 0o644); err != nil {
		r.t.Fatal(err)
	}
	out := r.mustCLI(r.researcherArgs("job", "submit", path)...)
	id := strings.TrimSpace(string(out))
	if !strings.HasPrefix(id, "job-") {
		r.t.Fatalf("job submit printed %q, want a job ID", out)
	}
	r.t.Logf("submitted %s", id)
	return id
}

func (r *region) jobStatus(id string) (*jobStatus, error) {
	out, err := r.cli(r.researcherArgs("job", "status", id, "--json")...)
	return decodeJSON[*jobStatus]("job status", out, err)
}

// waitJob polls the job's status until it ends.
func (r *region) waitJob(id string) *jobStatus {
	r.t.Helper()
	return waitJobEnd(r.t, id, r.jobStatus)
}

// waitJobEnd polls a job's status, read by status, until the job ends.
func waitJobEnd(t *testing.T, id string, status func(id string) (*jobStatus, error)) *jobStatus {
	t.Helper()
	var j *jobStatus
	waitFor(t, jobTimeout, "job "+id+" to end", func() (bool, error) {
		var err error
		j, err = status(id)
		if err != nil {
			return false, err
		}
		return j.finished(), nil
	})
	return j
}

// waitLog polls until p's log has a line with every one of parts. It polls
// often: tests use it to inject a fault right after an event.
func waitLog(t *testing.T, p *proc, timeout time.Duration, parts ...string) {
	t.Helper()
	waitEvery(t, timeout, 5*time.Millisecond, fmt.Sprintf("%s to log %q", p.name, parts), func() (bool, error) {
		if !p.running() {
			return false, giveUp("%s exited: %v", p.name, p.err)
		}
		return p.logHas(parts...), nil
	})
}

// jobFile is a job file as the README shows it, with the fields the tests
// vary.
type jobFile struct {
	Name string
	// Seed varies the initial model and the training: a site sends one
	// update per training content, ever, so two jobs of the same spec and
	// seed would get one update between them for the same round.
	Seed          uint64
	Inputs        int
	Rounds        int
	LocalSteps    int
	MinHospitals  int
	RoundDeadline string
}

func (j jobFile) yaml() string {
	return fmt.Sprintf(`name: %s
purpose: early warning of clinical deterioration on general wards
legal_basis: synthetic data, no patients (faulttest)
model: {kind: logreg, inputs: %d}
rounds: %d
local_steps: %d
batch_size: 32
learning_rate: 0.1
optimizer: sgd
min_hospitals: %d
round_deadline: %s
clip_norm: 10
strategy: {name: fedavg}
scaling: region
alert_threshold: 0.5
seed: %d
`, j.Name, j.Inputs, j.Rounds, j.LocalSteps, j.MinHospitals, j.RoundDeadline, j.Seed)
}

// setpgid puts a command (a script) in its own process group, so that
// killGroup reaches everything it started, and sends it SIGTERM (which the
// script traps to stop its children) if the test binary dies.
func setpgid() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}

// killGroup SIGKILLs the process group of a command started with setpgid.
func killGroup(cmd *exec.Cmd) error {
	if cmd.Process == nil {
		return nil
	}
	return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
}

// sitePolicy lets the fault tests' regions run jobs of K = 2 at t = 2
// (below a site's default minimum of t + 1), so a round survives one
// hospital of three going away.
const sitePolicy = "# fault tests: K = 2 at t = 2, so one hospital of three may drop out\nmin_participants: 2\n"

// writeSitePolicy writes sitePolicy where a node (or its container) reads it.
func writeSitePolicy(t *testing.T, path string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(sitePolicy), 0o644); err != nil {
		t.Fatal(err)
	}
}
