// Command regionfl is the one binary of a region: coordinator replicas,
// hospital nodes, the researchers' and operators' CLI, and a demo that runs
// a whole region in one process.
package main

import (
	"context"
	"fmt"
	"io"
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
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run executes one command line and returns its exit code: exitOK,
// exitError, or exitUsage for a wrong command, flag or argument.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	root := newRootCmd()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	if err := root.ExecuteContext(ctx); err != nil {
		fmt.Fprintln(stderr, "regionfl:", describe(err))
		if isUsage(err) {
			return exitUsage
		}
		return exitError
	}
	return exitOK
}
