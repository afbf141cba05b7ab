#!/usr/bin/env bash
# Chromium and chromedriver for the browser tests (inference-club-coordinator/tests/browser.rs),
# from Debian's packages `chromium` and `chromium-driver`: never a downloaded browser.
#
#   scripts/browser.sh     find them (installing them first if missing, as root or with sudo);
#                          the last line on stdout is CLUB_TEST_CHROMEDRIVER=/path/to/chromedriver,
#                          the line before it CLUB_TEST_CHROMIUM=/path/to/chromium
#
#   eval "$(scripts/browser.sh | tail -n 2 | sed 's/^/export /')" && \
#       cargo test -p inference-club-coordinator --test browser
#
# Exit status 3: they are missing and cannot be installed (not root, no sudo).
set -euo pipefail
# shellcheck source=lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

log() { printf 'browser.sh: %s\n' "$*" >&2; }

find_chromium() {
    local name
    for name in chromium chromium-browser; do
        if command -v "$name" >/dev/null 2>&1; then
            command -v "$name"
            return 0
        fi
    done
    return 1
}

find_driver() {
    if command -v chromedriver >/dev/null 2>&1; then
        command -v chromedriver
    elif [[ -x /usr/lib/chromium/chromedriver ]]; then
        printf '%s\n' /usr/lib/chromium/chromedriver
    else
        return 1
    fi
}

if ! find_chromium >/dev/null || ! find_driver >/dev/null; then
    # Ubuntu names the driver's package chromium-chromedriver (and ships chromium as a snap).
    packages=(chromium chromium-driver)
    if ! apt-cache show chromium-driver >/dev/null 2>&1 && apt-cache show chromium-chromedriver >/dev/null 2>&1; then
        packages=(chromium-browser chromium-chromedriver)
    fi
    apt_install "the browser tests" "${packages[@]}" || exit $?
fi

chromium="$(find_chromium)" || { log "chromium not found after installing it"; exit 1; }
driver="$(find_driver)" || { log "chromedriver not found after installing it"; exit 1; }
log "$("$chromium" --version 2>/dev/null || echo chromium) / $("$driver" --version 2>/dev/null | head -n 1)"
echo "CLUB_TEST_CHROMIUM=$chromium"
echo "CLUB_TEST_CHROMEDRIVER=$driver"
