//go:build linux

package faulttest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"math/big"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The Docker test runs whenever a Docker engine answers `docker info`:
//
//	REGIONFL_DOCKER_TESTS unset  run if docker works, skip otherwise
//	REGIONFL_DOCKER_TESTS=1      run, and fail (not skip) if docker does not work
//	REGIONFL_DOCKER_TESTS=0      skip
//
// It pulls nothing: the image is FROM scratch with the static binary that
// TestMain's build produced. Everything it creates carries a unique prefix
// (and the label regionfl.faulttest) and is removed at the end, pass or fail.
const dockerEnvVar = "REGIONFL_DOCKER_TESTS"

// dockerTimeout bounds one docker command.
const dockerTimeout = 2 * time.Minute

func requireDocker(t *testing.T) {
	t.Helper()
	mode := os.Getenv(dockerEnvVar)
	if mode == "0" || mode == "false" {
		t.Skipf("%s=%s", dockerEnvVar, mode)
	}
	unavailable := func(format string, args ...any) {
		t.Helper()
		msg := fmt.Sprintf(format, args...)
		if mode == "1" {
			t.Fatalf("%s=1 but %s", dockerEnvVar, msg)
		}
		t.Skipf("%s (set %s=1 to make this a failure)", msg, dockerEnvVar)
	}
	if _, err := exec.LookPath("docker"); err != nil {
		unavailable("no docker command: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "docker", "info", "--format", "{{.ServerVersion}}").CombinedOutput(); err != nil {
		unavailable("docker info: %v: %s", err, bytes.TrimSpace(out))
	}
}

// dockerRegion is a region in containers on a private Docker network: three
// replicas with fixed names, host names and addresses, three hospital nodes,
// and one-shot CLI containers for the operator and the researcher.
type dockerRegion struct {
	t       *testing.T
	dir     string
	prefix  string // of every container, the network and the image tag
	image   string
	network string
	subnet  string // the first three octets of the network's /24

	replicas  []string // replica-1 …, also their host names
	hospitals []string // hospital-1 …
	trainRows map[string]int
	features  int       // feature columns of the hospitals' CSVs
	started   time.Time // when the region began to come up
	// diskMB, when set, puts each replica's data directory on a tmpfs of
	// that size (a disk that can fill up) with 1 MiB Raft log segments.
	diskMB int
	// clockOffsets[i] shifts replica i+1's clock (REGIONFL_CLOCK_OFFSET,
	// a hook of the suite's faultinject build).
	clockOffsets []time.Duration
}

// regionOption changes a region before it comes up.
type regionOption func(*dockerRegion)

// withClockOffsets shifts the replicas' clocks, in order.
func withClockOffsets(offsets ...time.Duration) regionOption {
	return func(d *dockerRegion) { d.clockOffsets = offsets }
}

// withSmallDisks gives every replica a data disk of mb MiB (withSmallDisks
// needs root on the host, to mount the tmpfs).
func withSmallDisks(mb int) regionOption { return func(d *dockerRegion) { d.diskMB = mb } }

const (
	raftPort    = 7000
	grpcPort    = 7443
	metricsPort = 9464 // plain HTTP, on the private network only
)

func (d *dockerRegion) docker(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	return output(exec.CommandContext(ctx, "docker", args...), "docker", args)
}

func (d *dockerRegion) mustDocker(args ...string) []byte {
	d.t.Helper()
	out, err := d.docker(args...)
	if err != nil {
		d.t.Fatal(err)
	}
	return out
}

func (d *dockerRegion) container(name string) string { return d.prefix + "-" + name }

func (d *dockerRegion) path(parts ...string) string {
	return filepath.Join(append([]string{d.dir}, parts...)...)
}

// cleanup removes every container, the network and the image; it runs even
// when the test fails or panics.
func (d *dockerRegion) cleanup() {
	if d.t.Failed() {
		keep := os.Getenv(keepLogsEnvVar)
		for _, name := range append(slices.Clone(d.replicas), d.hospitals...) {
			out, _ := exec.Command("docker", "logs", d.container(name)).CombinedOutput()
			d.t.Logf("---- docker logs %s (last lines)\n%s", d.container(name), lastLines(out, 30))
			if keep != "" {
				saveLog(d.t, keep, name, out)
			}
		}
	}
	out, _ := d.docker("ps", "-aq", "--filter", "label=regionfl.faulttest="+d.prefix)
	if ids := strings.Fields(string(out)); len(ids) > 0 {
		if _, err := d.docker(append([]string{"rm", "-f", "-v"}, ids...)...); err != nil {
			d.t.Errorf("cleanup: %v", err)
		}
	}
	if d.network != "" {
		if _, err := d.docker("network", "rm", d.network); err != nil && !strings.Contains(err.Error(), "No such network") && !strings.Contains(err.Error(), "not found") {
			d.t.Errorf("cleanup: %v", err)
		}
	}
	if d.image != "" {
		if _, err := d.docker("rmi", "-f", d.image); err != nil && !strings.Contains(err.Error(), "No such image") {
			d.t.Errorf("cleanup: %v", err)
		}
	}
}

// buildImage builds the FROM scratch image of the repository's Dockerfile
// from a context holding only the static binary.
func (d *dockerRegion) buildImage() {
	d.t.Helper()
	ctxDir := d.path("image")
	if err := os.MkdirAll(filepath.Join(ctxDir, "dist"), 0o755); err != nil {
		d.t.Fatal(err)
	}
	bin, err := os.ReadFile(regionflBinary(d.t))
	if err != nil {
		d.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctxDir, "dist", "regionfl"), bin, 0o755); err != nil {
		d.t.Fatal(err)
	}
	d.image = "regionfl:test-" + strings.TrimPrefix(d.prefix, "rflft-")
	d.mustDocker("build", "--label", "regionfl.faulttest="+d.prefix, "-f", filepath.Join(repoRoot, "Dockerfile"), "-t", d.image, ctxDir)
	out := d.mustDocker("run", "--rm", "--label", "regionfl.faulttest="+d.prefix, d.image, "--help")
	if !bytes.Contains(out, []byte("regionfl")) {
		d.t.Fatalf("the image's regionfl --help printed %q", out)
	}
}

// createNetwork makes a user-defined bridge network with its own /24, so
// the replicas can keep fixed addresses across restarts.
func (d *dockerRegion) createNetwork() {
	d.t.Helper()
	name := d.prefix + "-net"
	var lastErr error
	for range 8 {
		n, err := rand.Int(rand.Reader, big.NewInt(250))
		if err != nil {
			d.t.Fatal(err)
		}
		subnet := fmt.Sprintf("10.213.%d", n.Int64()+1)
		_, err = d.docker("network", "create", "--driver", "bridge", "--subnet", subnet+".0/24",
			"--label", "regionfl.faulttest="+d.prefix, name)
		if err == nil {
			d.network, d.subnet = name, subnet
			return
		}
		lastErr = err // most likely the subnet overlaps another network: try another
	}
	d.t.Fatalf("no network: %v", lastErr)
}

// ip is the fixed address of replica i (1-based). Replicas need fixed
// addresses: a replica advertises the address its listener resolved to
// (the container's IP), not the host name given in --raft-addr, so a
// replica restarted with another IP would be unreachable under the old one
// (the bootstrap replica, which never joins again, for good).
func (d *dockerRegion) ip(i int) string { return fmt.Sprintf("%s.%d", d.subnet, 10+i) }

func (d *dockerRegion) coordinators() string {
	var addrs []string
	for _, r := range d.replicas {
		addrs = append(addrs, fmt.Sprintf("%s:%d", r, grpcPort))
	}
	return strings.Join(addrs, ",")
}

func (d *dockerRegion) user() string { return fmt.Sprintf("%d:%d", os.Getuid(), os.Getgid()) }

// identity makes a key and CSR in the identity's own directory and has the
// CA sign it, as the README does, and copies the CA certificate next to it.
func (d *dockerRegion) identity(kind, role, id string, dns ...string) {
	d.t.Helper()
	dir := d.path(id)
	d.host(kind, "init", "--id", id, "--dir", dir)
	args := []string{"ca", "sign", "--dir", d.path("ca"), "--role", role}
	for _, n := range dns {
		args = append(args, "--dns", n)
	}
	d.host(append(args, filepath.Join(dir, "tls.csr"), "-o", filepath.Join(dir, "tls.crt"))...)
	ca, err := os.ReadFile(d.path("ca", "ca.crt"))
	if err != nil {
		d.t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "ca.crt"), ca, 0o644); err != nil {
		d.t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "data"), 0o700); err != nil {
		d.t.Fatal(err)
	}
}

// host runs the binary on the host (the CA is offline, not in the network).
func (d *dockerRegion) host(args ...string) {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	if out, err := exec.CommandContext(ctx, regionflBinary(d.t), args...).CombinedOutput(); err != nil {
		d.t.Fatalf("regionfl %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// tlsArgs are the certificate flags of an identity whose directory is
// mounted at /srv.
var tlsArgs = []string{"--ca", "/srv/ca.crt", "--cert", "/srv/tls.crt", "--key", "/srv/tls.key"}

func (d *dockerRegion) startReplica(i int) {
	d.t.Helper()
	id := d.replicas[i-1]
	args := []string{"run", "-d", "--name", d.container(id), "--hostname", id,
		"--network", d.network, "--network-alias", id, "--ip", d.ip(i),
		"--user", d.user(), "--label", "regionfl.faulttest=" + d.prefix,
		"-e", "REGIONFL_CLOCK_OFFSET=" + d.clockOffset(i),
		"-v", d.path(id) + ":/srv", d.image,
		"coordinator", "run", "--id", id, "--data-dir", "/srv/data",
		"--raft-addr", fmt.Sprintf("%s:%d", id, raftPort), "--grpc-addr", fmt.Sprintf("%s:%d", id, grpcPort),
		"--metrics-addr", fmt.Sprintf("0.0.0.0:%d", metricsPort)}
	if d.diskMB > 0 {
		args = append(args, "--wal-segment-mb", "1")
	}
	if i == 1 {
		args = append(args, "--bootstrap")
	} else {
		args = append(args, "--join", fmt.Sprintf("%s:%d", d.replicas[0], grpcPort))
	}
	d.mustDocker(append(args, tlsArgs...)...)
}

// clockOffset is replica i's (1-based) clock offset as the environment
// gives it ("" for none).
func (d *dockerRegion) clockOffset(i int) string {
	if i > len(d.clockOffsets) || d.clockOffsets[i-1] == 0 {
		return ""
	}
	return d.clockOffsets[i-1].String()
}

func (d *dockerRegion) startHospital(id string) {
	d.t.Helper()
	d.mustDocker(append([]string{"run", "-d", "--name", d.container(id), "--hostname", id,
		"--network", d.network, "--user", d.user(), "--label", "regionfl.faulttest=" + d.prefix,
		"-v", d.path(id) + ":/srv", d.image,
		"node", "run", "--id", id, "--coordinator", d.coordinators(),
		"--data", "/srv/site.csv", "--label", LabelColumn, "--data-dir", "/srv/data", "--policy", "/srv/policy.yaml"}, tlsArgs...)...)
}

// mountDisk mounts a tmpfs of diskMB MiB on the replica's data directory.
// It is unmounted lazily when the test ends (the container may still hold
// it until cleanup removes the container).
func (d *dockerRegion) mountDisk(replica string) {
	d.t.Helper()
	dir := d.path(replica, "data")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		d.t.Fatal(err)
	}
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", fmt.Sprintf("size=%dm,mode=0700", d.diskMB), "tmpfs", dir).CombinedOutput(); err != nil {
		d.t.Fatalf("a %d MiB disk for %s needs root on the host (mount -t tmpfs): %v: %s", d.diskMB, replica, err, out)
	}
	d.t.Cleanup(func() {
		if out, err := exec.Command("umount", "-l", dir).CombinedOutput(); err != nil {
			d.t.Errorf("umount %s: %v: %s", dir, err, out)
		}
	})
}

// cli runs one CLI command in a throwaway container on the region's network
// with the identity's directory mounted read-only.
func (d *dockerRegion) cli(who, coordinators string, args ...string) ([]byte, error) {
	run := []string{"run", "--rm", "--network", d.network, "--user", d.user(),
		"--label", "regionfl.faulttest=" + d.prefix, "-v", d.path(who) + ":/srv:ro", d.image}
	run = append(run, args...)
	run = append(run, "--coordinator", coordinators)
	return d.docker(append(run, tlsArgs...)...)
}

func (d *dockerRegion) listReplicas(coordinators string) ([]replicaInfo, error) {
	out, err := d.cli("ops", coordinators, "operator", "raft", "list-replicas", "--json")
	return decodeJSON[[]replicaInfo]("list-replicas", out, err)
}

func (d *dockerRegion) jobStatus(id string) (*jobStatus, error) {
	out, err := d.cli("alice", d.coordinators(), "job", "status", id, "--json")
	return decodeJSON[*jobStatus]("job status", out, err)
}

// logs returns a container's output (stdout and stderr), optionally only
// what it wrote since a time.
func (d *dockerRegion) logs(name string, since time.Time) []byte {
	args := []string{"logs"}
	if !since.IsZero() {
		args = append(args, "--since", since.UTC().Format(time.RFC3339Nano))
	}
	ctx, cancel := context.WithTimeout(context.Background(), dockerTimeout)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "docker", append(args, d.container(name))...).CombinedOutput()
	return out
}

func (d *dockerRegion) logHas(name string, parts ...string) bool {
	return linesWithAll(d.logs(name, time.Time{}), parts) > 0
}

// startDockerRegion builds the image and brings a region up in containers
// on a private network: the CA and every identity made through the CLI on
// the host, three replicas (one bootstrapping, two joining), the region
// created by the operator, and the given number of hospital nodes on
// synthetic CSVs, through the key ceremony.
func startDockerRegion(t *testing.T, hospitals int, opts ...regionOption) *dockerRegion {
	t.Helper()
	start := time.Now()
	suffix := make([]byte, 4)
	rand.Read(suffix)
	d := &dockerRegion{t: t, dir: t.TempDir(), prefix: "rflft-" + hex.EncodeToString(suffix), started: start,
		replicas: []string{"replica-1", "replica-2", "replica-3"}, trainRows: map[string]int{}}
	for _, o := range opts {
		o(d)
	}
	t.Cleanup(d.cleanup)

	d.buildImage()
	d.createNetwork()
	t.Logf("image %s, network %s (%s.0/24) in %v", d.image, d.network, d.subnet, time.Since(start).Round(time.Millisecond))

	// Identities: replicas get their DNS names on the network.
	d.host("ca", "init", "--dir", d.path("ca"))
	for _, r := range d.replicas {
		d.identity("coordinator", "coordinator", r, r)
	}
	csvs, features, err := WriteSyntheticCSVs(d.path("csv"), hospitals, 1)
	if err != nil {
		t.Fatal(err)
	}
	d.features = features
	for i := range hospitals {
		h := fmt.Sprintf("hospital-%d", i+1)
		d.hospitals = append(d.hospitals, h)
		d.identity("node", "hospital", h)
		writeSitePolicy(t, d.path(h, "policy.yaml"))
		b, err := os.ReadFile(csvs[h])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(d.path(h, "site.csv"), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	d.identity("researcher", "researcher", "alice")
	d.identity("operator", "operator", "ops")
	d.identity("auditor", "auditor", "compliance")

	if d.diskMB > 0 {
		for _, r := range d.replicas {
			d.mountDisk(r)
		}
	}
	for i := range d.replicas {
		d.startReplica(i + 1)
	}
	waitFor(t, clusterTimeout, "3 voting replicas with a leader", func() (bool, error) {
		rs, err := d.listReplicas(d.coordinators())
		if err != nil {
			return false, err
		}
		return countVoters(rs) == 3 && leaderOf(rs) != "", nil
	})
	if _, err := d.cli("ops", d.coordinators(), "operator", "create-region",
		"--hospitals", strings.Join(d.hospitals, ","), "--threshold", "2"); err != nil {
		t.Fatal(err)
	}
	for _, h := range d.hospitals {
		d.startHospital(h)
	}
	waitFor(t, ceremonyTimeout, "the key ceremony", func() (bool, error) {
		for _, h := range d.hospitals {
			if !d.logHas(h, "threshold key share ready") {
				return false, nil
			}
		}
		return true, nil
	})
	for _, h := range d.hospitals {
		d.trainRows[h] = trainRowsFromLog(t, h, d.logs(h, time.Time{}))
	}
	t.Logf("region up in %v", time.Since(start).Round(time.Millisecond))
	return d
}

// TestDockerRegion runs the region in containers of the FROM scratch image
// on a private network: it kills the leading replica's container (docker
// kill -s KILL) mid-job, then cuts a hospital off the network (docker
// network disconnect) for at least one round and reconnects it. The job must
// finish with every round committed and nothing counted twice, the
// reconnected hospital must contribute again, and the killed replica, started
// again on its data, must rejoin as a voter.
func TestDockerRegion(t *testing.T) {
	skipUnlessLong(t)
	requireDocker(t)
	res := record(t, "leader killed (docker kill -9), hospital cut off (network disconnect)")
	d := startDockerRegion(t, 3)
	start := d.started

	rs, err := d.listReplicas(d.coordinators())
	if err != nil {
		t.Fatal(err)
	}
	leader := leaderOf(rs)
	for _, r := range rs {
		t.Logf("replica %s raft %s grpc %s %s leader=%v", r.ID, r.RaftAddr, r.GRPCAddr, r.Suffrage, r.Leader)
	}

	// The job, submitted from a container on the network, with the same 5s
	// round deadline as the process tests. A dead container's address does
	// not answer at all (no RST as on loopback): clients give up on it after
	// a 2s connect timeout, keepalives notice half-open connections, and a
	// hint naming the dead leader is not followed, so no round is lost to
	// the failover.
	deadline := "5s"
	if v := os.Getenv("REGIONFL_DOCKER_ROUND_DEADLINE"); v != "" {
		deadline = v
	}
	job := jobFile{Name: "docker-faults", Inputs: d.features, Rounds: 30, LocalSteps: 200, MinHospitals: 2, RoundDeadline: deadline}
	id := d.submit(job)
	t.Logf("submitted %s; %s leads", id, leader)

	// Fault 1: SIGKILL the leader's container once round 2 has updates in flight.
	d.waitSent(id, 2)
	d.mustDocker("kill", "-s", "KILL", d.container(leader))
	killed := time.Now()
	t.Logf("docker kill -s KILL %s", d.container(leader))
	if d.logHas(leader, `msg="job end"`, "job_id="+id) {
		t.Fatalf("job %s ended before its leader was killed", id)
	}
	d.waitNewLeader(leader, d.others(leader))
	newLeader := time.Now()
	res.RecoveryS = newLeader.Sub(killed).Seconds()
	t.Logf("a new leader %v after the kill", newLeader.Sub(killed).Round(100*time.Millisecond))

	// Fault 2: cut hospital-3 off the network once it works with the new
	// leader (it sent an update since); keep it off until a later round
	// commits without it, then reconnect it.
	victim := d.hospitals[2]
	var lastSent int
	var checked time.Time
	waitEvery(t, jobTimeout, 50*time.Millisecond, victim+" to send an update to the new leader", func() (bool, error) {
		if sent := roundsSent(d.logs(victim, newLeader), id); len(sent) > 0 {
			lastSent = slices.Max(sent)
			return true, nil
		}
		if time.Since(checked) > 2*time.Second {
			checked = time.Now()
			if j, err := d.jobStatus(id); err == nil && j.finished() {
				return false, giveUp("the job ended before %s worked with the new leader: %s", victim, j)
			}
		}
		return false, nil
	})
	d.mustDocker("network", "disconnect", d.network, d.container(victim))
	t.Logf("disconnected %s after its update of round %d", victim, lastSent)
	waitFor(t, jobTimeout, "a round to commit without "+victim, func() (bool, error) {
		j, err := d.jobStatus(id)
		if err != nil {
			return false, err
		}
		if j.finished() {
			return false, giveUp("job ended while %s was disconnected: %s", victim, j)
		}
		return slices.ContainsFunc(j.Rounds, func(r roundInfo) bool {
			return int(r.Round) > lastSent && r.State == "committed" && !slices.Contains(r.Contributors, victim)
		}), nil
	})
	reconnected := time.Now()
	d.mustDocker("network", "connect", d.network, d.container(victim))
	t.Logf("reconnected %s", victim)
	checked = time.Time{}
	waitFor(t, jobTimeout, victim+" to send an update again", func() (bool, error) {
		if len(roundsSent(d.logs(victim, reconnected), id)) > 0 {
			return true, nil
		}
		if time.Since(checked) > 2*time.Second {
			checked = time.Now()
			if j, err := d.jobStatus(id); err == nil && j.finished() {
				return false, giveUp("the job ended before the reconnected %s sent an update: %s", victim, j)
			}
		}
		return false, nil
	})
	t.Logf("%s sent an update %v after it was reconnected", victim, time.Since(reconnected).Round(100*time.Millisecond))

	d.finish(res, id, job)
	t.Logf("job done %v after start", time.Since(start).Round(time.Millisecond))

	// The killed replica's container, started again on its data and address.
	d.mustDocker("start", d.container(leader))
	waitFor(t, clusterTimeout, leader+" to rejoin as a voter", func() (bool, error) {
		rs, err := d.listReplicas(fmt.Sprintf("%s:%d", leader, grpcPort))
		if err != nil {
			return false, err
		}
		self := slices.IndexFunc(rs, func(x replicaInfo) bool { return x.ID == leader })
		return countVoters(rs) == 3 && self >= 0 && rs[self].Suffrage == "voter" && leaderOf(rs) != "" && leaderOf(rs) != leader, nil
	})
	// Asked first, the restarted replica redirects to the leader, which the
	// client follows because it is a listed replica.
	if _, err := d.cli("alice", fmt.Sprintf("%s:%d,%s", leader, grpcPort, d.coordinators()), "job", "status", id, "--json"); err != nil {
		t.Errorf("job status through the restarted %s: %v", leader, err)
	}
	d.checkAudit()
	t.Logf("total %v", time.Since(start).Round(time.Millisecond))
}
