#!/usr/bin/env bash
# Installs the pinned dependencies, typechecks, and runs the tests against the
# real agentbus binary: $AGENTBUS_BIN, default ../../target/debug/agentbus
# (build it first with `cargo build` at the repository root).
set -euo pipefail
if [ -n "${AGENTBUS_BIN:-}" ] && [ "${AGENTBUS_BIN#/}" = "$AGENTBUS_BIN" ]; then
  # Absolute, so it means the same after the cd below.
  AGENTBUS_BIN="$PWD/$AGENTBUS_BIN"
fi
cd "$(dirname "$0")"
export AGENTBUS_BIN="${AGENTBUS_BIN:-$PWD/../../target/debug/agentbus}"
if [ ! -x "$AGENTBUS_BIN" ]; then
  echo "agentbus binary not found at $AGENTBUS_BIN: run cargo build at the repository root or set AGENTBUS_BIN" >&2
  exit 1
fi
echo "==> using $AGENTBUS_BIN"

echo "==> npm ci"
npm ci --no-audit --no-fund

echo "==> tsc --noEmit (src, tests, examples)"
npx --no-install tsc --noEmit -p tsconfig.json

echo "==> tsc build (dist/, git-ignored)"
npx --no-install tsc -p tsconfig.build.json

echo "==> tests (node:test + tsx)"
node --import tsx --test test/*.test.ts
