// Command regionfl is the one binary of a region: coordinator replicas,
// hospital nodes, the researchers' and operators' CLI, and a demo that runs
// a whole region in one process.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"regexp"
	"strings"
	"syscall"
)

// Exit codes.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// grpcError matches the prefix grpc-go puts on a status's message.
var grpcError = regexp.MustCompile(`rpc error: code = (\w+) desc = `)

// describe turns an error into the line a person reads: the coordinator's
// reason first, its gRPC code after it, without the layers' prefixes.
func describe(err error) string {
	msg := err.Error()
	code := ""
	if m := grpcError.FindStringSubmatch(msg); m != nil {
		code = m[1]
		msg = grpcError.ReplaceAllString(msg, "")
	}
	msg = strings.ReplaceAll(msg, "fsm: command rejected: ", "")
	if code != "" {
		msg += " (" + code + ")"
	}
	return msg
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	root := newRootCmd()
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(os.Stderr, "regionfl:", describe(err))
		if isUsage(err) {
			os.Exit(exitUsage)
		}
		os.Exit(exitError)
	}
	os.Exit(exitOK)
}
