package web

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"regionfl/coordinator/fsm"
	"regionfl/identity"
)

// chromium finds a headless-capable Chromium: $REGIONFL_CHROMIUM, then
// Debian's chromium, then other usual names.
func chromium() string {
	if p := os.Getenv("REGIONFL_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	return ""
}

// TestBrowser serves the view over TLS on loopback, logs a real headless
// Chromium in through a minted login link (no client certificate in the
// browser) and checks what the job page shows.
func TestBrowser(t *testing.T) {
	bin := chromium()
	if bin == "" {
		t.Skip("chromium not on PATH (apt-get install chromium; scripts/ci-deps.sh)")
	}
	fx := newFixture(t, func(c *Config) { c.Now = nil }) // real clock: the browser checks cookie expiry
	addr := fx.serveTLS(t)

	// Log in through the link (it redirects to the jobs list), then load the
	// job page with the same profile, which keeps the session cookie.
	profile := t.TempDir()
	token := MintLoginToken(fx.secret, identity.Identity{Name: "dora", Role: identity.RoleAuditor}, 5*time.Minute, time.Now())
	index := dumpDOM(t, bin, profile, LoginURL("https://"+addr, token))
	for _, want := range []string{jobID, "sepsis-lr", "auditor/dora", "2 / 3"} {
		if !strings.Contains(index, want) {
			t.Fatalf("index after login lacks %q:\n%s", want, index)
		}
	}
	job := dumpDOM(t, bin, profile, "https://"+addr+"/jobs/"+jobID)
	var spent map[string]float64
	fx.f.Read(func(s *fsm.State) { spent = s.Jobs[jobID].EpsilonSpent() })
	for _, want := range []string{
		"Job <span class=\"id\">" + jobID, `id="round-1"`, `id="round-2"`, `id="round-3"`,
		"<svg", "<polyline", "Privacy budget per site", fmtFloat(spent["h1"]), fmtFloat(spent["h2"]),
	} {
		if !strings.Contains(job, want) {
			t.Fatalf("job page in the browser lacks %q:\n%s", want, job)
		}
	}
	// The compliance officer's page: the audit records, filtered.
	records := dumpDOM(t, bin, profile, "https://"+addr+"/audit/records?who=h2&action=contribution.accepted")
	if n := strings.Count(records, `<td class="action">contribution.accepted</td>`); n != 2 || !strings.Contains(records, "GDPR art. 9(2)(j)") || !strings.Contains(records, ">2 of ") {
		t.Fatalf("audit records for h2's contributions in the browser (%d rows):\n%s", n, records)
	}
	// A fresh profile has no session: the browser is refused.
	denied := dumpDOM(t, bin, t.TempDir(), "https://"+addr+"/jobs/"+jobID)
	if strings.Contains(denied, "sepsis-lr") || !strings.Contains(denied, "Forbidden") {
		t.Fatalf("browser without a session saw:\n%s", denied)
	}
	if dir := os.Getenv("REGIONFL_SCREENSHOTS"); dir != "" { // for a person to look at
		for name, path := range map[string]string{"index": "/", "job": "/jobs/" + jobID, "audit": "/audit", "records": "/audit/records"} {
			screenshot(t, bin, profile, "https://"+addr+path, filepath.Join(dir, name+".png"))
		}
	}
}

func chromiumArgs(profile string) []string {
	return []string{
		"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--ignore-certificate-errors", "--user-data-dir=" + profile,
		"--no-first-run", "--no-default-browser-check", "--disable-background-networking",
		"--disable-component-update", "--disable-sync", "--disable-extensions",
	}
}

func dumpDOM(t *testing.T, bin, profile, url string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(chromiumArgs(profile), "--dump-dom", url)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s --dump-dom: %v\n%s", bin, err, stderr.String())
	}
	return string(out)
}

func screenshot(t *testing.T, bin, profile, url, path string) {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append(chromiumArgs(profile), "--window-size=1280,2200", "--screenshot="+abs, url)...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("screenshot: %v\n%s", err, out)
	}
	t.Logf("screenshot of %s in %s", url, abs)
}
