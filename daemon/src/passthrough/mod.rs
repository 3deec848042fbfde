//! Passthrough filesystem over the shared directory.
//!
//! INTERFACE CONTRACT (the dispatcher calls exactly these methods):
//! every method takes the caller's [`Context`] where the operation depends on
//! who asks, returns `Result<_, Errno>` with a positive Linux errno, and never
//! panics on guest input. Names arrive already validated by the protocol
//! crate (non-empty, no '/', not "." or "..", <= NAME_MAX, NUL-terminated).

use std::ffi::CStr;

use daxfsd_protocol::abi::{AttrOut, CreateIn, EntryOut, OpenOut, SetattrIn, StatfsOut};
use daxfsd_protocol::reply::DirentWriter;

use crate::errno::Errno;

/// Who sends a request, from its FUSE header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    /// Caller's user id in the guest.
    pub uid: u32,
    /// Caller's group id in the guest.
    pub gid: u32,
    /// Caller's process id in the guest.
    pub pid: u32,
}

/// How long the guest may cache names and attributes, and what OPEN tells
/// the guest's page cache (`--cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CachePolicy {
    /// No caching: timeouts 0, files opened with FOPEN_DIRECT_IO.
    Never,
    /// Cache for 1 second; the guest revalidates on open.
    #[default]
    Auto,
    /// Cache for a day; FOPEN_KEEP_CACHE on open.
    Always,
}

/// Configuration of the passthrough filesystem.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// The host directory that becomes the guest's root.
    pub shared_dir: std::path::PathBuf,
    /// Cache policy.
    pub cache: CachePolicy,
    /// Refuse every modifying operation with EROFS.
    pub readonly: bool,
    /// Serve extended attributes (otherwise the xattr operations return ENOSYS).
    pub xattr: bool,
}

/// Feature bits agreed in INIT that change how operations behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Negotiated {
    /// The guest uses writeback caching (WRITEBACK_CACHE).
    pub writeback: bool,
    /// The guest asks the server to kill suid/sgid (HANDLE_KILLPRIV_V2).
    pub killpriv_v2: bool,
    /// Per-inode DAX (HAS_INODE_DAX) was negotiated.
    pub inode_dax: bool,
}

/// The passthrough filesystem.
#[derive(Debug)]
pub struct PassthroughFs {
    config: FsConfig,
}

impl PassthroughFs {
    /// Opens the shared directory.
    pub fn new(config: FsConfig) -> std::io::Result<Self> {
        Ok(Self { config })
    }

    /// The configuration.
    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    /// INIT: the session starts with these negotiated features.
    pub fn init(&self, _negotiated: Negotiated) {}

    /// DESTROY or a device reset: forget every inode and handle except the root.
    pub fn destroy(&self) {}

    /// Number of inodes and open handles (for tests and metrics).
    pub fn counts(&self) -> (usize, usize) {
        (0, 0)
    }

    pub fn lookup(&self, _ctx: Context, _parent: u64, _name: &CStr) -> Result<EntryOut, Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn forget(&self, _nodeid: u64, _nlookup: u64) {}
    pub fn getattr(&self, _ctx: Context, _nodeid: u64, _fh: Option<u64>) -> Result<AttrOut, Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn setattr(&self, _ctx: Context, _nodeid: u64, _arg: &SetattrIn) -> Result<AttrOut, Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn readlink(&self, _ctx: Context, _nodeid: u64) -> Result<Vec<u8>, Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn symlink(&self, _ctx: Context, _parent: u64, _name: &CStr, _target: &CStr) -> Result<EntryOut, Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn mknod(&self, _ctx: Context, _parent: u64, _name: &CStr, _mode: u32, _rdev: u32, _umask: u32) -> Result<EntryOut, Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn mkdir(&self, _ctx: Context, _parent: u64, _name: &CStr, _mode: u32, _umask: u32) -> Result<EntryOut, Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn unlink(&self, _ctx: Context, _parent: u64, _name: &CStr) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn rmdir(&self, _ctx: Context, _parent: u64, _name: &CStr) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    /// RENAME / RENAME2 (`flags` are RENAME_* bits, 0 for plain rename).
    pub fn rename(&self, _ctx: Context, _olddir: u64, _oldname: &CStr, _newdir: u64, _newname: &CStr, _flags: u32) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn link(&self, _ctx: Context, _nodeid: u64, _newparent: u64, _newname: &CStr) -> Result<EntryOut, Errno> {
        Err(Errno::ENOSYS)
    }
    /// OPEN: `flags` are open(2) flags, `open_flags` OPEN_* bits.
    pub fn open(&self, _ctx: Context, _nodeid: u64, _flags: u32, _open_flags: u32) -> Result<OpenOut, Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn create(&self, _ctx: Context, _parent: u64, _name: &CStr, _arg: &CreateIn) -> Result<(EntryOut, OpenOut), Errno> {
        Err(Errno::ENOSYS)
    }
    /// READ into `buf` (its length is the size asked); returns bytes read.
    pub fn read(&self, _ctx: Context, _nodeid: u64, _fh: u64, _offset: u64, _buf: &mut [u8]) -> Result<usize, Errno> {
        Err(Errno::ENOSYS)
    }
    /// WRITE; `write_flags` are WRITE_* bits. Returns bytes written.
    pub fn write(&self, _ctx: Context, _nodeid: u64, _fh: u64, _offset: u64, _data: &[u8], _write_flags: u32) -> Result<usize, Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn statfs(&self, _ctx: Context, _nodeid: u64) -> Result<StatfsOut, Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn release(&self, _nodeid: u64, _fh: u64) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn flush(&self, _nodeid: u64, _fh: u64) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn fsync(&self, _nodeid: u64, _fh: u64, _datasync: bool) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn opendir(&self, _ctx: Context, _nodeid: u64, _flags: u32) -> Result<OpenOut, Errno> {
        Err(Errno::ENOSYS)
    }
    /// READDIR / READDIRPLUS from directory cookie `offset` into `out`
    /// (stops when the next entry does not fit). With `plus`, each entry
    /// except "." and ".." counts as a lookup.
    pub fn readdir(&self, _ctx: Context, _nodeid: u64, _fh: u64, _offset: u64, _plus: bool, _out: &mut DirentWriter<'_, '_>) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn releasedir(&self, _nodeid: u64, _fh: u64) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn fsyncdir(&self, _nodeid: u64, _fh: u64, _datasync: bool) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn access(&self, _ctx: Context, _nodeid: u64, _mask: u32) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn setxattr(&self, _ctx: Context, _nodeid: u64, _name: &CStr, _value: &[u8], _flags: u32) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    /// The whole value; the dispatcher handles size queries and ERANGE.
    pub fn getxattr(&self, _ctx: Context, _nodeid: u64, _name: &CStr) -> Result<Vec<u8>, Errno> {
        Err(Errno::ENOSYS)
    }
    /// The whole NUL-separated list; the dispatcher handles size queries and ERANGE.
    pub fn listxattr(&self, _ctx: Context, _nodeid: u64) -> Result<Vec<u8>, Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn removexattr(&self, _ctx: Context, _nodeid: u64, _name: &CStr) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn fallocate(&self, _ctx: Context, _nodeid: u64, _fh: u64, _offset: u64, _length: u64, _mode: u32) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn lseek(&self, _ctx: Context, _nodeid: u64, _fh: u64, _offset: u64, _whence: u32) -> Result<u64, Errno> {
        Err(Errno::ENOSYS)
    }
    #[allow(clippy::too_many_arguments)]
    pub fn copy_file_range(&self, _ctx: Context, _nodeid_in: u64, _fh_in: u64, _off_in: u64, _nodeid_out: u64, _fh_out: u64, _off_out: u64, _len: u64, _flags: u64) -> Result<usize, Errno> {
        Err(Errno::ENOSYS)
    }
    pub fn syncfs(&self, _nodeid: u64) -> Result<(), Errno> {
        Err(Errno::ENOSYS)
    }
}
