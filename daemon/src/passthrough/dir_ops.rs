//! Directory handles: OPENDIR, READDIR, READDIRPLUS.

use std::mem::MaybeUninit;

use daxfsd_protocol::abi::{Attr, EntryOut, OpenOut, FOPEN_CACHE_DIR, FOPEN_KEEP_CACHE};
use daxfsd_protocol::reply::DirentWriter;
use rustix::fs::{FileType, OFlags, RawDir, SeekFrom};

use super::{CachePolicy, PassthroughFs};
use crate::errno::Errno;

/// Bytes of getdents64 output read per refill. Entries past the reply's
/// budget are read and dropped (the next READDIR seeks back to them), so
/// this stays near a typical reply size.
const GETDENTS_BUF: usize = 8192;

/// OPENDIR. With `--cache always` the guest may keep the listing across
/// opens (FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE); it still drops it when the
/// directory's mtime changes.
pub(super) fn opendir(fs: &PassthroughFs, nodeid: u64) -> Result<OpenOut, Errno> {
    let inode = fs.inodes.get(nodeid)?;
    if inode.file_type != FileType::Directory {
        return Err(Errno::ENOTDIR);
    }
    let fd = fs.reopen(&inode, OFlags::RDONLY | OFlags::DIRECTORY)?;
    let open_flags = match fs.config.cache {
        CachePolicy::Always => FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE,
        CachePolicy::Auto | CachePolicy::Never => 0,
    };
    Ok(OpenOut {
        fh: fs.handles.insert_dir(nodeid, fd),
        open_flags,
        backing_id: 0,
    })
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

/// READDIR / READDIRPLUS from the kernel's directory cookie `offset`.
///
/// Each entry's `off` is the host's `d_off` (the cookie of the entry after
/// it), so a later READDIR resumes exactly there with lseek. With `plus`,
/// space for the entry is checked before it is looked up, so a full reply
/// never takes a lookup reference the guest will not receive. "." and ".."
/// get an entry with nodeid 0 carrying only the inode number (the guest
/// makes no dentry for those). An entry that vanished between getdents and
/// its lookup is skipped; one whose lookup fails otherwise (EACCES on a
/// mount point, EMFILE) is listed the same way as ".", so one bad entry
/// does not fail the whole listing and its error surfaces on LOOKUP.
pub(super) fn readdir(
    fs: &PassthroughFs,
    nodeid: u64,
    fh: u64,
    offset: u64,
    plus: bool,
    out: &mut DirentWriter<'_, '_>,
) -> Result<(), Errno> {
    let handle = fs.handles.get(fh, nodeid)?;
    let cursor = handle.dir_cursor.as_ref().ok_or(Errno::ENOTDIR)?;
    let parent = if plus {
        Some(fs.inodes.get(nodeid)?)
    } else {
        None
    };
    let _position = cursor.lock().unwrap_or_else(|e| e.into_inner());
    rustix::fs::seek(&handle.fd, SeekFrom::Start(offset))?;

    let mut buf = vec![MaybeUninit::<u8>::uninit(); GETDENTS_BUF];
    let mut dir = RawDir::new(&handle.fd, &mut buf);
    let mut added = 0usize;
    while let Some(entry) = dir.next() {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) if added == 0 => return Err(e.into()),
            Err(_) => break,
        };
        let name = entry.file_name();
        let name_bytes = name.to_bytes();
        let next = entry.next_entry_cookie();
        let typ = dirent_type(entry.file_type());
        let Some(parent) = &parent else {
            if !out.add(entry.ino(), next, typ, name_bytes) {
                break;
            }
            added += 1;
            continue;
        };
        if !out.fits_plus(name_bytes) {
            break;
        }
        let entry_out = if name_bytes == b"." || name_bytes == b".." {
            name_only(entry.ino())
        } else {
            match fs.lookup_in(parent, name) {
                Ok(e) => e,
                Err(Errno::ENOENT) => continue,
                Err(_) => name_only(entry.ino()),
            }
        };
        if !out.add_plus(&entry_out, next, typ, name_bytes) {
            // Cannot happen after fits_plus; never leak the reference.
            if entry_out.nodeid != 0 {
                fs.inodes.forget(entry_out.nodeid, 1);
            }
            break;
        }
        added += 1;
    }
    Ok(())
}
