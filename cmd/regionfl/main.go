// Command regionfl is the one binary of a region: coordinator replicas,
// hospital nodes, the researchers' and operators' CLI, and a demo that runs
// a whole region in one process.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"regexp"
	"slices"
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
	msg := describeText(err)
	if code := grpcCode(err); code != "" {
		msg += " (" + code + ")"
	}
	return msg
}

// describeText is the error's sentence without the layers' prefixes.
func describeText(err error) string {
	msg := grpcError.ReplaceAllString(err.Error(), "")
	return strings.ReplaceAll(msg, "fsm: command rejected: ", "")
}

// grpcCode is the gRPC code the error carries, or "".
func grpcCode(err error) string {
	if m := grpcError.FindStringSubmatch(err.Error()); m != nil {
		return m[1]
	}
	return ""
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
		code := exitError
		if isUsage(err) {
			code = exitUsage
		}
		if slices.Contains(args, "--json") {
			// Scripts get the error as JSON too: the sentence, and the
			// gRPC code when the coordinator gave one.
			out := map[string]any{"error": describeText(err), "exit_code": code}
			if c := grpcCode(err); c != "" {
				out["code"] = c
			}
			json.NewEncoder(stderr).Encode(out)
			return code
		}
		fmt.Fprintln(stderr, "regionfl:", describe(err))
		return code
	}
	return exitOK
}
