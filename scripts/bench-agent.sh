#!/usr/bin/env bash
# Agent polling benchmark (issue 4; figures in BENCHMARKS.md, "Agent polling").
#
# Compares the agent's per-poll path (agent/examples/poll_bench.rs: balloon_samples
# + Fleet::apply_poll) with a minimal python3-libvirt getAllDomainStats loop
# (scripts/bench/libvirt_poll.py) on the same domains, in the same run, interleaved
# (agent/python, python/agent, agent/python ...), BENCH_REPS times; prints the medians.
#   (a) BENCH_REAL real guests booted to LAB-READY (256 MiB, 1 vCPU, stats period 2);
#   (b) BENCH_PAUSED domains started paused (`virsh create --paused`, 64 MiB each;
#       QEMU never runs the guest, so libvirt reports 4 balloon fields instead of 14).
#       The count is the largest that fits in MemAvailable minus BENCH_RESERVE_MIB,
#       capped at BENCH_PAUSED (default 250); fewer than 200 is an error.
# Then (c) agent/examples/history_rss.rs: RSS at 500 VMs x 1 h and the leak check.
#
#   scripts/bench-agent.sh                          # everything (~15-25 min on 2 cores)
#   BENCH_SKIP=real,history scripts/bench-agent.sh  # only the paused-domain part
#
# Environment (defaults): BENCH_REAL=10 BENCH_PAUSED=250 BENCH_REPS=3
#   BENCH_POLLS_REAL=200 BENCH_POLLS_PAUSED=50 BENCH_RESERVE_MIB=6144
#   BENCH_SKIP= (comma list of real,paused,history) BENCH_URI=qemu:///system
#   BALLAST_LAB_DIR (the harness's; the guest image is taken from it)
# Domains are transient, named ballast-bench-<pid>-<n>, and destroyed by a trap
# on any exit. Other engineers' domains on the same libvirtd are polled too (by
# both sides alike); the domain counts are printed.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
URI=${BENCH_URI:-qemu:///system}
REAL=${BENCH_REAL:-10}
PAUSED_MAX=${BENCH_PAUSED:-250}
REPS=${BENCH_REPS:-3}
POLLS_REAL=${BENCH_POLLS_REAL:-200}
POLLS_PAUSED=${BENCH_POLLS_PAUSED:-50}
RESERVE_MIB=${BENCH_RESERVE_MIB:-6144}
SKIP=${BENCH_SKIP:-}
. "$REPO/scripts/lab/lab-dir.sh"
PREFIX="ballast-bench-$$"
PYTHON=/usr/bin/python3 # Debian's python3-libvirt lives in the system python
WORK=$(mktemp -d /tmp/ballast-bench.XXXXXX)
chmod 755 "$WORK"

log() { printf '[bench-agent %s] %s\n' "$(date +%T)" "$*" >&2; }
skipped() { case ",$SKIP," in *",$1,"*) return 0 ;; *) return 1 ;; esac; }
vsh() { virsh -q -c "$URI" "$@"; }
loadavg() { cut -d' ' -f1-3 /proc/loadavg; }
mem_available_mib() { awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo; }

our_domains() { vsh list --name | grep "^$PREFIX-" || true; }

cleanup() {
    local names
    names=$(our_domains)
    if [ -n "$names" ]; then
        log "destroying $(printf '%s\n' "$names" | wc -l) bench domains"
        # One virsh process for all of them (transient: destroy removes them).
        printf 'destroy %s\n' $names | virsh -q -c "$URI" >/dev/null 2>&1 || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- prerequisites ---------------------------------------------------------------
"$REPO/scripts/install-deps.sh"
if ! "$PYTHON" -c 'import libvirt' 2>/dev/null; then
    log "installing python3-libvirt (the baseline)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q -q python3-libvirt >/dev/null
fi
cd "$REPO"
log "building the examples (release)"
cargo build -q --release -p ballast-agent --example poll_bench --example history_rss
cargo build -q --release -p ballast-testvm --example lab_info
# Starts virtlogd + libvirtd when needed and builds the guest images.
"$REPO/target/release/examples/lab_info" >"$WORK/lab_info.txt"
IMAGE=$(find "$LAB_DIR/images" -maxdepth 1 -type d -name '6.1.*' | sort -V | tail -n 1)
[ -n "$IMAGE" ] || { log "no 6.1 guest image under $LAB_DIR/images"; exit 1; }
# Private copies: libvirt relabels kernel/initrd of running domains.
cp "$IMAGE/vmlinuz" "$IMAGE/initramfs.cpio.gz" "$WORK/"
chmod 644 "$WORK/vmlinuz" "$WORK/initramfs.cpio.gz"
POLL_BENCH=$REPO/target/release/examples/poll_bench
HISTORY_RSS=$REPO/target/release/examples/history_rss

# domain_xml NAME MEMORY_MIB SERIAL_LOG|"" > file
domain_xml() {
    local serial="<serial type='pty'><target port='0'/></serial>"
    if [ -n "$3" ]; then
        serial="<serial type='file'><source path='$3' append='off'/><target port='0'/></serial>"
    fi
    cat <<EOF
<domain type='qemu'>
  <name>$1</name>
  <memory unit='MiB'>$2</memory><currentMemory unit='MiB'>$2</currentMemory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type>
    <kernel>$WORK/vmlinuz</kernel><initrd>$WORK/initramfs.cpio.gz</initrd>
    <cmdline>console=ttyS0 loglevel=7 panic=-1</cmdline></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <controller type='usb' model='none'/>
    $serial
    <channel type='unix'><target type='virtio' name='org.qemu.guest_agent.0'/></channel>
    <memballoon model='virtio'><stats period='2'/></memballoon>
  </devices>
</domain>
EOF
}

# create_domains FIRST LAST MEMORY_MIB PAUSED(0|1) SERIAL(0|1): one virsh process.
create_domains() {
    local n flags=""
    [ "$4" = 1 ] && flags="--paused"
    for n in $(seq "$1" "$2"); do
        local serial=""
        [ "$5" = 1 ] && serial="$WORK/$PREFIX-$n.serial.log"
        domain_xml "$PREFIX-$n" "$3" "$serial" >"$WORK/$PREFIX-$n.xml"
        printf 'create %s %s\n' "$WORK/$PREFIX-$n.xml" "$flags"
    done | virsh -q -c "$URI" >/dev/null
}

# qemu_rss_mib: total VmRSS of our domains' QEMU processes.
qemu_rss_mib() {
    local name total=0 pid rss
    for name in $(our_domains); do
        pid=$(cat "/run/libvirt/qemu/$name.pid" 2>/dev/null) || continue
        rss=$(awk '/^VmRSS:/ { print $2 }' "/proc/$pid/status" 2>/dev/null) || continue
        total=$((total + ${rss:-0}))
    done
    echo $((total / 1024))
}

field() { sed -n "s/.* $1=\([^ ]*\).*/\1/p"; }

# run_pair LABEL POLLS: REPS interleaved runs of both; results into $WORK/LABEL.results
run_pair() {
    local label=$1 polls=$2 rep order impl out
    : >"$WORK/$label.results"
    for rep in $(seq 1 "$REPS"); do
        if [ $((rep % 2)) = 1 ]; then order="agent python"; else order="python agent"; fi
        for impl in $order; do
            if [ "$impl" = agent ]; then
                out=$("$POLL_BENCH" "$URI" "$polls" | grep '^RESULT')
            else
                out=$("$PYTHON" "$REPO/scripts/bench/libvirt_poll.py" "$URI" "$polls" | grep '^RESULT')
            fi
            log "$label rep $rep (load $(loadavg)): $out"
            printf '%s rep=%s load=%s\n' "$out" "$rep" "$(loadavg | tr ' ' /)" >>"$WORK/$label.results"
        done
    done
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# summarize LABEL: one table row of medians.
summarize() {
    local label=$1 file=$WORK/$1.results
    local a_cpu p_cpu a_wall p_wall a_rss p_rss a_anon p_anon domains ratio wratio
    a_cpu=$(grep 'impl=agent' "$file" | field cpu_ms_per_poll | median)
    p_cpu=$(grep 'impl=python' "$file" | field cpu_ms_per_poll | median)
    a_wall=$(grep 'impl=agent' "$file" | field wall_ms_per_poll | median)
    p_wall=$(grep 'impl=python' "$file" | field wall_ms_per_poll | median)
    a_rss=$(grep 'impl=agent' "$file" | field rss_kib | median)
    p_rss=$(grep 'impl=python' "$file" | field rss_kib | median)
    a_anon=$(grep 'impl=agent' "$file" | field rss_anon_kib | median)
    p_anon=$(grep 'impl=python' "$file" | field rss_anon_kib | median)
    domains=$(field domains <"$file" | tr '.' ' ' | awk '{ print $1; print $NF }' | sort -n | uniq | paste -sd- -)
    ratio=$(awk -v a="$a_cpu" -v p="$p_cpu" 'BEGIN { printf "%.2f", a / p }')
    wratio=$(awk -v a="$a_wall" -v p="$p_wall" 'BEGIN { printf "%.2f", a / p }')
    printf '| %s | %s | %.3f | %.3f | **%sx** | %.1f | %.1f | %sx | %.1f (%.1f anon) | %.1f (%.1f anon) |\n' \
        "$label" "$domains" "$a_cpu" "$p_cpu" "$ratio" "$a_wall" "$p_wall" "$wratio" \
        "$(echo "$a_rss / 1024" | bc -l)" "$(echo "$a_anon / 1024" | bc -l)" \
        "$(echo "$p_rss / 1024" | bc -l)" "$(echo "$p_anon / 1024" | bc -l)" >>"$WORK/table.md"
}

log "start: load $(loadavg), MemAvailable $(mem_available_mib) MiB, $(nproc) CPUs, libvirt $(virsh -c "$URI" version --daemon 2>/dev/null | awk '/daemon/ { print $NF }')"
: >"$WORK/table.md"

# --- (a) real booted guests --------------------------------------------------------
if ! skipped real; then
    log "(a) booting $REAL guests (256 MiB, TCG)"
    t0=$(date +%s)
    create_domains 1 "$REAL" 256 0 1
    deadline=$((t0 + 600))
    for n in $(seq 1 "$REAL"); do
        until grep -qs 'LAB-READY' "$WORK/$PREFIX-$n.serial.log"; do
            [ "$(date +%s)" -lt "$deadline" ] || { log "guest $n not ready after 600 s"; exit 1; }
            sleep 1
        done
    done
    log "(a) all $REAL ready after $(($(date +%s) - t0)) s; waiting for the first balloon stats"
    for n in $(seq 1 "$REAL"); do
        until vsh domstats --balloon "$PREFIX-$n" | grep -q 'balloon.usable='; do
            [ "$(date +%s)" -lt "$deadline" ] || { log "guest $n has no stats"; exit 1; }
            sleep 1
        done
    done
    sleep 5 # let the boot load settle
    log "(a) QEMU RSS of the $REAL guests: $(qemu_rss_mib) MiB; MemAvailable $(mem_available_mib) MiB"
    run_pair "real" "$POLLS_REAL"
    summarize "real"
    cleanup_names=$(our_domains)
    printf 'destroy %s\n' $cleanup_names | virsh -q -c "$URI" >/dev/null
fi

# --- (b) paused domains -------------------------------------------------------------
if ! skipped paused; then
    probe=10
    before=$(mem_available_mib)
    log "(b) sizing: $probe paused domains of 64 MiB (MemAvailable $before MiB)"
    create_domains 1 "$probe" 64 1 0
    sleep 2
    after=$(mem_available_mib)
    per_domain=$(((before - after + probe - 1) / probe))
    [ "$per_domain" -ge 20 ] || per_domain=20 # noise guard: never assume less than measured QEMU anon
    fits=$(((after - RESERVE_MIB) / per_domain + probe))
    count=$((fits < PAUSED_MAX ? fits : PAUSED_MAX))
    log "(b) ~$per_domain MiB MemAvailable per paused domain (QEMU RSS $(qemu_rss_mib) MiB for $probe, shared pages counted each time); $fits fit above a $RESERVE_MIB MiB reserve -> $count"
    if [ "$count" -lt 200 ]; then
        log "(b) only $count paused domains fit; need >= 200"
        exit 1
    fi
    t0=$(date +%s)
    create_domains $((probe + 1)) "$count" 64 1 0
    log "(b) $count paused domains created in $(($(date +%s) - t0)) s; MemAvailable $(mem_available_mib) MiB"
    sleep 5
    run_pair "paused" "$POLLS_PAUSED"
    summarize "paused"
    cleanup_names=$(our_domains)
    printf 'destroy %s\n' $cleanup_names | virsh -q -c "$URI" >/dev/null
fi

if [ -s "$WORK/table.md" ]; then
    echo
    echo "Median of $REPS interleaved runs each; CPU = getrusage user+sys of the process / polls."
    echo
    echo "| case | domains polled | agent CPU ms/poll | python CPU ms/poll | CPU ratio | agent wall ms/poll | python wall ms/poll | wall ratio | agent RSS MiB | python RSS MiB |"
    echo "|---|---|---|---|---|---|---|---|---|---|"
    cat "$WORK/table.md"
    echo
    for label in real paused; do
        [ -s "$WORK/$label.results" ] || continue
        echo "raw ($label):"
        sed 's/^/    /' "$WORK/$label.results"
    done
fi

# --- (c) RSS at 500 VMs x 1 h, leak check -------------------------------------------
if ! skipped history; then
    echo
    echo "history_rss (500 VMs, 360-sample rings, accelerated):"
    for args in "--no-capture --no-status --leak-polls 36000" \
        "--boot-log-bytes 0 --run-lines-pct 0" \
        "--boot-log-bytes 32768 --run-lines-pct 0" \
        "--boot-log-bytes 32768"; do
        log "history_rss $args"
        # shellcheck disable=SC2086 # word splitting of args is intended
        result=$("$HISTORY_RSS" $args | tee "$WORK/history.log" | grep '^RESULT')
        grep '^phase=' "$WORK/history.log" | sed 's/^/    /'
        echo "  $args: $result"
    done
fi
log "end: load $(loadavg)"
