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
# answers, then prints
#   CLUB_TEST_LLAMACPP_EMBED_MODEL=tiny-llama-embed
# and as its LAST stdout line:
#   CLUB_TEST_LLAMACPP_URL=http://127.0.0.1:PORT/v1
# Pid file, log and the server's config file: target/llamacpp/server.{pid,log},
# config.json (override the directory with CLUB_LLAMACPP_RUN_DIR). Served model
# ids: tiny-llama (generation; the default for any other name) and
# tiny-llama-embed (the same weights loaded with `embedding: true` and mean
# pooling, for /v1/embeddings). The server holds one model at a time and swaps
# on demand (the file is 1.7 MB: milliseconds).
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

if [[ ! -x $venv_py || ! -s $LLAMACPP_MODEL || ! -s $LLAMACPP_EMBED_MODEL ]]; then
    log "venv or model missing; running setup.sh"
    "$here/setup.sh" >&2 || exit $? # 3: its Debian packages cannot be installed
fi

mkdir -p "$LLAMACPP_RUN_DIR"

# Already running (started by this checkout)? Reuse it if it still answers.
if [[ -f $LLAMACPP_PID_FILE ]]; then
    old_pid="$(cat "$LLAMACPP_PID_FILE")"
    if kill -0 "$old_pid" 2>/dev/null; then
        old_url="$(cat "$url_file" 2>/dev/null || true)"
        if [[ -n $old_url ]] && old_models="$(curl -fsS -m 5 "$old_url/models")"; then
            if [[ -z $port || $old_url == "http://127.0.0.1:$port/v1" ]] &&
                [[ $old_models == *"\"$LLAMACPP_EMBED_MODEL_ALIAS\""* ]]; then
                log "already running (pid $old_pid)"
                echo "CLUB_TEST_LLAMACPP_EMBED_MODEL=$LLAMACPP_EMBED_MODEL_ALIAS"
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

# Two models in one server (llama-cpp-python's --config_file): the first is the
# default, for generation; the second answers /v1/embeddings.
config_file="$LLAMACPP_RUN_DIR/config.json"
"$venv_py" - "$config_file" "$port" "$n_ctx" \
    "$LLAMACPP_MODEL" "$LLAMACPP_MODEL_ALIAS" \
    "$LLAMACPP_EMBED_MODEL" "$LLAMACPP_EMBED_MODEL_ALIAS" <<'PY'
import json, sys
path, port, n_ctx, model, alias, embed_model, embed_alias = sys.argv[1:]
config = {
    "host": "127.0.0.1",
    "port": int(port),
    "interrupt_requests": False,
    "models": [
        {"model": model, "model_alias": alias, "n_ctx": int(n_ctx)},
        {"model": embed_model, "model_alias": embed_alias, "n_ctx": int(n_ctx), "embedding": True},
    ],
}
with open(path, "w") as f:
    json.dump(config, f, indent=2)
PY

log "starting server on 127.0.0.1:$port (log: $LLAMACPP_LOG_FILE, config: $config_file)"
: >"$LLAMACPP_LOG_FILE"
# setsid: own session, so the server outlives this script's terminal/job.
setsid "$venv_py" -m llama_cpp.server --config_file "$config_file" \
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
log "up: pid $pid, model ids '$LLAMACPP_MODEL_ALIAS' and '$LLAMACPP_EMBED_MODEL_ALIAS' (embeddings)"
echo "CLUB_TEST_LLAMACPP_EMBED_MODEL=$LLAMACPP_EMBED_MODEL_ALIAS"
echo "CLUB_TEST_LLAMACPP_URL=$base_url"
