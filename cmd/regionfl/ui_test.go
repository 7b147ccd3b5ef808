package main

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"strings"
	"testing"

	"regionfl/coordinator/fsm"
	"regionfl/coordinator/web"
)

// TestUILogin mints a link with the CLI from a replica's secret file and
// checks that the replica's web view accepts it.
func TestUILogin(t *testing.T) {
	dir := t.TempDir()
	secret, err := web.LoadOrCreateSecret(filepath.Join(dir, web.SecretFileName))
	if err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) (string, error) {
		cmd := newUICmd()
		var out, errOut bytes.Buffer
		cmd.SetOut(&out)
		cmd.SetErr(&errOut)
		cmd.SetArgs(append([]string{"login"}, args...))
		err := cmd.Execute()
		return strings.TrimSpace(out.String()), err
	}
	link, err := run("--data-dir", dir, "--id", "erin", "--role", "researcher", "--url", "https://127.0.0.1:8443/", "--ttl", "10m")
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(link)
	if err != nil || u.Scheme != "https" || u.Host != "127.0.0.1:8443" || u.Path != "/login" || u.Query().Get("token") == "" {
		t.Fatalf("link %q", link)
	}
	srv, err := web.New(web.Config{State: fsm.New().Read, Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	w := httptest.NewRecorder()
	srv.ServeHTTP(w, httptest.NewRequest("GET", u.RequestURI(), nil))
	if w.Code != http.StatusSeeOther {
		t.Fatalf("login with the CLI's link: %d %s", w.Code, w.Body)
	}
	for _, bad := range [][]string{
		{"--data-dir", dir, "--id", "erin", "--role", "hospital", "--url", "https://h:1"},
		{"--data-dir", dir, "--id", "Erin!", "--role", "auditor", "--url", "https://h:1"},
		{"--data-dir", dir, "--id", "erin", "--url", "http://h:1"},
		{"--data-dir", dir, "--id", "erin", "--url", "https://h:1", "--ttl", "48h"},
		{"--id", "erin", "--url", "https://h:1"},
		{"--data-dir", t.TempDir(), "--id", "erin", "--url", "https://h:1"},
	} {
		if _, err := run(bad...); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
}
