#!/usr/bin/env bash
# A throwaway PostgreSQL server for the store tests, on 127.0.0.1 and a free port.
#
#   scripts/postgres.sh         install if missing (Debian's postgresql, as root or with sudo),
#                               start (or reuse) the server, create the test database; the last
#                               line on stdout is CLUB_TEST_DATABASE_URL=...
#   scripts/postgres.sh stop    stop the server and remove its files
#   scripts/postgres.sh restart restart the running server (same port, data and password; for the
#                               fault tests), then print CLUB_TEST_DATABASE_URL=... as start does
#
# Run it again and it reuses the running server. The cluster lives in $CLUB_PG_DIR (default: a
# folder under /tmp); it is for tests only (fsync off). As root, the server runs as the
# `postgres` user (created if missing), since PostgreSQL refuses to run as root.
#
#   eval "$(scripts/postgres.sh | tail -n 1 | sed 's/^/export /')" && cargo test -p inference-club-examples
#
# Exit status 3: PostgreSQL is not installed and cannot be (not root, no sudo).
set -euo pipefail
# shellcheck source=lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

dir="${CLUB_PG_DIR:-/tmp/inference-club-postgres}"
data="$dir/data"
database="club_test"
superuser="postgres"

log() { printf 'postgres.sh: %s\n' "$*" >&2; }

# The newest /usr/lib/postgresql/VERSION/bin with the server's programs (a client-only install has
# that folder too, with psql but without them).
bindir() {
    local found
    for found in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
        if [[ -x "$found/pg_ctl" && -x "$found/initdb" && -x "$found/postgres" && -x "$found/psql" ]]; then
            printf '%s\n' "$found"
            return 0
        fi
    done
    return 0
}

# Runs a server command as the owner of the cluster (never as root).
as_owner() {
    if [[ "$(id -u)" -ne 0 ]]; then
        "$@"
    elif command -v runuser >/dev/null 2>&1; then
        runuser -u "$superuser" -- "$@"
    else
        su -s /bin/sh "$superuser" -c "$(printf '%q ' "$@")"
    fi
}

running() {
    [[ -n "$bin" && -f "$data/PG_VERSION" ]] && as_owner "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1
}

free_port() {
    local port
    for port in $(seq 54329 54429); do
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            printf '%s\n' "$port"
            return 0
        fi
    done
    log "no free port in 54329-54429"
    return 1
}

bin="$(bindir)"

if [[ "${1:-start}" == "stop" ]]; then
    if running; then
        as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >&2
        log "stopped"
    else
        log "not running"
    fi
    rm -rf "$dir"
    exit 0
fi
if [[ "${1:-start}" == "restart" ]]; then
    if ! running; then
        log "not running: nothing to restart"
        exit 1
    fi
    # pg_ctl restart starts the server again with the options it was started with.
    as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -m fast -w -t 60 restart >&2
    log "restarted"
    echo "CLUB_TEST_DATABASE_URL=postgres://$superuser:$(cat "$dir/password")@127.0.0.1:$(cat "$dir/port")/$database"
    exit 0
fi
if [[ "${1:-start}" != "start" ]]; then
    log "usage: $0 [start|stop|restart]"
    exit 2
fi

if [[ -z "$bin" ]]; then
    apt_install "the PostgreSQL tests" postgresql || exit $?
    # The package starts a cluster of its own on port 5432: not the one the tests use.
    apt_stop_services postgresql
    bin="$(bindir)"
    if [[ -z "$bin" ]]; then
        log "PostgreSQL's binaries not found after installing it"
        exit 1
    fi
fi

if [[ "$(id -u)" -eq 0 ]] && ! id "$superuser" >/dev/null 2>&1; then
    useradd --system --no-create-home --shell /usr/sbin/nologin "$superuser"
fi

if ! running; then
    rm -rf "$dir"
    mkdir -p "$dir"
    chmod 700 "$dir"
    head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$dir/password"
    free_port >"$dir/port"
    if [[ "$(id -u)" -eq 0 ]]; then
        chown -R "$superuser" "$dir"
    fi
    log "initdb in $data"
    as_owner "$bin/initdb" -D "$data" -U "$superuser" --pwfile="$dir/password" \
        --auth-local=trust --auth-host=scram-sha-256 --encoding=UTF8 --no-locale >/dev/null
    log "starting on 127.0.0.1:$(cat "$dir/port")"
    as_owner "$bin/pg_ctl" -D "$data" -l "$dir/server.log" -w -t 60 start -o \
        "-p $(cat "$dir/port") -k $dir -c listen_addresses=127.0.0.1 -c max_connections=400 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" >&2
fi

port="$(cat "$dir/port")"
password="$(cat "$dir/password")"
psql_bin="$bin/psql"
export PGPASSWORD="$password"
if [[ "$("$psql_bin" -h 127.0.0.1 -p "$port" -U "$superuser" -d postgres -tAc \
    "SELECT 1 FROM pg_database WHERE datname = '$database'")" != "1" ]]; then
    "$psql_bin" -h 127.0.0.1 -p "$port" -U "$superuser" -d postgres -qc "CREATE DATABASE $database" >&2
fi
echo "CLUB_TEST_DATABASE_URL=postgres://$superuser:$password@127.0.0.1:$port/$database"
