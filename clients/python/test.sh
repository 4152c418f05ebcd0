#!/usr/bin/env bash
# Runs the Python client's tests against a real agentbus server.
#
#   AGENTBUS_BIN=path/to/agentbus clients/python/test.sh [pytest args...]
#
# AGENTBUS_BIN defaults to ../../target/debug/agentbus (relative to this
# directory; `cargo build` at the repository root makes it). Needs only
# python3 (>= 3.10) with venv/pip and access to PyPI: it creates .venv here
# (git-ignored; override with AGENTBUS_PY_VENV), installs the pinned test
# dependencies and this package (built as a wheel, not editable, so the
# installed package is what gets tested), then runs pytest. Exits non-zero on
# any failure.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${AGENTBUS_PY_VENV:-$HERE/.venv}"

# Resolve the server binary before changing directory.
BIN="${AGENTBUS_BIN:-$HERE/../../target/debug/agentbus}"
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
if [ ! -x "$BIN" ]; then
  echo "test.sh: no agentbus binary at $BIN (run 'cargo build' at the repository root or set AGENTBUS_BIN)" >&2
  exit 1
fi
export AGENTBUS_BIN="$BIN"

"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 10))' ||
  { echo "test.sh: Python >= 3.10 required ($("$PYTHON" --version 2>&1))" >&2; exit 1; }

export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --quiet)
"${PIP[@]}" -r "$HERE/requirements-test.txt"
# --no-deps: the runtime dependencies are the pinned floors installed above;
# `pip check` then verifies they satisfy what pyproject.toml declares.
"${PIP[@]}" --no-deps --force-reinstall "$HERE"
"$VENV/bin/python" -m pip check

cd "$HERE"
# The pytest script (not `python -m pytest`, which would put this directory
# first on sys.path) so the tests import the installed package.
exec "$VENV/bin/pytest" "$@"
