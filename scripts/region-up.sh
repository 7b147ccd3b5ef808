#!/usr/bin/env bash
# Brings up a region in containers with docker-compose (deploy/docker-compose.yml):
# three coordinator replicas and four hospital nodes from the FROM scratch
# image, on one private Docker network, with a throwaway region CA. Every
# identity makes its key in its own directory and the CA signs its CSR, as
# in the README's walkthrough; the operator creates the region (t = 3 of 4)
# between the replicas and the hospitals; the script waits until every
# hospital holds its key share.
#
#   scripts/region-up.sh [DIR]     # default DIR: ./region-compose (kept; region-down.sh removes it)
#
# Environment: REGIONFL_SUBNET (first three octets of the network's /24,
# default 10.213.250), TIMEOUT (seconds to wait for each step, default 120).
# Afterwards it prints how to run the CLI as the researcher, operator or
# auditor inside the network. scripts/region-down.sh DIR stops it.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:-region-compose}
SUBNET=${REGIONFL_SUBNET:-10.213.250}
TIMEOUT=${TIMEOUT:-120}
HOSPITALS=(hospital-1 hospital-2 hospital-3 hospital-4)
PROJECT=regionfl

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
if [[ -e "$DIR/compose.env" ]]; then
  echo "$DIR holds a region already (compose.env); scripts/region-down.sh $DIR first" >&2
  exit 2
fi

step() { echo; echo "== $*"; }
run() { echo "+ $*"; "$@"; }

step "build the static binary and the image regionfl:compose (FROM scratch)"
mkdir -p "$DIR/bin" "$DIR/image/dist"
(cd "$ROOT" && CGO_ENABLED=0 go build -trimpath -o "$DIR/bin/regionfl" ./cmd/regionfl && go build -o "$DIR/bin/gencsv" ./faulttest/gencsv)
cp "$DIR/bin/regionfl" "$DIR/image/dist/regionfl"
run docker build -q --label regionfl.region=compose -f "$ROOT/Dockerfile" -t regionfl:compose "$DIR/image"
REGIONFL=$DIR/bin/regionfl

step "identities: a throwaway CA; each party makes its key and CSR, the CA signs it with its role"
cd "$DIR"
run "$REGIONFL" ca init --dir ca
sign() { # sign DIR ROLE [ca sign flags...]
  local d=$1 role=$2
  shift 2
  "$REGIONFL" ca sign --dir ca --role "$role" "$@" "$d/tls.csr" -o "$d/tls.crt" >/dev/null
  cp ca/ca.crt "$d/ca.crt"
  mkdir -p "$d/data"
}
for i in 1 2 3; do
  "$REGIONFL" coordinator init --id "replica-$i" --dir "replica-$i" >/dev/null
  sign "replica-$i" coordinator --dns "replica-$i"
done
for h in "${HOSPITALS[@]}"; do
  "$REGIONFL" node init --id "$h" --dir "$h" >/dev/null
  sign "$h" hospital
done
"$REGIONFL" researcher init --id alice --dir alice >/dev/null && sign alice researcher
"$REGIONFL" operator init --id ops --dir ops >/dev/null && sign ops operator
"$REGIONFL" auditor init --id compliance --dir compliance >/dev/null && sign compliance auditor
echo "CA, 3 replicas, ${#HOSPITALS[@]} hospitals, alice (researcher), ops (operator), compliance (auditor)"

step "synthetic site data: one CSV per hospital (label column 'deteriorated')"
"$DIR/bin/gencsv" -dir csv -hospitals ${#HOSPITALS[@]} -seed 1
for h in "${HOSPITALS[@]}"; do
  cp "csv/$h.csv" "$h/site.csv"
done

cat >compose.env <<ENV
REGIONFL_IMAGE=regionfl:compose
REGIONFL_UID=$(id -u)
REGIONFL_GID=$(id -g)
REGION_DIR=$DIR
REGIONFL_SUBNET=$SUBNET
ENV
COMPOSE=(docker-compose -p "$PROJECT" -f "$ROOT/deploy/docker-compose.yml" --env-file "$DIR/compose.env")
NETWORK=${PROJECT}_region
COORDINATORS=replica-1:7443,replica-2:7443,replica-3:7443

# cli WHO ARGS...: the regionfl CLI as WHO (alice, ops, compliance), in a
# throwaway container on the region's network.
cli() {
  local who=$1
  shift
  docker run --rm --network "$NETWORK" --user "$(id -u):$(id -g)" -v "$DIR/$who:/srv" regionfl:compose \
    "$@" --coordinator "$COORDINATORS" --ca /srv/ca.crt --cert /srv/tls.crt --key /srv/tls.key
}
wait_for() { # wait_for WHAT CMD...
  local what=$1 deadline=$((SECONDS + TIMEOUT))
  shift
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      echo "timed out after ${TIMEOUT}s waiting for $what" >&2
      "${COMPOSE[@]}" ps >&2 || true
      return 1
    fi
    sleep 1
  done
}

step "replicas: replica-1 bootstraps, replica-2 and replica-3 join (health: grpc.health.v1)"
run "${COMPOSE[@]}" up -d replica-1 replica-2 replica-3
three_voters() { [[ $(cli ops operator raft list-replicas --json | grep -c '"suffrage": "voter"') -eq 3 ]]; }
wait_for "three voting replicas" three_voters
cli ops operator raft list-replicas

step "the operator creates the region: ${#HOSPITALS[@]} hospitals, threshold 2 (jobs of K = 3 survive one hospital down)"
cli ops operator create-region --hospitals "$(IFS=,; echo "${HOSPITALS[*]}")" --threshold 2

step "hospital nodes"
run "${COMPOSE[@]}" up -d "${HOSPITALS[@]}"
key_ready() {
  for h in "${HOSPITALS[@]}"; do
    "${COMPOSE[@]}" logs --no-color "$h" 2>/dev/null | grep -q 'threshold key share ready' || return 1
  done
}
wait_for "the key ceremony (every hospital's key share)" key_ready
"${COMPOSE[@]}" ps

cat <<MSG

Region up in $DIR. The CLI runs inside the network, e.g. as the researcher:

  docker run --rm --network $NETWORK --user $(id -u):$(id -g) -v $DIR/alice:/srv regionfl:compose \\
    job status --coordinator $COORDINATORS --ca /srv/ca.crt --cert /srv/tls.crt --key /srv/tls.key

(put a job file in $DIR/alice and submit it as /srv/job.yaml; the sites have 15 features).
Logs: ${COMPOSE[*]} logs -f hospital-1
Stop and remove: scripts/region-down.sh $DIR
MSG
