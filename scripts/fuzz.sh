#!/usr/bin/env bash
# Fuzzes ballast's guest-facing parsers with cargo-fuzz (libFuzzer), SECONDS (default
# 600) per target.
#
#   scripts/fuzz.sh            # the 10-minute run of the OOM parser
#   scripts/fuzz.sh 60         # the short CI run
#   FUZZ_TARGET=parse_report FUZZ_JOBS=2 FUZZ_SANITIZER=address scripts/fuzz.sh 600
#   FUZZ_TARGET=capture_serial scripts/fuzz.sh 600            # the agent's serial capture path
#   FUZZ_TARGET=stream_parse scripts/fuzz.sh 600              # the parser window by window (explain FILE)
#   FUZZ_TARGET="parse_report capture_serial" scripts/fuzz.sh  # both, one after the other
#
# Targets (fuzz/fuzz_targets/): parse_report (ballast_oom::explain + analyze on any bytes),
# stream_parse (ballast_oom::StreamParser in windows and reads of fuzzed sizes),
# capture_serial (console bytes -> agent LineSplitter + Detector, and guest-agent dmesg
# output -> take_new; builds the agent library without libvirt (the fuzz crate's `agent`
# feature, set here for that target only), so its first build is slower).
#
# 1. Installs cargo-fuzz once (skipped when `cargo fuzz` already works; CI caches ~/.cargo/bin).
# 2. Seeds fuzz/corpus/<target>/ (gitignored) with every real fixture and regression input.
# 3. Runs libFuzzer with the kernel-token dictionary fuzz/oom.dict; exits non-zero on any
#    crash, panic, timeout or out-of-memory, leaving the input in fuzz/artifacts/<target>/.
#
# Only stable Rust is installed: cargo-fuzz passes nightly-only codegen flags, so
# RUSTC_BOOTSTRAP=1 is set for this build only (the fuzz crate is its own workspace).
set -euo pipefail

seconds="${1:-600}"
targets="${FUZZ_TARGET:-parse_report}"
jobs="${FUZZ_JOBS:-1}"
# The parser is safe Rust (unsafe_code = deny): ASan buys little and halves the speed.
# Debug assertions stay on, so integer overflow panics like it does in tests.
sanitizer="${FUZZ_SANITIZER:-none}"
cargo_fuzz_version="0.13.2"

root="$(cd "$(dirname "$0")/.." && pwd)"
fuzz_dir="$root/fuzz"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz.sh: installing cargo-fuzz $cargo_fuzz_version" >&2
    cargo install cargo-fuzz --locked --version "$cargo_fuzz_version"
fi

export RUSTC_BOOTSTRAP=1
cd "$fuzz_dir"

for target in $targets; do
(
    corpus="$fuzz_dir/corpus/$target"
    artifacts="$fuzz_dir/artifacts/$target"
    mkdir -p "$corpus" "$artifacts"
    for seed in "$root"/crates/ballast-oom/tests/fixtures/oom/*.log \
        "$root"/crates/ballast-oom/tests/regressions/*; do
        [ -f "$seed" ] || continue
        case "$seed" in *.md) continue ;; esac
        cp -f "$seed" "$corpus/seed-$(basename "$seed")"
    done

    # Targets that need the agent library build it through the fuzz crate's feature.
    features=()
    case "$target" in capture_serial) features=(--features agent) ;; esac

    cargo fuzz build --release --debug-assertions --sanitizer "$sanitizer" "${features[@]}" "$target"

    # More than one job: libFuzzer's fork mode (one process per core, shared corpus).
    parallel=()
    if [ "$jobs" -gt 1 ]; then
        parallel=(-fork="$jobs")
    fi

    echo "fuzz.sh: $target for ${seconds}s, $jobs job(s), corpus $corpus" >&2
    status=0
    cargo fuzz run --release --debug-assertions --sanitizer "$sanitizer" "${features[@]}" "$target" "$corpus" -- \
        -max_total_time="$seconds" \
        -dict="$fuzz_dir/oom.dict" \
        -max_len=65536 \
        -timeout=10 \
        -rss_limit_mb=2048 \
        -print_final_stats=1 \
        "${parallel[@]}" || status=$?

    crashes="$(find "$artifacts" -type f | wc -l)"
    if [ "$status" -ne 0 ] || [ "$crashes" -ne 0 ]; then
        echo "fuzz.sh: FAILED (exit $status, $crashes artifact(s) in $artifacts)" >&2
        find "$artifacts" -type f >&2
        echo "fuzz.sh: minimize with: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz tmin $target <artifact>)" >&2
        exit 1
    fi
    echo "fuzz.sh: $target ran ${seconds}s with no crash" >&2
)
done
