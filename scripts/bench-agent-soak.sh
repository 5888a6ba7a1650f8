#!/usr/bin/env bash
# The real `ballast-agent run` at scale over an accelerated hour and beyond
# (issue 4: RSS at 500 VMs x 1 h of history; issue 10: leak check with 200+ real
# defined domains). Figures in BENCHMARKS.md, "Agent polling", "The real binary".
#
# The agent (release build) polls every second with history_secs 360, so its rings
# hold 360 samples (the 1 h default at 10 s) after 360 polls; serial capture, the
# guest-agent path, the host kernel log reader, the status file and /metrics are on.
# Every BENCH_SAMPLE_SECS the script records VmRSS/RssAnon/RssFile of the agent and
# polls/poll duration/VM count from its /metrics. Phase 1 ends when the ring is full
# (polls >= 360 + BENCH_WARM_POLLS), phase 2 (the leak phase) runs BENCH_LEAK_POLLS
# more polls; with BENCH_CHURN>0 it replaces that many domains every
# BENCH_CHURN_SECS (destroyed, new ones created: new names and UUIDs).
#
# Domains (BENCH_DOMAINS):
#   paused  real QEMU domains started by libvirtd with `virsh create --paused`
#           (TCG, 64 MiB, ~21 MiB of host memory each): the guest never runs, so
#           libvirt reports 4 balloon fields (current, maximum, rss, last-update=0).
#           Each has a serial port with a virtlogd <log file>. The count is
#           min(BENCH_VMS, what fits in BENCH_BUDGET_MIB, measured on 10 probes).
#   test    libvirt's test driver inside libvirtd (`test+unix:///WORK/fleet.xml`):
#           BENCH_VMS running domains with a serial <source path> file each, through
#           the agent's real libvirt client and RPC; costs libvirtd a few MiB in all.
#           libvirt 9.0's test driver answers GetAllDomainStats with an empty balloon
#           group, so every sample has no fields (the ring entries are the same size).
#           Its state is per connection, so no churn.
# Every serial log gets BENCH_BOOT_LOG_BYTES of kernel boot text first, and
# BENCH_CHATTY_PCT % of the domains get one console line per second.
#
#   scripts/bench-agent-soak.sh                               # 250 paused, ~45 min
#   BENCH_DOMAINS=test BENCH_VMS=500 scripts/bench-agent-soak.sh   # ~25 min
#
# Environment (defaults): BENCH_DOMAINS=paused BENCH_VMS=250 BENCH_BUDGET_MIB=6144
#   BENCH_WARM_POLLS=20 BENCH_LEAK_POLLS=2000 BENCH_SAMPLE_SECS=10 BENCH_CHURN=2
#   BENCH_CHURN_SECS=60 BENCH_BOOT_LOG_BYTES=32768 BENCH_CHATTY_PCT=1
#   BENCH_METRICS_PORT=19479 BENCH_AGENT_ENV= (e.g. MALLOC_ARENA_MAX=2)
#   BENCH_RING=360 (shorter only for a smoke run)
#   BENCH_KEEP=1 keeps the work directory (samples.tsv, agent.log)
#   BENCH_AGENT_BIN=path runs that binary instead of building target/release's
#   BENCH_PER_DOMAIN_MIB= host MiB per paused domain for the sizing (default: probed)
# Domains are named ballast-soak-<pid>-<n> and destroyed by a trap on any exit.
# Run as root. Not in CI.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
MODE=${BENCH_DOMAINS:-paused}
VMS=${BENCH_VMS:-250}
BUDGET_MIB=${BENCH_BUDGET_MIB:-6144}
WARM_POLLS=${BENCH_WARM_POLLS:-20}
LEAK_POLLS=${BENCH_LEAK_POLLS:-2000}
SAMPLE_SECS=${BENCH_SAMPLE_SECS:-10}
CHURN=${BENCH_CHURN:-2}
CHURN_SECS=${BENCH_CHURN_SECS:-60}
BOOT_LOG_BYTES=${BENCH_BOOT_LOG_BYTES:-32768}
CHATTY_PCT=${BENCH_CHATTY_PCT:-1}
PORT=${BENCH_METRICS_PORT:-19479}
AGENT_ENV=${BENCH_AGENT_ENV:-}
RING=${BENCH_RING:-360} # samples per ring (history_secs at a 1 s poll)
URI=qemu:///system
PREFIX="ballast-soak-$$"
WORK=$(mktemp -d /tmp/ballast-soak.XXXXXX)
chmod 755 "$WORK"
mkdir -p "$WORK/serial" "$WORK/xml"
chmod 777 "$WORK/serial"
AGENT_PID=
CHATTER_PID=

log() { printf '[bench-agent-soak %s] %s\n' "$(date +%T)" "$*" >&2; }
vsh() { virsh -q -c "$URI" "$@"; }
mem_available_mib() { awk '/^MemAvailable:/ { print int($2 / 1024) }' /proc/meminfo; }
our_domains() { vsh list --name | grep "^$PREFIX-" || true; }
# Other engineers' tests restart libvirtd now and then: wait until it answers.
wait_libvirtd() {
    local deadline=$(($(date +%s) + ${1:-300}))
    until vsh uri >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || return 1
        sleep 2
    done
}

cleanup() {
    local names
    [ -z "$CHATTER_PID" ] || kill "$CHATTER_PID" 2>/dev/null || true
    [ -z "$AGENT_PID" ] || kill "$AGENT_PID" 2>/dev/null || true
    [ -z "$AGENT_PID" ] || wait "$AGENT_PID" 2>/dev/null || true
    if [ "$MODE" = paused ]; then
        # Until none is left: a libvirtd restart in the middle fails the rest.
        for _ in 1 2 3 4 5; do
            wait_libvirtd 300 || break
            names=$(our_domains)
            [ -n "$names" ] || break
            log "destroying $(printf '%s\n' "$names" | wc -l) soak domains"
            printf 'destroy %s\n' $names | virsh -q -c "$URI" >/dev/null 2>&1 || true
        done
    fi
    if [ "${BENCH_KEEP:-0}" = 1 ]; then
        log "kept $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- prerequisites ---------------------------------------------------------------
"$REPO/scripts/install-deps.sh"
cd "$REPO"
if [ -n "${BENCH_AGENT_BIN:-}" ]; then
    AGENT=$BENCH_AGENT_BIN
else
    log "building ballast-agent (release)"
    cargo build -q --release -p ballast-agent --bin ballast-agent
    AGENT=$REPO/target/release/ballast-agent
fi
"$REPO/scripts/lab/libvirt-up.sh" >&2

# A kernel-boot-like console log of BOOT_LOG_BYTES (no OOM text in it).
boot_log() {
    awk -v n="$BOOT_LOG_BYTES" 'BEGIN {
        split("pci 0000:00:%02x.0: [8086:7000] type 00 class 0x060100|ACPI: PCI: Interrupt link LNK%c configured for IRQ %d|virtio_net virtio%d enp0s%d: renamed from eth0|EXT4-fs (vda%d): mounted filesystem with ordered data mode|systemd[1]: Started systemd-udevd.service - Rule-based Manager for Device Events %d.", f, "|")
        while (t < n) {
            i++
            line = sprintf("[%5d.%06d] " f[i % 5 + 1], i / 100, i * 7919 % 1000000, i % 32, i % 64, i % 16)
            t += length(line) + 1
            if (t <= n) print line
        }
    }'
}
boot_log >"$WORK/boot.log"
log "boot log per console: $(wc -c <"$WORK/boot.log") bytes"

paused_xml() { # NAME
    cat <<EOF
<domain type='qemu'>
  <name>$1</name>
  <memory unit='MiB'>64</memory><currentMemory unit='MiB'>64</currentMemory><vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>destroy</on_reboot><on_crash>destroy</on_crash>
  <devices>
    <controller type='usb' model='none'/>
    <serial type='pty'><log file='$WORK/serial/$1.log' append='on'/><target port='0'/></serial>
    <memballoon model='virtio'><stats period='10'/></memballoon>
  </devices>
</domain>
EOF
}

test_domain_xml() { # NAME N
    cat <<EOF
<domain type='test'>
  <name>$1</name>
  <uuid>$(printf '5eed%04x-0000-4000-8000-%012d' $(($$ % 65536)) "$2")</uuid>
  <memory unit='MiB'>1024</memory><currentMemory unit='MiB'>1024</currentMemory><vcpu>1</vcpu>
  <os><type arch='x86_64'>hvm</type></os>
  <devices>
    <serial type='file'><source path='$WORK/serial/$1.log'/><target port='0'/></serial>
    <memballoon model='virtio'><stats period='10'/></memballoon>
  </devices>
</domain>
EOF
}

# create_paused FIRST LAST: one virsh process; again for those a libvirtd restart lost.
create_paused() {
    local n attempt existing
    for attempt in 1 2 3; do
        wait_libvirtd 300 || { log "libvirtd does not answer"; return 1; }
        existing=$(our_domains)
        for n in $(seq "$1" "$2"); do
            printf '%s\n' "$existing" | grep -qx "$PREFIX-$n" && continue
            cp "$WORK/boot.log" "$WORK/serial/$PREFIX-$n.log"
            paused_xml "$PREFIX-$n" >"$WORK/xml/$n.xml"
            printf 'create %s --paused\n' "$WORK/xml/$n.xml"
        done | virsh -q -c "$URI" >/dev/null 2>&1 || true
        [ "$(our_domains | awk -F- -v a="$1" -v b="$2" '$NF >= a && $NF <= b' | wc -l)" -lt $(($2 - $1 + 1)) ] || return 0
        log "some domains $1-$2 missing after attempt $attempt (libvirtd restarted?)"
    done
    return 1
}

log "start: load $(cut -d' ' -f1-3 /proc/loadavg), MemAvailable $(mem_available_mib) MiB, mode $MODE"
NEXT=1
if [ "$MODE" = paused ]; then
    before=$(mem_available_mib)
    create_paused 1 10
    sleep 3
    per_domain=$(((before - $(mem_available_mib) + 9) / 10))
    [ "$per_domain" -ge 20 ] || per_domain=20
    # Other engineers' work moves MemAvailable during the probe; a measured figure
    # can be given instead (21-23 MiB on the lab machine).
    per_domain=${BENCH_PER_DOMAIN_MIB:-$per_domain}
    fits=$((BUDGET_MIB / per_domain))
    COUNT=$((fits < VMS ? fits : VMS))
    log "~$per_domain MiB per paused domain; $fits fit in $BUDGET_MIB MiB -> $COUNT"
    [ "$COUNT" -ge 200 ] || { log "only $COUNT fit; need >= 200"; exit 1; }
    t0=$(date +%s)
    create_paused 11 "$COUNT"
    log "$COUNT paused domains in $(($(date +%s) - t0)) s; MemAvailable $(mem_available_mib) MiB"
    NEXT=$((COUNT + 1))
    AGENT_URI=$URI
elif [ "$MODE" = test ]; then
    COUNT=$VMS
    CHURN=0
    {
        echo "<node>"
        for n in $(seq 1 "$COUNT"); do
            cp "$WORK/boot.log" "$WORK/serial/$PREFIX-$n.log"
            test_domain_xml "$PREFIX-$n" "$n"
        done
        echo "</node>"
    } >"$WORK/fleet.xml"
    AGENT_URI="test+unix://$WORK/fleet.xml"
    [ "$(virsh -q -c "$AGENT_URI" list --name | grep -c "^$PREFIX-")" = "$COUNT" ] ||
        { log "the test driver does not list $COUNT domains"; exit 1; }
else
    log "BENCH_DOMAINS must be paused or test"
    exit 2
fi

cat >"$WORK/agent.yaml" <<EOF
host_id: soak
backend: libvirt
libvirt:
  uri: $AGENT_URI
poll_interval_secs: 1
history_secs: $RING
state_dir: $WORK/state
capture:
  serial: true
  guest_agent: periodic
  host_kernel: true
metrics:
  listen: 127.0.0.1:$PORT
EOF
"$AGENT" check-config "$WORK/agent.yaml" >/dev/null

# One console line per second on CHATTY_PCT % of the domains (no OOM text).
chatter() {
    local tick=0 n
    while true; do
        for n in $(seq 1 "$NEXT"); do
            if [ $(((n + tick) % 100)) -lt "$CHATTY_PCT" ] && [ -f "$WORK/serial/$PREFIX-$n.log" ]; then
                printf '[%d.%06d] systemd[1]: Started session-%d.scope - Session %d of User root.\n' \
                    "$tick" "$n" "$tick" "$tick" >>"$WORK/serial/$PREFIX-$n.log"
            fi
        done
        tick=$((tick + 1))
        sleep 1
    done
}

metric() { awk -v m="$1" '$1 == m { print $2 }' "$WORK/metrics.txt"; }
status_kib() { awk -v f="$1:" '$1 == f { print $2 }' "/proc/$AGENT_PID/status"; }

# sample PHASE: one row of samples.tsv
sample() {
    curl -sf --max-time 5 "http://127.0.0.1:$PORT/metrics" >"$WORK/metrics.txt" || : >"$WORK/metrics.txt"
    local cpu
    cpu=$(awk '{ print ($14 + $15) / 100 }' "/proc/$AGENT_PID/stat")
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(($(date +%s) - START))" "$1" \
        "$(metric ballast_agent_polls_total)" "$(metric ballast_agent_vms)" \
        "$(metric ballast_agent_poll_duration_seconds)" "$(status_kib VmRSS)" \
        "$(status_kib RssAnon)" "$(status_kib RssFile)" "$(status_kib Threads)" "$cpu" \
        "$(metric ballast_agent_poll_errors_total)" >>"$WORK/samples.tsv"
    tail -n 1 "$WORK/samples.tsv"
}

printf 'secs\tphase\tpolls\tvms\tpoll_s\tvmrss_kib\trssanon_kib\trssfile_kib\tthreads\tcpu_s\tpoll_errors\n' >"$WORK/samples.tsv"
wait_libvirtd 300 || { log "libvirtd does not answer"; exit 1; }
log "starting the agent on $COUNT domains ($AGENT_URI) ${AGENT_ENV:+with $AGENT_ENV}"
# shellcheck disable=SC2086 # AGENT_ENV is a list of NAME=value words
env $AGENT_ENV "$AGENT" run --config "$WORK/agent.yaml" 2>"$WORK/agent.log" &
AGENT_PID=$!
chatter &
CHATTER_PID=$!
START=$(date +%s)
sleep 2
kill -0 "$AGENT_PID" || { tail "$WORK/agent.log"; exit 1; }

polls() { sample "$1" | cut -f3; }
phase=fill
full_at=$((RING + WARM_POLLS))
last_churn=$START
churned=0
while true; do
    sleep "$SAMPLE_SECS"
    kill -0 "$AGENT_PID" || { log "the agent died"; tail "$WORK/agent.log"; exit 1; }
    p=$(polls "$phase")
    p=${p:-0}
    if [ "$phase" = fill ] && [ "$p" -ge "$full_at" ]; then
        phase=leak
        FULL_POLLS=$p
        log "ring full after $p polls, $(($(date +%s) - START)) s: $(tail -n 1 "$WORK/samples.tsv")"
        cp "/proc/$AGENT_PID/smaps_rollup" "$WORK/smaps_full.txt"
    elif [ "$phase" = leak ] && [ "$p" -ge $((FULL_POLLS + LEAK_POLLS)) ]; then
        break
    fi
    if [ "$phase" = leak ] && [ "$CHURN" -gt 0 ] && [ $(($(date +%s) - last_churn)) -ge "$CHURN_SECS" ]; then
        victims=$(our_domains | shuf -n "$CHURN" | tr '\n' ' ')
        # shellcheck disable=SC2086 # one name per word
        printf 'destroy %s\n' $victims | virsh -q -c "$URI" >/dev/null 2>&1 || true
        create_paused "$NEXT" $((NEXT + CHURN - 1)) || true
        rm -f $(printf "$WORK/serial/%s.log " $victims)
        NEXT=$((NEXT + CHURN))
        churned=$((churned + CHURN))
        last_churn=$(date +%s)
    fi
done
cp "/proc/$AGENT_PID/smaps_rollup" "$WORK/smaps_end.txt"
log "done: $churned domains replaced; MemAvailable $(mem_available_mib) MiB"

# --- summary ------------------------------------------------------------------------
echo
echo "samples (every ${SAMPLE_SECS} s):"
sed 's/^/    /' "$WORK/samples.tsv"
echo
echo "smaps_rollup when the ring was full:"
grep -E '^(Rss|Pss|Pss_Anon|Pss_File|Anonymous):' "$WORK/smaps_full.txt" | sed 's/^/    /'
echo "smaps_rollup at the end:"
grep -E '^(Rss|Pss|Pss_Anon|Pss_File|Anonymous):' "$WORK/smaps_end.txt" | sed 's/^/    /'
echo
# Leak phase: first and last RSS, median poll duration of the first and last fifth,
# least-squares slope of VmRSS per 1000 polls.
awk -F'\t' -v mode="$MODE" -v count="$COUNT" -v churned="$churned" '
    $2 == "leak" {
        n++; p[n] = $3; r[n] = $6; a[n] = $7; f[n] = $8; d[n] = $5; e = $11; vms = $4
    }
    END {
        if (n < 5) { print "RESULT too few leak samples"; exit }
        for (i = 1; i <= n; i++) { sx += p[i]; sy += r[i]; sxx += p[i] * p[i]; sxy += p[i] * r[i] }
        slope = (n * sxy - sx * sy) / (n * sxx - sx * sx) * 1000
        k = int(n / 5); if (k < 1) k = 1
        for (i = 1; i <= k; i++) { d1 += d[i]; d2 += d[n - k + i] }
        printf "RESULT mode=%s domains=%d vms_last=%d ring_full_polls=%d end_polls=%d churned=%d", mode, count, vms, p[1], p[n], churned
        printf " vmrss_kib_full=%d rssanon_kib_full=%d rssfile_kib_full=%d", r[1], a[1], f[1]
        printf " vmrss_kib_end=%d rssanon_kib_end=%d rssfile_kib_end=%d", r[n], a[n], f[n]
        printf " vmrss_slope_kib_per_1000_polls=%.1f poll_ms_first_fifth=%.1f poll_ms_last_fifth=%.1f poll_errors=%d\n", slope, d1 / k * 1000, d2 / k * 1000, e
    }' "$WORK/samples.tsv"
