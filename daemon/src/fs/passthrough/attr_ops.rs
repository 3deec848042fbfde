//! GETATTR, SETATTR, STATFS, ACCESS, and clearing setuid/setgid.

use std::os::fd::AsFd;
use std::sync::Arc;

use daxfsd_protocol::abi::{
    AttrOut, SetattrIn, StatfsOut, FATTR_ATIME, FATTR_ATIME_NOW, FATTR_FH, FATTR_GID,
    FATTR_KILL_SUIDGID, FATTR_MODE, FATTR_MTIME, FATTR_MTIME_NOW, FATTR_SIZE, FATTR_UID,
};
use rustix::fs::{AtFlags, FileType, Gid, Mode, OFlags, Timespec, Timestamps, Uid};

use super::attr::{mode_grants, statx_fd};
use super::handle::Handle;
use super::inode::Inode;
use super::reopen::FdName;
use super::{Context, PassthroughFs};
use crate::errno::Errno;
use crate::fs::idmap::IdMap;
use crate::fs::AttrOps;

impl AttrOps for PassthroughFs {
    /// GETATTR: through the open file when the guest names one.
    fn getattr(&self, ctx: Context, nodeid: u64, fh: Option<u64>) -> Result<AttrOut, Errno> {
        let st = match fh {
            Some(fh) => statx_fd(&self.handles.get(fh, nodeid)?.fd)?,
            None => statx_fd(&self.path_fd(&self.inodes.get(nodeid)?)?)?,
        };
        Ok(self.attr_out(ctx, &st))
    }

    /// SETATTR, in the order mode, owner, size, kill-suid/sgid, times (the
    /// order Linux's own notify_change applies them in effect: times last, so
    /// a truncate does not overwrite the mtime just set). FATTR_CTIME is
    /// ignored: the host sets ctime itself on every change.
    fn setattr(&self, ctx: Context, nodeid: u64, arg: &SetattrIn) -> Result<AttrOut, Errno> {
        self.check_writable()?;
        let valid = arg.valid;
        let owner = host_owner(self, arg)?;
        let inode = self.inodes.get(nodeid)?;
        let handle = if valid & FATTR_FH != 0 {
            Some(self.handles.get(arg.fh, nodeid)?)
        } else {
            None
        };

        if valid & FATTR_MODE != 0 {
            match &handle {
                Some(h) => rustix::fs::fchmod(&h.fd, Mode::from_raw_mode(arg.mode & 0o7777))?,
                None => self.chmod_inode(&inode, arg.mode)?,
            }
        }

        if let Some((uid, gid)) = owner {
            self.kill_mapped_capability(nodeid)?;
            rustix::fs::chownat(
                &self.path_fd(&inode)?,
                c"",
                uid,
                gid,
                AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }

        if valid & FATTR_SIZE != 0 {
            self.kill_mapped_capability(nodeid)?;
            match &handle {
                Some(h) => rustix::fs::ftruncate(&h.fd, arg.size)?,
                None => {
                    let fd = self.reopen(&inode, OFlags::WRONLY)?;
                    rustix::fs::ftruncate(&fd, arg.size)?;
                }
            }
        }

        // With an explicit mode the guest already chose the bits it wants.
        if valid & FATTR_KILL_SUIDGID != 0
            && valid & FATTR_MODE == 0
            && self.negotiated().killpriv_v2
            && inode.file_type == FileType::RegularFile
        {
            let st = statx_fd(&self.path_fd(&inode)?)?;
            if let Some(mode) = mode_without_suidgid(u32::from(st.stx_mode)) {
                self.chmod_inode(&inode, mode)?;
            }
        }

        if valid & (FATTR_ATIME | FATTR_MTIME) != 0 {
            set_times(self, &inode, handle.as_deref(), arg)?;
        }

        let st = match &handle {
            Some(h) => statx_fd(&h.fd)?,
            None => statx_fd(&self.path_fd(&inode)?)?,
        };
        Ok(self.attr_out(ctx, &st))
    }

    ///
    /// Choice: the mode bits are checked against the caller's uid and primary
    /// gid, as virtiofsd does, rather than calling faccessat as the caller.
    /// FUSE carries no supplementary groups, so faccessat under a switched
    /// fsuid would use the daemon's groups instead, which is no more exact and
    /// costs two credential switches. The guest mounts virtio-fs with
    /// default_permissions and checks permissions itself (it normally never
    /// sends ACCESS); this answers the requests that still come. Root may read
    /// and write anything and execute anything with an execute bit or any
    /// directory; W_OK on a read-only share is EROFS.
    fn access(&self, ctx: Context, nodeid: u64, mask: u32) -> Result<(), Errno> {
        let inode = self.inodes.get(nodeid)?;
        let st = statx_fd(&self.path_fd(&inode)?)?;
        let mask = mask & (libc::R_OK | libc::W_OK | libc::X_OK) as u32;
        if mask & libc::W_OK as u32 != 0 && self.config.readonly {
            return Err(Errno::EROFS);
        }
        if mask == 0 || mode_grants(self.host_ctx(ctx)?, &st, mask) {
            Ok(()) // F_OK: the inode exists.
        } else {
            Err(Errno(libc::EACCES))
        }
    }

    fn statfs(&self, _ctx: Context, nodeid: u64) -> Result<StatfsOut, Errno> {
        let inode = self.inodes.get(nodeid)?;
        let st = rustix::fs::fstatvfs(&self.path_fd(&inode)?)?;
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        Ok(StatfsOut {
            blocks: st.f_blocks,
            bfree: st.f_bfree,
            bavail: st.f_bavail,
            files: st.f_files,
            ffree: st.f_ffree,
            bsize: clamp(st.f_bsize),
            namelen: clamp(st.f_namemax),
            frsize: clamp(st.f_frsize),
            padding: 0,
            spare: [0; 6],
        })
    }
}

/// The mode `mode` becomes once setuid, and setgid if group-executable,
/// are cleared (what Linux does on write or truncate by a non-privileged
/// writer); `None` if nothing changes.
pub(super) fn mode_without_suidgid(mode: u32) -> Option<u32> {
    let mut kill = libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 {
        kill |= libc::S_ISGID;
    }
    (mode & kill != 0).then_some(mode & !kill & 0o7777)
}

/// Clears setuid/setgid on the open file `fd` (WRITE with
/// WRITE_KILL_SUIDGID, OPEN with O_TRUNC and OPEN_KILL_SUIDGID).
pub(super) fn kill_suidgid_fd(fd: impl AsFd) -> Result<(), Errno> {
    let st = rustix::fs::fstat(&fd)?;
    if let Some(mode) = mode_without_suidgid(st.st_mode) {
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))?;
    }
    Ok(())
}

impl PassthroughFs {
    /// chmod of a non-symlink inode through its `/proc/self/fd` link.
    fn chmod_inode(&self, inode: &Arc<Inode>, mode: u32) -> Result<(), Errno> {
        if inode.is_symlink() {
            // Linux has no symlink modes (fchmodat AT_SYMLINK_NOFOLLOW).
            return Err(Errno::EOPNOTSUPP);
        }
        let fd = self.path_fd(inode)?;
        let name = FdName::of(&fd);
        Ok(rustix::fs::chmodat(
            &self.proc_self_fd,
            name.as_cstr(),
            Mode::from_raw_mode(mode & 0o7777),
            AtFlags::empty(),
        )?)
    }
}

/// The `Timespec` for one SETATTR time field.
fn time_arg(valid: u32, set: u32, now: u32, secs: u64, nsecs: u32) -> Timespec {
    if valid & set == 0 {
        Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_OMIT,
        }
    } else if valid & now != 0 {
        Timespec {
            tv_sec: 0,
            tv_nsec: rustix::fs::UTIME_NOW,
        }
    } else {
        // Seconds beyond i64 cannot be real; the kernel rejects what it
        // cannot store.
        Timespec {
            tv_sec: i64::try_from(secs).unwrap_or(i64::MAX),
            tv_nsec: nsecs.into(),
        }
    }
}

/// The owner chown(2) sets: uid and gid, `None` for "leave unchanged".
type Owner = (Option<Uid>, Option<Gid>);

/// The owner a SETATTR sets, in host ids (`--translate-uid`/`-gid`):
/// `None` if it sets none, EPERM if an id is under `forbid-guest`. An id
/// that is not set, or is u32::MAX ("leave unchanged" to chown(2)), is
/// `None` in the pair.
fn host_owner(fs: &PassthroughFs, arg: &SetattrIn) -> Result<Option<Owner>, Errno> {
    if arg.valid & (FATTR_UID | FATTR_GID) == 0 {
        return Ok(None);
    }
    let ids = &fs.config.ids;
    let host = |bit: u32, id: u32, map: &IdMap| {
        if arg.valid & bit == 0 || id == u32::MAX {
            return Ok(None);
        }
        map.to_host(id).map(Some).ok_or(Errno::EPERM)
    };
    let uid = host(FATTR_UID, arg.uid, &ids.uid)?.map(Uid::from_raw);
    let gid = host(FATTR_GID, arg.gid, &ids.gid)?.map(Gid::from_raw);
    Ok(Some((uid, gid)))
}

/// SETATTR's atime and mtime (each given, "now", or left alone), through
/// the open handle when there is one.
fn set_times(
    fs: &PassthroughFs, inode: &Arc<Inode>, handle: Option<&Handle>, arg: &SetattrIn,
) -> Result<(), Errno> {
    let valid = arg.valid;
    let times = Timestamps {
        last_access: time_arg(
            valid,
            FATTR_ATIME,
            FATTR_ATIME_NOW,
            arg.atime,
            arg.atimensec,
        ),
        last_modification: time_arg(
            valid,
            FATTR_MTIME,
            FATTR_MTIME_NOW,
            arg.mtime,
            arg.mtimensec,
        ),
    };
    match handle {
        Some(h) => rustix::fs::futimens(&h.fd, &times)?,
        None if inode.is_symlink() => rustix::fs::utimensat(
            &fs.path_fd(inode)?,
            c"",
            &times,
            AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        )?,
        None => {
            let fd = fs.path_fd(inode)?;
            let name = FdName::of(&fd);
            rustix::fs::utimensat(&fs.proc_self_fd, name.as_cstr(), &times, AtFlags::empty())?
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suid_always_goes_sgid_only_with_group_exec() {
        assert_eq!(mode_without_suidgid(0o4755), Some(0o755));
        assert_eq!(mode_without_suidgid(0o6755), Some(0o755));
        // setgid without group-exec is mandatory locking, not privilege.
        assert_eq!(mode_without_suidgid(0o2745), None);
        assert_eq!(mode_without_suidgid(0o6745), Some(0o2745));
        assert_eq!(mode_without_suidgid(0o100644), None);
    }
}
