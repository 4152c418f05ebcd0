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
npm run --silent build

echo "==> tests (node:test + tsx)"
node --import tsx --test test/*.test.ts

# The package as users get it: `npm pack` (prepack builds dist/ afresh), the
# tarball installed into an empty project, which typechecks against its .d.ts
# and, run with node, talks to a real server.
echo "==> npm pack, installed into a scratch project"
HERE="$PWD"
SCRATCH="$(mktemp -d)"
SERVER_PID=""
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$SCRATCH"
}
trap cleanup EXIT
npm pack --silent --json --pack-destination "$SCRATCH" >"$SCRATCH/pack.json"
TARBALL="$SCRATCH/$(node -p 'JSON.parse(fs.readFileSync(process.argv[1], "utf8"))[0].filename' "$SCRATCH/pack.json")"
node - "$SCRATCH/pack.json" <<'JS'
const [pack] = JSON.parse(require("fs").readFileSync(process.argv[2], "utf8"));
const files = pack.files.map((f) => f.path);
for (const needed of ["package.json", "README.md", "dist/index.js", "dist/index.d.ts", "dist/gen/agentbus/v1/message_service_pb.d.ts"]) {
  if (!files.includes(needed)) throw new Error(`${needed} missing from ${pack.filename}`);
}
const stray = files.filter((f) => !/^(dist|src)\//.test(f) && !["package.json", "README.md"].includes(f));
if (stray.length > 0) throw new Error(`unexpected files in ${pack.filename}: ${stray.join(", ")}`);
console.log(`    ${pack.filename}: ${files.length} files, ${pack.size} bytes`);
JS
mkdir "$SCRATCH/app"
cd "$SCRATCH/app"
cat >package.json <<'JSON'
{ "name": "scratch-app", "version": "1.0.0", "private": true, "type": "module" }
JSON
cat >tsconfig.json <<'JSON'
{
  "compilerOptions": {
    "target": "ES2022", "lib": ["ES2022", "DOM"], "module": "NodeNext", "moduleResolution": "NodeNext",
    "types": ["node"], "strict": true, "skipLibCheck": false, "outDir": "out"
  },
  "files": ["main.ts"]
}
JSON
cat >main.ts <<'TS'
import { connect, Code, ConnectError, MessageState, type AckResult } from "@agentbus/client";

const bus = connect(process.argv[2] ?? "", { apiKey: "scratch-key" });
const { agent } = await bus.registerAgent("scratch://app", { update: true });
const agentId = agent?.descriptor?.agentId ?? "";
const results: AckResult[] = await bus.ackMany(agentId, ["never-sent"]);
const [result] = results;
if (result?.codeName !== "NOT_FOUND" || result.code !== Code.NotFound || result.state !== MessageState.UNSPECIFIED) {
  throw new Error(`unexpected ack result ${JSON.stringify(result)}`);
}
try {
  await connect(process.argv[2] ?? "").getAgent("scratch://app");
  throw new Error("a call without the API key succeeded");
} catch (e) {
  if (!(e instanceof ConnectError) || e.code !== Code.Unauthenticated) throw e;
}
console.log(`    imported @agentbus/client, registered ${agentId}, acks name their code (${result.codeName})`);
TS
# Its dependencies resolve from the registry by the package's semver ranges;
# @types/node at the version this package is developed with.
npm install --no-audit --no-fund --loglevel=error "$TARBALL" \
  "@types/node@$(node -p 'require(process.argv[1]).devDependencies["@types/node"]' "$HERE/package.json")"
"$HERE/node_modules/.bin/tsc" -p .
: >server.log
# Without AGENT_BUS_* settings from the environment, so only the flags count.
env $(env | sed -n 's/^\(AGENT_BUS_[A-Za-z0-9_]*\)=.*/-u \1/p') \
  "$AGENTBUS_BIN" serve --listen 127.0.0.1:0 --store memory --api-key scratch-key >server.log 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
  ADDRESS="$(sed -n 's/^agentbus listening on \(.*\)$/\1/p' server.log)"
  [ -n "$ADDRESS" ] && break
  sleep 0.1
done
[ -n "${ADDRESS:-}" ] || { cat server.log >&2; echo "agentbus did not start" >&2; exit 1; }
node out/main.js "$ADDRESS"
