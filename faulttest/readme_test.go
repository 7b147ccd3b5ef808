//go:build linux

package faulttest

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestReadmeWalkthroughScript runs scripts/region-local.sh, the README's
// "Run a real region" walkthrough on loopback, as a user would, and checks
// that it ends with a finished job and a downloaded model.
func TestReadmeWalkthroughScript(t *testing.T) {
	skipUnlessLong(t)
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("no bash")
	}
	keep := filepath.Join(t.TempDir(), "region")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", filepath.Join(repoRoot, "scripts", "region-local.sh"))
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(),
		"KEEP="+keep,
		fmt.Sprintf("BASE_PORT=%d", freePortRange(t, 6)),
		"ROUNDS=3",
		"TIMEOUT=180",
		"REGIONFL_COORDINATOR=",
	)
	// Kill the script's whole process group if the test times out, so no
	// replica or node outlives it.
	cmd.SysProcAttr = setpgid()
	cmd.Cancel = func() error { return killGroup(cmd) }
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Whatever happens, nothing the script started outlives the test.
	t.Cleanup(func() { killGroup(cmd) })
	err := cmd.Wait()
	t.Logf("scripts/region-local.sh ran %v", time.Since(start).Round(time.Millisecond))
	if err != nil {
		t.Fatalf("scripts/region-local.sh: %v\n%s", err, out.String())
	}
	text := out.String()
	for _, want := range []string{"+ regionfl ca init --dir ca", "+ regionfl operator create-region", "+ regionfl job submit job.yaml"} {
		if !strings.Contains(text, want) {
			t.Errorf("the script's output lacks %q", want)
		}
	}
	m := regexp.MustCompile(`region-local: job (job-[0-9a-f]+) done`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("the script did not report a finished job:\n%s", text)
	}
	if !regexp.MustCompile(`(?m)^3\s+committed\s`).MatchString(text) {
		t.Errorf("job status shows no committed round 3:\n%s", text)
	}
	b, err := os.ReadFile(filepath.Join(keep, "model.json"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte(`"job_id": "`+m[1]+`"`)) || !bytes.Contains(b, []byte(`"params"`)) {
		t.Errorf("model.json is not the job's model:\n%s", b)
	}
}

// freePortRange finds n consecutive free ports on 127.0.0.1 below Linux's
// ephemeral range (so no outgoing connection takes one meanwhile).
func freePortRange(t *testing.T, n int) int {
	t.Helper()
	for range 50 {
		base := 20000 + rand.IntN(10000-n)
		var ls []net.Listener
		ok := true
		for p := base; p < base+n; p++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
			if err != nil {
				ok = false
				break
			}
			ls = append(ls, l)
		}
		for _, l := range ls {
			l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatalf("no %d consecutive free ports", n)
	return 0
}
