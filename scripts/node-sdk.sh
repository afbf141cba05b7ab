#!/usr/bin/env bash
# Installs (idempotently) the official OpenAI Node SDK (the npm package `openai`, the version
# pinned below) into .node-sdk/ at the repo root, for the Node SDK compatibility test
# (inference-club-coordinator/tests/node/openai_sdk.test.mjs, run with `node --test`).
# Installs Debian's nodejs and npm first when node or npm is missing (as root or with sudo; exit
# status 3 if it cannot). Prints `CLUB_TEST_NODE_SDK=<the directory>` as its last line.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=lib/apt.sh
source "$root/scripts/lib/apt.sh"
dir="${CLUB_NODE_SDK_DIR:-$root/.node-sdk}"
# 6.x: the last major that runs on Debian bookworm's Node 18 (7.x wants Node 22).
version="${CLUB_NODE_OPENAI_VERSION:-6.30.1}"
log() { printf '[node-sdk] %s\n' "$*" >&2; }

missing=()
command -v node >/dev/null 2>&1 || missing+=(nodejs)
command -v npm >/dev/null 2>&1 || missing+=(npm)
if ((${#missing[@]})); then
    apt_install "the OpenAI Node SDK tests" "${missing[@]}" || exit $?
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if ((major < 18)); then
    log "node $(node --version) is too old: the SDK and \`node --test\` need Node 18 or newer"
    exit 1
fi

installed_version() {
    node -p "require('$dir/node_modules/openai/package.json').version" 2>/dev/null || true
}
if [[ "$(installed_version)" == "$version" ]]; then
    log "openai $version already in $dir"
else
    log "installing openai $version into $dir"
    mkdir -p "$dir"
    printf '{\n  "name": "club-node-sdk-tests",\n  "private": true,\n  "dependencies": {"openai": "%s"}\n}\n' \
        "$version" >"$dir/package.json"
    npm install --prefix "$dir" --no-audit --no-fund --no-update-notifier --loglevel=error >&2
    [[ "$(installed_version)" == "$version" ]] || { log "openai $version did not install"; exit 1; }
fi
echo "CLUB_TEST_NODE_SDK=$dir"
