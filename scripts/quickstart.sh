#!/bin/sh
# ballast's main job on embedded defaults (the README's first set-up command).
#
# On a fresh Debian 12 machine (as root): installs what it needs, builds ballast, starts
# a collector (embedded SQLite) and an agent watching this host's libvirt, then boots a
# tiny demo guest, inflates its balloon and provokes the guest OOM that ballast exists to
# explain, and prints the dashboard URL where the explained event shows. Ctrl-C stops
# everything and removes the demo guest.
#
#   ./scripts/quickstart.sh [--yes]      # the demo (needs root: apt, libvirt)
#                                        # (Proxmox VE: qm, scripts/quickstart-proxmox.sh)
#   ./scripts/quickstart.sh FILE...      # just explain kernel logs, no root needed
#
# It installs only the runtime set of scripts/install-deps.sh (build tools, the demo
# guest's QEMU/libvirt/kernel, its initramfs tools). On a host that already has QEMU or
# libvirt it uses them (QEMU 7.2 or newer), adds no apt source, and lists what it would
# install and asks first (--yes answers for scripts). On Proxmox VE it never installs
# or upgrades QEMU, libvirt or a kernel (scripts/host-kind.sh).
#
# Environment: BALLAST_QUICKSTART_PORT (collector port, 8470), BALLAST_QUICKSTART_DIR
# (state and logs, ./.quickstart), BALLAST_QUICKSTART_BIN_DIR (use these binaries
# instead of building; the test suite runs this script on its debug build).
#
# The agent watches every VM of qemu:///system; on a host with production VMs prefer
# the packages (docs/deploy.md) over this demo.
set -eu
cd "$(dirname "$0")/.."
./scripts/check-rust.sh

yes_flag=
if [ "${1:-}" = --yes ] || [ "${1:-}" = -y ]; then
    yes_flag=--yes
    shift
fi

if [ "$#" -gt 0 ]; then
    # explain needs no libvirt: built without it, so no libvirt-dev is needed (Proxmox
    # VE has none), in a target dir of its own (the demo's agent has the libvirt backend).
    explain_target="${CARGO_TARGET_DIR:-$PWD/target/quickstart-explain}"
    CARGO_TARGET_DIR="$explain_target" cargo build --release --locked -q -p ballast-agent --no-default-features
    for log in "$@"; do "$explain_target/release/ballast-agent" explain "$log"; done
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    echo "quickstart: the demo boots a VM (libvirt, or qm on Proxmox VE): run it as root (or pass kernel logs to explain)" >&2
    exit 2
fi

# A Proxmox VE host runs the demo with qm and the Proxmox (QMP) backend, never libvirt.
if [ "$(./scripts/host-kind.sh)" = proxmox ]; then
    exec ./scripts/quickstart-proxmox.sh $yes_flag
fi

./scripts/install-deps.sh runtime $yes_flag
if [ -n "${BALLAST_QUICKSTART_BIN_DIR:-}" ]; then
    # Binaries built already (tests/tests/it/quickstart.rs passes the test suite's own):
    # ballast-agent, ballast-collector and examples/demo_guest under this directory.
    bin="$BALLAST_QUICKSTART_BIN_DIR"
else
    echo "quickstart: building (release)..."
    # A target dir of its own, so a packaging build of another feature set cannot swap binaries.
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/quickstart}"
    bin="$CARGO_TARGET_DIR/release"
    cargo build --release --locked -q -p ballast-agent -p ballast-collector
    cargo build --release --locked -q -p ballast-testvm --example demo_guest
fi

. ./scripts/lib/quickstart-common.sh

work="${BALLAST_QUICKSTART_DIR:-$PWD/.quickstart}"
rm -rf "$work"
mkdir -p "$work/collector" "$work/agent"
port="${BALLAST_QUICKSTART_PORT:-8470}"
qs_collector_config "$work" "$port" "$bin"
cat > "$work/agent.yaml" <<YAML
state_dir: $work/agent
poll_interval_secs: 2
collector:
  url: http://127.0.0.1:$port
  token_file: $work/agent.token
YAML

pids=""
holder=""
demo=""
cleanup() {
    # The demo guest goes first: closing its stdin makes it destroy the VM itself.
    [ -n "$holder" ] && kill "$holder" 2>/dev/null
    [ -n "$demo" ] && wait "$demo" 2>/dev/null
    for pid in $pids; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
}
qs_traps

"$bin/ballast-collector" serve --config "$work/collector.yaml" 2> "$work/collector.log" &
pids="$pids $!"
./scripts/lab/libvirt-up.sh >/dev/null 2>&1 || true
"$bin/ballast-agent" run --config "$work/agent.yaml" 2> "$work/agent.log" &
pids="$pids $!"
qs_say "collector on http://127.0.0.1:$port/ , agent running (logs in $work)"

# The demo guest runs until its stdin closes: feed it from a FIFO we hold open. Its
# exit status lands in demo.exit, so a demo that fails stops the wait at once.
mkfifo "$work/demo.stdin"
sleep 100000 > "$work/demo.stdin" &
holder=$!
(
    status=0
    "$bin/examples/demo_guest" 10 "$work/demo.name" < "$work/demo.stdin" || status=$?
    echo "$status" > "$work/demo.exit"
) &
demo=$!
demo_running() { [ ! -e "$work/demo.exit" ]; }

qs_say "waiting for the guest OOM to reach the collector..."
if ! id=$(qs_wait_for_oom "$port" "$work/demo.name" demo_running); then
    if demo_running; then
        echo "quickstart: no OOM arrived; see $work/agent.log and $work/collector.log" >&2
    else
        echo "quickstart: the demo guest failed (its error is above); nothing was left running" >&2
    fi
    exit 1
fi
qs_print_event "$port" "$id"
qs_say "the explained OOM:  http://127.0.0.1:$port/ooms/$id"
qs_say "the fleet overview: http://127.0.0.1:$port/"
qs_say "Ctrl-C stops the demo (collector, agent, demo guest)."
wait "$holder"
