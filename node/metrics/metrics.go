// Package metrics is a hospital node's Prometheus metrics: what it sent,
// trained and decided, never a value of its data or its updates.
//
// Serve them on loopback (--metrics-addr, off by default; e.g.
// 127.0.0.1:9465) and let a local Prometheus scrape them: the endpoint is
// plain HTTP with no authentication.
package metrics

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// durationBuckets cover local training, from an in-process test's
// milliseconds to an hour.
var durationBuckets = []float64{0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600}

// Node is a hospital node's metrics, in a registry of its own. Every method
// is safe on a nil *Node, so a node without metrics passes nil.
type Node struct {
	reg *prometheus.Registry

	UpdatesSent    prometheus.Counter
	BytesSent      prometheus.Counter
	RoundsTrained  prometheus.Counter
	SharesGiven    prometheus.Counter
	TrainSeconds   prometheus.Histogram
	JobDecisions   *prometheus.CounterVec // decision: accepted|refused
	CoordinatorErr prometheus.Counter
}

// NewNode builds a node's metrics.
func NewNode() *Node {
	n := &Node{
		reg: prometheus.NewRegistry(),
		UpdatesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regionfl_node_updates_sent_total", Help: "Encrypted updates sent to the coordinator (resends included).",
		}),
		BytesSent: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regionfl_node_update_bytes_sent_total", Help: "Bytes of encrypted updates sent.",
		}),
		RoundsTrained: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regionfl_node_rounds_trained_total", Help: "Rounds this site trained for.",
		}),
		SharesGiven: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regionfl_node_decryption_shares_total", Help: "Decryption shares this site gave.",
		}),
		TrainSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "regionfl_node_train_seconds", Help: "Local training time per round (train, clip, noise, encrypt).",
			Buckets: durationBuckets,
		}),
		JobDecisions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "regionfl_node_job_decisions_total", Help: "Jobs this site's policy accepted or refused.",
		}, []string{"decision"}),
		CoordinatorErr: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "regionfl_node_coordinator_errors_total", Help: "Failed calls to the coordinator (retried).",
		}),
	}
	n.JobDecisions.WithLabelValues("accepted")
	n.JobDecisions.WithLabelValues("refused")
	n.reg.MustRegister(n.UpdatesSent, n.BytesSent, n.RoundsTrained, n.SharesGiven, n.TrainSeconds,
		n.JobDecisions, n.CoordinatorErr,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return n
}

// Registry is the node's registry.
func (n *Node) Registry() *prometheus.Registry { return n.reg }

// Handler serves the node's metrics.
func (n *Node) Handler() http.Handler {
	return promhttp.HandlerFor(n.reg, promhttp.HandlerOpts{Registry: n.reg})
}

// UpdateSent counts one encrypted update of size bytes sent.
func (n *Node) UpdateSent(bytes int) {
	if n == nil {
		return
	}
	n.UpdatesSent.Inc()
	if bytes > 0 {
		n.BytesSent.Add(float64(bytes))
	}
}

// RoundTrained counts a round trained locally in d.
func (n *Node) RoundTrained(d time.Duration) {
	if n == nil {
		return
	}
	n.RoundsTrained.Inc()
	n.TrainSeconds.Observe(d.Seconds())
}

// ShareGiven counts one decryption share given.
func (n *Node) ShareGiven() {
	if n == nil {
		return
	}
	n.SharesGiven.Inc()
}

// JobDecided counts a policy decision on a job.
func (n *Node) JobDecided(accepted bool) {
	if n == nil {
		return
	}
	d := "refused"
	if accepted {
		d = "accepted"
	}
	n.JobDecisions.WithLabelValues(d).Inc()
}

// CoordinatorError counts a failed call to the coordinator.
func (n *Node) CoordinatorError() {
	if n == nil {
		return
	}
	n.CoordinatorErr.Inc()
}

// Serve serves the node's metrics at /metrics on addr until the returned
// stop is called; bound is the address it listens on.
func (n *Node) Serve(addr string) (bound string, stop func() error, err error) {
	if n == nil {
		return "", nil, errors.New("metrics: no node metrics to serve")
	}
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("metrics: listen: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", n.Handler())
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(lis)
	return lis.Addr().String(), srv.Close, nil
}
