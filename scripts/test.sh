#!/bin/sh
# ballast's test command (the README's second set-up command; .ci/run runs exactly this).
#
# 1. installs what the tests need (apt, idempotent; needs root or sudo),
# 2. checks formatting and lints (cargo fmt, cargo clippy -D warnings),
# 3. runs every test of the workspace, the real-VM ones included: they start
#    their own libvirtd/virtlogd and QEMU guests through crates/ballast-testvm,
#    and prints how many tests skipped (real-VM, PostgreSQL, other; BALLAST_SKIP_LOG):
#    loudly, and as a failure in CI;
# 4. fuzzes the OOM parser briefly (BALLAST_FUZZ_SECONDS, default 30; 0 skips), beside
#    the end-to-end tests.
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
# BALLAST_LAB_MAX_GUESTS (4, across processes; 5 ran CI in 531 s once, 6 lost
# verdict_suite's stalled-inflation race: docs/harness.md). RUST_TEST_THREADS overrides.
export RUST_TEST_THREADS="${RUST_TEST_THREADS:-4}"
# One build, then the end-to-end binary (real guests, mostly waiting) runs beside the
# other crates' test binaries (crates/ballast-testenv, ballast-run-tests): `cargo test`
# would run them one after another. Guests of both share the lab's slots, and a test
# that restarts libvirtd takes the lab's libvirtd lease exclusively (crates/ballast-testvm).
tests_status=0
plan="$(mktemp "${TMPDIR:-/tmp}/ballast-test-plan.XXXXXX")"
cargo test --workspace --locked --no-run --message-format=json-render-diagnostics >"$plan" \
    || tests_status=$?
cargo build --quiet --locked --workspace --bin ballast-run-tests --bin ballast-in-ci \
    || tests_status=$?
target_dir=$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
# The doc tests and the short fuzz run of the OOM parser (BALLAST_FUZZ_SECONDS, default
# 30; 0 skips) follow the other binaries in the second lane: the end-to-end binary
# leaves a core idle while its guests boot and wait.
fuzz_seconds="${BALLAST_FUZZ_SECONDS:-30}"
fuzz_command="true"
if [ "$fuzz_seconds" != 0 ] && [ -x scripts/fuzz.sh ]; then
    fuzz_command="./scripts/fuzz.sh $fuzz_seconds"
fi
if [ "$tests_status" = 0 ]; then
    # verdict_suite, the longest end-to-end suite, would start last (libtest goes by
    # name): it runs in a process of its own from the start.
    "$target_dir/debug/ballast-run-tests" "$plan" --alone tests/tests/it/main.rs \
        --split verdict_suite:: \
        --rest-command "cargo test --workspace --locked --doc" \
        --rest-command "$fuzz_command" \
        || tests_status=$?
fi
rm -f "$plan"

skips=$(grep -c '^BALLAST-SKIP: ' "$skip_log" || true)
vm_skips=$(grep '^BALLAST-SKIP: ' "$skip_log" | grep -c 'real guests' || true)
pg_skips=$(grep '^BALLAST-SKIP: ' "$skip_log" | grep -c 'PostgreSQL' || true)
other_skips=$((skips - vm_skips - pg_skips))
summary="skipped: $skips test(s) ($vm_skips real-VM, $pg_skips PostgreSQL, $other_skips other)"
in_ci=0
"$target_dir/debug/ballast-in-ci" && in_ci=1
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

step "all checks passed ($summary)"
