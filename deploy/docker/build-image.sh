#!/usr/bin/env bash
# `make image`: builds ./Dockerfile, unchanged, with podman as IMAGE (default sluice:local).
# The base is the Dockerfile's digest-pinned python:3.11-slim when a registry serves it;
# otherwise a stand-in made from Debian bookworm by make-base-image.sh (once, then reused).
# `--format docker` keeps the HEALTHCHECK, which the OCI image format has no field for.
set -euo pipefail
cd "$(dirname "$0")/../.."

image=${1:-sluice:local}
local_base=${LOCAL_BASE_IMAGE:-localhost/sluice-python:3.11-slim}
export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/docker/containers.conf}

pinned=docker.io/library/$(sed -n 's/^ARG PYTHON_IMAGE=//p' Dockerfile)
if podman image exists "$pinned" || timeout 120 podman pull -q "$pinned" >/dev/null 2>&1; then
  base=$pinned
else
  echo "build-image: cannot pull $pinned; building on $local_base" >&2
  podman image exists "$local_base" || deploy/docker/make-base-image.sh "$local_base"
  base=$local_base
fi

# --no-cache: podman's builder caches a RUN that mounts another stage's files by its
# text alone, so a cached build kept installing an old sluice; a full build takes ~20 s.
podman build --no-cache --format docker --network host --build-arg "PYTHON_IMAGE=$base" \
  --tag "$image" .
