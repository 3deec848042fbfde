//! The inode table: nodeids the guest holds, each an O_PATH fd on the host
//! or a file handle to open one by.
//!
//! One host inode has exactly one nodeid while the guest references it: the
//! table is keyed by (st_dev, st_ino, mount id), the identity of an inode
//! even across bind mounts of one filesystem. An inode without a handle
//! keeps its O_PATH fd, which pins the host inode, so its number cannot be
//! reused while the nodeid lives. An inode with a handle may lose its fd to
//! the descriptor budget (`fd_cache`); its number may then be reused after
//! the file is deleted, which the handle tells apart (a reused number comes
//! with a different generation, so a different handle): such a stale inode
//! keeps its nodeid until forgotten, and the new file gets a new one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use daxfsd_protocol::abi::ROOT_ID;
use rustix::fs::{FileType, Statx, StatxFlags};

use super::fd_cache::PathFd;
use super::file_handle::FileHandle;
use crate::errno::Errno;

/// Identity of a host inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct InodeKey {
    /// Device number (`makedev(stx_dev_major, stx_dev_minor)` packed as major << 32 | minor).
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Mount id (`STATX_MNT_ID`), 0 if the kernel did not report one.
    pub mnt_id: u64,
}

impl InodeKey {
    /// The key of the inode `st` describes.
    pub fn of(st: &Statx) -> Self {
        let mnt_id = if StatxFlags::from_bits_retain(st.stx_mask).contains(StatxFlags::MNT_ID) {
            st.stx_mnt_id
        } else {
            0
        };
        Self {
            dev: (u64::from(st.stx_dev_major) << 32) | u64::from(st.stx_dev_minor),
            ino: st.stx_ino,
            mnt_id,
        }
    }
}

/// One inode the guest knows.
#[derive(Debug)]
pub(super) struct Inode {
    /// Our nodeid for it.
    pub nodeid: u64,
    /// File type, fixed for the life of an inode.
    pub file_type: FileType,
    /// The handle to open it again by; `None`: `fd` stays open for the
    /// inode's life.
    pub handle: Option<FileHandle>,
    /// Its `O_PATH | O_NOFOLLOW` fd (never readable or writable itself)
    /// while open. Reached through `PassthroughFs::path_fd`. Its own lock,
    /// held only to clone, install or take the `Arc`, never across a
    /// system call; the clock of `fd_cache` takes it inside its own.
    fd: Mutex<Option<Arc<PathFd>>>,
    /// Used since the clock last passed it (its second chance).
    used: AtomicBool,
    /// Host identity.
    key: InodeKey,
    /// The guest's lookup count. Increments happen with the table's read
    /// lock held, decrements (and removal at zero) with its write lock, so a
    /// count never rises from zero after removal was decided.
    lookups: AtomicU64,
}

impl Inode {
    /// Its host identity.
    pub fn key(&self) -> InodeKey {
        self.key
    }

    /// Whether this inode is a symbolic link.
    pub fn is_symlink(&self) -> bool {
        self.file_type == FileType::Symlink
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Arc<PathFd>>> {
        self.fd.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The open fd, if any (and marks the inode used).
    pub fn current_fd(&self) -> Option<Arc<PathFd>> {
        let fd = self.slot().clone();
        if fd.is_some() {
            self.used.store(true, Ordering::Relaxed);
        }
        fd
    }

    /// Installs `fd` unless another worker installed one first; returns the
    /// fd in place and whether it is `fd`. Either way the inode was just
    /// used.
    pub fn install(&self, fd: Arc<PathFd>) -> (Arc<PathFd>, bool) {
        self.used.store(true, Ordering::Relaxed);
        let mut slot = self.slot();
        match &*slot {
            Some(current) => (Arc::clone(current), false),
            None => {
                *slot = Some(Arc::clone(&fd));
                (fd, true)
            }
        }
    }

    /// Whether a migration brought this inode but could not open it.
    pub fn is_lost(&self) -> bool {
        self.key == LOST_KEY
    }

    /// Takes the fd out (the budget closes it); `None` for an inode without
    /// a handle, which could not open it again.
    pub fn take_fd(&self) -> Option<Arc<PathFd>> {
        self.handle.as_ref()?;
        self.slot().take()
    }

    /// Whether it was used since the last call (and clears the mark).
    pub fn take_used(&self) -> bool {
        self.used.swap(false, Ordering::Relaxed)
    }

    /// Current lookup count.
    pub fn lookups(&self) -> u64 {
        self.lookups.load(Ordering::Relaxed)
    }
}

/// The maps behind [`InodeTable`]'s lock.
#[derive(Debug)]
struct InodeMap {
    by_id: HashMap<u64, Arc<Inode>>,
    by_key: HashMap<InodeKey, u64>,
    /// Next nodeid to hand out; ids are never reused within a session.
    next_id: u64,
}

/// nodeid → inode, with the reverse index by host identity.
///
/// Locking: one `RwLock<InodeMap>` guards both maps and `next_id`.
/// Lookups of a known nodeid and increments of a known inode's count take
/// the read lock; inserting, forgetting and clearing take the write lock.
/// Callers get `Arc<Inode>` clones and drop the lock before any syscall, so
/// an operation racing a FORGET keeps its fd alive until it finishes; FORGET
/// itself closes the fd of a removed inode only after releasing the lock.
/// [`InodeTable::ref_pinned`] takes an inode's fd slot lock inside the read
/// lock; nothing takes the table's lock while holding a slot lock.
#[derive(Debug)]
pub(super) struct InodeTable {
    map: RwLock<InodeMap>,
}

impl InodeTable {
    /// A table holding only the root (nodeid 1), which is never dropped.
    pub fn new(root_fd: Arc<PathFd>, root_stat: &Statx) -> Self {
        let key = InodeKey::of(root_stat);
        let root = Arc::new(Inode {
            nodeid: ROOT_ID,
            file_type: FileType::Directory,
            handle: None,
            fd: Mutex::new(Some(root_fd)),
            used: AtomicBool::new(false),
            key,
            lookups: AtomicU64::new(1),
        });
        let mut map = InodeMap {
            by_id: HashMap::new(),
            by_key: HashMap::new(),
            next_id: ROOT_ID + 1,
        };
        map.by_id.insert(ROOT_ID, root);
        map.by_key.insert(key, ROOT_ID);
        Self {
            map: RwLock::new(map),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, InodeMap> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, InodeMap> {
        self.map.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The inode `nodeid` names; EBADF if the guest holds no such nodeid.
    pub fn get(&self, nodeid: u64) -> Result<Arc<Inode>, Errno> {
        self.read().by_id.get(&nodeid).cloned().ok_or(Errno::EBADF)
    }

    /// Records one more lookup of the known inode `st` describes if it holds
    /// its fd: that fd pins the host inode, so its number cannot have been
    /// reused and no handle is needed to tell. `None` otherwise.
    pub fn ref_pinned(&self, st: &Statx) -> Option<Arc<Inode>> {
        let key = InodeKey::of(st);
        let map = self.read();
        let inode = map.by_key.get(&key).and_then(|id| map.by_id.get(id))?;
        inode.current_fd()?;
        inode.lookups.fetch_add(1, Ordering::Relaxed);
        Some(Arc::clone(inode))
    }

    /// Records one more lookup of the host inode `fd` refers to (identity
    /// `st`, file handle `handle`): the existing nodeid if the guest already
    /// knows the inode (and `fd` is closed), a new one otherwise (then the
    /// second value is true). An inode of the same key whose handle differs
    /// is a deleted file whose number was reused: it is not the same inode.
    pub fn insert_or_ref(
        &self, fd: Arc<PathFd>, st: &Statx, handle: Option<FileHandle>,
    ) -> (Arc<Inode>, bool) {
        let key = InodeKey::of(st);
        let known = |map: &InodeMap| {
            let inode = map.by_key.get(&key).and_then(|id| map.by_id.get(id))?;
            if let (Some(old), Some(new)) = (&inode.handle, &handle) {
                if old != new {
                    return None;
                }
            }
            inode.lookups.fetch_add(1, Ordering::Relaxed);
            Some(Arc::clone(inode))
        };
        if let Some(inode) = known(&self.read()) {
            return (inode, false);
        }
        let mut map = self.write();
        // Another worker may have inserted it between the two locks.
        if let Some(inode) = known(&map) {
            return (inode, false);
        }
        let nodeid = map.next_id;
        map.next_id += 1;
        let inode = Arc::new(Inode {
            nodeid,
            file_type: FileType::from_raw_mode(u32::from(st.stx_mode)),
            handle,
            fd: Mutex::new(Some(fd)),
            used: AtomicBool::new(false),
            key,
            lookups: AtomicU64::new(1),
        });
        map.by_id.insert(nodeid, Arc::clone(&inode));
        map.by_key.insert(key, nodeid);
        (inode, true)
    }

    /// Drops `nlookup` references to `nodeid`, removing it at zero. Unknown
    /// nodeids and the root are ignored (FORGET has no reply to carry an
    /// error, and the root lives as long as the filesystem).
    pub fn forget(&self, nodeid: u64, nlookup: u64) {
        if nodeid == ROOT_ID {
            return;
        }
        let removed = {
            let mut map = self.write();
            let Some(inode) = map.by_id.get(&nodeid) else {
                return;
            };
            let old = inode.lookups.load(Ordering::Relaxed);
            let new = old.saturating_sub(nlookup);
            inode.lookups.store(new, Ordering::Relaxed);
            if new != 0 {
                return;
            }
            // A stale inode's key may name a newer nodeid by now.
            let key = inode.key;
            if map.by_key.get(&key) == Some(&nodeid) {
                map.by_key.remove(&key);
            }
            map.by_id.remove(&nodeid)
        };
        // The fd closes after the lock is released: the last close of an
        // unlinked file frees it on the host (for ext4 an inode eviction with
        // journal work), which must not hold up lookups on the other queues.
        drop(removed);
    }

    /// Drops every inode except the root (their fds close after the lock is
    /// released, as in [`Self::forget`]).
    pub fn clear_except_root(&self) {
        let removed: Vec<Arc<Inode>> = {
            let mut map = self.write();
            let all = std::mem::take(&mut map.by_id);
            let mut removed = Vec::with_capacity(all.len());
            for (id, inode) in all {
                if id == ROOT_ID {
                    map.by_id.insert(id, inode);
                } else {
                    removed.push(inode);
                }
            }
            let root_key = map.by_id.get(&ROOT_ID).map(|root| root.key);
            map.by_key.retain(|key, _| Some(*key) == root_key);
            removed
        };
        drop(removed);
    }

    /// Number of inodes, the root included.
    pub fn len(&self) -> usize {
        self.read().by_id.len()
    }

    /// Every inode but the root, by nodeid, and the next nodeid (what a
    /// migration carries).
    pub fn snapshot(&self) -> (Vec<Arc<Inode>>, u64) {
        let map = self.read();
        let mut inodes: Vec<Arc<Inode>> = map
            .by_id
            .iter()
            .filter(|(id, _)| **id != ROOT_ID)
            .map(|(_, inode)| Arc::clone(inode))
            .collect();
        inodes.sort_by_key(|inode| inode.nodeid);
        (inodes, map.next_id)
    }

    /// Enters an inode a migration brought, under its source's nodeid
    /// with its lookup count: `fd` and `st` what the destination opened,
    /// or `None` when it could not (the inode then answers EIO until the
    /// guest forgets it). Returns it (`None` if the nodeid is taken).
    pub fn restore(
        &self, nodeid: u64, lookups: u64, opened: Option<(Arc<PathFd>, &Statx, Option<FileHandle>)>,
    ) -> Option<Arc<Inode>> {
        let mut map = self.write();
        if nodeid == ROOT_ID || map.by_id.contains_key(&nodeid) {
            return None;
        }
        let (fd, file_type, key, handle) = match opened {
            Some((fd, st, handle)) => (
                Some(fd),
                FileType::from_raw_mode(u32::from(st.stx_mode)),
                InodeKey::of(st),
                handle,
            ),
            // A key no host inode has: a lost inode is never found by
            // identity, only by its nodeid.
            None => (None, FileType::Unknown, LOST_KEY, None),
        };
        let inode = Arc::new(Inode {
            nodeid,
            file_type,
            handle,
            fd: Mutex::new(fd),
            used: AtomicBool::new(false),
            key,
            lookups: AtomicU64::new(lookups.max(1)),
        });
        map.by_id.insert(nodeid, Arc::clone(&inode));
        // Two nodeids opened as one host inode (a path that now leads to
        // another nodeid's file): the first keeps the identity.
        if key != LOST_KEY {
            map.by_key.entry(key).or_insert(nodeid);
        }
        map.next_id = map.next_id.max(nodeid + 1);
        Some(inode)
    }

    /// Hands out nodeids from at least `next` on (a migration's).
    pub fn advance_next_id(&self, next: u64) {
        let mut map = self.write();
        map.next_id = map.next_id.max(next);
    }
}

/// The identity of an inode a migration could not open (no host inode has
/// device and inode number both `u64::MAX`).
const LOST_KEY: InodeKey = InodeKey {
    dev: u64::MAX,
    ino: u64::MAX,
    mnt_id: u64::MAX,
};
