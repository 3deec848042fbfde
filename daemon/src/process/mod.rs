//! The process room: what the daemon does as a Unix process rather than as
//! a file server — the sandbox it enters, its stop signals, its lifecycle
//! (the socket file, the shutdown), its own descriptor directory, and the
//! host files it replaces atomically. Nothing here knows about FUSE,
//! queues or the DAX window.

pub mod fds;
pub mod inherited;
pub mod lifecycle;
pub mod pidfile;
pub mod rlimit;
pub mod sandbox;
pub mod signals;
pub mod syslog;

use std::path::{Path, PathBuf};

/// Replaces `path` with `contents` atomically (a temporary name beside it,
/// then rename), so a reader never sees half a snapshot.
pub fn write_atomically(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let mut tmp: PathBuf = path.to_owned();
    tmp.as_mut_os_string().push(".tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}
