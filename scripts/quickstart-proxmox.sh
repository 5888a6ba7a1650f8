#!/bin/sh
# The quickstart on a Proxmox VE host: scripts/quickstart.sh runs this instead of the
# libvirt demo when scripts/host-kind.sh says `proxmox` (as root; `--yes` is passed on
# to install-deps.sh).
#
# Only Proxmox's own tools and QEMU, never libvirt, never a QEMU or kernel package:
#  1. dependencies: scripts/install-deps.sh runtime (on Proxmox it installs no QEMU,
#     libvirt or kernel and adds no apt source);
#  2. builds ballast-agent without libvirt (--no-default-features, as scripts/package.sh)
#     and ballast-collector;
#  3. the guest image (examples/demo_image: a Debian kernel + busybox initramfs). A
#     Proxmox host has only its own kernels in /boot and must not get a Debian one
#     installed (it would join the boot menu): the newest linux-image-<ver>-amd64 apt
#     knows is fetched with `apt-get download` and unpacked with `dpkg-deb -x` under
#     <lab>/kernels/<release>/, where the image build finds it;
#  4. a throwaway VM: `qm create` on a free VMID (`pvesh get /cluster/nextid`), named
#     ballast-demo-<vmid>, 512 MiB, a balloon, `serial0: socket`, the guest agent, and
#     `args: -kernel ... -initrd ... -append ...`; auto-ballooning off for it
#     (`shares: 0`, else pvestatd would deflate the demo's balloon within 10 s);
#  5. the collector and the agent (`backend: proxmox`, the demo VMID in
#     `proxmox.read_serial_vmids` so the agent reads its console);
#  6. `qm start`, the balloon inflated to 200 MiB over the VM's QMP socket, a memory
#     hog started with `qm guest exec`: the guest kernel OOM-kills it, and the
#     explained OOM's URL is printed;
#  7. Ctrl-C (or any error): `qm stop` + `qm destroy --purge` of that VMID only.
#
# Where the demo cannot run (no Debian kernel obtainable, `qm create`/`qm start`
# fails) it says so and runs the collector and the agent read-only on the host's
# existing VMs (balloon stats over QMP; no console, no guest agent) plus
# `ballast-agent explain` on the host's kernel log.
#
# Why QMP for the balloon and `qm guest exec` for the hog: QMP is QEMU's machine
# protocol on /var/run/qemu-server/<vmid>.qmp (what ballast's backend and pvestatd
# use; one short connection, like them), while `qm monitor` is an interactive shell;
# `qm guest exec` is Proxmox's documented way to run a command in a guest, and
# starting the hog from the host (not a timer in the guest) keeps it after the
# balloon has really shrunk.
#
# Environment (besides quickstart.sh's BALLAST_QUICKSTART_PORT/_DIR/_BIN_DIR):
#   BALLAST_PVE_RUN_DIR     qemu-server's run dir    (/var/run/qemu-server)
#   BALLAST_PVE_CONFIG_DIR  the VM configs           (/etc/pve/qemu-server)
#   BALLAST_QUICKSTART_KERNEL_LOG  the kernel log the fallback explains
#                           (journalctl -k, else /var/log/kern.log)
# (tests/tests/it/quickstart.rs points both at a temporary directory and `qm`/`pvesh`
# at a mock under tests/mock-pve/bin.)
set -eu
cd "$(dirname "$0")/.."
. ./scripts/lib/quickstart-common.sh

run_dir="${BALLAST_PVE_RUN_DIR:-/var/run/qemu-server}"
config_dir="${BALLAST_PVE_CONFIG_DIR:-/etc/pve/qemu-server}"
port="${BALLAST_QUICKSTART_PORT:-8470}"
work="${BALLAST_QUICKSTART_DIR:-$PWD/.quickstart}"
say() { qs_say "$@"; }

# --- 1-2: dependencies and binaries -------------------------------------------------
./scripts/install-deps.sh runtime "$@"
if [ -n "${BALLAST_QUICKSTART_BIN_DIR:-}" ]; then
    # ballast-agent, ballast-collector and examples/demo_image under this directory.
    bin="$BALLAST_QUICKSTART_BIN_DIR"
else
    say "building (release, agent without libvirt)..."
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target/quickstart-proxmox}"
    bin="$CARGO_TARGET_DIR/release"
    cargo build --release --locked -q -p ballast-agent -p ballast-collector --no-default-features
    cargo build --release --locked -q -p ballast-testvm --example demo_image
fi

rm -rf "$work"
mkdir -p "$work/collector" "$work/agent"

# --- 3: the guest image ------------------------------------------------------------
# Fetches Debian's newest kernel package and unpacks it under $1/kernels/<release>/
# (not installed: no boot menu entry, no initramfs-tools run).
fetch_debian_kernel() {
    pkg=$(apt-cache pkgnames linux-image- 2>/dev/null \
        | grep -E '^linux-image-[0-9][^ ]*-amd64$' \
        | grep -vE -- '-(rt|cloud)-amd64$' \
        | sort -V | tail -n 1)
    if [ -z "$pkg" ]; then
        echo "apt knows no linux-image-<version>-amd64 package (is a Debian source configured?)"
        return 1
    fi
    release=${pkg#linux-image-}
    kernels="$1/kernels"
    [ -d "$kernels/$release/boot" ] && return 0
    mkdir -p "$kernels"
    tmp=$(mktemp -d "$kernels/.fetch-XXXXXX")
    say "fetching Debian's kernel package $pkg for the guest (unpacked, not installed)..." >&2
    if ! (cd "$tmp" && apt-get download -q "$pkg") > "$work/kernel-fetch.log" 2>&1; then
        rm -rf "$tmp"
        echo "apt-get download $pkg failed (see $work/kernel-fetch.log)"
        return 1
    fi
    if ! unpack_kernel "$tmp"/*.deb "$tmp/root" "$release" >> "$work/kernel-fetch.log" 2>&1 \
        || ! mv "$tmp/root" "$kernels/$release"; then
        rm -rf "$tmp"
        echo "unpacking $pkg failed (see $work/kernel-fetch.log)"
        return 1
    fi
    rm -rf "$tmp"
}

# Unpacks kernel package $1 into $2 and writes modules.dep for release $3.
unpack_kernel() {
    dpkg-deb -x "$1" "$2" || return 1
    # Newer packages keep modules in /usr/lib/modules (merged /usr).
    if [ ! -d "$2/lib/modules" ] && [ -d "$2/usr/lib/modules" ]; then
        ln -s usr/lib "$2/lib" || return 1
    fi
    depmod -b "$2" "$3"
}

# Prints demo_image's key=value lines; returns 3 when no guest kernel exists.
demo_image() { "$bin/examples/demo_image" 2>> "$work/demo-image.log"; }

# Reads key=value output of demo_image into variables lab_dir, vmlinuz, initramfs.
read_image_info() {
    lab_dir=$(printf '%s\n' "$1" | sed -n 's/^lab_dir=//p')
    vmlinuz=$(printf '%s\n' "$1" | sed -n 's/^vmlinuz=//p')
    initramfs=$(printf '%s\n' "$1" | sed -n 's/^initramfs=//p')
}

why_no_demo=""
rc=0
info=$(demo_image) || rc=$?
read_image_info "$info"
if [ "$rc" = 3 ]; then
    rc=0
    if reason=$(fetch_debian_kernel "$lab_dir"); then
        info=$(demo_image) || rc=$?
        read_image_info "$info"
    else
        why_no_demo="no Debian kernel for the guest: $reason"
    fi
fi
if [ -z "$why_no_demo" ] && { [ "$rc" != 0 ] || [ -z "$vmlinuz" ]; }; then
    why_no_demo="the guest image did not build (see $work/demo-image.log)"
fi

# From here on every way out (error, Ctrl-C, closed terminal) runs cleanup.
created=""
pids=""
cleanup() {
    if [ -n "$created" ]; then
        say "removing the demo VM $created (qm stop, qm destroy --purge)"
        qm stop "$created" >> "$work/qm.log" 2>&1
        qm destroy "$created" --purge >> "$work/qm.log" 2>&1 \
            || echo "quickstart: qm destroy $created failed; see $work/qm.log" >&2
        created=""
    fi
    for pid in $pids; do kill "$pid" 2>/dev/null; done
    wait 2>/dev/null
}
qs_traps

# --- 4: the throwaway VM -----------------------------------------------------------
vmid=""
if [ -z "$why_no_demo" ]; then
    vmid=$(pvesh get /cluster/nextid 2>> "$work/qm.log" | tr -cd '0-9') || true
    name="ballast-demo-$vmid"
    # init.sh needs the serial console as console (the OOM report reaches serial0) and
    # the kernel's messages up to info (the report's memory lines).
    append="console=ttyS0 loglevel=7 panic=-1"
    if [ -z "$vmid" ]; then
        why_no_demo="pvesh get /cluster/nextid gave no VMID (see $work/qm.log)"
    elif qm create "$vmid" --name "$name" --memory 512 --balloon 512 --shares 0 \
        --serial0 socket --agent 1 \
        --description "ballast quickstart demo VM; destroyed when the quickstart exits" \
        --args "-kernel $vmlinuz -initrd $initramfs -append '$append'" \
        >> "$work/qm.log" 2>&1; then
        # From here on this VMID is ours to stop and destroy (and no other).
        created="$vmid"
        echo "$name" > "$work/demo.name"
    else
        why_no_demo="qm create $vmid failed: $(tail -n 1 "$work/qm.log")"
    fi
fi

# --- 5: collector and agent --------------------------------------------------------
qs_collector_config "$work" "$port" "$bin"
if [ -n "$created" ]; then
    serial_vmids="[$created]"
    guest_agent=on_suspicion
else
    serial_vmids="[]"
    guest_agent=off
fi
cat > "$work/agent.yaml" <<YAML
state_dir: $work/agent
backend: proxmox
poll_interval_secs: 2
proxmox:
  run_dir: $run_dir
  config_dir: $config_dir
  read_serial_vmids: $serial_vmids
capture:
  guest_agent: $guest_agent
collector:
  url: http://127.0.0.1:$port
  token_file: $work/agent.token
YAML


"$bin/ballast-collector" serve --config "$work/collector.yaml" 2> "$work/collector.log" &
pids="$pids $!"

# Blocks until Ctrl-C.
wait_for_ctrl_c() {
    sleep 2147483647 &
    pids="$pids $!"
    wait $!
}

# --- the fallback: read-only on the existing VMs, explain on the host's kernel log --
if [ -z "$created" ] || ! qm start "$created" >> "$work/qm.log" 2>&1; then
    if [ -n "$created" ]; then
        why_no_demo="qm start $created failed: $(tail -n 1 "$work/qm.log")"
        qm stop "$created" >> "$work/qm.log" 2>&1 || true
        qm destroy "$created" --purge >> "$work/qm.log" 2>&1 && created=""
    fi
    "$bin/ballast-agent" run --config "$work/agent.yaml" 2> "$work/agent.log" &
    pids="$pids $!"
    say "the demo VM cannot run on this host: $why_no_demo."
    say "instead, the collector and the agent run READ-ONLY on this host's existing VMs"
    say "(balloon and memory stats over QMP; no console, no guest agent, nothing changed),"
    say "and 'ballast-agent explain' reads this host's kernel log:"
    echo
    kernel_log=""
    if [ -n "${BALLAST_QUICKSTART_KERNEL_LOG:-}" ]; then
        kernel_log="$BALLAST_QUICKSTART_KERNEL_LOG"
    elif command -v journalctl >/dev/null 2>&1 \
        && journalctl -k -q --no-pager > "$work/host-kernel.log" 2>/dev/null \
        && [ -s "$work/host-kernel.log" ]; then
        kernel_log="$work/host-kernel.log"
    elif [ -r /var/log/kern.log ]; then
        kernel_log=/var/log/kern.log
    fi
    if [ -n "$kernel_log" ]; then
        "$bin/ballast-agent" explain "$kernel_log" || true
    else
        say "no kernel log found (journalctl -k, /var/log/kern.log)"
    fi
    echo
    say "the fleet overview: http://127.0.0.1:$port/ (logs in $work)"
    say "Ctrl-C stops the collector and the agent."
    wait_for_ctrl_c
    exit 0
fi

# --- 6: the demo OOM ---------------------------------------------------------------
"$bin/ballast-agent" run --config "$work/agent.yaml" 2> "$work/agent.log" &
pids="$pids $!"
say "collector on http://127.0.0.1:$port/ , agent running (backend proxmox; logs in $work)"
say "demo VM $created ($name) started with qm; waiting for its guest agent..."
ready=""
for _ in $(seq 1 180); do
    if qm guest cmd "$created" ping >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 1
done
if [ -z "$ready" ]; then
    echo "quickstart: the demo VM's guest agent never answered; see $work/qm.log" >&2
    exit 1
fi
# Give the agent a few polls of the healthy guest (and its console) first.
sleep 10

say "inflating the balloon to 200 MiB (QMP balloon), then starting a memory hog (qm guest exec)"
python3 - "$run_dir/$created.qmp" 200 <<'PY'
"""QMP `balloon` to argv[2] MiB, then `query-balloon` until it got there (60 s).
One short connection per step: the socket is single-client and pvestatd, qm and
ballast's agent use it too."""
import json, socket, sys, time

path, target = sys.argv[1], int(sys.argv[2]) * 1024 * 1024

def call(name, arguments=None):
    for _ in range(50):
        try:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(5)
            sock.connect(path)
            reader = sock.makefile("rb")
            reader.readline()
            result = None
            for message in ({"execute": "qmp_capabilities"}, {"execute": name, "arguments": arguments or {}}):
                sock.sendall(json.dumps(message).encode() + b"\n")
                while True:
                    reply = json.loads(reader.readline())
                    if "event" not in reply:
                        break
                if "error" in reply:
                    sys.exit("QMP %s: %s" % (message["execute"], reply["error"].get("desc")))
                result = reply.get("return")
            sock.close()
            return result
        except (OSError, ValueError):
            time.sleep(0.2)
    sys.exit("QMP socket %s does not answer" % path)

call("balloon", {"value": target})
deadline = time.time() + 60
while call("query-balloon")["actual"] > target + 1024 * 1024:
    if time.time() > deadline:
        sys.exit("the balloon did not reach its target in 60 s")
    time.sleep(0.5)
PY
qm guest exec "$created" -- /bin/sh -c '/bin/memhog 16 100 >/dev/console 2>&1 &' >> "$work/qm.log" 2>&1

say "waiting for the guest OOM to reach the collector..."
if ! id=$(qs_wait_for_oom "$port" "$work/demo.name"); then
    echo "quickstart: no OOM arrived; see $work/agent.log and $work/collector.log" >&2
    exit 1
fi
qs_print_event "$port" "$id"
say "the explained OOM:  http://127.0.0.1:$port/ooms/$id"
say "the fleet overview: http://127.0.0.1:$port/"
say "Ctrl-C stops the demo (collector, agent) and destroys VM $created."
wait_for_ctrl_c
