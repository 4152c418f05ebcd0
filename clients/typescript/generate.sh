#!/usr/bin/env bash
# Regenerates src/gen/ from the repository's proto/ with buf and the local
# protoc-gen-es plugin, both pinned in package.json (no remote plugins, works
# offline once node_modules is installed). Byte-identical on every run; CI
# runs it and fails on any diff.
set -euo pipefail
cd "$(dirname "$0")"

# Install the pinned tools unless node_modules already matches package-lock.json.
if [ ! -x node_modules/.bin/buf ] || [ ! -x node_modules/.bin/protoc-gen-es ] ||
  [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund
fi

# buf.gen.yaml has `clean: true`: src/gen is emptied first, so files of
# removed protos disappear too.
node_modules/.bin/buf generate ../../proto --template buf.gen.yaml
echo "generated: $(find src/gen -type f -name '*.ts' | sort | tr '\n' ' ')"
