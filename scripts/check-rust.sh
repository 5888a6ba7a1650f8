#!/bin/sh
# Fails with a clear message when cargo is missing or older than the workspace's
# rust-version (Cargo.toml; the dependencies set the floor). Called by test.sh and
# quickstart.sh before they build anything.
set -eu
cd "$(dirname "$0")/.."
need=$(sed -n 's/^rust-version = "\([0-9.]*\)"/\1/p' Cargo.toml)
if ! command -v cargo >/dev/null 2>&1; then
    echo "ballast: cargo is needed (Rust $need or newer: https://rustup.rs; Debian 12's own cargo is too old)" >&2
    exit 2
fi
have=$(rustc --version 2>/dev/null | sed -n 's/^rustc \([0-9]*\.[0-9]*\).*/\1/p')
older=$(printf '%s\n%s\n' "$need" "${have:-0.0}" | sort -t. -k1,1n -k2,2n | head -n1)
if [ "$older" != "$need" ]; then
    echo "ballast: Rust $need or newer is needed, this is ${have:-unknown} (rustup update, or https://rustup.rs)" >&2
    exit 2
fi
