# shellcheck shell=bash
# Installs Debian packages for the scripts that need them. Sourced, not executed.
#
#   source "$root/scripts/lib/apt.sh"
#   apt_install "the browser tests" chromium chromium-driver || exit $?
#   apt_stop_services nginx nats-server
#
# apt_install WHAT PACKAGE... installs the packages (the caller has found them missing) as root,
# or with sudo when that works (without a password, or with one typed at a terminal). WHAT says
# what they are for. It returns 0 once they are installed. If it cannot (not root, no usable
# sudo) it prints a loud message naming the packages and returns $APT_CANNOT; if apt-get fails it
# prints the end of apt-get's output and returns 1. apt-get's output goes to a log and is shown
# only on failure.
#
# `apt-get update` runs at most once per run: before the first install, and not again while the
# folder $CLUB_APT_STATE (scripts/test.sh and scripts/cluster.sh make one for their whole run)
# says it ran.

# Exit status of a script that cannot install what it needs (scripts/test.sh then goes on
# without that service, and the tests that need it skip).
APT_CANNOT=3

_apt_log() { printf 'apt: %s\n' "$*" >&2; }

# Sets _apt_sudo to the command prefix that runs apt-get as root, or returns 1.
_apt_privileges() {
    if [[ "$(id -u)" -eq 0 ]]; then
        _apt_sudo=()
    elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
        _apt_sudo=(sudo -n)
    elif command -v sudo >/dev/null 2>&1 && [[ -t 0 || -t 2 ]]; then
        _apt_sudo=(sudo)
    else
        return 1
    fi
}

# Prints a message that stands out in a long log.
apt_loud() {
    local line="=================================================================================="
    printf '\n%s\n' "$line" >&2
    printf '  %s\n' "$@" >&2
    printf '%s\n\n' "$line" >&2
}

apt_install() {
    local what="$1"
    shift
    [[ $# -gt 0 ]] || return 0
    if ! _apt_privileges; then
        apt_loud "CANNOT INSTALL $* (for $what): not root, and no sudo that works here" \
            "(none, or it wants a password and there is no terminal to type it)." \
            "Install the Debian packages yourself: apt-get install --no-install-recommends $*" \
            "Until then the tests that need them skip (and say so)."
        return "$APT_CANNOT"
    fi
    local output status=0
    output="$(mktemp)"
    if [[ -z ${CLUB_APT_STATE:-} || ! -e "$CLUB_APT_STATE/updated" ]] && [[ -z ${_apt_updated:-} ]]; then
        _apt_log "apt-get update"
        if ! "${_apt_sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq >"$output" 2>&1; then
            cat "$output" >&2
            _apt_log "apt-get update FAILED (above); installing from the package lists there are"
        fi
        _apt_updated=1
        if [[ -n ${CLUB_APT_STATE:-} && -d "$CLUB_APT_STATE" ]]; then
            : >"$CLUB_APT_STATE/updated"
        fi
    fi
    _apt_log "installing $* (for $what)"
    "${_apt_sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q \
        --no-install-recommends "$@" >"$output" 2>&1 || status=$?
    if [[ $status -ne 0 ]]; then
        tail -n 40 "$output" >&2
        rm -f "$output"
        apt_loud "apt-get install $* FAILED (exit $status, output above)."
        return 1
    fi
    rm -f "$output"
}

# Stops (and, under systemd, disables) the named system services, which a package may have
# started on installing: the scripts run their own instances. Quiet; never fails.
apt_stop_services() {
    _apt_privileges || return 0
    local service
    for service in "$@"; do
        if [[ -d /run/systemd/system ]]; then
            "${_apt_sudo[@]}" systemctl disable --now "$service" >/dev/null 2>&1 || true
        fi
        if command -v service >/dev/null 2>&1; then
            "${_apt_sudo[@]}" service "$service" stop >/dev/null 2>&1 || true
        fi
    done
}
