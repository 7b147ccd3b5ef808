// Package web is the coordinator's read-only web view: jobs and rounds, the
// hospitals that took part in each round, per-round plots, the privacy
// budget spent per site, the audit-chain status and the audit records
// (filtered, with inclusion proofs and a verifiable export).
//
// Pages are rendered on the server with html/template (which escapes every
// value); plots are inline SVG laid out in Go, so the pages need no script
// and the Content-Security-Policy forbids any. The stylesheet is embedded in
// the binary: nothing is fetched from outside at run time.
//
// Access: a verified client certificate of the region whose role is
// auditor, researcher or operator, or a session cookie obtained through a
// short-lived login link (see MintLoginToken and `regionfl ui login`), so a
// browser without the certificate can be let in. Serve the view over TLS
// with TLSConfig, which asks for a client certificate without requiring one.
// Only GET and HEAD are answered; everything else is 405.
package web

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"regionfl/audit"
	"regionfl/coordinator/fsm"
	"regionfl/identity"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// AuditStatus is the state of the audit chain as the audit package last
// verified it.
type AuditStatus struct {
	Records            int       // records in the chain
	LastCheckpointSize uint64    // tree size of the last signed checkpoint
	LastCheckpointTime time.Time // when it was signed
	LastCheckpointRoot string    // its root hash (hex), optional
	Verified           bool      // the chain verified up to the checkpoint
	Err                string    // why it did not verify, if it did not
}

// Config configures the web view.
type Config struct {
	// State reads the replicated state: pass store.FSM().Read.
	State func(func(*fsm.State))
	// IsLeader reports whether this replica leads (optional).
	IsLeader func() bool
	// ReplicaID names this replica in the page header (optional).
	ReplicaID string
	// Audit returns the audit-chain status (optional: nil shows "audit log
	// not available").
	Audit func() AuditStatus
	// Secret keys login links and session cookies (at least MinSecretLen
	// bytes; see LoadOrCreateSecret). Empty disables login links: only
	// client certificates get in. A new secret ends every link and session.
	Secret []byte
	// UsedLinksFile records the login links already used, so each link
	// logs in once, across restarts (optional: without it the record is
	// kept in memory only).
	UsedLinksFile string
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Metrics, if set, is served at /metrics behind the same access check
	// as the pages. (An unauthenticated scrape endpoint belongs on its own
	// loopback listener: see package metrics.)
	Metrics http.Handler
	// Logger logs logins and refusals (optional).
	Logger *slog.Logger
	// SignHead signs a tree head of the audit log at size with this
	// replica's key (audit.Log.SignHead), for the "export this view" link
	// (optional: nil hides it).
	SignHead func(l *audit.Log, size uint64) (audit.TreeHead, error)
}

// Server serves the web view; it is an http.Handler.
type Server struct {
	cfg   Config
	log   *slog.Logger
	pages map[string]*template.Template
	mux   *http.ServeMux

	mu      sync.Mutex
	servers []*http.Server
	closed  bool

	usedMu sync.Mutex
	used   map[string]int64 // MAC of a used login link or a signed-out session -> its expiry (Unix s)
}

// New checks cfg and prepares the pages.
func New(cfg Config) (*Server, error) {
	if cfg.State == nil {
		return nil, errors.New("web: Config.State is required (store.FSM().Read)")
	}
	if len(cfg.Secret) > 0 && len(cfg.Secret) < MinSecretLen {
		return nil, fmt.Errorf("web: login secret of %d bytes, want at least %d", len(cfg.Secret), MinSecretLen)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, pages: map[string]*template.Template{}}
	used, err := loadUsedLinks(cfg.UsedLinksFile)
	if err != nil {
		return nil, err
	}
	s.used = used
	base, err := template.New("base").ParseFS(templateFS, "templates/base.html", "templates/plot.html")
	if err != nil {
		return nil, err
	}
	for _, name := range []string{"index", "job", "audit", "records", "error"} {
		t, err := template.Must(base.Clone()).ParseFS(templateFS, "templates/"+name+".html")
		if err != nil {
			return nil, err
		}
		s.pages[name] = t
	}
	static, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, err
	}

	mux := http.NewServeMux()
	mux.Handle("GET /static/", http.StripPrefix("/static/", staticHandler(http.FileServerFS(static))))
	mux.HandleFunc("GET /login", s.login)
	mux.HandleFunc("POST /logout", s.logout)
	mux.Handle("GET /{$}", s.auth(s.index))
	mux.Handle("GET /jobs/{id}", s.auth(s.job))
	mux.Handle("GET /audit", s.auth(s.audit))
	mux.Handle("GET /audit/records", s.auth(s.records))
	mux.Handle("GET /audit/records/{seq}/proof", s.auth(s.recordProofJSON))
	mux.Handle("GET /audit/export", s.auth(s.export))
	if cfg.Metrics != nil {
		mux.Handle("GET /metrics", s.auth(cfg.Metrics.ServeHTTP))
	}
	mux.Handle("GET /", s.auth(func(w http.ResponseWriter, r *http.Request) {
		s.fail(w, r, http.StatusNotFound, "No such page.")
	}))
	s.mux = mux
	return s, nil
}

// ServeHTTP answers GET and HEAD with security headers on every response.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
	h.Set("X-Frame-Options", "DENY")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cross-Origin-Opener-Policy", "same-origin")
	h.Set("Cross-Origin-Resource-Policy", "same-origin")
	h.Set("Cache-Control", "no-store")
	if r.Method != http.MethodGet && r.Method != http.MethodHead && (r.Method != http.MethodPost || r.URL.Path != "/logout") {
		h.Set("Allow", "GET, HEAD")
		http.Error(w, "read-only: only GET and HEAD (and POST /logout)", http.StatusMethodNotAllowed)
		return
	}
	s.mux.ServeHTTP(w, r)
}

func staticHandler(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "" || strings.HasSuffix(r.URL.Path, "/") { // no listings
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "max-age=3600")
		h.ServeHTTP(w, r)
	})
}

func (s *Server) now() time.Time {
	if s.cfg.Now != nil {
		return s.cfg.Now()
	}
	return time.Now()
}

// auth lets through callers that authenticate with an allowed role.
func (s *Server) auth(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v, err := s.authenticate(r)
		if err != nil {
			s.log.Debug("web access refused", "err", err, "path", r.URL.Path, "remote", r.RemoteAddr)
			s.fail(w, r, http.StatusForbidden,
				"This view needs a region client certificate with the auditor, researcher or operator role, or a login link from `regionfl ui login`.")
			return
		}
		next(w, r.WithContext(context.WithValue(r.Context(), viewerKey{}, v)))
	})
}

// page is what every template gets.
type page struct {
	Title     string
	Viewer    *viewer
	ReplicaID string
	Leader    string // "leader", "follower" or ""
	Refresh   int    // seconds, 0 for none
	Generated string
	Data      any
}

func (s *Server) render(w http.ResponseWriter, r *http.Request, status int, name, title string, refresh int, data any) {
	p := page{Title: title, ReplicaID: s.cfg.ReplicaID, Refresh: refresh, Data: data,
		Generated: s.now().UTC().Format("2006-01-02 15:04:05Z")}
	if v, ok := r.Context().Value(viewerKey{}).(viewer); ok {
		p.Viewer = &v
	}
	if s.cfg.IsLeader != nil {
		p.Leader = "follower"
		if s.cfg.IsLeader() {
			p.Leader = "leader"
		}
	}
	var buf bytes.Buffer
	if err := s.pages[name].ExecuteTemplate(&buf, "base", p); err != nil {
		s.log.Error("web: render", "page", name, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	w.Write(buf.Bytes())
}

func (s *Server) fail(w http.ResponseWriter, r *http.Request, status int, msg string) {
	s.render(w, r, status, "error", http.StatusText(status), 0, msg)
}

func (s *Server) index(w http.ResponseWriter, r *http.Request) {
	var v indexView
	s.cfg.State(func(st *fsm.State) { v = buildIndex(st) })
	refresh := 0
	for _, j := range v.Jobs {
		if j.Live {
			refresh = 15
		}
	}
	s.render(w, r, http.StatusOK, "index", "Jobs", refresh, v)
}

func (s *Server) job(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	var (
		v     jobView
		found bool
	)
	s.cfg.State(func(st *fsm.State) {
		if j := st.Jobs[id]; j != nil {
			found = true
			v = buildJob(st, j)
		}
	})
	if !found {
		s.fail(w, r, http.StatusNotFound, "No job with this ID.")
		return
	}
	refresh := 0
	if v.Live {
		refresh = 10
	}
	s.render(w, r, http.StatusOK, "job", "Job "+v.ID, refresh, v)
}

type auditView struct {
	Available bool
	AuditStatus
	CheckpointTime string
}

func (s *Server) audit(w http.ResponseWriter, r *http.Request) {
	var v auditView
	if s.cfg.Audit != nil {
		v.Available = true
		v.AuditStatus = s.cfg.Audit()
		if !v.LastCheckpointTime.IsZero() {
			v.CheckpointTime = v.LastCheckpointTime.UTC().Format("2006-01-02 15:04:05Z")
		}
	}
	s.render(w, r, http.StatusOK, "audit", "Audit chain", 0, v)
}

// TLSConfig serves the web view with the replica's certificate: TLS 1.3,
// and a client certificate from the region CA is verified if the browser
// offers one but not required (login links let browsers in without one).
func TLSConfig(cert tls.Certificate, ca *x509.CertPool) *tls.Config {
	c := identity.ServerConfig(cert, ca) // the replica's TLS policy, one place
	c.ClientAuth = tls.VerifyClientCertIfGiven
	c.NextProtos = []string{"h2", "http/1.1"}
	return c
}

func (s *Server) httpServer() (*http.Server, error) {
	hs := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, errors.New("web: server closed")
	}
	s.servers = append(s.servers, hs)
	return hs, nil
}

func serveTLS(hs *http.Server, lis net.Listener, tlsCfg *tls.Config) error {
	err := hs.Serve(tls.NewListener(lis, tlsCfg.Clone()))
	if errors.Is(err, http.ErrServerClosed) {
		return nil
	}
	return err
}

// Start listens on addr and serves in the background until Close; it
// returns the address it listens on (useful with port 0).
func (s *Server) Start(addr string, tlsCfg *tls.Config) (string, error) {
	if tlsCfg == nil {
		return "", errors.New("web: the web view is served over TLS only")
	}
	hs, err := s.httpServer()
	if err != nil {
		return "", err
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("web: listen: %w", err)
	}
	go func() {
		if err := serveTLS(hs, lis, tlsCfg); err != nil {
			s.log.Error("web: serve", "err", err)
		}
	}()
	return lis.Addr().String(), nil
}

// Close stops every listener the server serves, letting requests in flight
// finish for up to five seconds. The server cannot serve again after it.
func (s *Server) Close() error {
	s.mu.Lock()
	servers := s.servers
	s.servers, s.closed = nil, true
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var errs []error
	for _, hs := range servers {
		if err := hs.Shutdown(ctx); err != nil {
			errs = append(errs, err, hs.Close())
		}
	}
	return errors.Join(errs...)
}
