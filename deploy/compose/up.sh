#!/usr/bin/env bash
# `make compose-up`: docker-compose.yml's stack with podman-compose, detached.
# Builds the sluice image first (deploy/docker/build-image.sh); when the compose file's
# pinned nats, redis and nginx images cannot be pulled, builds local stand-ins for them
# and adds deploy/compose/standins.yml. Arguments go to `podman-compose up` (say,
# `--scale streamer=2`); COMPOSE_PROJECT_NAME and EDGE_PORT work as with docker compose.
set -euo pipefail
cd "$(dirname "$0")/../.."

export CONTAINERS_CONF=${CONTAINERS_CONF:-$PWD/deploy/docker/containers.conf}
podman_compose=${PODMAN_COMPOSE:-podman-compose}
files=(-f docker-compose.yml)

deploy/docker/build-image.sh sluice:local
if ! timeout 300 "$podman_compose" "${files[@]}" pull nats redis edge >/dev/null 2>&1; then
  echo "compose-up: cannot pull the pinned nats, redis, nginx images; using local stand-ins" >&2
  base=${LOCAL_BASE_IMAGE:-localhost/sluice-python:3.11-slim}
  for target in nats redis nginx; do
    podman build --network host --build-arg "BASE=$base" --target "$target" \
      --tag "localhost/sluice-standin-$target:bookworm" deploy/compose/standins
  done
  files+=(-f deploy/compose/standins.yml)
fi
exec "$podman_compose" "${files[@]}" up --detach --no-build "$@"
