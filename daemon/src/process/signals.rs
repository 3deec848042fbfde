//! The stop signals, blocked in every thread and taken by one: the only
//! signal code in the daemon, shared by the vhost-user server
//! ([`super::lifecycle`]), its supervisor ([`super::sandbox::supervisor`])
//! and the host `/dev/fuse` transport.
//!
//! A set is blocked before any thread or child process exists, so both
//! inherit the mask and no system call is ever interrupted by these
//! signals; one thread then takes them with [`BlockedSignals::wait`].

use std::io;

/// The signals that stop the daemon.
pub const STOP_SIGNALS: [i32; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// A set of signals blocked in the thread that built it (and so in every
/// thread and process it starts afterwards).
#[derive(Clone, Copy)]
pub struct BlockedSignals(libc::sigset_t);

impl std::fmt::Debug for BlockedSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("BlockedSignals")
            .field(&self.signals())
            .finish()
    }
}

impl BlockedSignals {
    /// Blocks `signals` in the calling thread.
    pub fn block(signals: &[i32]) -> io::Result<Self> {
        // SAFETY: sigset_t is plain data and sigemptyset initialises it.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: `set` is a valid, exclusively borrowed sigset_t.
        unsafe { libc::sigemptyset(&mut set) };
        for &signal in signals {
            // SAFETY: `set` is initialised; an invalid number only fails.
            if unsafe { libc::sigaddset(&mut set, signal) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: `set` is initialised and a null old-set pointer is allowed;
        // this changes the calling thread's mask only.
        let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(Self(set))
    }

    /// The raw set (for signalfd).
    pub fn as_sigset(&self) -> &libc::sigset_t {
        &self.0
    }

    /// The signal numbers in the set.
    pub fn signals(&self) -> Vec<i32> {
        (1..libc::SIGRTMIN())
            // SAFETY: the set is initialised; sigismember only reads it.
            .filter(|&s| unsafe { libc::sigismember(&self.0, s) } == 1)
            .collect()
    }

    /// Waits until one of the signals is pending and takes it.
    pub fn wait(&self) -> io::Result<i32> {
        let mut signal = 0;
        // SAFETY: the set is initialised and `signal` is a valid out-pointer;
        // sigwait blocks the calling thread only.
        let rc = unsafe { libc::sigwait(&self.0, &mut signal) };
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        Ok(signal)
    }
}

/// The name of a stop signal, for logs.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGHUP => "SIGHUP",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSYS => "SIGSYS",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocked_signals_are_listed() {
        let set = BlockedSignals::block(&[libc::SIGUSR2]).unwrap();
        assert_eq!(set.signals(), vec![libc::SIGUSR2]);
    }
}
