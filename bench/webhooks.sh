#!/usr/bin/env bash
# Signed Uber webhook events accepted end to end per second (issue 11):
# signature check, deduplication by event id, the change through the write
# path, and the customer's status poll woken. One run per store, each on a
# fresh server and store. See examples/webhooks.rs.
#
#   bench/webhooks.sh                         # 4,000 orders x 5 events, 8 connections, memory: and SQLite
#   ORDERS=50 CONNECTIONS=2 PROFILE=dev bench/webhooks.sh     # a smoke run
#
# Settings: ORDERS (4000), CONNECTIONS (8), STORES ("memory sqlite"),
# PROFILE (release), PORT (15201).
set -euo pipefail
cd "$(dirname "$0")/.."

ORDERS=${ORDERS:-4000}
CONNECTIONS=${CONNECTIONS:-8}
STORES=${STORES:-memory sqlite}
PROFILE=${PROFILE:-release}
PORT=${PORT:-15201}
SECRET=bench-webhook-secret
# One parked status poll per order, each on its own connection.
ulimit -n 20000 2>/dev/null || true

if [ "$PROFILE" = release ]; then
    cargo build --quiet --release --bin order-tracker --example webhooks
    DIR=${CARGO_TARGET_DIR:-target}/release
else
    cargo build --quiet --bin order-tracker --example webhooks
    DIR=${CARGO_TARGET_DIR:-target}/debug
fi
SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/order-tracker-webhooks.XXXXXX")
PID=
cleanup() {
    if [ -n "$PID" ]; then kill -TERM "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

for store in $STORES; do
    case $store in
        memory) url=memory: ;;
        sqlite) url="sqlite:$SCRATCH/webhooks.db" ;;
        *) echo "unknown store $store" >&2; exit 1 ;;
    esac
    RUST_LOG=warn "$DIR/order-tracker" --addr "127.0.0.1:$PORT" --no-sample-orders \
        --database-url "$url" --uber-webhook-secret "$SECRET" --max-poll-timeout 3600 &
    PID=$!
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$PORT/api/v1/ready" >/dev/null && break
        sleep 0.1
    done
    echo "== $store: $ORDERS orders, 5 signed events each (4 + a retry), $CONNECTIONS connections"
    timeout 300 "$DIR/examples/webhooks" --addr "127.0.0.1:$PORT" --orders "$ORDERS" \
        --connections "$CONNECTIONS" --secret "$SECRET"
    kill -TERM "$PID"; wait "$PID" 2>/dev/null || true; PID=
    rm -f "$SCRATCH"/webhooks.db*
done
