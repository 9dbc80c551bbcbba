#!/usr/bin/env bash
# Build a Python base image for docker/Dockerfile from Debian packages, for machines
# that cannot pull python:3.12-slim (run as root; installs debootstrap if missing).
#
#   bash docker/build-python-image.sh [TAG]    (default TAG: converge-python:bookworm-local)
#
# The image is Debian bookworm (minbase) with python3 (3.11), python3-venv and this
# machine's CA bundle, so pip inside a build trusts what pip outside trusts. Use it with
#   docker build --network host --build-arg PYTHON_IMAGE=<TAG> -f docker/Dockerfile .
set -euo pipefail
tag="${1:-converge-python:bookworm-local}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
root="$(mktemp -d)"
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
  bookworm "$root" "$mirror" >"$root.log" 2>&1 || { tail -20 "$root.log"; exit 1; }
rm -f "$root.log"
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import --change 'CMD ["python3"]' - "$tag" >/dev/null
echo "$tag"
