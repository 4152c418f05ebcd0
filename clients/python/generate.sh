#!/usr/bin/env bash
# Regenerates the protobuf/gRPC stubs in agentbus/v1/ (and any other package
# under agentbus/ that has protos) from ../../proto with a pinned grpcio-tools.
#
# The tools live in a cached virtualenv outside the repository
# (default: ${XDG_CACHE_HOME:-~/.cache}/agentbus/python-gen-<version>;
# override with AGENTBUS_GEN_VENV). The output depends only on the .proto files
# and the pinned versions: not on the checkout path, the locale or the number of
# runs. CI runs this and fails on any difference from what is committed.
set -euo pipefail
export LC_ALL=C

# Exact versions. grpcio-tools bundles protoc, which decides the generated code;
# its runtime floors (protobuf>=7.35.1 from the _pb2 version check, grpcio>=1.85.1
# from the _pb2_grpc version check) are the floors in pyproject.toml.
GRPCIO_TOOLS_VERSION=1.85.1
TOOL_REQUIREMENTS=(
  "grpcio-tools==$GRPCIO_TOOLS_VERSION"
  "grpcio==1.85.1"
  "protobuf==7.35.1"
  "setuptools==84.2.1"
)

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PROTO_ROOT="$(cd "$HERE/../../proto" && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${AGENTBUS_GEN_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/agentbus/python-gen-$GRPCIO_TOOLS_VERSION}"

tools_ok() {
  [ -x "$VENV/bin/python" ] &&
    [ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("grpcio-tools"))' 2>/dev/null)" \
      = "$GRPCIO_TOOLS_VERSION" ]
}
if ! tools_ok; then
  echo "generate.sh: installing grpcio-tools $GRPCIO_TOOLS_VERSION into $VENV" >&2
  rm -rf "$VENV"
  mkdir -p "$(dirname "$VENV")"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${TOOL_REQUIREMENTS[@]}"
  tools_ok || { echo "generate.sh: grpcio-tools $GRPCIO_TOOLS_VERSION not usable in $VENV" >&2; exit 1; }
fi
WKT="$("$VENV/bin/python" -c 'import grpc_tools, os; print(os.path.join(os.path.dirname(grpc_tools.__file__), "_proto"))')"

# Remove what a previous run generated, so protos that were deleted or renamed
# leave nothing stale behind. Hand-written modules never end in _pb2*.
find "$HERE/agentbus" \( -name '*_pb2.py' -o -name '*_pb2.pyi' -o -name '*_pb2_grpc.py' \) -delete

cd "$PROTO_ROOT"
mapfile -t PROTOS < <(find agentbus -name '*.proto' | sort)
[ "${#PROTOS[@]}" -gt 0 ] || { echo "generate.sh: no .proto files under $PROTO_ROOT/agentbus" >&2; exit 1; }
"$VENV/bin/python" -m grpc_tools.protoc \
  --proto_path=. --proto_path="$WKT" \
  --python_out="$HERE" --pyi_out="$HERE" --grpc_python_out="$HERE" \
  "${PROTOS[@]}"

# Every generated directory is a package (agentbus/__init__.py is hand-written).
for dir in $(printf '%s\n' "${PROTOS[@]}" | xargs -n1 dirname | sort -u); do
  if [ "$dir" != agentbus ] && [ ! -f "$HERE/$dir/__init__.py" ]; then
    printf '"""Generated protobuf and gRPC modules for %s (see generate.sh)."""\n' \
      "$(echo "$dir" | tr / .)" >"$HERE/$dir/__init__.py"
  fi
done
echo "generate.sh: generated ${#PROTOS[@]} protos into $HERE" >&2
