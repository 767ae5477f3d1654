#!/usr/bin/env bash
# Wheels for the lent GPU machine: its Python (3.12, torch, Lightning, ...) has no internet
# and lacks Hydra. Run this where PyPI is reachable, before the device call; it fills .whl/ (ignored by
# git through .git/info/exclude), which the call carries along and benchmarks/gpu_check.sh installs:
#
#   bash benchmarks/gpu_wheels.sh          # then run(command="bash benchmarks/gpu_check.sh", carry=[".whl"])
#
# Only pure-Python packages, at the versions installed in .venv (so the device runs what the tests ran).
# antlr4-python3-runtime 4.9.3, the version omegaconf 2.3 pins, is published as an sdist only: its
# pure-Python wheel is built here instead.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

PYTHON=${PYTHON:-python3}           # the pip that downloads
VENV_PYTHON=${VENV_PYTHON:-.venv/bin/python} # where the versions come from
DEST=.whl
# name, version when .venv does not have it
PACKAGES=(hydra-core:1.3.8 omegaconf:2.3.1 antlr4-python3-runtime:4.9.3 hydra-joblib-launcher:1.2.0)

installed() { # installed NAME FALLBACK: the version in .venv, else FALLBACK
  "$VENV_PYTHON" -c 'import importlib.metadata as m, sys; print(m.version(sys.argv[1]))' "$1" 2>/dev/null || echo "$2"
}

mkdir -p "$DEST"
for entry in "${PACKAGES[@]}"; do
  name=${entry%%:*}
  spec=$name==$(installed "$name" "${entry#*:}")
  echo "--- $spec"
  if ! "$PYTHON" -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d "$DEST" "$spec"; then
    echo "no wheel on the index for $spec: building it (pure Python only)"
    "$PYTHON" -m pip wheel --no-deps -w "$DEST" "$spec"
  fi
done

# Every wheel must be pure Python (py3-none-any): the device's Python is 3.12, this one may not be.
status=0
for wheel in "$DEST"/*.whl; do
  [[ $wheel == *-py3-none-any.whl || $wheel == *-py2.py3-none-any.whl ]] || {
    echo "not a pure-Python wheel: $wheel"
    status=1
  }
done

exclude=.git/info/exclude
if [[ -d .git ]] && ! grep -qxF "/$DEST/" "$exclude" 2>/dev/null; then
  mkdir -p .git/info
  echo "/$DEST/" >>"$exclude"
  echo "added /$DEST/ to $exclude"
fi
ls -l "$DEST"
exit "$status"
