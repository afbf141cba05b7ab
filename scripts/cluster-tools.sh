#!/usr/bin/env bash
# nats-server and nginx for the cluster tests (examples/tests/cluster/) and scripts/cluster.sh,
# from Debian's packages `nats-server` and `nginx-light`.
#
#   scripts/cluster-tools.sh   find them (installing them first if missing, as root or with sudo,
#                              then stopping the system services the packages start: the tests
#                              and cluster.sh run their own instances); the last line on stdout is
#                              CLUB_TEST_NGINX=/path/to/nginx, the line before it
#                              CLUB_TEST_NATS_SERVER=/path/to/nats-server
#
# CLUB_TEST_NATS_SERVER and CLUB_TEST_NGINX, when set to programs, are used as they are.
# Exit status 3: they are missing and cannot be installed (not root, no sudo).
set -euo pipefail
# shellcheck source=lib/apt.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/apt.sh"

log() { printf 'cluster-tools.sh: %s\n' "$*" >&2; }

for var in CLUB_TEST_NATS_SERVER CLUB_TEST_NGINX; do
    if [[ -n "${!var:-}" && ! -x "${!var}" ]]; then
        log "$var=${!var} is not a program"
        exit 1
    fi
done

# The program named by variable $1 if set, else $2 on PATH or in the sbin folders.
find_program() {
    local preset="${!1:-}" path
    if [[ -n "$preset" ]]; then
        printf '%s\n' "$preset"
        return 0
    fi
    for path in "$(command -v "$2" 2>/dev/null || true)" "/usr/sbin/$2" "/usr/bin/$2"; do
        if [[ -n "$path" && -x "$path" ]]; then
            printf '%s\n' "$path"
            return 0
        fi
    done
    return 1
}

packages=()
find_program CLUB_TEST_NATS_SERVER nats-server >/dev/null || packages+=(nats-server)
find_program CLUB_TEST_NGINX nginx >/dev/null || packages+=(nginx-light)
if [[ ${#packages[@]} -gt 0 ]]; then
    apt_install "the cluster tests" "${packages[@]}" || exit $?
    apt_stop_services nginx nats-server
fi

nats="$(find_program CLUB_TEST_NATS_SERVER nats-server)" || { log "nats-server not found after installing it"; exit 1; }
nginx="$(find_program CLUB_TEST_NGINX nginx)" || { log "nginx not found after installing it"; exit 1; }
log "$("$nats" --version 2>&1 | head -n 1) / $("$nginx" -v 2>&1 | head -n 1)"
echo "CLUB_TEST_NATS_SERVER=$nats"
echo "CLUB_TEST_NGINX=$nginx"
