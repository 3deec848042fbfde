//! The fs room: what serving a host directory means to the rest of the
//! daemon. [`FileSystem`] is the contract the dispatcher calls, one method
//! per FUSE operation; [`passthrough`] is its implementation over a host
//! directory.
//!
//! Common rules of every method: it takes the caller's [`Context`] where
//! the operation depends on who asks; it returns `Result<_, Errno>` with a
//! positive Linux errno; it never panics on guest input. Names arrive
//! already validated by the protocol crate (non-empty, no '/', not "." or
//! "..", at most NAME_MAX bytes, NUL-terminated). Node ids and handles the
//! guest names but the filesystem does not know are ENOENT / EBADF, never
//! a panic. Reply sizing (READ and READDIR budgets, xattr size queries and
//! ERANGE) is the dispatcher's; repairs of the DAX window after a size
//! change are the dispatcher's too (`dispatch::size_effect`).

pub mod idmap;
pub mod passthrough;
pub mod xattrmap;

use std::ffi::CStr;
use std::os::fd::BorrowedFd;
use std::sync::Arc;

use daxfsd_protocol::abi::{AttrOut, CreateIn, EntryOut, OpenOut, SetattrIn, StatfsOut};
use daxfsd_protocol::reply::DirentWriter;
use daxfsd_protocol::SecurityContext;

use crate::errno::Errno;
use crate::prometheus::{ExportMetrics, PrometheusText};
use crate::session::Session;

/// Where READ data goes: the transport's reply buffers, filled straight
/// from the file (a daemon buffer for `/dev/fuse`, the chain's guest memory
/// for a virtqueue). The filesystem finds the file; the sink moves the
/// bytes, so the filesystem never sees the transport's memory.
pub trait ReadSink {
    /// Bytes the sink takes (the size asked).
    fn len(&self) -> usize;

    /// Whether the sink takes nothing.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads `file` from `offset` on until the sink is full or the file
    /// ends; returns the bytes read. Short host reads and EINTR are
    /// retried (a short reply means end of file to the guest); an error
    /// after some bytes moved returns the count so far.
    fn read_from(&mut self, file: BorrowedFd<'_>, offset: u64) -> std::io::Result<usize>;
}

/// A [`ReadSink`] over a byte buffer of the daemon's.
#[derive(Debug)]
pub struct BufferSink<'a>(pub &'a mut [u8]);

impl ReadSink for BufferSink<'_> {
    fn len(&self) -> usize {
        self.0.len()
    }

    fn read_from(&mut self, file: BorrowedFd<'_>, offset: u64) -> std::io::Result<usize> {
        let buf = &mut *self.0;
        Ok(transfer_all(buf.len(), offset, |done, pos| {
            rustix::io::pread(file, &mut buf[done..], pos)
        })?)
    }
}

/// Repeats a positioned transfer (`pread`, `pwrite`) of `len` bytes from
/// `offset`, `step(done, position)` moving the next part, until all of it
/// is done, the file ends (a step of 0), or a step fails after some
/// progress (then the count so far: the caller reports a short transfer).
/// EINTR is retried; an error before any progress is returned.
pub(crate) fn transfer_all(
    len: usize,
    offset: u64,
    mut step: impl FnMut(usize, u64) -> rustix::io::Result<usize>,
) -> rustix::io::Result<usize> {
    let mut done = 0;
    while done < len {
        let pos = offset
            .checked_add(done as u64)
            .ok_or(rustix::io::Errno::INVAL)?;
        match step(done, pos) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) if done == 0 => return Err(e),
            Err(_) => break,
        }
    }
    Ok(done)
}

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

/// What a creating request (SYMLINK, MKNOD, MKDIR, CREATE) carries
/// besides its name and mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NewInode<'a> {
    /// The caller's umask. Once POSIX ACLs are agreed the guest sends
    /// modes unmasked (DONT_MASK) and the daemon creates under this umask,
    /// which the host ignores where the parent has a default ACL; before,
    /// the guest applied it and it is ignored.
    pub umask: u32,
    /// The security context to set on the new inode (once SECURITY_CTX is
    /// agreed); if it cannot be set, the inode is removed again and the
    /// request fails.
    pub security_ctx: Option<SecurityContext<'a>>,
}

/// How SETUPMAPPING needs the file opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapAccess {
    /// A read-only mapping from a read-only descriptor.
    Read,
    /// A read-only mapping on a frontend that maps every descriptor
    /// writable (QEMU 11.1): read-write, but only where the caller may open
    /// the file for writing; EACCES otherwise.
    ReadWithWritableFd,
    /// A writable mapping: read-write (EROFS on a read-only share).
    Write,
}

/// A filesystem the dispatcher serves FUSE requests from.
///
/// Locking is the implementation's (see [`passthrough::PassthroughFs`]):
/// every method may be called from any queue's worker at once.
pub trait FileSystem: std::fmt::Debug + Send + Sync {
    /// The FUSE session this filesystem serves (INIT's features); the
    /// dispatcher writes it, the filesystem reads it.
    fn session(&self) -> &Arc<Session>;

    /// The session ended (DESTROY, a device reset, a disconnect): forget
    /// every inode and handle except the root.
    fn destroy(&self);

    /// Number of inodes (the root included) and open handles, for metrics.
    fn counts(&self) -> (usize, usize);

    /// Inode descriptors open now and inodes reopened by file handle so far
    /// (after the descriptor budget closed them), for metrics.
    fn descriptor_counts(&self) -> (u64, u64) {
        (0, 0)
    }

    /// LOOKUP `name` in `parent`: its entry (attributes, timeouts); +1
    /// lookup reference on the entry's nodeid on success. ENOENT if absent.
    fn lookup(&self, ctx: Context, parent: u64, name: &CStr) -> Result<EntryOut, Errno>;

    /// FORGET: drop `nlookup` lookup references of `nodeid` (BATCH_FORGET
    /// calls it per entry). Unknown nodeids and excess counts are ignored;
    /// the root is never forgotten.
    fn forget(&self, nodeid: u64, nlookup: u64);

    /// GETATTR of `nodeid`, through its open file `fh` when the guest names
    /// one.
    fn getattr(&self, ctx: Context, nodeid: u64, fh: Option<u64>) -> Result<AttrOut, Errno>;

    /// SETATTR: changes the fields `arg.valid` selects (mode, owner, size,
    /// times), in that order, and returns the new attributes. A size change
    /// may have happened even when a later field fails.
    fn setattr(&self, ctx: Context, nodeid: u64, arg: &SetattrIn) -> Result<AttrOut, Errno>;

    /// READLINK: the symlink's target bytes (no NUL). EINVAL for what is not
    /// a symlink.
    fn readlink(&self, ctx: Context, nodeid: u64) -> Result<Vec<u8>, Errno>;

    /// SYMLINK `name` → `target` in `parent`, owned by the caller; +1
    /// reference on the new entry; `new` as for [`Self::mknod`] (a
    /// symlink's mode is fixed, so its umask does not matter).
    fn symlink(
        &self,
        ctx: Context,
        parent: u64,
        name: &CStr,
        target: &CStr,
        new: &NewInode<'_>,
    ) -> Result<EntryOut, Errno>;

    /// MKNOD (regular file, FIFO, socket, or a device node if privileged),
    /// owned by the caller; +1 reference. `new`: the umask and security
    /// context (see [`NewInode`]).
    fn mknod(
        &self,
        ctx: Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        rdev: u32,
        new: &NewInode<'_>,
    ) -> Result<EntryOut, Errno>;

    /// MKDIR, owned by the caller; +1 reference; `new` as for
    /// [`Self::mknod`].
    fn mkdir(
        &self,
        ctx: Context,
        parent: u64,
        name: &CStr,
        mode: u32,
        new: &NewInode<'_>,
    ) -> Result<EntryOut, Errno>;

    /// UNLINK a non-directory (EISDIR for a directory).
    fn unlink(&self, ctx: Context, parent: u64, name: &CStr) -> Result<(), Errno>;

    /// RMDIR an empty directory (ENOTDIR, ENOTEMPTY otherwise).
    fn rmdir(&self, ctx: Context, parent: u64, name: &CStr) -> Result<(), Errno>;

    /// RENAME / RENAME2 (`flags`: RENAME_* bits, 0 for a plain rename).
    fn rename(
        &self,
        ctx: Context,
        olddir: u64,
        oldname: &CStr,
        newdir: u64,
        newname: &CStr,
        flags: u32,
    ) -> Result<(), Errno>;

    /// LINK `nodeid` as `newname` in `newparent`; +1 reference on `nodeid`.
    fn link(
        &self,
        ctx: Context,
        nodeid: u64,
        newparent: u64,
        newname: &CStr,
    ) -> Result<EntryOut, Errno>;

    /// OPEN `nodeid`: `flags` are open(2) flags (O_TRUNC truncates),
    /// `open_flags` OPEN_* bits. Returns the new handle and the FOPEN_*
    /// flags for the guest's page cache.
    fn open(
        &self,
        ctx: Context,
        nodeid: u64,
        flags: u32,
        open_flags: u32,
    ) -> Result<OpenOut, Errno>;

    /// CREATE and open a regular file in `parent`, owned by the caller (or
    /// open an existing one without O_EXCL; O_TRUNC truncates it); +1
    /// reference on the entry; `new` as for [`Self::mknod`] (its security
    /// context is set only on a file this request created).
    fn create(
        &self,
        ctx: Context,
        parent: u64,
        name: &CStr,
        arg: &CreateIn,
        new: &NewInode<'_>,
    ) -> Result<(EntryOut, OpenOut), Errno>;

    /// READ from the open file `fh` at `offset` straight into `dst` (its
    /// length is the size asked: the transport's reply buffers, so the data
    /// is copied once, by the kernel); returns the bytes read, fewer only at
    /// the end of file.
    fn read(
        &self,
        ctx: Context,
        nodeid: u64,
        fh: u64,
        offset: u64,
        dst: &mut dyn ReadSink,
    ) -> Result<usize, Errno>;

    /// WRITE `data` to the open file `fh` at `offset` (`write_flags`:
    /// WRITE_* bits, e.g. kill suid/sgid); returns the bytes written.
    fn write(
        &self,
        ctx: Context,
        nodeid: u64,
        fh: u64,
        offset: u64,
        data: &[u8],
        write_flags: u32,
    ) -> Result<usize, Errno>;

    /// STATFS of the filesystem holding `nodeid`.
    fn statfs(&self, ctx: Context, nodeid: u64) -> Result<StatfsOut, Errno>;

    /// RELEASE the open file `fh` of `nodeid`.
    fn release(&self, nodeid: u64, fh: u64) -> Result<(), Errno>;

    /// FLUSH: closes a duplicate of the file's descriptor, which releases
    /// the caller's POSIX locks.
    fn flush(&self, nodeid: u64, fh: u64) -> Result<(), Errno>;

    /// FSYNC (fdatasync with `datasync`). Writes back the file's dirty
    /// pages, including those a guest wrote through a DAX mapping (the VMM
    /// maps the file itself, MAP_SHARED).
    fn fsync(&self, nodeid: u64, fh: u64, datasync: bool) -> Result<(), Errno>;

    /// OPENDIR: a directory handle.
    fn opendir(&self, ctx: Context, nodeid: u64, flags: u32) -> Result<OpenOut, Errno>;

    /// READDIR / READDIRPLUS of the directory handle `fh` from cookie
    /// `offset` into `out`, stopping when the next entry does not fit. With
    /// `plus`, each entry except "." and ".." counts as a lookup.
    fn readdir(
        &self,
        ctx: Context,
        nodeid: u64,
        fh: u64,
        offset: u64,
        plus: bool,
        out: &mut DirentWriter<'_, '_>,
    ) -> Result<(), Errno>;

    /// RELEASEDIR the directory handle `fh`.
    fn releasedir(&self, nodeid: u64, fh: u64) -> Result<(), Errno>;

    /// FSYNCDIR (fdatasync with `datasync`).
    fn fsyncdir(&self, nodeid: u64, fh: u64, datasync: bool) -> Result<(), Errno>;

    /// ACCESS: checks `mask` (R_OK/W_OK/X_OK bits) for the caller.
    fn access(&self, ctx: Context, nodeid: u64, mask: u32) -> Result<(), Errno>;

    /// SETXATTR (`flags`: XATTR_CREATE / XATTR_REPLACE; `setxattr_flags`:
    /// SETXATTR_* bits, with SETXATTR_EXT). ENOSYS when extended
    /// attributes are not served.
    fn setxattr(
        &self,
        ctx: Context,
        nodeid: u64,
        name: &CStr,
        value: &[u8],
        flags: u32,
        setxattr_flags: u32,
    ) -> Result<(), Errno>;

    /// GETXATTR: the whole value (the dispatcher answers size queries and
    /// ERANGE).
    fn getxattr(&self, ctx: Context, nodeid: u64, name: &CStr) -> Result<Vec<u8>, Errno>;

    /// LISTXATTR: the whole NUL-separated list (sizing as for GETXATTR).
    fn listxattr(&self, ctx: Context, nodeid: u64) -> Result<Vec<u8>, Errno>;

    /// REMOVEXATTR.
    fn removexattr(&self, ctx: Context, nodeid: u64, name: &CStr) -> Result<(), Errno>;

    /// FALLOCATE on the open file `fh` (`mode`: FALLOC_FL_* bits; without
    /// KEEP_SIZE the size may change).
    fn fallocate(
        &self,
        ctx: Context,
        nodeid: u64,
        fh: u64,
        offset: u64,
        length: u64,
        mode: u32,
    ) -> Result<(), Errno>;

    /// LSEEK (SEEK_SET/CUR/END/DATA/HOLE) on the open file `fh`; returns
    /// the resulting offset.
    fn lseek(
        &self,
        ctx: Context,
        nodeid: u64,
        fh: u64,
        offset: u64,
        whence: u32,
    ) -> Result<u64, Errno>;

    /// COPY_FILE_RANGE between two open files; returns the bytes copied
    /// (the destination may grow).
    #[allow(clippy::too_many_arguments)]
    fn copy_file_range(
        &self,
        ctx: Context,
        nodeid_in: u64,
        fh_in: u64,
        off_in: u64,
        nodeid_out: u64,
        fh_out: u64,
        off_out: u64,
        len: u64,
        flags: u64,
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
        &self,
        ctx: Context,
        nodeid: u64,
        fh: u64,
        access: MapAccess,
    ) -> Result<std::fs::File, Errno>;
}

impl ExportMetrics for dyn FileSystem {
    fn export_metrics(&self, out: &mut PrometheusText) {
        let (inodes, handles) = self.counts();
        out.metric(
            "inodes",
            "gauge",
            "Inodes the guest holds (root included).",
            inodes as u64,
        );
        out.metric(
            "open_handles",
            "gauge",
            "Open file and directory handles.",
            handles as u64,
        );
        let (inode_fds, reopens) = self.descriptor_counts();
        out.metric(
            "inode_fds",
            "gauge",
            "O_PATH descriptors of inodes open now.",
            inode_fds,
        );
        out.metric(
            "inode_reopens_total",
            "counter",
            "Inodes opened again by file handle after the descriptor budget closed them.",
            reopens,
        );
    }
}
