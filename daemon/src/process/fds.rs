//! The daemon's own descriptor directory, `/proc/self/fd`: how inodes are
//! reopened (passthrough), how the legacy DAX channel is found and how
//! trace lines name files (DAX).
//!
//! A process global on purpose: inside a sandbox the path `/proc` names a
//! directory of the guest's, so the sandbox opens the real one while it
//! enters ([`install_proc_self_fd`]) and everyone else borrows it from
//! here; without a sandbox it is opened on first use. The rooms that read
//! it depend on this module only, not on the sandbox.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use rustix::fs::{Mode, OFlags};

/// Set once, by the sandbox or by the first use; never changed after.
static PROC_SELF_FD: OnceLock<OwnedFd> = OnceLock::new();

/// The daemon's `/proc/self/fd` directory (an `O_PATH` descriptor), through
/// which inodes are reopened and the legacy DAX channel is found. Inside a
/// sandbox it was opened while entering it (the path `/proc` then names a
/// directory of the guest's); without one it is opened on first use.
pub fn proc_self_fd() -> io::Result<BorrowedFd<'static>> {
    if let Some(fd) = PROC_SELF_FD.get() {
        return Ok(fd.as_fd());
    }
    let fd = rustix::fs::open(
        c"/proc/self/fd",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // A racing first use may have won; either descriptor names the same
    // directory and the loser is closed.
    Ok(PROC_SELF_FD.get_or_init(|| fd).as_fd())
}

/// Whether [`proc_self_fd`] was already opened (or installed).
pub(crate) fn proc_self_fd_opened() -> bool {
    PROC_SELF_FD.get().is_some()
}

/// Makes `fd` the daemon's `/proc/self/fd` (the sandbox, while entering);
/// gives it back if one was opened already.
pub(crate) fn install_proc_self_fd(fd: OwnedFd) -> Result<(), OwnedFd> {
    PROC_SELF_FD.set(fd)
}

/// Lists the daemon's descriptors (the directory [`proc_self_fd`] names,
/// opened for reading: the `O_PATH` descriptor itself cannot be read).
pub fn read_fd_dir() -> io::Result<rustix::fs::Dir> {
    let dir = rustix::fs::openat(
        proc_self_fd()?,
        c".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    Ok(rustix::fs::Dir::new(dir)?)
}

/// Set once the working directory is the daemon's fd directory.
static CWD_IS_FD_DIR: AtomicBool = AtomicBool::new(false);

/// Makes the daemon's fd directory its working directory, so that `N`
/// names descriptor N for the calls that take a path and no dirfd (xattrs,
/// inotify): inside a sandbox no absolute path reaches it. Call before any
/// thread starts; nothing else in the daemon uses relative paths.
pub fn enter_fd_dir() -> io::Result<()> {
    rustix::process::fchdir(proc_self_fd()?)?;
    CWD_IS_FD_DIR.store(true, Ordering::Release);
    Ok(())
}

/// A path naming the daemon's descriptor whose decimal number is `digits`:
/// `/proc/self/fd/N`, or `N` once [`enter_fd_dir`] ran.
pub fn fd_path(digits: &[u8]) -> CString {
    let mut path = if CWD_IS_FD_DIR.load(Ordering::Acquire) {
        Vec::with_capacity(digits.len() + 1)
    } else {
        b"/proc/self/fd/".to_vec()
    };
    path.extend_from_slice(digits);
    CString::new(path).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_self_fd_lists_this_process() {
        let names: Vec<String> = read_fd_dir()
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(
            names.iter().any(|n| n == "0" || n == "1" || n == "2"),
            "{names:?}"
        );
    }
}
