#!/usr/bin/env bash
# Issue 19 item 4: the guard's scenario suite on real guests (figures in BENCHMARKS.md,
# "Guard scenario suite"). Run by hand; CI runs only the smallest discriminating pair
# (agent/tests/it/guard_scenarios.rs).
#
#   scripts/bench-guard.sh                 # observe, then act when the agent has it (~10 min per mode)
#   scripts/bench-guard.sh observe         # one mode
#
# Builds ballast-agent, then runs the ballast-testvm example guard_bench: one
# Proxmox-style guest per kernel (6.1, 6.12), every scenario of
# ballast_testvm::guard_scenario (gradual hogs under an inflated balloon at 4, 16 and
# 64 MiB per guest second, the same with a pvestatd-like re-inflation loop, three
# control runs, a genuine overcommit), the kernels in parallel under one real agent per
# guard mode, whose JSON-lines journal gives the pressure episodes and guard actions.
# `act` runs only when `ballast-agent check-config` accepts `guard: {mode: act}`;
# otherwise it prints "act: not supported by this agent". Observe never touches a
# balloon: its OOMs are the no-guard figures. Prints a RUN line per run, then the table.
# Needs the lab (scripts/install-deps.sh) and both guest kernels.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
modes="${1:-observe,act}"
target="${CARGO_TARGET_DIR:-$root/target}"

cargo build --quiet --locked -p ballast-agent --bin ballast-agent
cargo run --quiet --locked -p ballast-testvm --example guard_bench -- \
    "$target/debug/ballast-agent" "$modes"
