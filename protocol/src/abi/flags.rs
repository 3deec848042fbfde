//! Flag words of the FUSE ABI.

// FUSE_INIT flags (`fuse_init_in.flags` / `fuse_init_out.flags`; bits 32 and
// up travel in `flags2` once both sides set [`INIT_EXT`]).
/// Asynchronous read requests.
pub const ASYNC_READ: u64 = 1 << 0;
/// Remote POSIX locks.
pub const POSIX_LOCKS: u64 = 1 << 1;
/// The server handles O_TRUNC inside OPEN.
pub const ATOMIC_O_TRUNC: u64 = 1 << 3;
/// Writes larger than 4 KiB.
pub const BIG_WRITES: u64 = 1 << 5;
/// The kernel does not apply the umask to the mode of new files.
pub const DONT_MASK: u64 = 1 << 6;
/// Remote flock locks.
pub const FLOCK_LOCKS: u64 = 1 << 10;
/// The kernel checks the file's mtime to invalidate its cache.
pub const AUTO_INVAL_DATA: u64 = 1 << 12;
/// READDIRPLUS is supported.
pub const DO_READDIRPLUS: u64 = 1 << 13;
/// Adaptive READDIRPLUS.
pub const READDIRPLUS_AUTO: u64 = 1 << 14;
/// Asynchronous direct I/O.
pub const ASYNC_DIO: u64 = 1 << 15;
/// Writeback caching in the guest.
pub const WRITEBACK_CACHE: u64 = 1 << 16;
/// Parallel lookups and readdirs in one directory.
pub const PARALLEL_DIROPS: u64 = 1 << 18;
/// The server clears setuid/setgid bits on write, chown and truncate.
pub const HANDLE_KILLPRIV: u64 = 1 << 19;
/// The server enforces POSIX ACLs.
pub const POSIX_ACL: u64 = 1 << 20;
/// Reading a connection that was aborted returns ECONNABORTED.
pub const ABORT_ERROR: u64 = 1 << 21;
/// `max_pages` in the INIT reply is valid.
pub const MAX_PAGES: u64 = 1 << 22;
/// The kernel caches READLINK results.
pub const CACHE_SYMLINKS: u64 = 1 << 23;
/// The kernel may skip OPENDIR.
pub const NO_OPENDIR_SUPPORT: u64 = 1 << 24;
/// The kernel invalidates the data cache only when told.
pub const EXPLICIT_INVAL_DATA: u64 = 1 << 25;
/// `map_alignment` in the INIT reply is valid (DAX).
pub const MAP_ALIGNMENT: u64 = 1 << 26;
/// Submounts are reported with [`ATTR_SUBMOUNT`].
pub const SUBMOUNTS: u64 = 1 << 27;
/// Version 2 of [`HANDLE_KILLPRIV`]: the kernel says when to kill.
pub const HANDLE_KILLPRIV_V2: u64 = 1 << 28;
/// Extended SETXATTR request.
pub const SETXATTR_EXT: u64 = 1 << 29;
/// `flags2` carries the upper 32 bits of the flags.
pub const INIT_EXT: u64 = 1 << 30;
/// Security contexts travel with create requests.
pub const SECURITY_CTX: u64 = 1 << 32;
/// Per-inode DAX: the server marks inodes with [`ATTR_DAX`].
pub const HAS_INODE_DAX: u64 = 1 << 33;
/// Supplementary group travels with create requests.
pub const CREATE_SUPP_GROUP: u64 = 1 << 34;
/// The kernel may expire entries without dropping them.
pub const HAS_EXPIRE_ONLY: u64 = 1 << 35;
/// Shared mmap of files opened with direct I/O.
pub const DIRECT_IO_ALLOW_MMAP: u64 = 1 << 36;

// fuse_setxattr_in.setxattr_flags (with SETXATTR_EXT)
/// Clear the setgid bit when setting `system.posix_acl_access`.
pub const SETXATTR_ACL_KILL_SGID: u32 = 1 << 0;

// Request extensions (`fuse_ext_header.type`)
/// Types 0 to this are a security context extension naming that many
/// contexts (`FUSE_MAX_NR_SECCTX`).
pub const MAX_NR_SECCTX: u32 = 31;
/// The supplementary group extension (`FUSE_EXT_GROUPS`).
pub const EXT_GROUPS: u32 = 32;

// fuse_attr.flags
/// The inode is the root of a submount.
pub const ATTR_SUBMOUNT: u32 = 1 << 0;
/// Access this inode through the DAX window (with `dax=inode`).
pub const ATTR_DAX: u32 = 1 << 1;

// fuse_getattr_in.getattr_flags
/// `fh` in the GETATTR request is valid.
pub const GETATTR_FH: u32 = 1 << 0;

// fuse_setattr_in.valid
/// Set the mode.
pub const FATTR_MODE: u32 = 1 << 0;
/// Set the owner.
pub const FATTR_UID: u32 = 1 << 1;
/// Set the group.
pub const FATTR_GID: u32 = 1 << 2;
/// Set the size.
pub const FATTR_SIZE: u32 = 1 << 3;
/// Set the access time.
pub const FATTR_ATIME: u32 = 1 << 4;
/// Set the modification time.
pub const FATTR_MTIME: u32 = 1 << 5;
/// `fh` is valid.
pub const FATTR_FH: u32 = 1 << 6;
/// Set the access time to now.
pub const FATTR_ATIME_NOW: u32 = 1 << 7;
/// Set the modification time to now.
pub const FATTR_MTIME_NOW: u32 = 1 << 8;
/// `lock_owner` is valid.
pub const FATTR_LOCKOWNER: u32 = 1 << 9;
/// Set the change time.
pub const FATTR_CTIME: u32 = 1 << 10;
/// Clear setuid/setgid (with [`HANDLE_KILLPRIV_V2`]).
pub const FATTR_KILL_SUIDGID: u32 = 1 << 11;

// fuse_open_out.open_flags
/// Bypass the guest page cache for this file.
pub const FOPEN_DIRECT_IO: u32 = 1 << 0;
/// Keep the guest page cache on open.
pub const FOPEN_KEEP_CACHE: u32 = 1 << 1;
/// The file is not seekable.
pub const FOPEN_NONSEEKABLE: u32 = 1 << 2;
/// Cache directory contents.
pub const FOPEN_CACHE_DIR: u32 = 1 << 3;

// fuse_open_in.open_flags / fuse_create_in.open_flags
/// Clear setuid/setgid on open with O_TRUNC (with [`HANDLE_KILLPRIV_V2`]).
pub const OPEN_KILL_SUIDGID: u32 = 1 << 0;

// fuse_write_in.write_flags
/// The write comes from the guest page cache (writeback).
pub const WRITE_CACHE: u32 = 1 << 0;
/// `lock_owner` is valid.
pub const WRITE_LOCKOWNER: u32 = 1 << 1;
/// Clear setuid/setgid (with [`HANDLE_KILLPRIV_V2`]).
pub const WRITE_KILL_SUIDGID: u32 = 1 << 2;

// fuse_release_in.release_flags
/// Flush before release.
pub const RELEASE_FLUSH: u32 = 1 << 0;

// fuse_fsync_in.fsync_flags
/// Sync only the data, not the metadata (fdatasync).
pub const FSYNC_FDATASYNC: u32 = 1 << 0;

// fuse_setupmapping_in.flags
/// The mapping must be writable.
pub const SETUPMAPPING_FLAG_WRITE: u64 = 1 << 0;
/// The mapping must be readable.
pub const SETUPMAPPING_FLAG_READ: u64 = 1 << 1;

// fuse_rename2_in.flags (Linux renameat2)
/// Fail if the target exists.
pub const RENAME_NOREPLACE: u32 = 1 << 0;
/// Atomically exchange source and target.
pub const RENAME_EXCHANGE: u32 = 1 << 1;
/// Leave a whiteout at the source (overlayfs).
pub const RENAME_WHITEOUT: u32 = 1 << 2;
