#!/usr/bin/env bash
# Stops the region scripts/region-up.sh started and removes its containers,
# its network and its directory (keys, data).
#
#   scripts/region-down.sh [DIR] [--keep]   # --keep leaves DIR in place
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
DIR=region-compose
KEEP=0
for a in "$@"; do
  case "$a" in
    --keep) KEEP=1 ;;
    -h|--help) sed -n '2,6p' "$0"; exit 0 ;;
    *) DIR=$a ;;
  esac
done
if [[ ! -f "$DIR/compose.env" ]]; then
  echo "$DIR/compose.env not found: not a region from scripts/region-up.sh" >&2
  exit 2
fi
DIR=$(cd "$DIR" && pwd)
docker-compose -p regionfl -f "$ROOT/deploy/docker-compose.yml" --env-file "$DIR/compose.env" down --remove-orphans
if [[ $KEEP -eq 0 ]]; then
  rm -rf "$DIR"
  echo "removed $DIR"
fi
