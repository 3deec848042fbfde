//! The per-operation traits [`super::FileSystem`] is made of, one per room of the
//! passthrough implementation; each method carries its contract.

use std::ffi::CStr;

use daxfsd_protocol::abi::{AttrOut, CreateIn, EntryOut, OpenOut, SetattrIn, StatfsOut};
use daxfsd_protocol::reply::DirentWriter;

use super::{Context, MapAccess, NewInode, ReadSink};
use crate::errno::Errno;

/// Names in directories: look-ups and the entries a guest creates, links, renames and removes.
pub trait EntryOps {
    /// LOOKUP `name` in `parent`: its entry (attributes, timeouts); +1
    /// lookup reference on the entry's nodeid on success. ENOENT if absent.
    fn lookup(&self, ctx: Context, parent: u64, name: &CStr) -> Result<EntryOut, Errno>;

    /// FORGET: drop `nlookup` lookup references of `nodeid` (BATCH_FORGET
    /// calls it per entry). Unknown nodeids and excess counts are ignored;
    /// the root is never forgotten.
    fn forget(&self, nodeid: u64, nlookup: u64);

    /// READLINK: the symlink's target bytes (no NUL). EINVAL for what is not
    /// a symlink.
    fn readlink(&self, ctx: Context, nodeid: u64) -> Result<Vec<u8>, Errno>;

    /// SYMLINK `name` → `target` in `parent`, owned by the caller; +1
    /// reference on the new entry; `new` as for [`Self::mknod`] (a
    /// symlink's mode is fixed, so its umask does not matter).
    fn symlink(
        &self, ctx: Context, parent: u64, name: &CStr, target: &CStr, new: &NewInode<'_>,
    ) -> Result<EntryOut, Errno>;

    /// MKNOD (regular file, FIFO, socket, or a device node if privileged),
    /// owned by the caller; +1 reference. `new`: the umask and security
    /// context (see [`NewInode`]).
    fn mknod(
        &self, ctx: Context, parent: u64, name: &CStr, mode: u32, rdev: u32, new: &NewInode<'_>,
    ) -> Result<EntryOut, Errno>;

    /// MKDIR, owned by the caller; +1 reference; `new` as for
    /// [`Self::mknod`].
    fn mkdir(
        &self, ctx: Context, parent: u64, name: &CStr, mode: u32, new: &NewInode<'_>,
    ) -> Result<EntryOut, Errno>;

    /// UNLINK a non-directory (EISDIR for a directory).
    fn unlink(&self, ctx: Context, parent: u64, name: &CStr) -> Result<(), Errno>;

    /// RMDIR an empty directory (ENOTDIR, ENOTEMPTY otherwise).
    fn rmdir(&self, ctx: Context, parent: u64, name: &CStr) -> Result<(), Errno>;

    /// RENAME / RENAME2 (`flags`: RENAME_* bits, 0 for a plain rename).
    fn rename(
        &self, ctx: Context, olddir: u64, oldname: &CStr, newdir: u64, newname: &CStr, flags: u32,
    ) -> Result<(), Errno>;

    /// LINK `nodeid` as `newname` in `newparent`; +1 reference on `nodeid`.
    fn link(
        &self, ctx: Context, nodeid: u64, newparent: u64, newname: &CStr,
    ) -> Result<EntryOut, Errno>;
}

/// Attributes of inodes and of the filesystem, and permission checks.
pub trait AttrOps {
    /// GETATTR of `nodeid`, through its open file `fh` when the guest names
    /// one.
    fn getattr(&self, ctx: Context, nodeid: u64, fh: Option<u64>) -> Result<AttrOut, Errno>;

    /// SETATTR: changes the fields `arg.valid` selects (mode, owner, size,
    /// times), in that order, and returns the new attributes. A size change
    /// may have happened even when a later field fails.
    fn setattr(&self, ctx: Context, nodeid: u64, arg: &SetattrIn) -> Result<AttrOut, Errno>;

    /// ACCESS: checks `mask` (R_OK/W_OK/X_OK bits) for the caller.
    fn access(&self, ctx: Context, nodeid: u64, mask: u32) -> Result<(), Errno>;

    /// STATFS of the filesystem holding `nodeid`.
    fn statfs(&self, ctx: Context, nodeid: u64) -> Result<StatfsOut, Errno>;
}

/// Open files: the handles OPEN and CREATE return, I/O on them, and the descriptors DAX maps.
pub trait FileOps {
    /// OPEN `nodeid`: `flags` are open(2) flags (O_TRUNC truncates),
    /// `open_flags` OPEN_* bits. Returns the new handle and the FOPEN_*
    /// flags for the guest's page cache.
    fn open(
        &self, ctx: Context, nodeid: u64, flags: u32, open_flags: u32,
    ) -> Result<OpenOut, Errno>;

    /// CREATE and open a regular file in `parent`, owned by the caller (or
    /// open an existing one without O_EXCL; O_TRUNC truncates it); +1
    /// reference on the entry; `new` as for [`Self::mknod`] (its security
    /// context is set only on a file this request created).
    fn create(
        &self, ctx: Context, parent: u64, name: &CStr, arg: &CreateIn, new: &NewInode<'_>,
    ) -> Result<(EntryOut, OpenOut), Errno>;

    /// READ from the open file `fh` at `offset` straight into `dst` (its
    /// length is the size asked: the transport's reply buffers, so the data
    /// is copied once, by the kernel); returns the bytes read, fewer only at
    /// the end of file.
    fn read(
        &self, ctx: Context, nodeid: u64, fh: u64, offset: u64, dst: &mut dyn ReadSink,
    ) -> Result<usize, Errno>;

    /// WRITE `data` to the open file `fh` at `offset` (`write_flags`:
    /// WRITE_* bits, e.g. kill suid/sgid); returns the bytes written.
    fn write(
        &self, ctx: Context, nodeid: u64, fh: u64, offset: u64, data: &[u8], write_flags: u32,
    ) -> Result<usize, Errno>;

    /// RELEASE the open file `fh` of `nodeid`.
    fn release(&self, nodeid: u64, fh: u64) -> Result<(), Errno>;

    /// FLUSH: closes a duplicate of the file's descriptor, which releases
    /// the caller's POSIX locks.
    fn flush(&self, nodeid: u64, fh: u64) -> Result<(), Errno>;

    /// FSYNC (fdatasync with `datasync`). Writes back the file's dirty
    /// pages, including those a guest wrote through a DAX mapping (the VMM
    /// maps the file itself, MAP_SHARED).
    fn fsync(&self, nodeid: u64, fh: u64, datasync: bool) -> Result<(), Errno>;

    /// FALLOCATE on the open file `fh` (`mode`: FALLOC_FL_* bits; without
    /// KEEP_SIZE the size may change).
    fn fallocate(
        &self, ctx: Context, nodeid: u64, fh: u64, offset: u64, length: u64, mode: u32,
    ) -> Result<(), Errno>;

    /// LSEEK (SEEK_SET/CUR/END/DATA/HOLE) on the open file `fh`; returns
    /// the resulting offset.
    fn lseek(
        &self, ctx: Context, nodeid: u64, fh: u64, offset: u64, whence: u32,
    ) -> Result<u64, Errno>;

    /// COPY_FILE_RANGE between two open files; returns the bytes copied
    /// (the destination may grow).
    #[allow(clippy::too_many_arguments)]
    fn copy_file_range(
        &self, ctx: Context, nodeid_in: u64, fh_in: u64, off_in: u64, nodeid_out: u64, fh_out: u64,
        off_out: u64, len: u64, flags: u64,
    ) -> Result<usize, Errno>;

    /// SYNCFS of the filesystem holding `nodeid`.
    fn syncfs(&self, nodeid: u64) -> Result<(), Errno>;

    /// A file to map into the DAX window for SETUPMAPPING by `ctx`: a
    /// duplicate of the open handle `fh` if it has the access needed, else
    /// the inode reopened read-only, or read-write for [`MapAccess::Write`]
    /// and [`MapAccess::ReadWithWritableFd`] (a shared writable mapping
    /// needs both). The guest sends `fh = u64::MAX`: by nodeid. EROFS for
    /// `Write` on a read-only share; EACCES for `ReadWithWritableFd` unless
    /// `ctx` may open the file for writing; ELOOP / ENXIO / EISDIR for what
    /// is not a regular file.
    fn open_for_mapping(
        &self, ctx: Context, nodeid: u64, fh: u64, access: MapAccess,
    ) -> Result<std::fs::File, Errno>;
}

/// Directory handles: OPENDIR, READDIR(PLUS), RELEASEDIR, FSYNCDIR.
pub trait DirOps {
    /// OPENDIR: a directory handle.
    fn opendir(&self, ctx: Context, nodeid: u64, flags: u32) -> Result<OpenOut, Errno>;

    /// READDIR / READDIRPLUS of the directory handle `fh` from cookie
    /// `offset` into `out`, stopping when the next entry does not fit. With
    /// `plus`, each entry except "." and ".." counts as a lookup.
    fn readdir(
        &self, ctx: Context, nodeid: u64, fh: u64, offset: u64, plus: bool,
        out: &mut DirentWriter<'_, '_>,
    ) -> Result<(), Errno>;

    /// RELEASEDIR the directory handle `fh`.
    fn releasedir(&self, nodeid: u64, fh: u64) -> Result<(), Errno>;

    /// FSYNCDIR (fdatasync with `datasync`).
    fn fsyncdir(&self, nodeid: u64, fh: u64, datasync: bool) -> Result<(), Errno>;
}

/// Extended attributes.
pub trait XattrOps {
    /// SETXATTR (`flags`: XATTR_CREATE / XATTR_REPLACE; `setxattr_flags`:
    /// SETXATTR_* bits, with SETXATTR_EXT). ENOSYS when extended
    /// attributes are not served.
    fn setxattr(
        &self, ctx: Context, nodeid: u64, name: &CStr, value: &[u8], flags: u32,
        setxattr_flags: u32,
    ) -> Result<(), Errno>;

    /// GETXATTR: the whole value (the dispatcher answers size queries and
    /// ERANGE).
    fn getxattr(&self, ctx: Context, nodeid: u64, name: &CStr) -> Result<Vec<u8>, Errno>;

    /// LISTXATTR: the whole NUL-separated list (sizing as for GETXATTR).
    fn listxattr(&self, ctx: Context, nodeid: u64) -> Result<Vec<u8>, Errno>;

    /// REMOVEXATTR.
    fn removexattr(&self, ctx: Context, nodeid: u64, name: &CStr) -> Result<(), Errno>;
}
