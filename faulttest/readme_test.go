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
	"slices"
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
	for _, want := range []string{"+ regionfl ca init --dir ca", "+ regionfl operator create-region", "+ regionfl job submit job.yaml",
		"== 3b. a stopped replica restarts", "+ regionfl audit verify --ca ca/ca.crt audit.jsonl", "OK: ", "audit records verified"} {
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

// TestReadmeWalkthroughIsTheScript: every command of the README's "Run a
// real region" block is run by scripts/region-local.sh, as the same
// subcommand with at least the same flags (the script's addresses and
// paths are its own).
func TestReadmeWalkthroughIsTheScript(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	script, err := os.ReadFile(filepath.Join(repoRoot, "scripts", "region-local.sh"))
	if err != nil {
		t.Fatal(err)
	}
	block := string(readme)
	start := strings.Index(block, "```sh\n# 1. The region CA")
	if start < 0 {
		t.Fatal("README has no walkthrough block")
	}
	block = block[start+len("```sh\n"):]
	block = block[:strings.Index(block, "```")]
	want := shellCommands(block, nil)
	if len(want) < 20 {
		t.Fatalf("only %d commands found in the README's walkthrough", len(want))
	}
	// The script passes identities' TLS flags through arrays.
	arrays := map[string][]string{}
	for _, m := range regexp.MustCompile(`\b([A-Za-z_]+)=\(([^)]*)\)`).FindAllStringSubmatch(string(script), -1) {
		arrays[m[1]] = append(arrays[m[1]], strings.Fields(m[2])...)
	}
	have := shellCommands(string(script), arrays)
	for _, w := range want {
		found := false
		for _, h := range have {
			if h.path == w.path && subset(w.flags, h.flags) {
				found = true
				break
			}
		}
		if !found {
			t.Errorf("the script does not run the README's %q with its flags %v", "regionfl "+w.path, w.flags)
		}
	}
}

type shellCommand struct {
	path  string   // e.g. "ca sign"
	flags []string // e.g. --dir, --role
}

// shellCommands finds the regionfl command lines of a shell text
// (continuation lines joined, arrays "${NAME[@]}" expanded).
func shellCommands(text string, arrays map[string][]string) []shellCommand {
	text = strings.ReplaceAll(text, "\\\n", " ")
	word := regexp.MustCompile(`^[a-z][a-z-]*$`)
	var out []shellCommand
	for _, line := range strings.Split(text, "\n") {
		if i := strings.Index(line, "#"); i >= 0 && !strings.Contains(line[:i], "\"") {
			line = line[:i]
		}
		i := strings.Index(line, "regionfl ")
		if i < 0 || (i > 0 && !strings.ContainsAny(line[i-1:i], " \t(")) {
			continue
		}
		var tokens []string
		for _, f := range strings.Fields(line[i+len("regionfl "):]) {
			if m := regexp.MustCompile(`^"\$\{([A-Za-z_]+)\[@\]\}"\)?$`).FindStringSubmatch(f); m != nil {
				tokens = append(tokens, arrays[m[1]]...)
				continue
			}
			tokens = append(tokens, strings.Trim(f, `"`))
		}
		// The path is the leading lowercase words (subcommands); the first
		// flag or positional argument ends it.
		var (
			c     shellCommand
			path  []string
			ended bool
		)
		for _, tok := range tokens {
			switch {
			case strings.HasPrefix(tok, "-"):
				ended = true
				if !slices.Contains(c.flags, tok) {
					c.flags = append(c.flags, tok)
				}
			case !ended && word.MatchString(tok):
				path = append(path, tok)
			default:
				ended = true
			}
		}
		c.path = strings.Join(path, " ")
		if c.path != "" {
			out = append(out, c)
		}
	}
	return out
}

func subset(a, b []string) bool {
	for _, x := range a {
		if !slices.Contains(b, x) {
			return false
		}
	}
	return true
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
