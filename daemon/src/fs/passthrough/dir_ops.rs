//! Directory handles: OPENDIR, READDIR, READDIRPLUS.

use std::collections::VecDeque;
use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::os::fd::OwnedFd;

use daxfsd_protocol::abi::{Attr, EntryOut, OpenOut, FOPEN_CACHE_DIR, FOPEN_KEEP_CACHE};
use daxfsd_protocol::reply::DirentWriter;
use rustix::fs::{FileType, OFlags, RawDir, SeekFrom};

use super::{CachePolicy, Context, PassthroughFs};
use crate::errno::Errno;
use crate::fs::{DirOps, FileOps};

/// Bytes of getdents64 output read per call (about 250 short names). Entries
/// a reply has no room for wait in the handle's [`DirCursor`].
const GETDENTS_BUF: usize = 8192;

/// A directory entry read from the host but not yet sent to the guest.
#[derive(Debug)]
struct Pending {
    /// The cookie that resumes a listing at this entry (the previous
    /// entry's `d_off`).
    start: u64,
    /// Its own `d_off`: the cookie of the entry after it.
    next: u64,
    ino: u64,
    file_type: FileType,
    /// Its name in [`DirCursor::names`], where a NUL follows it.
    name: Range<usize>,
}

/// Read-ahead of one directory handle: getdents64 returns many entries per
/// call, a READDIR reply takes only as many as fit, and the rest wait here
/// for the READDIR that continues at their cookie. Without it every reply
/// re-read its entries after a seek back, and ext4 rebuilds its hash-order
/// tree of a large directory on each such seek: a 1,000-entry READDIRPLUS
/// listing spent most of its time in getdents. The entries are dropped when
/// the listing ends, on a READDIR at any other cookie, and with the handle.
#[derive(Debug, Default)]
pub(super) struct DirCursor {
    /// Entries read and not yet returned, in directory order.
    pending: VecDeque<Pending>,
    /// Names of `pending`, each with its NUL, back to back.
    names: Vec<u8>,
    /// The cookie after the last entry read: where the next getdents64
    /// continues (`None` before the first read).
    fd_pos: Option<u64>,
}

impl DirCursor {
    /// Makes the next entry returned the one at cookie `offset`: the pending
    /// entries if they start there, else a seek of `fd` to it.
    fn position(&mut self, fd: &OwnedFd, offset: u64) -> Result<(), Errno> {
        if self.pending.front().is_some_and(|p| p.start == offset) {
            return Ok(());
        }
        self.pending.clear();
        self.names.clear();
        rustix::fs::seek(fd, SeekFrom::Start(offset))?;
        self.fd_pos = Some(offset);
        Ok(())
    }

    /// One getdents64 call into `pending` (which must be empty); false at the
    /// end of the directory.
    fn refill(&mut self, fd: &OwnedFd) -> Result<bool, Errno> {
        let Some(mut start) = self.fd_pos else {
            return Err(Errno::EINVAL);
        };
        // The fd should stand there already; a seek to its own position is
        // cheap and keeps ext4's tree, and it makes a guest LSEEK on a
        // directory handle harmless.
        rustix::fs::seek(fd, SeekFrom::Start(start))?;
        self.names.clear();
        let mut buf = [MaybeUninit::<u8>::uninit(); GETDENTS_BUF];
        let mut dir = RawDir::new(fd, &mut buf);
        while let Some(entry) = dir.next() {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) if self.pending.is_empty() => return Err(e.into()),
                Err(_) => break,
            };
            let name = entry.file_name().to_bytes_with_nul();
            let at = self.names.len();
            self.names.extend_from_slice(name);
            let next = entry.next_entry_cookie();
            self.pending.push_back(Pending {
                start,
                next,
                ino: entry.ino(),
                file_type: entry.file_type(),
                name: at..self.names.len() - 1,
            });
            start = next;
            // One system call per refill: stop where the buffer ends.
            if dir.is_buffer_empty() {
                break;
            }
        }
        self.fd_pos = Some(start);
        if self.pending.is_empty() {
            // End of the directory: give the read-ahead memory back.
            self.names = Vec::new();
            self.pending = VecDeque::new();
            return Ok(false);
        }
        Ok(true)
    }
}

impl DirOps for PassthroughFs {
    /// OPENDIR. With `--cache always` the guest may keep the listing across
    /// opens (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE); it still drops it when the
    /// directory's mtime changes.
    fn opendir(&self, _ctx: Context, nodeid: u64, _flags: u32) -> Result<OpenOut, Errno> {
        let inode = self.inodes.get(nodeid)?;
        if inode.file_type != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        let fd = self.reopen(&inode, OFlags::RDONLY | OFlags::DIRECTORY)?;
        let open_flags = match self.config.cache {
            CachePolicy::Always | CachePolicy::Metadata => FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE,
            CachePolicy::Auto | CachePolicy::Never => 0,
        };
        Ok(OpenOut {
            fh: self.handles.insert_dir(nodeid, fd),
            open_flags,
            backing_id: 0,
        })
    }

    /// READDIR / READDIRPLUS from the kernel's directory cookie `offset`.
    ///
    /// Each entry's `off` is the host's `d_off` (the cookie of the entry after
    /// it), so a later READDIR resumes exactly there: from the handle's
    /// read-ahead ([`DirCursor`]) when it continues the listing, else with
    /// lseek. With `plus`,
    /// space for the entry is checked before it is looked up, so a full reply
    /// never takes a lookup reference the guest will not receive. "." and ".."
    /// get an entry with nodeid 0 carrying only the inode number (the guest
    /// makes no dentry for those). An entry that vanished between getdents and
    /// its lookup is skipped; one whose lookup fails otherwise (EACCES on a
    /// mount point, EMFILE) is listed the same way as ".", so one bad entry
    /// does not fail the whole listing and its error surfaces on LOOKUP.
    fn readdir(
        &self, ctx: Context, nodeid: u64, fh: u64, offset: u64, plus: bool,
        out: &mut DirentWriter<'_, '_>,
    ) -> Result<(), Errno> {
        let handle = self.handles.get(fh, nodeid)?;
        let cursor = handle.dir_cursor.as_ref().ok_or(Errno::ENOTDIR)?;
        let parent = if plus {
            Some(self.inodes.get(nodeid)?)
        } else {
            None
        };
        let mut cursor = cursor.lock().unwrap_or_else(|e| e.into_inner());
        cursor.position(&handle.fd, offset)?;
        let mut added = 0usize;
        loop {
            if cursor.pending.is_empty() {
                match cursor.refill(&handle.fd) {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(e) if added == 0 => return Err(e),
                    Err(_) => break,
                }
            }
            let Some(entry) = cursor.pending.front() else {
                break;
            };
            let name_bytes = &cursor.names[entry.name.clone()];
            let (ino, next) = (entry.ino, entry.next);
            let typ = dirent_type(entry.file_type);
            let Some(parent) = &parent else {
                if !out.add(ino, next, typ, name_bytes) {
                    break;
                }
                cursor.pending.pop_front();
                added += 1;
                continue;
            };
            if !out.fits_plus(name_bytes) {
                break;
            }
            let entry_out = if name_bytes == b"." || name_bytes == b".." {
                name_only(ino)
            } else {
                let with_nul = &cursor.names[entry.name.start..=entry.name.end];
                let Ok(name) = CStr::from_bytes_with_nul(with_nul) else {
                    // getdents64 names hold no NUL; skip one that would.
                    cursor.pending.pop_front();
                    continue;
                };
                match self.lookup_in(ctx, parent, name) {
                    Ok(e) => e,
                    Err(Errno::ENOENT) => {
                        cursor.pending.pop_front();
                        continue;
                    }
                    Err(_) => name_only(ino),
                }
            };
            if !out.add_plus(&entry_out, next, typ, name_bytes) {
                // Cannot happen after fits_plus; never leak the reference.
                if entry_out.nodeid != 0 {
                    self.inodes.forget(entry_out.nodeid, 1);
                }
                break;
            }
            cursor.pending.pop_front();
            added += 1;
        }
        Ok(())
    }

    fn releasedir(&self, nodeid: u64, fh: u64) -> Result<(), Errno> {
        self.handles.remove(fh, nodeid)
    }

    fn fsyncdir(&self, nodeid: u64, fh: u64, datasync: bool) -> Result<(), Errno> {
        FileOps::fsync(self, nodeid, fh, datasync)
    }
}

/// The `d_type` value of a file type (DT_* is the S_IF* type >> 12).
fn dirent_type(t: FileType) -> u32 {
    match t {
        FileType::Unknown => 0,
        t => t.as_raw_mode() >> 12,
    }
}

/// A READDIRPLUS entry that carries no nodeid: the guest lists the name
/// but makes no dentry for it, and LOOKUPs it when it is used.
fn name_only(ino: u64) -> EntryOut {
    EntryOut {
        attr: Attr {
            ino,
            ..Attr::default()
        },
        ..EntryOut::default()
    }
}
