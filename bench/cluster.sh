#!/usr/bin/env bash
# Cluster benchmark: several instances of the server (3) on one PostgreSQL
# database, 1,000 orders x 10 long polls spread round-robin over them, each
# change sent to a random instance (examples/cluster.rs says exactly what a
# phase does). Two phases, side by side in one table per publisher setting:
# without chaos, and with a loop that terminates the instances' LISTEN
# connections every 2 seconds. Each phase starts the instances fresh on a
# fresh database, stops them and drops the database. Wake latency is split by
# whether the poll was on the instance that took the change; lost updates
# (a poller that never saw its order's final version) must be 0 in every
# phase, else the script exits non-zero.
#
#   bench/cluster.sh                                   # ~3 min after the build
#   ORDERS=50 DURATION=5 PUBLISHERS=1 bench/cluster.sh # a quick check
#   PHASES=quiet GRACE=2 bench/cluster.sh
#
# Settings (environment):
#   INSTANCES       instances on the one database (3)
#   ORDERS          orders per generation (1000); every order takes four
#                   changes (preparing, ready, picked_up, delivered), so a
#                   phase creates new generations of orders until DURATION
#   PER_ORDER       long polls per order, round-robin over the instances (10)
#   DURATION        seconds of changes per phase, rounded up to whole
#                   generations (20)
#   GRACE           seconds the pollers get after the last change to see
#                   their orders' final versions before a missing one counts
#                   as lost (10: a 5 s sweep plus margin)
#   PUBLISHERS      publisher settings, one table each ("1 4"): changes in
#                   flight, each PUT to a random instance
#   PHASES          phases to run ("quiet chaos")
#   ROUNDS          rounds, medians shown (1); each round runs every phase
#   CHAOS_INTERVAL  seconds between two rounds of terminations (2)
#   CHAOS_WHERE     which of the database's backends the chaos loop
#                   terminates, as SQL over pg_stat_activity (idle
#                   connections whose last query was a LISTEN, or whose
#                   application_name says listen)
#   POLL_TIMEOUT    the long polls' timeout in seconds (120, the most the
#                   server grants): a poll on an instance that missed a change
#                   is answered then, with what that instance holds
#   SEED            seeds the choice of instance for each change (1)
#   WRITE_TO        send every change to this instance (0-based) instead of
#                   a random one, so polls on the others wake only by
#                   cross-instance notification (unset)
#   PG_ADMIN_URL    where databases are created and dropped
#                   (postgres://postgres@127.0.0.1:5432/test)
#   SERVER_BIN      another build of the server, to compare builds
#   PROFILE         cargo profile to build with (release); dev for a quick
#                   correctness run, as .ci/run does (its times mean nothing)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

INSTANCES=${INSTANCES:-3}
ORDERS=${ORDERS:-1000}
PER_ORDER=${PER_ORDER:-10}
DURATION=${DURATION:-20}
GRACE=${GRACE:-10}
PUBLISHERS=${PUBLISHERS:-1 4}
PHASES=${PHASES:-quiet chaos}
ROUNDS=${ROUNDS:-1}
POLL_TIMEOUT=${POLL_TIMEOUT:-120}
SEED=${SEED:-1}
WRITE_TO=${WRITE_TO:-}
PROFILE=${PROFILE:-release}
CHAOS_INTERVAL=${CHAOS_INTERVAL:-2}
CHAOS_WHERE=${CHAOS_WHERE:-"state = 'idle' AND (query ILIKE '%LISTEN%' OR application_name ILIKE '%listen%')"}
# Longest a single phase may take: its steps are bounded at 60 s each, and
# the last generation may start just before DURATION ends.
RUN_LIMIT=$((DURATION + GRACE + 900))

say() { printf '==> %s\n' "$*" >&2; }

. bench/store.sh
store_check postgres
for phase in $PHASES; do
    case "$phase" in
        quiet | chaos) ;;
        *)
            echo "unknown phase '$phase': use quiet and chaos" >&2
            exit 1
            ;;
    esac
done

# The tool holds one socket per parked poll; the instances share as many.
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" -lt $((ORDERS * PER_ORDER + 1000)) ]; then
    echo "open-file limit $(ulimit -n) is too low for $((ORDERS * PER_ORDER)) parked polls" >&2
    exit 1
fi

say "building ($PROFILE)"
cargo build --profile "$PROFILE" --quiet --bin order-tracker --example cluster
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
case "$PROFILE" in
    dev) OUT=debug ;;
    *) OUT=$PROFILE ;;
esac
SERVER=${SERVER_BIN:-$TARGET/$OUT/order-tracker}
CLUSTER=$TARGET/$OUT/examples/cluster

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/order-tracker-cluster.XXXXXX")
PIDS=()
ADDRS=()
CHAOS_PID=
cleanup() {
    stop_chaos
    stop_instances
    store_close
    rm -rf "$SCRATCH"
}
trap cleanup EXIT

# Starts instance $1 on STORE_URL and adds its pid to PIDS and its address
# to ADDRS. It listens on port 0 and the kernel picks a free port, which the
# instance logs: a fixed port could be taken by someone else's server. The
# instances start one after the other, so one runs the migrations first.
start_instance() {
    local log=$SCRATCH/instance.$1.log addr pid
    # Emptied here, not by the child's redirection, which may happen after
    # the loop below has read the address of the last phase's instance.
    : >"$log"
    # Warnings only, but the line saying where it listens: at info the server
    # logs every change, which is not what is measured here.
    RUST_LOG=warn,order_tracker::app=info "$SERVER" --addr 127.0.0.1:0 --no-sample-orders \
        --database-url "$STORE_URL" >>"$log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 600); do
        addr=$(sed -n 's/.*listening addr=\([0-9.:]*\).*/\1/p' "$log")
        if [ -n "$addr" ]; then
            ADDRS+=("$addr")
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    echo "instance $1 did not start:" >&2
    cat "$log" >&2
    exit 1
}

# Stops every instance and waits (bounded) for them to exit.
stop_instances() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
    ADDRS=()
}

# Every CHAOS_INTERVAL seconds, terminates the matching backends of the
# phase's database and appends how many to $1 ("fail" if psql failed).
chaos_loop() {
    local sql="SELECT count(*) FROM (SELECT pg_terminate_backend(pid) AS gone
               FROM pg_stat_activity
               WHERE datname = '$STORE_DB' AND pid <> pg_backend_pid() AND ($CHAOS_WHERE)) t
               WHERE gone"
    while sleep "$CHAOS_INTERVAL"; do
        psql "$PG_ADMIN_URL" -qAt -c "$sql" >>"$1" 2>/dev/null || echo fail >>"$1"
    done
}

stop_chaos() {
    if [ -n "$CHAOS_PID" ]; then
        kill "$CHAOS_PID" 2>/dev/null || true
        wait "$CHAOS_PID" 2>/dev/null || true
        CHAOS_PID=
    fi
}

# run PHASE PUBLISHERS OUT
run() {
    local phase=$1 out=$3 i addr_args=() write_to=()
    [ -z "$WRITE_TO" ] || write_to=(--write-to "$WRITE_TO")
    store_open postgres
    for i in $(seq "$INSTANCES"); do
        start_instance "$i"
    done
    for addr in "${ADDRS[@]}"; do
        addr_args+=(--addr "$addr")
    done
    if [ "$phase" = chaos ]; then
        : >"$SCRATCH/chaos"
        chaos_loop "$SCRATCH/chaos" &
        CHAOS_PID=$!
    fi
    if ! timeout "$RUN_LIMIT" "$CLUSTER" run "${addr_args[@]}" --orders "$ORDERS" \
        --per-order "$PER_ORDER" --publishers "$2" --duration "$DURATION" --grace "$GRACE" \
        --poll-timeout "$POLL_TIMEOUT" --seed "$SEED" "${write_to[@]}" --out "$out" >/dev/null; then
        echo "the phase failed; the instances' logs end with:" >&2
        for i in $(seq "$INSTANCES"); do
            echo "--- instance $i" >&2
            tail -20 "$SCRATCH/instance.$i.log" >&2
        done
        exit 1
    fi
    if [ "$phase" = chaos ]; then
        stop_chaos
        {
            echo "chaos_ticks $(wc -l <"$SCRATCH/chaos")"
            echo "chaos_terminated $(awk '/^[0-9]+$/ { n += $1 } END { print n + 0 }' "$SCRATCH/chaos")"
            echo "chaos_failures $(grep -c '^fail$' "$SCRATCH/chaos" || true)"
        } >>"$out"
    fi
    stop_instances
    store_close
}

PG_VERSION=$(psql "$PG_ADMIN_URL" -qAtc 'SHOW server_version' 2>/dev/null || echo '-')
echo "order-tracker cluster benchmark ($(git rev-parse --short HEAD)): $INSTANCES instance(s)" \
     "on one PostgreSQL $PG_VERSION; $ORDERS orders x $PER_ORDER polls per generation," \
     "changes for ${DURATION} s per phase, each to ${WRITE_TO:+instance }${WRITE_TO:-a random instance}," \
     "${GRACE} s grace; $(nproc) cores, $(uname -sr)"
echo "Chaos: every ${CHAOS_INTERVAL} s, pg_terminate_backend on the phase database's backends where $CHAOS_WHERE"
STATUS=0
for publishers in $PUBLISHERS; do
    QUIET_FILES=()
    CHAOS_FILES=()
    for round in $(seq "$ROUNDS"); do
        for phase in $PHASES; do
            say "$publishers publisher(s), round $round/$ROUNDS: $phase"
            out=$SCRATCH/$phase.$publishers.$round
            run "$phase" "$publishers" "$out"
            if [ "$phase" = chaos ]; then
                CHAOS_FILES+=("$out")
            else
                QUIET_FILES+=("$out")
            fi
        done
    done
    echo
    echo "## $publishers publisher(s), $ROUNDS round(s)"
    echo
    args=()
    [ ${#QUIET_FILES[@]} -eq 0 ] || args+=(--quiet "${QUIET_FILES[@]}")
    [ ${#CHAOS_FILES[@]} -eq 0 ] || args+=(--chaos "${CHAOS_FILES[@]}")
    "$CLUSTER" table "${args[@]}" || STATUS=1
done
exit "$STATUS"
