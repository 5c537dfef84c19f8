#!/bin/sh
# What the official nginx image's entrypoint does for docker-compose.yml's edge: source
# /docker-entrypoint.d/*.envsh, then write each /etc/nginx/templates/*.template to
# NGINX_ENVSUBST_OUTPUT_DIR with only defined environment variables substituted.
set -eu
for script in /docker-entrypoint.d/*.envsh; do
  [ -e "$script" ] || continue
  . "$script"
done
defined=$(env | sed -n 's/^\([A-Za-z_][A-Za-z0-9_]*\)=.*/${\1}/p' | tr '\n' ' ')
for template in /etc/nginx/templates/*.template; do
  [ -e "$template" ] || continue
  name=$(basename "$template" .template)
  envsubst "$defined" < "$template" > "${NGINX_ENVSUBST_OUTPUT_DIR:-/etc/nginx/conf.d}/$name"
done
exec "$@"
