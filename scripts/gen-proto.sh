#!/usr/bin/env bash
# Regenerates the Go code for proto/regionfl/v1 with pinned, locally
# installed plugins (buf's remote plugins need a network we do not assume).
set -euo pipefail
cd "$(dirname "$0")/.."
export GOBIN="${GOBIN:-$(go env GOPATH)/bin}"
export PATH="$GOBIN:$PATH"
want_buf=v1.47.2 want_go=v1.36.12 want_grpc=v1.5.1
command -v buf >/dev/null && [ "$(buf --version)" = "${want_buf#v}" ] || go install github.com/bufbuild/buf/cmd/buf@$want_buf
command -v protoc-gen-go >/dev/null && protoc-gen-go --version | grep -q "$want_go" || go install google.golang.org/protobuf/cmd/protoc-gen-go@$want_go
command -v protoc-gen-go-grpc >/dev/null && protoc-gen-go-grpc --version | grep -q "${want_grpc#v}" || go install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$want_grpc
cd proto
buf lint
buf generate
