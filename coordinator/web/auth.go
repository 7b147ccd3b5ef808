package web

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"regionfl/coordinator/fsm"
	"regionfl/durable"
	"regionfl/identity"
)

// Login links and sessions.
//
// A login token is "PAYLOAD.MAC", both base64url without padding. PAYLOAD is
// "regionfl-ui/v1|PURPOSE|ROLE|NAME|EXPIRY_UNIX" and MAC its HMAC-SHA256 under
// the replica's UI secret. PURPOSE is "login" for the link that
// `regionfl ui login` mints and "session" for the cookie the login page sets,
// so neither can stand in for the other. Names and roles are validated by
// identity, so they never contain the separator.

// Token limits.
const (
	// MaxLoginTTL is the longest a login link may stay valid.
	MaxLoginTTL = 24 * time.Hour
	// MaxSessionTTL is the longest a browser session lasts after login.
	MaxSessionTTL = 8 * time.Hour
	// MinSecretLen is the shortest UI secret New accepts.
	MinSecretLen = 32
	// SecretFileName is the UI secret's file name in a replica's data dir.
	SecretFileName = "ui-secret"
	// SessionCookie is the name of the session cookie.
	SessionCookie = "regionfl_ui_session"

	tokenVersion   = "regionfl-ui/v1"
	purposeLogin   = "login"
	purposeSession = "session"
	maxTokenLen    = 512
)

// Errors of token verification (all answered with 403).
var (
	ErrBadToken     = errors.New("web: invalid or tampered token")
	ErrExpiredToken = errors.New("web: token expired")
	ErrRoleRefused  = errors.New("web: this role may not use the web view")
	ErrRevoked      = errors.New("web: certificate revoked")
	ErrUsedToken    = errors.New("web: login link already used")
	ErrSessionEnded = errors.New("web: session ended")
)

// AllowedRoles may read the web view.
var AllowedRoles = []identity.Role{identity.RoleAuditor, identity.RoleResearcher, identity.RoleOperator}

// RoleAllowed reports whether role may read the web view.
func RoleAllowed(r identity.Role) bool { return slices.Contains(AllowedRoles, r) }

// MintLoginToken returns a login token for id valid until now+ttl. Give it to
// the holder as LoginURL(base, token); the web view accepts it until then
// (ttl beyond MaxLoginTTL is refused at login).
func MintLoginToken(secret []byte, id identity.Identity, ttl time.Duration, now time.Time) string {
	return mint(secret, purposeLogin, id, now.Add(ttl))
}

// LoginURL is the link that logs a browser in with token: base is the web
// view's https://HOST:PORT.
func LoginURL(base, token string) string {
	return strings.TrimRight(base, "/") + "/login?token=" + token
}

func mint(secret []byte, purpose string, id identity.Identity, exp time.Time) string {
	payload := strings.Join([]string{tokenVersion, purpose, string(id.Role), id.Name, strconv.FormatInt(exp.Unix(), 10)}, "|")
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(payload)) + "." + enc.EncodeToString(sign(secret, []byte(payload)))
}

func sign(secret, payload []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write(payload)
	return m.Sum(nil)
}

// verifyToken checks token's MAC, purpose, expiry (and that it does not
// reach further than maxTTL from now) and role.
func verifyToken(secret []byte, token, purpose string, now time.Time, maxTTL time.Duration) (identity.Identity, time.Time, error) {
	if len(secret) == 0 || token == "" || len(token) > maxTokenLen {
		return identity.Identity{}, time.Time{}, ErrBadToken
	}
	p64, m64, ok := strings.Cut(token, ".")
	if !ok {
		return identity.Identity{}, time.Time{}, ErrBadToken
	}
	// A token must have exactly one spelling: an edited spelling is not the
	// minted token even when it decodes to the same bytes (unpadded base64
	// has spare bits in its last character; Strict refuses them).
	enc := base64.RawURLEncoding.Strict()
	payload, err1 := enc.DecodeString(p64)
	mac, err2 := enc.DecodeString(m64)
	// The decoder also skips \r and \n: only the canonical spelling counts.
	if err1 != nil || err2 != nil || enc.EncodeToString(payload) != p64 || enc.EncodeToString(mac) != m64 {
		return identity.Identity{}, time.Time{}, ErrBadToken
	}
	if !hmac.Equal(mac, sign(secret, payload)) {
		return identity.Identity{}, time.Time{}, ErrBadToken
	}
	f := strings.Split(string(payload), "|")
	if len(f) != 5 || f[0] != tokenVersion || f[1] != purpose {
		return identity.Identity{}, time.Time{}, ErrBadToken
	}
	role, err := identity.ParseRole(f[2])
	if err != nil || identity.ValidName(f[3]) != nil {
		return identity.Identity{}, time.Time{}, ErrBadToken
	}
	sec, err := strconv.ParseInt(f[4], 10, 64)
	if err != nil {
		return identity.Identity{}, time.Time{}, ErrBadToken
	}
	exp := time.Unix(sec, 0)
	if !now.Before(exp) {
		return identity.Identity{}, time.Time{}, ErrExpiredToken
	}
	if exp.Sub(now) > maxTTL+time.Minute { // a minute of slack for clock steps
		return identity.Identity{}, time.Time{}, fmt.Errorf("%w: valid for longer than %s", ErrBadToken, maxTTL)
	}
	id := identity.Identity{Name: f[3], Role: role}
	if !RoleAllowed(role) {
		return identity.Identity{}, time.Time{}, ErrRoleRefused
	}
	return id, exp, nil
}

// viewer is who reads a page and how they proved it.
type viewer struct {
	ID  identity.Identity
	Via string // "certificate" or "login link"
}

type viewerKey struct{}

// authenticate returns the caller of r: a verified client certificate with an
// allowed role, else a valid session cookie.
func (s *Server) authenticate(r *http.Request) (viewer, error) {
	var certErr error
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 && len(r.TLS.VerifiedChains[0]) > 0 {
		cert := r.TLS.VerifiedChains[0][0]
		id, err := identity.FromCertificate(cert)
		var revoked bool
		s.cfg.State(func(st *fsm.State) { revoked = st.IsRevoked(identity.SerialHex(cert)) })
		switch {
		case err != nil:
			certErr = err
		case revoked:
			return viewer{}, fmt.Errorf("%w: certificate %s of %s", ErrRevoked, identity.SerialHex(cert), id)
		case !RoleAllowed(id.Role):
			certErr = fmt.Errorf("%w: %s", ErrRoleRefused, id)
		default:
			return viewer{ID: id, Via: "certificate"}, nil
		}
	}
	if c, err := r.Cookie(SessionCookie); err == nil && len(s.cfg.Secret) > 0 {
		id, exp, err := verifyToken(s.cfg.Secret, c.Value, purposeSession, s.now(), MaxSessionTTL)
		if err != nil {
			return viewer{}, err
		}
		if err := s.sessionLive(c.Value, id, exp); err != nil {
			return viewer{}, err
		}
		return viewer{ID: id, Via: "login link"}, nil
	}
	if certErr != nil {
		return viewer{}, certErr
	}
	return viewer{}, identity.ErrNoIdentity
}

// sessionLive refuses a session that was signed out here, or that began
// before an operator ended the identity's sessions (on every replica:
// regionfl ui end-sessions).
func (s *Server) sessionLive(token string, id identity.Identity, exp time.Time) error {
	_, mac, _ := strings.Cut(token, ".")
	s.usedMu.Lock()
	_, out := s.used[mac]
	s.usedMu.Unlock()
	if out {
		return fmt.Errorf("%w: %s signed out", ErrSessionEnded, id)
	}
	began := exp.Add(-MaxSessionTTL).UnixMilli()
	var endedBefore int64
	s.cfg.State(func(st *fsm.State) { endedBefore = st.WebSessionsEnded[id.String()] })
	if began <= endedBefore {
		return fmt.Errorf("%w: the sessions of %s were ended", ErrSessionEnded, id)
	}
	return nil
}

// logout ends the browser's session on this replica (recorded like a used
// login link, until the session would have expired) and clears its cookie.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(SessionCookie); err == nil && len(s.cfg.Secret) > 0 {
		now := s.now()
		if id, exp, err := verifyToken(s.cfg.Secret, c.Value, purposeSession, now, MaxSessionTTL); err == nil {
			if err := s.useToken(c.Value, exp, now); err != nil && !errors.Is(err, ErrUsedToken) {
				s.log.Error("web logout not recorded", "identity", id.String(), "err", err)
				s.fail(w, r, http.StatusInternalServerError, "The session could not be ended; try again.")
				return
			}
			s.log.Info("web logout", "identity", id.String(), "remote", r.RemoteAddr)
		}
	}
	http.SetCookie(w, &http.Cookie{Name: SessionCookie, Value: "", Path: "/", MaxAge: -1, Secure: true, HttpOnly: true, SameSite: http.SameSiteStrictMode})
	s.render(w, r, http.StatusOK, "error", "Signed out", 0, "You are signed out. A new login link (regionfl ui login) signs you in again.")
}

// login turns a login token into a session cookie and sends the browser to
// the jobs page.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if len(s.cfg.Secret) == 0 {
		s.fail(w, r, http.StatusForbidden, "Login links are disabled on this replica.")
		return
	}
	now := s.now()
	token := r.URL.Query().Get("token")
	id, linkExp, err := verifyToken(s.cfg.Secret, token, purposeLogin, now, MaxLoginTTL)
	if err == nil {
		err = s.useToken(token, linkExp, now)
	}
	if err != nil {
		s.log.Warn("web login refused", "err", err, "remote", r.RemoteAddr)
		msg := "This login link is invalid. Ask the operator for a new one (regionfl ui login)."
		switch {
		case errors.Is(err, ErrExpiredToken):
			msg = "This login link has expired. Ask the operator for a new one (regionfl ui login)."
		case errors.Is(err, ErrUsedToken):
			msg = "This login link was used already: each link logs in once. Ask the operator for a new one (regionfl ui login)."
		}
		s.fail(w, r, http.StatusForbidden, msg)
		return
	}
	exp := now.Add(MaxSessionTTL)
	http.SetCookie(w, &http.Cookie{
		Name:     SessionCookie,
		Value:    mint(s.cfg.Secret, purposeSession, id, exp),
		Path:     "/",
		Expires:  exp,
		MaxAge:   int(MaxSessionTTL / time.Second),
		Secure:   true,
		HttpOnly: true,
		SameSite: http.SameSiteStrictMode,
	})
	s.log.Info("web login", "identity", id.String(), "remote", r.RemoteAddr, "session_until", exp.UTC().Format(time.RFC3339))
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

// maxUsedLinks bounds the record of used login links; links expire within
// MaxLoginTTL, so only a flood of fresh links could fill it, and then new
// logins are refused rather than old links forgotten.
const maxUsedLinks = 100_000

// useToken marks a verified token as used (a login link that logged in, a
// session that signed out), or refuses it if it was. The record is saved
// before the session exists, or before the signing out is confirmed.
func (s *Server) useToken(token string, exp, now time.Time) error {
	_, mac, _ := strings.Cut(token, ".")
	s.usedMu.Lock()
	defer s.usedMu.Unlock()
	if _, ok := s.used[mac]; ok {
		return ErrUsedToken
	}
	for m, e := range s.used {
		if e < now.Unix() {
			delete(s.used, m)
		}
	}
	if len(s.used) >= maxUsedLinks {
		return fmt.Errorf("%w: %d unexpired links used, no room to record another", ErrBadToken, len(s.used))
	}
	s.used[mac] = exp.Unix()
	if s.cfg.UsedLinksFile == "" {
		return nil
	}
	b, err := json.Marshal(s.used)
	if err != nil {
		return err
	}
	if err := durable.WriteFile(s.cfg.UsedLinksFile, b); err != nil {
		delete(s.used, mac)
		return err
	}
	return nil
}

// loadUsedLinks reads the record of used login links (empty if path is
// empty or absent).
func loadUsedLinks(path string) (map[string]int64, error) {
	used := map[string]int64{}
	if path == "" {
		return used, nil
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return used, nil
	}
	if err != nil {
		return nil, err
	}
	if len(b) > 16<<20 {
		return nil, fmt.Errorf("web: %s: %d bytes, more than any record of used links", path, len(b))
	}
	if err := json.Unmarshal(b, &used); err != nil {
		return nil, fmt.Errorf("web: %s: %w", path, err)
	}
	return used, nil
}

// LoadOrCreateSecret reads the UI secret at path, creating it (32 random
// bytes, hex, mode 0600) if it does not exist. A secret readable by group or
// others is refused.
func LoadOrCreateSecret(path string) ([]byte, error) {
	b, err := ReadSecret(path)
	if err == nil || !errors.Is(err, fs.ErrNotExist) {
		return b, err
	}
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return nil, err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) { // created concurrently
		return ReadSecret(path)
	}
	if err != nil {
		return nil, fmt.Errorf("web: create UI secret: %w", err)
	}
	if _, err := f.WriteString(hex.EncodeToString(raw) + "\n"); err != nil {
		f.Close()
		return nil, fmt.Errorf("web: write UI secret: %w", err)
	}
	if err := f.Close(); err != nil {
		return nil, fmt.Errorf("web: write UI secret: %w", err)
	}
	return raw, nil
}

// ReadSecret reads the UI secret at path (hex), refusing a file that group
// or others can read.
func ReadSecret(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("web: UI secret %s has mode %v; it must be readable by its owner only (chmod 600)", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	raw, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(raw) < MinSecretLen {
		return nil, fmt.Errorf("web: UI secret %s: want at least %d hex-encoded bytes", path, MinSecretLen)
	}
	return raw, nil
}
