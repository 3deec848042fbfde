//! The pid file next to the socket (`--socket-path PATH` → `PATH.pid`), as
//! virtiofsd keeps one: created with mode 0600, locked (`flock`, exclusive)
//! for as long as the daemon runs, and holding its process id. A second
//! daemon started on the same socket path finds the lock taken and stops
//! before it touches the first one's socket. The file stays when the daemon
//! stops (as virtiofsd's does); the lock goes with the process.
//!
//! With a sandbox, the supervisor holds the lock (its pid is the one
//! written: the process libvirt or a unit file started); the sandboxed
//! child closes its copy of the descriptor, the lock staying with the
//! supervisor's (a lock belongs to the open file, not to a descriptor).

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

/// Why the pid file could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    /// Another process holds the lock: a daemon serves this socket path.
    #[error("{path} is locked: another daemon{pid} serves this socket path")]
    Locked {
        /// The pid file.
        path: PathBuf,
        /// " (pid N)" when the file names one, for the message.
        pid: String,
    },
    /// Creating, locking or writing the file failed.
    #[error("cannot create the pid file {path}")]
    Io {
        /// The pid file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// The locked pid file; the lock lasts as long as this value (and any
/// descriptor forked from it) is open.
#[derive(Debug)]
pub struct PidFile {
    file: File,
}

impl PidFile {
    /// The pid file of the socket at `socket`: its path with `.pid` added.
    pub fn path_for(socket: &Path) -> PathBuf {
        let mut name = socket.as_os_str().to_owned();
        name.push(".pid");
        PathBuf::from(name)
    }

    /// Creates (or opens) and locks `path`, then writes this process's id
    /// into it. If another process removed or replaced the file between the
    /// open and the lock, the lock is on a file nobody else will find, so
    /// it tries again on the new one.
    pub fn lock(path: &Path) -> Result<Self, PidFileError> {
        let io_error = |source| PidFileError::Io {
            path: path.to_owned(),
            source,
        };
        loop {
            let file = std::fs::OpenOptions::new()
                .write(true)
                .read(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_CLOEXEC)
                .open(path)
                .map_err(io_error)?;
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    return Err(PidFileError::Locked {
                        path: path.to_owned(),
                        pid: pid_in(&file),
                    })
                }
                Err(e) => return Err(io_error(e.into())),
            }
            let locked = file.metadata().map_err(io_error)?;
            match std::fs::metadata(path) {
                Ok(now) if now.dev() == locked.dev() && now.ino() == locked.ino() => {}
                // Removed or replaced meanwhile: lock the file now there.
                _ => continue,
            }
            let mut file = file;
            file.set_len(0).map_err(io_error)?;
            writeln!(file, "{}", std::process::id()).map_err(io_error)?;
            return Ok(Self { file });
        }
    }

    /// Closes this copy of the descriptor (the sandboxed child's); the lock
    /// stays while another copy (the supervisor's) is open.
    pub fn close(self) {
        drop(self.file);
    }
}

/// " (pid N)" from the pid file's first line, or nothing.
fn pid_in(file: &File) -> String {
    let mut text = String::new();
    let _ = io::Read::read_to_string(&mut &*file, &mut text);
    match text.trim().parse::<u32>() {
        Ok(pid) => format!(" (pid {pid})"),
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_first_pid() {
        let dir = tempfile::tempdir().unwrap();
        let path = PidFile::path_for(&dir.path().join("vhost.sock"));
        assert!(path.ends_with("vhost.sock.pid"));
        let first = PidFile::lock(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text, format!("{}\n", std::process::id()));
        // flock locks conflict between open files, even in one process.
        let err = PidFile::lock(&path).unwrap_err();
        let want = format!("(pid {})", std::process::id());
        assert!(err.to_string().contains(&want), "{err}");
        first.close();
        let again = PidFile::lock(&path).unwrap();
        drop(again);
    }

    #[test]
    fn a_replaced_file_is_locked_anew() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.pid");
        std::fs::write(&path, "12345\n").unwrap();
        let taken = PidFile::lock(&path).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(taken);
    }
}
