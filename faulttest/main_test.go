//go:build linux

package faulttest

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

var (
	// repoRoot is the module's root directory (the parent of faulttest).
	repoRoot string
	// binDir holds the binary built for this test run; removed by TestMain.
	binDir string

	buildOnce sync.Once
	buildErr  error
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, "faulttest:", err)
		return 1
	}
	repoRoot = filepath.Dir(wd)
	if binDir, err = os.MkdirTemp("", "regionfl-faulttest-bin-"); err != nil {
		fmt.Fprintln(os.Stderr, "faulttest:", err)
		return 1
	}
	defer os.RemoveAll(binDir)
	code := m.Run()
	if err := reportScenarios(os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "faulttest: fault-suite report:", err)
		return 1
	}
	return code
}

// regionflBinary returns the regionfl binary the tests run, building it on
// first use (once per test binary): static, CGO_ENABLED=0, so that the
// Docker test copies the very same file into its FROM scratch image.
func regionflBinary(t testing.TB) string {
	t.Helper()
	buildOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		// -tags faultinject adds the suite's fault hooks (a replica's clock
		// offset, cmd/regionfl/faultinject.go) and nothing else.
		cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", "faultinject", "-o", filepath.Join(binDir, "regionfl"), "./cmd/regionfl")
		cmd.Dir = repoRoot
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("CGO_ENABLED=0 go build ./cmd/regionfl: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return filepath.Join(binDir, "regionfl")
}
