#!/bin/sh
# /init of the ballast lab guest: a busybox initramfs around a stock Debian kernel.
#
# 1. mount proc, sys, devtmpfs, devpts, tmpfs; point stdio at the console
# 2. insmod the virtio modules listed in /etc/lab-modules (dependency order,
#    worked out on the build host with modprobe --show-depends)
# 3. create the /dev/virtio-ports/<name> links (there is no udev)
# 4. start qemu-ga when the guest agent port exists
# 5. print "LAB-READY uptime=<s> kernel=<release>" on the console (the harness waits for it)
# 6. optional: lab.memlog=S prints MemTotal/MemFree/MemAvailable every S seconds
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp /var/run
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
exec </dev/console >/dev/console 2>&1

for module in $(cat /etc/lab-modules); do
    insmod "/lib/lab-modules/$module.ko" || echo "lab-init: insmod $module failed"
done

# Port names arrive asynchronously from the host; wait only if a port exists.
if ls /sys/class/virtio-ports/ 2>/dev/null | grep -q vport; then
    tries=0
    while [ $tries -lt 50 ]; do
        missing=0
        for port in /sys/class/virtio-ports/vport*; do
            [ -s "$port/name" ] || missing=1
        done
        [ $missing = 0 ] && break
        tries=$((tries + 1))
        sleep 0.1
    done
    mkdir -p /dev/virtio-ports
    for port in /sys/class/virtio-ports/vport*; do
        name=$(cat "$port/name" 2>/dev/null)
        [ -n "$name" ] && ln -sf "/dev/${port##*/}" "/dev/virtio-ports/$name"
    done
fi

if [ -e /dev/virtio-ports/org.qemu.guest_agent.0 ]; then
    /usr/sbin/qemu-ga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 -t /run &
fi

memlog=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        lab.memlog=*) memlog=${arg#lab.memlog=} ;;
    esac
done

echo "LAB-READY uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r)"

while :; do
    if [ -n "$memlog" ]; then
        echo "LAB-MEM $(grep -E '^(MemTotal|MemFree|MemAvailable):' /proc/meminfo | tr -s ' ' | tr '\n' ' ')"
        sleep "$memlog"
    else
        sleep 3600
    fi
done
