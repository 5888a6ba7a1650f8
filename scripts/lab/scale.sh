#!/bin/sh
# Scale check (not part of the normal test run): boot N small guests at once
# (256 MiB, 1 vCPU, TCG) and report how many fit, boot time, QEMU RSS, the time
# of one bulk `virsh domstats --balloon` over all of them, inflation and OOM kills.
#
#   scripts/lab/scale.sh [N]        (default 20)
# Figures are recorded in BENCHMARKS.md, section "Real-VM harness".
set -eu

REPO=$(cd "$(dirname "$0")/../.." && pwd)
N=${1:-20}
"$REPO/scripts/install-deps.sh"
cd "$REPO"
BALLAST_LAB_MAX_GUESTS=$N exec cargo run -q --release -p ballast-testvm --example scale -- "$N"
