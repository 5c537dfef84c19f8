#!/bin/sh
# As the official redis image's entrypoint: a redis-server started without a config file
# listens beyond loopback, so protected mode (which refuses other hosts) is turned off.
set -eu
if [ "${1:-}" = "redis-server" ]; then
  shift
  set -- redis-server --protected-mode no "$@"
fi
exec "$@"
