#!/usr/bin/env bash
# Benchmarks ballast's OOM parser against grep on a generated 1 GiB kernel log.
#
#   scripts/bench-parser.sh                    # 1 GiB, 1000 reports: the BENCHMARKS.md figures
#   BENCH_BYTES=100000000 BENCH_REPORTS=100 scripts/bench-parser.sh   # a quick run
#
# 1. Builds crates/ballast-oom/examples/scan_bench.rs in release mode.
# 2. Generates the log into a temp file (deterministic seed; removed on exit): dmesg-stamped
#    boot, driver, storage, firewall and audit lines with BENCH_REPORTS full OOM reports
#    spliced in (copies of real fixtures, victims with their own pids).
# 3. Warms the page cache, then times `grep -c 'invoked oom-killer'` 3 times (best kept).
# 4. Runs the parser 3 times on the same file (read into memory, parse, analyze every
#    report; best of each phase) and checks it found exactly the spliced reports. The
#    first run reads into a fresh buffer (page faults on 1 GiB), later runs reuse it.
#    Then the streamed variant: 8 MiB chunks with a 1 MiB overlap, one reused buffer.
# 5. Times parse + analysis of the founding report, debian9-kvm-1g-tor.log.
# Prints MB/s (10^6 bytes) and the parser/grep ratios; exits non-zero if a check fails.
set -euo pipefail

bytes="${BENCH_BYTES:-1073741824}"
reports="${BENCH_REPORTS:-1000}"
runs="${BENCH_RUNS:-3}"
iterations="${BENCH_ITERATIONS:-20000}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

cargo build --quiet --release -p ballast-oom --example scan_bench
bench="$root/target/release/examples/scan_bench"

log="$(mktemp --tmpdir ballast-bench.XXXXXX.log)"
trap 'rm -f "$log" "$log.expect"' EXIT

value() { sed -n "s/^$1=//p" <<<"$2"; }

echo "bench-parser: generating $bytes bytes with $reports reports in $log" >&2
generated="$("$bench" generate "$log" "$bytes" "$reports")"
file_bytes="$(stat -c %s "$log")"

cat "$log" >/dev/null # warm the page cache for grep and the parser alike

grep_best=""
grep_count=0
for _ in $(seq "$runs"); do
    start="$(date +%s.%N)"
    grep_count="$(grep -c 'invoked oom-killer' "$log" || true)"
    end="$(date +%s.%N)"
    secs="$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.4f", e - s }')"
    if [ -z "$grep_best" ] || awk -v a="$secs" -v b="$grep_best" 'BEGIN { exit !(a < b) }'; then
        grep_best="$secs"
    fi
done
if [ "$grep_count" -ne "$reports" ]; then
    echo "bench-parser: grep counted $grep_count lines, expected $reports" >&2
    exit 1
fi

scan="$("$bench" scan "$log" "$runs")"
stream="$("$bench" stream "$log" "$runs")"
founding="$("$bench" founding "$iterations")"

if [ "$(value verified_reports "$scan")" != "$reports" ] ||
    [ "$(value stream_verified_reports "$stream")" != "$reports" ]; then
    echo "bench-parser: the parser did not verify $reports reports:" >&2
    echo "$scan" "$stream" >&2
    exit 1
fi

grep_mbs="$(awk -v b="$file_bytes" -v s="$grep_best" 'BEGIN { printf "%.1f", b / 1e6 / s }')"
scan_mbs="$(value scan_mb_per_s "$scan")"
e2e_mbs="$(value end_to_end_mb_per_s "$scan")"
fresh_mbs="$(value end_to_end_fresh_mb_per_s "$scan")"
stream_mbs="$(value stream_mb_per_s "$stream")"
ratio() { awk -v a="$1" -v b="$grep_mbs" 'BEGIN { printf "%.0f", 100 * a / b }'; }
cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
grep_version="$(grep --version | sed -n '1s/.* //p')"

cat <<REPORT
OOM parser benchmark ($(date -u +%Y-%m-%d), $(nproc) CPUs, $cpu, load average $(cut -d' ' -f1-3 /proc/loadavg))
log: $file_bytes bytes, $reports OOM reports
grep -c 'invoked oom-killer' (GNU grep $grep_version, LANG=${LANG:-unset} LC_ALL=${LC_ALL:-unset}), best of $runs:
    ${grep_best}s  ${grep_mbs} MB/s  count=$grep_count
parser scan, in memory (parse), best of $runs:
    $(value scan_secs "$scan")s  ${scan_mbs} MB/s  $(ratio "$scan_mbs") % of grep  reports=$(value reports "$scan"), all verified
parser end to end (read + parse + analyze every report), reused buffer, best of $runs:
    $(value end_to_end_secs "$scan")s  ${e2e_mbs} MB/s  $(ratio "$e2e_mbs") % of grep  (read $(value read_secs "$scan")s, analyze all $(value analyze_all_secs "$scan")s)
parser end to end, first run (read into a fresh buffer):
    $(value end_to_end_fresh_secs "$scan")s  ${fresh_mbs} MB/s  $(ratio "$fresh_mbs") % of grep  (read $(value read_fresh_secs "$scan")s)
parser end to end, streamed (8 MiB chunks, 1 MiB carried over, one reused buffer), best of $runs:
    $(value stream_secs "$stream")s  ${stream_mbs} MB/s  $(ratio "$stream_mbs") % of grep  reports=$(value stream_reports "$stream"), all verified
founding report ($(value founding_bytes "$founding") bytes, mean of $(value founding_iterations "$founding") iterations):
    parse $(value founding_parse_us "$founding") us, analyze $(value founding_analyze_us "$founding") us, parse + analyze $(value founding_parse_analyze_us "$founding") us
REPORT
