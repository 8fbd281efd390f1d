# Sourced by the benchmark scripts: one fresh store per server start, and its
# removal afterwards, so no run sees another's orders and nothing is left
# behind in the repository or the database server.
#
#   store_open KIND   sets STORE_URL for --database-url. KIND is one of
#                     memory   memory: (keeps nothing)
#                     sqlite   a new file in $SCRATCH (WAL, synchronous=FULL)
#                     postgres a new database on $PG_ADMIN_URL's server
#   store_close       removes what store_open made (file or database)
#
# Needs SCRATCH (a directory the caller removes at exit). PG_ADMIN_URL is
# where CREATE and DROP DATABASE run (postgres://postgres@127.0.0.1:5432/test);
# the server gets the same URL with the new database's name. Call
# store_close from the caller's EXIT trap too, so an interrupted run drops
# its database.

PG_ADMIN_URL=${PG_ADMIN_URL:-postgres://postgres@127.0.0.1:5432/test}
STORE_URL=
# What store_close must remove: a SQLite file or a PostgreSQL database.
STORE_FILE=
STORE_DB=
STORE_SEQ=0

# Fails early, before any build or run, if KIND cannot be used here.
store_check() {
    case "$1" in
        memory | sqlite) ;;
        postgres)
            if ! command -v psql >/dev/null; then
                echo "STORE=postgres needs psql (apt-get install postgresql-client)" >&2
                return 1
            fi
            if ! psql "$PG_ADMIN_URL" -qAtc 'SELECT 1' >/dev/null; then
                echo "STORE=postgres: cannot connect to $PG_ADMIN_URL (set PG_ADMIN_URL)" >&2
                return 1
            fi
            ;;
        *)
            echo "unknown store '$1': use memory, sqlite or postgres" >&2
            return 1
            ;;
    esac
}

store_open() {
    STORE_SEQ=$((STORE_SEQ + 1))
    case "$1" in
        memory) STORE_URL=memory: ;;
        sqlite)
            STORE_FILE=$SCRATCH/store.$STORE_SEQ.db
            rm -f "$STORE_FILE" "$STORE_FILE-wal" "$STORE_FILE-shm"
            STORE_URL=sqlite:$STORE_FILE
            ;;
        postgres)
            STORE_DB=order_tracker_bench_$$_$STORE_SEQ
            psql "$PG_ADMIN_URL" -qAt -v ON_ERROR_STOP=1 \
                -c "CREATE DATABASE $STORE_DB" >/dev/null
            STORE_URL=${PG_ADMIN_URL%/*}/$STORE_DB
            ;;
        *)
            echo "unknown store '$1'" >&2
            return 1
            ;;
    esac
}

store_close() {
    if [ -n "$STORE_FILE" ]; then
        rm -f "$STORE_FILE" "$STORE_FILE-wal" "$STORE_FILE-shm"
        STORE_FILE=
    fi
    if [ -n "$STORE_DB" ]; then
        # FORCE: a server that did not stop in time must not keep the
        # database alive.
        psql "$PG_ADMIN_URL" -qAt -c "DROP DATABASE IF EXISTS $STORE_DB WITH (FORCE)" >/dev/null ||
            echo "could not drop database $STORE_DB" >&2
        STORE_DB=
    fi
    STORE_URL=
}
