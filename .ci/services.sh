#!/usr/bin/env bash
# The long-running PostgreSQL and Redis used by `make run` (tests start their own throwaway
# servers, see tests/servers.py). Both are private to this checkout, live in .data/ and listen on
# 127.0.0.1 only; the distribution's system services are never used.
#
#   .ci/services.sh start    initialise (first time) and start both; idempotent
#   .ci/services.sh stop     stop both (PostgreSQL: fast shutdown; Redis: SHUTDOWN, AOF synced)
#   .ci/services.sh status   exit 0 if both run, 3 otherwise
#   .ci/services.sh env      print `export BULKIO_...=...` lines: eval "$(.ci/services.sh env)"
#
# Environment: BULKIO_PG_PORT (default 54329), BULKIO_REDIS_PORT (default 63799),
#              BULKIO_DATA_DIR (default <repo>/.data), BULKIO_PG_BINDIR (default: see pg_bindir).
#
# PostgreSQL refuses to run as root: when this script runs as root, the cluster is owned by and
# runs as the `postgres` system user (created by the Debian package) or, failing that, a `bulkio`
# system user created here. Every directory above .data/ must then be traversable by that user.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$PWD
DATA=${BULKIO_DATA_DIR:-$ROOT/.data}
PG_PORT=${BULKIO_PG_PORT:-54329}
REDIS_PORT=${BULKIO_REDIS_PORT:-63799}
PGDATA_DIR=$DATA/pg
RUN_DIR=$DATA/run # unix socket + server log of PostgreSQL (owned by the PostgreSQL user)
REDIS_DIR=$DATA/redis

log() { printf '[services] %s\n' "$*" >&2; }
die() {
    printf '[services] ERROR: %s\n' "$*" >&2
    exit 1
}

# -------------------------------------------------------------------------------------- helpers

pg_bindir() {
    if [[ -n ${BULKIO_PG_BINDIR:-} ]]; then
        echo "$BULKIO_PG_BINDIR"
        return
    fi
    # An existing cluster must be run by its own major version.
    if [[ -f $PGDATA_DIR/PG_VERSION ]]; then
        local v
        v=$(<"$PGDATA_DIR/PG_VERSION")
        if [[ -x /usr/lib/postgresql/$v/bin/postgres ]]; then
            echo "/usr/lib/postgresql/$v/bin"
            return
        fi
    fi
    local d
    if command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir 2>/dev/null || true)
        if [[ -n $d && -x $d/initdb ]]; then
            echo "$d"
            return
        fi
    fi
    d=$(compgen -G '/usr/lib/postgresql/*/bin/initdb' | sed 's,/initdb$,,' | sort -t/ -k5,5V | tail -n1 || true)
    if [[ -n $d ]]; then
        echo "$d"
        return
    fi
    d=$(command -v initdb 2>/dev/null || true)
    [[ -n $d ]] || die "PostgreSQL server binaries not found (run .ci/setup.sh, or set BULKIO_PG_BINDIR)"
    dirname "$d"
}

# The OS user PostgreSQL runs as ("" = the current user).
pg_os_user() {
    [[ $(id -u) -eq 0 ]] || return 0
    if id -u postgres >/dev/null 2>&1; then
        echo postgres
    else
        if ! id -u bulkio >/dev/null 2>&1; then
            log "creating system user 'bulkio' to run PostgreSQL (it refuses to run as root)"
            useradd --system --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin bulkio
        fi
        echo bulkio
    fi
}

as_pg() {
    if [[ -n $PG_USER ]]; then
        (cd / && runuser -u "$PG_USER" -- "$@")
    else
        "$@"
    fi
}

pg_running() { as_pg "$BINDIR/pg_ctl" status -D "$PGDATA_DIR" >/dev/null 2>&1; }

redis_pid() {
    local pidfile=$REDIS_DIR/redis.pid pid
    [[ -f $pidfile ]] || return 1
    pid=$(<"$pidfile")
    [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

redis_cli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# ------------------------------------------------------------------------------------ PostgreSQL

pg_write_conf() {
    # Regenerated on every start so that a changed BULKIO_PG_PORT (or a new default) applies.
    local conf=$PGDATA_DIR/bulkio.conf
    cat >"$conf" <<EOF
# Written by .ci/services.sh on every start: edit the script, not this file.
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$RUN_DIR'
max_connections = 100

# Bulk-load settings. Durability is kept: fsync, synchronous_commit and full_page_writes stay on.
shared_buffers = 2GB
max_wal_size = 16GB
checkpoint_timeout = 30min
wal_level = minimal
max_wal_senders = 0
fsync = on
synchronous_commit = on
full_page_writes = on
work_mem = 64MB
maintenance_work_mem = 1GB
EOF
    [[ -z $PG_USER ]] || chown "$PG_USER:" "$conf"
}

pg_init() {
    log "initialising PostgreSQL cluster in $PGDATA_DIR (${PG_USER:-$(id -un)}, $("$BINDIR/postgres" --version))"
    mkdir -p "$PGDATA_DIR" "$RUN_DIR"
    if [[ -n $PG_USER ]]; then
        chown "$PG_USER:" "$PGDATA_DIR" "$RUN_DIR"
        as_pg test -x "$RUN_DIR" -a -w "$RUN_DIR" ||
            die "user '$PG_USER' cannot reach $DATA (a parent directory is not traversable); set BULKIO_DATA_DIR to a directory outside it, e.g. /var/tmp/bulkio"
    fi
    chmod 700 "$PGDATA_DIR"
    chmod 755 "$RUN_DIR"
    as_pg "$BINDIR/initdb" -D "$PGDATA_DIR" -U postgres -A trust -E UTF8 --no-locale >"$DATA/initdb.log" 2>&1 ||
        {
            cat "$DATA/initdb.log" >&2
            die "initdb failed"
        }
    cat >>"$PGDATA_DIR/postgresql.conf" <<'EOF'

# bulkio: settings managed by .ci/services.sh
include_if_exists = 'bulkio.conf'
EOF
    # Trust on the unix socket and on loopback only (the server listens on 127.0.0.1 anyway).
    cat >"$PGDATA_DIR/pg_hba.conf" <<'EOF'
# TYPE  DATABASE  USER  ADDRESS       METHOD
local   all       all                 trust
host    all       all   127.0.0.1/32  trust
host    all       all   ::1/128       trust
EOF
    [[ -z $PG_USER ]] || chown "$PG_USER:" "$PGDATA_DIR/pg_hba.conf"
}

pg_start() {
    [[ -f $PGDATA_DIR/PG_VERSION ]] || pg_init
    mkdir -p "$RUN_DIR"
    [[ -z $PG_USER ]] || chown "$PG_USER:" "$RUN_DIR"
    if pg_running; then
        log "PostgreSQL already running ($(head -n1 "$PGDATA_DIR/postmaster.pid"))"
    else
        pg_write_conf
        log "starting PostgreSQL on 127.0.0.1:$PG_PORT"
        if ! as_pg "$BINDIR/pg_ctl" start -D "$PGDATA_DIR" -l "$RUN_DIR/postgresql.log" -w -t 120 >/dev/null; then
            tail -n 30 "$RUN_DIR/postgresql.log" >&2 || true
            die "PostgreSQL failed to start (log: $RUN_DIR/postgresql.log)"
        fi
    fi
    # Role and database (idempotent).
    "$BINDIR/psql" -X -q -v ON_ERROR_STOP=1 -h "$RUN_DIR" -p "$PG_PORT" -U postgres -d postgres <<'EOF' >/dev/null
SELECT 'CREATE ROLE bulkio LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'bulkio') \gexec
ALTER ROLE bulkio LOGIN PASSWORD 'bulkio';
SELECT 'CREATE DATABASE bulkio OWNER bulkio'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = 'bulkio') \gexec
-- Set-based reference checks (engine/references.py) skip the per-row FK triggers of a COPY
-- after locking the parents themselves; PostgreSQL 15+ lets a non-superuser do that.
SELECT 'GRANT SET ON PARAMETER session_replication_role TO bulkio'
WHERE current_setting('server_version_num')::int >= 150000 \gexec
EOF
}

pg_stop() {
    if [[ -f $PGDATA_DIR/PG_VERSION ]] && pg_running; then
        log "stopping PostgreSQL"
        as_pg "$BINDIR/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -t 120 >/dev/null
    else
        log "PostgreSQL not running"
    fi
}

# ----------------------------------------------------------------------------------------- Redis

redis_start() {
    command -v redis-server >/dev/null 2>&1 || die "redis-server not found (run .ci/setup.sh)"
    mkdir -p "$REDIS_DIR"
    local pid
    if pid=$(redis_pid); then
        log "Redis already running (pid $pid)"
        return 0
    fi
    cat >"$REDIS_DIR/redis.conf" <<EOF
# Written by .ci/services.sh on every start: edit the script, not this file.
bind 127.0.0.1
port $REDIS_PORT
protected-mode yes
daemonize yes
pidfile $REDIS_DIR/redis.pid
logfile $REDIS_DIR/redis.log
dir $REDIS_DIR
appendonly yes
appendfsync everysec
EOF
    log "starting Redis on 127.0.0.1:$REDIS_PORT"
    redis-server "$REDIS_DIR/redis.conf"
    local i
    for ((i = 0; i < 100; i++)); do
        if [[ $(redis_cli ping 2>/dev/null) == PONG ]]; then
            return 0
        fi
        sleep 0.1
    done
    tail -n 30 "$REDIS_DIR/redis.log" >&2 || true
    die "Redis did not answer PING (log: $REDIS_DIR/redis.log)"
}

redis_stop() {
    local pid i
    if ! pid=$(redis_pid); then
        log "Redis not running"
        return 0
    fi
    log "stopping Redis (pid $pid)"
    redis_cli shutdown >/dev/null 2>&1 || kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 300; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    die "Redis (pid $pid) did not stop"
}

# ------------------------------------------------------------------------------------------ main

cmd=${1:-}
case $cmd in
    start)
        BINDIR=$(pg_bindir)
        PG_USER=$(pg_os_user)
        pg_start
        redis_start
        log "ready: $("$0" env | tr '\n' ' ')"
        ;;
    stop)
        BINDIR=$(pg_bindir)
        PG_USER=$(pg_os_user)
        pg_stop
        redis_stop
        ;;
    status)
        BINDIR=$(pg_bindir)
        PG_USER=$(pg_os_user)
        rc=0
        if [[ -f $PGDATA_DIR/PG_VERSION ]] && pg_running; then
            echo "postgresql: running (127.0.0.1:$PG_PORT, data $PGDATA_DIR)"
        else
            echo "postgresql: stopped"
            rc=3
        fi
        if pid=$(redis_pid); then
            echo "redis: running (127.0.0.1:$REDIS_PORT, pid $pid, data $REDIS_DIR)"
        else
            echo "redis: stopped"
            rc=3
        fi
        exit $rc
        ;;
    env)
        echo "export BULKIO_DATABASE_URL=postgresql://bulkio:bulkio@127.0.0.1:$PG_PORT/bulkio"
        echo "export BULKIO_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0"
        ;;
    *)
        sed -n '2,18p' "$0" >&2
        exit 2
        ;;
esac
