#!/bin/sh
# Prints what kind of host this is, for the scripts that install or start things:
#
#   proxmox    Proxmox VE: /etc/pve is a directory, or the pve-manager package is
#              installed. Its QEMU (pve-qemu-kvm) and its boot kernels are Proxmox's:
#              ballast's scripts never install or upgrade QEMU, libvirt or a kernel here.
#   virt-host  QEMU or libvirt is already installed (Debian's or Proxmox's QEMU package,
#              libvirt's daemon, or a qemu-system-x86_64 on the PATH): it may run VMs,
#              so nothing is installed without asking and what is there is used.
#   fresh      neither: a new machine, where installing the demo's stack is expected.
#
# BALLAST_ASSUME_PROXMOX=1 prints proxmox whatever the host is (tests on a machine that
# is not Proxmox VE).
set -eu

. "$(dirname "$0")/lib/dpkg.sh"

if [ "${BALLAST_ASSUME_PROXMOX:-0}" = 1 ] || [ -d /etc/pve ] || is_installed pve-manager; then
    echo proxmox
    exit 0
fi
for pkg in qemu-system-x86 pve-qemu-kvm libvirt-daemon libvirt-daemon-system; do
    if is_installed "$pkg"; then
        echo virt-host
        exit 0
    fi
done
if command -v qemu-system-x86_64 >/dev/null 2>&1 || command -v libvirtd >/dev/null 2>&1; then
    echo virt-host
    exit 0
fi
echo fresh
