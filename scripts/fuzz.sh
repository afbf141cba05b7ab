#!/usr/bin/env bash
# Runs every fuzz target of fuzz/ (cargo-fuzz, libFuzzer) for a bounded time each.
#
#   scripts/fuzz.sh                 every target, 60 s each
#   scripts/fuzz.sh sse manifest    only these targets
#   CLUB_FUZZ_SECONDS=10 scripts/fuzz.sh
#
# Only the stable toolchain is installed: cargo-fuzz needs nightly flags (-Z sanitizer, -C passes),
# which RUSTC_BOOTSTRAP=1 unlocks on stable. cargo-fuzz is installed from crates.io when missing,
# and Debian's g++ (libFuzzer is C++) as root or with sudo.
# The targets are built without a sanitizer (the code under test forbids `unsafe`; a panic,
# an overflow with debug assertions on, a stack overflow or running out of memory is what
# fuzzing finds here) and with debug assertions.
#
# The committed seeds (fuzz/corpus/<target>/) are read; what a run discovers goes to
# fuzz/corpus-new/<target>/ (not committed). A crash fails the script; its reproducer stays in
# fuzz/artifacts/<target>/ and `cargo fuzz run <target> <file>` replays it. docs/fuzzing.md says
# more.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root/fuzz"

log() { printf '[fuzz] %s\n' "$*" >&2; }

seconds="${CLUB_FUZZ_SECONDS:-60}"
cargo_fuzz_version="0.13.2"
# Bounds on one input: larger inputs and slower runs are findings too (a hang or a blow-up).
max_len="${CLUB_FUZZ_MAX_LEN:-65536}"
rss_limit_mb="${CLUB_FUZZ_RSS_LIMIT_MB:-2048}"
timeout_s="${CLUB_FUZZ_TIMEOUT:-10}"

export RUSTC_BOOTSTRAP=1

# libfuzzer-sys compiles libFuzzer, which is C++.
if ! command -v c++ >/dev/null 2>&1; then
    # shellcheck source=lib/apt.sh
    source "$root/scripts/lib/apt.sh"
    apt_install "fuzzing (libFuzzer is C++)" g++ || exit 1
fi

if ! cargo fuzz --version >/dev/null 2>&1; then
    log "installing cargo-fuzz $cargo_fuzz_version from crates.io"
    cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <(cargo fuzz list)
fi

build=(--sanitizer none --debug-assertions)
log "building ${#targets[@]} targets (the first build takes several minutes)"
cargo fuzz build "${build[@]}"

failed=()
for target in "${targets[@]}"; do
    mkdir -p "corpus/$target" "corpus-new/$target" "artifacts/$target"
    log "$target: ${seconds} s"
    if cargo fuzz run "${build[@]}" "$target" "corpus-new/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -max_len="$max_len" -rss_limit_mb="$rss_limit_mb" \
        -timeout="$timeout_s" -print_final_stats=1 2>"corpus-new/$target.log"; then
        runs="$(grep -o 'stat::number_of_executed_units: *[0-9]*' "corpus-new/$target.log" | grep -o '[0-9]*$' || true)"
        log "$target: no crash in ${runs:-?} runs"
    else
        failed+=("$target")
        tail -n 60 "corpus-new/$target.log" >&2
        log "$target: CRASH — the reproducer is in fuzz/artifacts/$target/"
    fi
done

if [[ ${#failed[@]} -gt 0 ]]; then
    log "crashed: ${failed[*]}"
    exit 1
fi
log "${#targets[@]} passed, 0 failed"
