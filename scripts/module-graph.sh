#!/usr/bin/env bash
# The file-level import graph of a crate and its import cycles (crates/ballast-archlint):
#   scripts/module-graph.sh collector|agent|<src-dir>
# prints "a -> b, c" lines (sorted), "cycle: a b c" lines and a count line.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case "${1:-}" in
    collector) src="$root/collector/src" ;;
    agent) src="$root/agent/src" ;;
    "") echo "usage: $0 collector|agent|<src-dir>" >&2; exit 2 ;;
    *) src="$(cd "$1" && pwd)" ;;
esac
cd "$root"
exec cargo run -q -p ballast-archlint --bin module-graph -- "$src"
