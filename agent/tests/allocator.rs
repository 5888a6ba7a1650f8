//! The agent's glibc settings (agent/src/allocator.rs) give a burst's memory back:
//! measured on this test process's own RssAnon, as the agent's would be after a
//! hostile guest's burst. One test in its own process: the settings are global.

// An integration test file is its own test crate: its tests need no `mod tests`.
#![allow(clippy::tests_outside_test_module)]
#![cfg(all(target_os = "linux", target_env = "gnu"))]

use ballast_agent::allocator::{fix_mmap_threshold, release_free_memory};

const MIB: u64 = 1024;

fn rss_anon_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix("RssAnon:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/self/status")
}

/// Writes every page so the block is resident.
fn touched(bytes: usize) -> Vec<u8> {
    let mut block = vec![0_u8; bytes];
    for page in block.chunks_mut(4096) {
        page[0] = 1;
    }
    std::hint::black_box(block)
}

#[test]
fn a_burst_of_allocations_goes_back_to_the_kernel() {
    assert!(fix_mmap_threshold(), "glibc refused the mmap threshold");
    let start = rss_anon_kib();

    // 1. Large blocks, as a guest agent's multi-MiB reply: freed and allocated again
    //    (with glibc's dynamic threshold the second round would stay in the heap).
    for _ in 0..3 {
        drop(touched(8 << 20));
    }
    let after_large = rss_anon_kib();
    assert!(
        after_large < start + 2 * MIB,
        "8 MiB blocks stayed resident: RssAnon {start} -> {after_large} KiB"
    );

    // 2. Many small objects, as thousands of forged reports parsed at once, of which
    //    a few stay alive (every 600th, one per ~64 KiB of heap, the last one at the
    //    top): freeing the rest leaves free holes the heap cannot shrink past.
    let mut burst: Vec<Option<String>> = (0..200_000).map(|n| Some(format!("{n:0>100}"))).collect();
    let during = rss_anon_kib();
    let mut pinned = Vec::new();
    for (n, slot) in burst.iter_mut().enumerate() {
        let text = slot.take();
        if n % 600 == 599 {
            pinned.push(text);
        }
    }
    drop(burst);
    let freed = rss_anon_kib();
    release_free_memory();
    let released = rss_anon_kib();
    eprintln!(
        "RssAnon KiB: start {start}, after 3 x 8 MiB blocks {after_large}, \
         with 200 000 small strings {during}, freed {freed}, after release {released}"
    );
    assert!(
        during > start + 20 * MIB,
        "the burst was not resident: {during} KiB"
    );
    assert!(
        freed + 5 * MIB > during,
        "the heap gave the burst back by itself ({during} -> {freed} KiB): nothing to test"
    );
    assert!(
        released + 15 * MIB < freed,
        "the burst's pages stayed resident: {freed} -> {released} KiB"
    );
    assert_eq!(std::hint::black_box(pinned).len(), 333);
}
