//! The fs room: what serving a host directory means to the rest of the
//! daemon. [`FileSystem`] is the contract the dispatcher calls, one method
//! per FUSE operation, grouped in the traits of [`ops`] (entries,
//! attributes, open files, directory handles, extended attributes);
//! [`passthrough`] is its implementation over a host directory, each trait
//! implemented in the module of its room, with no forwarding layer.
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
pub mod ops;
pub mod passthrough;
pub mod xattrmap;

use std::os::fd::BorrowedFd;
use std::sync::Arc;

use daxfsd_protocol::SecurityContext;

use crate::prometheus::{ExportMetrics, PrometheusText};
use crate::session::Session;

pub use self::ops::{AttrOps, DirOps, EntryOps, FileOps, XattrOps};

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
    len: usize, offset: u64, mut step: impl FnMut(usize, u64) -> rustix::io::Result<usize>,
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
pub trait FileSystem:
    EntryOps + AttrOps + FileOps + DirOps + XattrOps + std::fmt::Debug + Send + Sync
{
    /// The FUSE session this filesystem serves (INIT's features); the
    /// dispatcher writes it, the filesystem reads it.
    fn session(&self) -> &Arc<Session>;

    /// The session ended (DESTROY, a device reset, a disconnect): forget
    /// every inode and handle except the root.
    fn destroy(&self);

    /// Number of inodes (the root included) and open handles, for metrics.
    fn counts(&self) -> (usize, usize);

    /// A live migration started (`true`: the frontend turned dirty
    /// logging on) or was cancelled (`false`): prepare what switch-over
    /// will need, or forget it.
    fn migration_started(&self, started: bool);

    /// The source's inodes and handles, for the destination (the queues
    /// are stopped).
    fn export_state(
        &self, config: &crate::migration::MigrationConfig,
    ) -> Result<crate::migration::FsState, crate::migration::MigrationError>;

    /// The destination takes over the source's inodes and handles (before
    /// its queues start).
    fn import_state(
        &self, state: crate::migration::FsState, on_error: crate::migration::OnError,
    ) -> Result<crate::migration::ImportSummary, crate::migration::MigrationError>;

    /// Inode descriptors open now and inodes reopened by file handle so far
    /// (after the descriptor budget closed them), for metrics.
    fn descriptor_counts(&self) -> (u64, u64) {
        (0, 0)
    }
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
