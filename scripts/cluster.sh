#!/usr/bin/env bash
# A local Inference Club cluster on 127.0.0.1: PostgreSQL (a server of its own, through
# scripts/postgres.sh, database `club_cluster`), nats-server, three `club-coordinator serve --nats`
# replicas and nginx in front of them (scripts/nginx-cluster.conf: round-robin, node links passed
# through, streams unbuffered).
#
#   scripts/cluster.sh [start]   start everything (or reuse what runs), then print the URL, a key
#                                with every scope, and how to link a node and chat
#   scripts/cluster.sh status    what runs, with pids and addresses
#   scripts/cluster.sh stop      stop everything it started and remove its state
#
# Environment:
#   CLUB_CLUSTER_DIR   state: pids, logs, configuration (default: a folder under /tmp)
#   CLUB_BIN_DIR       a folder with built club-coordinator (default: build it with
#                      `cargo build --release -p inference-club-examples --bins`)
#   CLUB_CLUSTER_PORT  nginx's port (default: the first free one from 8080)
#   CLUB_DRAIN_SECS    how long a replica drains on stop (default 10)
#
# nats-server and nginx come from Debian's packages `nats-server` and `nginx-light`, installed
# when missing (as root or with sudo) by scripts/cluster-tools.sh. Each runs in the foreground of
# its own session, with its own configuration under the state folder; the system's services are
# stopped after installing and not used.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

dir="${CLUB_CLUSTER_DIR:-/tmp/inference-club-cluster}"
replicas=3
database="club_cluster"
member="cluster-admin"

log() { printf 'cluster.sh: %s\n' "$*" >&2; }

# Whether process $1 runs (a zombie waiting for its reaper does not).
running() {
    local state=""
    kill -0 "$1" 2>/dev/null || return 1
    if [[ -r "/proc/$1/stat" ]]; then
        read -r _ _ state _ <"/proc/$1/stat" || true
    fi
    [[ "$state" != Z ]]
}

alive() { [[ -f "$1" ]] && running "$(cat "$1")"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Sets `port` to the first port from $1 that nothing listens on and that this script has not
# handed out yet.
taken=" ${CLUB_CLUSTER_PORT:-} "
free_port() {
    local candidate
    for candidate in $(seq "$1" $(($1 + 200))); do
        if [[ "$taken" != *" $candidate "* ]] && ! port_open "$candidate"; then
            taken="$taken$candidate "
            port="$candidate"
            return 0
        fi
    done
    log "no free port from $1"
    exit 1
}

# Waits up to $2 seconds until $1 (a command) succeeds.
wait_for() {
    local deadline=$((SECONDS + $2))
    until eval "$1"; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.1
    done
}

# Starts "$@" in the background, in a session of its own, with its output in $dir/$name.log and
# its pid in $dir/$name.pid.
launch() {
    local name="$1"
    shift
    NO_COLOR=1 setsid "$@" </dev/null >"$dir/$name.log" 2>&1 &
    echo $! >"$dir/$name.pid"
}

# Stops the process of pid file $1 (TERM, then KILL after $2 seconds).
stop_pid() {
    local file="$1" grace="$2" pid
    [[ -f "$file" ]] || return 0
    pid="$(cat "$file")"
    if running "$pid"; then
        kill -TERM "$pid" 2>/dev/null || true
        if ! wait_for "! running $pid" "$grace"; then
            log "$(basename "$file" .pid) did not stop within ${grace}s: killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$file"
}

stop() {
    stop_pid "$dir/nginx.pid" 10
    for i in $(seq 1 "$replicas"); do
        stop_pid "$dir/replica-$i.pid" $((${CLUB_DRAIN_SECS:-10} + 10))
    done
    stop_pid "$dir/nats.pid" 10
    if [[ -d "$dir/postgres" ]]; then
        CLUB_PG_DIR="$dir/postgres" scripts/postgres.sh stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
    log "stopped"
}

status() {
    local any=0 name
    for name in nats $(seq -f 'replica-%g' 1 "$replicas") nginx; do
        if alive "$dir/$name.pid"; then
            printf '%-10s running (pid %s) %s\n' "$name" "$(cat "$dir/$name.pid")" "$(cat "$dir/$name.address" 2>/dev/null || true)"
            any=1
        elif [[ -f "$dir/$name.pid" ]]; then
            printf '%-10s stopped (log: %s)\n' "$name" "$dir/$name.log"
        else
            printf '%-10s not started\n' "$name"
        fi
    done
    if [[ -f "$dir/postgres/port" ]]; then
        printf '%-10s 127.0.0.1:%s (database %s)\n' postgres "$(cat "$dir/postgres/port")" "$database"
    fi
    [[ -f "$dir/env" ]] && printf '\n%s\n' "$(cat "$dir/env")"
    ((any)) || return 3
}

summary() {
    local url key
    url="$(cat "$dir/url")"
    key="$(cat "$dir/key")"
    cat <<EOF

The cluster is up: nginx on $url in front of $replicas replicas (scripts/cluster.sh status).
Member $member, key with every scope (also in $dir/env):

  export CLUB_URL=$url CLUB_API_KEY=$key

Link a node (it may land on any replica):
  club-provider run --coordinator $url --key \$CLUB_API_KEY --manifest agent.yaml
Chat (through any replica):
  club chat -m MODEL "Hello"
  curl -sN $url/v1/chat/completions -H "authorization: Bearer \$CLUB_API_KEY" \\
       -H 'content-type: application/json' -d '{"model":"MODEL","stream":true,"messages":[{"role":"user","content":"Hello"}]}'
Stop it all: scripts/cluster.sh stop
EOF
    echo "$url"
}

start() {
    if alive "$dir/nginx.pid"; then
        log "already running (scripts/cluster.sh stop to start afresh)"
        summary
        return 0
    fi
    if [[ -d "$dir" ]]; then
        log "a cluster that is not whole is left in $dir: stopping it first"
        stop
    fi
    mkdir -p "$dir"
    chmod 755 "$dir"

    local nats nginx bin tools
    # One `apt-get update` at most for what cluster-tools.sh and postgres.sh install.
    if [[ -z ${CLUB_APT_STATE:-} ]]; then
        CLUB_APT_STATE="$(mktemp -d)"
        export CLUB_APT_STATE
        trap 'rm -rf "$CLUB_APT_STATE"' EXIT
    fi
    tools="$(scripts/cluster-tools.sh)"
    nats="$(sed -n 's/^CLUB_TEST_NATS_SERVER=//p' <<<"$tools")"
    nginx="$(sed -n 's/^CLUB_TEST_NGINX=//p' <<<"$tools")"
    if [[ -n "${CLUB_BIN_DIR:-}" ]]; then
        bin="$CLUB_BIN_DIR"
    else
        log "building the binaries (cargo build --release)"
        cargo build --release -p inference-club-examples --bins >&2
        bin="$root/target/release"
    fi
    if [[ ! -x "$bin/club-coordinator" ]]; then
        log "no club-coordinator in $bin"
        exit 1
    fi

    log "starting PostgreSQL"
    local line server url psql
    line="$(CLUB_PG_DIR="$dir/postgres" scripts/postgres.sh | tail -n 1)"
    server="${line#CLUB_TEST_DATABASE_URL=}"
    url="${server%/*}/$database"
    psql="$(ls /usr/lib/postgresql/*/bin/psql 2>/dev/null | sort -V | tail -n 1 || true)"
    psql="${psql:-psql}"
    if [[ "$("$psql" "${server%/*}/postgres" -tAc "SELECT 1 FROM pg_database WHERE datname = '$database'")" != "1" ]]; then
        "$psql" "${server%/*}/postgres" -qc "CREATE DATABASE $database" >&2
    fi
    "$bin/club-coordinator" --database "$url" migrate >&2
    "$bin/club-coordinator" --database "$url" user add "$member" >&2
    "$bin/club-coordinator" --database "$url" key create --user "$member" \
        --scope inference,provider,account --name cluster >"$dir/key"
    chmod 600 "$dir/key"

    local port nats_port
    free_port 4222
    nats_port="$port"
    log "starting nats-server on 127.0.0.1:$nats_port"
    # Messages up to 8 MB, so that any chat body a replica accepts (4 MiB by default) can
    # cross to the replica holding the node's link.
    echo "max_payload: 8MB" >"$dir/nats.conf"
    launch nats "$nats" -c "$dir/nats.conf" -a 127.0.0.1 -p "$nats_port"
    echo "nats://127.0.0.1:$nats_port" >"$dir/nats.address"
    if ! wait_for "port_open $nats_port" 10; then
        log "nats-server did not start: $(tail -n 5 "$dir/nats.log")"
        exit 1
    fi

    local upstreams="" i
    for i in $(seq 1 "$replicas"); do
        free_port 8081
        log "starting replica-$i on 127.0.0.1:$port"
        launch "replica-$i" "$bin/club-coordinator" --database "$url" serve \
            --listen "127.0.0.1:$port" --nats "nats://127.0.0.1:$nats_port" \
            --replica-id "replica-$i" --drain-secs "${CLUB_DRAIN_SECS:-10}" \
            --trusted-proxy 127.0.0.1
        echo "http://127.0.0.1:$port" >"$dir/replica-$i.address"
        upstreams="${upstreams}server 127.0.0.1:$port max_fails=0;
        "
    done
    for i in $(seq 1 "$replicas"); do
        if ! wait_for "grep -q 'listening on http://' '$dir/replica-$i.log' || ! alive '$dir/replica-$i.pid'" 30 \
            || ! alive "$dir/replica-$i.pid"; then
            log "replica-$i did not start: $(tail -n 5 "$dir/replica-$i.log")"
            exit 1
        fi
    done

    local listen="${CLUB_CLUSTER_PORT:-}"
    if [[ -z "$listen" ]]; then
        free_port 8080
        listen="$port"
    fi
    mkdir -p "$dir/nginx"
    UPSTREAMS="$upstreams" PREFIX="$dir/nginx" LISTEN="127.0.0.1:$listen" awk '
        { gsub(/@PREFIX@/, ENVIRON["PREFIX"]); gsub(/@LISTEN@/, ENVIRON["LISTEN"]);
          gsub(/@UPSTREAMS@/, ENVIRON["UPSTREAMS"]); print }' \
        scripts/nginx-cluster.conf >"$dir/nginx/nginx.conf"
    log "starting nginx on 127.0.0.1:$listen"
    launch nginx "$nginx" -p "$dir/nginx" -c "$dir/nginx/nginx.conf" -e stderr
    echo "http://127.0.0.1:$listen" >"$dir/nginx.address"
    if ! wait_for "port_open $listen" 10; then
        log "nginx did not start: $(tail -n 5 "$dir/nginx.log")"
        exit 1
    fi
    echo "http://127.0.0.1:$listen" >"$dir/url"
    printf 'CLUB_URL=%s\nCLUB_API_KEY=%s\n' "$(cat "$dir/url")" "$(cat "$dir/key")" >"$dir/env"
    chmod 600 "$dir/env"
    summary
}

case "${1:-start}" in
start) start ;;
stop) stop ;;
status) status ;;
*)
    log "usage: $0 [start|stop|status]"
    exit 2
    ;;
esac
