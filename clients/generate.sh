#!/usr/bin/env bash
# Regenerates every client's code from proto/ (Python stubs with a pinned
# grpcio-tools, TypeScript with buf and a local protoc-gen-es). CI runs it
# and fails if the result differs from what is committed.
set -euo pipefail
cd "$(dirname "$0")"
python/generate.sh
typescript/generate.sh
