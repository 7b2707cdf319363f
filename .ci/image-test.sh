#!/usr/bin/env bash
# Build the container image and run the operator test, on a machine that
# reaches Debian's mirror and PyPI but no image registry.
#
# Usage (as root, on Debian bookworm, from the checkout):
#   .ci/image-test.sh
#
# 1. docker.io and debootstrap from Debian's packages, when missing.
# 2. A dockerd of its own (own data root and socket, no iptables, no bridge),
#    unless $DOCKER_HOST already answers; stopped again at the end.
# 3. The base image the Dockerfile's PYTHON_IMAGE argument expects (Python 3.11
#    as `python`, its venv module, useradd): Debian bookworm minbase made with
#    debootstrap from the mirror apt uses, then `docker import`. The machine's
#    own extra CA certificates go in too, so pip inside the build trusts the
#    same proxy the machine does.
# 4. `docker build --network host` of the project's Dockerfile, unchanged.
# 5. .ci/image_check.py: the operator test against the built-in emulator.
#
# Settings (environment): IMAGE_TAG (helpdesk-triage:ci), BASE_TAG,
# DEBIAN_MIRROR, DOCKER_STATE_DIR (/var/tmp/helpdesk-triage-docker), PYTHON
# (the checkout's .venv/bin/python, which runs the emulator and the check).
set -Eeuo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
IMAGE_TAG=${IMAGE_TAG:-helpdesk-triage:ci}
BASE_TAG=${BASE_TAG:-helpdesk-triage-base:bookworm-python3.11}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
STATE=${DOCKER_STATE_DIR:-/var/tmp/helpdesk-triage-docker}
PYTHON=${PYTHON:-.venv/bin/python}

log() { printf '[image-test] %s\n' "$*"; }

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    log "installing docker.io and debootstrap"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q docker.io debootstrap >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q docker.io debootstrap >/dev/null; }
fi

started_dockerd=""
stop_dockerd() {
    if [ -n "$started_dockerd" ] && [ -f "$STATE/dockerd.pid" ]; then
        kill "$(cat "$STATE/dockerd.pid")" 2>/dev/null || true
    fi
}
trap stop_dockerd EXIT

if [ -z "${DOCKER_HOST:-}" ] || ! docker version >/dev/null 2>&1; then
    mkdir -p "$STATE"
    export DOCKER_HOST="unix://$STATE/docker.sock"
    if ! docker version >/dev/null 2>&1; then
        log "starting dockerd ($DOCKER_HOST)"
        dockerd --iptables=false --bridge=none \
            --data-root "$STATE/data" --exec-root "$STATE/exec" \
            --host "$DOCKER_HOST" --pidfile "$STATE/dockerd.pid" \
            >"$STATE/dockerd.log" 2>&1 &
        started_dockerd=1
        for _ in $(seq 60); do
            docker version >/dev/null 2>&1 && break
            sleep 0.5
        done
        docker version >/dev/null 2>&1 || { tail -20 "$STATE/dockerd.log" >&2; exit 1; }
    fi
fi

if ! docker image inspect "$BASE_TAG" >/dev/null 2>&1; then
    log "making $BASE_TAG with debootstrap from $DEBIAN_MIRROR"
    rootfs="$STATE/rootfs"
    rm -rf "$rootfs"
    debootstrap --variant=minbase \
        --include=python3,python3-venv,python-is-python3,ca-certificates \
        bookworm "$rootfs" "$DEBIAN_MIRROR" >"$STATE/debootstrap.log" 2>&1 \
        || { tail -20 "$STATE/debootstrap.log" >&2; exit 1; }
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
        chroot "$rootfs" update-ca-certificates >/dev/null
    fi
    # What an image needs no more than python:3.11-slim has it.
    rm -rf "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/* \
        "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/lib/apt/lists/*
    tar -C "$rootfs" --numeric-owner -c . \
        | docker import -c 'ENV LANG=C.UTF-8' -c 'CMD ["python3"]' - "$BASE_TAG" >/dev/null
    rm -rf "$rootfs"
fi
"$PYTHON" - "$BASE_TAG" <<'EOF'
import subprocess, sys
version = subprocess.run(
    ["docker", "run", "--rm", "--network", "none", sys.argv[1], "python", "-c",
     "import sys; print('%d.%d' % sys.version_info[:2])"],
    capture_output=True, text=True, check=True).stdout.strip()
if version != "3.11":
    sys.exit(f"{sys.argv[1]} has Python {version}; the Dockerfile expects 3.11")
EOF

mkdir -p "$STATE"
log "building $IMAGE_TAG"
build_started=$(date +%s)
docker build --quiet --network host \
    --build-arg PYTHON_IMAGE="$BASE_TAG" \
    --build-arg REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)" \
    --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    -t "$IMAGE_TAG" . >"$STATE/build.log" 2>&1 \
    || { tail -30 "$STATE/build.log" >&2; exit 1; }
log "built in $(( $(date +%s) - build_started )) s"

"$PYTHON" .ci/image_check.py --image "$IMAGE_TAG"
