#!/bin/sh
# ballast's test command (the README's second set-up command; .ci/run runs exactly this).
#
# 1. installs what the tests need (apt, idempotent; needs root or sudo),
# 2. checks formatting and lints (cargo fmt, cargo clippy -D warnings),
# 3. runs every test of the workspace, the real-VM ones included: they start
#    their own libvirtd/virtlogd and QEMU guests through crates/ballast-testvm,
# 4. fuzzes the OOM parser briefly (BALLAST_FUZZ_SECONDS, default 30; 0 skips).
#
# Arguments go to scripts/install-deps.sh (--yes: do not ask before installing on a host
# that already has QEMU, libvirt or Proxmox VE; CI=true implies it).
# Environment: BALLAST_SKIP_INSTALL=1 skips step 1 (see scripts/install-deps.sh).
set -eu
cd "$(dirname "$0")/.."

step() { printf '\n== %s\n' "$*"; }

./scripts/check-rust.sh
step "install test dependencies"
./scripts/install-deps.sh test "$@"

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, -D warnings)"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked --no-fail-fast

fuzz_seconds="${BALLAST_FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" != 0 ] && [ -x scripts/fuzz.sh ]; then
    step "fuzz the OOM parser for ${fuzz_seconds}s"
    ./scripts/fuzz.sh "$fuzz_seconds"
fi

step "all checks passed"
