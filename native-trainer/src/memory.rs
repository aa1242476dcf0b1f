//! Memory: allocator settings for libtorch on the CPU, and the process's peak resident size.
//!
//! A training step allocates and frees hundreds of activation and gradient buffers of 1–50 MB.
//! glibc serves large blocks with fresh `mmap`s and gives them back on `free`, so every buffer
//! is page-faulted in again at every step: 9.8 million minor faults in ten fine-tuning steps at
//! batch 64, half the step's time on this machine (a VM, where faults are dear). Keeping freed
//! memory in the heap for reuse took the same ten steps from 4.8 to 7.0 images/s at the cost of
//! resident memory that stays at its peak (docs/EXPERIMENTS.md, Part 2, "Fine-tuning speed on the CPU").

/// Serve every allocation from the heap and never trim it (glibc only; elsewhere a no-op).
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before the trainer's
    // threads start allocating, and any value is valid for these two settings.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Gives the heap's free pages back to the system (glibc only; elsewhere a no-op). With
/// [`keep_freed_memory`] nothing is ever returned on its own, so a pass that frees tensors of
/// hundreds of MB (reconstruction's whole-set activations) and allocates the next ones in
/// other sizes holds the freed ones too: call this where such tensors were just dropped.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free heap pages to the kernel; no live block moves.
    unsafe {
        libc::malloc_trim(0);
    }
}

pub use efq_shared::measure::peak_rss_mb;
