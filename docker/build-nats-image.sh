#!/usr/bin/env bash
# Build a NATS image from the nats-server binary of converge's `server` extra.
#
#   bash docker/build-nats-image.sh [TAG]      (default TAG: converge-nats:<version>-local)
#
# For machines that cannot pull the official `nats` image: the result takes the same
# flags, so `NATS_IMAGE=<TAG> docker compose -f docker/docker-compose.yml up` uses it.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
python="${PYTHON:-python3}"
binary="$("$python" -c 'from events.server import find_nats_server; print(find_nats_server())')"
version="$("$binary" --version | sed -E 's/.*v([0-9][0-9.]*).*/\1/')"
tag="${1:-converge-nats:${version}-local}"
context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/nats-server"
cp "$here/nats.Dockerfile" "$context/Dockerfile"
docker build --quiet --tag "$tag" "$context" >/dev/null
echo "$tag"
