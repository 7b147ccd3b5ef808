package metrics

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

func TestNilSafe(t *testing.T) {
	var n *Node
	n.UpdateSent(1)
	n.RoundTrained(time.Second)
	n.ShareGiven()
	n.JobDecided(true)
	n.CoordinatorError()
	if _, _, err := n.Serve("127.0.0.1:0"); err == nil {
		t.Fatal("serving nil metrics succeeded")
	}
}

func TestNodeMetrics(t *testing.T) {
	n := NewNode()
	n.UpdateSent(1000)
	n.UpdateSent(500)
	n.RoundTrained(2 * time.Second)
	n.ShareGiven()
	n.JobDecided(false)
	addr, stop, err := n.Serve("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer stop()
	out := scrape(t, addr)
	for _, want := range []string{
		"regionfl_node_updates_sent_total 2",
		"regionfl_node_update_bytes_sent_total 1500",
		"regionfl_node_rounds_trained_total 1",
		"regionfl_node_decryption_shares_total 1",
		"regionfl_node_train_seconds_sum 2",
		`regionfl_node_job_decisions_total{decision="refused"} 1`,
		`regionfl_node_job_decisions_total{decision="accepted"} 0`,
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("node metrics lack %q", want)
		}
	}
	if probs, err := promlint.New(strings.NewReader(out)).Lint(); err != nil || len(probs) > 0 {
		t.Errorf("lint: %v %v", probs, err)
	}
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	res, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil || res.StatusCode != 200 {
		t.Fatalf("scrape: %d %v", res.StatusCode, err)
	}
	return string(b)
}
