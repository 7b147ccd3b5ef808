// Package metrics exposes a coordinator replica's Prometheus metrics (a
// hospital node's are in regionfl/node/metrics).
//
// They come from two places. Most are read from the
// replicated state at scrape time (jobs and rounds by state, round and
// decryption durations, accepted updates and their bytes), so every replica
// reports the same numbers and nothing has to be incremented on the apply
// path. Events that leave no trace in the state (updates refused, and why;
// bytes received on the wire; time spent combining decryption shares) are
// counters this replica keeps since it started: the round engine and the
// gRPC server call RefusedUpdate, ReceivedBytes and ObserveDecryption.
//
// Serving: /metrics carries no secrets but tells a lot about the region's
// activity. Serve it on its own plain-HTTP listener bound to loopback
// (off by default; e.g. 127.0.0.1:9464) with Listen, and let a local Prometheus or an
// authenticating proxy scrape it; or serve it inside the web view, which puts
// it behind the same certificate/login check as the pages.
package metrics

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"regionfl/coordinator/fsm"
	"regionfl/jobspec"
)

// DurationBuckets are the buckets for round phases, in seconds: from sub-second (in-process tests)
// to hours (real deadlines).
var DurationBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200}

// RefusalReasons are the reason labels the coordinator uses; free text is
// never a label (it would make the label set unbounded): RefusedUpdate maps
// unknown reasons to "other".
var RefusalReasons = []string{
	"not_accepted",    // the hospital has not accepted the job
	"wrong_round",     // not the current round, or the round is not collecting
	"duplicate",       // a second update from the hospital, or a replayed digest
	"bad_length",      // the ciphertext has the wrong size
	"bad_encoding",    // the ciphertext does not decode / wrong parameters
	"digest_mismatch", // the bytes do not hash to the announced digest
	"too_large",       // over the size limit
	"not_leader",      // sent to a follower
	"bad_signature",   // the contribution statement does not verify (e.g. bound to another model)
	"too_slow",        // the upload did not arrive within its deadline
	"unauthorized",    // the caller is not that hospital
	"other",
}

// StateReader reads the replicated state: store.FSM().Read.
type StateReader func(func(*fsm.State))

// Metrics is a coordinator replica's metrics, in a registry of its own.
type Metrics struct {
	reg *prometheus.Registry

	// UpdatesRefused counts encrypted updates this replica refused, by
	// reason (one of RefusalReasons).
	UpdatesRefused *prometheus.CounterVec
	// BytesReceived counts encrypted-update bytes received on the wire by
	// this replica, accepted or not.
	BytesReceived prometheus.Counter
	// DecryptionSeconds observes the time to combine decryption shares and
	// decode an aggregate (the work itself, not the wait for shares, which
	// the state-derived regionfl_round_decryption_latency_seconds shows).
	DecryptionSeconds prometheus.Histogram
}

// New builds the coordinator metrics. state is read on every scrape;
// isLeader (optional) reports whether this replica leads.
func New(state StateReader, isLeader func() bool) *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		UpdatesRefused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regionfl_updates_refused_total",
			Help: "Encrypted updates refused by this replica, by reason.",
		}, []string{"reason"}),
		BytesReceived: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regionfl_update_bytes_received_total",
			Help: "Encrypted-update bytes received by this replica (accepted or not).",
		}),
		DecryptionSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "regionfl_decryption_compute_seconds",
			Help:    "Time this replica spent combining decryption shares and decoding an aggregate.",
			Buckets: []float64{0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30},
		}),
	}
	for _, r := range RefusalReasons { // show zeros before the first refusal
		m.UpdatesRefused.WithLabelValues(r)
	}
	m.reg.MustRegister(m.UpdatesRefused, m.BytesReceived, m.DecryptionSeconds,
		&stateCollector{read: state, isLeader: isLeader},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)
	return m
}

// Registry is the registry the metrics live in (to add more collectors).
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics in the Prometheus exposition format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// RefusedUpdate counts a refused update. reason should be one of
// RefusalReasons; anything else is counted as "other". Safe on a nil
// *Metrics.
func (m *Metrics) RefusedUpdate(reason string) {
	if m == nil {
		return
	}
	known := false
	for _, r := range RefusalReasons {
		if r == reason {
			known = true
			break
		}
	}
	if !known {
		reason = "other"
	}
	m.UpdatesRefused.WithLabelValues(reason).Inc()
}

// ReceivedBytes counts n bytes of an encrypted update received. Safe on a
// nil *Metrics.
func (m *Metrics) ReceivedBytes(n int) {
	if m == nil || n <= 0 {
		return
	}
	m.BytesReceived.Add(float64(n))
}

// ObserveDecryption records the time spent combining shares for one round.
// Safe on a nil *Metrics.
func (m *Metrics) ObserveDecryption(d time.Duration) {
	if m == nil {
		return
	}
	m.DecryptionSeconds.Observe(d.Seconds())
}

// stateCollector derives metrics from the replicated state at scrape time.
type stateCollector struct {
	read     StateReader
	isLeader func() bool
}

var (
	descJobs = prometheus.NewDesc("regionfl_jobs",
		"Jobs in the replicated state, by state.", []string{"state"}, nil)
	descRounds = prometheus.NewDesc("regionfl_rounds",
		"Rounds in the replicated state, by state.", []string{"state"}, nil)
	descAccepted = prometheus.NewDesc("regionfl_updates_accepted_total",
		"Encrypted updates accepted into rounds (from the replicated state).", nil, nil)
	descAcceptedBytes = prometheus.NewDesc("regionfl_update_bytes_accepted_total",
		"Bytes of the encrypted updates accepted into rounds (from the replicated state).", nil, nil)
	descModels = prometheus.NewDesc("regionfl_model_versions_committed_total",
		"Model versions committed over all jobs.", nil, nil)
	descCollect = prometheus.NewDesc("regionfl_round_collect_seconds",
		"Time from a round's opening to its close (or abort).", nil, nil)
	descDecrypt = prometheus.NewDesc("regionfl_round_decryption_latency_seconds",
		"Time from a round's close to the commit of its model (waiting for shares and decrypting).", nil, nil)
	descRound = prometheus.NewDesc("regionfl_round_duration_seconds",
		"Time from a round's opening to the commit of its model.", nil, nil)
	descLeader = prometheus.NewDesc("regionfl_raft_leader",
		"1 if this replica is the Raft leader, else 0.", nil, nil)
	descRaftState = prometheus.NewDesc("regionfl_raft_state",
		"This replica's Raft role: 1 on the current one.", []string{"state"}, nil)
	descIndex = prometheus.NewDesc("regionfl_fsm_applied_index",
		"Last Raft log index applied to the state machine.", nil, nil)
	descHospitals = prometheus.NewDesc("regionfl_region_hospitals",
		"Hospitals in the region.", nil, nil)
	descReplicas = prometheus.NewDesc("regionfl_replicas_registered",
		"Replicas that registered their gRPC address.", nil, nil)
	descAuditSize = prometheus.NewDesc("regionfl_audit_records",
		"Records in this replica's audit log (its Merkle tree size).", nil, nil)
	descAuditRoot = prometheus.NewDesc("regionfl_audit_root_info",
		"The root hash of this replica's audit log, as a label (1 always): every replica at one size has one root.", []string{"root_hash"}, nil)
)

var (
	jobStates   = []string{fsm.JobPending, fsm.JobRunning, fsm.JobDone, fsm.JobFailed, fsm.JobCancelled}
	roundStates = []string{fsm.RoundCollecting, fsm.RoundDecrypting, fsm.RoundCommitted, fsm.RoundAborted}
)

func (c *stateCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descJobs, descRounds, descAccepted, descAcceptedBytes, descModels,
		descCollect, descDecrypt, descRound, descLeader, descRaftState, descIndex, descHospitals, descReplicas,
		descAuditSize, descAuditRoot} {
		ch <- d
	}
}

// hist accumulates a constant histogram.
type hist struct {
	count   uint64
	sum     float64
	buckets map[float64]uint64
}

func newHist() *hist {
	h := &hist{buckets: make(map[float64]uint64, len(DurationBuckets))}
	for _, b := range DurationBuckets {
		h.buckets[b] = 0
	}
	return h
}

func (h *hist) observe(fromMs, toMs int64) {
	if fromMs <= 0 || toMs < fromMs {
		return
	}
	v := float64(toMs-fromMs) / 1000
	h.count++
	h.sum += v
	for _, b := range DurationBuckets {
		if v <= b {
			h.buckets[b]++
		}
	}
}

// snapshot is what a scrape copies out of the state under its read lock.
type snapshot struct {
	jobs, rounds            map[string]int
	accepted, bytes, models uint64
	collect, decrypt, total *hist
	index                   uint64
	hospitals, replicas     int
	auditSize               uint64
	auditRoot               string
}

func take(s *fsm.State) snapshot {
	out := snapshot{jobs: map[string]int{}, rounds: map[string]int{},
		collect: newHist(), decrypt: newHist(), total: newHist(),
		index: s.Index, replicas: len(s.Replicas)}
	if s.Audit != nil {
		out.auditSize, out.auditRoot = s.Audit.Len(), s.Audit.Root().String()
	}
	if s.Region != nil {
		out.hospitals = len(s.Region.Hospitals)
	}
	for _, j := range s.Jobs {
		out.jobs[j.State]++
		committed := map[uint32]int64{}
		for i, m := range j.Models {
			if i > 0 { // version 0 is the initial model
				out.models++
				committed[m.Round] = m.CommittedMs
			}
		}
		for _, r := range j.Rounds {
			out.rounds[r.State]++
			out.accepted += uint64(len(r.Contributions))
			for _, c := range r.Contributions {
				out.bytes += c.Size
			}
			if r.ClosedMs != 0 {
				out.collect.observe(r.OpenedMs, r.ClosedMs)
			}
			if r.State == fsm.RoundCommitted && r.Number != jobspec.StatsRound {
				if at, ok := committed[r.Number]; ok {
					out.decrypt.observe(r.ClosedMs, at)
					out.total.observe(r.OpenedMs, at)
				}
			}
		}
	}
	return out
}

func (c *stateCollector) Collect(ch chan<- prometheus.Metric) {
	var snap snapshot
	c.read(func(s *fsm.State) { snap = take(s) })
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v)
	}
	for _, st := range sortedKeys(snap.jobs, jobStates) {
		gauge(descJobs, float64(snap.jobs[st]), st)
	}
	for _, st := range sortedKeys(snap.rounds, roundStates) {
		gauge(descRounds, float64(snap.rounds[st]), st)
	}
	counter(descAccepted, float64(snap.accepted))
	counter(descAcceptedBytes, float64(snap.bytes))
	counter(descModels, float64(snap.models))
	for d, h := range map[*prometheus.Desc]*hist{descCollect: snap.collect, descDecrypt: snap.decrypt, descRound: snap.total} {
		ch <- prometheus.MustNewConstHistogram(d, h.count, h.sum, h.buckets)
	}
	gauge(descIndex, float64(snap.index))
	gauge(descHospitals, float64(snap.hospitals))
	gauge(descReplicas, float64(snap.replicas))
	gauge(descAuditSize, float64(snap.auditSize))
	gauge(descAuditRoot, 1, snap.auditRoot)
	if c.isLeader != nil {
		leader := c.isLeader()
		gauge(descLeader, b2f(leader))
		gauge(descRaftState, b2f(leader), "leader")
		gauge(descRaftState, b2f(!leader), "follower")
	}
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// sortedKeys returns the known states, then any other state found, sorted.
func sortedKeys(m map[string]int, known []string) []string {
	out := append([]string(nil), known...)
	var extra []string
	for k := range m {
		isKnown := false
		for _, kk := range known {
			if k == kk {
				isKnown = true
			}
		}
		if !isKnown {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	return append(out, extra...)
}

// Endpoint is a plain-HTTP /metrics listener.
type Endpoint struct {
	srv *http.Server
	lis net.Listener
}

// Listen serves h at /metrics on addr (plain HTTP, no authentication: keep
// addr on loopback, e.g. 127.0.0.1:9464) until Close.
func Listen(addr string, h http.Handler) (*Endpoint, error) {
	if h == nil {
		return nil, errors.New("metrics: nil handler")
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics: listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", h)
	e := &Endpoint{lis: lis, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}}
	go e.srv.Serve(lis)
	return e, nil
}

// Addr is the address the endpoint listens on.
func (e *Endpoint) Addr() string { return e.lis.Addr().String() }

// IsLoopback reports whether the endpoint only listens on a loopback address.
func (e *Endpoint) IsLoopback() bool {
	a, ok := e.lis.Addr().(*net.TCPAddr)
	return ok && a.IP.IsLoopback()
}

// Close stops the endpoint.
func (e *Endpoint) Close() error {
	if e == nil {
		return nil
	}
	return e.srv.Close()
}
