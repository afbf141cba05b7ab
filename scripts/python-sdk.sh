#!/usr/bin/env bash
# Creates (idempotently) a venv with the official OpenAI Python SDK and pytest, for the SDK
# compatibility tests. Prints `CLUB_TEST_PYTHON=<the venv's python>` as its last line.
# Installs Debian's python3-venv first if python3 cannot make a venv (as root or with sudo);
# exit status 3 if it cannot.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/apt.sh
source "$root/scripts/lib/apt.sh"
venv="$root/.venv-sdk"
log() { printf '[python-sdk] %s\n' "$*" >&2; }

if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
    apt_install "the OpenAI SDK tests" python3-venv || exit $?
    python3 -c 'import venv, ensurepip' || { log "python3 still cannot make a venv (is python3 Debian's?)"; exit 1; }
fi
if [[ ! -x $venv/bin/python ]] || ! "$venv/bin/python" -c 'import openai, pytest' 2>/dev/null; then
    log "creating $venv"
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$root/inference-club-coordinator/tests/python/requirements.txt" >&2
fi
echo "CLUB_TEST_PYTHON=$venv/bin/python"
