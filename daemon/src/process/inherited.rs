//! `--fd N`: the listening socket a supervisor (libvirt) created and handed
//! down as descriptor N. It is checked to be a listening Unix stream socket
//! and taken over; no other inherited descriptor is touched (libvirt's
//! pidfile lock travels in one, and must stay held as long as the daemon
//! lives).

use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixListener;

use rustix::net::{sockopt, AddressFamily, SocketType};

/// Why `--fd N` cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum InheritError {
    /// No descriptor N is open.
    #[error("--fd {0}: no such open descriptor")]
    NotOpen(i32),
    /// Descriptor N is something else.
    #[error("--fd {fd}: not a listening Unix stream socket ({what})")]
    NotAListener {
        /// The descriptor.
        fd: i32,
        /// What it is instead.
        what: &'static str,
    },
}

/// Takes over descriptor `fd`, which must be a listening Unix stream
/// socket; marks it close-on-exec.
pub fn take_listener(fd: i32) -> Result<UnixListener, InheritError> {
    // SAFETY: F_GETFD reads the descriptor flags of any number; a number
    // that is not open only fails with EBADF. No memory is involved.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(InheritError::NotOpen(fd));
    }
    // SAFETY: `fd` is open (F_GETFD succeeded). It was inherited for this
    // daemon to serve, the configuration names it once and `run` takes it
    // once, so nothing else in the process owns or closes it.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let not = |what| InheritError::NotAListener { fd, what };
    let check = || -> Result<(), InheritError> {
        if sockopt::socket_domain(&owned).map_err(|_| not("not a socket"))? != AddressFamily::UNIX {
            return Err(not("not a Unix socket"));
        }
        if sockopt::socket_type(&owned).map_err(|_| not("not a socket"))? != SocketType::STREAM {
            return Err(not("not a stream socket"));
        }
        if !sockopt::socket_acceptconn(&owned).map_err(|_| not("not a socket"))? {
            return Err(not("not listening"));
        }
        Ok(())
    };
    if let Err(error) = check() {
        // Not ours to close: give the number back as it was.
        std::mem::forget(owned);
        return Err(error);
    }
    // Best effort: a child the daemon execs must not inherit it.
    let _ = rustix::io::fcntl_setfd(&owned, rustix::io::FdFlags::CLOEXEC);
    Ok(UnixListener::from(owned))
}

#[cfg(test)]
mod tests {
    use std::os::fd::{AsRawFd, IntoRawFd};

    use super::*;

    #[test]
    fn only_a_listening_unix_socket_is_taken() {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("s")).unwrap();
        let fd = listener.into_raw_fd();
        let taken = take_listener(fd).unwrap();
        assert_eq!(taken.as_raw_fd(), fd);

        let file = std::fs::File::open("/dev/null").unwrap();
        let err = take_listener(file.as_raw_fd()).unwrap_err().to_string();
        assert!(
            err.contains("--fd") && err.contains("not a socket"),
            "{err}"
        );
        // The refused descriptor is still open (and still the file's).
        assert!(file.metadata().is_ok());

        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = take_listener(a.as_raw_fd()).unwrap_err().to_string();
        assert!(err.contains("not listening"), "{err}");

        let err = take_listener(9999).unwrap_err().to_string();
        assert_eq!(err, "--fd 9999: no such open descriptor");
    }
}
