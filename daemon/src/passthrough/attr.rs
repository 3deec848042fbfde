//! Host `statx` results turned into FUSE attributes and entries.

use std::os::fd::AsFd;

use daxfsd_protocol::abi::{Attr, AttrOut, EntryOut, ATTR_DAX};
use rustix::fs::{AtFlags, Statx, StatxFlags};

use super::PassthroughFs;

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

    /// The attributes sent to the guest: `st`, plus ATTR_DAX on regular
    /// files the per-inode DAX policy selects (only once the guest
    /// negotiated HAS_INODE_DAX).
    fn guest_attr(&self, st: &Statx) -> Attr {
        let mut attr = attr_of(st);
        let regular = u32::from(st.stx_mode) & libc::S_IFMT == libc::S_IFREG;
        if regular && self.negotiated().inode_dax && self.config.inode_dax.applies(st.stx_size) {
            attr.flags |= ATTR_DAX;
        }
        attr
    }

    /// The LOOKUP-style reply for `nodeid` with attributes `st`.
    pub(super) fn entry_out(&self, nodeid: u64, st: &Statx) -> EntryOut {
        EntryOut {
            nodeid,
            generation: 0,
            entry_valid: self.timeout(),
            attr_valid: self.timeout(),
            entry_valid_nsec: 0,
            attr_valid_nsec: 0,
            attr: self.guest_attr(st),
        }
    }

    /// The GETATTR-style reply with attributes `st`.
    pub(super) fn attr_out(&self, st: &Statx) -> AttrOut {
        AttrOut {
            attr_valid: self.timeout(),
            attr_valid_nsec: 0,
            dummy: 0,
            attr: self.guest_attr(st),
        }
    }
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
