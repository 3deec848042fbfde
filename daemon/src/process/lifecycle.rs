//! Process lifecycle: the stop signals, the thread that waits for them, and
//! the socket file the daemon owns.
//!
//! SIGTERM, SIGINT and SIGHUP are blocked in every thread (the mask is set
//! before any thread or the sandbox's child process exists, and both inherit
//! it), so no system call is ever interrupted by them. One thread,
//! `daxfsd-signals`, takes them with `sigwait` and asks the main thread to
//! stop through [`Shutdown`]: it shuts the listening socket down (a blocked
//! `accept` returns EINVAL) and the current frontend connection (the
//! frontend-message thread reads end-of-file, the session ends the usual way).
//! The main thread then ends the session, writes the final metrics, removes
//! the socket file and returns from `main` with status 0.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vhost_user_backend::ShutdownHandle;

use super::signals::{signal_name, BlockedSignals};

/// What the signal thread and the main thread share.
///
/// Locking: `state` is one mutex, held only to read or change its
/// fields and to shut a connection down (a non-blocking `shutdown(2)`).
#[derive(Debug)]
pub struct Shutdown {
    state: Mutex<ShutdownState>,
    /// A duplicate of the listening socket, shut down to wake `accept`.
    listener: OwnedFd,
}

#[derive(Default)]
struct ShutdownState {
    /// The signal that asked the daemon to stop.
    signal: Option<i32>,
    /// A failure inside the daemon (a worker panicked) asked it to stop.
    failed: bool,
    /// The current frontend connection, shut down when a signal arrives.
    session: Option<ShutdownHandle>,
}

impl std::fmt::Debug for ShutdownState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShutdownState")
            .field("signal", &self.signal)
            .field("failed", &self.failed)
            .field("session", &self.session.is_some())
            .finish()
    }
}

impl Shutdown {
    /// Shares the stop request for the daemon listening on `listener`.
    pub fn new(listener: BorrowedFd<'_>) -> io::Result<Arc<Self>> {
        Ok(Arc::new(Self {
            state: Mutex::new(ShutdownState::default()),
            listener: listener.try_clone_to_owned()?,
        }))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ShutdownState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The signal that asked the daemon to stop, if one did.
    pub fn requested(&self) -> Option<i32> {
        self.state().signal
    }

    /// Whether the daemon is stopping (a signal, or a failure inside it).
    pub fn stopping(&self) -> bool {
        let state = self.state();
        state.signal.is_some() || state.failed
    }

    /// A frontend connected; `handle` ends its connection. If a stop was
    /// requested meanwhile, the connection is shut down at once.
    pub fn session_started(&self, handle: Option<ShutdownHandle>) {
        let mut state = self.state();
        let stopping = state.signal.is_some() || state.failed;
        match (stopping, handle) {
            (true, Some(handle)) => handle.shutdown(),
            (false, handle) => state.session = handle,
            (true, None) => {}
        }
    }

    /// The frontend connection ended.
    pub fn session_ended(&self) {
        self.state().session = None;
    }

    /// Asks the daemon to stop: no new connection is accepted and the
    /// current one ends.
    pub fn request(&self, signal: i32) {
        let mut state = self.state();
        if state.signal.is_some() {
            return;
        }
        state.signal = Some(signal);
        self.stop(state);
    }

    /// Stops the daemon because something inside it failed (a worker
    /// panicked): as [`Self::request`], without a signal.
    pub fn fail(&self) {
        let mut state = self.state();
        if state.failed {
            return;
        }
        state.failed = true;
        self.stop(state);
    }

    /// Ends the current connection and wakes `accept`.
    fn stop(&self, mut state: std::sync::MutexGuard<'_, ShutdownState>) {
        if let Some(session) = state.session.take() {
            session.shutdown();
        }
        // A listening AF_UNIX socket that is shut down fails accept() with
        // EINVAL, which wakes the main thread if it waits there.
        let _ = rustix::net::shutdown(self.listener.as_fd(), rustix::net::Shutdown::Both);
    }

    /// Starts the thread that waits for `signals` and requests the stop.
    pub fn spawn_signal_thread(self: &Arc<Self>, signals: BlockedSignals) -> io::Result<()> {
        let shutdown = self.clone();
        std::thread::Builder::new()
            .name("daxfsd-signals".into())
            .spawn(move || loop {
                match signals.wait() {
                    Ok(signal) if shutdown.requested().is_none() => {
                        tracing::info!(signal = signal_name(signal), "stopping");
                        shutdown.request(signal);
                    }
                    Ok(signal) => {
                        tracing::info!(signal = signal_name(signal), "already stopping");
                    }
                    Err(error) => {
                        tracing::error!(%error, "sigwait failed; signals will not stop the daemon");
                        return;
                    }
                }
            })
            .map(|_| ())
    }
}

/// Why the socket could not be created.
#[derive(Debug, thiserror::Error)]
pub enum SocketFileError {
    /// Something other than a socket is in the way.
    #[error("{0} exists and is not a socket; not replacing it")]
    NotASocket(PathBuf),
    /// A stale socket could not be removed.
    #[error("cannot remove the stale socket {path}")]
    RemoveStale {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// `--socket-group`: the socket could not be given to the group.
    #[error("--socket-group: cannot give {path} to group {gid} with mode 0770")]
    Group {
        /// The path.
        path: PathBuf,
        /// The group id.
        gid: u32,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// bind or listen failed, or the new socket could not be inspected.
    #[error("cannot bind {path}")]
    Bind {
        /// The path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// Makes `path` group-owned by `gid`, mode 0770.
fn give_to_group(path: &Path, gid: u32) -> io::Result<()> {
    std::os::unix::fs::chown(path, None, Some(gid))?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o770))
}

/// The socket file the daemon bound: removed when the daemon stops, but
/// only if it is still the daemon's own (same device and inode).
#[derive(Debug, Clone)]
pub struct SocketFile {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl SocketFile {
    /// Binds and listens on `path`, replacing a stale socket there (but
    /// nothing else). The socket file is created with mode 0700 (owner
    /// only): whoever can connect drives the daemon as a frontend. With
    /// `group` (`--socket-group`) it is then given to that group, mode 0770.
    pub fn bind(path: &Path, group: Option<u32>) -> Result<(UnixListener, Self), SocketFileError> {
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                std::fs::remove_file(path).map_err(|source| SocketFileError::RemoveStale {
                    path: path.to_owned(),
                    source,
                })?;
            }
            Ok(_) => return Err(SocketFileError::NotASocket(path.to_owned())),
            Err(_) => {}
        }
        let bind_error = |source| SocketFileError::Bind {
            path: path.to_owned(),
            source,
        };
        let old_umask = rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
        let bound = UnixListener::bind(path);
        rustix::process::umask(old_umask);
        let listener = bound.map_err(bind_error)?;
        let meta = std::fs::symlink_metadata(path).map_err(bind_error)?;
        let file = Self {
            path: path.to_owned(),
            dev: meta.dev(),
            ino: meta.ino(),
        };
        if let Some(gid) = group {
            if let Err(source) = give_to_group(path, gid) {
                file.remove();
                return Err(SocketFileError::Group {
                    path: path.to_owned(),
                    gid,
                    source,
                });
            }
        }
        Ok((listener, file))
    }

    /// The path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes the socket file if it is still the one bound.
    pub fn remove(&self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.dev() == self.dev && meta.ino() == self.ino => {
                if let Err(error) = std::fs::remove_file(&self.path) {
                    tracing::warn!(path = %self.path.display(), %error, "cannot remove the socket");
                }
            }
            Ok(_) => tracing::info!(
                path = %self.path.display(),
                "the socket path now holds another file; leaving it"
            ),
            Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_socket_group_gets_the_socket_with_mode_0770() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("own.sock");
        let (_listener, file) = SocketFile::bind(&own, None).unwrap();
        let meta = std::fs::metadata(&own).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o700);
        let gid = rustix::process::getegid().as_raw();
        let shared = dir.path().join("group.sock");
        let (_listener, _) = SocketFile::bind(&shared, Some(gid)).unwrap();
        let meta = std::fs::metadata(&shared).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o770);
        assert_eq!(meta.gid(), gid);
        file.remove();
        assert!(!own.exists());
    }
}
