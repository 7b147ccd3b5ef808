//go:build !race

package demo

// raceDetector is true under go test -race (see testOptions).
const raceDetector = false
