#!/usr/bin/env bash
# Benchmarks the collector's store at fleet scale (issue 7) on SQLite and PostgreSQL.
#
#   scripts/bench-collector-queries.sh                 # the BENCHMARKS.md figures
#   BENCH_HOSTS=100 BENCH_ROLLUP_HOSTS=4 scripts/bench-collector-queries.sh   # a quick run
#   BENCH_ENGINE=sqlite scripts/bench-collector-queries.sh                    # one engine
#
# Builds collector/examples/query_bench.rs in release mode and runs it: per engine it
# fills a store (a SQLite file under BENCH_DIR or a temp dir; a throwaway PostgreSQL
# cluster from crates/ballast-testpg) with BENCH_HOSTS x 50 VMs of inventory, 3 OOMs per
# host per week over 365 days, and the default rollup tiers (48 h of minutes, 28 days of
# hours) for BENCH_ROLLUP_HOSTS hosts; then times the collector's query functions
# (30-day memory series, fleet OOM list pages with and without filters, inventory)
# against the same queries on a store 1/100 the size, prints each plan, the store size
# per host per day, and the rate of the retention pass's compaction.
# Needs per engine ~1 GiB of disk per 10 rollup hosts plus ~8 GiB (SQLite) for 1000 hosts' OOMs;
# about 21 min for both engines on 2 busy cores.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

cargo build --quiet --release -p ballast-collector --example query_bench
args=(--engine "${BENCH_ENGINE:-both}" --hosts "${BENCH_HOSTS:-1000}"
  --rollup-hosts "${BENCH_ROLLUP_HOSTS:-20}" --iterations "${BENCH_ITERATIONS:-200}")
if [[ -n "${BENCH_DIR:-}" ]]; then
  args+=(--dir "$BENCH_DIR")
fi
exec "$root/target/release/examples/query_bench" "${args[@]}"
