#!/usr/bin/env bash
# CI stage "containers": build the image from nothing and run it for real (tests/images, marker
# `container`): the CLI read-only as user 10001, HPO worker containers against PostgreSQL with one
# SIGKILLed, the champion served from the image, one pipeline step through kfp.local.DockerRunner.
# No registry is needed: the base image is bootstrapped with mmdebstrap (images/build-local-base.sh).
# Run as root on a fresh Debian bookworm machine, from any directory; prints the stage's wall time.
# `ci-containers.sh build` only installs the tools and builds the image, `ci-containers.sh test`
# only runs the tests on it (.ci/run builds while the test suite runs); no argument does both.
set -euo pipefail
cd "$(dirname "$0")/.."
phase="${1:-all}"
case "$phase" in all | build | test) ;; *) echo "usage: $0 [build|test]" >&2; exit 2 ;; esac
started=$(date +%s)
stamp() { echo "ci-containers: $1 at +$(($(date +%s) - started)) s"; }

# This runner's podman defaults (runc, ulimits it accepts) unless the caller has its own.
export CONTAINERS_CONF="${CONTAINERS_CONF:-$PWD/images/containers.conf}"

if [ "$phase" != test ]; then

need_apt=()
for tool in podman buildah mmdebstrap runc newuidmap fuse-overlayfs; do
  command -v "$tool" >/dev/null 2>&1 || need_apt+=("$tool")
done
command -v pg_ctl >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 \
  || need_apt+=(postgresql)
command -v cc >/dev/null 2>&1 || need_apt+=(build-essential)
if [ ${#need_apt[@]} -gt 0 ]; then
  need_apt=("${need_apt[@]/newuidmap/uidmap}")
  echo "installing: ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
stamp "tools installed"

# Builds need chroot isolation on this cgroup setup.
export BUILDAH_ISOLATION="${BUILDAH_ISOLATION:-chroot}"

# Build from nothing, as on a fresh machine: no image, base or layer left by an earlier run on
# this one may stand in (a cached layer could hide a broken build step).
podman rmi -f "$(make -s image-ref)" localhost/ctrflow-python:3.11-bookworm >/dev/null 2>&1 || true
podman image prune -f >/dev/null

make image-local
# The builder stage stays behind untagged (about 0.9 GB): not needed once the image exists.
podman image prune -f >/dev/null
stamp "image built: $(make -s image-ref)"
fi
[ "$phase" = build ] && exit 0

make install
stamp "venv ready"

# The container tests fail (never skip) from here on when podman, user namespaces or the image
# are missing.
CTRFLOW_CONTAINER_TESTS=1 .venv/bin/pytest -p no:cacheprovider -m container -v -s \
  --durations=0 tests/images
stamp "container tests passed; stage wall time $(($(date +%s) - started)) s"
