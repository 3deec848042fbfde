//! Extended attributes (only with `--xattr`; ENOSYS otherwise, which tells
//! the guest not to ask again).
//!
//! A non-symlink is reached through its `/proc/self/fd/N` path: the xattr
//! calls take no dirfd, and the path-based calls work for every file type
//! (an O_PATH fd refuses fgetxattr, and opening a FIFO or device for it
//! would block or act on the device). That path cannot reach a symlink
//! itself (the "l" variants stop at the magic link, and the plain ones go
//! through it to what it names), so symlinks get what Linux gives for
//! user.* on a symlink: EPERM to set or remove, no attributes to read; and
//! EOPNOTSUPP for setting other namespaces.
//!
//! With `--xattrmap` every guest name is mapped to its host name first (a
//! refused name never reaches the host: EPERM, or ENODATA for GETXATTR as
//! in virtiofsd, or EOPNOTSUPP), and the host's list is mapped back before
//! the guest sees it (its size too: a size query answers the mapped
//! list's). When the map renames `security.capability`, the host kernel no
//! longer removes it on write, truncate or chown: the daemon does, as
//! virtiofsd does ([`PassthroughFs::kill_mapped_capability`]).
//!
//! Once POSIX ACLs are agreed, a guest whose caller is neither in the
//! file's group nor privileged asks (SETXATTR_ACL_KILL_SGID) that setting
//! `system.posix_acl_access` clear the setgid bit, as Linux does for a
//! local chmod; the daemon's own CAP_FSETID would keep it, so it is
//! cleared first, as virtiofsd does.

use std::borrow::Cow;
use std::ffi::CStr;
use std::sync::Arc;

use daxfsd_protocol::abi::{SETXATTR_ACL_KILL_SGID, XATTR_LIST_MAX, XATTR_SIZE_MAX};
use rustix::fs::{Mode, XattrFlags};

use super::fd_cache::PathFd;
use super::inode::Inode;
use super::reopen::FdName;
use super::{Context, PassthroughFs};
use crate::errno::Errno;
use crate::fs::xattrmap::ClientName;
use crate::fs::XattrOps;

/// Tries to read a value or list whose size can change between the size
/// query and the read this many times before giving up with ERANGE.
const SIZE_RACE_RETRIES: usize = 4;

impl PassthroughFs {
    /// ENOSYS unless `--xattr`.
    fn check_xattr(&self) -> Result<(), Errno> {
        if self.config.xattr {
            Ok(())
        } else {
            Err(Errno::ENOSYS)
        }
    }

    /// The host name of the guest's attribute `name` (`--xattrmap`), or
    /// its refusal: EPERM (`bad`, or no rule matches), EOPNOTSUPP
    /// (`unsupported`).
    fn host_xattr_name<'a>(&self, name: &'a CStr) -> Result<Cow<'a, CStr>, Errno> {
        let Some(map) = &self.config.xattrmap else {
            return Ok(Cow::Borrowed(name));
        };
        match map.map_client(name) {
            ClientName::Pass(host) => Ok(host),
            ClientName::Deny => Err(Errno::EPERM),
            ClientName::Unsupported => Err(Errno::EOPNOTSUPP),
        }
    }

    /// Removes the attribute `--xattrmap` renames `security.capability` to
    /// from a regular file, where the host kernel removes
    /// `security.capability` itself (WRITE, truncation, chown): it does not
    /// know the mapped name. Nothing without such a map; a file without the
    /// attribute (or a filesystem without attributes) is fine.
    pub(super) fn kill_mapped_capability(&self, nodeid: u64) -> Result<(), Errno> {
        let Some(name) = &self.mapped_capability else {
            return Ok(());
        };
        let inode = self.inodes.get(nodeid)?;
        if inode.file_type != rustix::fs::FileType::RegularFile {
            return Ok(());
        }
        let (path, _fd) = proc_path(self, &inode)?;
        match rustix::fs::removexattr(path, name.as_c_str()) {
            Ok(()) | Err(rustix::io::Errno::NODATA | rustix::io::Errno::NOTSUP) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

fn is_user_namespace(name: &CStr) -> bool {
    name.to_bytes().starts_with(b"user.")
}

/// The error for changing attribute `name` of a symlink.
fn symlink_change_error(name: &CStr) -> Errno {
    if is_user_namespace(name) {
        Errno::EPERM
    } else {
        Errno::EOPNOTSUPP
    }
}

/// Reads a variable-size blob: `query` gives the size, `fill` the bytes.
fn read_sized(
    limit: usize, query: impl Fn() -> rustix::io::Result<usize>,
    fill: impl Fn(&mut [u8]) -> rustix::io::Result<usize>,
) -> Result<Vec<u8>, Errno> {
    for _ in 0..SIZE_RACE_RETRIES {
        let size = query()?.min(limit);
        let mut buf = vec![0u8; size];
        match fill(&mut buf) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            // It grew between the two calls; ask again.
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(Errno::ERANGE)
}

/// The `/proc/self/fd/N` path of a non-symlink inode, with the fd it
/// names (which must stay open while the path is used).
fn proc_path(
    fs: &PassthroughFs, inode: &Arc<Inode>,
) -> Result<(std::ffi::CString, Arc<PathFd>), Errno> {
    let fd = fs.path_fd(inode)?;
    Ok((FdName::of(&fd).proc_path(), fd))
}

/// The access ACL's attribute.
const POSIX_ACL_ACCESS: &CStr = c"system.posix_acl_access";

/// Whether SETXATTR of `name` with `setxattr_flags` must clear the setgid
/// bit first.
fn kills_sgid(fs: &PassthroughFs, name: &CStr, setxattr_flags: u32) -> bool {
    setxattr_flags & SETXATTR_ACL_KILL_SGID != 0
        && name == POSIX_ACL_ACCESS
        && fs.negotiated().posix_acl
}

/// Clears the setgid bit of the inode `fd` refers to (`path` its
/// `/proc/self/fd` path), if set.
fn clear_sgid(fd: &PathFd, path: &CStr) -> Result<(), Errno> {
    let mode = u32::from(super::attr::statx_fd(fd)?.stx_mode);
    if mode & libc::S_ISGID != 0 {
        rustix::fs::chmod(path, Mode::from_raw_mode(mode & 0o7777 & !libc::S_ISGID))?;
    }
    Ok(())
}

impl XattrOps for PassthroughFs {
    /// SETXATTR (`setxattr_flags`: SETXATTR_* bits).
    fn setxattr(
        &self, _ctx: Context, nodeid: u64, name: &CStr, value: &[u8], flags: u32,
        setxattr_flags: u32,
    ) -> Result<(), Errno> {
        self.check_xattr()?;
        self.check_writable()?;
        let flags = XattrFlags::from_bits(flags).ok_or(Errno::EINVAL)?;
        let name = self.host_xattr_name(name)?;
        let inode = self.inodes.get(nodeid)?;
        if inode.is_symlink() {
            return Err(symlink_change_error(&name));
        }
        let (path, fd) = proc_path(self, &inode)?;
        if kills_sgid(self, &name, setxattr_flags) {
            clear_sgid(&fd, &path)?;
        }
        Ok(rustix::fs::setxattr(path, name.as_ref(), value, flags)?)
    }

    /// GETXATTR: the whole value.
    fn getxattr(&self, _ctx: Context, nodeid: u64, name: &CStr) -> Result<Vec<u8>, Errno> {
        self.check_xattr()?;
        // A name the map refuses reads as absent, as in virtiofsd.
        let name = self.host_xattr_name(name).map_err(|e| match e {
            Errno::EPERM => Errno::ENODATA,
            e => e,
        })?;
        let name = name.as_ref();
        let inode = self.inodes.get(nodeid)?;
        if inode.is_symlink() {
            return Err(Errno::ENODATA);
        }
        let (path, _fd) = proc_path(self, &inode)?;
        read_sized(
            XATTR_SIZE_MAX,
            || rustix::fs::getxattr_query(&path, name),
            |buf| rustix::fs::getxattr(&path, name, buf),
        )
    }

    /// LISTXATTR: the whole NUL-separated list.
    fn listxattr(&self, _ctx: Context, nodeid: u64) -> Result<Vec<u8>, Errno> {
        self.check_xattr()?;
        let inode = self.inodes.get(nodeid)?;
        if inode.is_symlink() {
            return Ok(Vec::new());
        }
        let (path, _fd) = proc_path(self, &inode)?;
        let list = read_sized(
            XATTR_LIST_MAX,
            || rustix::fs::listxattr_query(&path),
            |buf| rustix::fs::listxattr(&path, buf),
        )?;
        Ok(match &self.config.xattrmap {
            Some(map) => map.map_server_list(&list),
            None => list,
        })
    }

    fn removexattr(&self, _ctx: Context, nodeid: u64, name: &CStr) -> Result<(), Errno> {
        self.check_xattr()?;
        self.check_writable()?;
        let name = self.host_xattr_name(name)?;
        let inode = self.inodes.get(nodeid)?;
        if inode.is_symlink() {
            return Err(symlink_change_error(&name));
        }
        let (path, _fd) = proc_path(self, &inode)?;
        Ok(rustix::fs::removexattr(path, name.as_ref())?)
    }
}
