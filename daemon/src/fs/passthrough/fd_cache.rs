//! The descriptor budget: how many inodes keep their O_PATH descriptor open.
//!
//! Every inode starts with an O_PATH descriptor. One that also has a file
//! handle may lose it when more inode descriptors are open than the budget
//! (half the soft RLIMIT_NOFILE): a clock (second chance) over the inodes
//! holding a descriptor picks which, and the next operation on the inode
//! opens it again by its handle ([`FdCache::fd`]). Inodes without a handle
//! (`--inode-file-handles=never`, or a filesystem without handles) keep
//! theirs for their life, as before.
//!
//! Running out of descriptors (EMFILE, ENFILE) never ends the daemon or
//! drops an inode: the opener closes some cached descriptors and tries once
//! more; if that fails too the guest gets the errno and may retry.

use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use rustix::fs::OFlags;

use super::attr::statx_fd;
use super::file_handle::{FileHandle, MountFds};
use super::inode::{Inode, InodeKey};
use crate::errno::Errno;
use crate::ratelimit::RateLimit;

/// How many cached descriptors an opener that hit EMFILE closes before it
/// tries again (beyond what the budget asks).
const RELIEF: usize = 64;

/// An inode's O_PATH descriptor, counted while it is open: the count goes
/// down when the last user (the inode, or an operation still running with
/// a clone) closes it.
#[derive(Debug)]
pub(super) struct PathFd {
    fd: OwnedFd,
    open: Arc<AtomicUsize>,
}

impl AsFd for PathFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for PathFd {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The inode descriptors and the handles to reopen them by.
///
/// Locking: `clock` has its own `Mutex`, held only to push, pop or compact
/// the queue; it may be taken while nothing else is held and it takes an
/// inode's descriptor slot (its own `Mutex`, see [`Inode`]) inside it,
/// never the other way round. Descriptors taken out of slots are closed
/// after the lock is released. `open` is a counter, `mounts` has its own
/// lock (see [`MountFds`]).
#[derive(Debug)]
pub(super) struct FdCache {
    /// Inode descriptors open now (in slots or held by running operations).
    open: Arc<AtomicUsize>,
    /// How many may stay open before some are closed.
    budget: usize,
    /// Inodes with a handle and (when pushed) a descriptor, oldest first.
    /// Entries of forgotten inodes are skipped when popped and swept when
    /// the queue grows past twice the budget.
    clock: Mutex<VecDeque<Weak<Inode>>>,
    /// Whether new inodes get file handles.
    use_handles: bool,
    /// One descriptor per mount, to open handles against.
    mounts: MountFds,
    /// For the log line of a reopen that failed.
    reopen_log: RateLimit,
    /// Inodes opened again by handle.
    reopens: AtomicU64,
}

impl FdCache {
    /// A cache keeping at most `budget` inode descriptors open when the
    /// inodes have handles; handles are taken when `use_handles`.
    pub fn new(budget: usize, use_handles: bool) -> Self {
        Self {
            open: Arc::new(AtomicUsize::new(0)),
            budget: budget.max(1),
            clock: Mutex::new(VecDeque::new()),
            use_handles,
            mounts: MountFds::default(),
            reopen_log: RateLimit::per_second(1),
            reopens: AtomicU64::new(0),
        }
    }

    /// Whether inodes get file handles.
    pub fn uses_handles(&self) -> bool {
        self.use_handles
    }

    /// Inode descriptors open now.
    pub fn open_count(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Inodes opened again by handle so far.
    pub fn reopen_count(&self) -> u64 {
        self.reopens.load(Ordering::Relaxed)
    }

    /// Counts `fd` as an inode descriptor.
    pub fn wrap(&self, fd: OwnedFd) -> Arc<PathFd> {
        self.open.fetch_add(1, Ordering::Relaxed);
        Arc::new(PathFd {
            fd,
            open: Arc::clone(&self.open),
        })
    }

    /// The handle to reopen the inode `fd` refers to by, if handles are in
    /// use and its filesystem makes them (its mount's descriptor is kept
    /// from `fd`, reopened through `proc_self_fd`, if this is the first
    /// inode seen on it).
    pub fn handle_of(&self, fd: impl AsFd, proc_self_fd: impl AsFd) -> Option<FileHandle> {
        if !self.use_handles {
            return None;
        }
        let handle = FileHandle::of(fd.as_fd()).ok()?;
        self.mounts.remember(handle.mnt_id, fd, proc_self_fd).ok()?;
        Some(handle)
    }

    /// Starts tracking a new inode that holds a descriptor, and closes
    /// others if the budget is exceeded.
    pub fn track(&self, inode: &Arc<Inode>) {
        if inode.handle.is_some() {
            self.lock().push_back(Arc::downgrade(inode));
            self.enforce(0);
        }
    }

    /// `inode`'s O_PATH descriptor, opened again by its handle if the
    /// budget closed it. ESTALE when the inode no longer exists on the
    /// host (or its handle now names another inode).
    pub fn fd(&self, inode: &Arc<Inode>) -> Result<Arc<PathFd>, Errno> {
        if let Some(fd) = inode.current_fd() {
            return Ok(fd);
        }
        // Without a fd and a handle: an inode a migration could not open.
        let handle = inode.handle.as_ref().ok_or(Errno(libc::EIO))?;
        let mount = self.mounts.get(handle.mnt_id).ok_or(Errno(libc::ESTALE))?;
        let opened = self.with_room(|| handle.open(&*mount, OFlags::PATH | OFlags::NOFOLLOW));
        let fd = match opened.and_then(|fd| check_identity(fd, inode.key())) {
            Ok(fd) => fd,
            Err(errno) => {
                if let Some(suppressed) = self.reopen_log.check() {
                    tracing::debug!(nodeid = inode.nodeid, %errno, suppressed, "cannot reopen an inode by its handle");
                }
                return Err(errno);
            }
        };
        self.reopens.fetch_add(1, Ordering::Relaxed);
        let (fd, installed) = inode.install(self.wrap(fd));
        if installed {
            self.lock().push_back(Arc::downgrade(inode));
            self.enforce(0);
        }
        Ok(fd)
    }

    /// Runs `open`; on EMFILE or ENFILE closes some cached descriptors and
    /// runs it once more.
    pub fn with_room<T>(&self, open: impl Fn() -> Result<T, Errno>) -> Result<T, Errno> {
        match open() {
            Err(Errno(libc::EMFILE | libc::ENFILE)) => {
                self.enforce(RELIEF);
                open()
            }
            other => other,
        }
    }

    /// Closes cached descriptors until at most `budget - extra` are open
    /// (as far as inodes with handles hold them), skipping each recently
    /// used inode once.
    fn enforce(&self, extra: usize) {
        let target = self.budget.saturating_sub(extra);
        if self.open_count() <= target {
            return;
        }
        let mut closed = Vec::new();
        {
            let mut clock = self.lock();
            // Each entry is looked at at most twice (a second chance).
            let mut steps = clock.len() * 2;
            while self.open_count().saturating_sub(closed.len()) > target && steps > 0 {
                steps -= 1;
                let Some(weak) = clock.pop_front() else { break };
                let Some(inode) = weak.upgrade() else {
                    continue;
                };
                if inode.take_used() {
                    clock.push_back(weak);
                } else if let Some(fd) = inode.take_fd() {
                    closed.push(fd);
                }
            }
            if clock.len() > 2 * self.budget + RELIEF {
                clock.retain(|weak| weak.strong_count() > 0);
            }
        }
        // Closed here, after the clock's lock is released.
        drop(closed);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Weak<Inode>>> {
        self.clock.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `fd` if it refers to the inode `key` names; ESTALE if the handle now
/// leads elsewhere (its mount was replaced under the same id).
fn check_identity(fd: OwnedFd, key: InodeKey) -> Result<OwnedFd, Errno> {
    let st = statx_fd(&fd)?;
    if InodeKey::of(&st) == key {
        Ok(fd)
    } else {
        Err(Errno(libc::ESTALE))
    }
}
