//go:build !race

package coordinator_test

// raceDetector is true under go test -race (see slow).
const raceDetector = false
