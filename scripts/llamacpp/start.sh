#!/usr/bin/env bash
# Start llama-cpp-python's OpenAI-compatible server on the tiny model, in the
# background, bound to 127.0.0.1.
#
#   scripts/llamacpp/start.sh [PORT]      # PORT also from CLUB_LLAMACPP_PORT;
#                                         # default: a free port
#   scripts/llamacpp/start.sh --stop      # same as stop.sh
#
# Runs setup.sh first if the venv or the model is missing (exit status 3 if
# setup.sh cannot install its Debian packages: not root, no sudo). Waits (bounded by
# CLUB_LLAMACPP_START_TIMEOUT seconds, default 90) until GET /v1/models
# answers, then prints as its LAST stdout line:
#   CLUB_TEST_LLAMACPP_URL=http://127.0.0.1:PORT/v1
# Pid file and log: target/llamacpp/server.{pid,log} (override the directory
# with CLUB_LLAMACPP_RUN_DIR). Served model id: tiny-llama.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [[ ${1:-} == --stop ]]; then
    exec "$here/stop.sh"
fi

# shellcheck source=common.sh
source "$here/common.sh"

log() { printf '[llamacpp start] %s\n' "$*" >&2; }
die_with_log() {
    log "$*"
    if [[ -f $LLAMACPP_LOG_FILE ]]; then
        log "---- last 40 lines of $LLAMACPP_LOG_FILE ----"
        tail -n 40 "$LLAMACPP_LOG_FILE" >&2 || true
        log "---- end of log ----"
    fi
    exit 1
}

port="${1:-${CLUB_LLAMACPP_PORT:-}}"
timeout_s="${CLUB_LLAMACPP_START_TIMEOUT:-90}"
n_ctx="${CLUB_LLAMACPP_N_CTX:-1024}"
venv_py="$LLAMACPP_VENV/bin/python"
url_file="$LLAMACPP_RUN_DIR/server.url"

if [[ ! -x $venv_py || ! -s $LLAMACPP_MODEL ]]; then
    log "venv or model missing; running setup.sh"
    "$here/setup.sh" >&2 || exit $? # 3: its Debian packages cannot be installed
fi

mkdir -p "$LLAMACPP_RUN_DIR"

# Already running (started by this checkout)? Reuse it if it still answers.
if [[ -f $LLAMACPP_PID_FILE ]]; then
    old_pid="$(cat "$LLAMACPP_PID_FILE")"
    if kill -0 "$old_pid" 2>/dev/null; then
        old_url="$(cat "$url_file" 2>/dev/null || true)"
        if [[ -n $old_url ]] && curl -fsS -m 5 -o /dev/null "$old_url/models"; then
            if [[ -z $port || $old_url == "http://127.0.0.1:$port/v1" ]]; then
                log "already running (pid $old_pid)"
                echo "CLUB_TEST_LLAMACPP_URL=$old_url"
                exit 0
            fi
        fi
        log "a server (pid $old_pid) is running with other settings; run stop.sh first"
        exit 1
    fi
    rm -f "$LLAMACPP_PID_FILE" "$url_file"
fi

# Pick a free port, or check that the requested one is free (so that another
# server already answering there is not mistaken for ours).
port="$("$venv_py" - "${port:-0}" <<'PY'
import socket, sys
s = socket.socket()
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError as e:
    sys.exit(f"[llamacpp start] port {sys.argv[1]} on 127.0.0.1 is not free: {e}")
print(s.getsockname()[1])
PY
)"
base_url="http://127.0.0.1:$port/v1"

log "starting server on 127.0.0.1:$port (log: $LLAMACPP_LOG_FILE)"
: >"$LLAMACPP_LOG_FILE"
# setsid: own session, so the server outlives this script's terminal/job.
setsid "$venv_py" -m llama_cpp.server \
    --host 127.0.0.1 \
    --port "$port" \
    --model "$LLAMACPP_MODEL" \
    --model_alias "$LLAMACPP_MODEL_ALIAS" \
    --n_ctx "$n_ctx" \
    --interrupt_requests False \
    </dev/null >>"$LLAMACPP_LOG_FILE" 2>&1 &
pid=$!
echo "$pid" >"$LLAMACPP_PID_FILE"

deadline=$((SECONDS + timeout_s))
until curl -fsS -m 2 -o /dev/null "$base_url/models" 2>/dev/null; do
    if ! kill -0 "$pid" 2>/dev/null; then
        rm -f "$LLAMACPP_PID_FILE"
        die_with_log "server (pid $pid) exited before answering"
    fi
    if ((SECONDS >= deadline)); then
        kill "$pid" 2>/dev/null || true
        rm -f "$LLAMACPP_PID_FILE"
        die_with_log "server (pid $pid) did not answer GET $base_url/models within ${timeout_s}s; killed it"
    fi
    sleep 0.5
done

echo "$base_url" >"$url_file"
log "up: pid $pid, model id '$LLAMACPP_MODEL_ALIAS'"
echo "CLUB_TEST_LLAMACPP_URL=$base_url"
