#!/usr/bin/env bash
# The project's test command: static checks, the whole test suite, and a
# short run of every fuzz target. Runs on a fresh machine with only Go.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== gofmt (at ${SECONDS}s)"
unformatted=$(gofmt -l .)
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi

echo "== go vet (at ${SECONDS}s)"
go vet ./...

# staticcheck with every check on; the generated protobuf code is left out
# (its package has no package comment, by the generator's design).
echo "== staticcheck (at ${SECONDS}s)"
go run honnef.co/go/tools/cmd/staticcheck@v0.8.2 -checks all $(go list ./... | grep -v '/proto/')

echo "== go test (at ${SECONDS}s)"
go test -count=1 -timeout 20m ./...

# A count, not a duration: when a time budget runs out while a worker is
# inside a slow input, Go's fuzzer reports "context deadline exceeded" as a
# failure. FUZZTIME=1000000x fuzzes longer.
echo "== fuzz (${FUZZTIME:=50000x} inputs per target, at ${SECONDS}s)"
for pkg in $(go list ./...); do
  dir=$(go list -f '{{.Dir}}' "$pkg")
  for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go 2>/dev/null | sed 's/^func //' | sort -u); do
    echo "-- $pkg $target (at ${SECONDS}s)"
    if ! go test -run='^$' -fuzz="^${target}\$" -fuzztime="$FUZZTIME" -fuzzminimizetime=100x "$pkg" >/tmp/regionfl-fuzz.log 2>&1; then
      grep -v '^fuzz: elapsed' /tmp/regionfl-fuzz.log | tail -n 40
      exit 1
    fi
  done
done
echo "all checks passed in ${SECONDS}s"
