#!/usr/bin/env bash
# Runs every test of the workspace with the real services the tests use:
#   - a llama.cpp server (llama-cpp-python) on a tiny random-weight model, built and cached on first use;
#   - a throwaway PostgreSQL cluster on 127.0.0.1;
#   - a Python venv with the official OpenAI SDK, for the SDK compatibility test;
#   - the official OpenAI Node SDK (and Debian's nodejs and npm when node is missing), for the same;
#   - Debian's chromium and chromium-driver, for the browser tests;
#   - Debian's nats-server and nginx, for the cluster tests.
# Each comes from a script beside this one, which installs what it needs from Debian's packages
# when missing (as root or with sudo: scripts/lib/apt.sh) or from PyPI. The servers are started
# here and stopped on exit; the tests find everything through CLUB_TEST_* variables.
# What cannot be installed (not root, no sudo) is named loudly, and the tests that need it skip and
# say so; any other failure to set a service up stops the run.
# Set CLUB_TEST_NO_SERVICES=1 to run without them (the tests that need them say loudly that they skip).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=lib/apt.sh
source scripts/lib/apt.sh

log() { printf '[test] %s\n' "$*" >&2; }

stop_services() {
    scripts/llamacpp/stop.sh >/dev/null 2>&1 || true
    scripts/postgres.sh stop >/dev/null 2>&1 || true
    rm -rf "${CLUB_APT_STATE:-}"
}

# Runs a service's script ("$@") and exports the CLUB_TEST_*=... lines it prints. If the script
# cannot install what the service needs ($APT_CANNOT), goes on without it; any other failure ends
# the run.
start_service() {
    local what="$1" output status=0 line
    shift
    log "$what"
    output="$("$@")" || status=$?
    if [[ $status -eq $APT_CANNOT ]]; then
        unavailable+=("$1")
        return 0
    elif [[ $status -ne 0 ]]; then
        log "$* FAILED (exit $status)"
        exit "$status"
    fi
    while IFS= read -r line; do
        if [[ $line =~ ^CLUB_TEST_[A-Z_]+= ]]; then
            export "${line?}"
            if [[ $line == CLUB_TEST_DATABASE_URL=* ]]; then
                log "${line%%://*}://…" # it holds a password
            else
                log "$line"
            fi
        fi
    done <<<"$output"
}

unavailable=()
if [[ -z ${CLUB_TEST_NO_SERVICES:-} ]]; then
    # One `apt-get update` at most for all that the scripts install.
    CLUB_APT_STATE="$(mktemp -d)"
    export CLUB_APT_STATE
    trap stop_services EXIT
    start_service "starting the llama.cpp server (the first run builds it: a few minutes)" scripts/llamacpp/start.sh
    start_service "preparing the OpenAI Python SDK venv" scripts/python-sdk.sh
    start_service "installing the OpenAI Node SDK" scripts/node-sdk.sh
    start_service "locating Chromium and chromedriver for the browser tests" scripts/browser.sh
    start_service "locating nats-server and nginx for the cluster tests" scripts/cluster-tools.sh
    start_service "starting PostgreSQL" scripts/postgres.sh
    if [[ ${#unavailable[@]} -gt 0 ]]; then
        apt_loud "NOT SET UP: ${unavailable[*]} (their packages cannot be installed: not root, no sudo;" \
            "the messages above name them). The tests that need them skip and say so."
    fi
fi

cargo test --workspace --all-targets "$@"
cargo test --workspace --doc "$@"
