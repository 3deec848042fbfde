//! Reaching an inode through `/proc/self/fd/N`, the magic link to our own
//! O_PATH fd.
//!
//! Following that one link is safe: it jumps straight to the inode the fd
//! pins, without walking any path the guest controls. The inode itself is
//! never a symlink when we reopen it (checked here), so nothing further is
//! followed.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{FileType, Mode, OFlags};

use super::inode::Inode;
use super::PassthroughFs;
use crate::errno::Errno;

/// The decimal name of an fd in `/proc/self/fd`, NUL-terminated, on the stack.
pub(super) struct FdName {
    buf: [u8; 12],
    len: usize,
}

impl FdName {
    /// The name of `fd`.
    pub fn of(fd: impl AsFd) -> Self {
        let mut n = u32::try_from(fd.as_fd().as_raw_fd()).unwrap_or(0);
        let mut digits = [0u8; 10];
        let mut count = 0;
        loop {
            digits[count] = b'0' + (n % 10) as u8;
            count += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        let mut buf = [0u8; 12];
        for (i, d) in digits[..count].iter().rev().enumerate() {
            buf[i] = *d;
        }
        Self { buf, len: count }
    }

    /// As a C string (the byte after the digits is the NUL).
    pub fn as_cstr(&self) -> &CStr {
        CStr::from_bytes_with_nul(&self.buf[..=self.len]).unwrap_or(c"")
    }

    /// A path to the magic link `/proc/self/fd/N`, for the calls that take
    /// no dirfd (the xattr family): that absolute path, or inside a sandbox
    /// (where `/proc` is the guest's) `N` relative to the working directory,
    /// which the sandbox made the daemon's fd directory.
    pub fn proc_path(&self) -> CString {
        crate::process::fds::fd_path(&self.buf[..self.len])
    }
}

/// Flags a reopen must never carry: the magic link itself is a symlink, so
/// O_NOFOLLOW would refuse it; creation and O_PATH belong to other paths.
const REOPEN_FORBIDDEN: OFlags = OFlags::NOFOLLOW
    .union(OFlags::CREATE)
    .union(OFlags::EXCL)
    .union(OFlags::NOCTTY)
    .union(OFlags::PATH);

impl PassthroughFs {
    /// Opens `inode` for I/O with `flags` (access mode and status flags).
    ///
    /// Only regular files and directories are opened: a symlink gives ELOOP
    /// (it would be followed), any other type ENXIO (opening a FIFO would
    /// block the worker, opening a device node would drive a host device;
    /// the guest kernel serves special files itself and never sends OPEN
    /// for them).
    pub(super) fn reopen(&self, inode: &Arc<Inode>, flags: OFlags) -> Result<OwnedFd, Errno> {
        match inode.file_type {
            FileType::RegularFile | FileType::Directory => {}
            FileType::Symlink => return Err(Errno(libc::ELOOP)),
            _ => return Err(Errno(libc::ENXIO)),
        }
        let flags = (flags - REOPEN_FORBIDDEN) | OFlags::CLOEXEC;
        let fd = self.path_fd(inode)?;
        let name = FdName::of(&fd);
        self.fds.with_room(|| {
            Ok(rustix::fs::openat(
                &self.proc_self_fd,
                name.as_cstr(),
                flags,
                Mode::empty(),
            )?)
        })
    }

    /// An O_PATH fd on the inode an open fd refers to (CREATE registers the
    /// file it created from the fd, not by looking the name up again).
    pub(super) fn path_fd_of(&self, fd: impl AsFd) -> Result<OwnedFd, Errno> {
        let name = FdName::of(fd);
        Ok(rustix::fs::openat(
            &self.proc_self_fd,
            name.as_cstr(),
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fd_names_are_decimal() {
        let file = tempfile::tempfile().expect("tempfile");
        let name = FdName::of(&file);
        assert_eq!(
            name.as_cstr().to_str().ok(),
            Some(file.as_raw_fd().to_string().as_str())
        );
        assert_eq!(
            name.proc_path().to_str().ok(),
            Some(format!("/proc/self/fd/{}", file.as_raw_fd()).as_str())
        );
    }
}
