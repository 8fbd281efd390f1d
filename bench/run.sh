#!/usr/bin/env bash
# Side-by-side benchmark: the identical long-polling workload against our
# server and against Nchan (nginx + libnginx-mod-nchan), one after the other,
# each started fresh, everything on loopback and bounded in time. Prints one
# table with both servers and the ratio ours/Nchan.
#
#   bench/run.sh                      # 1,000 orders x 10 parked polls
#   ORDERS=100 PER_ORDER=10 bench/run.sh
#
# Settings (environment): ORDERS, PER_ORDER, PUBLISHERS (loadgen's defaults:
# 1000, 10, 4), ROUNDS (3), OURS_PORT (15001). Nchan listens on
# 127.0.0.1:15002, as bench/nginx.conf says.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

OURS_ADDR=127.0.0.1:${OURS_PORT:-15001}
NCHAN_ADDR=127.0.0.1:15002
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so
# Longest a single loadgen run may take (its phases are bounded at 60 s each).
RUN_LIMIT=300
ROUNDS=${ROUNDS:-3}

say() { printf '==> %s\n' "$*" >&2; }

# --- Install what is missing -------------------------------------------------
if ! command -v nginx >/dev/null || [ ! -f "$NCHAN_MODULE" ]; then
    say "installing nginx and libnginx-mod-nchan"
    SUDO=
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    # The package's own service is not used; bench/nginx.conf is run by hand.
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-nchan >/dev/null
fi

# The load generator holds one socket per parked poll, and so does each server.
POLLS=$(( ${ORDERS:-1000} * ${PER_ORDER:-10} ))
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $(( POLLS + 1000 )) ]; then
    echo "open-file limit $(ulimit -n) is too low for $POLLS parked polls" >&2
    exit 1
fi

say "building (release)"
cargo build --release --quiet --bin order-tracker --example loadgen
SERVER=$ROOT/target/release/order-tracker
LOADGEN=$ROOT/target/release/examples/loadgen

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/order-tracker-bench.XXXXXX")
# nginx's workers drop root for "nobody"; they only need to read their prefix.
chmod 755 "$SCRATCH"
SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill -TERM "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

# Stops the server started last and waits (bounded) for it to exit.
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

loadgen() {
    timeout "$RUN_LIMIT" "$LOADGEN" run "$@"
}

run_ours() {
    # Warnings only, like nginx below (error_log warn, access_log off).
    RUST_LOG=warn "$SERVER" --addr "$OURS_ADDR" --no-sample-orders &
    SERVER_PID=$!
    loadgen --target ours --addr "$OURS_ADDR" --pid "$SERVER_PID" --out "$1" >/dev/null
    stop_server
}

run_nchan() {
    rm -rf "$SCRATCH/nchan"
    mkdir -p "$SCRATCH/nchan/tmp"
    nginx -p "$SCRATCH/nchan/" -c "$ROOT/bench/nginx.conf" -e "$SCRATCH/nchan/error.log" -g 'daemon off;' &
    SERVER_PID=$!
    loadgen --target nchan --addr "$NCHAN_ADDR" --pid "$SERVER_PID" --out "$1" >/dev/null
    stop_server
}

# Each round starts both servers fresh and runs ours, then Nchan; the table
# shows medians over the rounds, so one noisy moment on a shared machine does
# not decide a figure alone.
OURS_FILES=()
NCHAN_FILES=()
for round in $(seq "$ROUNDS"); do
    say "round $round/$ROUNDS: ours ($OURS_ADDR)"
    run_ours "$SCRATCH/ours.$round"
    OURS_FILES+=("$SCRATCH/ours.$round")
    say "round $round/$ROUNDS: nchan, nginx $(nginx -v 2>&1 | sed 's/.*\///') ($NCHAN_ADDR)"
    run_nchan "$SCRATCH/nchan.$round"
    NCHAN_FILES+=("$SCRATCH/nchan.$round")
done

# --- The table ------------------------------------------------------------------
echo
echo "order-tracker vs Nchan: ${ORDERS:-1000} orders x ${PER_ORDER:-10} parked polls," \
     "${PUBLISHERS:-4} publishers, $ROUNDS rounds; $(nproc) cores, $(uname -sr)"
echo
"$LOADGEN" table --ours "${OURS_FILES[@]}" --nchan "${NCHAN_FILES[@]}"
