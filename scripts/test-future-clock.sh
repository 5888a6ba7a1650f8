#!/bin/sh
# Runs the test binaries that involve stored times (model, collector, agent, and the
# end-to-end tests against the real collector; not the real-VM, packaging or apt
# suites: apt refuses Release files "not valid yet" on a clock moved ahead) with the
# wall clock moved ahead (default: one year) through
# libfaketime, to prove no test depends on today's date: fixture times must be
# relative to the test's own clock, and retention, compaction, validation and reports
# must take their "now" from it.
#
# Usage: scripts/test-future-clock.sh [OFFSET]   OFFSET as faketime takes it, e.g. +365d
# Needs faketime (scripts/install-deps.sh installs it). Exit status 1 when any fails.
set -eu
cd "$(dirname "$0")/.."

offset="${1:-+365d}"
command -v faketime >/dev/null || { echo "faketime is not installed (apt install faketime)" >&2; exit 2; }

list=$(mktemp)
logs=$(mktemp -d)
trap 'rm -f "$list"' EXIT

# Build first on the real clock (rustc under libfaketime can hang), and list the
# test executables with the package directory each must run from.
cargo test --locked -p ballast-model -p ballast-collector -p ballast-agent -p ballast-tests --no-run \
    --message-format=json 2>/dev/null | python3 -c '
import json, os, sys
for line in sys.stdin:
    try:
        message = json.loads(line)
    except ValueError:
        continue
    if message.get("reason") == "compiler-artifact" and message.get("executable") \
            and message["profile"]["test"]:
        print(os.path.dirname(message["manifest_path"]), message["executable"])
' >"$list"

# The suites left out, as modules of the crates' `it` test binaries (libtest --skip).
skips=""
for suite in agent_real_vm capture_real_vm libvirt_backend libvirt_startup proxmox_backend pressure_real_vm guard_scenarios \
    fault_matrix hostile_guests lab_smoke openstack_node quickstart deploy fleet_e2e verdict_suite \
    install_deps_host_safety; do
    skips="$skips --skip $suite::"
done

# Monotonic clocks stay real: tokio timers and test timeouts keep working.
export FAKETIME_DONT_FAKE_MONOTONIC=1
failed=0
while read -r dir executable; do
    name=$(basename "$executable")
    # shellcheck disable=SC2086 # $skips: one word per argument
    if (cd "$dir" && faketime -f "$offset" "$executable" $skips >"$logs/$name.log" 2>&1); then
        printf 'ok      %s\n' "$name"
    else
        printf 'FAILED  %s (log: %s)\n' "$name" "$logs/$name.log"
        failed=1
    fi
done <"$list"
printf 'clock moved %s: %s\n' "$offset" "$(faketime -f "$offset" date -u)"
exit "$failed"
