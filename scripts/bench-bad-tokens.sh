#!/usr/bin/env bash
# Ingest latency of real agents' batches with and without a client sending bad
# tokens as fast as it can, in one run, against the real ballast-collector binary
# (collector/examples/bad_token_bench.rs). Prints both p99s and their ratio.
# Usage: scripts/bench-bad-tokens.sh [bad_token_bench options, e.g. --secs 30]
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p ballast-collector --bin ballast-collector --example bad_token_bench
target_dir="${CARGO_TARGET_DIR:-target}"
exec "$target_dir/release/examples/bad_token_bench" \
    --collector "$target_dir/release/ballast-collector" "$@"
