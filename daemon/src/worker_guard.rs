//! The boundary around a worker thread that serves requests (a virtqueue's
//! worker, a `/dev/fuse` reader): a panic inside it must not leave its
//! queue hung while the daemon looks alive.
//!
//! [`run_guarded`] catches the panic where the worker calls into the
//! daemon; [`WorkerFailure`] records the first one, logs each once at error
//! level with its message, and asks the daemon to stop (the server shuts
//! the frontend connection and the listener down), so `main` returns a
//! non-zero status and the VMM sees a disconnect instead of a queue that
//! never answers. Nothing tries to carry on after a panic: the state the
//! worker was changing may be half-changed.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, OnceLock, PoisonError};

/// A worker panicked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{worker} panicked: {message}")]
pub struct WorkerPanic {
    /// Which worker ("queue 1", "/dev/fuse reader 0").
    pub worker: String,
    /// The panic's message.
    pub message: String,
}

/// Runs `work`, turning a panic into a [`WorkerPanic`] of `worker`.
///
/// The closure is asserted unwind-safe: after a panic the daemon stops
/// rather than using what `work` may have left half-changed.
pub fn run_guarded<T>(
    worker: impl FnOnce() -> String, work: impl FnOnce() -> T,
) -> Result<T, WorkerPanic> {
    catch_unwind(AssertUnwindSafe(work)).map_err(|payload| WorkerPanic {
        worker: worker(),
        message: panic_message(&*payload),
    })
}

/// The message of a panic payload (`panic!` with a literal or a format).
pub fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// What to do when a worker panicked: stop the daemon.
type StopHook = Box<dyn Fn() + Send + Sync>;

/// The workers' panics, and who stops the daemon when one happens.
///
/// Locking: `first` is set once without a lock; `stop` is a mutex held
/// only to install the hook or to call it (the hook takes the lifecycle's
/// own lock inside; nothing takes `stop` while holding that one).
#[derive(Default)]
pub struct WorkerFailure {
    first: OnceLock<WorkerPanic>,
    stop: Mutex<Option<StopHook>>,
}

impl std::fmt::Debug for WorkerFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerFailure")
            .field("first", &self.first.get())
            .finish_non_exhaustive()
    }
}

impl WorkerFailure {
    /// `stop` is called (on the panicking worker's thread) for every
    /// panic reported from now on.
    pub fn on_panic(&self, stop: impl Fn() + Send + Sync + 'static) {
        *self.stop.lock().unwrap_or_else(PoisonError::into_inner) = Some(Box::new(stop));
    }

    /// A worker panicked: logs it, remembers the first, stops the daemon.
    pub fn report(&self, panic: WorkerPanic) {
        tracing::error!(
            worker = %panic.worker,
            message = %panic.message,
            "worker panicked: stopping the daemon"
        );
        let _ = self.first.set(panic);
        if let Some(stop) = &*self.stop.lock().unwrap_or_else(PoisonError::into_inner) {
            stop();
        }
    }

    /// The first panic reported, if any.
    pub fn first(&self) -> Option<&WorkerPanic> {
        self.first.get()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_panic_becomes_an_error_with_its_message() {
        let caught = run_guarded(|| "queue 3".to_owned(), || -> u32 { panic!("bad {}", 7) });
        assert_eq!(
            caught,
            Err(WorkerPanic {
                worker: "queue 3".into(),
                message: "bad 7".into()
            })
        );
        let caught = run_guarded(|| unreachable!(), || 5);
        assert_eq!(caught, Ok(5));
        let literal = run_guarded(|| "r".to_owned(), || std::panic::panic_any("literal"));
        assert_eq!(literal.unwrap_err().message, "literal");
        let opaque = run_guarded(|| "r".to_owned(), || std::panic::panic_any(42u8));
        assert_eq!(opaque.unwrap_err().message, "a panic without a message");
    }

    #[test]
    fn a_reported_panic_stops_the_daemon_and_the_first_is_kept() {
        let failure = WorkerFailure::default();
        let stops = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&stops);
        failure.on_panic(move || {
            counted.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(failure.first(), None);
        for worker in ["queue 1", "queue 2"] {
            failure.report(WorkerPanic {
                worker: worker.into(),
                message: "boom".into(),
            });
        }
        assert_eq!(stops.load(Ordering::Relaxed), 2);
        assert_eq!(failure.first().map(|p| p.worker.as_str()), Some("queue 1"));
        assert_eq!(
            failure.first().unwrap().to_string(),
            "queue 1 panicked: boom"
        );
    }
}
