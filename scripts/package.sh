#!/bin/sh
# Build ballast's Debian packages with cargo-deb (docs/deploy.md):
#
#   ballast-agent          the agent, QMP backend only (Proxmox VE); no libvirt0
#   ballast-agent-libvirt  the agent with the libvirt backend (Depends: libvirt0)
#   ballast-collector      the collector, plus the Grafana dashboard and alert rules
#
# Steps (cargo-deb only packages, --no-build):
#   1. installs cargo-deb from crates.io when it is missing (idempotent);
#   2. one release build of the collector and the agent without default features (no
#      libvirt), so both share one set of compiled dependencies; writes the
#      collector's packaged configuration (config/collector.example.yaml when it
#      exists, else `ballast-collector --print-default-config`); packages both;
#   3. the same build with the agent's default features: only the agent and the
#      libvirt bindings are compiled again; packages ballast-agent-libvirt.
# Step 3 overwrites target/<profile>/ballast-agent, so the order matters.
#
# Prints the paths of the three .deb files on stdout, one a line; progress on stderr.
# Environment: BALLAST_DEB_OUT (default target/debian) is where the .deb files go;
# BALLAST_CARGO_PROFILE (default release; `dist` = release + fat LTO, Cargo.toml: 0.3 MiB
# less resident at 500 VMs for ~+90 s of link per binary, BENCHMARKS.md) the build profile.
set -eu
cd "$(dirname "$0")/.."

log() { printf 'package: %s\n' "$*" >&2; }

CARGO_DEB_VERSION=3.8.0
if ! cargo deb --version 2>/dev/null | grep -q "$CARGO_DEB_VERSION"; then
    log "installing cargo-deb $CARGO_DEB_VERSION (crates.io)"
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked >&2
fi

target_dir=$(cargo metadata --format-version 1 --no-deps \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
out="${BALLAST_DEB_OUT:-$target_dir/debian}"
profile="${BALLAST_CARGO_PROFILE:-release}"
mkdir -p "$out"

# deb FLAVOUR-ARGS...: package what target/$profile holds now; print the .deb path.
deb() {
    deb_path=$(cargo deb --no-build --strip --profile "$profile" --output "$out" "$@")
    printf '%s\n' "$deb_path" | tail -n 1
}

log "building ballast-collector and ballast-agent without libvirt ($profile)"
cargo build --profile "$profile" --locked -p ballast-collector -p ballast-agent --no-default-features >&2
collector_yaml="$target_dir/$profile/ballast-collector.example.yaml"
if [ -f config/collector.example.yaml ]; then
    cp config/collector.example.yaml "$collector_yaml"
else
    log "config/collector.example.yaml is missing: packaging --print-default-config"
    "$target_dir/$profile/ballast-collector" --print-default-config >"$collector_yaml"
fi
deb -p ballast-collector
deb -p ballast-agent

log "building ballast-agent with libvirt ($profile)"
cargo build --profile "$profile" --locked -p ballast-collector -p ballast-agent >&2
deb -p ballast-agent --variant libvirt
