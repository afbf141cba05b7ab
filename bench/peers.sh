#!/usr/bin/env bash
# Installs the peers that `club-bench peers` (and `all`) measures beside the club, none of whose
# code is committed here:
#
#   - LiteLLM proxy (`litellm[proxy]` from PyPI) and vllm-router (`vllm-router` from PyPI, a Rust
#     router shipped as a wheel) into the venv bench/.venv-peers (gitignored);
#   - nginx (one plain reverse-proxy hop, the floor) from the system's packages, only with
#     `--nginx` and only where apt-get is available and we are root.
#
#   bench/peers.sh            install or update the Python peers
#   bench/peers.sh --nginx    also `apt-get install nginx-light` (falls back to `nginx`)
#
# club-bench finds them in bench/.venv-peers/bin, or where CLUB_BENCH_LITELLM,
# CLUB_BENCH_VLLM_ROUTER and CLUB_BENCH_NGINX point; a peer that is not there is a row that
# says so. Needs Python 3.9 or newer (vllm-router's wheel is abi3 for CPython 3.8+; LiteLLM
# needs 3.9+).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="$here/.venv-peers"
python="${PYTHON:-python3}"

log() { printf 'peers.sh: %s\n' "$*" >&2; }

if ! "$python" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 9) else 1)'; then
    log "$python is older than 3.9; set PYTHON to a newer one"
    exit 1
fi
if [[ ! -x "$venv/bin/python" ]]; then
    log "creating $venv"
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
log "installing litellm[proxy] and vllm-router into $venv"
"$venv/bin/python" -m pip install --quiet --upgrade 'litellm[proxy]' vllm-router

if [[ "${1:-}" == "--nginx" ]]; then
    if command -v nginx >/dev/null 2>&1; then
        log "nginx is already installed"
    elif [[ "$(id -u)" -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx-light \
            || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx
        # Only the binary is wanted: the bench runs its own nginx with its own config.
        if command -v systemctl >/dev/null 2>&1; then systemctl disable --now nginx 2>/dev/null || true; fi
        service nginx stop 2>/dev/null || true
    else
        log "nginx not installed: needs root and apt-get (install nginx yourself; the bench finds it on PATH)"
    fi
fi

log "installed:"
"$venv/bin/python" -m pip show litellm vllm-router 2>/dev/null | grep -E '^(Name|Version):' >&2
[[ -x "$venv/bin/litellm" ]] && log "litellm: $venv/bin/litellm"
[[ -x "$venv/bin/vllm-router" ]] && log "vllm-router: $venv/bin/vllm-router"
command -v nginx >/dev/null 2>&1 && log "nginx: $(command -v nginx) ($(nginx -v 2>&1))"
exit 0
