package main

import (
	"os/exec"
	"strings"
	"testing"
)

// TestLayering holds the rule that keeps a hospital's binary free of the
// coordinator and the coordinator free of the hospital agent: the two
// sides share only the packages both need (proto, he, models, jobspec,
// identity, audit, client, privacy, durable). Only cmd/ links both.
func TestLayering(t *testing.T) {
	for _, tc := range []struct{ pkgs, forbidden string }{
		{"regionfl/node/...", "regionfl/coordinator"},
		{"regionfl/coordinator/...", "regionfl/node"},
	} {
		out, err := exec.Command("go", "list", "-deps", tc.pkgs).CombinedOutput()
		if err != nil {
			t.Fatalf("go list -deps %s: %v\n%s", tc.pkgs, err, out)
		}
		for _, dep := range strings.Fields(string(out)) {
			if dep == tc.forbidden || strings.HasPrefix(dep, tc.forbidden+"/") {
				t.Errorf("%s depends on %s", tc.pkgs, dep)
			}
		}
	}
}
