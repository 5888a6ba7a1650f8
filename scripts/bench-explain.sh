#!/usr/bin/env bash
# Issue 17 items 5 and 6: hostile-line parse speed, explain's RSS on a huge report and
# its end-to-end scan speed, each against a baseline measured in the same run.
#
#   scripts/bench-explain.sh            # the BENCHMARKS.md figures (~4 GiB of temp files)
#   BENCH_HOSTILE_MIB=16 BENCH_SCAN_MIB=64 BENCH_RSS_MIB=256 scripts/bench-explain.sh   # quick
#
# Inputs are generated into a temp dir (removed on exit), never committed:
# 1. hostile line: `tor invoked oom-killer: gfp_mask=0x0, order=0 ` repeated on ONE line
#    (BENCH_HOSTILE_MIB, default 128), and as baseline a normal kernel log of the same
#    size (scan_bench generate, one report per 256 KiB). Both parsed in memory by
#    `scan_bench scan` (release), best of 3: MB/s and the ratio hostile/normal; then
#    the hostile line through `ballast-agent explain --json` (time and peak RSS).
# 2. scan: a BENCH_SCAN_MIB (256) log with 500 reports; `grep -c 'invoked oom-killer'`
#    and `ballast-agent explain --json FILE > /dev/null` (release), best of 3 each.
# 3. RSS: a BENCH_RSS_MIB (1024) log with one report whose task table has
#    BENCH_RSS_ROWS (2 000 000) rows; `ballast-agent explain --json` peak RSS
#    (/usr/bin/time %M) against the file's size.
# MB = 10^6 bytes. Exits non-zero if a check fails (report counts, RSS over 64 MiB).
set -euo pipefail

hostile_mib="${BENCH_HOSTILE_MIB:-128}"
scan_mib="${BENCH_SCAN_MIB:-256}"
rss_mib="${BENCH_RSS_MIB:-1024}"
rss_rows="${BENCH_RSS_ROWS:-2000000}"
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"

cargo build --quiet --release -p ballast-oom --example scan_bench
cargo build --quiet --release -p ballast-agent --bin ballast-agent
bench="$target/release/examples/scan_bench"
agent="$target/release/ballast-agent"

dir="$(mktemp -d --tmpdir ballast-bench-explain.XXXXXX)"
trap 'rm -rf "$dir"' EXIT

value() { sed -n "s/^$1=//p" <<<"$2"; }
# best_secs CMD...: best wall time of 3 runs, output to a file (GNU grep stops at the
# first match when its output is /dev/null).
best_secs() {
    local best="" start end secs
    for _ in 1 2 3; do
        start="$(date +%s.%N)"
        "$@" >"$dir/out"
        end="$(date +%s.%N)"
        secs="$(awk -v s="$start" -v e="$end" 'BEGIN { printf "%.4f", e - s }')"
        if [ -z "$best" ] || awk -v a="$secs" -v b="$best" 'BEGIN { exit !(a < b) }'; then
            best="$secs"
        fi
    done
    echo "$best"
}
mbs() { awk -v b="$1" -v s="$2" 'BEGIN { printf "%.1f", b / 1e6 / s }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }

# 1. Hostile line against a normal log of the same size.
hostile="$dir/hostile.log"
yes 'tor invoked oom-killer: gfp_mask=0x0, order=0 ' | tr -d '\n' |
    head -c "$((hostile_mib << 20))" >"$hostile" || true
echo >>"$hostile"
normal="$dir/normal.log"
"$bench" generate "$normal" "$((hostile_mib << 20))" "$((hostile_mib * 4))" >/dev/null
rm -f "$normal.expect" # scan verifies nothing: this is throughput only
hostile_scan="$("$bench" scan "$hostile" 3)"
normal_scan="$("$bench" scan "$normal" 3)"
hostile_mbs="$(value scan_mb_per_s "$hostile_scan")"
normal_mbs="$(value scan_mb_per_s "$normal_scan")"
hostile_cli="$(best_secs "$agent" explain --json "$hostile")"
hostile_bytes="$(stat -c %s "$hostile")"
hostile_rss_kib="$( { /usr/bin/time -f '%M' "$agent" explain --json "$hostile" >"$dir/out"; } 2>&1 | tail -1)"

# 2. explain --json against grep -c on a log with 500 reports.
scanlog="$dir/scan.log"
"$bench" generate "$scanlog" "$((scan_mib << 20))" 500 >/dev/null
scan_bytes="$(stat -c %s "$scanlog")"
cat "$scanlog" >/dev/null
grep_count="$(grep -c 'invoked oom-killer' "$scanlog" || true)"
reports="$("$agent" explain --json "$scanlog" | grep -c '"first_line"' || true)"
if [ "$grep_count" != 500 ] || [ "$reports" != 500 ]; then
    echo "bench-explain: grep counted $grep_count, explain found $reports reports; expected 500" >&2
    exit 1
fi
grep_secs="$(best_secs grep -c 'invoked oom-killer' "$scanlog")"
explain_secs="$(best_secs "$agent" explain --json "$scanlog")"
grep_mbs="$(mbs "$scan_bytes" "$grep_secs")"
explain_mbs="$(mbs "$scan_bytes" "$explain_secs")"

# 3. RSS on a log with a report of a 2-million-row task table.
rsslog="$dir/rss.log"
table="$dir/table.log"
awk -v rows="$rss_rows" 'BEGIN {
    print "[53542.948000] tor invoked oom-killer: gfp_mask=0x24201ca, order=0, oom_score_adj=0"
    print "[53542.948001] Mem-Info:"
    print "[53542.948002] active_anon:93739 inactive_anon:0 isolated_anon:0"
    print "[53542.948003] [ pid ]   uid  tgid total_vm      rss nr_ptes nr_pmds swapents oom_score_adj name"
    for (i = 1; i <= rows; i++)
        printf "[53542.948004] [%7d]  1000 %7d    24521     1012      48       3        0             0 worker\n", i, i
    print "[53542.948005] Out of memory: Kill process 1439 (tor) score 368 or sacrifice child"
    print "[53542.948006] Killed process 1439 (tor) total-vm:557104kB, anon-rss:374956kB, file-rss:0kB, shmem-rss:0kB"
}' >"$table"
table_bytes="$(stat -c %s "$table")"
"$bench" generate "$rsslog" "$(( (rss_mib << 20) - table_bytes ))" 10 >/dev/null
cat "$table" >>"$rsslog"
rm -f "$table"
rss_bytes="$(stat -c %s "$rsslog")"
rss_kib="$( { /usr/bin/time -f '%M' "$agent" explain --json "$rsslog" >/dev/null; } 2>&1 | tail -1)"
rss_reports="$("$agent" explain --json "$rsslog" | grep -c '"first_line"' || true)"

cpu="$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
cat <<REPORT
explain benchmark ($(date -u +%Y-%m-%d), $(nproc) CPUs, $cpu, load average $(cut -d' ' -f1-3 /proc/loadavg))
1. parse in memory (scan_bench scan, best of 3), $hostile_bytes bytes each:
    hostile line (one line of repeated headers): $(value scan_secs "$hostile_scan")s  ${hostile_mbs} MB/s  reports=$(value reports "$hostile_scan")
    normal log (baseline):                       $(value scan_secs "$normal_scan")s  ${normal_mbs} MB/s  reports=$(value reports "$normal_scan")
    hostile / normal: $(ratio "$hostile_mbs" "$normal_mbs")
    hostile line through explain --json (best of 3): ${hostile_cli}s  $(mbs "$hostile_bytes" "$hostile_cli") MB/s, peak RSS ${hostile_rss_kib} KiB
2. scan, $scan_bytes bytes, 500 reports (best of 3):
    grep -c 'invoked oom-killer': ${grep_secs}s  ${grep_mbs} MB/s
    ballast-agent explain --json: ${explain_secs}s  ${explain_mbs} MB/s
    explain / grep: $(ratio "$explain_mbs" "$grep_mbs")
3. RSS, $rss_bytes bytes with a $rss_rows-row task table: explain --json peak RSS ${rss_kib} KiB ($(awk -v k="$rss_kib" 'BEGIN { printf "%.1f", k / 1024 }') MiB), reports=$rss_reports
REPORT
if [ "$rss_kib" -gt $((64 * 1024)) ]; then
    echo "bench-explain: RSS ${rss_kib} KiB is over 64 MiB" >&2
    exit 1
fi
