#!/usr/bin/env bash
# Bounded memory: the server's resident memory after ORDERS orders were
# created and went idle, before and after the hub evicts them. Runs the
# release build on a fresh SQLite file with a short --idle-eviction.
#
#   bench/idle_memory.sh                 # 200,000 orders
#   ORDERS=20000 IDLE=30 bench/idle_memory.sh
#
# IDLE (seconds, default 180) must outlast the creation, or orders are
# evicted before the first reading.
set -euo pipefail
cd "$(dirname "$0")/.."

ORDERS=${ORDERS:-200000}
PORT=${PORT:-15201}
IDLE=${IDLE:-180}

if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "127.0.0.1:$PORT is taken: stop what listens there or set PORT" >&2
    exit 1
fi
cargo build --release --quiet --bin order-tracker --example idle_memory
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/order-tracker-idle.XXXXXX")
RUST_LOG=warn target/release/order-tracker --addr "127.0.0.1:$PORT" --no-sample-orders \
    --database-url "sqlite:$SCRATCH/orders.db" --idle-eviction "$IDLE" &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$SCRATCH"' EXIT
for _ in $(seq 1 100); do
    curl -fs "http://127.0.0.1:$PORT/api/v1/health" >/dev/null && break
    sleep 0.1
done
timeout 900 target/release/examples/idle_memory --addr "127.0.0.1:$PORT" --pid "$PID" \
    --orders "$ORDERS" --evict-limit $(( IDLE * 3 + 60 ))
