#!/usr/bin/env bash
# Builds a local stand-in for python:3.11-slim when no registry image can be pulled:
# Debian bookworm (minbase, from the apt mirror this machine uses) with its Python 3.11,
# pip and `python` on PATH, imported into podman as the image named by $1.
#   deploy/docker/make-base-image.sh localhost/sluice-python:3.11-slim
# Debian's pip refuses to install system-wide (PEP 668); a container is the whole
# system, so the marker is removed, as the official python images never have it.
# The base trusts the CAs this machine trusts (CA_BUNDLE), so that pip reaches PyPI
# from the build through a TLS-inspecting proxy as the machine itself does.
set -euo pipefail

image=${1:?usage: make-base-image.sh IMAGE}
mirror=${DEBIAN_MIRROR:-$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)}
mirror=${mirror:-http://deb.debian.org/debian}

rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT

debootstrap --variant=minbase --include=python3,python3-pip,python-is-python3,ca-certificates \
  bookworm "$rootfs" "$mirror" >&2
rm -f "$rootfs"/usr/lib/python3.*/EXTERNALLY-MANAGED
cp "${CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}" "$rootfs/etc/ssl/certs/ca-certificates.crt"
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/* "$rootfs"/usr/share/doc/* \
  "$rootfs"/usr/share/man/*

tar --numeric-owner -C "$rootfs" -c . | podman import \
  --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change 'CMD ["python3"]' \
  - "$image"
