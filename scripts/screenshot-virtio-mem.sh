#!/usr/bin/env bash
# Issue 20's proof on the dashboard: a VM page with both elastic devices charted (the
# balloon and virtio-mem), from a real run.
#
#   scripts/screenshot-virtio-mem.sh        # about 12 min
#
# Runs the end-to-end test virtio_mem_proxmox_e2e (a Proxmox-style QEMU guest with a
# virtio-mem device, the real agent and collector: the host unplugs the device over QMP,
# a hog is OOM-killed, then the counterfactual with the blocks back) with
# BALLAST_VIRTIO_MEM_SCREENSHOT set: after its assertions both devices move for ten
# more minutes (the chart has a point a minute: half the device unplugged, the balloon
# inflated, both back), then the test waits for the agent's rollup of the last minute
# and saves a headless-Chromium screenshot of the VM page (range 1h: balloon and
# virtio-mem lines, the resize markers, the OOM) to
# artifacts/screenshots/virtio-mem-proxmox-vm.png. Needs the lab
# (scripts/install-deps.sh test) and chromium. Not run by CI.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
shot="$root/artifacts/screenshots/virtio-mem-proxmox-vm.png"
mkdir -p "$(dirname "$shot")"
rm -f "$shot"

cargo build --quiet --locked --bin ballast-agent --bin ballast-collector
# CI=true: no silent skip where the lab is missing; the script is asked for a screenshot.
CI=true BALLAST_VIRTIO_MEM_SCREENSHOT="$shot" \
    cargo test --quiet --locked -p ballast-tests --test it \
    virtio_mem_proxmox_e2e:: -- --nocapture
test -s "$shot"
echo "screenshot: artifacts/screenshots/virtio-mem-proxmox-vm.png"
