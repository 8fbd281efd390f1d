#!/usr/bin/env bash
# Write benchmark: status changes per second and PUT latency with 64
# concurrent writers on each store, memory:, SQLite (WAL, synchronous=FULL)
# and PostgreSQL, side by side in one run, without and with 1,000 long polls
# parked on the orders being changed (examples/writebench.rs says exactly
# what a run does). Each run starts the server fresh on a fresh store (a new
# SQLite file in a scratch directory, a new PostgreSQL database), stops it
# and removes the store. Prints one table per poll setting with the ratios
# to memory:.
#
#   bench/writes.sh                              # 5 rounds, ~2 min after the build
#   ROUNDS=1 ORDERS_PER_WRITER=16 bench/writes.sh
#   STORES="memory sqlite" POLLS=0 bench/writes.sh
#
# Settings (environment):
#   STORES             stores to run ("memory sqlite postgres")
#   POLLS              poll settings, one table each ("0 1000")
#   WRITERS            concurrent writers, one keep-alive connection each (64)
#   ORDERS_PER_WRITER  orders each writer walks to delivered, four changes
#                      each (128: 8,192 orders, 32,768 changes per run)
#   ROUNDS             rounds, medians shown (5); each round runs every
#                      store once per poll setting, stores interleaved
#   PG_ADMIN_URL       where PostgreSQL databases are created and dropped
#                      (postgres://postgres@127.0.0.1:5432/test)
#   SERVER_BIN         another build of the server, to compare builds
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

STORES=${STORES:-memory sqlite postgres}
POLLS=${POLLS:-0 1000}
WRITERS=${WRITERS:-64}
ORDERS_PER_WRITER=${ORDERS_PER_WRITER:-128}
ROUNDS=${ROUNDS:-5}
# Longest a single run may take (its phases are bounded at 60 s each).
RUN_LIMIT=300

say() { printf '==> %s\n' "$*" >&2; }

. bench/store.sh
for store in $STORES; do
    store_check "$store"
done

# The load generator holds one socket per parked poll, and so does the server.
ulimit -n "$(ulimit -Hn)"

say "building (release)"
cargo build --release --quiet --bin order-tracker --example writebench
SERVER=${SERVER_BIN:-$ROOT/target/release/order-tracker}
WRITEBENCH=$ROOT/target/release/examples/writebench

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/order-tracker-writes.XXXXXX")
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    store_close
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

# Stops the server and waits (bounded) for it to exit.
stop_server() {
    kill -TERM "$SERVER_PID"
    for _ in $(seq 100); do
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=
}

# Starts the server on STORE_URL and sets ADDR. It listens on port 0 and
# the kernel picks a free port, which the server logs: a fixed port could be
# taken by someone else's server, which would then be benchmarked (and
# written to) by mistake.
start_server() {
    # Warnings only, but the line saying where it listens: at info the server
    # logs every change, which is not what is measured here.
    # Emptied here, not by the child's redirection, which may happen after
    # the loop below has read the last server's address.
    : >"$SCRATCH/server.log"
    RUST_LOG=warn,order_tracker::app=info "$SERVER" --addr 127.0.0.1:0 --no-sample-orders \
        --database-url "$STORE_URL" >>"$SCRATCH/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 600); do
        ADDR=$(sed -n 's/.*listening addr=\([0-9.:]*\).*/\1/p' "$SCRATCH/server.log")
        [ -z "$ADDR" ] || return 0
        kill -0 "$SERVER_PID" 2>/dev/null || break
        sleep 0.05
    done
    echo "the server did not start:" >&2
    cat "$SCRATCH/server.log" >&2
    exit 1
}

# run STORE POLLS OUT
run() {
    store_open "$1"
    start_server
    if ! timeout "$RUN_LIMIT" "$WRITEBENCH" run --addr "$ADDR" --pid "$SERVER_PID" \
        --writers "$WRITERS" --orders-per-writer "$ORDERS_PER_WRITER" --polls "$2" \
        --out "$3" >/dev/null; then
        echo "the run failed; the server's log ends with:" >&2
        tail -20 "$SCRATCH/server.log" >&2
        exit 1
    fi
    stop_server
    store_close
}

PG_VERSION=$(psql "$PG_ADMIN_URL" -qAtc 'SHOW server_version' 2>/dev/null || echo '-')
echo "order-tracker write benchmark ($(git rev-parse --short HEAD)):" \
     "$WRITERS writers x $ORDERS_PER_WRITER orders x 4 changes per run;" \
     "SQLite file on $(df --output=fstype "$SCRATCH" | tail -1 | tr -d ' '), PostgreSQL $PG_VERSION;" \
     "$(nproc) cores, $(uname -sr)"
for polls in $POLLS; do
    for store in $STORES; do
        eval "FILES_$store=()"
    done
    for round in $(seq "$ROUNDS"); do
        for store in $STORES; do
            say "$polls parked polls, round $round/$ROUNDS: $store"
            out=$SCRATCH/$store.$polls.$round
            run "$store" "$polls" "$out"
            eval "FILES_$store+=(\"\$out\")"
        done
    done
    args=()
    for store in $STORES; do
        eval "files=(\"\${FILES_$store[@]}\")"
        args+=("--$store" "${files[@]}")
    done
    echo
    echo "## $polls parked polls, $ROUNDS rounds"
    echo
    "$WRITEBENCH" table "${args[@]}"
done
