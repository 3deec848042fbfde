//! The handle table: files and directories the guest has open, by `fh`.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex, RwLock};

use super::dir_ops::DirCursor;
use crate::errno::Errno;

/// One OPEN / CREATE / OPENDIR result.
#[derive(Debug)]
pub(super) struct Handle {
    /// The inode it was opened from; requests must name the same nodeid.
    pub nodeid: u64,
    /// A real (not O_PATH) fd, opened through `/proc/self/fd`.
    pub fd: OwnedFd,
    /// For directories, READDIR's read-ahead; its lock also serialises the
    /// seek + getdents64 of READDIRs on this handle (the fd's position is
    /// shared state). `None` for files, whose I/O is positional.
    pub dir_cursor: Option<Mutex<DirCursor>>,
}

/// The map behind [`HandleTable`]'s lock.
#[derive(Debug)]
struct HandleMap {
    by_fh: HashMap<u64, Arc<Handle>>,
    /// Handles a migration brought but could not open again: EIO until
    /// the guest releases them.
    lost: HashSet<u64>,
    /// Next fh to hand out, counting from 1; never reused within the
    /// daemon's life, and never `u64::MAX`, which the DAX code path uses to
    /// mean "no handle".
    next_fh: u64,
}

impl HandleMap {
    /// Hands out fhs from at least `next` on, never `u64::MAX`.
    fn advance(&mut self, next: u64) {
        self.next_fh = self.next_fh.max(next).min(u64::MAX - 1);
    }
}

impl Default for HandleMap {
    fn default() -> Self {
        Self {
            by_fh: HashMap::new(),
            lost: HashSet::new(),
            next_fh: 1,
        }
    }
}

/// fh → open handle.
///
/// Locking: one `RwLock<HandleMap>` guards the map and `next_fh`. READ,
/// WRITE and the other I/O paths take the read lock only to clone the
/// `Arc<Handle>`; OPEN, RELEASE and DESTROY take the write lock. A RELEASE
/// racing an in-flight READ on another queue removes the entry, and the fd
/// closes when the READ drops its clone.
#[derive(Debug, Default)]
pub(super) struct HandleTable {
    map: RwLock<HandleMap>,
}

impl HandleTable {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HandleMap> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HandleMap> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers an open file of `nodeid`; returns its fh.
    pub fn insert_file(&self, nodeid: u64, fd: OwnedFd) -> u64 {
        self.insert(Handle {
            nodeid,
            fd,
            dir_cursor: None,
        })
    }

    /// Registers an open directory of `nodeid`; returns its fh.
    pub fn insert_dir(&self, nodeid: u64, fd: OwnedFd) -> u64 {
        self.insert(Handle {
            nodeid,
            fd,
            dir_cursor: Some(Mutex::new(DirCursor::default())),
        })
    }

    fn insert(&self, handle: Handle) -> u64 {
        let mut map = self.write();
        let fh = map.next_fh;
        // 2^64 - 2 opens cannot happen in a daemon's life; the counter
        // neither wraps nor reaches u64::MAX.
        map.next_fh += 1;
        map.by_fh.insert(fh, Arc::new(handle));
        fh
    }

    /// The handle `fh` of `nodeid`; EBADF if there is none or it belongs to
    /// another inode.
    pub fn get(&self, fh: u64, nodeid: u64) -> Result<Arc<Handle>, Errno> {
        let map = self.read();
        match map.by_fh.get(&fh) {
            Some(h) if h.nodeid == nodeid => Ok(Arc::clone(h)),
            None if map.lost.contains(&fh) => Err(Errno::EIO),
            _ => Err(Errno::EBADF),
        }
    }

    /// Closes `fh` of `nodeid` (RELEASE / RELEASEDIR).
    pub fn remove(&self, fh: u64, nodeid: u64) -> Result<(), Errno> {
        let removed = {
            let mut map = self.write();
            match map.by_fh.get(&fh).map(|h| h.nodeid == nodeid) {
                Some(true) => map.by_fh.remove(&fh),
                None if map.lost.remove(&fh) => None,
                _ => return Err(Errno::EBADF),
            }
        };
        // Closed after the lock is released: a close may flush or free the
        // file on the host, and READs on other queues need the read lock.
        drop(removed);
        Ok(())
    }

    /// Closes every handle (after releasing the lock, as [`Self::remove`]).
    pub fn clear(&self) {
        let all = {
            let mut map = self.write();
            map.lost.clear();
            std::mem::take(&mut map.by_fh)
        };
        drop(all);
    }

    /// Number of open handles.
    pub fn len(&self) -> usize {
        self.read().by_fh.len()
    }

    /// Every handle by fh, and the next fh (what a migration carries).
    pub fn snapshot(&self) -> (Vec<(u64, Arc<Handle>)>, u64) {
        let map = self.read();
        let mut all: Vec<(u64, Arc<Handle>)> = map
            .by_fh
            .iter()
            .map(|(fh, handle)| (*fh, Arc::clone(handle)))
            .collect();
        all.sort_by_key(|(fh, _)| *fh);
        (all, map.next_fh)
    }

    /// Enters a handle a migration brought under its source's fh; false
    /// if the fh is taken (or is `u64::MAX`, "no handle").
    pub fn restore(&self, fh: u64, nodeid: u64, fd: OwnedFd, directory: bool) -> bool {
        let mut map = self.write();
        if fh == u64::MAX || map.by_fh.contains_key(&fh) {
            return false;
        }
        let handle = Handle {
            nodeid,
            fd,
            dir_cursor: directory.then(|| Mutex::new(DirCursor::default())),
        };
        map.by_fh.insert(fh, Arc::new(handle));
        map.advance(fh.saturating_add(1));
        true
    }

    /// Records a handle a migration could not open again: EIO for it
    /// until RELEASE.
    pub fn restore_lost(&self, fh: u64) {
        let mut map = self.write();
        if !map.by_fh.contains_key(&fh) {
            map.lost.insert(fh);
        }
        map.advance(fh.saturating_add(1));
    }

    /// Hands out fhs from at least `next` on (a migration's).
    pub fn advance_next_fh(&self, next: u64) {
        self.write().advance(next);
    }
}
