#!/bin/sh
# Start virtlogd and libvirtd for the real-VM tests when they are not running.
#
# With systemd as PID 1: systemctl start virtlogd.socket libvirtd.service.
# Without it (containers, microVMs): `virtlogd -d` and `libvirtd -d` (libvirtd never
# spawns virtlogd). Daemons started here are recorded in $LAB_DIR/daemons/<name>.pid,
# the same markers the Rust harness writes, so libvirt-down.sh stops exactly those.
#
#   LAB_DIR: BALLAST_LAB_DIR, else /var/cache/ballast-lab as root, <repo>/target/ballast-lab otherwise
set -eu

REPO=$(cd "$(dirname "$0")/../.." && pwd)
. "$REPO/scripts/lab/lab-dir.sh"
URI=${BALLAST_LIBVIRT_URI:-qemu:///system}

running() { # running NAME PIDFILE: prints the PID when the pidfile names a live NAME
    [ -r "$2" ] || return 1
    pid=$(tr -d '[:space:]' <"$2")
    [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$1" ] && echo "$pid"
}

start=$(date +%s%N)
if [ "$(cat /proc/1/comm)" = systemd ]; then
    systemctl start virtlogd.socket libvirtd.service
else
    mkdir -p "$LAB_DIR/daemons"
    for name in virtlogd libvirtd; do
        if ! running "$name" "/run/$name.pid" >/dev/null; then
            "/usr/sbin/$name" -d
            i=0
            until pid=$(running "$name" "/run/$name.pid"); do
                i=$((i + 1)); [ $i -lt 200 ] || { echo "libvirt-up: $name did not start" >&2; exit 1; }
                sleep 0.05
            done
            printf '%s' "$pid" >"$LAB_DIR/daemons/$name.pid"
        fi
    done
fi
i=0
until virsh -c "$URI" version >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -lt 1800 ] || { echo "libvirt-up: libvirtd does not answer" >&2; exit 1; }
    sleep 0.05
done
echo "libvirt-up: ready in $((($(date +%s%N) - start) / 1000000)) ms" >&2
