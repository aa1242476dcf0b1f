//! Activation buffers handed from layer to layer and from pass to pass.
//!
//! A fresh buffer per layer output costs its zeroing and, for the large ones (SCRFD's
//! 16×320×320 maps are 6.5 MB), page faults on first touch: together ~15 % of a detection in
//! a profile. The layer loop gives back the buffers it releases, and the float convolutions
//! take their outputs from here. A taken buffer holds stale values: its taker overwrites every
//! element (an sgemm with β = 0 does not read its output, the depthwise loops assign each row or zero it
//! before summing into it). At most [`KEEP_BYTES`] are kept, and only buffers large enough for an allocation
//! to matter.

use std::sync::Mutex;

static FREE: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());

/// Most bytes kept between uses: a few times the largest live set of a 640×640 detection.
const KEEP_BYTES: usize = 64 << 20;

/// Smallest buffer worth keeping, in floats (128 KiB: malloc's default mmap threshold, below
/// which allocation is cheap).
const MIN_KEEP: usize = 32 << 10;

/// A buffer of `n` floats with unspecified (but initialised) contents.
pub(super) fn take(n: usize) -> Vec<f32> {
    if n >= MIN_KEEP {
        let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
        // The shortest one at least `n` long (truncating it costs nothing), else the smallest
        // one with room for `n` (growing it zero-fills the difference). A pass takes and gives
        // back the same sizes in the same order every time, so lengths settle and growing is
        // rare after the first pass.
        let longer = free
            .iter()
            .enumerate()
            .filter(|(_, b)| b.len() >= n)
            .min_by_key(|(_, b)| b.len());
        let roomy = || {
            free.iter()
                .enumerate()
                .filter(|(_, b)| b.capacity() >= n)
                .min_by_key(|(_, b)| b.capacity())
        };
        let best = longer.or_else(roomy).map(|(i, _)| i);
        if let Some(i) = best {
            let mut b = free.swap_remove(i);
            drop(free);
            b.truncate(n);
            b.resize(n, 0.0);
            return b;
        }
    }
    vec![0f32; n]
}

/// Gives back a buffer no longer needed.
pub(super) fn give(b: Vec<f32>) {
    if b.capacity() < MIN_KEEP {
        return;
    }
    let mut free = FREE.lock().unwrap_or_else(|e| e.into_inner());
    let kept: usize = free.iter().map(|b| b.capacity() * 4).sum();
    if kept + b.capacity() * 4 <= KEEP_BYTES {
        free.push(b);
    }
}
