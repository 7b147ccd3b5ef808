package store

import (
	"context"
	"fmt"
	"io"
	"log"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
)

// hclogAdapter sends hashicorp/raft's hclog output to a slog.Logger, so a
// replica has one log stream in one format.
type hclogAdapter struct {
	l       *slog.Logger
	name    string
	args    []any
	repeats *repeats
}

// newHCLog adapts l; raft's chatty info lines are kept at debug level below
// warnings so a running cluster's log stays readable.
func newHCLog(l *slog.Logger, name string) hclog.Logger {
	return &hclogAdapter{l: l.With("component", name), name: name, repeats: &repeats{last: map[string]*repeat{}}}
}

// repeats backs off the errors Raft repeats for as long as a peer is
// down ("failed to heartbeat to", "failed to appendEntries to", about 1.5
// times a second): the first is logged, then each again only after an
// interval that doubles from 1 s up to a minute, with the number of
// repeats left out. A message not seen for two minutes starts over.
type repeats struct {
	mu   sync.Mutex
	last map[string]*repeat // by message and peer
}

type repeat struct {
	next       time.Time
	interval   time.Duration
	suppressed int
	seen       time.Time
}

const (
	repeatFirst = time.Second
	repeatMax   = time.Minute
	repeatReset = 2 * time.Minute
)

// backedOff are the messages Raft repeats per peer while it is down.
var backedOff = []string{"failed to heartbeat to", "failed to appendEntries to", "failed to contact"}

// allow reports whether a message may be logged now, and how many of its
// repeats were left out since it last was.
func (r *repeats) allow(msg string, args []any, now time.Time) (bool, int) {
	if !slices.Contains(backedOff, msg) {
		return true, 0
	}
	key := msg + fmt.Sprint(peerOf(args))
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.last[key]
	if e == nil || now.Sub(e.seen) > repeatReset {
		r.last[key] = &repeat{next: now.Add(repeatFirst), interval: repeatFirst, seen: now}
		return true, 0
	}
	e.seen = now
	if now.Before(e.next) {
		e.suppressed++
		return false, 0
	}
	n := e.suppressed
	e.suppressed = 0
	e.interval = min(2*e.interval, repeatMax)
	e.next = now.Add(e.interval)
	return true, n
}

// peerOf is the value of the "peer" argument of a Raft log line.
func peerOf(args []any) any {
	for i := 0; i+1 < len(args); i += 2 {
		if args[i] == "peer" {
			return args[i+1]
		}
	}
	return nil
}

func slogLevel(l hclog.Level) slog.Level {
	switch l {
	case hclog.Trace, hclog.Debug:
		return slog.LevelDebug
	case hclog.Info:
		return slog.LevelInfo
	case hclog.Warn:
		return slog.LevelWarn
	default:
		return slog.LevelError
	}
}

func (a *hclogAdapter) Log(level hclog.Level, msg string, args ...any) {
	if a.repeats != nil {
		ok, n := a.repeats.allow(msg, args, time.Now())
		if !ok {
			return
		}
		if n > 0 {
			args = append(args, "repeats_not_logged", n)
		}
	}
	a.l.Log(context.Background(), slogLevel(level), msg, args...)
}
func (a *hclogAdapter) Trace(msg string, args ...any) { a.Log(hclog.Trace, msg, args...) }
func (a *hclogAdapter) Debug(msg string, args ...any) { a.Log(hclog.Debug, msg, args...) }
func (a *hclogAdapter) Info(msg string, args ...any)  { a.Log(hclog.Info, msg, args...) }
func (a *hclogAdapter) Warn(msg string, args ...any)  { a.Log(hclog.Warn, msg, args...) }
func (a *hclogAdapter) Error(msg string, args ...any) { a.Log(hclog.Error, msg, args...) }

func (a *hclogAdapter) enabled(l slog.Level) bool { return a.l.Enabled(context.Background(), l) }
func (a *hclogAdapter) IsTrace() bool             { return a.enabled(slog.LevelDebug) }
func (a *hclogAdapter) IsDebug() bool             { return a.enabled(slog.LevelDebug) }
func (a *hclogAdapter) IsInfo() bool              { return a.enabled(slog.LevelInfo) }
func (a *hclogAdapter) IsWarn() bool              { return a.enabled(slog.LevelWarn) }
func (a *hclogAdapter) IsError() bool             { return a.enabled(slog.LevelError) }
func (a *hclogAdapter) ImpliedArgs() []any        { return a.args }
func (a *hclogAdapter) Name() string              { return a.name }

func (a *hclogAdapter) With(args ...any) hclog.Logger {
	return &hclogAdapter{l: a.l.With(args...), name: a.name, args: append(append([]any{}, a.args...), args...), repeats: a.repeats}
}

func (a *hclogAdapter) Named(name string) hclog.Logger {
	if a.name != "" {
		name = a.name + "." + name
	}
	return &hclogAdapter{l: a.l.With("subsystem", name), name: name, args: a.args, repeats: a.repeats}
}

func (a *hclogAdapter) ResetNamed(name string) hclog.Logger {
	return &hclogAdapter{l: a.l.With("subsystem", name), name: name, args: a.args, repeats: a.repeats}
}

// SetLevel is a no-op: the level belongs to the slog handler.
func (a *hclogAdapter) SetLevel(hclog.Level) {}

func (a *hclogAdapter) GetLevel() hclog.Level {
	switch {
	case a.IsDebug():
		return hclog.Debug
	case a.IsInfo():
		return hclog.Info
	case a.IsWarn():
		return hclog.Warn
	}
	return hclog.Error
}

func (a *hclogAdapter) StandardLogger(*hclog.StandardLoggerOptions) *log.Logger {
	return slog.NewLogLogger(a.l.Handler(), slog.LevelInfo)
}

func (a *hclogAdapter) StandardWriter(*hclog.StandardLoggerOptions) io.Writer {
	return a.StandardLogger(nil).Writer()
}
