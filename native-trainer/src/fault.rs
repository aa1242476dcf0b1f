//! Named points where a test makes the trainer stop as if it were killed there.
//!
//! Interrupted work must lose at most one checkpoint, so the test suite interrupts `finetune`
//! at every point where the files on disk change (before and after each write, fsync and
//! rename) and checks that `--resume` ends bit-identical to an uninterrupted run. A point does
//! nothing unless armed: in-process by [`arm`] (the point then returns an error, and nothing
//! after it runs, which leaves the disk as a kill would), or for a whole process by
//! `EFQ_FAULT=POINT:N` (the N-th time POINT is reached the process aborts, with no unwinding
//! and no destructors — a real crash).

use std::cell::RefCell;
use std::sync::OnceLock;

use anyhow::{Result, bail};

thread_local! {
    /// The armed point of this thread: its name and how many more hits to let through.
    static ARMED: RefCell<Option<(String, usize)>> = const { RefCell::new(None) };
    /// Hits of every point on this thread since it was armed (for tests that enumerate them).
    static HITS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Arms `point` on this thread: its `nth` hit (1-based) fails. `arm("", 0)` only records hits.
pub fn arm(point: &str, nth: usize) {
    ARMED.with(|a| *a.borrow_mut() = Some((point.to_string(), nth)));
    HITS.with(|h| h.borrow_mut().clear());
}

/// Disarms this thread and returns the points reached since [`arm`], in order.
pub fn disarm() -> Vec<String> {
    ARMED.with(|a| *a.borrow_mut() = None);
    HITS.with(|h| std::mem::take(&mut *h.borrow_mut()))
}

fn from_env() -> &'static Option<(String, usize)> {
    static ENV: OnceLock<Option<(String, usize)>> = OnceLock::new();
    ENV.get_or_init(|| {
        let v = std::env::var("EFQ_FAULT").ok()?;
        let (p, n) = v.rsplit_once(':')?;
        Some((p.to_string(), n.parse().ok()?))
    })
}

/// A place where the trainer may be interrupted. Returns an error when armed in-process for
/// this hit; aborts the process when `EFQ_FAULT` names it.
pub fn point(name: &str) -> Result<()> {
    static ENV_HITS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    if let Some((p, n)) = from_env()
        && p == name
        && ENV_HITS.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == *n
    {
        eprintln!("EFQ_FAULT: aborting at {name} (hit {n})");
        std::process::abort();
    }
    let armed = ARMED.with(|a| a.borrow().is_some());
    if !armed {
        return Ok(());
    }
    HITS.with(|h| h.borrow_mut().push(name.to_string()));
    let fire = ARMED.with(|a| {
        let mut a = a.borrow_mut();
        match a.as_mut() {
            Some((p, n)) if p == name && *n > 0 => {
                *n -= 1;
                *n == 0
            }
            _ => false,
        }
    });
    if fire {
        bail!("injected fault at {name}");
    }
    Ok(())
}
