#!/usr/bin/env bash
# Creates (idempotently) a venv with the official OpenAI Python SDK and pytest, for the SDK
# compatibility tests. Prints `CLUB_TEST_PYTHON=<the venv's python>` as its last line.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$root/.venv-sdk"
log() { printf '[python-sdk] %s\n' "$*" >&2; }

if ! python3 -c 'import venv' 2>/dev/null; then
    log "installing python3-venv"
    apt-get update -qq >&2 && apt-get install -y -qq python3-venv >&2
fi
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import openai, pytest' 2>/dev/null; then
    log "creating $venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/inference-club-coordinator/tests/python/requirements.txt" >&2
fi
echo "CLUB_TEST_PYTHON=$venv/bin/python"
