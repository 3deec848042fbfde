//! Fixed-layout request and reply structures.

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// Declares ABI structs: `#[repr(C)]`, no implicit padding (checked by
/// zerocopy's `IntoBytes` derive), copyable and parseable from any bytes.
macro_rules! abi_structs {
    ($( $(#[$meta:meta])* pub struct $name:ident { $( $(#[$fmeta:meta])* pub $field:ident : $ty:ty ),* $(,)? } )*) => {
        $(
            $(#[$meta])*
            #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
            #[repr(C)]
            pub struct $name { $( $(#[$fmeta])* pub $field: $ty ),* }
        )*
    };
}

abi_structs! {
    /// Header of every request (`fuse_in_header`).
    pub struct InHeader {
        /// Length of the whole request, header included.
        pub len: u32,
        /// The operation, an [`Opcode`](super::Opcode) number.
        pub opcode: u32,
        /// Request id echoed in the reply.
        pub unique: u64,
        /// The inode the request is about.
        pub nodeid: u64,
        /// Caller's user id.
        pub uid: u32,
        /// Caller's group id.
        pub gid: u32,
        /// Caller's process id.
        pub pid: u32,
        /// Length of request extensions, in units of 8 bytes.
        pub total_extlen: u16,
        /// Padding.
        pub padding: u16,
    }

    /// Header of every reply (`fuse_out_header`).
    pub struct OutHeader {
        /// Length of the whole reply, header included.
        pub len: u32,
        /// Zero or a negated errno.
        pub error: i32,
        /// The request id this replies to.
        pub unique: u64,
    }

    /// Inode attributes (`fuse_attr`).
    pub struct Attr {
        /// Inode number.
        pub ino: u64,
        /// Size in bytes.
        pub size: u64,
        /// 512-byte blocks allocated.
        pub blocks: u64,
        /// Access time, seconds.
        pub atime: u64,
        /// Modification time, seconds.
        pub mtime: u64,
        /// Change time, seconds.
        pub ctime: u64,
        /// Access time, nanoseconds.
        pub atimensec: u32,
        /// Modification time, nanoseconds.
        pub mtimensec: u32,
        /// Change time, nanoseconds.
        pub ctimensec: u32,
        /// File type and permissions.
        pub mode: u32,
        /// Hard link count.
        pub nlink: u32,
        /// Owner.
        pub uid: u32,
        /// Group.
        pub gid: u32,
        /// Device number for device nodes.
        pub rdev: u32,
        /// Preferred I/O block size.
        pub blksize: u32,
        /// `ATTR_*` flags.
        pub flags: u32,
    }

    /// Reply to LOOKUP, MKNOD, MKDIR, SYMLINK, LINK (`fuse_entry_out`).
    pub struct EntryOut {
        /// The inode's nodeid; 0 caches a negative entry.
        pub nodeid: u64,
        /// Generation of the nodeid.
        pub generation: u64,
        /// Seconds the name may be cached.
        pub entry_valid: u64,
        /// Seconds the attributes may be cached.
        pub attr_valid: u64,
        /// Nanoseconds part of `entry_valid`.
        pub entry_valid_nsec: u32,
        /// Nanoseconds part of `attr_valid`.
        pub attr_valid_nsec: u32,
        /// The attributes.
        pub attr: Attr,
    }

    /// FORGET (`fuse_forget_in`).
    pub struct ForgetIn {
        /// Lookups to drop.
        pub nlookup: u64,
    }

    /// One entry of BATCH_FORGET (`fuse_forget_one`).
    pub struct ForgetOne {
        /// The inode.
        pub nodeid: u64,
        /// Lookups to drop.
        pub nlookup: u64,
    }

    /// BATCH_FORGET (`fuse_batch_forget_in`), followed by `count` [`ForgetOne`].
    pub struct BatchForgetIn {
        /// Number of entries.
        pub count: u32,
        /// Padding.
        pub dummy: u32,
    }

    /// GETATTR (`fuse_getattr_in`).
    pub struct GetattrIn {
        /// `GETATTR_*` flags.
        pub getattr_flags: u32,
        /// Padding.
        pub dummy: u32,
        /// File handle, valid with `GETATTR_FH`.
        pub fh: u64,
    }

    /// Reply to GETATTR and SETATTR (`fuse_attr_out`).
    pub struct AttrOut {
        /// Seconds the attributes may be cached.
        pub attr_valid: u64,
        /// Nanoseconds part of `attr_valid`.
        pub attr_valid_nsec: u32,
        /// Padding.
        pub dummy: u32,
        /// The attributes.
        pub attr: Attr,
    }

    /// MKNOD (`fuse_mknod_in`), followed by the name.
    pub struct MknodIn {
        /// Type and permissions.
        pub mode: u32,
        /// Device number.
        pub rdev: u32,
        /// The caller's umask.
        pub umask: u32,
        /// Padding.
        pub padding: u32,
    }

    /// MKDIR (`fuse_mkdir_in`), followed by the name.
    pub struct MkdirIn {
        /// Permissions.
        pub mode: u32,
        /// The caller's umask.
        pub umask: u32,
    }

    /// RENAME (`fuse_rename_in`), followed by the old and new names.
    pub struct RenameIn {
        /// The target directory.
        pub newdir: u64,
    }

    /// RENAME2 (`fuse_rename2_in`), followed by the old and new names.
    pub struct Rename2In {
        /// The target directory.
        pub newdir: u64,
        /// `RENAME_*` flags.
        pub flags: u32,
        /// Padding.
        pub padding: u32,
    }

    /// LINK (`fuse_link_in`), followed by the new name.
    pub struct LinkIn {
        /// The inode to link.
        pub oldnodeid: u64,
    }

    /// SETATTR (`fuse_setattr_in`).
    pub struct SetattrIn {
        /// `FATTR_*` bits saying which fields are valid.
        pub valid: u32,
        /// Padding.
        pub padding: u32,
        /// File handle, valid with `FATTR_FH`.
        pub fh: u64,
        /// New size.
        pub size: u64,
        /// Lock owner.
        pub lock_owner: u64,
        /// New access time, seconds.
        pub atime: u64,
        /// New modification time, seconds.
        pub mtime: u64,
        /// New change time, seconds.
        pub ctime: u64,
        /// New access time, nanoseconds.
        pub atimensec: u32,
        /// New modification time, nanoseconds.
        pub mtimensec: u32,
        /// New change time, nanoseconds.
        pub ctimensec: u32,
        /// New mode.
        pub mode: u32,
        /// Unused.
        pub unused4: u32,
        /// New owner.
        pub uid: u32,
        /// New group.
        pub gid: u32,
        /// Unused.
        pub unused5: u32,
    }

    /// OPEN and OPENDIR (`fuse_open_in`).
    pub struct OpenIn {
        /// open(2) flags.
        pub flags: u32,
        /// `OPEN_*` flags.
        pub open_flags: u32,
    }

    /// CREATE (`fuse_create_in`), followed by the name.
    pub struct CreateIn {
        /// open(2) flags.
        pub flags: u32,
        /// Permissions.
        pub mode: u32,
        /// The caller's umask.
        pub umask: u32,
        /// `OPEN_*` flags.
        pub open_flags: u32,
    }

    /// Reply to OPEN, OPENDIR and (after an [`EntryOut`]) CREATE (`fuse_open_out`).
    pub struct OpenOut {
        /// File handle.
        pub fh: u64,
        /// `FOPEN_*` flags.
        pub open_flags: u32,
        /// Backing file id for passthrough; unused here.
        pub backing_id: i32,
    }

    /// RELEASE and RELEASEDIR (`fuse_release_in`).
    pub struct ReleaseIn {
        /// File handle.
        pub fh: u64,
        /// open(2) flags.
        pub flags: u32,
        /// `RELEASE_*` flags.
        pub release_flags: u32,
        /// Lock owner.
        pub lock_owner: u64,
    }

    /// FLUSH (`fuse_flush_in`).
    pub struct FlushIn {
        /// File handle.
        pub fh: u64,
        /// Unused.
        pub unused: u32,
        /// Padding.
        pub padding: u32,
        /// Lock owner.
        pub lock_owner: u64,
    }

    /// READ, READDIR, READDIRPLUS (`fuse_read_in`).
    pub struct ReadIn {
        /// File handle.
        pub fh: u64,
        /// Offset (a directory cookie for READDIR).
        pub offset: u64,
        /// Bytes wanted.
        pub size: u32,
        /// Read flags.
        pub read_flags: u32,
        /// Lock owner.
        pub lock_owner: u64,
        /// open(2) flags.
        pub flags: u32,
        /// Padding.
        pub padding: u32,
    }

    /// WRITE (`fuse_write_in`), followed by `size` bytes of data.
    pub struct WriteIn {
        /// File handle.
        pub fh: u64,
        /// Offset.
        pub offset: u64,
        /// Bytes that follow.
        pub size: u32,
        /// `WRITE_*` flags.
        pub write_flags: u32,
        /// Lock owner.
        pub lock_owner: u64,
        /// open(2) flags.
        pub flags: u32,
        /// Padding.
        pub padding: u32,
    }

    /// Reply to WRITE and COPY_FILE_RANGE (`fuse_write_out`).
    pub struct WriteOut {
        /// Bytes written.
        pub size: u32,
        /// Padding.
        pub padding: u32,
    }

    /// Filesystem statistics (`fuse_kstatfs`), the whole STATFS reply.
    pub struct StatfsOut {
        /// Total blocks.
        pub blocks: u64,
        /// Free blocks.
        pub bfree: u64,
        /// Free blocks for unprivileged users.
        pub bavail: u64,
        /// Total inodes.
        pub files: u64,
        /// Free inodes.
        pub ffree: u64,
        /// Block size.
        pub bsize: u32,
        /// Longest name.
        pub namelen: u32,
        /// Fragment size.
        pub frsize: u32,
        /// Padding.
        pub padding: u32,
        /// Spare.
        pub spare: [u32; 6],
    }

    /// FSYNC and FSYNCDIR (`fuse_fsync_in`).
    pub struct FsyncIn {
        /// File handle.
        pub fh: u64,
        /// `FSYNC_*` flags.
        pub fsync_flags: u32,
        /// Padding.
        pub padding: u32,
    }

    /// SETXATTR (`fuse_setxattr_in` without the SETXATTR_EXT fields), followed
    /// by the name and `size` bytes of value.
    pub struct SetxattrIn {
        /// Value length.
        pub size: u32,
        /// setxattr(2) flags.
        pub flags: u32,
    }

    /// SETXATTR once SETXATTR_EXT is agreed (`fuse_setxattr_in`), followed
    /// by the name and `size` bytes of value.
    pub struct SetxattrInExt {
        /// Value length.
        pub size: u32,
        /// setxattr(2) flags.
        pub flags: u32,
        /// `SETXATTR_*` flags.
        pub setxattr_flags: u32,
        /// Padding.
        pub padding: u32,
    }

    /// Header of each request extension (`fuse_ext_header`); a security
    /// context extension's (`fuse_secctx_header`) has the same layout, its
    /// `ext_type` being the number of contexts.
    pub struct ExtHeader {
        /// Bytes of the extension, this header included (a multiple of 8).
        pub size: u32,
        /// [`EXT_GROUPS`](super::EXT_GROUPS), or at most
        /// [`MAX_NR_SECCTX`](super::MAX_NR_SECCTX) security contexts.
        pub ext_type: u32,
    }

    /// One security context (`fuse_secctx`), followed by its xattr name
    /// (NUL-terminated) and `size` bytes of value, padded to 8 bytes.
    pub struct Secctx {
        /// Bytes of the value.
        pub size: u32,
        /// Padding.
        pub padding: u32,
    }

    /// GETXATTR and LISTXATTR (`fuse_getxattr_in`).
    pub struct GetxattrIn {
        /// Buffer size; 0 asks for the needed size.
        pub size: u32,
        /// Padding.
        pub padding: u32,
    }

    /// Reply to a size query of GETXATTR / LISTXATTR (`fuse_getxattr_out`).
    pub struct GetxattrOut {
        /// Needed size.
        pub size: u32,
        /// Padding.
        pub padding: u32,
    }

    /// ACCESS (`fuse_access_in`).
    pub struct AccessIn {
        /// access(2) mask.
        pub mask: u32,
        /// Padding.
        pub padding: u32,
    }

    /// The part of INIT every protocol minor sends (`fuse_init_in` up to 7.35).
    pub struct InitInCompat {
        /// Major version.
        pub major: u32,
        /// Minor version.
        pub minor: u32,
        /// Readahead the kernel wants.
        pub max_readahead: u32,
        /// Lower 32 bits of the capability flags.
        pub flags: u32,
    }

    /// The fields INIT gained in 7.36 (`fuse_init_in` after `flags`).
    pub struct InitInExt {
        /// Upper 32 bits of the capability flags.
        pub flags2: u32,
        /// Unused.
        pub unused: [u32; 11],
    }

    /// Reply to INIT (`fuse_init_out`).
    pub struct InitOut {
        /// Major version.
        pub major: u32,
        /// Minor version.
        pub minor: u32,
        /// Readahead.
        pub max_readahead: u32,
        /// Lower 32 bits of the capability flags.
        pub flags: u32,
        /// Background requests.
        pub max_background: u16,
        /// Congestion threshold.
        pub congestion_threshold: u16,
        /// Largest WRITE payload.
        pub max_write: u32,
        /// Timestamp granularity in nanoseconds.
        pub time_gran: u32,
        /// Largest request in pages.
        pub max_pages: u16,
        /// log2 of the DAX mapping alignment.
        pub map_alignment: u16,
        /// Upper 32 bits of the capability flags.
        pub flags2: u32,
        /// Stacking depth for passthrough.
        pub max_stack_depth: u32,
        /// Unused.
        pub unused: [u32; 6],
    }

    /// INTERRUPT (`fuse_interrupt_in`).
    pub struct InterruptIn {
        /// The request to interrupt.
        pub unique: u64,
    }

    /// A directory entry header (`fuse_dirent`), followed by the name and
    /// padding to 8 bytes.
    pub struct Dirent {
        /// Inode number.
        pub ino: u64,
        /// Cookie of the next entry.
        pub off: u64,
        /// Name length.
        pub namelen: u32,
        /// `DT_*` type.
        pub typ: u32,
    }

    /// FALLOCATE (`fuse_fallocate_in`).
    pub struct FallocateIn {
        /// File handle.
        pub fh: u64,
        /// Offset.
        pub offset: u64,
        /// Length.
        pub length: u64,
        /// fallocate(2) mode.
        pub mode: u32,
        /// Padding.
        pub padding: u32,
    }

    /// LSEEK (`fuse_lseek_in`).
    pub struct LseekIn {
        /// File handle.
        pub fh: u64,
        /// Offset.
        pub offset: u64,
        /// `SEEK_*`.
        pub whence: u32,
        /// Padding.
        pub padding: u32,
    }

    /// Reply to LSEEK (`fuse_lseek_out`).
    pub struct LseekOut {
        /// Resulting offset.
        pub offset: u64,
    }

    /// COPY_FILE_RANGE (`fuse_copy_file_range_in`).
    pub struct CopyFileRangeIn {
        /// Source handle.
        pub fh_in: u64,
        /// Source offset.
        pub off_in: u64,
        /// Destination inode.
        pub nodeid_out: u64,
        /// Destination handle.
        pub fh_out: u64,
        /// Destination offset.
        pub off_out: u64,
        /// Bytes to copy.
        pub len: u64,
        /// copy_file_range(2) flags.
        pub flags: u64,
    }

    /// SYNCFS (`fuse_syncfs_in`).
    pub struct SyncfsIn {
        /// Padding.
        pub padding: u64,
    }

    /// SETUPMAPPING (`fuse_setupmapping_in`): map a file range into the DAX window.
    pub struct SetupMappingIn {
        /// File handle, or `u64::MAX` to open the nodeid's file.
        pub fh: u64,
        /// File offset.
        pub foffset: u64,
        /// Length.
        pub len: u64,
        /// `SETUPMAPPING_FLAG_*`.
        pub flags: u64,
        /// Offset in the window.
        pub moffset: u64,
    }

    /// REMOVEMAPPING (`fuse_removemapping_in`), followed by `count` [`RemoveMappingOne`].
    pub struct RemoveMappingIn {
        /// Number of ranges.
        pub count: u32,
    }

    /// One range of REMOVEMAPPING (`fuse_removemapping_one`).
    pub struct RemoveMappingOne {
        /// Offset in the window.
        pub moffset: u64,
        /// Length.
        pub len: u64,
    }
}

/// virtio-fs device configuration space (`struct virtio_fs_config`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C)]
pub struct VirtioFsConfig {
    /// Filesystem tag, NUL-padded UTF-8.
    pub tag: [u8; 36],
    /// Number of request queues (the hiprio queue not counted).
    pub num_request_queues: u32,
    /// Size of the notification buffer; 0 without notifications.
    pub notify_buf_size: u32,
}

/// Size of a [`Dirent`] header plus `namelen` bytes, rounded up to 8.
pub const fn dirent_size(namelen: usize) -> usize {
    (core::mem::size_of::<Dirent>() + namelen + 7) & !7
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn sizes_match_linux_uapi() {
        // Sizes from include/uapi/linux/fuse.h as compiled for x86_64.
        assert_eq!(size_of::<InHeader>(), 40);
        assert_eq!(size_of::<OutHeader>(), 16);
        assert_eq!(size_of::<Attr>(), 88);
        assert_eq!(size_of::<EntryOut>(), 128);
        assert_eq!(size_of::<AttrOut>(), 104);
        assert_eq!(size_of::<SetattrIn>(), 88);
        assert_eq!(size_of::<ReadIn>(), 40);
        assert_eq!(size_of::<WriteIn>(), 40);
        assert_eq!(size_of::<StatfsOut>(), 80);
        assert_eq!(size_of::<InitInCompat>() + size_of::<InitInExt>(), 64);
        assert_eq!(size_of::<InitOut>(), 64);
        assert_eq!(size_of::<OpenOut>(), 16);
        assert_eq!(size_of::<ReleaseIn>(), 24);
        assert_eq!(size_of::<FlushIn>(), 24);
        assert_eq!(size_of::<CopyFileRangeIn>(), 56);
        assert_eq!(size_of::<SetupMappingIn>(), 40);
        assert_eq!(size_of::<RemoveMappingIn>(), 4);
        assert_eq!(size_of::<RemoveMappingOne>(), 16);
        assert_eq!(size_of::<VirtioFsConfig>(), 44);
        assert_eq!(size_of::<Dirent>(), 24);
    }

    #[test]
    fn dirent_size_pads_to_eight() {
        assert_eq!(dirent_size(1), 32);
        assert_eq!(dirent_size(8), 32);
        assert_eq!(dirent_size(9), 40);
    }
}
