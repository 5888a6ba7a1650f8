#!/usr/bin/python3
"""Baseline for the agent poll benchmark (scripts/bench-agent.sh).

The minimal python3-libvirt polling loop: one
conn.getAllDomainStats(BALLOON, ACTIVE | NOWAIT) per poll, results unused.
It prints the same figures as agent/examples/poll_bench.rs:

    /usr/bin/python3 scripts/bench/libvirt_poll.py [URI] [POLLS] [--event-loop]

--event-loop sets the client up the way the agent's libvirt backend does (a
diagnostic, not the baseline): libvirt's default event loop running on a thread
of its own, and keepalive 5 s x 3 on the connection.

One warm-up poll (connection set up) is not counted. CPU is
resource.getrusage(RUSAGE_SELF) user+sys over the timed polls / POLLS,
wall is time.perf_counter() / POLLS, RSS is VmRSS of /proc/self/status
after the last poll. The last line is machine-readable (RESULT ...).
"""

import resource
import sys
import threading
import time

import libvirt


def vm_kib(field):
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_event_loop():
    while True:
        libvirt.virEventRunDefaultImpl()


def main():
    args = [arg for arg in sys.argv[1:] if arg != "--event-loop"]
    event_loop = len(args) < len(sys.argv) - 1
    uri = args[0] if args else "qemu:///system"
    polls = int(args[1]) if len(args) > 1 else 100
    if event_loop:
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=run_event_loop, daemon=True).start()
    stats = libvirt.VIR_DOMAIN_STATS_BALLOON
    flags = (libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE
             | libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT)
    conn = libvirt.open(uri)
    if event_loop:
        conn.setKeepAlive(5, 3)
    records = conn.getAllDomainStats(stats, flags)  # warm-up, not timed
    min_records = max_records = len(records)
    n_params = sum(len(params) for _, params in records)
    del records
    cpu_start = cpu_seconds()
    wall_start = time.perf_counter()
    for _ in range(polls):
        records = conn.getAllDomainStats(stats, flags)
        min_records = min(min_records, len(records))
        max_records = max(max_records, len(records))
    wall = time.perf_counter() - wall_start
    cpu = cpu_seconds() - cpu_start
    print(
        "RESULT impl=%s polls=%d domains=%d..%d params_first_poll=%d "
        "cpu_ms_per_poll=%.3f wall_ms_per_poll=%.3f rss_kib=%d rss_anon_kib=%d "
        "hwm_kib=%d"
        % ("python-evloop" if event_loop else "python", polls, min_records, max_records, n_params, cpu * 1000 / polls,
           wall * 1000 / polls, vm_kib("VmRSS"), vm_kib("RssAnon"),
           vm_kib("VmHWM")))
    conn.close()


if __name__ == "__main__":
    main()
