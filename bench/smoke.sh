#!/usr/bin/env bash
# A small, quick run of the load generator against our server only (not
# Nchan), so the benchmark tool cannot rot unnoticed. It checks no speed: it
# fails only if the tool breaks, or a poll is not parked, woken and parked
# again after the reconnect. `.ci/run` calls it. The server keeps its orders in
# the default store, SQLite, in a file in the scratch directory (removed at
# exit) rather than the default file in the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=${SMOKE_PORT:-15101}
# A server someone else left there would be tested, and written to, instead.
if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    echo "127.0.0.1:$PORT is taken: stop what listens there or set SMOKE_PORT" >&2
    exit 1
fi
cargo build --quiet --bin order-tracker --example loadgen
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/order-tracker-smoke.XXXXXX")
RUST_LOG=warn target/debug/order-tracker --addr "127.0.0.1:$PORT" --no-sample-orders \
    --database-url "sqlite:$SCRATCH/smoke.db" &
PID=$!
trap 'kill -TERM $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$SCRATCH"' EXIT

timeout 120 target/debug/examples/loadgen run --target ours --addr "127.0.0.1:$PORT" \
    --pid "$PID" --orders 20 --per-order 5 --publishers 2 --phase-limit 30 \
    --out "$SCRATCH/ours" >/dev/null
for figure in publish_failures wake_failures storm_failures; do
    if ! grep -qx "$figure 0" "$SCRATCH/ours"; then
        echo "loadgen smoke: $(grep "^$figure " "$SCRATCH/ours" || echo "$figure missing")" >&2
        exit 1
    fi
done
target/debug/examples/loadgen table --ours "$SCRATCH/ours" --nchan "$SCRATCH/ours" >/dev/null
echo "loadgen smoke: 100 polls parked, woken and parked again"
