//! File handles (`name_to_handle_at` / `open_by_handle_at`): how an inode
//! whose O_PATH descriptor was closed to stay under the descriptor budget
//! is reached again.
//!
//! A handle names an inode within its filesystem without a path, and stays
//! valid while the inode exists (a handle of a deleted inode gives
//! ESTALE: the generation number inside it does not match a reused inode
//! number). Opening one needs `CAP_DAC_READ_SEARCH` and a descriptor on the
//! mount it was taken on ([`MountFds`]). Neither rustix nor nix wraps these
//! two calls, so they are called through libc here.

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex};

use rustix::fs::{FileType, Mode, OFlags};

use super::reopen::FdName;
use crate::errno::Errno;

/// `MAX_HANDLE_SZ` in `linux/fcntl.h`: no filesystem's handle is longer.
const MAX_HANDLE_SZ: usize = 128;

/// `struct file_handle` with room for the longest handle: the kernel's
/// header (`handle_bytes`, `handle_type`) followed by the opaque bytes.
#[repr(C)]
#[derive(Clone, Copy)]
struct RawHandle {
    handle_bytes: libc::c_uint,
    handle_type: libc::c_int,
    f_handle: [u8; MAX_HANDLE_SZ],
}

/// One inode's file handle and the mount it was taken on.
#[derive(Clone, PartialEq, Eq)]
pub(super) struct FileHandle {
    /// Mount id as `name_to_handle_at` reports it (the id `statx` reports
    /// as `STATX_MNT_ID`).
    pub mnt_id: u64,
    handle_type: libc::c_int,
    /// The opaque bytes, `handle_bytes` long.
    bytes: Box<[u8]>,
}

impl std::fmt::Debug for FileHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileHandle")
            .field("mnt_id", &self.mnt_id)
            .field("type", &self.handle_type)
            .field("len", &self.bytes.len())
            .finish()
    }
}

impl FileHandle {
    /// The handle of the inode `fd` refers to (an O_PATH descriptor or an
    /// open file; a symlink itself). EOPNOTSUPP when its filesystem cannot
    /// make handles.
    pub fn of(fd: impl AsFd) -> Result<Self, Errno> {
        let mut raw = RawHandle {
            handle_bytes: MAX_HANDLE_SZ as libc::c_uint,
            handle_type: 0,
            f_handle: [0; MAX_HANDLE_SZ],
        };
        let mut mnt_id: libc::c_int = 0;
        // SAFETY: `fd` is a live descriptor borrowed for the call; the path
        // is a NUL-terminated empty string, which with AT_EMPTY_PATH names
        // `fd` itself; `raw` is a `struct file_handle` header followed by
        // MAX_HANDLE_SZ bytes, and `handle_bytes` says exactly that many,
        // so the kernel writes within it; `mnt_id` is a valid `int` out
        // parameter. Both pointers outlive the call.
        let ret = unsafe {
            libc::name_to_handle_at(
                fd.as_fd().as_raw_fd(),
                c"".as_ptr(),
                std::ptr::from_mut(&mut raw).cast::<libc::file_handle>(),
                &mut mnt_id,
                libc::AT_EMPTY_PATH,
            )
        };
        if ret < 0 {
            return Err(Errno::from(std::io::Error::last_os_error()));
        }
        let len = (raw.handle_bytes as usize).min(MAX_HANDLE_SZ);
        Ok(Self {
            mnt_id: u64::try_from(mnt_id).unwrap_or(0),
            handle_type: raw.handle_type,
            bytes: raw.f_handle[..len].into(),
        })
    }

    /// Its type and opaque bytes (what a migration carries).
    pub fn parts(&self) -> (libc::c_int, &[u8]) {
        (self.handle_type, &self.bytes)
    }

    /// A handle from its type and bytes, taken on mount `mnt_id`; `None`
    /// if longer than any handle can be.
    pub fn from_parts(mnt_id: u64, handle_type: libc::c_int, bytes: &[u8]) -> Option<Self> {
        (bytes.len() <= MAX_HANDLE_SZ).then(|| Self {
            mnt_id,
            handle_type,
            bytes: bytes.into(),
        })
    }

    /// Opens the inode this handle names with `flags` (O_CLOEXEC is
    /// added), relative to `mount_fd`, a descriptor on its mount. ESTALE
    /// when the inode no longer exists; EPERM without CAP_DAC_READ_SEARCH.
    pub fn open(&self, mount_fd: impl AsFd, flags: OFlags) -> Result<OwnedFd, Errno> {
        let mut raw = RawHandle {
            handle_bytes: self.bytes.len() as libc::c_uint,
            handle_type: self.handle_type,
            f_handle: [0; MAX_HANDLE_SZ],
        };
        raw.f_handle[..self.bytes.len()].copy_from_slice(&self.bytes);
        let flags = flags | OFlags::CLOEXEC;
        // SAFETY: `mount_fd` is a live descriptor borrowed for the call;
        // `raw` is a complete `struct file_handle` whose `handle_bytes`
        // (at most MAX_HANDLE_SZ, the length `of` read back) does not
        // exceed the bytes that follow it; the kernel only reads it.
        let ret = unsafe {
            libc::open_by_handle_at(
                mount_fd.as_fd().as_raw_fd(),
                std::ptr::from_mut(&mut raw).cast::<libc::file_handle>(),
                flags.bits() as libc::c_int,
            )
        };
        if ret < 0 {
            return Err(Errno::from(std::io::Error::last_os_error()));
        }
        // SAFETY: a non-negative return is a new descriptor that nothing
        // else owns; the OwnedFd becomes its only owner.
        Ok(unsafe { OwnedFd::from_raw_fd(ret) })
    }
}

/// One descriptor per mount the share reaches, relative to which handles
/// taken on that mount are opened (as virtiofsd's `MountFds`).
///
/// The descriptor kept for a mount is the first inode seen on it, opened
/// read-only (`open_by_handle_at` refuses an O_PATH descriptor with
/// EBADF). A LOOKUP resolves one name below a parent, so an inode on a
/// mount other than its parent's is the root of that mount, which cannot
/// be removed while mounted; the share's own mount gets the share's root.
/// Only a directory or regular file is opened (never a FIFO or device);
/// a mount whose first inode is neither gets no descriptor, and its
/// inodes no handles.
///
/// Locking: one `Mutex` guards the map; it is held only to look up or
/// insert, never across a system call other than the `dup` of an insert.
#[derive(Debug, Default)]
pub(super) struct MountFds {
    by_mnt: Mutex<HashMap<u64, Arc<OwnedFd>>>,
}

impl MountFds {
    /// The descriptor of mount `mnt_id`, if one is kept.
    pub fn get(&self, mnt_id: u64) -> Option<Arc<OwnedFd>> {
        self.lock().get(&mnt_id).cloned()
    }

    /// Keeps a read-only descriptor on the inode of `fd` (an O_PATH
    /// descriptor, opened again through `proc_self_fd`) for `mnt_id`,
    /// unless one is kept already.
    pub fn remember(
        &self, mnt_id: u64, fd: impl AsFd, proc_self_fd: impl AsFd,
    ) -> Result<(), Errno> {
        let mut map = self.lock();
        if let std::collections::hash_map::Entry::Vacant(entry) = map.entry(mnt_id) {
            let st = rustix::fs::fstat(&fd)?;
            match FileType::from_raw_mode(st.st_mode) {
                FileType::Directory | FileType::RegularFile => {}
                _ => return Err(Errno(libc::ENXIO)),
            }
            let opened = rustix::fs::openat(
                proc_self_fd,
                FdName::of(&fd).as_cstr(),
                OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            entry.insert(Arc::new(opened));
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<OwnedFd>>> {
        self.by_mnt.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether handles work for the share: one is taken of `root` and opened
/// again. Err (EPERM without CAP_DAC_READ_SEARCH, EOPNOTSUPP on a
/// filesystem without handles) when not.
pub(super) fn probe(root: impl AsFd, proc_self_fd: impl AsFd) -> Result<(), Errno> {
    let handle = FileHandle::of(root.as_fd())?;
    let mounts = MountFds::default();
    mounts.remember(handle.mnt_id, &root, proc_self_fd)?;
    let mount = mounts.get(handle.mnt_id).ok_or(Errno::EBADF)?;
    handle.open(&*mount, OFlags::PATH).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_reopens_its_inode() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = rustix::fs::open(dir.path(), OFlags::PATH, Mode::empty()).unwrap();
        let Ok(handle) = FileHandle::of(&root) else {
            return; // a filesystem without handles: nothing to check
        };
        assert_eq!(handle, FileHandle::of(&root).unwrap());
        let proc_self_fd = crate::process::fds::proc_self_fd().unwrap();
        let mounts = MountFds::default();
        mounts.remember(handle.mnt_id, &root, proc_self_fd).unwrap();
        let mount = mounts.get(handle.mnt_id).unwrap();
        assert_eq!(
            handle.open(&root, OFlags::PATH).err(),
            Some(Errno::EBADF),
            "an O_PATH mount fd"
        );
        match handle.open(&*mount, OFlags::PATH) {
            Ok(fd) => {
                let a = rustix::fs::fstat(&fd).unwrap();
                let b = rustix::fs::fstat(&root).unwrap();
                assert_eq!((a.st_dev, a.st_ino), (b.st_dev, b.st_ino));
            }
            Err(e) => assert_eq!(e, Errno(libc::EPERM), "only a missing capability"),
        }
    }
}
