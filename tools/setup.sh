#!/usr/bin/env bash
# Build .venv/ on a fresh machine: Debian packages, the virtualenv, and every Python
# dependency, including pymesos on CPython 3.11 (`mesos-secrets install-executor`).
# Idempotent: a second run only checks what is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

# Debian packages the tests and the run-time need. Installed only when missing.
#   runc, umoci:           running tasks in images, unpacking images (run-time)
#   docker-registry, skopeo, busybox-static: the registry and image the tests build and push
#   postgresql:            a real database behind OpenBao's dynamic secrets, in the tests
#   nftables:              packet loss on the reliability suite's veth (this kernel has no netem)
APT_PACKAGES=(
    runc
    umoci
    docker-registry
    skopeo
    busybox-static
    postgresql
    nftables
)

step() { printf '==> %s\n' "$*" >&2; }

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed'; then
        missing+=("$pkg")
    fi
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: these Debian packages are missing and installing them needs root: ${missing[*]}" >&2
        exit 1
    fi
    step "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [[ ! -x $VENV/bin/python ]]; then
    step "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

step "installing mesos-secrets and its dependencies into $VENV"
"${PIP[@]}" install -e '.[test,dev,bench]'
# The executor's pymesos needs http-parser, which pip cannot build on CPython 3.11: the
# project's own command installs both, as a user would (mesos_secrets/install_executor.py).
if ! "$VENV/bin/python" -c 'import pymesos, http_parser.http' 2>/dev/null; then
    step "installing the executor's dependency, pymesos"
    "$VENV/bin/mesos-secrets" install-executor
fi
step "ready: $VENV"
