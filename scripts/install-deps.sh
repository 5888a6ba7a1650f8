#!/bin/sh
# Install everything ballast's tests need on a Debian 12 (bookworm) machine.
#
# Idempotent and quiet: when every package is already present (checked with
# dpkg-query) it returns in well under a second without calling apt.
#
# Stack (see docs/harness.md):
#   * libvirt 9.0 from bookworm (libvirt-daemon-system, libvirt-clients, libvirt-dev)
#   * QEMU 10 from bookworm-backports (qemu-system-x86 and friends, qemu-guest-agent);
#     this also avoids the "newer qemu-utils Breaks qemu-system-common 7.2" trap
#   * two guest kernels side by side: Debian 12's 6.1 (linux-image-amd64 from bookworm)
#     and 6.12 from bookworm-backports, installed by its exact versioned package name
#     so the linux-image-amd64 meta package stays on 6.1
#   * guest image build tools: busybox-static gcc libc6-dev cpio gzip xz-utils zstd kmod
#
# Environment:
#   BALLAST_SKIP_INSTALL=1   do nothing (machines provisioned another way)
#   BALLAST_APT_VERBOSE=1    show apt's output
#
# Not implemented: an alternative QEMU 7.2 stack (BALLAST_LAB_STACK=bookworm).
# Going back from QEMU 10 to 7.2 needs explicit =version downgrades of every
# qemu-* package plus seabios; the harness only supports the QEMU 10 stack.
set -eu

if [ "${BALLAST_SKIP_INSTALL:-0}" = 1 ]; then
    exit 0
fi

log() { printf 'install-deps: %s\n' "$*" >&2; }

SUDO=
if [ "$(id -u)" != 0 ]; then
    SUDO=sudo
fi

APT_QUIET="-q -q"
APT_OUT=/dev/null
if [ "${BALLAST_APT_VERBOSE:-0}" = 1 ]; then
    APT_QUIET=
    APT_OUT=/dev/stderr
fi

# Packages from the machine's main suite (bookworm).
BASE_PACKAGES="
libvirt-daemon-system libvirt-clients libvirt-dev
linux-image-amd64
busybox-static gcc libc6-dev cpio gzip xz-utils zstd kmod
"

# Packages that must come from bookworm-backports (QEMU 10).
BACKPORTS_PACKAGES="
qemu-system-x86 qemu-utils qemu-system-common qemu-system-data qemu-system-gui
qemu-block-extra qemu-guest-agent
"

# --- Other engineers: add further test dependencies here --------------------
# e.g. postgresql (storage tests) and chromium (dashboard tests). They are
# installed from the main suite together with BASE_PACKAGES.
EXTRA_PACKAGES="
postgresql
prometheus debootstrap
chromium
curl python3
faketime
openssl
"
# -----------------------------------------------------------------------------

BACKPORTS_FILE=/etc/apt/sources.list.d/ballast-bookworm-backports.sources

# is_installed PKG: true when dpkg knows PKG as fully installed.
is_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Abbrev}' "$1" 2>/dev/null | cut -c1-2)" = ii ]
}

# missing PKG...: print the packages that are not installed.
missing() {
    for pkg in "$@"; do
        is_installed "$pkg" || printf '%s\n' "$pkg"
    done
}

# qemu_is_backports: true when the installed qemu-system-x86 is QEMU >= 8.
qemu_is_backports() {
    version=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null) || return 1
    dpkg --compare-versions "$version" ge 1:8
}

# installed_612_kernel: print the installed 6.12 kernel image package, if any.
installed_612_kernel() {
    dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' 'linux-image-6.12.*-amd64' 2>/dev/null \
        | awk '$1 == "ii" && $2 !~ /unsigned|dbg/ { print $2 }' | sort -V | tail -n 1
}

# shellcheck disable=SC2086 # word splitting of the package lists is intended
need_base=$(missing $BASE_PACKAGES $EXTRA_PACKAGES)
# shellcheck disable=SC2086
need_backports=$(missing $BACKPORTS_PACKAGES)
if [ -z "$need_backports" ] && ! qemu_is_backports; then
    need_backports=$BACKPORTS_PACKAGES
fi
need_kernel_612=
if [ -z "$(installed_612_kernel)" ]; then
    need_kernel_612=yes
fi

if [ -z "$need_base" ] && [ -z "$need_backports" ] && [ -z "$need_kernel_612" ]; then
    exit 0
fi

start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive

if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    log "adding bookworm-backports apt source ($BACKPORTS_FILE)"
    $SUDO tee "$BACKPORTS_FILE" >/dev/null <<'EOF'
# Added by ballast scripts/install-deps.sh: QEMU 10 and Linux 6.12 for the test harness.
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
fi

log "apt-get update"
# shellcheck disable=SC2086
$SUDO apt-get $APT_QUIET update >"$APT_OUT"

# QEMU 10 first: with it in place, nothing pulls the bookworm 7.2 packages.
if [ -n "$need_backports" ]; then
    log "installing from bookworm-backports:" $BACKPORTS_PACKAGES
    # shellcheck disable=SC2086
    $SUDO apt-get $APT_QUIET install -y -t bookworm-backports $BACKPORTS_PACKAGES >"$APT_OUT"
fi

if [ -n "$need_base" ]; then
    log "installing:" $need_base
    # shellcheck disable=SC2086
    $SUDO apt-get $APT_QUIET install -y $need_base >"$APT_OUT"
fi

if [ -n "$need_kernel_612" ]; then
    kernel_pkg=$(apt-cache pkgnames linux-image-6.12. \
        | grep -E '^linux-image-6\.12\.[0-9]+\+deb12-amd64$' | sort -V | tail -n 1)
    if [ -z "$kernel_pkg" ]; then
        log "no linux-image-6.12.*+deb12-amd64 package found in bookworm-backports"
        exit 1
    fi
    log "installing guest kernel $kernel_pkg from bookworm-backports"
    # shellcheck disable=SC2086
    $SUDO apt-get $APT_QUIET install -y --no-install-recommends -t bookworm-backports \
        "$kernel_pkg" >"$APT_OUT"
fi

log "done in $(($(date +%s) - start)) s"
