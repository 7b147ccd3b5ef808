//go:build !faultinject

package main

import "regionfl/coordinator"

// injectFaults does nothing in the shipped binary (see faultinject.go).
func injectFaults(*coordinator.Config) error { return nil }
