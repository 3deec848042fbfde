//! Open files: OPEN, CREATE, READ, WRITE, FLUSH, FSYNC(DIR), FALLOCATE,
//! LSEEK, COPY_FILE_RANGE, SYNCFS.

use std::ffi::CStr;
use std::os::fd::{AsFd, OwnedFd};

use daxfsd_protocol::abi::{
    CreateIn, EntryOut, OpenOut, FOPEN_DIRECT_IO, FOPEN_KEEP_CACHE, OPEN_KILL_SUIDGID,
    WRITE_KILL_SUIDGID,
};
use rustix::fs::{FallocateFlags, FileType, Mode, OFlags, SeekFrom};

use super::attr::statx_fd;
use super::attr_ops::kill_suidgid_fd;
use super::entry_ops::{set_label, RESOLVE};
use super::fd_cache::PathFd;
use super::{CachePolicy, Context, MapAccess, PassthroughFs};
use crate::errno::Errno;
use crate::fs::{FileOps, NewInode, ReadSink};

/// open(2) flags a guest may pass through to the host. Everything else is
/// dropped: O_CREAT/O_EXCL (CREATE handles creation), O_NOCTTY, O_NOFOLLOW
/// (the reopen follows our own magic link), O_PATH/O_TMPFILE/O_DIRECTORY
/// (not file I/O), O_CLOEXEC (always set), O_ASYNC; and, as virtiofsd
/// does unless told otherwise, O_DIRECT (the host page cache may need
/// alignment the guest does not know of; `--allow-direct-io` keeps it) and
/// O_NOATIME (EPERM on a file the daemon does not own without CAP_FOWNER;
/// `--preserve-noatime` keeps it).
const GUEST_FLAGS_KEPT: u32 = (libc::O_ACCMODE
    | libc::O_APPEND
    | libc::O_TRUNC
    | libc::O_NONBLOCK
    | libc::O_SYNC
    | libc::O_DSYNC
    | libc::O_LARGEFILE) as u32;

impl PassthroughFs {
    /// The host flags for a guest OPEN / CREATE with `flags`. EROFS for
    /// write access or O_TRUNC on a read-only share; EINVAL for the invalid
    /// access mode 3.
    fn guest_open_flags(&self, flags: u32) -> Result<OFlags, Errno> {
        let mut kept = GUEST_FLAGS_KEPT;
        if self.config.allow_direct_io {
            kept |= libc::O_DIRECT as u32;
        }
        if self.config.preserve_noatime {
            kept |= libc::O_NOATIME as u32;
        }
        let flags = flags & kept;
        let accmode = flags & libc::O_ACCMODE as u32;
        if accmode == libc::O_ACCMODE as u32 {
            return Err(Errno::EINVAL);
        }
        if self.config.readonly
            && (accmode != libc::O_RDONLY as u32 || flags & libc::O_TRUNC as u32 != 0)
        {
            return Err(Errno::EROFS);
        }
        Ok(OFlags::from_bits_retain(flags))
    }

    /// `flags` adapted to writeback caching, if negotiated: the guest page
    /// cache may read a page of a file opened write-only (to fill it before
    /// a partial write), so write-only becomes read-write; and it places
    /// appends itself, knowing the size, so O_APPEND is dropped (the host
    /// would move every write to the end).
    fn for_writeback(&self, flags: OFlags) -> OFlags {
        if !self.negotiated().writeback {
            return flags;
        }
        let mut flags = flags - OFlags::APPEND;
        if flags & OFlags::RWMODE == OFlags::WRONLY {
            flags = (flags - OFlags::RWMODE) | OFlags::RDWR;
        }
        flags
    }

    /// FOPEN_* flags for an opened file under the cache policy.
    fn file_open_flags(&self) -> u32 {
        match self.config.cache {
            CachePolicy::Never | CachePolicy::Metadata => FOPEN_DIRECT_IO,
            CachePolicy::Auto => 0,
            CachePolicy::Always => FOPEN_KEEP_CACHE,
        }
    }

    /// Registers `fd` as an open file of `nodeid`.
    fn open_out(&self, nodeid: u64, fd: OwnedFd) -> OpenOut {
        OpenOut {
            fh: self.handles.insert_file(nodeid, fd),
            open_flags: self.file_open_flags(),
            backing_id: 0,
        }
    }
}

impl FileOps for PassthroughFs {
    fn open(
        &self, _ctx: Context, nodeid: u64, flags: u32, open_flags: u32,
    ) -> Result<OpenOut, Errno> {
        let host_flags = self.for_writeback(self.guest_open_flags(flags)?);
        let inode = self.inodes.get(nodeid)?;
        let fd = self.reopen(&inode, host_flags)?;
        if host_flags.contains(OFlags::TRUNC) {
            self.kill_mapped_capability(nodeid)?;
        }
        if host_flags.contains(OFlags::TRUNC)
            && open_flags & OPEN_KILL_SUIDGID != 0
            && self.negotiated().killpriv_v2
        {
            kill_suidgid_fd(&fd)?;
        }
        Ok(self.open_out(nodeid, fd))
    }

    /// CREATE: O_CREAT, with O_EXCL if the guest asked for it, as the caller.
    /// The name is opened with O_NOFOLLOW below the parent, so an existing
    /// symlink is refused (ELOOP) rather than followed. The new inode is
    /// registered from the opened fd itself, not by resolving the name again.
    ///
    /// The caller opens with the access mode it asked for: if writeback turns
    /// write-only into read-write, the read-write fd is reopened by the daemon
    /// afterwards (as OPEN does), so a caller allowed only to write an existing
    /// file is not refused for a read it never asked for.
    ///
    /// With a security context (see [`create_labelled`]) only a file this
    /// request made is labelled.
    fn create(
        &self, ctx: Context, parent: u64, name: &CStr, arg: &CreateIn, new: &NewInode<'_>,
    ) -> Result<(EntryOut, OpenOut), Errno> {
        self.check_writable()?;
        let guest_flags = self.guest_open_flags(arg.flags)?;
        let io_flags = self.for_writeback(guest_flags);
        let mut create_flags = (io_flags - OFlags::RWMODE)
            | (guest_flags & OFlags::RWMODE)
            | OFlags::CREATE
            | OFlags::NOFOLLOW
            | OFlags::CLOEXEC;
        if arg.flags & libc::O_EXCL as u32 != 0 {
            create_flags |= OFlags::EXCL;
        }
        let parent_fd = self.path_fd(&self.inodes.get(parent)?)?;
        // O_NONBLOCK until the file is known to be regular: without O_EXCL an
        // existing FIFO would otherwise block this worker until a peer opens it.
        let open = |flags: OFlags| -> Result<OwnedFd, Errno> {
            let _creator = self.as_creator(ctx, new.umask)?;
            Ok(rustix::fs::openat2(
                &parent_fd,
                name,
                flags | OFlags::NONBLOCK,
                Mode::from_raw_mode(arg.mode & 0o7777),
                RESOLVE,
            )?)
        };
        let fd = match &new.security_ctx {
            Some(label) => create_labelled(&parent_fd, name, create_flags, open, label)?,
            None => open(create_flags)?,
        };
        let file_type = FileType::from_raw_mode(rustix::fs::fstat(&fd)?.st_mode);
        if file_type != FileType::RegularFile {
            return Err(match file_type {
                FileType::Directory => Errno(libc::EISDIR),
                _ => Errno(libc::ENXIO),
            });
        }
        if !io_flags.contains(OFlags::NONBLOCK) {
            let status = rustix::fs::fcntl_getfl(&fd)?;
            rustix::fs::fcntl_setfl(&fd, status - OFlags::NONBLOCK)?;
        }
        let entry = self.register(ctx, self.path_fd_of(&fd)?)?;
        if io_flags & OFlags::RWMODE == guest_flags & OFlags::RWMODE {
            return Ok((entry, self.open_out(entry.nodeid, fd)));
        }
        // O_TRUNC already happened in the create.
        let reopened = self
            .inodes
            .get(entry.nodeid)
            .and_then(|inode| self.reopen(&inode, io_flags - OFlags::TRUNC));
        match reopened {
            Ok(io_fd) => Ok((entry, self.open_out(entry.nodeid, io_fd))),
            Err(e) => {
                // The guest never hears of this entry: give the reference back.
                self.inodes.forget(entry.nodeid, 1);
                Err(e)
            }
        }
    }

    /// READ: fills `dst` straight from the file unless end of file comes first
    /// (see [`ReadSink::read_from`]: short host reads are retried, since a short
    /// reply means end of file to the guest).
    fn read(
        &self, _ctx: Context, nodeid: u64, fh: u64, offset: u64, dst: &mut dyn ReadSink,
    ) -> Result<usize, Errno> {
        let handle = self.handles.get(fh, nodeid)?;
        Ok(dst.read_from(handle.fd.as_fd(), offset)?)
    }

    /// WRITE: all of `data` unless the host fails part-way (then the count
    /// written so far). With WRITE_KILL_SUIDGID (and HANDLE_KILLPRIV_V2) the
    /// setuid bit, and setgid if group-executable, are cleared first, as Linux
    /// does before an unprivileged write; the daemon's own CAP_FSETID would
    /// otherwise keep them.
    fn write(
        &self, _ctx: Context, nodeid: u64, fh: u64, offset: u64, data: &[u8], write_flags: u32,
    ) -> Result<usize, Errno> {
        self.check_writable()?;
        let handle = self.handles.get(fh, nodeid)?;
        if write_flags & WRITE_KILL_SUIDGID != 0 && self.negotiated().killpriv_v2 {
            kill_suidgid_fd(&handle.fd)?;
        }
        self.kill_mapped_capability(nodeid)?;
        Ok(crate::fs::transfer_all(data.len(), offset, |done, pos| {
            rustix::io::pwrite(&handle.fd, &data[done..], pos)
        })?)
    }

    fn release(&self, nodeid: u64, fh: u64) -> Result<(), Errno> {
        self.handles.remove(fh, nodeid)
    }

    /// FLUSH: close a duplicate of the fd. Closing any fd of a file drops the
    /// process's POSIX locks on it, which is what the guest's close() expects.
    fn flush(&self, nodeid: u64, fh: u64) -> Result<(), Errno> {
        let handle = self.handles.get(fh, nodeid)?;
        drop(rustix::io::dup(&handle.fd)?);
        Ok(())
    }

    /// FSYNC and FSYNCDIR.
    fn fsync(&self, nodeid: u64, fh: u64, datasync: bool) -> Result<(), Errno> {
        let handle = self.handles.get(fh, nodeid)?;
        if datasync {
            rustix::fs::fdatasync(&handle.fd)?;
        } else {
            rustix::fs::fsync(&handle.fd)?;
        }
        Ok(())
    }

    /// FALLOCATE (`mode` FALLOC_FL_* bits, passed through; the host refuses
    /// what it does not support with EOPNOTSUPP).
    fn fallocate(
        &self, _ctx: Context, nodeid: u64, fh: u64, offset: u64, length: u64, mode: u32,
    ) -> Result<(), Errno> {
        self.check_writable()?;
        let handle = self.handles.get(fh, nodeid)?;
        Ok(rustix::fs::fallocate(
            &handle.fd,
            FallocateFlags::from_bits_retain(mode),
            offset,
            length,
        )?)
    }

    /// LSEEK. The guest only sends SEEK_DATA and SEEK_HOLE (it computes the
    /// others itself); SEEK_SET/CUR/END are answered too, against the handle's
    /// own position, which READ and WRITE never move.
    fn lseek(
        &self, _ctx: Context, nodeid: u64, fh: u64, offset: u64, whence: u32,
    ) -> Result<u64, Errno> {
        let handle = self.handles.get(fh, nodeid)?;
        // The guest's loff_t travels as u64; SEEK_CUR/END take it signed.
        let signed = offset as i64;
        let pos = match whence {
            w if w == libc::SEEK_SET as u32 => SeekFrom::Start(offset),
            w if w == libc::SEEK_CUR as u32 => SeekFrom::Current(signed),
            w if w == libc::SEEK_END as u32 => SeekFrom::End(signed),
            w if w == libc::SEEK_DATA as u32 => SeekFrom::Data(offset),
            w if w == libc::SEEK_HOLE as u32 => SeekFrom::Hole(offset),
            _ => return Err(Errno::EINVAL),
        };
        Ok(rustix::fs::seek(&handle.fd, pos)?)
    }

    /// COPY_FILE_RANGE: `(nodeid, fh, offset)` of each side. No flags exist
    /// yet; any is EINVAL, as copy_file_range(2) says.
    fn copy_file_range(
        &self, _ctx: Context, nodeid_in: u64, fh_in: u64, mut off_in: u64, nodeid_out: u64,
        fh_out: u64, mut off_out: u64, len: u64, flags: u64,
    ) -> Result<usize, Errno> {
        self.check_writable()?;
        if flags != 0 {
            return Err(Errno::EINVAL);
        }
        let src = self.handles.get(fh_in, nodeid_in)?;
        let dst = self.handles.get(fh_out, nodeid_out)?;
        let len = usize::try_from(len).unwrap_or(usize::MAX);
        Ok(rustix::fs::copy_file_range(
            &src.fd,
            Some(&mut off_in),
            &dst.fd,
            Some(&mut off_out),
            len,
        )?)
    }

    /// SYNCFS: syncfs(2) needs a real fd, so the inode (the guest sends its
    /// mount root, a directory) is reopened read-only.
    fn syncfs(&self, nodeid: u64) -> Result<(), Errno> {
        let inode = self.inodes.get(nodeid)?;
        let flags = if inode.file_type == FileType::Directory {
            OFlags::RDONLY | OFlags::DIRECTORY
        } else {
            OFlags::RDONLY | OFlags::NONBLOCK
        };
        let fd = self.reopen(&inode, flags)?;
        Ok(rustix::fs::syncfs(&fd)?)
    }

    /// See [`PassthroughFs::open_for_mapping`].
    fn open_for_mapping(
        &self, ctx: Context, nodeid: u64, fh: u64, access: MapAccess,
    ) -> Result<std::fs::File, Errno> {
        if access == MapAccess::ReadWithWritableFd {
            return open_writable_for_reading(self, ctx, nodeid);
        }
        let writable = access == MapAccess::Write;
        if writable {
            self.check_writable()?;
        }
        if fh != u64::MAX {
            if let Ok(handle) = self.handles.get(fh, nodeid) {
                let mode = rustix::fs::fcntl_getfl(&handle.fd)? & OFlags::RWMODE;
                let enough = if writable {
                    mode == OFlags::RDWR
                } else {
                    mode != OFlags::WRONLY
                };
                if enough {
                    return Ok(rustix::io::dup(&handle.fd)?.into());
                }
            }
        }
        let inode = self.inodes.get(nodeid)?;
        if inode.file_type == FileType::Directory {
            return Err(Errno(libc::EISDIR));
        }
        let flags = if writable {
            OFlags::RDWR
        } else {
            OFlags::RDONLY
        };
        Ok(self.reopen(&inode, flags)?.into())
    }
}

/// CREATE with a security context, as virtiofsd: the file is made with
/// O_EXCL and labelled (removed again if that fails); if it exists and the
/// guest did not ask for O_EXCL, it is opened unlabelled.
fn create_labelled(
    parent: &PathFd, name: &CStr, flags: OFlags, open: impl Fn(OFlags) -> Result<OwnedFd, Errno>,
    label: &daxfsd_protocol::SecurityContext<'_>,
) -> Result<OwnedFd, Errno> {
    match open(flags | OFlags::EXCL) {
        Ok(fd) => match set_label(&fd, label) {
            Ok(()) => Ok(fd),
            Err(e) => {
                let _ = rustix::fs::unlinkat(parent, name, rustix::fs::AtFlags::empty());
                Err(e)
            }
        },
        Err(Errno::EEXIST) if !flags.contains(OFlags::EXCL) => open(flags),
        Err(e) => Err(e),
    }
}

/// [`MapAccess::ReadWithWritableFd`]: the inode reopened read-write, only
/// where a FUSE OPEN for writing by `ctx` would be allowed (mode bits
/// against its uid and gid, a writable share, neither immutable nor
/// append-only); EACCES otherwise, and whenever the host refuses the
/// read-write open. The handle the guest names is not used: whoever opened
/// it, the caller of this request is the one checked.
fn open_writable_for_reading(
    fs: &PassthroughFs, ctx: Context, nodeid: u64,
) -> Result<std::fs::File, Errno> {
    let inode = fs.inodes.get(nodeid)?;
    if inode.file_type == FileType::Directory {
        return Err(Errno(libc::EISDIR));
    }
    let st = statx_fd(&fs.path_fd(&inode)?)?;
    if !fs.may_open_for_writing(ctx, &st) {
        return Err(Errno::EACCES);
    }
    match fs.reopen(&inode, OFlags::RDWR) {
        Ok(fd) => Ok(fd.into()),
        Err(Errno(libc::EPERM | libc::EROFS | libc::ETXTBSY)) => Err(Errno::EACCES),
        Err(e) => Err(e),
    }
}
