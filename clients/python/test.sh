#!/usr/bin/env bash
# Checks the Python client against a real agentbus server.
#
#   AGENTBUS_BIN=path/to/agentbus clients/python/test.sh [pytest args...]
#
# AGENTBUS_BIN defaults to ../../target/debug/agentbus (relative to this
# directory; `cargo build` at the repository root makes it). Needs only
# python3 (>= 3.10) with venv/pip and access to PyPI. Every version it installs
# is pinned. In order:
#
#   1. .venv (git-ignored; override with AGENTBUS_PY_VENV): the newest pinned
#      grpcio and protobuf, pytest and mypy (requirements-test.txt), and this
#      package built as a wheel (not editable, so the installed package is what
#      gets tested);
#   2. mypy --strict on the package, the examples and tests/typecheck.py
#      (configuration in pyproject.toml);
#   3. `pip install <this directory>` into a scratch virtualenv, as a user
#      would: it must build a wheel, pull in its dependencies and import, with
#      py.typed and the .pyi stubs installed;
#   4. pytest in .venv;
#   5. pytest again in .venv-floor, with exactly the lowest grpcio and protobuf
#      pyproject.toml accepts (requirements-floor.txt). AGENTBUS_PY_FLOOR=0
#      skips it (for a quick local run).
#
# Exits non-zero on any failure.
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
step() { printf -- '--> %s\n' "$*"; }
SCRATCH="$(mktemp -d)"
trap 'rm -rf "$SCRATCH"' EXIT

# A virtualenv with the pinned requirements of $2 and this package (its
# dependencies are the pins; `pip check` then verifies that they satisfy what
# pyproject.toml declares).
prepare_venv() {
  local venv="$1" requirements="$2"
  shift 2
  [ -x "$venv/bin/python" ] || "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet "$@" -r "$requirements"
  "$venv/bin/python" -m pip install --quiet --no-deps --force-reinstall "$HERE"
  "$venv/bin/python" -m pip check >/dev/null
}

step "test environment: $VENV"
prepare_venv "$VENV" "$HERE/requirements-test.txt"

step "mypy --strict: agentbus, examples, tests/typecheck.py"
(cd "$HERE" && "$VENV/bin/mypy")

step "pip install $HERE into a scratch virtualenv"
"$PYTHON" -m venv "$SCRATCH/venv"
"$SCRATCH/venv/bin/python" -m pip install --quiet "$HERE"
(cd "$SCRATCH" && "$SCRATCH/venv/bin/python" - <<'PY'
import importlib.metadata as metadata

import agentbus
import agentbus.aio

dist = metadata.distribution("agentbus")
assert dist.version == agentbus.__version__, (dist.version, agentbus.__version__)
assert dist.read_text("WHEEL"), "not installed from a wheel"
assert "site-packages" in agentbus.__file__, agentbus.__file__
files = {str(f).replace("\\", "/") for f in dist.files or ()}
for needed in ("agentbus/py.typed", "agentbus/aio.py", "agentbus/v1/session_pb2.pyi", "agentbus/v1/message_service_pb2_grpc.py"):
    assert needed in files, f"{needed} not installed"
assert not any(f.startswith(("tests/", "examples/")) for f in files), "tests or examples installed"
# A call, without a server: the generated stubs and grpcio work together.
with agentbus.AgentBusClient("127.0.0.1:1", timeout=2) as bus:
    try:
        bus.get_agent("opencode://backend")
    except agentbus.UnavailableError:
        pass
    else:
        raise AssertionError("a call to a closed port succeeded")
requires = sorted(r for r in dist.requires or () if "extra ==" not in r)
print(f"    agentbus {dist.version} installed from a wheel; requires {', '.join(requires)}")
PY
)

cd "$HERE"
# The pytest script (not `python -m pytest`, which would put this directory
# first on sys.path) so the tests import the installed package.
step "pytest: grpcio $("$VENV/bin/python" -c 'import grpc; print(grpc.__version__)'), protobuf $("$VENV/bin/python" -c 'import google.protobuf as p; print(p.__version__)')"
"$VENV/bin/pytest" "$@"

if [ "${AGENTBUS_PY_FLOOR:-1}" = 0 ]; then
  step "floor run skipped (AGENTBUS_PY_FLOOR=0)"
  exit 0
fi
# The floors in pyproject.toml must be the versions requirements-floor.txt pins.
"$PYTHON" - "$HERE/pyproject.toml" "$HERE/requirements-floor.txt" <<'PY'
import re, sys
declared = dict(re.findall(r'"(grpcio|protobuf)>=([0-9.]+)"', open(sys.argv[1]).read()))
pinned = dict(re.findall(r'^(grpcio|protobuf)==([0-9.]+)$', open(sys.argv[2]).read(), re.M))
if declared != pinned or len(declared) != 2:
    sys.exit(f"test.sh: pyproject.toml declares floors {declared}, requirements-floor.txt pins {pinned}")
PY
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info >= (3, 12))'; then
  # grpcio 1.49.1 has wheels for CPython 3.7 to 3.11 only; building it from
  # source takes long and needs a compiler.
  step "floor run skipped: the floor grpcio has no wheel for Python $("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  exit 0
fi
FLOOR_VENV="${AGENTBUS_PY_FLOOR_VENV:-$HERE/.venv-floor}"
step "floor environment: $FLOOR_VENV"
prepare_venv "$FLOOR_VENV" "$HERE/requirements-floor.txt" --only-binary grpcio
step "pytest: grpcio $("$FLOOR_VENV/bin/python" -c 'import grpc; print(grpc.__version__)'), protobuf $("$FLOOR_VENV/bin/python" -c 'import google.protobuf as p; print(p.__version__)')"
"$FLOOR_VENV/bin/pytest" "$@"
