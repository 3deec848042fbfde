//! Operations on names: LOOKUP, READLINK, SYMLINK, MKNOD, MKDIR, UNLINK,
//! RMDIR, RENAME, LINK.

use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use daxfsd_protocol::abi::{EntryOut, ATTR_SUBMOUNT};
use daxfsd_protocol::SecurityContext;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags, ResolveFlags, XattrFlags};

use super::attr::statx_fd;
use super::creds::{CallerCreds, ThreadUmask};
use super::fd_cache::PathFd;
use super::inode::{Inode, InodeKey};
use super::reopen::FdName;
use super::{Context, PassthroughFs};
use crate::errno::Errno;
use crate::fs::{EntryOps, NewInode};

/// How every name is resolved: below the parent, no magic links. With the
/// single-component names the protocol crate guarantees and O_NOFOLLOW,
/// neither `..` nor a symlink can take a lookup out of the shared dir.
pub(super) const RESOLVE: ResolveFlags = ResolveFlags::BENEATH.union(ResolveFlags::NO_MAGICLINKS);

/// Opens `name` in `parent` (its fd) as an O_PATH fd, never following a
/// symlink.
fn open_path(parent: &PathFd, name: &CStr) -> Result<OwnedFd, Errno> {
    Ok(rustix::fs::openat2(
        parent,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        RESOLVE,
    )?)
}

impl PassthroughFs {
    /// Registers the inode `fd` refers to (+1 lookup) and builds its entry
    /// for the caller `ctx`.
    pub(super) fn register(&self, ctx: Context, fd: OwnedFd) -> Result<EntryOut, Errno> {
        self.register_below(ctx, fd, None)
    }

    /// [`Self::register`] for an entry of the directory `parent`: with
    /// `--announce-submounts`, a directory on another mount than `parent`
    /// (another device or mount id) is marked ATTR_SUBMOUNT, so the guest
    /// gives it a superblock of its own, as the host has.
    fn register_below(
        &self, ctx: Context, fd: OwnedFd, parent: Option<&Inode>,
    ) -> Result<EntryOut, Errno> {
        let st = statx_fd(&fd)?;
        let nodeid = match self.inodes.ref_pinned(&st) {
            Some(inode) => inode.nodeid,
            None => {
                let handle = self.fds.handle_of(&fd, &self.proc_self_fd);
                let (inode, new) = self.inodes.insert_or_ref(self.fds.wrap(fd), &st, handle);
                if new {
                    self.fds.track(&inode);
                }
                inode.nodeid
            }
        };
        let mut entry = self.entry_out(ctx, nodeid, &st);
        if let Some(parent) = parent.filter(|_| self.config.announce_submounts) {
            let (above, here) = (parent.key(), InodeKey::of(&st));
            let directory = u32::from(st.stx_mode) & libc::S_IFMT == libc::S_IFDIR;
            if directory && (above.dev != here.dev || above.mnt_id != here.mnt_id) {
                entry.attr.flags |= ATTR_SUBMOUNT;
            }
        }
        Ok(entry)
    }

    /// Looks `name` up in the already-resolved `parent` (+1 lookup).
    pub(super) fn lookup_in(
        &self, ctx: Context, parent: &Arc<Inode>, name: &CStr,
    ) -> Result<EntryOut, Errno> {
        let parent_fd = self.path_fd(parent)?;
        let fd = self.fds.with_room(|| open_path(&parent_fd, name))?;
        self.register_below(ctx, fd, Some(parent.as_ref()))
    }

    /// EROFS when the filesystem is read-only.
    pub(super) fn check_writable(&self) -> Result<(), Errno> {
        if self.config.readonly {
            Err(Errno::EROFS)
        } else {
            Ok(())
        }
    }

    /// Switches to the caller's fsuid/fsgid (translated to host ids) for a
    /// creation operation.
    pub(super) fn as_caller(&self, ctx: Context) -> Result<CallerCreds, Errno> {
        CallerCreds::switch(self.host_ctx(ctx)?, self.switch_creds)
    }

    /// [`Self::as_caller`], and under the caller's `umask` once POSIX ACLs
    /// are agreed (the guest then leaves it to the daemon).
    pub(super) fn as_creator(
        &self, ctx: Context, umask: u32,
    ) -> Result<(CallerCreds, Option<ThreadUmask>), Errno> {
        let creds = self.as_caller(ctx)?;
        let umask = match self.negotiated().posix_acl {
            true => Some(ThreadUmask::set(umask)?),
            false => None,
        };
        Ok((creds, umask))
    }
}

/// Sets the security context `label` on the inode `fd` refers to (any fd,
/// O_PATH included: through its `/proc/self/fd` path, which reaches a
/// symlink itself), as the daemon.
pub(super) fn set_label(fd: impl AsFd, label: &SecurityContext<'_>) -> Result<(), Errno> {
    let path = FdName::of(&fd).proc_path();
    Ok(rustix::fs::setxattr(
        path,
        label.name,
        label.value,
        XattrFlags::empty(),
    )?)
}

/// Labels `name`, just created in `parent`, with `label`; if that fails,
/// removes it again (as virtiofsd) and fails.
fn label_new(parent: &PathFd, name: &CStr, label: &SecurityContext<'_>) -> Result<(), Errno> {
    let fd = open_path(parent, name)?;
    let labelled = set_label(&fd, label);
    if labelled.is_err() {
        let dir =
            statx_fd(&fd).is_ok_and(|st| u32::from(st.stx_mode) & libc::S_IFMT == libc::S_IFDIR);
        let flags = if dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        let _ = rustix::fs::unlinkat(parent, name, flags);
    }
    labelled
}

impl EntryOps for PassthroughFs {
    fn lookup(&self, ctx: Context, parent: u64, name: &CStr) -> Result<EntryOut, Errno> {
        let parent = self.inodes.get(parent)?;
        self.lookup_in(ctx, &parent, name)
    }

    fn forget(&self, nodeid: u64, nlookup: u64) {
        self.inodes.forget(nodeid, nlookup);
    }

    /// READLINK: EINVAL unless the inode is a symlink.
    fn readlink(&self, _ctx: Context, nodeid: u64) -> Result<Vec<u8>, Errno> {
        let inode = self.inodes.get(nodeid)?;
        if !inode.is_symlink() {
            return Err(Errno::EINVAL);
        }
        let target = rustix::fs::readlinkat(&self.path_fd(&inode)?, c"", Vec::new())?;
        Ok(target.into_bytes())
    }

    fn symlink(
        &self, ctx: Context, parent: u64, name: &CStr, target: &CStr, new: &NewInode<'_>,
    ) -> Result<EntryOut, Errno> {
        create_entry(self, ctx, (parent, name), new, |parent| {
            rustix::fs::symlinkat(target, parent, name)
        })
    }

    /// MKNOD: a file type of 0 means a regular file, as for mknod(2). `rdev` is
    /// the kernel's 32-bit encoding, which is exactly what the mknodat system
    /// call takes.
    fn mknod(
        &self, ctx: Context, parent: u64, name: &CStr, mode: u32, rdev: u32, new: &NewInode<'_>,
    ) -> Result<EntryOut, Errno> {
        let file_type = match mode & libc::S_IFMT {
            0 => FileType::RegularFile,
            _ => match FileType::from_raw_mode(mode) {
                FileType::Directory | FileType::Symlink | FileType::Unknown => {
                    return Err(Errno::EINVAL)
                }
                t => t,
            },
        };
        let perms = Mode::from_raw_mode(mode & 0o7777);
        create_entry(self, ctx, (parent, name), new, |parent| {
            rustix::fs::mknodat(parent, name, file_type, perms, u64::from(rdev))
        })
    }

    fn mkdir(
        &self, ctx: Context, parent: u64, name: &CStr, mode: u32, new: &NewInode<'_>,
    ) -> Result<EntryOut, Errno> {
        let perms = Mode::from_raw_mode(mode & 0o7777);
        create_entry(self, ctx, (parent, name), new, |parent| {
            rustix::fs::mkdirat(parent, name, perms)
        })
    }

    fn unlink(&self, _ctx: Context, parent: u64, name: &CStr) -> Result<(), Errno> {
        remove(self, parent, name, false)
    }

    fn rmdir(&self, _ctx: Context, parent: u64, name: &CStr) -> Result<(), Errno> {
        remove(self, parent, name, true)
    }

    /// RENAME / RENAME2. Unknown flag bits are EINVAL; RENAME_WHITEOUT is
    /// passed to the host, which may refuse it (EINVAL) or need CAP_MKNOD.
    fn rename(
        &self, _ctx: Context, olddir: u64, oldname: &CStr, newdir: u64, newname: &CStr, flags: u32,
    ) -> Result<(), Errno> {
        self.check_writable()?;
        let flags = RenameFlags::from_bits(flags).ok_or(Errno::EINVAL)?;
        let old = self.inodes.get(olddir)?;
        let new = self.inodes.get(newdir)?;
        self.migration.name_changed();
        Ok(rustix::fs::renameat_with(
            &self.path_fd(&old)?,
            oldname,
            &self.path_fd(&new)?,
            newname,
            flags,
        )?)
    }

    /// LINK. A non-symlink is linked through its `/proc/self/fd` magic link
    /// with AT_SYMLINK_FOLLOW, as the caller (so protected_hardlinks applies
    /// to the caller, and no capability is needed). A symlink must be linked
    /// from its O_PATH fd with AT_EMPTY_PATH, which needs CAP_DAC_READ_SEARCH,
    /// a capability the caller's fsuid would mask; it is linked as the daemon
    /// (a link creates no inode, so ownership is unaffected).
    fn link(
        &self, ctx: Context, nodeid: u64, newparent: u64, newname: &CStr,
    ) -> Result<EntryOut, Errno> {
        self.check_writable()?;
        let inode = self.inodes.get(nodeid)?;
        let parent = self.inodes.get(newparent)?;
        let (inode_fd, parent_fd) = (self.path_fd(&inode)?, self.path_fd(&parent)?);
        if inode.is_symlink() {
            rustix::fs::linkat(&inode_fd, c"", &parent_fd, newname, AtFlags::EMPTY_PATH)?;
        } else {
            let _caller = self.as_caller(ctx)?;
            let name = FdName::of(&inode_fd);
            rustix::fs::linkat(
                &self.proc_self_fd,
                name.as_cstr(),
                &parent_fd,
                newname,
                AtFlags::SYMLINK_FOLLOW,
            )?;
        }
        self.lookup_in(ctx, &parent, newname)
    }
}

/// Runs the creation `make` in `parent` as the caller (under the umask of
/// `new` once POSIX ACLs are agreed), labels the new name with the
/// security context of `new`, then looks it up (+1 lookup).
fn create_entry(
    fs: &PassthroughFs, ctx: Context, (parent, name): (u64, &CStr), new: &NewInode<'_>,
    make: impl FnOnce(&PathFd) -> rustix::io::Result<()>,
) -> Result<EntryOut, Errno> {
    fs.check_writable()?;
    let parent = fs.inodes.get(parent)?;
    {
        let parent_fd = fs.path_fd(&parent)?;
        {
            let _creator = fs.as_creator(ctx, new.umask)?;
            make(&parent_fd)?;
        }
        if let Some(label) = &new.security_ctx {
            label_new(&parent_fd, name, label)?;
        }
    }
    fs.lookup_in(ctx, &parent, name)
}

/// UNLINK (`dir` false) or RMDIR (`dir` true).
pub(super) fn remove(fs: &PassthroughFs, parent: u64, name: &CStr, dir: bool) -> Result<(), Errno> {
    fs.check_writable()?;
    let parent = fs.inodes.get(parent)?;
    let flags = if dir {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    fs.migration.name_changed();
    Ok(rustix::fs::unlinkat(&fs.path_fd(&parent)?, name, flags)?)
}
