#!/usr/bin/env bash
# Fetches the four UCI Heart Disease "processed" files (one per centre:
# Cleveland, Hungary, Switzerland, VA Long Beach) that the Fed-Heart-Disease
# benchmark uses, and verifies each against its published SHA-256, so that
# results are always computed on the exact benchmark data. The repository
# does not ship the files; dataset.HeartDisease checks the same sums.
#
# Source: UCI Machine Learning Repository, "Heart Disease", Janosi,
# Steinbrunn, Pfisterer, Detrano (1988), DOI 10.24432/C52P4X, CC BY 4.0.
#
# Usage: scripts/fetch-heart-disease.sh [--mirror DIR] [DEST]
#   DEST          where to put the files (default data/heart-disease)
#   --mirror DIR  copy the files from a local folder instead of downloading
#                 (for machines without internet access)
set -euo pipefail

readonly BASE_URL=https://archive.ics.uci.edu/ml/machine-learning-databases/heart-disease

# File name and SHA-256; keep in sync with HeartDiseaseFiles in
# node/dataset/heart.go.
readonly FILES=(
  "processed.cleveland.data a74b7efa387bc9d108d7d0115d831fe9b414b29ae7124f331b622b4efa0427c8"
  "processed.hungarian.data d1ad108f785768cd3d7e82dc522e6f5a61eea93cccfb3a46ee8076f73fc3d796"
  "processed.switzerland.data 834a405ccf5b66ab4056bb77794adc8df0b7125186454c0a1d002d33c6c3b314"
  "processed.va.data e7c93d8d0d2acdadfa4c5e8de768e2191e7f618b952e29623f1f0d5949ff6b8f"
)

usage() {
  echo "usage: $0 [--mirror DIR] [DEST]" >&2
  exit 2
}

mirror=""
dest=""
while [ $# -gt 0 ]; do
  case "$1" in
    --mirror)
      [ $# -ge 2 ] || usage
      mirror=$2
      shift 2
      ;;
    --mirror=*)
      mirror=${1#--mirror=}
      shift
      ;;
    -h | --help) usage ;;
    -*)
      echo "unknown option: $1" >&2
      usage
      ;;
    *)
      [ -z "$dest" ] || usage
      dest=$1
      shift
      ;;
  esac
done
dest=${dest:-data/heart-disease}

if [ -n "$mirror" ] && [ ! -d "$mirror" ]; then
  echo "mirror $mirror is not a directory" >&2
  exit 1
fi
command -v sha256sum >/dev/null || { echo "sha256sum is required" >&2; exit 1; }
if [ -z "$mirror" ]; then
  if command -v curl >/dev/null; then
    fetch() { curl --fail --silent --show-error --location --max-filesize 1048576 --output "$2" "$1"; }
  elif command -v wget >/dev/null; then
    fetch() { wget --quiet --output-document="$2" "$1"; }
  else
    echo "curl or wget is required (or use --mirror DIR)" >&2
    exit 1
  fi
fi

mkdir -p "$dest"
for entry in "${FILES[@]}"; do
  read -r name want <<<"$entry"
  out=$dest/$name
  # Write to a temporary name first, so an interrupted or bad transfer
  # never leaves a file that looks fetched.
  tmp=$out.part
  rm -f "$tmp"
  if [ -n "$mirror" ]; then
    # cat, not cp: the copy gets ordinary permissions, not the mirror's.
    if ! cat "$mirror/$name" >"$tmp"; then
      rm -f "$tmp"
      echo "cannot copy $mirror/$name" >&2
      exit 1
    fi
  elif ! fetch "$BASE_URL/$name" "$tmp"; then
    rm -f "$tmp"
    echo "download of $BASE_URL/$name failed" >&2
    exit 1
  fi
  got=$(sha256sum "$tmp" | cut -d' ' -f1)
  if [ "$got" != "$want" ]; then
    rm -f "$tmp"
    echo "$name: SHA-256 $got, want $want: not the UCI file, deleted it" >&2
    exit 1
  fi
  mv -f "$tmp" "$out"
  echo "$out ok"
done
