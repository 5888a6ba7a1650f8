#!/usr/bin/env bash
# Issue 17 item 3: the real-VM verdict suite, full matrix (figures in BENCHMARKS.md,
# "Real-VM verdict suite"). Run by hand; CI runs only the 6.1 subset of the same test.
#
#   scripts/bench-verdicts.sh            # 6.1 and 6.12 guests, every scenario (~15-25 min)
#   BENCH_NO_WRITE=1 scripts/bench-verdicts.sh   # print the table, leave BENCHMARKS.md
#
# Runs tests/tests/it/verdict_suite.rs with BALLAST_VERDICT_SUITE=full: every scenario on
# one guest per kernel (plus an autodeflate guest per kernel), through the real agent
# and collector, then re-run with the balloon at maximum. The table it prints replaces
# the rows between the verdict-table markers in BENCHMARKS.md. Exits non-zero when a
# row's counterfactual run contradicts its stored verdict (the table is still written).
# Needs the lab (scripts/install-deps.sh) and both guest kernels (6.1 and 6.12).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
dir="$(mktemp -d --tmpdir ballast-bench-verdicts.XXXXXX)"
trap 'rm -rf "$dir"' EXIT
table="$dir/table.md"

cargo build --quiet --locked -p ballast-agent -p ballast-collector --bins
status=0
BALLAST_VERDICT_SUITE=full BALLAST_VERDICT_TABLE="$table" \
    cargo test --quiet --locked -p ballast-tests --test it -- --nocapture verdict_suite:: || status=$?
if [ ! -s "$table" ]; then
    echo "bench-verdicts: the suite wrote no table (exit $status)" >&2
    exit 1
fi
cat "$table"
if [ -z "${BENCH_NO_WRITE:-}" ]; then
    begin='<!-- verdict-table:begin -->'
    end='<!-- verdict-table:end -->'
    grep -qF "$begin" BENCHMARKS.md || { echo "bench-verdicts: no $begin in BENCHMARKS.md" >&2; exit 1; }
    awk -v begin="$begin" -v end="$end" -v table="$table" '
        $0 == begin { print; while ((getline line < table) > 0) print line; skip = 1; next }
        $0 == end { skip = 0 }
        !skip { print }
    ' BENCHMARKS.md >"$dir/BENCHMARKS.md"
    cp "$dir/BENCHMARKS.md" BENCHMARKS.md
    echo "bench-verdicts: table written to BENCHMARKS.md" >&2
fi
exit "$status"
