//! The supervisor: the parent that stays outside the sandbox.
//!
//! It does only what needs the host's filesystem, and nothing a guest can
//! reach: it forwards SIGTERM/SIGINT/SIGHUP to the sandboxed daemon, writes
//! each metrics snapshot the daemon sends over a `SOCK_SEQPACKET` pair to
//! `--metrics-file` (atomically, as the daemon itself does without a
//! sandbox), and when the daemon exits removes the socket file and exits
//! with the daemon's status (128 + the signal number if a signal killed it;
//! a seccomp kill, SIGSYS, is named in the log). If the supervisor dies the
//! daemon gets SIGTERM (`PR_SET_PDEATHSIG`) and stops cleanly.

use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::ExitCode;

use rustix::event::{poll, PollFd, PollFlags};
use rustix::process::{Pid, WaitOptions, WaitStatus};

use crate::process::lifecycle::SocketFile;
use crate::process::signals::{signal_name, BlockedSignals};

/// Largest metrics snapshot relayed (a snapshot is a few KiB).
const RELAY_MAX: usize = 1 << 20;

/// The parent of the sandboxed daemon.
#[derive(Debug)]
pub struct Supervisor {
    child: Pid,
    child_fd: OwnedFd,
    relay: Option<OwnedFd>,
}

impl Supervisor {
    pub(super) fn new(child: Pid, child_fd: OwnedFd, relay: Option<OwnedFd>) -> Self {
        Self {
            child,
            child_fd,
            relay,
        }
    }

    /// The sandboxed daemon's process id (in the supervisor's namespace).
    pub fn child(&self) -> Pid {
        self.child
    }

    /// Runs until the daemon exits; returns the status to exit with.
    /// `signals` are the stop signals, blocked in this process.
    pub fn run(
        mut self, signals: &BlockedSignals, metrics_file: Option<&Path>,
        socket: Option<&SocketFile>,
    ) -> ExitCode {
        let remove_socket = || {
            if let Some(socket) = socket {
                socket.remove();
            }
        };
        if let Err(error) = super::caps::restrict_to(
            super::caps::SUPERVISOR_CAPS,
            rustix::thread::CapabilitySet::empty(),
        ) {
            tracing::warn!(error = %crate::error_chain(&error), "supervisor keeps its capabilities");
        }
        let signal_fd = match signal_fd(signals) {
            Ok(fd) => Some(fd),
            Err(error) => {
                tracing::error!(%error, "signalfd failed; stop signals reach the daemon only on the supervisor's death");
                None
            }
        };
        let mut relay_buf = vec![0u8; RELAY_MAX];
        let mut metrics_failing = false;
        let status = loop {
            let mut fds = vec![PollFd::new(&self.child_fd, PollFlags::IN)];
            if let Some(fd) = &signal_fd {
                fds.push(PollFd::new(fd, PollFlags::IN));
            }
            if let Some(fd) = &self.relay {
                fds.push(PollFd::new(fd, PollFlags::IN));
            }
            if let Err(error) = poll(&mut fds, None) {
                if error != rustix::io::Errno::INTR {
                    tracing::error!(%error, "supervisor poll failed");
                }
                continue;
            }
            let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
            drop(fds);
            let mut index = 1;
            if let Some(fd) = &signal_fd {
                if ready[index] {
                    if let Some(signal) = read_signal(fd) {
                        tracing::info!(
                            signal = signal_name(signal),
                            "forwarding to the sandboxed daemon"
                        );
                        if let Some(sig) = rustix::process::Signal::from_named_raw(signal) {
                            let _ = rustix::process::kill_process(self.child, sig);
                        }
                    }
                }
                index += 1;
            }
            if self.relay.is_some() && ready[index] {
                self.relay_once(&mut relay_buf, metrics_file, &mut metrics_failing);
            }
            if ready[0] {
                match rustix::process::waitpid(Some(self.child), WaitOptions::empty()) {
                    Ok(Some((_, status))) => break status,
                    Ok(None) => continue,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(error) => {
                        tracing::error!(%error, "cannot reap the sandboxed daemon");
                        remove_socket();
                        return ExitCode::FAILURE;
                    }
                }
            }
        };
        // The final snapshot the daemon sent just before exiting.
        self.drain_relay(&mut relay_buf, metrics_file, &mut metrics_failing);
        remove_socket();
        exit_code(status)
    }

    /// Relays every snapshot still waiting in the relay.
    fn drain_relay(&mut self, buf: &mut [u8], path: Option<&Path>, failing: &mut bool) {
        while let Some(relay) = &self.relay {
            let mut fds = [PollFd::new(relay, PollFlags::IN)];
            match poll(&mut fds, Some(&rustix::event::Timespec::default())) {
                Ok(n) if n > 0 => {}
                _ => break,
            }
            self.relay_once(buf, path, failing);
        }
    }

    /// Reads one snapshot from the relay and writes it to the metrics file;
    /// end of file closes the relay.
    fn relay_once(&mut self, buf: &mut [u8], path: Option<&Path>, failing: &mut bool) {
        let Some(relay) = &self.relay else { return };
        match rustix::io::read(relay, &mut *buf) {
            Ok(0) | Err(_) => self.relay = None,
            Ok(n) => {
                let Some(path) = path else { return };
                match crate::process::write_atomically(path, &buf[..n]) {
                    Ok(()) => *failing = false,
                    Err(error) if !*failing => {
                        tracing::warn!(path = %path.display(), %error, "cannot write the metrics file");
                        *failing = true;
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

/// A signalfd for the (blocked) stop signals.
fn signal_fd(signals: &BlockedSignals) -> std::io::Result<OwnedFd> {
    // SAFETY: the set is initialised; -1 asks for a new descriptor, which
    // the call returns or fails with -1.
    let fd = unsafe { libc::signalfd(-1, signals.as_sigset(), libc::SFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: signalfd just returned this new descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Takes one signal from a readable signalfd.
fn read_signal(fd: &OwnedFd) -> Option<i32> {
    let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
    match rustix::io::read(fd.as_fd(), &mut info) {
        Ok(n) if n == info.len() => {
            // ssi_signo is the first field, a u32 in native byte order.
            let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
            i32::try_from(signo).ok()
        }
        _ => None,
    }
}

/// The status the supervisor exits with for the daemon's `status`: its
/// exit code, or 128 + the signal that killed it (explained when seccomp's).
fn exit_code(status: WaitStatus) -> ExitCode {
    if let Some(code) = status.exit_status() {
        return ExitCode::from(u8::try_from(code).unwrap_or(1));
    }
    if let Some(signal) = status.terminating_signal() {
        if signal == libc::SIGSYS {
            tracing::error!(
                "the sandboxed daemon was killed by seccomp (SIGSYS): it made a system call \
                 outside the allow-list. Run with --seccomp log and read the kernel log \
                 (dmesg, or the audit log: type=SECCOMP ... syscall=N) to see which, and \
                 report it"
            );
        } else {
            tracing::error!(
                signal,
                name = signal_name(signal),
                "the sandboxed daemon was killed by a signal"
            );
        }
        return ExitCode::from(u8::try_from(128 + signal).unwrap_or(u8::MAX));
    }
    ExitCode::FAILURE
}
