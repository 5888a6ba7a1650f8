//! Tests of the line readers, one kernel line at a time.

use super::*;

#[test]
fn an_indented_trace_frame_is_a_frame() {
    for frame in [
        " dump_stack_lvl+0x64/0x80",
        " ? pipe_resize_ring+0x31/0x160",
        "__alloc_pages_noprof+0x2ef/0x310",
        "? do_fcntl+0x133/0x740",
        "  [<ffffffff8117e5a2>] dump_header+0x82/0x214",
    ] {
        assert!(
            matches!(
                classify(frame.as_bytes()),
                KernelLine::Trace { balloon: false }
            ),
            "{frame:?}"
        );
    }
    assert!(matches!(classify(b" ? hello world"), KernelLine::Other));
}

#[test]
fn reads_the_invoked_line_of_each_era() {
    let KernelLine::Invoked(new) = classify(
        b"tor invoked oom-killer: gfp_mask=0x24201ca(GFP_HIGHUSER_MOVABLE|__GFP_COLD), nodemask=0, order=0, oom_score_adj=0",
    ) else {
        panic!("not recognised");
    };
    assert_eq!(new.comm, "tor");
    assert_eq!(new.gfp_mask.as_deref(), Some("0x24201ca"));
    assert_eq!(
        new.gfp_flags.as_deref(),
        Some("GFP_HIGHUSER_MOVABLE|__GFP_COLD")
    );
    assert_eq!(
        (new.order, new.oom_score_adj, new.oom_adj),
        (Some(0), Some(0), None)
    );

    let KernelLine::Invoked(old) =
        classify(b"java invoked oom-killer: gfp_mask=0x201da, order=0, oom_adj=0, oom_score_adj=0")
    else {
        panic!("not recognised");
    };
    assert_eq!(
        (old.order, old.oom_adj, old.oom_score_adj),
        (Some(0), Some(0), Some(0))
    );
    assert_eq!(old.gfp_flags, None);
}

#[test]
fn finds_the_last_boot_banner_release() {
    let log = b"[    0.000000] Linux version 5.10.0-9-amd64 (debian-kernel@lists.debian.org) (gcc-10) #1 SMP Debian 5.10.70-1\n\
        [ 9.0] reboot: Restarting system\n\
        Jan 2 00:00:00 host kernel: [    0.000000] Linux version 6.1.0-18-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0) #1 SMP PREEMPT_DYNAMIC Debian 6.1.76-1 (2024-02-01)\n\
        [ 5.0] audit: Linux version is not a banner\n";
    assert_eq!(last_kernel_banner(log).as_deref(), Some("6.1.0-18-amd64"));
    assert_eq!(
        last_kernel_banner(&log[..100]).as_deref(),
        Some("5.10.0-9-amd64")
    );
    assert_eq!(last_kernel_banner(b"Linux version x (y)\n"), None);
}

#[test]
fn every_out_of_memory_panic_is_a_panic_line() {
    let lines: [(&[u8], &str, bool); 4] = [
        (
            b"Kernel panic - not syncing: Out of memory: system-wide panic_on_oom is enabled",
            "Out of memory: system-wide panic_on_oom is enabled",
            false,
        ),
        (
            b"Kernel panic - not syncing: Out of memory and no killable processes...",
            "Out of memory and no killable processes...",
            true,
        ),
        // The message alone, its `Kernel panic - not syncing: ` lost in a paste.
        (
            b"Out of memory: compulsory panic_on_oom is enabled",
            "Out of memory: compulsory panic_on_oom is enabled",
            false,
        ),
        (
            b"Kernel panic - not syncing: Out of memory: compulsory panic_on_oom is enabled",
            "Out of memory: compulsory panic_on_oom is enabled",
            false,
        ),
    ];
    for (line, want_text, want_no_killable) in lines {
        let KernelLine::Panic { text, no_killable } = classify(line) else {
            panic!("not a panic: {}", String::from_utf8_lossy(line));
        };
        assert_eq!((text.as_str(), no_killable), (want_text, want_no_killable));
    }
    assert!(matches!(
        classify(b"Kernel panic - not syncing: panic_on_warn set ..."),
        KernelLine::Other
    ));
}

#[test]
fn reads_kernel_release_and_pid() {
    let cases: [(&[u8], u32, &str, &str); 5] = [
        (
            b"CPU: 0 PID: 1439 Comm: tor Not tainted 4.9.0-4-amd64 #1 Debian",
            1439,
            "tor",
            "4.9.0-4-amd64",
        ),
        (
            b"CPU: 0 UID: 0 PID: 155 Comm: memhog Not tainted 6.12.95+deb12-amd64 #1",
            155,
            "memhog",
            "6.12.95+deb12-amd64",
        ),
        (
            b"CPU: 3 PID: 9 Comm: java Tainted: G        W  OE     5.4.0-1-generic #2",
            9,
            "java",
            "5.4.0-1-generic",
        ),
        (
            b"Pid: 1234, comm: java Not tainted 2.6.32-431.el6.x86_64 #1",
            1234,
            "java",
            "2.6.32-431.el6.x86_64",
        ),
        // RHEL with kdump armed: the comm ends before `Kdump:`, as the trigger's does.
        (
            b"CPU: 1 PID: 2074 Comm: oom Kdump: loaded Not tainted 4.18.0-477.13.1.el8_8.x86_64 #1",
            2074,
            "oom",
            "4.18.0-477.13.1.el8_8.x86_64",
        ),
    ];
    for (line, pid, comm, kernel) in cases {
        let KernelLine::Cpu {
            pid: got_pid,
            comm: got_comm,
            kernel: got_kernel,
        } = classify(line)
        else {
            panic!("not a CPU line");
        };
        assert_eq!(
            (got_pid, got_comm.as_deref(), got_kernel.as_deref()),
            (Some(pid), Some(comm), Some(kernel))
        );
    }
}

#[test]
fn reads_killed_lines_of_each_era() {
    type Case<'a> = (&'a [u8], u32, &'a str, Option<u32>, Option<u64>);
    let cases: [Case; 5] = [
        (b"Killed process 1439 (tor) total-vm:557104kB, anon-rss:374956kB, file-rss:0kB, shmem-rss:0kB", 1439, "tor", None, Some(374956)),
        (b"Out of memory: Killed process 113 (memhog) total-vm:115676kB, anon-rss:107652kB, file-rss:4kB, shmem-rss:648kB, UID:0 pgtables:252kB oom_score_adj:0", 113, "memhog", Some(0), Some(107652)),
        (b"Killed process 2592 (mysqld), UID 27, total-vm:2068720kB, anon-rss:712020kB, file-rss:0kB", 2592, "mysqld", Some(27), Some(712020)),
        (b"Killed process 4015, UID 500, (java) total-vm:3072456kB, anon-rss:1924888kB, file-rss:116kB", 4015, "java", Some(500), Some(1924888)),
        (b"Memory cgroup out of memory: Killed process 7 (Web Content (x)) total-vm:10kB, anon-rss:5kB, file-rss:0kB, shmem-rss:0kB, UID:1000 pgtables:4kB oom_score_adj:100", 7, "Web Content (x)", Some(1000), Some(5)),
    ];
    for (line, pid, comm, uid, anon) in cases {
        let KernelLine::Killed { killed, .. } = classify(line) else {
            panic!("not recognised: {}", String::from_utf8_lossy(line));
        };
        assert_eq!(
            (
                killed.pid,
                killed.comm.as_str(),
                killed.uid,
                killed.anon_rss_kb
            ),
            (pid, comm, uid, anon)
        );
    }
}

#[test]
fn reads_zone_and_buddy_lines() {
    let KernelLine::Zone(zone) = classify(b"Node 0 DMA32 free:44288kB min:44336kB low:55420kB high:66504kB present:1032048kB managed:1004452kB kernel_stack:1232kB free_pcp:356kB") else {
        panic!("zone");
    };
    assert_eq!(
        (zone.free_kb, zone.min_kb, zone.managed_kb),
        (Some(44288), Some(44336), Some(1004452))
    );
    let KernelLine::Buddy {
        zone,
        blocks_by_order,
        smallest_block_kb,
        ..
    } = classify(b"Node 0 DMA32: 2150*4kB (UMEH) 2083*8kB (UMEH) 0*16kB = 44288kB")
    else {
        panic!("buddy");
    };
    assert_eq!(
        (zone.as_str(), blocks_by_order, smallest_block_kb),
        ("DMA32", vec![2150, 2083, 0], Some(4))
    );
}

#[test]
fn reads_every_memcg_counter_and_v2_stats_pasted_on_one_line() {
    let counters = [
        (
            "memory: usage 524288kB, limit 524288kB, failcnt 347",
            MemcgCounter::Memory,
        ),
        (
            "memory+swap: usage 2592556kB, limit 9007199254740988kB, failcnt 0",
            MemcgCounter::MemorySwap,
        ),
        (
            "swap: usage 0kB, limit 9007199254740988kB, failcnt 0",
            MemcgCounter::Swap,
        ),
        (
            "kmem: usage 7260kB, limit 9007199254740988kB, failcnt 0",
            MemcgCounter::Kmem,
        ),
    ];
    for (line, want) in counters {
        let KernelLine::MemcgCounter {
            counter, usage_kb, ..
        } = classify(line.as_bytes())
        else {
            panic!("{line}: not a counter");
        };
        assert_eq!(counter, want, "{line}");
        assert!(usage_kb.is_some(), "{line}");
    }
    let KernelLine::MemcgStats { path, inline } =
        classify(b"Memory cgroup stats for /hog.slice: anon 133267456 file 20480 Tasks")
    else {
        panic!("stats");
    };
    assert_eq!(path, "/hog.slice");
    assert_eq!(
        inline,
        [("anon".to_string(), 133267456), ("file".to_string(), 20480)]
    );
}

#[test]
fn reads_the_oom_kill_summary() {
    let KernelLine::OomKillSummary(summary) = classify(b"oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=(null),cpuset=/,mems_allowed=0,oom_memcg=/kubepods/pod1,task_memcg=/kubepods/pod1/c1,task=a,b,pid=42,uid=1000") else {
        panic!("summary");
    };
    assert_eq!(summary.constraint.as_deref(), Some("CONSTRAINT_MEMCG"));
    assert_eq!(summary.oom_memcg.as_deref(), Some("/kubepods/pod1"));
    assert_eq!(summary.task.as_deref(), Some("a,b"));
    assert_eq!(
        (summary.pid, summary.uid, summary.global),
        (Some(42), Some(1000), false)
    );
}

#[test]
fn task_rows_keep_names_with_spaces() {
    let row = task_row(b"[ 1439]   109  1439   139276    93739     245        3        0             0 Web Content", Some(8))
        .expect("row");
    assert_eq!(
        (row.pid, row.numbers.len(), row.name.as_str()),
        (1439, 8, "Web Content")
    );
    assert_eq!(row.numbers[7], 0);
    let negative = task_row(b"[  467]     0   467    11493      313      24       3        0         -1000 systemd-udevd", Some(8)).expect("row");
    assert_eq!(negative.numbers[7], -1000);
}

#[test]
fn page_allocation_failures_are_not_oom_reports() {
    assert_eq!(
        classify(b"kworker/0:1: page allocation failure: order:4, mode:0x40c0"),
        KernelLine::AllocationFailure
    );
}
