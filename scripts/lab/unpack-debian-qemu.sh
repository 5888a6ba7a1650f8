#!/bin/sh
# Unpacks Debian 12's own QEMU (7.2, the oldest the quickstart accepts) beside the
# installed one, without installing it, and prints its qemu-system-x86_64. The real-VM
# tests run on it with BALLAST_LAB_EMULATOR (libvirt guests' <emulator>):
#
#   BALLAST_LAB_EMULATOR=$(scripts/lab/unpack-debian-qemu.sh) \
#       cargo test -p ballast-tests --test it quickstart::
#
# Argument: the version prefix to pick from apt's known versions (default 1:7.2).
# Unpacks into $LAB_DIR/qemu/<version>/ (the harness's lab; see libvirt-up.sh).
set -eu

REPO=$(cd "$(dirname "$0")/../.." && pwd)
. "$REPO/scripts/lab/lab-dir.sh"
prefix=${1:-1:7.2}

version=$(apt-cache madison qemu-system-x86 | awk -F'|' '{ gsub(/ /, "", $2); print $2 }' \
    | grep -F -- "$prefix" | sort -V | tail -n 1)
if [ -z "$version" ]; then
    echo "unpack-debian-qemu: apt knows no qemu-system-x86 $prefix* (apt-cache madison qemu-system-x86)" >&2
    exit 1
fi
dir=$LAB_DIR/qemu/$(printf '%s' "$version" | tr ':+~' '___')
binary=$dir/root/usr/bin/qemu-system-x86_64
if [ ! -x "$binary" ]; then
    mkdir -p "$dir/debs"
    chmod 755 "$LAB_DIR" "$LAB_DIR/qemu" "$dir"
    # qemu-system-data's version drops the binNMU suffix (+bN) of the arch packages.
    data_version=$(printf '%s' "$version" | sed 's/+b[0-9]*$//')
    (cd "$dir/debs" && apt-get download -q -q \
        "qemu-system-x86=$version" "qemu-system-common=$version" \
        "qemu-system-data=$data_version" 2>/dev/null)
    for deb in "$dir"/debs/*.deb; do
        dpkg-deb -x "$deb" "$dir/root"
    done
    # A relocated QEMU looks for firmware beside itself: Debian's seabios package
    # (installed with the host's QEMU) holds bios-256k.bin.
    ln -sfn /usr/share/seabios "$dir/root/usr/share/seabios"
fi
"$binary" --version >/dev/null
echo "$binary"
