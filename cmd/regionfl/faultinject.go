//go:build faultinject

package main

import (
	"fmt"
	"os"
	"time"

	"regionfl/coordinator"
)

// Fault injection for the fault suite, built in only with
// `go build -tags faultinject` (faulttest does): the shipped binary has
// none of it.

// clockOffsetEnv shifts a replica's clock (the times it writes into the log
// and its round deadlines) by a duration: containers share the host's
// clock, so the suite skews replicas this way.
const clockOffsetEnv = "REGIONFL_CLOCK_OFFSET"

func injectFaults(cfg *coordinator.Config) error {
	v := os.Getenv(clockOffsetEnv)
	if v == "" {
		return nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < -time.Hour || d > time.Hour {
		return fmt.Errorf("%s: %q is not a duration between -1h and 1h", clockOffsetEnv, v)
	}
	cfg.Clock = func() time.Time { return time.Now().Add(d) }
	cfg.Logger.Warn("fault injection: this replica's clock is shifted", "offset", d.String())
	return nil
}
