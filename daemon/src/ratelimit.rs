//! Rate limiting for log lines a guest can trigger.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

/// Allows at most `per_second` events in each one-second window and counts
/// the rest. Lock-free; a race at a window boundary may let one extra event
/// through, which is harmless for logging.
#[derive(Debug)]
pub struct RateLimit {
    per_second: u64,
    start: Instant,
    /// Index of the current one-second window since `start`.
    window: AtomicU64,
    /// Events allowed in the current window.
    allowed: AtomicU64,
    /// Events refused since the last allowed one.
    suppressed: AtomicU64,
}

impl RateLimit {
    /// A limiter for `per_second` events per second.
    pub fn per_second(per_second: u64) -> Self {
        Self {
            per_second,
            start: Instant::now(),
            window: AtomicU64::new(0),
            allowed: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` if this event may be logged, `n` being how many were
    /// suppressed since the last one logged; `None` to stay quiet.
    pub fn check(&self) -> Option<u64> {
        self.check_at(self.start.elapsed().as_secs())
    }

    fn check_at(&self, now_window: u64) -> Option<u64> {
        let window = self.window.load(Ordering::Relaxed);
        if now_window != window
            && self
                .window
                .compare_exchange(window, now_window, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            self.allowed.store(0, Ordering::Relaxed);
        }
        if self.allowed.fetch_add(1, Ordering::Relaxed) < self.per_second {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_per_window_and_reports_suppressed() {
        let rl = RateLimit::per_second(2);
        assert_eq!(rl.check_at(0), Some(0));
        assert_eq!(rl.check_at(0), Some(0));
        assert_eq!(rl.check_at(0), None);
        assert_eq!(rl.check_at(0), None);
        assert_eq!(rl.check_at(1), Some(2), "two were suppressed in window 0");
        assert_eq!(rl.check_at(1), Some(0));
        assert_eq!(rl.check_at(1), None);
    }
}
