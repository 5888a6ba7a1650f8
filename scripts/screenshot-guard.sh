#!/usr/bin/env bash
# Issue 19's proof on the dashboard: a real guard run seen by a real collector.
#
#   scripts/screenshot-guard.sh            # act (about 10 min)
#   scripts/screenshot-guard.sh observe
#   BALLAST_BENCH_AGENT_YAML=$'poll_interval_secs: 10\n' scripts/screenshot-guard.sh act
#                                          # at the agent's shipped 10 s poll
#
# Starts `ballast-collector serve` (embedded SQLite, a loopback port, dashboard without
# login as on any loopback listener) and a token for the bench's host id `scenario`,
# then runs scripts/bench-guard.sh MODE with the agent shipping its events to that
# collector (BALLAST_BENCH_AGENT_YAML), and saves headless-Chromium screenshots of each
# guest's VM page (range 1h: pressure episodes shaded, guard actions marked) and of the
# overview under artifacts/screenshots/guard-<mode>-*.png. Prints the bench's table too.
# Needs the lab (scripts/install-deps.sh test) and chromium.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
mode="${1:-act}"
target="${CARGO_TARGET_DIR:-$root/target}"
shots="$root/artifacts/screenshots"
mkdir -p "$shots"

cargo build --quiet --locked -p ballast-collector --bin ballast-collector
work="$(mktemp -d /tmp/bsg.XXXXXX)"
collector_pid=""
cleanup() {
    if [ -n "$collector_pid" ]; then
        kill "$collector_pid" 2>/dev/null || true
        wait "$collector_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
cat > "$work/collector.yaml" <<YAML
listen: 127.0.0.1:$port
state_dir: $work/collector
YAML
"$target/debug/ballast-collector" token create scenario --config "$work/collector.yaml" > "$work/agent.token"
chmod 600 "$work/agent.token"
"$target/debug/ballast-collector" serve --config "$work/collector.yaml" 2> "$work/collector.log" &
collector_pid=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$port/healthz" > /dev/null 2>&1 && break
    sleep 0.1
done

# The caller's own agent YAML (e.g. `poll_interval_secs: 10\n`, the shipped poll) comes first.
export BALLAST_BENCH_AGENT_YAML="${BALLAST_BENCH_AGENT_YAML:-}collector:
  url: http://127.0.0.1:$port
  token_file: $work/agent.token
"
scripts/bench-guard.sh "$mode"

shot() {
    chromium --headless --no-sandbox --disable-gpu --no-first-run --hide-scrollbars \
        --disable-background-networking --disable-component-update --disable-sync \
        --disable-dev-shm-usage --user-data-dir="$work/chromium" \
        --window-size=1280,2600 --screenshot="$shots/$1" "$2" 2> /dev/null
    echo "screenshot: artifacts/screenshots/$1 ($2)"
}
# The guests of crates/ballast-testvm/examples/guard_bench.rs: vmid 161 (6.1), 162 (6.12).
for vmid in 161 162; do
    shot "guard-$mode-vm$vmid.png" "http://127.0.0.1:$port/vms/scenario/$vmid?range=1h"
done
shot "guard-$mode-overview.png" "http://127.0.0.1:$port/?range=1h"
