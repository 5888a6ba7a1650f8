#!/bin/sh
# ballast's main job on embedded defaults (the README's first set-up command).
#
# Today: builds ballast-agent and explains the founding OOM reports that ship
# with the source (a Proxmox guest's report, and a lab guest whose balloon took
# its memory), then any kernel log you pass: ./scripts/quickstart.sh /var/log/kern.log
# The collector, the agent daemon and the demo VM join this script as they land.
set -eu
cd "$(dirname "$0")/.."
if ! command -v cargo >/dev/null 2>&1; then
    echo "quickstart: cargo is needed (https://rustup.rs or apt-get install cargo)" >&2
    exit 2
fi
cargo build --release --locked -q -p ballast-agent
agent=target/release/ballast-agent
fixtures=crates/ballast-oom/tests/fixtures/oom
if [ "$#" -gt 0 ]; then
    for log in "$@"; do "$agent" explain "$log"; done
    exit 0
fi
for log in "$fixtures/debian9-kvm-1g-tor.joined.log" "$fixtures/lab-debian12-6.1-balloon-200m-of-512m.serial.log"; do
    printf '\n$ ballast-agent explain %s\n' "$log"
    "$agent" explain "$log"
done
