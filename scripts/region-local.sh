#!/usr/bin/env bash
# Runs the README's "Run a real region" walkthrough step by step on this
# machine, with real processes on 127.0.0.1: a region CA, three coordinator
# replicas (the first bootstraps, the others join; one is stopped and
# restarted), an operator who creates the region, three hospital nodes on
# synthetic CSV files, a researcher who submits a job, watches it to the
# end, prints its status and downloads the model, and an auditor who exports
# the job's audit records and verifies them offline. Every process is
# killed when the script exits. faulttest runs it (TestReadmeWalkthroughScript)
# and checks that it runs every command of the README's walkthrough
# (TestReadmeWalkthroughIsTheScript).
#
#   scripts/region-local.sh                 # everything in a temporary directory, removed at the end
#   KEEP=/tmp/region scripts/region-local.sh  # keep the directory (certificates, logs, model.json)
#
# Environment:
#   BASE_PORT  first of six consecutive ports (default 27100): Raft 7000 and
#              gRPC 7443 of the README become BASE_PORT+2i and BASE_PORT+2i+1
#   ROUNDS     training rounds of the job (default 5)
#   TIMEOUT    seconds to wait for the job (default 300)
#   KEEP       directory to work in and keep
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BASE_PORT=${BASE_PORT:-27100}
ROUNDS=${ROUNDS:-5}
TIMEOUT=${TIMEOUT:-300}
HOSPITALS=(hospital-a hospital-b hospital-c)

if [[ -n "${KEEP:-}" ]]; then
  WORK=$KEEP
  mkdir -p "$WORK"
  if [[ -n "$(ls -A "$WORK")" ]]; then
    echo "KEEP=$WORK is not empty" >&2
    exit 2
  fi
else
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/regionfl-local.XXXXXX")
fi
WORK=$(cd "$WORK" && pwd)

PIDS=()
declare -A PID_OF
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    kill "$pid" 2>/dev/null || true
  done
  for pid in ${PIDS[@]+"${PIDS[@]}"}; do
    # give each process up to 5 s to stop cleanly, then kill it
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  if [[ $rc -ne 0 ]]; then
    echo "== FAILED (exit $rc); last lines of each log:" >&2
    for f in "$WORK"/logs/*.log; do
      [[ -f "$f" ]] || continue
      echo "-- $f" >&2
      tail -n 15 "$f" >&2 || true
    done
  fi
  if [[ -z "${KEEP:-}" ]]; then
    rm -rf "$WORK"
  else
    echo "kept $WORK"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

step() { echo; echo "== $*"; }
run() { echo "+ $*"; "$@"; }

# port_free PORT: nothing listens on 127.0.0.1:PORT.
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

for i in 0 1 2 3 4 5; do
  p=$((BASE_PORT + i))
  if ! port_free "$p"; then
    echo "port $p is in use; set BASE_PORT to a free range of six ports" >&2
    exit 2
  fi
done
raft_addr() { echo "127.0.0.1:$((BASE_PORT + 2 * ($1 - 1)))"; }
grpc_addr() { echo "127.0.0.1:$((BASE_PORT + 2 * ($1 - 1) + 1))"; }
COORDINATORS="$(grpc_addr 1),$(grpc_addr 2),$(grpc_addr 3)"

step "build regionfl and the synthetic-CSV helper into $WORK/bin"
(cd "$ROOT" && go build -o "$WORK/bin/regionfl" ./cmd/regionfl && go build -o "$WORK/bin/gencsv" ./faulttest/gencsv)
export PATH="$WORK/bin:$PATH"
cd "$WORK"
mkdir -p logs data csv

# start NAME CMD...: run a long-lived process in the background, logging to logs/NAME.log.
start() {
  local name=$1
  shift
  echo "+ $* > logs/$name.log 2>&1 &"
  "$@" >>"logs/$name.log" 2>&1 &
  PIDS+=($!)
  PID_OF[$name]=$!
}

# wait_for WHAT SECONDS CMD...: poll CMD (quietly) until it succeeds.
wait_for() {
  local what=$1 secs=$2
  shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "timed out after ${secs}s waiting for $what" >&2
      return 1
    fi
    sleep 0.5
  done
}

step "1. the region CA"
run regionfl ca init --dir ca

step "2. identities: each party makes a key and a CSR; the CA signs each with its role"
for i in 1 2 3; do
  run regionfl coordinator init --id "replica-$i" --dir "replica-$i"
done
for h in "${HOSPITALS[@]}"; do
  run regionfl node init --id "$h" --dir "$h"
done
run regionfl researcher init --id alice --dir alice
run regionfl operator init --id ops --dir ops
run regionfl auditor init --id carol --dir carol
for i in 1 2 3; do
  run regionfl ca sign --dir ca --role coordinator --dns "replica-$i" --ip 127.0.0.1 "replica-$i/tls.csr" -o "replica-$i/tls.crt"
done
for h in "${HOSPITALS[@]}"; do
  run regionfl ca sign --dir ca --role hospital "$h/tls.csr" -o "$h/tls.crt"
done
run regionfl ca sign --dir ca --role researcher alice/tls.csr -o alice/tls.crt
run regionfl ca sign --dir ca --role operator ops/tls.csr -o ops/tls.crt
run regionfl ca sign --dir ca --role auditor carol/tls.csr -o carol/tls.crt

OPS=(--ca ca/ca.crt --cert ops/tls.crt --key ops/tls.key)
ALICE=(--ca ca/ca.crt --cert alice/tls.crt --key alice/tls.key)
CAROL=(--ca ca/ca.crt --cert carol/tls.crt --key carol/tls.key)

step "3. coordinator replicas: replica-1 bootstraps, replica-2 and replica-3 join it"
for i in 1 2 3; do
  role=(--bootstrap)
  if [[ $i -gt 1 ]]; then role=(--join "$(grpc_addr 1)"); fi
  start "replica-$i" regionfl coordinator run --id "replica-$i" --data-dir "data/replica-$i" \
    --raft-addr "$(raft_addr "$i")" --grpc-addr "$(grpc_addr "$i")" "${role[@]}" \
    --ca ca/ca.crt --cert "replica-$i/tls.crt" --key "replica-$i/tls.key"
done
three_voters() {
  [[ $(regionfl operator raft list-replicas --coordinator "$COORDINATORS" "${OPS[@]}" --json | grep -c '"suffrage": "voter"') -eq 3 ]]
}
wait_for "three voting replicas" 60 three_voters
run regionfl operator raft list-replicas --coordinator "$COORDINATORS" "${OPS[@]}"

step "3b. a stopped replica restarts with its command without --bootstrap or --join"
kill "${PID_OF[replica-3]}"
wait "${PID_OF[replica-3]}" 2>/dev/null || true
start replica-3 regionfl coordinator run --id replica-3 --data-dir data/replica-3 \
  --raft-addr "$(raft_addr 3)" --grpc-addr "$(grpc_addr 3)" \
  --ca ca/ca.crt --cert replica-3/tls.crt --key replica-3/tls.key
wait_for "replica-3 serving again" 60 regionfl coordinator health --addr "$(grpc_addr 3)" "${OPS[@]}"
wait_for "three voting replicas" 60 three_voters

step "4. the operator fixes the hospitals and the decryption threshold"
run regionfl operator create-region --hospitals "$(IFS=,; echo "${HOSPITALS[*]}")" --threshold 2 \
  --revocation-max-age 24h --coordinator "$COORDINATORS" "${OPS[@]}"
# What the operator's hourly schedule runs: a fresh signed revocation list.
run regionfl operator publish-revocations --coordinator "$COORDINATORS" "${OPS[@]}"

step "5. each hospital runs its node on its own CSV (synthetic cohorts, label column 'deteriorated')"
gencsv -dir csv -hospitals 3 -seed 1 >csv/index.txt
n=1
for h in "${HOSPITALS[@]}"; do
  # gencsv names its sites hospital-1..3; each hospital gets one file.
  mv "csv/hospital-$n.csv" "csv/$h.csv"
  run regionfl node inspect --data "csv/$h.csv" --label deteriorated
  start "$h" regionfl node run --id "$h" --coordinator "$COORDINATORS" \
    --data "csv/$h.csv" --label deteriorated --data-dir "data/$h" \
    --ca ca/ca.crt --cert "$h/tls.crt" --key "$h/tls.key"
  n=$((n + 1))
done

step "6. a researcher submits a job and follows it"
export REGIONFL_COORDINATOR=$COORDINATORS
cat >job.yaml <<EOF
name: deterioration-early-warning
purpose: early warning of clinical deterioration on general wards
legal_basis: synthetic data, no patients (scripts/region-local.sh)
model: {kind: logreg, inputs: 15}   # the synthetic cohorts have 15 features
rounds: $ROUNDS
local_steps: 50
batch_size: 32
learning_rate: 0.1
optimizer: sgd
min_hospitals: 3       # K = t + 1: a site's default minimum
round_deadline: 30s
clip_norm: 10
strategy: {name: fedavg}
scaling: region
alert_threshold: 0.5
EOF
cat job.yaml
echo "+ regionfl job submit job.yaml ${ALICE[*]}"
JOB_ID=$(regionfl job submit job.yaml "${ALICE[@]}")
echo "job $JOB_ID"
run timeout "$TIMEOUT" regionfl job watch "$JOB_ID" "${ALICE[@]}"
run regionfl job status "$JOB_ID" "${ALICE[@]}"
run regionfl model download "$JOB_ID" -o model.json "${ALICE[@]}"

state=$(regionfl job status "$JOB_ID" --json "${ALICE[@]}" | grep -m1 '^  "state"' | sed 's/.*"state": "\([a-z]*\)".*/\1/')
if [[ $state != done ]]; then
  echo "job $JOB_ID ended $state" >&2
  exit 1
fi

step "7. a compliance officer exports the job's audit records and checks them offline"
run regionfl audit export --job "$JOB_ID" -o audit.jsonl "${CAROL[@]}"
run regionfl audit verify --ca ca/ca.crt audit.jsonl
echo
echo "region-local: job $JOB_ID done; model in $WORK/model.json, audit records verified"
