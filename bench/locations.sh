#!/usr/bin/env bash
# Live-location benchmark (issue 10): DRIVERS drivers each send a fix every
# second to their own order, which has POLLERS live-location polls and
# STATUS_POLLERS status polls parked on it (examples/locations.rs says
# exactly what a run does). For each store in STORES it starts the server
# fresh on a fresh store, runs the load, stops the server and removes the
# store; then it prints one table with a column per store: fixes per second
# absorbed, location wake latency, status polls woken (must be 0), and the
# database rows the fixes cost per second against the throttle's bound
# (orders / --location-write-interval). It exits non-zero if any run woke a
# status poll or lost a fix.
#
#   bench/locations.sh                                  # ~2 min after the build
#   DRIVERS=50 DURATION=5 PROFILE=dev bench/locations.sh  # a quick check (.ci/run)
#
# Settings (environment):
#   DRIVERS         drivers, one order each (1000)
#   POLLERS         live-location polls parked per order (5)
#   STATUS_POLLERS  status polls parked per order (1)
#   RATE            fixes per second per driver (1)
#   DURATION        seconds of fixes (20)
#   GRACE           seconds the pollers get after the last fix to see it (10)
#   WRITE_INTERVAL  the server's --location-write-interval in seconds (5)
#   STORES          stores to run on, one column each ("sqlite postgres"):
#                   sqlite (a fresh file in the scratch directory),
#                   postgres (a fresh database, dropped afterwards), memory
#                   (keeps nothing; no database figures)
#   PG_ADMIN_URL    where databases are created and dropped
#                   (postgres://postgres@127.0.0.1:5432/test)
#   SERVER_BIN      another build of the server, to compare builds
#   PROFILE         cargo profile to build with (release); dev for a quick
#                   correctness run, as .ci/run does (its times mean nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

DRIVERS=${DRIVERS:-1000}
POLLERS=${POLLERS:-5}
STATUS_POLLERS=${STATUS_POLLERS:-1}
RATE=${RATE:-1}
DURATION=${DURATION:-20}
GRACE=${GRACE:-10}
WRITE_INTERVAL=${WRITE_INTERVAL:-5}
STORES=${STORES:-sqlite postgres}
PROFILE=${PROFILE:-release}
# The status polls must outlast the run, so that any answer is a wake: the
# server grants them up to this, and they ask for it.
STATUS_TIMEOUT=3600
# Longest a run may take: setup and parking are bounded at 60 s each, then
# the fixes, the grace and the throttle's last writes.
RUN_LIMIT=$((DURATION + GRACE + WRITE_INTERVAL + 300))

say() { printf '==> %s\n' "$*" >&2; }

. bench/store.sh
for store in $STORES; do
    store_check "$store"
done

# The tool holds one socket per poll and per driver; the server as many.
SOCKETS=$((DRIVERS * (POLLERS + STATUS_POLLERS + 1)))
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((SOCKETS + 1000)) ]; then
    echo "open-file limit $(ulimit -n) is too low for $SOCKETS connections" >&2
    exit 1
fi
# The caps must admit every poll: per order, and in all.
PER_ORDER=$((POLLERS > STATUS_POLLERS ? POLLERS : STATUS_POLLERS))
PER_ORDER=$((PER_ORDER > 10 ? PER_ORDER : 10))
MAX_PARKED=$((DRIVERS * (POLLERS + STATUS_POLLERS) + 1000))
MAX_PARKED=$((MAX_PARKED > 16384 ? MAX_PARKED : 16384))

say "building ($PROFILE)"
cargo build --profile "$PROFILE" --quiet --bin order-tracker --example locations
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case "$PROFILE" in
    dev) OUT=debug ;;
    *) OUT=$PROFILE ;;
esac
SERVER=${SERVER_BIN:-$TARGET/$OUT/order-tracker}
TOOL=$TARGET/$OUT/examples/locations

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/order-tracker-locations.XXXXXX")
PID=
cleanup() {
    stop_server
    store_close
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

# Starts the server on STORE_URL; sets PID and ADDR. It listens on port 0
# and the kernel picks a free port, which the server logs.
start_server() {
    local log=$SCRATCH/server.log
    : >"$log"
    RUST_LOG=warn,order_tracker::app=info "$SERVER" --addr 127.0.0.1:0 --no-sample-orders \
        --database-url "$STORE_URL" --location-write-interval "$WRITE_INTERVAL" \
        --max-poll-timeout "$STATUS_TIMEOUT" --max-pollers-per-order "$PER_ORDER" \
        --max-parked-polls "$MAX_PARKED" >>"$log" 2>&1 &
    PID=$!
    for _ in $(seq 600); do
        ADDR=$(sed -n 's/.*listening addr=\([0-9.:]*\).*/\1/p' "$log")
        [ -z "$ADDR" ] || return 0
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "the server did not start:" >&2
    cat "$log" >&2
    exit 1
}

# Stops the server (ours only, by pid) and waits, bounded, for it to exit.
stop_server() {
    [ -n "$PID" ] || return 0
    kill -TERM "$PID" 2>/dev/null || true
    for _ in $(seq 100); do
        kill -0 "$PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
    PID=
}

# run STORE OUT
run() {
    local store=$1 out=$2 url_args=() status=0
    store_open "$store"
    [ "$store" = memory ] || url_args=(--database-url "$STORE_URL")
    start_server
    timeout "$RUN_LIMIT" "$TOOL" run --addr "$ADDR" --pid "$PID" "${url_args[@]}" \
        --drivers "$DRIVERS" --pollers "$POLLERS" --status-pollers "$STATUS_POLLERS" \
        --rate "$RATE" --duration "$DURATION" --grace "$GRACE" \
        --status-timeout "$STATUS_TIMEOUT" --write-interval "$WRITE_INTERVAL" \
        --out "$out" >/dev/null || status=$?
    stop_server
    if [ ! -s "$out" ]; then
        echo "the $store run failed ($status); the server's log ends with:" >&2
        tail -20 "$SCRATCH/server.log" >&2
        exit 1
    fi
    if [ "$store" = postgres ]; then
        # The server's backends report their statistics when they exit, so
        # this is complete once it has stopped (and they have exited).
        sleep 1
        local db=${PG_ADMIN_URL%/*}/$STORE_DB
        echo "pg_stat_rows $(psql "$db" -qAt -c \
            "SELECT n_tup_ins + n_tup_upd FROM pg_stat_user_tables WHERE relname = 'driver_locations'")" \
            >>"$out"
        # Reads of orders by key, setup and polls included: on a shared
        # store each fix reads its order from the database.
        echo "pg_orders_idx_scans $(psql "$db" -qAt -c \
            "SELECT idx_scan FROM pg_stat_user_tables WHERE relname = 'orders'")" >>"$out"
    fi
    store_close
}

PG_VERSION=$(psql "$PG_ADMIN_URL" -qAtc 'SHOW server_version' 2>/dev/null || echo '-')
echo "order-tracker live-location benchmark ($(git rev-parse --short HEAD), $PROFILE):" \
     "$DRIVERS drivers x $RATE fix/s for ${DURATION} s; per order $POLLERS live-location" \
     "and $STATUS_POLLERS status poll(s) parked; write interval ${WRITE_INTERVAL} s;" \
     "SQLite (WAL, synchronous=FULL), PostgreSQL $PG_VERSION; $(nproc) cores, $(uname -sr)"
COLUMNS_ARGS=()
for store in $STORES; do
    say "$store: $DRIVERS drivers, $((DRIVERS * (POLLERS + STATUS_POLLERS))) polls, ${DURATION} s"
    out=$SCRATCH/$store
    run "$store" "$out"
    COLUMNS_ARGS+=("$store=$out")
done
echo
"$TOOL" table "${COLUMNS_ARGS[@]}"
