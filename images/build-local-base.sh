#!/bin/sh
# Builds a local stand-in for python:3.11-slim-bookworm when no registry is reachable (CI
# machines here, air-gapped builds): Debian bookworm minbase + Debian's Python 3.11, shaped like
# the official image where images/Dockerfile relies on it: `python` and `pip` on PATH in
# /usr/local/bin (a venv over /usr/local, so pip installs there and not into Debian's python),
# the Python headers the builder stage compiles ffm_ext against, apt sources for its apt-get.
# Debian's pip reads /etc/ssl/certs/ca-certificates.crt (not a bundled certifi), so `make
# image-local` can lend the build steps the host's CA bundle by mounting it over that file.
# Real builds keep the default base; this one is only passed as --build-arg PYTHON_IMAGE.
#
#   images/build-local-base.sh [TAG]      (default localhost/ctrflow-python:3.11-bookworm)
#
# Needs root, mmdebstrap, and podman or docker.
set -eu

tag=${1:-localhost/ctrflow-python:3.11-bookworm}
suite=bookworm

# `podman import` and `docker import` take the same arguments.
engine=${CONTAINER_ENGINE:-}
if [ -z "$engine" ]; then
    for candidate in podman docker; do
        if command -v "$candidate" >/dev/null 2>&1; then engine=$candidate; break; fi
    done
fi
[ -n "$engine" ] || {
    echo "build-local-base.sh: neither podman nor docker is installed" >&2
    exit 1
}
command -v mmdebstrap >/dev/null 2>&1 || {
    echo "build-local-base.sh: mmdebstrap is not installed (apt-get install mmdebstrap)" >&2
    exit 1
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# libpython3.11-dev brings Python.h; its 30 MB static library is not needed for extensions.
# The venv's pip comes from Debian's bundled wheel (python3-pip-whl): nothing is fetched from PyPI.
mmdebstrap --variant=minbase --mode=root --format=tar \
    --include=python3,python3-venv,libpython3.11-dev,ca-certificates \
    --customize-hook='rm -f "$1"/usr/lib/python3.11/config-3.11-*/libpython3.11*.a' \
    --customize-hook='chroot "$1" python3 -m venv /usr/local' \
    --customize-hook='chroot "$1" /usr/local/bin/python -m pip --version' \
    --customize-hook='rm -rf "$1"/root/.cache "$1"/var/cache/apt/*.bin' \
    "$suite" "$work/rootfs.tar"

"$engine" import \
    --change 'ENV PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]' \
    "$work/rootfs.tar" "$tag" >/dev/null
echo "$tag"
