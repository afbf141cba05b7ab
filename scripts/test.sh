#!/usr/bin/env bash
# Runs every test of the workspace with the real services the tests use:
#   - a llama.cpp server (llama-cpp-python) on a tiny random-weight model, built and cached on first use;
#   - a throwaway PostgreSQL cluster on 127.0.0.1;
#   - a Python venv with the official OpenAI SDK, for the SDK compatibility test;
#   - nats-server and nginx (Debian's, found on PATH or in /usr/sbin) for the cluster tests.
# The servers are started here and stopped on exit; the tests find them through CLUB_TEST_* variables.
# Set CLUB_TEST_NO_SERVICES=1 to run without them (the tests that need them say loudly that they skip).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

log() { printf '[test] %s\n' "$*" >&2; }

stop_services() {
    [[ -x scripts/llamacpp/stop.sh ]] && scripts/llamacpp/stop.sh >/dev/null 2>&1 || true
    [[ -x scripts/postgres.sh ]] && scripts/postgres.sh stop >/dev/null 2>&1 || true
}

if [[ -z ${CLUB_TEST_NO_SERVICES:-} ]]; then
    trap stop_services EXIT
    if [[ -x scripts/llamacpp/start.sh ]]; then
        log "starting the llama.cpp server (the first run builds it: a few minutes)"
        line="$(scripts/llamacpp/start.sh | tail -n 1)"
        export "${line?}"
        log "$line"
    fi
    log "preparing the OpenAI Python SDK venv"
    line="$(scripts/python-sdk.sh | tail -n 1)"
    export "${line?}"
    if [[ -x scripts/browser.sh ]]; then
        log "locating Chromium and chromedriver for the browser tests"
        while IFS= read -r line; do export "${line?}"; done < <(scripts/browser.sh | tail -n 2)
    fi
    # The cluster tests (examples/tests/cluster.rs) run Debian's nats-server and nginx
    # (.ci/run installs them).
    for tool in CLUB_TEST_NATS_SERVER:nats-server CLUB_TEST_NGINX:nginx; do
        var="${tool%%:*}"
        name="${tool#*:}"
        if [[ -z ${!var:-} ]]; then
            path="$(command -v "$name" || true)"
            if [[ -z "$path" && -x "/usr/sbin/$name" ]]; then path="/usr/sbin/$name"; fi
            if [[ -n "$path" ]]; then
                export "$var=$path"
                log "$var=$path"
            else
                log "no $name: the cluster tests will skip"
            fi
        fi
    done
    if [[ -x scripts/postgres.sh ]]; then
        log "starting PostgreSQL"
        line="$(scripts/postgres.sh | tail -n 1)"
        export "${line?}"
        log "${line%%://*}://…"
    fi
fi

cargo test --workspace --all-targets "$@"
cargo test --workspace --doc "$@"
