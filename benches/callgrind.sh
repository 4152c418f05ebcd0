#!/usr/bin/env bash
# Instructions the server executes per message, counted by callgrind, which
# does not depend on what else the machine is doing (unlike wall-clock
# throughput on a shared box). Two runs of `agentbus bench send` against a
# memory-store server under callgrind, with COUNT and 4*COUNT messages; the
# difference divided by 3*COUNT leaves out start-up and shutdown.
#
#   benches/callgrind.sh path/to/agentbus [COUNT]    # e.g. target/release/agentbus 1000
#   STORE=sqlite benches/callgrind.sh ...            # the durable store (default: memory)
#
# Compare two builds by running it for each. Needs valgrind (Debian package).
set -euo pipefail
BIN="$1"
COUNT="${2:-1000}"
STORE="${STORE:-memory}"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

run() { # run MESSAGES -> total instructions
  local out="$WORK/callgrind.$1"
  valgrind --tool=callgrind --callgrind-out-file="$out" \
    "$BIN" serve --listen 127.0.0.1:0 --store "$STORE" --data-dir "$WORK/data.$1" >"$WORK/stdout" 2>"$WORK/stderr" &
  local server=$!
  for _ in $(seq 600); do grep -q "listening on" "$WORK/stdout" 2>/dev/null && break; sleep 0.2; done
  local addr
  addr="$(sed -n 's/^agentbus listening on //p' "$WORK/stdout")"
  "$BIN" bench send --addr "http://$addr" --count "$1" --warmup 0s --connections 2 --in-flight 8 >/dev/null
  kill -TERM "$server"
  wait "$server" || true
  sed -n 's/^totals: //p' "$out"
}

small="$(run "$COUNT")"
large="$(run $((4 * COUNT)))"
echo "instructions per message (send, delivery, ack): $(((large - small) / (3 * COUNT)))"
