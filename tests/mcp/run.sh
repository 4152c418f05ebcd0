#!/usr/bin/env bash
# Runs the MCP tests: the official Python MCP SDK launches `agentbus mcp`
# over stdio against real servers.
#
#   AGENTBUS_BIN=path/to/agentbus tests/mcp/run.sh [pytest args...]
#
# Creates a virtualenv in tests/mcp/.venv (git-ignored; override with
# AGENTBUS_MCP_VENV) with the pinned requirements.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BIN="${AGENTBUS_BIN:-$HERE/../../target/debug/agentbus}"
case "$BIN" in /*) ;; *) BIN="$PWD/$BIN" ;; esac
[ -x "$BIN" ] || { echo "run.sh: no agentbus binary at $BIN (cargo build, or set AGENTBUS_BIN)" >&2; exit 1; }
export AGENTBUS_BIN="$BIN"
VENV="${AGENTBUS_MCP_VENV:-$HERE/.venv}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet -r "$HERE/requirements.txt"
cd "$HERE"
exec "$VENV/bin/pytest" -q "$@"
