#!/bin/sh
# /init of the ballast lab guest: a busybox initramfs around a stock Debian kernel.
#
# 1. mount proc, sys, devtmpfs, devpts, tmpfs; point stdio at the console
# 2. insmod the virtio modules listed in /etc/lab-modules (dependency order,
#    worked out on the build host with modprobe --show-depends), but those named
#    in lab.skip_modules=a,b
# 3. create the /dev/virtio-ports/<name> links (there is no udev)
# 4. start qemu-ga when the guest agent port exists (lab.qga=MODE: the hostile
#    agent /bin/hostile-qga.sh instead)
# 5. print "LAB-READY uptime=<s> kernel=<release>" on the console (the harness waits for it)
# 6. optional: lab.memlog=S prints MemTotal/MemFree/MemAvailable every S seconds;
#    lab.console_shell=1 runs every line read from the console as a shell command
#
# With console=hvc0 the console is the virtio console, which exists only once
# virtio_console is loaded: until then stdio is /dev/null.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run /tmp /var/run
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
if (: </dev/console) 2>/dev/null; then
    exec </dev/console >/dev/console 2>&1
    console=1
else
    exec </dev/null >/dev/null 2>&1
    console=
fi

# lab.skip_modules=a,b leaves those modules out (a guest without virtio_balloon).
skip=$(tr ' ' '\n' </proc/cmdline | sed -n 's/^lab\.skip_modules=//p' | tr ',' ' ')
for module in $(cat /etc/lab-modules); do
    case " $skip " in *" $module "*) echo "lab-init: $module skipped"; continue ;; esac
    insmod "/lib/lab-modules/$module.ko" || echo "lab-init: insmod $module failed"
done

# A virtio console appears once the host has announced its port.
tries=0
while [ -z "$console" ] && [ $tries -lt 100 ]; do
    if (: </dev/console) 2>/dev/null; then
        exec </dev/console >/dev/console 2>&1
        console=1
    else
        tries=$((tries + 1))
        sleep 0.1
    fi
done

# Port names arrive asynchronously from the host; wait only if a port exists.
# A virtio console's port has no name.
unnamed_ok=0
grep -q 'console=hvc0' /proc/cmdline && unnamed_ok=1
if ls /sys/class/virtio-ports/ 2>/dev/null | grep -q vport; then
    tries=0
    while [ $tries -lt 50 ]; do
        missing=0
        for port in /sys/class/virtio-ports/vport*; do
            [ -s "$port/name" ] || missing=$((missing + 1))
        done
        [ $missing -le $unnamed_ok ] && break
        tries=$((tries + 1))
        sleep 0.1
    done
    mkdir -p /dev/virtio-ports
    for port in /sys/class/virtio-ports/vport*; do
        name=$(cat "$port/name" 2>/dev/null)
        [ -n "$name" ] && ln -sf "/dev/${port##*/}" "/dev/virtio-ports/$name"
    done
fi

memlog=
qga=
console_shell=
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        lab.memlog=*) memlog=${arg#lab.memlog=} ;;
        lab.qga=*) qga=${arg#lab.qga=} ;;
        lab.console_shell=1) console_shell=1 ;;
    esac
done

if [ -e /dev/virtio-ports/org.qemu.guest_agent.0 ]; then
    if [ -n "$qga" ]; then
        /bin/hostile-qga.sh "$qga" &
    else
        /usr/sbin/qemu-ga -m virtio-serial -p /dev/virtio-ports/org.qemu.guest_agent.0 -t /run &
    fi
fi

if [ -n "$console_shell" ]; then
    stty -echo </dev/console
    (while IFS= read -r line; do eval "$line"; done) </dev/console &
fi

echo "LAB-READY uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r)"

while :; do
    if [ -n "$memlog" ]; then
        echo "LAB-MEM $(grep -E '^(MemTotal|MemFree|MemAvailable):' /proc/meminfo | tr -s ' ' | tr '\n' ' ')"
        sleep "$memlog"
    else
        sleep 3600
    fi
done
