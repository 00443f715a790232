//! The agent's allocator settings: glibc's mmap threshold, fixed at its default, and at most
//! two malloc arenas.
//!
//! glibc serves allocations above the threshold (128 KiB) with their own mappings, returned to
//! the kernel when freed, but raises the threshold to the size of each such block freed (up to
//! 32 MiB). A start lists every pod of the cluster in one response (about 20 MB of JSON at
//! 10,000 pods, `source::kubernetes`); once it is freed, buffers up to that size come from the
//! heap instead and stay resident after they are freed. Measured at 10,000 pods: a fresh
//! agent kept 70 MiB resident after its first list, against 52 MiB with the threshold fixed.
//! Setting it explicitly turns glibc's adjustment off (mallopt(3)). glibc also gives each
//! thread that allocates while another holds an arena one of its own (up to 8 per core), and
//! freed memory stays in the arena it came from: the runtime's threads and the blocking tasks
//! (the linter, the read-backs) each kept theirs. At 10,000 pods, two arenas took the running
//! agent from 57 to 49 MiB and a fresh one from 70 to 65 MiB (the programming benchmark).

/// glibc's default threshold, kept from now on.
const MMAP_THRESHOLD_BYTES: i32 = 128 * 1024;

/// At most this many malloc arenas (glibc's default is 8 per core).
const MALLOC_ARENAS: i32 = 2;

/// Fixes the mmap threshold and the arenas; false when the C library refused (or is not
/// glibc).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[expect(
    unsafe_code,
    reason = "mallopt(3) has no safe wrapper in the crates we use"
)]
pub fn keep_large_buffers_returnable() -> bool {
    // SAFETY: mallopt only sets an allocator parameter; it takes plain integers, touches no
    // memory of ours, and is safe to call at any time, from any thread.
    unsafe {
        nix::libc::mallopt(nix::libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES) == 1
            && nix::libc::mallopt(nix::libc::M_ARENA_MAX, MALLOC_ARENAS) == 1
    }
}

/// Fixes the mmap threshold; false when the C library refused (or is not glibc).
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn keep_large_buffers_returnable() -> bool {
    let _ = MMAP_THRESHOLD_BYTES;
    false
}

#[cfg(test)]
mod tests {
    #[test]
    fn glibc_takes_the_fixed_threshold() {
        assert_eq!(
            super::keep_large_buffers_returnable(),
            cfg!(all(target_os = "linux", target_env = "gnu"))
        );
    }
}
