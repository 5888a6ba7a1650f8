#!/bin/sh
# Stop the virtlogd/libvirtd that the harness or libvirt-up.sh started, by PID.
# Daemons started any other way are left alone (no marker in $LAB_DIR/daemons).
set -eu

REPO=$(cd "$(dirname "$0")/../.." && pwd)
. "$REPO/scripts/lab/lab-dir.sh"

for name in libvirtd virtlogd; do
    marker=$LAB_DIR/daemons/$name.pid
    [ -r "$marker" ] || continue
    pid=$(tr -d '[:space:]' <"$marker")
    if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ]; then
        kill "$pid"
        i=0
        while [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = "$name" ] \
            && ! grep -q '^State:.*Z' "/proc/$pid/status" 2>/dev/null; do
            i=$((i + 1))
            if [ $i -ge 200 ]; then kill -KILL "$pid" 2>/dev/null || true; break; fi
            sleep 0.05
        done
        echo "libvirt-down: stopped $name ($pid)" >&2
    fi
    rm -f "$marker"
done
