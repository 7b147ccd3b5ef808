package main

import (
	"bytes"
	"encoding/json"
	"math"
	"slices"
	"strings"
	"testing"
)

// bench he --json keeps its keys (scripts read them) and measures a real
// encrypted sum; sizes outside the parameter set are refused, named.
func TestBenchHEJSON(t *testing.T) {
	cmd := newBenchHECmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&bytes.Buffer{})
	cmd.SetArgs([]string{"--params", "3000,9000", "--hospitals", "3", "--json", "--no-round"})
	if err := cmd.Execute(); err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	if err := json.Unmarshal(out.Bytes(), &rows); err != nil {
		t.Fatalf("%v:\n%s", err, out.String())
	}
	if len(rows) != 2 {
		t.Fatalf("%d rows, want 2", len(rows))
	}
	for _, r := range rows {
		keys := make([]string, 0, len(r))
		for k := range r {
			keys = append(keys, k)
		}
		for _, want := range []string{"params", "hospitals", "committee", "quant_bits", "bytes_per_param", "share_bytes_per_param", "encrypt_s", "fold_s",
			"fold_vs_float32", "share_s", "combine_s", "coordinator_peak_bytes", "update_bytes", "max_rel_error"} {
			if !slices.Contains(keys, want) {
				t.Errorf("row lacks %q: %v", want, keys)
			}
		}
		// Three updates, each off by less than a step of 2^-15 of the clip
		// norm per value, against values of about clip/sqrt(params).
		if e := r["max_rel_error"].(float64); !(e > 0 && e < 0.01) {
			t.Errorf("max_rel_error %g: the decrypted sum is not the sum", e)
		}
		if b, n := r["bytes_per_param"].(float64), r["update_bytes"].(float64)/r["params"].(float64); math.Abs(b-n) > 0.01 {
			t.Errorf("bytes_per_param %g, update_bytes/params %g", b, n)
		}
	}
	for _, args := range [][]string{
		{"--hospitals", "1025"},
		{"--params", "0"},
		{"--hospitals", "4,x"},
	} {
		cmd := newBenchHECmd()
		cmd.SetOut(&bytes.Buffer{})
		cmd.SetErr(&bytes.Buffer{})
		cmd.SetArgs(append(args, "--no-round"))
		err := cmd.Execute()
		if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(args[0], "--")) {
			t.Errorf("%v: %v", args, err)
		}
	}
}
