//! glibc malloc settings for a process that runs for months beside hostile guests.
//!
//! A guest can make the agent allocate a lot for a moment (a guest agent's multi-MiB
//! `dmesg` reply, thousands of forged reports parsed from it, a 1 GiB console line
//! read in chunks). glibc keeps what such a burst freed in its heaps, so without
//! help the agent's RSS stays at the burst's high-water mark (measured: +5 to +8 MiB
//! per hostile burst). Two settings give it back:
//! * a fixed mmap threshold: one allocation of 256 KiB or more is its own mapping,
//!   returned to the kernel on free (glibc otherwise raises the threshold to the
//!   largest block freed so far, up to 32 MiB, and then keeps such blocks in the heap);
//! * [`release_free_memory`] (`malloc_trim`) once a minute from the monitor thread:
//!   free pages inside the heaps go back to the kernel.
//!
//! On other C libraries (musl) both are no-ops.
#![allow(unsafe_code)]

/// Allocations at least this large get their own mapping.
pub const MMAP_THRESHOLD_BYTES: usize = 256 * 1024;

/// Fixes glibc's mmap threshold at [`MMAP_THRESHOLD_BYTES`]; call at the start of
/// `main`, before other threads exist. Returns whether glibc took it.
pub fn fix_mmap_threshold() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        let bytes = libc::c_int::try_from(MMAP_THRESHOLD_BYTES).unwrap_or(libc::c_int::MAX);
        // SAFETY: mallopt takes two integers and only changes glibc's allocator
        // parameters; no pointer crosses the call. glibc applies it under its own
        // arena locks, so it is sound at any time; calling it first thing in main
        // makes every later allocation follow it.
        unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, bytes) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Gives the free pages of every malloc heap back to the kernel. Takes ~a millisecond
/// on the agent's heaps; returns whether any memory was released.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim takes an integer (the padding to keep at the top of the
        // heap) and works under glibc's arena locks, so it may run beside
        // allocations on other threads; no pointer crosses the call.
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
