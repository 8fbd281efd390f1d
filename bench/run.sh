#!/usr/bin/env bash
# Side-by-side benchmark: the identical long-polling workload against our
# server and against Nchan (nginx + libnginx-mod-nchan), one after the other,
# each started fresh, everything on loopback and bounded in time. Prints one
# table per publisher setting with both servers and the ratio ours/Nchan.
#
#   bench/run.sh                                # 1,000 orders x 10 parked polls
#   ORDERS=100 PER_ORDER=10 ROUNDS=1 bench/run.sh
#   STORE=sqlite bench/run.sh                   # ours on a SQLite file
#
# Settings (environment):
#   STORE              where ours keeps orders (memory): memory is
#                      --database-url memory:, as every figure in
#                      BENCHMARKS.md before durable storage; sqlite is a new
#                      file in the scratch directory (WAL,
#                      synchronous=FULL); postgres is a new database on
#                      PG_ADMIN_URL's server (postgres://postgres@127.0.0.1:5432/test),
#                      dropped afterwards. Every start of ours gets a fresh one.
#   ORDERS, PER_ORDER  orders and parked polls per order (1000, 10)
#   PUBLISHERS         publisher settings to run, each a table ("1 4"): 1 is
#                      one change at a time; 4 keeps four changes in flight
#   ROUNDS             rounds per setting, medians shown (3)
#   OURS_PORT          our port (15001); Nchan listens on 127.0.0.1:15002,
#                      as bench/nginx.conf says
#   OURS_BIN           another build of ours to run, to compare builds
# Takes about two minutes with the defaults, once the release build is done.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ORDERS=${ORDERS:-1000}
PER_ORDER=${PER_ORDER:-10}
PUBLISHERS=${PUBLISHERS:-1 4}
ROUNDS=${ROUNDS:-3}
STORE=${STORE:-memory}
OURS_ADDR=127.0.0.1:${OURS_PORT:-15001}
NCHAN_ADDR=127.0.0.1:15002
NCHAN_MODULE=/usr/lib/nginx/modules/ngx_nchan_module.so
# Longest a single loadgen run may take (its phases are bounded at 60 s each).
RUN_LIMIT=300

say() { printf '==> %s\n' "$*" >&2; }

. bench/store.sh
store_check "$STORE"

# --- Install what is missing -------------------------------------------------
if ! command -v nginx >/dev/null || [ ! -f "$NCHAN_MODULE" ]; then
    say "installing nginx and libnginx-mod-nchan"
    SUDO=
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    # The package's own service is not used; bench/nginx.conf is run by hand.
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-nchan >/dev/null
fi

# A server someone else left on one of these ports would be benchmarked, and
# written to, by mistake.
for addr in "$OURS_ADDR" "$NCHAN_ADDR"; do
    if (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
        echo "$addr is taken: stop what listens there (or set OURS_PORT)" >&2
        exit 1
    fi
done

# The load generator holds one socket per parked poll, and so does each server.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $(( ORDERS * PER_ORDER + 1000 )) ]; then
    echo "open-file limit $(ulimit -n) is too low for $(( ORDERS * PER_ORDER )) parked polls" >&2
    exit 1
fi

say "building (release)"
cargo build --release --quiet --bin order-tracker --example loadgen
SERVER=${OURS_BIN:-$ROOT/target/release/order-tracker}
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
    store_close
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

# loadgen TARGET ADDR PUBLISHERS OUT
loadgen() {
    timeout "$RUN_LIMIT" "$LOADGEN" run --target "$1" --addr "$2" --pid "$SERVER_PID" \
        --orders "$ORDERS" --per-order "$PER_ORDER" --publishers "$3" --out "$4" >/dev/null
}

run_ours() {
    store_open "$STORE"
    # Warnings only, like nginx below (error_log warn, access_log off).
    RUST_LOG=warn "$SERVER" --addr "$OURS_ADDR" --no-sample-orders \
        --database-url "$STORE_URL" &
    SERVER_PID=$!
    loadgen ours "$OURS_ADDR" "$1" "$2"
    stop_server
    store_close
}

run_nchan() {
    rm -rf "$SCRATCH/nchan"
    mkdir -p "$SCRATCH/nchan/tmp"
    nginx -p "$SCRATCH/nchan/" -c "$ROOT/bench/nginx.conf" -e "$SCRATCH/nchan/error.log" \
        -g 'daemon off;' &
    SERVER_PID=$!
    loadgen nchan "$NCHAN_ADDR" "$1" "$2"
    stop_server
}

echo "order-tracker (store: $STORE) vs Nchan $(nginx -v 2>&1 | sed 's/.*\///') + libnginx-mod-nchan:" \
     "$ORDERS orders x $PER_ORDER parked polls; $(nproc) cores, $(uname -sr)"
# Each round starts both servers fresh and runs ours, then Nchan; the table
# shows medians over the rounds, so one noisy moment on a shared machine does
# not decide a figure alone.
for publishers in $PUBLISHERS; do
    OURS_FILES=()
    NCHAN_FILES=()
    for round in $(seq "$ROUNDS"); do
        say "$publishers publisher(s), round $round/$ROUNDS: ours ($OURS_ADDR)"
        run_ours "$publishers" "$SCRATCH/ours.$publishers.$round"
        OURS_FILES+=("$SCRATCH/ours.$publishers.$round")
        say "$publishers publisher(s), round $round/$ROUNDS: nchan ($NCHAN_ADDR)"
        run_nchan "$publishers" "$SCRATCH/nchan.$publishers.$round"
        NCHAN_FILES+=("$SCRATCH/nchan.$publishers.$round")
    done
    echo
    echo "## $publishers publisher connection(s), $ROUNDS rounds"
    echo
    "$LOADGEN" table --ours "${OURS_FILES[@]}" --nchan "${NCHAN_FILES[@]}"
done
