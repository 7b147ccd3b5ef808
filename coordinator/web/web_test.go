package web

import (
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/protobuf/proto"

	"regionfl/audit"
	"regionfl/coordinator/fsm"
	"regionfl/identity"
	"regionfl/jobspec"
	"regionfl/models"
	pb "regionfl/proto/regionfl/v1"
)

// applier feeds commands to an FSM as Raft would.
type applier struct {
	t   testing.TB
	f   *fsm.FSM
	idx uint64
}

func (a *applier) must(m proto.Message) {
	a.t.Helper()
	a.mustAt(t0+int64(a.idx), m)
}

// mustAt applies m as an entry proposed at ms (Unix ms).
func (a *applier) mustAt(ms int64, m proto.Message) {
	a.t.Helper()
	b, err := fsm.Encode(m, fsm.Meta{Actor: "coordinator/c1", UnixMs: ms})
	if err != nil {
		a.t.Fatal(err)
	}
	a.idx++
	if res := a.f.Apply(&raft.Log{Index: a.idx, Type: raft.LogCommand, Data: b}); res != nil {
		a.t.Fatalf("command %T: %v", m, res)
	}
}

const (
	jobID      = "job-7f3a"
	evilReason = `purpose not in policy <script>alert("x")</script>`
	t0         = int64(1_700_000_000_000)
)

// testState builds a region of three hospitals and a DP job that two of
// them accepted, with two committed rounds and a third collecting.
func testState(t testing.TB) *fsm.FSM {
	a := &applier{t: t, f: fsm.New()}
	hs := []string{"h1", "h2", "h3"}
	a.must(&pb.RegisterReplicaCommand{Id: "c1", GrpcAddr: "127.0.0.1:7001"})
	a.mustAt(t0, &pb.CreateRegionCommand{Params: "p", Hospitals: hs, Threshold: 2, Seed: []byte("seed")})
	for _, h := range hs {
		a.must(&pb.EnrollCommand{Hospital: h, HpkePublicKey: []byte("k" + h)})
	}
	for _, h := range hs {
		a.must(&pb.SealedSharesCommand{From: h, Shares: [][]byte{{1}, {2}, {3}}})
	}
	for _, h := range hs {
		a.must(&pb.KeyReadyCommand{Hospital: h})
	}
	spec := &pb.JobSpec{
		Name: "sepsis-lr", Purpose: "early sepsis warning", LegalBasis: "GDPR art. 9(2)(j)", Dataset: "icu",
		MinHospitals: 2, Rounds: 3, ClipNorm: 1, DpNoiseMultiplier: 1.1, DpDelta: 1e-5,
		Strategy: &pb.Strategy{Name: "fedavg"}, AlertThreshold: 0.5, AlertSensitivity: 0.8,
	}
	a.mustAt(t0, &pb.SubmitJobCommand{JobId: jobID, Spec: spec, SubmittedBy: "researcher/alice", InitialParams: []float64{0, 0}, ModelHash: "abc123"})
	a.must(&pb.DecideJobCommand{JobId: jobID, Hospital: "h1", Accept: true})
	a.must(&pb.DecideJobCommand{JobId: jobID, Hospital: "h2", Accept: true})
	a.must(&pb.DecideJobCommand{JobId: jobID, Hospital: "h3", Reason: evilReason})
	for r, norm := range []float64{0.5, 0.25} {
		n := uint32(r + 1)
		at := t0 + int64(r)*60_000
		a.mustAt(at, &pb.OpenRoundCommand{JobId: jobID, Round: n, DeadlineUnixMs: at + 30_000})
		a.must(&pb.ContributionCommand{JobId: jobID, Round: n, Hospital: "h1", Digest: []byte{byte(n), 1}, Size: 1 << 20})
		a.must(&pb.ContributionCommand{JobId: jobID, Round: n, Hospital: "h2", Digest: []byte{byte(n), 2}, Size: 1 << 20})
		a.mustAt(at+4_000, &pb.CloseRoundCommand{JobId: jobID, Round: n, Aggregate: []byte("agg"),
			AggregateDigest: []byte("ad"), Contributors: []string{"h1", "h2"}, Active: []string{"h1", "h3"}})
		a.must(&pb.DecryptionShareCommand{JobId: jobID, Round: n, Attempt: 1, Hospital: "h1", Share: []byte("x")})
		a.mustAt(at+6_500, &pb.CommitModelCommand{JobId: jobID, Round: n, Version: n, Params: []float64{1, 2},
			TotalSamples: 1000 + uint64(r), UpdateNorm: norm, RegionMetrics: testMetrics(t, n-1)})
	}
	a.mustAt(t0+120_000, &pb.OpenRoundCommand{JobId: jobID, Round: 3, DeadlineUnixMs: t0 + 150_000})
	a.must(&pb.ContributionCommand{JobId: jobID, Round: 3, Hospital: "h1", Digest: []byte{3, 1}, Size: 1 << 20})
	return a.f
}

// testMetrics are region figures of model version v on fixed predictions
// (what the sites' encrypted sums decrypt to).
func testMetrics(t testing.TB, v uint32) *pb.ClinicalMetrics {
	t.Helper()
	var p, y []float64
	for i := range 400 {
		p = append(p, float64(i%100)/100+0.005)
		if i%100 >= 40+i%7 {
			y = append(y, 1)
		} else {
			y = append(y, 0)
		}
	}
	m, err := models.Score(p, y, 0.5)
	if err != nil {
		t.Fatal(err)
	}
	return jobspec.MetricsToProto(m, v)
}

type fixture struct {
	srv    *Server
	ca     *identity.CA
	secret []byte
	mu     sync.Mutex
	now    time.Time
	f      *fsm.FSM
}

func (fx *fixture) clock() time.Time {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	return fx.now
}

func (fx *fixture) advance(d time.Duration) {
	fx.mu.Lock()
	fx.now = fx.now.Add(d)
	fx.mu.Unlock()
}

func newFixture(t testing.TB, mod func(*Config)) *fixture {
	t.Helper()
	ca, err := identity.NewCA("test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fx := &fixture{ca: ca, secret: []byte(strings.Repeat("k", 32)), now: time.Unix(1_800_000_000, 0), f: testState(t)}
	cfg := Config{State: fx.f.Read, IsLeader: func() bool { return true }, ReplicaID: "c1", Secret: fx.secret, Now: fx.clock}
	if mod != nil {
		mod(&cfg)
	}
	if fx.srv, err = New(cfg); err != nil {
		t.Fatal(err)
	}
	return fx
}

// serveTLS serves the view over real TLS on a loopback port, with a
// coordinator certificate of the fixture's CA, until the test ends.
func (fx *fixture) serveTLS(t testing.TB) string {
	t.Helper()
	serverCert, err := fx.ca.Issue(identity.Identity{Name: "c1", Role: identity.RoleCoordinator}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := fx.srv.Start("127.0.0.1:0", TLSConfig(serverCert, fx.ca.Pool()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { fx.srv.Close() })
	return addr
}

func (fx *fixture) cert(t testing.TB, name string, role identity.Role) *x509.Certificate {
	t.Helper()
	c, err := fx.ca.Issue(identity.Identity{Name: name, Role: role}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c.Leaf
}

// do sends a request as if over TLS, with the given verified client cert.
func (fx *fixture) do(method, target string, cert *x509.Certificate, cookies ...*http.Cookie) *http.Response {
	r := httptest.NewRequest(method, "https://ui.test"+target, nil)
	r.TLS = &tls.ConnectionState{Version: tls.VersionTLS13, HandshakeComplete: true}
	if cert != nil {
		r.TLS.VerifiedChains = [][]*x509.Certificate{{cert, fx.ca.Cert}}
	}
	for _, c := range cookies {
		r.AddCookie(c)
	}
	w := httptest.NewRecorder()
	fx.srv.ServeHTTP(w, r)
	return w.Result()
}

func body(t testing.TB, res *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func wantStatus(t testing.TB, res *http.Response, want int) string {
	t.Helper()
	b := body(t, res)
	if res.StatusCode != want {
		t.Fatalf("%s %s: status %d, want %d\n%s", res.Request.Method, res.Request.URL, res.StatusCode, want, b)
	}
	return b
}

func TestAccessByCertificate(t *testing.T) {
	fx := newFixture(t, nil)
	wantStatus(t, fx.do("GET", "/", nil), http.StatusForbidden)
	wantStatus(t, fx.do("GET", "/jobs/"+jobID, nil), http.StatusForbidden)
	wantStatus(t, fx.do("GET", "/", fx.cert(t, "h1", identity.RoleHospital)), http.StatusForbidden)
	wantStatus(t, fx.do("GET", "/", fx.cert(t, "c1", identity.RoleCoordinator)), http.StatusForbidden)
	for _, role := range AllowedRoles {
		b := wantStatus(t, fx.do("GET", "/", fx.cert(t, "alice", role)), http.StatusOK)
		if !strings.Contains(b, jobID) || !strings.Contains(b, string(role)+"/alice") {
			t.Fatalf("%s: index lacks the job or the viewer:\n%s", role, b)
		}
	}
	// A forbidden page says nothing about the state.
	b := wantStatus(t, fx.do("GET", "/jobs/"+jobID, fx.cert(t, "h1", identity.RoleHospital)), http.StatusForbidden)
	if strings.Contains(b, "sepsis") || strings.Contains(b, "h2") {
		t.Fatalf("403 page leaks state:\n%s", b)
	}
}

func TestOnlyGetAndHead(t *testing.T) {
	fx := newFixture(t, nil)
	alice := fx.cert(t, "alice", identity.RoleAuditor)
	for _, m := range []string{"POST", "PUT", "DELETE", "PATCH", "OPTIONS"} {
		for _, path := range []string{"/", "/jobs/" + jobID, "/login?token=x", "/static/style.css"} {
			res := fx.do(m, path, alice)
			wantStatus(t, res, http.StatusMethodNotAllowed)
			if res.Header.Get("Allow") != "GET, HEAD" {
				t.Fatalf("%s %s: Allow %q", m, path, res.Header.Get("Allow"))
			}
		}
	}
	res := fx.do("HEAD", "/jobs/"+jobID, alice)
	if res.StatusCode != http.StatusOK {
		t.Fatalf("HEAD: %d", res.StatusCode)
	}
}

func TestSecurityHeaders(t *testing.T) {
	fx := newFixture(t, nil)
	for _, res := range []*http.Response{
		fx.do("GET", "/", fx.cert(t, "alice", identity.RoleResearcher)),
		fx.do("GET", "/", nil),
		fx.do("POST", "/", nil),
		fx.do("GET", "/static/style.css", nil),
	} {
		h := res.Header
		csp := h.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "script-src 'none'") || strings.Contains(csp, "unsafe-inline") {
			t.Fatalf("CSP %q", csp)
		}
		if h.Get("X-Frame-Options") != "DENY" || h.Get("Referrer-Policy") != "no-referrer" || h.Get("X-Content-Type-Options") != "nosniff" {
			t.Fatalf("headers %v", h)
		}
	}
}

func TestStaticAssetsAreEmbeddedAndPublic(t *testing.T) {
	fx := newFixture(t, nil)
	b := wantStatus(t, fx.do("GET", "/static/style.css", nil), http.StatusOK)
	if !strings.Contains(b, "svg.chart") {
		t.Fatal("stylesheet not served")
	}
	wantStatus(t, fx.do("GET", "/static/", nil), http.StatusNotFound)
}

func TestNoInlineScriptOrStyle(t *testing.T) {
	fx := newFixture(t, nil)
	alice := fx.cert(t, "alice", identity.RoleAuditor)
	for _, p := range []string{"/", "/jobs/" + jobID, "/audit"} {
		b := wantStatus(t, fx.do("GET", p, alice), http.StatusOK)
		b = strings.ReplaceAll(b, `xmlns="http://www.w3.org/2000/svg"`, "") // a namespace name, not a fetch
		for _, bad := range []string{"<script", " style=", "<style", "http://", "https://", "javascript:"} {
			if strings.Contains(b, bad) {
				t.Fatalf("%s contains %q", p, bad)
			}
		}
	}
}

// login follows a login link and returns the response and the cookie.
func (fx *fixture) login(t testing.TB, token string) (*http.Response, *http.Cookie) {
	t.Helper()
	res := fx.do("GET", "/login?token="+url.QueryEscape(token), nil)
	for _, c := range res.Cookies() {
		if c.Name == SessionCookie {
			return res, c
		}
	}
	return res, nil
}

func TestLoginLink(t *testing.T) {
	fx := newFixture(t, nil)
	tok := MintLoginToken(fx.secret, identity.Identity{Name: "carol", Role: identity.RoleAuditor}, 15*time.Minute, fx.now)
	res, c := fx.login(t, tok)
	if res.StatusCode != http.StatusSeeOther || res.Header.Get("Location") != "/" {
		t.Fatalf("login: %d, Location %q", res.StatusCode, res.Header.Get("Location"))
	}
	if c == nil || !c.Secure || !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || c.Path != "/" {
		t.Fatalf("cookie %+v", c)
	}
	if c.MaxAge <= 0 || c.MaxAge > int(MaxSessionTTL/time.Second) {
		t.Fatalf("cookie max-age %d", c.MaxAge)
	}
	b := wantStatus(t, fx.do("GET", "/jobs/"+jobID, nil, c), http.StatusOK)
	if !strings.Contains(b, "auditor/carol") {
		t.Fatal("page does not name the logged-in identity")
	}
	// The session ends after MaxSessionTTL even though the cookie is kept.
	fx.advance(MaxSessionTTL + time.Second)
	wantStatus(t, fx.do("GET", "/", nil, c), http.StatusForbidden)
}

func TestLoginLinkRefusals(t *testing.T) {
	fx := newFixture(t, nil)
	carol := identity.Identity{Name: "carol", Role: identity.RoleResearcher}
	good := MintLoginToken(fx.secret, carol, 15*time.Minute, fx.now)
	flip := func(s string, i int) string {
		b := []byte(s)
		if b[i] == 'A' {
			b[i] = 'B'
		} else {
			b[i] = 'A'
		}
		return string(b)
	}
	// A payload that claims another role, with the original MAC.
	payload, mac, _ := strings.Cut(good, ".")
	other := MintLoginToken(fx.secret, identity.Identity{Name: "carol", Role: identity.RoleOperator}, 15*time.Minute, fx.now)
	otherPayload, _, _ := strings.Cut(other, ".")
	cases := map[string]string{
		"expired":         MintLoginToken(fx.secret, carol, -time.Second, fx.now),
		"tampered mac":    flip(good, len(good)-3),
		"tampered body":   flip(good, 5),
		"swapped payload": otherPayload + "." + mac,
		"other secret":    MintLoginToken([]byte(strings.Repeat("z", 32)), carol, 15*time.Minute, fx.now),
		"hospital role":   MintLoginToken(fx.secret, identity.Identity{Name: "h1", Role: identity.RoleHospital}, 15*time.Minute, fx.now),
		"too long ttl":    MintLoginToken(fx.secret, carol, MaxLoginTTL+time.Hour, fx.now),
		"session as link": mint(fx.secret, purposeSession, carol, fx.now.Add(time.Hour)),
		"no mac":          payload,
		"empty":           "",
		"garbage":         "%%%.***",
	}
	for name, tok := range cases {
		t.Run(name, func(t *testing.T) {
			res, c := fx.login(t, tok)
			wantStatus(t, res, http.StatusForbidden)
			if c != nil {
				t.Fatal("refused login set a cookie")
			}
		})
	}
	// A login token is not a session cookie either.
	wantStatus(t, fx.do("GET", "/", nil, &http.Cookie{Name: SessionCookie, Value: good}), http.StatusForbidden)
	// A forged cookie is refused.
	wantStatus(t, fx.do("GET", "/", nil, &http.Cookie{Name: SessionCookie, Value: mint([]byte(strings.Repeat("z", 32)), purposeSession, carol, fx.now.Add(time.Hour))}), http.StatusForbidden)
	// The link expires with its TTL.
	fx.advance(16 * time.Minute)
	res, _ := fx.login(t, good)
	if b := wantStatus(t, res, http.StatusForbidden); !strings.Contains(b, "expired") {
		t.Fatalf("expired link page: %s", b)
	}
}

func TestLoginDisabledWithoutSecret(t *testing.T) {
	fx := newFixture(t, func(c *Config) { c.Secret = nil })
	tok := MintLoginToken(nil, identity.Identity{Name: "carol", Role: identity.RoleAuditor}, time.Minute, fx.now)
	res, c := fx.login(t, tok)
	wantStatus(t, res, http.StatusForbidden)
	if c != nil {
		t.Fatal("cookie without a secret")
	}
	if _, err := New(Config{State: fx.f.Read, Secret: []byte("short")}); err == nil {
		t.Fatal("short secret accepted")
	}
}

func TestJobPage(t *testing.T) {
	fx := newFixture(t, nil)
	b := wantStatus(t, fx.do("GET", "/jobs/"+jobID, fx.cert(t, "alice", identity.RoleResearcher)), http.StatusOK)
	for _, want := range []string{
		"sepsis-lr", "early sepsis warning", "GDPR art. 9(2)(j)", "researcher/alice", "abc123",
		`id="round-1"`, `id="round-2"`, `id="round-3"`, "committed", "collecting",
		"1000", "1001", "0.5", "0.25", // samples and update norms
		"4.0s", "2.5s", // collect and decrypt times
		"<svg", "<polyline", "Update norm per round", "Contributors per round",
		"Privacy budget per site", "δ = 1e-05",
	} {
		if !strings.Contains(b, want) {
			t.Errorf("job page lacks %q", want)
		}
	}
	// Refusal reasons are shown escaped.
	if strings.Contains(b, "<script>") || !strings.Contains(b, "&lt;script&gt;") {
		t.Error("refusal reason not escaped")
	}
	// Participants: h1 and h2 counted in rounds 1 and 2, h1 sent in round 3.
	rows := regexp.MustCompile(`(?s)<tr><th scope="row">(h\d)</th>(.*?)</tr>`).FindAllStringSubmatch(b, -1)
	got := map[string]string{}
	for _, r := range rows {
		got[r[1]] = strings.Join(regexp.MustCompile(`class="cell (\w+)"`).FindAllString(r[2], -1), " ")
	}
	want := map[string]string{
		"h1": `class="cell counted" class="cell counted" class="cell sent"`,
		"h2": `class="cell counted" class="cell counted" class="cell absent"`,
		"h3": `class="cell absent" class="cell absent" class="cell absent"`, // asked to decrypt only
	}
	for h, w := range want {
		if got[h] != w {
			t.Errorf("participants of %s: %s, want %s", h, got[h], w)
		}
	}
	// The privacy budget matches the state's ledger.
	var spent map[string]float64
	fx.f.Read(func(s *fsm.State) { spent = s.Jobs[jobID].EpsilonSpent() })
	for _, h := range []string{"h1", "h2"} {
		if !strings.Contains(b, fmtFloat(spent[h])) {
			t.Errorf("budget of %s (%s) not shown", h, fmtFloat(spent[h]))
		}
	}
	if spent["h1"] <= spent["h2"] {
		t.Error("h1 contributed to more rounds than h2 and must have spent more")
	}
	// The alarm burden of the newest model with region figures, with the
	// row of the job's target sensitivity marked.
	m := testMetrics(t, 1)
	op, ok := models.ForSensitivity(jobspec.OperatingPointsFromProto(m), 0.8)
	if !ok {
		t.Fatal("the fixture's figures reach no sensitivity of 0.8")
	}
	alarms := regexp.MustCompile(`(?s)<section id="alarms">.*?</section>`).FindString(b)
	if !strings.Contains(alarms, "Model v1 on the sites' test rows (400 patients)") || strings.Count(alarms, "<tr>")+strings.Count(alarms, "<tr class") != 20 ||
		!regexp.MustCompile(`class="reported"[^>]*><td class="num">`+fmt.Sprintf("%.2f", op.Threshold)+`</td>`).MatchString(alarms) {
		t.Errorf("alarm burden (want the %.2f row reported):\n%s", op.Threshold, alarms)
	}
	wantStatus(t, fx.do("GET", "/jobs/nope", fx.cert(t, "alice", identity.RoleResearcher)), http.StatusNotFound)
}

func TestIndexPage(t *testing.T) {
	fx := newFixture(t, nil)
	b := wantStatus(t, fx.do("GET", "/", fx.cert(t, "alice", identity.RoleResearcher)), http.StatusOK)
	for _, want := range []string{jobID, "sepsis-lr", "early sepsis warning", "GDPR art. 9(2)(j)", "running", "2 / 3", "v2", "h1, h2, h3", "2 of 3", "replica c1", "leader"} {
		if !strings.Contains(b, want) {
			t.Errorf("index lacks %q", want)
		}
	}
}

func TestAuditPage(t *testing.T) {
	fx := newFixture(t, nil)
	alice := fx.cert(t, "alice", identity.RoleAuditor)
	if b := wantStatus(t, fx.do("GET", "/audit", alice), http.StatusOK); !strings.Contains(b, "Audit log not available") {
		t.Fatalf("audit page without a log:\n%s", b)
	}
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, st := range []AuditStatus{
		{Records: 42, LastCheckpointSize: 40, LastCheckpointTime: at, Verified: true, LastCheckpointRoot: "beef"},
		{Records: 42, LastCheckpointSize: 40, LastCheckpointTime: at, Err: "record 41: hash mismatch"},
	} {
		fx := newFixture(t, func(c *Config) { c.Audit = func() AuditStatus { return st } })
		b := wantStatus(t, fx.do("GET", "/audit", alice), http.StatusOK)
		for _, want := range []string{"42", "tree size 40", "2026-03-01 12:00:00Z"} {
			if !strings.Contains(b, want) {
				t.Errorf("audit page lacks %q", want)
			}
		}
		if st.Verified != strings.Contains(b, ">Verified<") || st.Verified == strings.Contains(b, "hash mismatch") {
			t.Errorf("verified=%v shown wrong:\n%s", st.Verified, b)
		}
	}
}

func TestMetricsBehindAuth(t *testing.T) {
	fx := newFixture(t, func(c *Config) {
		c.Metrics = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "regionfl_up 1\n") })
	})
	wantStatus(t, fx.do("GET", "/metrics", nil), http.StatusForbidden)
	if b := wantStatus(t, fx.do("GET", "/metrics", fx.cert(t, "op", identity.RoleOperator)), http.StatusOK); b != "regionfl_up 1\n" {
		t.Fatalf("metrics: %q", b)
	}
	fx = newFixture(t, nil)
	wantStatus(t, fx.do("GET", "/metrics", fx.cert(t, "op", identity.RoleOperator)), http.StatusNotFound)
}

// TestOverRealTLS serves the view with TLSConfig and checks who gets in.
func TestOverRealTLS(t *testing.T) {
	fx := newFixture(t, nil)
	addr := fx.serveTLS(t)
	get := func(cert *tls.Certificate) (int, error) {
		cfg := &tls.Config{RootCAs: fx.ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS13}
		if cert != nil { // always present it, even if the server names other CAs
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
		}
		c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
		res, err := c.Get("https://" + addr + "/jobs/" + jobID)
		if err != nil {
			return 0, err
		}
		defer res.Body.Close()
		io.Copy(io.Discard, res.Body)
		return res.StatusCode, nil
	}
	issue := func(ca *identity.CA, name string, role identity.Role) *tls.Certificate {
		c, err := ca.Issue(identity.Identity{Name: name, Role: role}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return &c
	}
	if code, err := get(issue(fx.ca, "alice", identity.RoleResearcher)); err != nil || code != 200 {
		t.Fatalf("researcher cert: %d %v", code, err)
	}
	if code, err := get(nil); err != nil || code != 403 {
		t.Fatalf("no cert: %d %v", code, err)
	}
	if code, err := get(issue(fx.ca, "h1", identity.RoleHospital)); err != nil || code != 403 {
		t.Fatalf("hospital cert: %d %v", code, err)
	}
	otherCA, err := identity.NewCA("other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if code, err := get(issue(otherCA, "alice", identity.RoleResearcher)); err == nil {
		t.Fatalf("a certificate from another CA was accepted: %d", code)
	}
}

func TestSecretFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), SecretFileName)
	a, err := LoadOrCreateSecret(path)
	if err != nil || len(a) != 32 {
		t.Fatalf("create: %d bytes, %v", len(a), err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, %v", fi.Mode(), err)
	}
	b, err := LoadOrCreateSecret(path)
	if err != nil || string(a) != string(b) {
		t.Fatal("second load gave another secret")
	}
	if c, err := ReadSecret(path); err != nil || string(c) != string(a) {
		t.Fatal("ReadSecret differs")
	}
	os.Chmod(path, 0o644)
	if _, err := ReadSecret(path); err == nil {
		t.Fatal("world-readable secret accepted")
	}
	if _, err := ReadSecret(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing secret read")
	}
}

func TestPlot(t *testing.T) {
	if p := NewPlot("empty"); !p.Empty {
		t.Fatal("no series is empty")
	}
	nan := Series{Name: "x", Points: []Point{{1, nanValue()}}}
	if p := NewPlot("nan", nan); !p.Empty {
		t.Fatal("only NaN is empty")
	}
	one := NewPlot("one", Series{Name: "a", Points: []Point{{1, 3}}})
	if one.Empty || len(one.Lines) != 1 || len(one.Lines[0].Dots) != 1 || len(one.YTicks) < 2 {
		t.Fatalf("single point: %+v", one)
	}
	two := NewPlot("two", Series{Name: "acc", Points: []Point{{1, 0.61}, {2, nanValue()}, {3, 0.83}}}, Series{Name: "loss", Points: []Point{{1, 0.9}, {3, 0.4}}})
	if !two.Legend || len(two.Lines) != 2 || len(two.Lines[0].Dots) != 2 || strings.Count(two.Lines[1].Points, ",") != 2 {
		t.Fatalf("two series: %+v", two)
	}
	for _, tk := range two.YTicks {
		if strings.Contains(tk.Label, "0000000") {
			t.Fatalf("tick label %q", tk.Label)
		}
	}
}

func nanValue() float64 { var z float64; return z / z }

func TestEmptyState(t *testing.T) {
	f := fsm.New()
	srv, err := New(Config{State: f.Read})
	if err != nil {
		t.Fatal(err)
	}
	ca, err := identity.NewCA("t", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	fx := &fixture{srv: srv, ca: ca, f: f}
	alice := fx.cert(t, "alice", identity.RoleAuditor)
	if b := wantStatus(t, fx.do("GET", "/", alice), http.StatusOK); !strings.Contains(b, "No jobs yet") || !strings.Contains(b, "No region") {
		t.Fatalf("empty index:\n%s", b)
	}
	wantStatus(t, fx.do("GET", "/jobs/x", alice), http.StatusNotFound)
	wantStatus(t, fx.do("GET", "/audit", alice), http.StatusOK)
}

// TestAuditFromState signs a checkpoint of the log that the state machine
// kept while applying testState's commands, and checks the status shown.
func TestAuditFromState(t *testing.T) {
	fx := newFixture(t, nil)
	status := AuditFromState(fx.f.Read, fx.ca.Pool())
	st := status()
	if st.Records == 0 || st.Verified || st.Err != "" || st.LastCheckpointSize != 0 {
		t.Fatalf("before any checkpoint: %+v", st)
	}
	_, th := fx.checkpoint(t)
	st = status()
	if !st.Verified || st.LastCheckpointSize != th.Size || st.LastCheckpointRoot != th.RootHash || st.Records < int(th.Size) {
		t.Fatalf("after a checkpoint: %+v", st)
	}
	if st2 := status(); st2 != st {
		t.Fatalf("cached status differs: %+v", st2)
	}
	other, err := identity.NewCA("other", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if st := AuditFromState(fx.f.Read, other.Pool())(); st.Verified || st.Err == "" {
		t.Fatalf("checkpoint verified against another CA: %+v", st)
	}
	fx2 := newFixture(t, func(c *Config) { c.Audit = status })
	b2 := wantStatus(t, fx2.do("GET", "/audit", fx2.cert(t, "alice", identity.RoleAuditor)), http.StatusOK)
	if !strings.Contains(b2, ">Verified<") || !strings.Contains(b2, th.RootHash) {
		t.Fatalf("audit page:\n%s", b2)
	}
}

// A login link logs in once: used again, on this replica or after its
// restart (the record is on disk), it is refused and sets no cookie.
func TestLoginLinkIsSingleUse(t *testing.T) {
	file := filepath.Join(t.TempDir(), "used-links.json")
	fx := newFixture(t, func(c *Config) { c.UsedLinksFile = file })
	tok := MintLoginToken(fx.secret, identity.Identity{Name: "carol", Role: identity.RoleAuditor}, 15*time.Minute, fx.now)
	if res, c := fx.login(t, tok); res.StatusCode != http.StatusSeeOther || c == nil {
		t.Fatalf("first use: %d", res.StatusCode)
	}
	res, c := fx.login(t, tok)
	if b := wantStatus(t, res, http.StatusForbidden); !strings.Contains(b, "used already") || c != nil {
		t.Fatalf("second use: %s (cookie %v)", b, c)
	}
	restarted := newFixture(t, func(c *Config) { c.UsedLinksFile = file })
	restarted.now = fx.now
	res, c = restarted.login(t, tok)
	if wantStatus(t, res, http.StatusForbidden); c != nil {
		t.Fatal("a used link logged in after a restart")
	}
	// Another link for the same person works.
	other := MintLoginToken(fx.secret, identity.Identity{Name: "carol", Role: identity.RoleAuditor}, 14*time.Minute, fx.now)
	if res, _ := restarted.login(t, other); res.StatusCode != http.StatusSeeOther {
		t.Fatalf("a fresh link: %d", res.StatusCode)
	}
}

// A revoked certificate no longer opens the web view.
func TestRevokedCertificateRefused(t *testing.T) {
	fx := newFixture(t, nil)
	cert := fx.cert(t, "alice", identity.RoleAuditor)
	wantStatus(t, fx.do("GET", "/", cert), http.StatusOK)
	b, err := fsm.Encode(&pb.RevokeCommand{Serial: identity.SerialHex(cert), Reason: "left", RevokedBy: "operator/ops"}, fsm.Meta{Actor: "operator/ops", UnixMs: t0})
	if err != nil {
		t.Fatal(err)
	}
	if res := fx.f.Apply(&raft.Log{Index: 1000, Type: raft.LogCommand, Data: b}); res != nil {
		t.Fatal(res)
	}
	wantStatus(t, fx.do("GET", "/", cert), http.StatusForbidden)
	wantStatus(t, fx.do("GET", "/", fx.cert(t, "alice", identity.RoleAuditor)), http.StatusOK) // a new certificate
}

// A session ends when its browser signs out (on this replica, across a
// restart) or when an operator ends the identity's sessions (replicated:
// every session that began before then, on every replica).
func TestSessionsEnd(t *testing.T) {
	file := filepath.Join(t.TempDir(), "used-links.json")
	fx := newFixture(t, func(c *Config) { c.UsedLinksFile = file })
	carol := identity.Identity{Name: "carol", Role: identity.RoleAuditor}
	session := func() *http.Cookie {
		t.Helper()
		fx.advance(time.Second) // a link of its own
		res, c := fx.login(t, MintLoginToken(fx.secret, carol, 15*time.Minute, fx.now))
		if res.StatusCode != http.StatusSeeOther || c == nil {
			t.Fatalf("login: %d", res.StatusCode)
		}
		return c
	}

	// Signing out.
	c := session()
	if b := wantStatus(t, fx.do("GET", "/", nil, c), http.StatusOK); !strings.Contains(b, `action="/logout"`) {
		t.Fatalf("no sign-out button for a login-link session:\n%s", b)
	}
	if b := wantStatus(t, fx.do("GET", "/", fx.cert(t, "alice", identity.RoleAuditor)), http.StatusOK); strings.Contains(b, `action="/logout"`) {
		t.Fatal("a sign-out button for a certificate, which has no session")
	}
	res := fx.do("POST", "/logout", nil, c)
	wantStatus(t, res, http.StatusOK)
	if cleared := res.Cookies(); len(cleared) != 1 || cleared[0].Name != SessionCookie || cleared[0].MaxAge >= 0 {
		t.Fatalf("sign-out cookies %v", cleared)
	}
	wantStatus(t, fx.do("GET", "/", nil, c), http.StatusForbidden) // the kept cookie
	restarted := newFixture(t, func(cfg *Config) { cfg.UsedLinksFile = file })
	restarted.now = fx.now
	wantStatus(t, restarted.do("GET", "/", nil, c), http.StatusForbidden)

	// Ended by an operator: sessions that began before, not after.
	c1 := session()
	other := identity.Identity{Name: "dave", Role: identity.RoleAuditor}
	res, c2 := fx.login(t, MintLoginToken(fx.secret, other, 15*time.Minute, fx.now))
	if res.StatusCode != http.StatusSeeOther {
		t.Fatalf("login of %s: %d", other, res.StatusCode)
	}
	fx.advance(time.Second)
	ms := fx.now.UnixMilli()
	b, err := fsm.Encode(&pb.EndWebSessionsCommand{Identity: carol.String(), EndedBy: "operator/ops"}, fsm.Meta{Actor: "operator/ops", UnixMs: ms})
	if err != nil {
		t.Fatal(err)
	}
	if res := fx.f.Apply(&raft.Log{Index: 1000, Type: raft.LogCommand, Data: b}); res != nil {
		t.Fatal(res)
	}
	wantStatus(t, fx.do("GET", "/", nil, c1), http.StatusForbidden)
	wantStatus(t, fx.do("GET", "/", nil, c2), http.StatusOK) // another identity's
	fx.advance(time.Second)
	wantStatus(t, fx.do("GET", "/", nil, session()), http.StatusOK) // a new login
}

// checkpoint signs a tree head of the fixture's whole audit log with a
// coordinator certificate of its CA and applies it, as the leader does.
func (fx *fixture) checkpoint(t *testing.T) (tls.Certificate, audit.TreeHead) {
	t.Helper()
	replica, err := fx.ca.Issue(identity.Identity{Name: "c1", Role: identity.RoleCoordinator}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	var log *audit.Log
	fx.f.Read(func(s *fsm.State) { log = s.Audit })
	th, err := log.SignHead(replica.PrivateKey.(crypto.Signer), replica.Certificate[0], log.Len(), time.Now().UnixMilli())
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(th)
	if err != nil {
		t.Fatal(err)
	}
	a := &applier{t: t, f: fx.f, idx: 1000}
	a.must(&pb.CheckpointCommand{TreeHead: b})
	return replica, th
}

// The audit-records page lists who did what, when, under which purpose
// and legal basis, newest first; filters by job, hospital or actor,
// action and time window; pages; links each record under a checkpoint to
// its inclusion proof, which verifies; and exports the view as the JSON
// Lines `audit verify` accepts.
func TestRecordsPage(t *testing.T) {
	var signer tls.Certificate
	fx := newFixture(t, func(c *Config) {
		c.SignHead = func(l *audit.Log, size uint64) (audit.TreeHead, error) {
			return l.SignHead(signer.PrivateKey.(crypto.Signer), signer.Certificate[0], size, time.Now().UnixMilli())
		}
	})
	signer, head := fx.checkpoint(t)
	dora := fx.cert(t, "dora", identity.RoleAuditor)
	var total int
	fx.f.Read(func(s *fsm.State) { total = int(s.Audit.Len()) })

	all := wantStatus(t, fx.do("GET", "/audit/records", dora), http.StatusOK)
	for _, want := range []string{fmt.Sprintf("%d of %d records", total, total), `<td class="action">job.submitted</td>`, "researcher/alice",
		"early sepsis warning", "GDPR art. 9(2)(j)", `href="/audit/records/0/proof"`, `id="export"`} {
		if !strings.Contains(all, want) {
			t.Fatalf("records page lacks %q:\n%s", want, all)
		}
	}
	if strings.Contains(all, "<script") {
		t.Fatal("a record's text reached the page unescaped")
	}

	// h2's contributions: rounds 1 and 2.
	h2 := wantStatus(t, fx.do("GET", "/audit/records?who=h2&action=contribution.accepted", dora), http.StatusOK)
	if !strings.Contains(h2, "2 of ") || strings.Count(h2, `<td class="action">contribution.accepted</td>`) != 2 || strings.Contains(h2, `<td class="action">job.submitted</td>`) {
		t.Fatalf("h2's contributions:\n%s", h2)
	}
	// A time window (since inclusive, until exclusive; RFC 3339 with
	// milliseconds, as the fixture's records are a millisecond apart).
	var first, inWindow int64
	fx.f.Read(func(s *fsm.State) {
		r0, _ := s.Audit.Record(0)
		first = r0.TimeUnixMs
		for i := range s.Audit.Len() {
			if r, _ := s.Audit.Record(i); r.TimeUnixMs >= first+10 && r.TimeUnixMs < first+20 {
				inWindow++
			}
		}
	})
	if inWindow == 0 || inWindow == int64(total) {
		t.Fatalf("%d of %d records in the window: it selects nothing to check", inWindow, total)
	}
	since := time.UnixMilli(first + 10).UTC().Format(time.RFC3339Nano)
	until := time.UnixMilli(first + 20).UTC().Format(time.RFC3339Nano)
	window := wantStatus(t, fx.do("GET", "/audit/records?since="+url.QueryEscape(since)+"&until="+url.QueryEscape(until), dora), http.StatusOK)
	if !strings.Contains(window, fmt.Sprintf(">%d of %d records", inWindow, total)) {
		t.Fatalf("records from %s until %s: want %d\n%s", since, until, inWindow, window)
	}
	// Bad filters are refused, naming the field.
	for q, field := range map[string]string{"since=yesterday": "since", "action=job.deleted": "action",
		"since=2026-01-02&until=2026-01-01": "until", "page=0": "page"} {
		if b := wantStatus(t, fx.do("GET", "/audit/records?"+q, dora), http.StatusBadRequest); !strings.Contains(b, field+": ") {
			t.Errorf("%s: the error does not name %s:\n%s", q, field, b)
		}
	}
	// Pages of 5: the first links to the second, the last to none.
	recordsPerPage = 5
	t.Cleanup(func() { recordsPerPage = 50 })
	p1 := wantStatus(t, fx.do("GET", "/audit/records?job="+jobID, dora), http.StatusOK)
	if strings.Count(p1, `<tr id="record-`) != 5 || !strings.Contains(p1, `id="next" href="/audit/records?job=`+jobID+`&amp;page=2"`) || strings.Contains(p1, `id="prev"`) {
		t.Fatalf("first page of 5:\n%s", p1)
	}

	// The inclusion proof of record 3 verifies against the checkpoint.
	var pr recordProof
	if err := json.Unmarshal([]byte(wantStatus(t, fx.do("GET", "/audit/records/3/proof", dora), http.StatusOK)), &pr); err != nil {
		t.Fatal(err)
	}
	leaf, err := audit.ParseHash(pr.LeafHash)
	if err != nil {
		t.Fatal(err)
	}
	root, err := audit.ParseHash(head.RootHash)
	if err != nil {
		t.Fatal(err)
	}
	var hashes []audit.Hash
	for _, h := range pr.Proof.Hashes {
		x, err := audit.ParseHash(h)
		if err != nil {
			t.Fatal(err)
		}
		hashes = append(hashes, x)
	}
	if pr.Record.Seq != 3 || pr.Checkpoint.RootHash != head.RootHash || audit.VerifyInclusion(leaf, 3, pr.Proof.TreeSize, hashes, root) != nil {
		t.Fatalf("proof of record 3 does not verify: %+v", pr)
	}
	wantStatus(t, fx.do("GET", fmt.Sprintf("/audit/records/%d/proof", total+5), dora), http.StatusNotFound)

	// The export of the job verifies as `regionfl audit verify` checks it.
	res := fx.do("GET", "/audit/export?job="+jobID, dora)
	export := wantStatus(t, res, http.StatusOK)
	rep, err := audit.Verify(strings.NewReader(export), fx.ca.Pool())
	if err != nil {
		t.Fatalf("the export does not verify: %v", err)
	}
	if rep.Filter.JobID != jobID || rep.Records == 0 || !rep.CAChecked {
		t.Errorf("export report: %+v", rep)
	}
	// Without a signer there is no export.
	plain := newFixture(t, nil)
	if b := wantStatus(t, plain.do("GET", "/audit/records", dora), http.StatusOK); strings.Contains(b, `id="export"`) {
		t.Error("an export link without a signer")
	}
	wantStatus(t, plain.do("GET", "/audit/export", dora), http.StatusNotFound)
	// Hospitals have no access to the view.
	wantStatus(t, fx.do("GET", "/audit/records", fx.cert(t, "h1", identity.RoleHospital)), http.StatusForbidden)
}

// Any query string gives a filter or an error naming the field, never a
// crash, and an accepted filter is one an export accepts.
func FuzzRecordQuery(f *testing.F) {
	f.Add("job=job-1&who=h2&action=contribution.accepted&since=2026-12-01&until=2026-12-02T10:00&page=2")
	f.Add("since=yesterday")
	f.Add("until=1969-01-01&page=-1")
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := parseRecordQuery(v)
		if err != nil {
			return
		}
		if q.Page < 1 {
			t.Fatalf("page %d accepted", q.Page)
		}
		if err := q.filter().Validate(); err != nil {
			t.Fatalf("an accepted query gives a filter the export refuses: %v", err)
		}
	})
}

// The region line says which hospitals sit the current key epoch out.
func TestIndexNamesHospitalsSittingOut(t *testing.T) {
	r := &fsm.Region{Hospitals: []string{"h1", "h2", "h3", "h4"}, Threshold: 2, Epoch: 1,
		EpochMembers: map[uint32][]string{1: {"h1", "h2", "h4"}}}
	n := len(r.Hospitals)
	r.HPKE, r.Ready, r.Dealt = make([][]byte, n), make([]bool, n), make([]*fsm.Dealing, n)
	v := buildIndex(&fsm.State{Region: r})
	if want := "key epoch 1: seal_shares (3 of 4 hospitals; sitting out: h3)"; v.Region.Ceremony != want {
		t.Fatalf("ceremony line %q, want %q", v.Region.Ceremony, want)
	}
	// With a committee, the line names it.
	r.Committee = 2
	v = buildIndex(&fsm.State{Region: r})
	want := "key epoch 1: seal_shares (3 of 4 hospitals; sitting out: h3); decryption committee: " + strings.Join(r.CommitteeOf(1), ", ")
	if v.Region.Ceremony != want || len(r.CommitteeOf(1)) != 2 {
		t.Fatalf("ceremony line %q, want %q", v.Region.Ceremony, want)
	}
}
