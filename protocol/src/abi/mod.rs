//! The FUSE kernel ABI as the Linux guest speaks it (protocol 7.41, Linux 6.12).
//!
//! Every structure is `#[repr(C)]` with explicit padding and derives the
//! zerocopy traits, so parsing is a bounds-checked copy out of a byte slice
//! and encoding is a view of the struct as bytes. Field names follow
//! `include/uapi/linux/fuse.h` so the two can be read side by side.

mod flags;
mod structs;

pub use flags::*;
pub use structs::*;

/// Major version of the FUSE protocol this crate implements.
pub const KERNEL_VERSION: u32 = 7;
/// Minor version of the FUSE protocol this crate implements.
pub const KERNEL_MINOR_VERSION: u32 = 41;
/// Oldest minor version a client may speak and still be served.
pub const MIN_KERNEL_MINOR_VERSION: u32 = 27;

/// The nodeid of the root of the shared directory.
pub const ROOT_ID: u64 = 1;

/// Longest name a directory entry may carry (Linux `NAME_MAX`).
pub const NAME_MAX: usize = 255;
/// Longest path a symlink target may carry (Linux `PATH_MAX`, without the NUL).
pub const PATH_MAX: usize = 4095;
/// Largest extended attribute value (Linux `XATTR_SIZE_MAX`).
pub const XATTR_SIZE_MAX: usize = 65536;
/// Largest extended attribute list (Linux `XATTR_LIST_MAX`).
pub const XATTR_LIST_MAX: usize = 65536;

/// Most entries one FUSE_REMOVEMAPPING may carry: one 4 KiB page of
/// [`RemoveMappingOne`] records, as `fs/fuse/dax.c` batches them.
pub const REMOVEMAPPING_MAX_ENTRIES: u32 = 4096 / core::mem::size_of::<RemoveMappingOne>() as u32;

/// Most entries one FUSE_BATCH_FORGET may carry before it is refused.
pub const BATCH_FORGET_MAX_ENTRIES: u32 = 1 << 16;

/// Opcodes of the requests a guest sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[allow(missing_docs)]
pub enum Opcode {
    Lookup = 1,
    Forget = 2,
    Getattr = 3,
    Setattr = 4,
    Readlink = 5,
    Symlink = 6,
    Mknod = 8,
    Mkdir = 9,
    Unlink = 10,
    Rmdir = 11,
    Rename = 12,
    Link = 13,
    Open = 14,
    Read = 15,
    Write = 16,
    Statfs = 17,
    Release = 18,
    Fsync = 20,
    Setxattr = 21,
    Getxattr = 22,
    Listxattr = 23,
    Removexattr = 24,
    Flush = 25,
    Init = 26,
    Opendir = 27,
    Readdir = 28,
    Releasedir = 29,
    Fsyncdir = 30,
    Getlk = 31,
    Setlk = 32,
    Setlkw = 33,
    Access = 34,
    Create = 35,
    Interrupt = 36,
    Bmap = 37,
    Destroy = 38,
    Ioctl = 39,
    Poll = 40,
    NotifyReply = 41,
    BatchForget = 42,
    Fallocate = 43,
    Readdirplus = 44,
    Rename2 = 45,
    Lseek = 46,
    CopyFileRange = 47,
    SetupMapping = 48,
    RemoveMapping = 49,
    Syncfs = 50,
    Tmpfile = 51,
    Statx = 52,
    CopyFileRange64 = 53,
}

impl Opcode {
    /// Every opcode this crate knows, in numeric order.
    pub const ALL: [Opcode; 51] = [
        Self::Lookup,
        Self::Forget,
        Self::Getattr,
        Self::Setattr,
        Self::Readlink,
        Self::Symlink,
        Self::Mknod,
        Self::Mkdir,
        Self::Unlink,
        Self::Rmdir,
        Self::Rename,
        Self::Link,
        Self::Open,
        Self::Read,
        Self::Write,
        Self::Statfs,
        Self::Release,
        Self::Fsync,
        Self::Setxattr,
        Self::Getxattr,
        Self::Listxattr,
        Self::Removexattr,
        Self::Flush,
        Self::Init,
        Self::Opendir,
        Self::Readdir,
        Self::Releasedir,
        Self::Fsyncdir,
        Self::Getlk,
        Self::Setlk,
        Self::Setlkw,
        Self::Access,
        Self::Create,
        Self::Interrupt,
        Self::Bmap,
        Self::Destroy,
        Self::Ioctl,
        Self::Poll,
        Self::NotifyReply,
        Self::BatchForget,
        Self::Fallocate,
        Self::Readdirplus,
        Self::Rename2,
        Self::Lseek,
        Self::CopyFileRange,
        Self::SetupMapping,
        Self::RemoveMapping,
        Self::Syncfs,
        Self::Tmpfile,
        Self::Statx,
        Self::CopyFileRange64,
    ];

    /// The opcode with this number, if the protocol defines one.
    pub fn from_u32(value: u32) -> Option<Self> {
        Self::ALL.iter().copied().find(|op| *op as u32 == value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcode_numbers_round_trip() {
        for op in Opcode::ALL {
            assert_eq!(Opcode::from_u32(op as u32), Some(op));
        }
        assert_eq!(Opcode::from_u32(7), None, "7 (FUSE_GETDIR) was removed");
        assert_eq!(Opcode::from_u32(19), None);
        assert_eq!(Opcode::from_u32(0), None);
        assert_eq!(Opcode::from_u32(4096), None);
    }

    #[test]
    fn removemapping_batch_is_one_page() {
        assert_eq!(REMOVEMAPPING_MAX_ENTRIES, 256);
    }
}
