#!/bin/sh
# ballast's test command (the README's second set-up command; .ci/run runs exactly this).
#
# 1. installs what the tests need (apt, idempotent; needs root or sudo),
# 2. checks formatting and lints (cargo fmt, cargo clippy -D warnings),
# 3. runs every test of the workspace, the real-VM ones included: they start
#    their own libvirtd/virtlogd and QEMU guests through crates/ballast-testvm,
#    and prints how many tests skipped (real-VM, PostgreSQL, other; BALLAST_SKIP_LOG):
#    loudly, and as a failure in CI;
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
# Every skipped test appends one line `BALLAST-SKIP: <test>: <why>` here
# (ballast_testenv::skip): counted below, since `cargo test` hides a passing test's stderr.
skip_log="$(mktemp "${TMPDIR:-/tmp}/ballast-skips.XXXXXX")"
export BALLAST_SKIP_LOG="$skip_log"
# Four test threads on two cores: the integration tests wait on guests, daemons and
# timeouts more than they compute, and the lab queues guests beyond
# BALLAST_LAB_MAX_GUESTS (4). The end-to-end binary takes about half the time of its
# suites run one after another (docs/harness.md, "Timings"). RUST_TEST_THREADS overrides.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"
# The two tests that restart the lab's shared libvirtd run after the rest, alone: a
# restart under another test's booting guests leaves their guest-agent channels
# "disconnected" (seen in hostile_guests), so they never overlap other real-VM tests.
restarts_libvirtd="lab_smoke::smoke::lifecycle_restart_libvirtd_reboot_and_hold_then_inflate
fault_matrix::libvirtd_restart_while_ooms_are_injected_and_a_real_oom_kill"
skip_args=""
for name in $restarts_libvirtd; do skip_args="$skip_args --skip $name"; done
tests_status=0
# shellcheck disable=SC2086 # one word per test name
cargo test --workspace --locked --no-fail-fast -- $skip_args || tests_status=$?
# shellcheck disable=SC2086
cargo test --locked -p ballast-tests --test it -- --exact --test-threads 1 $restarts_libvirtd \
    || tests_status=$?

skips=$(grep -c '^BALLAST-SKIP: ' "$skip_log" || true)
vm_skips=$(grep '^BALLAST-SKIP: ' "$skip_log" | grep -c 'real guests' || true)
pg_skips=$(grep '^BALLAST-SKIP: ' "$skip_log" | grep -c 'PostgreSQL' || true)
other_skips=$((skips - vm_skips - pg_skips))
summary="skipped: $skips test(s) ($vm_skips real-VM, $pg_skips PostgreSQL, $other_skips other)"
in_ci=0
cargo run --quiet --locked -p ballast-testenv --bin ballast-in-ci && in_ci=1
if [ "$skips" -gt 0 ]; then
    printf '\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n'
    printf '!!! %s\n' "$summary"
    sed 's/^BALLAST-SKIP: /!!!   /' "$skip_log"
    printf '!!! scripts/install-deps.sh installs what they need.\n'
    printf '!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n'
else
    printf '\n%s\n' "$summary"
fi
rm -f "$skip_log"
if [ "$tests_status" != 0 ]; then
    echo "cargo test failed (exit $tests_status); $summary" >&2
    exit "$tests_status"
fi
if [ "$skips" -gt 0 ] && [ "$in_ci" = 1 ]; then
    echo "a CI run skips no test: $summary" >&2
    exit 1
fi

fuzz_seconds="${BALLAST_FUZZ_SECONDS:-30}"
if [ "$fuzz_seconds" != 0 ] && [ -x scripts/fuzz.sh ]; then
    step "fuzz the OOM parser for ${fuzz_seconds}s"
    ./scripts/fuzz.sh "$fuzz_seconds"
fi

step "all checks passed ($summary)"
