# regionfl in an empty image: one static binary, nothing else.
#
# No base image is pulled (none can be): build the binary first, without cgo
# (gorgonia and lattigo are pure Go), then copy it in:
#
#   CGO_ENABLED=0 go build -trimpath -o dist/regionfl ./cmd/regionfl
#   docker build -t regionfl:test .
#
# BINARY names the binary inside the build context (default dist/regionfl);
# faulttest/docker_test.go builds from a context holding only the binary.
#
# Every role runs from this image, e.g. a replica with its certificates and
# data in a mounted directory:
#
#   docker run -d --name replica-1 --hostname replica-1 --network region \
#     -v $PWD/replica-1:/srv regionfl:test coordinator run --id replica-1 \
#     --data-dir /srv/data --raft-addr replica-1:7000 --grpc-addr replica-1:7443 \
#     --bootstrap --ca /srv/ca.crt --cert /srv/tls.crt --key /srv/tls.key
#
# The image has no shell, no CA bundle and no user database: run it with
# --user UID:GID matching the owner of the mounted files (keys are 0600).
FROM scratch
ARG BINARY=dist/regionfl
COPY ${BINARY} /regionfl
EXPOSE 7000 7443
ENTRYPOINT ["/regionfl"]
