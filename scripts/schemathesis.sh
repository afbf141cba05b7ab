#!/usr/bin/env bash
# API fuzzing: schemathesis (from PyPI, pinned) against the coordinator's own /openapi.json.
# (Debian's python3-venv is installed first if python3 cannot make a venv, as root or with sudo.)
#
# Starts a coordinator on 127.0.0.1 with a throwaway SQLite database and a member whose key has
# every scope, runs schemathesis against it for a bounded time, and fails on any 5xx, any status
# the document does not list, and any response that does not match its schema.
#
#   scripts/schemathesis.sh
#   CLUB_SCHEMATHESIS_SECONDS=30 scripts/schemathesis.sh
#
# Leaves out `DELETE /api/v1/me` and `DELETE /api/v1/keys/{id}`: the first deletes the member whose
# key the run uses, the second revokes that key once the stateful phase has listed it, and every
# request after either is a 401 (the club API tests cover both). docs/fuzzing.md says more.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=lib/apt.sh
source "$root/scripts/lib/apt.sh"

log() { printf '[schemathesis] %s\n' "$*" >&2; }

version="4.32.5"
seconds="${CLUB_SCHEMATHESIS_SECONDS:-100}"
venv="$root/.venv-schemathesis"

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install "API fuzzing (schemathesis)" python3-venv || exit 1
fi
if [[ ! -x $venv/bin/schemathesis ]] || [[ "$("$venv/bin/schemathesis" --version 2>/dev/null)" != *"$version"* ]]; then
    log "creating $venv with schemathesis $version"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "schemathesis==$version" >&2
fi

log "building club-coordinator"
cargo build -q -p inference-club-examples --bin club-coordinator
coordinator="$root/target/debug/club-coordinator"

work="$(mktemp -d)"
pid=""
cleanup() {
    if [[ -n $pid ]]; then
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

database="sqlite:$work/club.db"
"$coordinator" --database "$database" migrate >/dev/null
"$coordinator" --database "$database" user add fuzzer >/dev/null
key="$("$coordinator" --database "$database" key create --user fuzzer --scope inference,provider,account | tail -n 1)"

# Limits that do not bind: the run measures the API, not the rate limiter.
"$coordinator" --database "$database" serve --listen 127.0.0.1:0 \
    --requests-per-minute 1000000 --key-creations-per-hour 1000000 --sign-in-per-minute 1000000 \
    >"$work/coordinator.log" 2>&1 &
pid=$!
url=""
for _ in $(seq 1 100); do
    url="$(grep -o 'listening on http://[0-9.:]*' "$work/coordinator.log" | head -n 1 | sed 's/listening on //' || true)"
    [[ -n $url ]] && break
    sleep 0.1
done
if [[ -z $url ]]; then
    cat "$work/coordinator.log" >&2
    log "the coordinator did not start"
    exit 1
fi
log "coordinator at $url; fuzzing for at most ${seconds} s"

status=0
"$venv/bin/schemathesis" run "$url/openapi.json" \
    --header "Authorization: Bearer $key" \
    --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance \
    --exclude-operation-id deleteMe --exclude-operation-id revokeKey \
    --max-time "$seconds" \
    --request-timeout 10 \
    --seed "${CLUB_SCHEMATHESIS_SEED:-1}" \
    --generation-database none \
    --no-color \
    --report junit --report-dir "$work/report" || status=$?

if grep -q 'panicked' "$work/coordinator.log"; then
    grep -B2 -A10 'panicked' "$work/coordinator.log" >&2
    log "the coordinator panicked"
    status=1
fi
if [[ $status -ne 0 ]]; then
    tail -n 40 "$work/coordinator.log" >&2
    log "FAILED"
    exit "$status"
fi
log "passed: no 5xx, every response as documented"
