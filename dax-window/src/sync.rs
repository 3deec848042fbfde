//! Synchronisation primitives, switchable to [loom] for model checking.
//!
//! Every lock, condition variable and shared pointer whose interleavings matter
//! for correctness comes from here. A normal build re-exports `std`; a build with
//! `RUSTFLAGS="--cfg loom"` re-exports loom's instrumented versions so the loom
//! test suite (`tests/loom_models.rs`) can explore every interleaving of them.
//!
//! Statistics counters are deliberately *not* switched (`StatCounter`):
//! they never decide control flow, and modelling them would only multiply the
//! state space loom has to search.
//!
//! [loom]: https://docs.rs/loom

#[cfg(loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

#[cfg(not(loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

/// `Arc` from loom under `cfg(loom)`, from `std` otherwise. Public so that tests
/// and the daemon share windows across threads with the matching type.
#[cfg(loom)]
pub use loom::sync::Arc;
#[cfg(not(loom))]
pub use std::sync::Arc;

/// Thread spawning from loom under `cfg(loom)`, from `std` otherwise.
#[cfg(loom)]
pub use loom::thread;
#[cfg(not(loom))]
pub use std::thread;

/// A monotonically updated statistics counter.
///
/// Always a `std` atomic, also under loom: counters are read only by
/// [`crate::Window::stats`] and never influence which path a thread takes, so they
/// need no model checking (and loom would otherwise branch on every increment).
pub(crate) type StatCounter = std::sync::atomic::AtomicU64;

/// Locks `mutex`, recovering the data if a previous holder panicked.
///
/// No critical section in this crate calls foreign code (the [`crate::Mapper`] is
/// always called with only entry locks held, never a mutex), so a poisoned mutex
/// can only come from a bug in this crate; the guarded state is still the last
/// state a complete critical section left, so carrying on is sound and keeps a
/// daemon serving the other slots.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits on `condvar`, recovering from poisoning like [`lock`].
pub(crate) fn wait<'a, T>(condvar: &Condvar, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
    condvar
        .wait(guard)
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Pads and aligns a value to a cache line so neighbouring shards and wait
/// buckets do not share one.
#[derive(Debug, Default)]
#[repr(align(64))]
pub(crate) struct CachePadded<T>(pub(crate) T);

impl<T> std::ops::Deref for CachePadded<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}
