#!/bin/sh
# Installs what ballast needs on a Debian 12 (bookworm) or Proxmox VE 8 host, in two sets:
#
#   scripts/install-deps.sh runtime [--yes]   build and run ballast, boot the demo guest
#                                              (scripts/quickstart.sh)
#   scripts/install-deps.sh test [--yes]      the runtime set plus the test suite's tools
#                                              (scripts/test.sh; the default without a set)
#
# What each set holds (README "Set-up" lists the same):
#   runtime  gcc libc6-dev pkg-config curl python3 ca-certificates (build, quickstart);
#            busybox-static cpio gzip xz-utils zstd kmod qemu-guest-agent (the demo
#            guest's initramfs); and, except on Proxmox VE: libvirt-daemon-system
#            libvirt-clients libvirt-dev, linux-image-amd64 (the guest kernel) and
#            qemu-system-x86 from the main suite (QEMU 7.2) when no QEMU is installed.
#   test     the runtime set plus postgresql prometheus debootstrap chromium faketime;
#            except on Proxmox VE also QEMU 10 and the Linux 6.12 guest kernel from
#            bookworm-backports (an apt source it adds), the stack docs/harness.md names.
#
# Host safety (scripts/host-kind.sh tells the kind):
#   * Proxmox VE: never installs, upgrades or replaces QEMU (Proxmox's pve-qemu-kvm
#     Conflicts with and Replaces Debian's qemu-system-x86, qemu-utils, ...), libvirt or
#     a kernel, and adds no apt source. The real-VM tests then skip.
#   * a host where QEMU or libvirt is already installed: the installed QEMU is used when
#     it is 7.2 or newer (runtime), no apt source is added for the runtime set, and
#     before installing anything the script lists the packages and asks.
#   * a fresh host (neither installed): installs without asking.
#   --yes (or CI=true) answers the question for scripts; without a terminal to ask on
#   and without --yes it installs nothing and exits 3.
#
# Idempotent and quiet: when every package is already present (checked with
# dpkg-query) it returns in well under a second without calling apt.
#
# Environment:
#   BALLAST_SKIP_INSTALL=1   do nothing (machines provisioned another way)
#   BALLAST_APT_VERBOSE=1    show apt's output
#   BALLAST_APT_SIMULATE=1   apt-get -s: print apt's plan (Inst/Remv/Conf lines) on stdout,
#                            change nothing (no package, no apt source)
set -eu

usage="usage: scripts/install-deps.sh [runtime|test] [--yes]"
set_name=test
assume_yes=0
for arg in "$@"; do
    case "$arg" in
        runtime | test) set_name=$arg ;;
        --yes | -y) assume_yes=1 ;;
        -h | --help)
            echo "$usage"
            exit 0
            ;;
        *)
            echo "install-deps: unknown argument '$arg' ($usage)" >&2
            exit 2
            ;;
    esac
done

if [ "${BALLAST_SKIP_INSTALL:-0}" = 1 ]; then
    exit 0
fi
# The same rule as the tests' (crates/ballast-testenv): CI set to anything but empty,
# 0, false or no, in any case.
case "$(printf '%s' "${CI:-}" | tr '[:upper:]' '[:lower:]' | tr -d ' ')" in
    "" | 0 | false | no) ;;
    *) assume_yes=1 ;;
esac

log() { printf 'install-deps: %s\n' "$*" >&2; }

SUDO=
if [ "$(id -u)" != 0 ]; then
    SUDO=sudo
fi

simulate=0
verbose=0
[ "${BALLAST_APT_VERBOSE:-0}" = 1 ] && verbose=1
if [ "${BALLAST_APT_SIMULATE:-0}" = 1 ]; then
    simulate=1
fi

# --- The sets ------------------------------------------------------------------------
# Build ballast and run the quickstart (curl and python3 read the collector's API).
BUILD_PACKAGES="gcc libc6-dev pkg-config curl python3 ca-certificates"
# The demo guest's initramfs (crates/ballast-testvm/src/image.rs): busybox, the memory
# hog (gcc, above), qemu-ga, virtio modules (kmod, xz, zstd), cpio + gzip.
IMAGE_PACKAGES="busybox-static cpio gzip xz-utils zstd kmod qemu-guest-agent"
# Not on Proxmox VE: libvirt for the demo guest, libvirt-dev for the agent's libvirt
# backend, Debian's kernel as the guest kernel.
LIBVIRT_PACKAGES="libvirt-daemon-system libvirt-clients libvirt-dev"
GUEST_KERNEL_PACKAGES="linux-image-amd64"
# The test suite's tools.
TEST_PACKAGES="postgresql prometheus debootstrap chromium faketime"
# The test harness's QEMU 10, from bookworm-backports (with it in place nothing pulls
# the 7.2 packages; this also avoids the "newer qemu-utils Breaks qemu-system-common
# 7.2" trap).
BACKPORTS_QEMU_PACKAGES="qemu-system-x86 qemu-utils qemu-system-common qemu-system-data
qemu-system-gui qemu-block-extra qemu-guest-agent"
# The demo guest needs at least this QEMU.
QEMU_FLOOR=7.2
# -------------------------------------------------------------------------------------

BACKPORTS_FILE=/etc/apt/sources.list.d/ballast-bookworm-backports.sources

. "$(dirname "$0")/lib/dpkg.sh"

# missing PKG...: print the packages that are not installed.
missing() {
    for pkg in "$@"; do
        is_installed "$pkg" || printf '%s\n' "$pkg"
    done
}

# qemu_version: the installed qemu-system-x86_64's MAJOR.MINOR, empty when there is none.
qemu_version() {
    qemu-system-x86_64 --version 2>/dev/null \
        | sed -n '1s/.*[Vv]ersion \([0-9][0-9]*\.[0-9][0-9]*\).*/\1/p'
}

# version_at_least HAVE NEED: MAJOR.MINOR comparison.
version_at_least() {
    lowest=$(printf '%s\n%s\n' "$1" "$2" | sort -t. -k1,1n -k2,2n | head -n1)
    [ "$lowest" = "$2" ]
}

# qemu_is_backports: true when the installed qemu-system-x86 package is QEMU >= 8.
qemu_is_backports() {
    version=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null) || return 1
    dpkg --compare-versions "$version" ge 1:8
}

# installed_kernel SERIES: print the installed Debian kernel image package of SERIES (6.1, 6.12).
installed_kernel() {
    dpkg-query -W -f='${db:Status-Abbrev} ${Package}\n' "linux-image-$1.*-amd64" 2>/dev/null \
        | awk '$1 == "ii" && $2 !~ /unsigned|dbg/ { print $2 }' | sort -V | tail -n 1
}

kind=$("$(dirname "$0")/host-kind.sh")
codename=$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release 2>/dev/null | tr -d '"')
log "host: $kind (${codename:-unknown release}), set: $set_name"

# shellcheck disable=SC2086 # word splitting of the package lists is intended
need_main=$(missing $BUILD_PACKAGES $IMAGE_PACKAGES)
need_backports=
need_kernel_612=

if [ "$kind" = proxmox ]; then
    log "Proxmox VE: QEMU (pve-qemu-kvm), libvirt, kernels and apt sources stay as they are"
else
    # shellcheck disable=SC2086
    need_main="$need_main
$(missing $LIBVIRT_PACKAGES)"
    if [ -z "$(installed_kernel 6.1)" ]; then
        # shellcheck disable=SC2086
        need_main="$need_main
$(missing $GUEST_KERNEL_PACKAGES)"
    fi
    have_qemu=$(qemu_version)
    if [ "$set_name" = test ] && [ "$codename" = bookworm ]; then
        # shellcheck disable=SC2086
        need_backports=$(missing $BACKPORTS_QEMU_PACKAGES)
        if [ -z "$need_backports" ] && ! qemu_is_backports; then
            need_backports=$BACKPORTS_QEMU_PACKAGES
        fi
        [ -z "$(installed_kernel 6.12)" ] && need_kernel_612=yes
    elif [ -z "$have_qemu" ]; then
        need_main="$need_main
qemu-system-x86"
    elif ! version_at_least "$have_qemu" "$QEMU_FLOOR"; then
        log "the installed QEMU is $have_qemu; the demo guest needs $QEMU_FLOOR or newer"
        log "ballast does not upgrade an installed QEMU: upgrade it yourself, or use 'quickstart.sh FILE' to explain logs"
        exit 1
    fi
fi
if [ "$set_name" = test ]; then
    # shellcheck disable=SC2086
    need_main="$need_main
$(missing $TEST_PACKAGES)"
fi

# One line each, each package once, in the order first named; what comes from
# bookworm-backports is not asked of the main suite as well.
# shellcheck disable=SC2086
need_backports=$(printf '%s\n' $need_backports | awk 'NF' | tr '\n' ' ' | sed 's/ $//')
# shellcheck disable=SC2086
need_main=$(printf '%s\n' $need_main | awk -v skip=" $need_backports " \
    'NF && !seen[$0]++ && index(skip, " " $0 " ") == 0' | tr '\n' ' ' | sed 's/ $//')

if [ -z "$need_main" ] && [ -z "$need_backports" ] && [ -z "$need_kernel_612" ]; then
    log "nothing to install"
    exit 0
fi

add_source=0
if { [ -n "$need_backports" ] || [ -n "$need_kernel_612" ]; } \
    && ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
    add_source=1
fi

plan="$need_main"
[ -n "$need_backports" ] && plan="$plan${plan:+ }$need_backports (bookworm-backports)"
[ -n "$need_kernel_612" ] && plan="$plan${plan:+ }linux-image-6.12.*+deb12-amd64 (bookworm-backports)"
log "will install: $plan"
[ "$add_source" = 1 ] && log "will add the apt source bookworm-backports ($BACKPORTS_FILE)"

if [ "$kind" != fresh ] && [ "$assume_yes" != 1 ]; then
    if [ -t 0 ]; then
        printf 'install-deps: this host already has QEMU, libvirt or Proxmox VE; install the above? [y/N] ' >&2
        read -r answer || answer=
        case "$answer" in
            y | Y | yes | YES) ;;
            *)
                log "nothing installed"
                exit 3
                ;;
        esac
    else
        log "this host already has QEMU, libvirt or Proxmox VE and there is no terminal to ask: nothing installed; rerun with --yes to install the above"
        exit 3
    fi
fi

start=$(date +%s)
export DEBIAN_FRONTEND=noninteractive

# apt_install ARGS...: apt-get install, or its simulation (the plan on stdout, as is: no
# /dev/stdout, which a chroot without /proc lacks). Upgrade-By-Source-Package=false: apt
# 2.6 otherwise upgrades the installed QEMU along with qemu-guest-agent (same source).
apt_install() {
    if [ "$simulate" = 1 ]; then
        $SUDO apt-get -s -o APT::Get::Upgrade-By-Source-Package=false install -y "$@"
    elif [ "$verbose" = 1 ]; then
        $SUDO apt-get -o APT::Get::Upgrade-By-Source-Package=false install -y "$@" >&2
    else
        $SUDO apt-get -q -q -o APT::Get::Upgrade-By-Source-Package=false install -y "$@" >/dev/null
    fi
}

if [ "$add_source" = 1 ]; then
    if [ "$simulate" = 1 ]; then
        log "simulation: not adding the apt source; the bookworm-backports part is not simulated"
        need_backports=
        need_kernel_612=
    else
        log "adding bookworm-backports apt source ($BACKPORTS_FILE)"
        $SUDO tee "$BACKPORTS_FILE" >/dev/null <<'EOF'
# Added by ballast scripts/install-deps.sh (test set): QEMU 10 and Linux 6.12 for the test harness.
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
fi

log "apt-get update"
# shellcheck disable=SC2086
$SUDO apt-get -q -q update >/dev/null

# QEMU 10 first: with it in place, nothing pulls the bookworm 7.2 packages.
if [ -n "$need_backports" ]; then
    log "installing from bookworm-backports: $need_backports"
    # shellcheck disable=SC2086
    apt_install -t bookworm-backports $need_backports
fi

if [ -n "$need_main" ]; then
    log "installing: $need_main"
    # shellcheck disable=SC2086
    apt_install $need_main
fi

if [ -n "$need_kernel_612" ]; then
    kernel_pkg=$(apt-cache pkgnames linux-image-6.12. \
        | grep -E '^linux-image-6\.12\.[0-9]+\+deb12-amd64$' | sort -V | tail -n 1)
    if [ -z "$kernel_pkg" ]; then
        log "no linux-image-6.12.*+deb12-amd64 package found in bookworm-backports"
        exit 1
    fi
    log "installing guest kernel $kernel_pkg from bookworm-backports"
    apt_install --no-install-recommends -t bookworm-backports "$kernel_pkg"
fi

log "done in $(($(date +%s) - start)) s"
