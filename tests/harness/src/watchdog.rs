//! Bounds vhost-user calls on the main socket.
//!
//! vhost's `Endpoint` retries `EAGAIN` in a loop, so a socket receive timeout only turns a
//! silent backend into a busy spin. Instead each call runs under a deadline; when it
//! expires this thread shuts the socket down, the blocked call returns (disconnected) and
//! the caller reports a timeout. The connection is unusable afterwards, which is right:
//! a reply that arrives late would be read as the answer to the next request.
//!
//! The watchdog also holds the *main-loop gate* during each call. The backend channel
//! takes the same gate to handle a request, so, as in QEMU (whose main loop does not
//! serve the backend channel while it waits for a vhost-user reply), a backend that sends
//! a backend request from inside a frontend message's handler deadlocks and the call
//! times out instead of passing.

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{HarnessError, Result};

#[derive(Default)]
struct WatchState {
    /// Deadline of the call in progress; `None` when no call is running.
    deadline: Option<Instant>,
    /// Set when a deadline expired and the socket was shut down.
    fired: bool,
    /// Ask the thread to exit.
    quit: bool,
}

/// The deadline and the watcher thread. `state` (one Mutex, one Condvar) is the only
/// shared data; the thread holds the lock except while waiting.
pub(crate) struct Watchdog {
    state: Arc<(Mutex<WatchState>, Condvar)>,
    /// Held for the whole of each call; see the module doc.
    main_loop: Arc<Mutex<()>>,
    thread: Option<JoinHandle<()>>,
    timeout: Duration,
}

fn lock(m: &Mutex<WatchState>) -> MutexGuard<'_, WatchState> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Watchdog {
    /// Watches `sock` (a clone of the frontend's socket); calls get `timeout` each.
    pub(crate) fn new(
        sock: UnixStream, timeout: Duration, main_loop: Arc<Mutex<()>>,
    ) -> Result<Watchdog> {
        let state = Arc::new((Mutex::new(WatchState::default()), Condvar::new()));
        let thread_state = Arc::clone(&state);
        let thread = std::thread::Builder::new()
            .name("vhost-watchdog".to_string())
            .spawn(move || watch(&thread_state, &sock))
            .map_err(|e| HarnessError::io("spawning the vhost-user watchdog", e))?;
        Ok(Watchdog {
            state,
            main_loop,
            thread: Some(thread),
            timeout,
        })
    }

    /// Runs `f` under the deadline. A vhost error after the deadline fired is reported as
    /// a timeout of `what`.
    pub(crate) fn call<T>(&self, what: &str, f: impl FnOnce() -> vhost::Result<T>) -> Result<T> {
        let _main_loop = self.main_loop.lock().unwrap_or_else(|p| p.into_inner());
        let (m, cv) = &*self.state;
        {
            let mut s = lock(m);
            if s.fired {
                return Err(HarnessError::Timeout {
                    what: format!("{what}: the connection was closed by an earlier timeout"),
                    timeout: self.timeout,
                });
            }
            s.deadline = Some(Instant::now() + self.timeout);
        }
        cv.notify_all();
        let result = f();
        let fired = {
            let mut s = lock(m);
            s.deadline = None;
            s.fired
        };
        cv.notify_all();
        match result {
            Ok(v) => Ok(v),
            Err(_) if fired => Err(HarnessError::Timeout {
                what: format!("the backend's answer to {what}"),
                timeout: self.timeout,
            }),
            Err(e) => Err(HarnessError::vhost(what, e)),
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (m, cv) = &*self.state;
        lock(m).quit = true;
        cv.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn watch(state: &(Mutex<WatchState>, Condvar), sock: &UnixStream) {
    let (m, cv) = state;
    let mut s = lock(m);
    loop {
        if s.quit {
            return;
        }
        match s.deadline {
            None => {
                s = cv.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    let _ = sock.shutdown(Shutdown::Both);
                    s.fired = true;
                    s.deadline = None;
                } else {
                    s = cv
                        .wait_timeout(s, deadline - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
    }
}
