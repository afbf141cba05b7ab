#!/usr/bin/env bash
# Stop the server started by start.sh (pid from target/llamacpp/server.pid).
# Sends SIGTERM, waits up to 10 s, then SIGKILL. Succeeds if nothing runs.
set -euo pipefail

# shellcheck source=common.sh
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

log() { printf '[llamacpp stop] %s\n' "$*" >&2; }

if [[ ! -f $LLAMACPP_PID_FILE ]]; then
    log "no pid file ($LLAMACPP_PID_FILE): nothing to stop"
    exit 0
fi
pid="$(cat "$LLAMACPP_PID_FILE")"
if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 40); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    log "stopped pid $pid"
else
    log "pid $pid not running"
fi
rm -f "$LLAMACPP_PID_FILE" "$LLAMACPP_RUN_DIR/server.url"
