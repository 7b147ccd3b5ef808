#!/usr/bin/env bash
# The fault suite: every scenario that needs separate hosts, each on its own
# region of containers (3 replicas, 3 hospitals) from the FROM scratch
# image, on a private Docker network. Prints a table (scenario, result,
# time to recover, rounds committed, updates lost, double counted); exits 0
# only if every scenario passed.
#
#   scripts/fault-suite.sh [--json FILE] [--quick] [--run REGEXP]
#
# --json FILE  also write one JSON object per scenario to FILE (keys:
#              scenario, passed, recovery_s, rounds_committed, updates_lost,
#              double_counted)
# --quick      only the scenario CI runs (TestDockerRegion)
# --run RE     only the scenarios whose test name matches RE
#
# Needs Go and a Docker engine; pulls nothing. Takes about a minute and a
# half per scenario on two cores.
set -euo pipefail
cd "$(dirname "$0")/.."

run='^(TestDockerRegion|TestFault.*)$'
json=""
while [ $# -gt 0 ]; do
  case "$1" in
    --json) json="$(realpath -m "$2")"; shift 2 ;;
    --quick) run='^TestDockerRegion$'; shift ;;
    --run) run="$2"; shift 2 ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "fault-suite: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done

export REGIONFL_DOCKER_TESTS=1 REGIONFL_FAULT_SUITE=1
if [ -n "$json" ]; then
  export REGIONFL_FAULT_JSON="$json"
fi
exec go test -count=1 -timeout 60m -run "$run" -v ./faulttest/
