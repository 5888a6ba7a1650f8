#!/usr/bin/env bash
# The fault matrix (issue #10) in its long form: the real agent and collector against
# real guests, with the collector down for the full 10 minutes and collector.url
# wrong for the full 5 minutes (issue 15).
#
#   scripts/reliability.sh                  # whole matrix, collector outage 600 s
#   BALLAST_FAULT_OUTAGE_SECS=120 scripts/reliability.sh
#   scripts/reliability.sh wrong_collector_url   # collector.url wrong for 300 s
#   scripts/reliability.sh collector_down   # only tests whose name contains this
#
# Runs tests/tests/it/fault_matrix.rs (CI runs the same file with a 45 s outage and a
# 30 s wrong URL) one
# test at a time, so the long outage does not hold the other scenarios' guests, and
# prints every `FAULT-MATRIX` figure line at the end (they go into RELIABILITY.md,
# section "Fault matrix"). Needs root, libvirt/QEMU and PostgreSQL
# (scripts/install-deps.sh). The full output stays in target/reliability-<time>.log.
# Exits non-zero if any scenario fails.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export BALLAST_FAULT_OUTAGE_SECS="${BALLAST_FAULT_OUTAGE_SECS:-600}"
export BALLAST_FAULT_WRONG_URL_SECS="${BALLAST_FAULT_WRONG_URL_SECS:-300}"
filter="${1:-}"
log="$root/target/reliability-$(date -u +%Y%m%dT%H%M%SZ).log"
mkdir -p "$root/target"

echo "fault matrix: collector outage ${BALLAST_FAULT_OUTAGE_SECS} s, wrong URL ${BALLAST_FAULT_WRONG_URL_SECS} s; log: $log"
started=$(date +%s)
status=0
cargo test --locked -p ballast-tests --test it -- --test-threads=1 --nocapture "fault_matrix::$filter" \
    >"$log" 2>&1 || status=$?
echo "took $(( $(date +%s) - started )) s"
grep -E '^(FAULT-MATRIX|test .* \.\.\. )' "$log" || true
grep -E '^test result' "$log" || true
if [ "$status" -ne 0 ]; then
    echo "FAILED (exit $status); see $log" >&2
fi
exit "$status"
