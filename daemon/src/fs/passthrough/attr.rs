//! Host `statx` results turned into FUSE attributes and entries.

use std::os::fd::AsFd;

use daxfsd_protocol::abi::{Attr, AttrOut, EntryOut, ATTR_DAX};
use rustix::fs::{AtFlags, Statx, StatxAttributes, StatxFlags};

use super::{Context, PassthroughFs};
use crate::errno::Errno;

/// `statx` attribute bits of files that cannot be opened for writing as
/// they are: immutable, and append-only (writable only with O_APPEND).
const NOT_WRITABLE_IN_PLACE: StatxAttributes =
    StatxAttributes::IMMUTABLE.union(StatxAttributes::APPEND);

/// What every attribute query asks `statx` for.
const STATX_WANTED: StatxFlags = StatxFlags::BASIC_STATS.union(StatxFlags::MNT_ID);

/// `statx` of the inode `fd` refers to (an O_PATH fd or an open file; a
/// symlink itself, never its target).
pub(super) fn statx_fd(fd: impl AsFd) -> rustix::io::Result<Statx> {
    rustix::fs::statx(
        fd,
        c"",
        AtFlags::EMPTY_PATH | AtFlags::SYMLINK_NOFOLLOW,
        STATX_WANTED,
    )
}

/// The 32-bit device number Linux uses on the wire (`new_encode_dev`), the
/// form FUSE carries in `attr.rdev` and MKNOD's `rdev`.
pub(super) fn encode_dev(major: u32, minor: u32) -> u32 {
    (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
}

/// FUSE attributes of `st`; `ino` is the host inode number.
pub(super) fn attr_of(st: &Statx) -> Attr {
    // Timestamps before 1970 do not fit FUSE's unsigned seconds; clamp them
    // to the epoch rather than wrap to the far future.
    let secs = |t: i64| u64::try_from(t).unwrap_or(0);
    Attr {
        ino: st.stx_ino,
        size: st.stx_size,
        blocks: st.stx_blocks,
        atime: secs(st.stx_atime.tv_sec),
        mtime: secs(st.stx_mtime.tv_sec),
        ctime: secs(st.stx_ctime.tv_sec),
        atimensec: st.stx_atime.tv_nsec,
        mtimensec: st.stx_mtime.tv_nsec,
        ctimensec: st.stx_ctime.tv_nsec,
        mode: u32::from(st.stx_mode),
        nlink: st.stx_nlink,
        uid: st.stx_uid,
        gid: st.stx_gid,
        rdev: encode_dev(st.stx_rdev_major, st.stx_rdev_minor),
        blksize: st.stx_blksize,
        flags: 0,
    }
}

impl PassthroughFs {
    /// Seconds the guest may cache entries and attributes.
    pub(super) fn timeout(&self) -> u64 {
        self.config.cache.timeout_secs()
    }

    /// `ctx` (the guest's ids) with its uid and gid translated to the
    /// host's by `--translate-uid`/`--translate-gid`; EPERM for an id under
    /// `forbid-guest`. Everything that acts as or checks the caller uses
    /// this: the creation credentials, ACCESS, the open-for-writing check.
    pub(super) fn host_ctx(&self, ctx: Context) -> Result<Context, Errno> {
        let ids = &self.config.ids;
        match (ids.uid.to_host(ctx.uid), ids.gid.to_host(ctx.gid)) {
            (Some(uid), Some(gid)) => Ok(Context { uid, gid, ..ctx }),
            _ => Err(Errno::EPERM),
        }
    }

    /// The attributes sent to `ctx`: `st` with its owner translated to the
    /// guest's ids, plus ATTR_DAX on regular files the per-inode DAX policy
    /// selects and the frontend can map (only once the guest negotiated
    /// HAS_INODE_DAX). Every attribute and entry reply comes through here.
    fn guest_attr(&self, ctx: Context, st: &Statx) -> Attr {
        let mut attr = attr_of(st);
        attr.uid = self.config.ids.uid.to_guest(attr.uid);
        attr.gid = self.config.ids.gid.to_guest(attr.gid);
        if self.negotiated().inode_dax && self.dax_eligible(ctx, st) {
            attr.flags |= ATTR_DAX;
        }
        attr
    }

    /// Whether the file of `st` goes through the DAX window for `ctx` under
    /// dax=inode: a regular file that `--inode-dax` selects and that the
    /// frontend of this session can map. A frontend that cannot map a
    /// partial last page takes only sizes that are a non-zero multiple of
    /// 4 KiB (a file growing from 0 would soon end partway); one that cannot
    /// map read-only descriptors takes only files `ctx` may open for
    /// writing, since every read mapping then needs a writable descriptor.
    /// Evaluated on every attribute reply, so a size change turns the flag
    /// off or on (the guest re-instantiates the inode when it changes).
    fn dax_eligible(&self, ctx: Context, st: &Statx) -> bool {
        let regular = u32::from(st.stx_mode) & libc::S_IFMT == libc::S_IFREG;
        if !regular || !self.config.inode_dax.applies(st.stx_size) {
            return false;
        }
        let caps = self.negotiated().dax_caps;
        (caps.partial_tail || (st.stx_size > 0 && st.stx_size % 4096 == 0))
            && (caps.read_only_fd || self.may_open_for_writing(ctx, st))
    }

    /// Whether a FUSE OPEN for writing by `ctx` would be allowed for the
    /// file of `st`: the share is writable, the file is neither immutable
    /// nor append-only, and its mode grants `ctx` write access (checked as
    /// ACCESS checks it: uid and primary gid, FUSE carries no supplementary
    /// groups; root may write anything). `ctx` holds the guest's ids,
    /// checked once translated to the host's; a forbidden caller may not.
    pub(super) fn may_open_for_writing(&self, ctx: Context, st: &Statx) -> bool {
        !self.config.readonly
            && !st.stx_attributes.intersects(NOT_WRITABLE_IN_PLACE)
            && self
                .host_ctx(ctx)
                .is_ok_and(|host| mode_grants(host, st, libc::W_OK as u32))
    }

    /// The LOOKUP-style reply for `nodeid` with attributes `st`, for `ctx`.
    pub(super) fn entry_out(&self, ctx: Context, nodeid: u64, st: &Statx) -> EntryOut {
        EntryOut {
            nodeid,
            generation: 0,
            entry_valid: self.timeout(),
            attr_valid: self.timeout(),
            entry_valid_nsec: 0,
            attr_valid_nsec: 0,
            attr: self.guest_attr(ctx, st),
        }
    }

    /// The GETATTR-style reply with attributes `st`, for `ctx`.
    pub(super) fn attr_out(&self, ctx: Context, st: &Statx) -> AttrOut {
        AttrOut {
            attr_valid: self.timeout(),
            attr_valid_nsec: 0,
            dummy: 0,
            attr: self.guest_attr(ctx, st),
        }
    }
}

/// Whether the mode bits of `st` grant `ctx` (host ids) every access of `mask` (R_OK,
/// W_OK, X_OK bits): the owner's, group's (primary gid) or others' bits.
/// Root may read and write anything, and execute anything with an execute
/// bit or any directory.
pub(super) fn mode_grants(ctx: Context, st: &Statx, mask: u32) -> bool {
    let mode = u32::from(st.stx_mode);
    if ctx.uid == 0 {
        let is_dir = mode & libc::S_IFMT == libc::S_IFDIR;
        return mask & libc::X_OK as u32 == 0 || is_dir || mode & 0o111 != 0;
    }
    let granted = if st.stx_uid == ctx.uid {
        (mode >> 6) & 0o7
    } else if st.stx_gid == ctx.gid {
        (mode >> 3) & 0o7
    } else {
        mode & 0o7
    };
    mask & !granted == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encode_dev_matches_linux_new_encode_dev() {
        // /dev/null is 1:3, /dev/sda1 8:1; a large minor spills above bit 20.
        assert_eq!(encode_dev(1, 3), 0x103);
        assert_eq!(encode_dev(8, 1), 0x801);
        assert_eq!(encode_dev(259, 0x12345), 0x1231_0345);
    }
}
