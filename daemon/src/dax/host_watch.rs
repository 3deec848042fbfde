//! Files with mappings in the window, and the thread that notices when
//! another host process changes their size.
//!
//! [`MappedFiles`] keeps, for every inode with records in the window (or a
//! SETUPMAPPING in flight), a descriptor of its file — read-write once a
//! writable mapping was made — so a repair can map the part below the end
//! back, and an inotify watch on it. [`HostWatcher`] reads the watches'
//! events (`IN_MODIFY`: writes, truncate, fallocate; `IN_ATTRIB`), fstats
//! the file and repairs its mappings ([`dax_window::Window::repair`]) in
//! both directions. When an inode's last mapping goes, its descriptor is
//! closed but its watch stays idle for the nodeid's next SETUPMAPPING, a
//! bounded number of them ([`Registry::idle`]).
//!
//! `IN_CLOSE_WRITE` is not watched: every way a file's size changes
//! (write, truncate, ftruncate, open with O_TRUNC, fallocate, copy_file_range)
//! sends `IN_MODIFY`, and a close changes no size. Watching it made the
//! daemon's own close of a descriptor with write access (each cycle on a
//! frontend that maps only those, as QEMU 11.1) wake the watcher.
//!
//! Why inotify rather than fanotify: it works unprivileged, watches exactly
//! the inodes that need it (a watch per mapped inode, on the file the daemon
//! holds open, found through its `/proc/self/fd` link, so other links do
//! not matter) and reports truncations by any process; fanotify needs
//! CAP_SYS_ADMIN and marks whole mounts or inodes just the same. The limit is
//! `fs.inotify.max_user_watches`; a file whose watch cannot be added is still
//! mapped (and repaired on the daemon's own truncations), counted in
//! `dax_unwatched_files_total`.
//!
//! Lock order: the registry mutex may be held while the window's reverse
//! index is read (`slots_of`), never the other way round; no VMM call is made
//! under it.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;

use dax_window::{InodeId, Window};
use rustix::fs::inotify;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use super::metrics::RepairSource;
use super::Core;

/// Events that may mean a size change.
const WATCHED: inotify::WatchFlags = inotify::WatchFlags::MODIFY.union(inotify::WatchFlags::ATTRIB);

/// One mapped inode.
#[derive(Debug)]
struct Entry {
    /// The file, shared with repairs in progress.
    file: Arc<File>,
    /// Whether `file` was opened for writing (can back writable mappings).
    writable: bool,
    /// The inotify watch, if one could be added.
    wd: Option<i32>,
    /// SETUPMAPPINGs of the inode in progress; the entry stays while any is.
    pins: u32,
}

/// Watches kept for inodes whose last mapping went, at most this many.
const IDLE_WATCHES: usize = 64;

/// Guarded by [`MappedFiles::registry`], as a whole.
#[derive(Debug, Default)]
struct Registry {
    by_node: HashMap<u64, Entry>,
    /// Nodeids per watch (inotify gives one watch per inode, so two nodeids
    /// of one inode would share it); idle watches' nodeids included.
    by_wd: HashMap<i32, Vec<u64>>,
    /// Idle watches: nodeids whose last mapping went (no descriptor held),
    /// oldest first, with their watch, for the next SETUPMAPPING of the
    /// nodeid to take over instead of adding a watch again (a cycle of
    /// SETUPMAPPING and REMOVEMAPPING of one range would otherwise add and
    /// remove a watch each time: a `readlinkat`, an `fstat`, two
    /// `newfstatat`, `inotify_add_watch` and `inotify_rm_watch`). A watch is
    /// no descriptor: the file is not held open. Valid within a session: a
    /// nodeid names one host inode until it is forgotten, and is never
    /// reused within a session, and a watch lives until its inode is evicted
    /// (IN_IGNORED, [`MappedFiles::watch_gone`]); the list is emptied when a
    /// session's window is reset ([`MappedFiles::drop_idle`]), before the
    /// next session maps anything. Events of idle watches cost a repair
    /// look-up that finds no file.
    idle: std::collections::VecDeque<(u64, i32)>,
}

/// The files of the inodes with mappings, and their watches.
#[derive(Debug)]
pub(super) struct MappedFiles {
    registry: Mutex<Registry>,
    /// The inotify instance; `None` when host changes are not watched.
    inotify: Option<OwnedFd>,
    /// Files whose watch could not be added.
    unwatched: AtomicU64,
}

impl MappedFiles {
    /// A registry; with `watch`, an inotify instance for its watches (if the
    /// kernel gives one).
    pub(super) fn new(watch: bool) -> Self {
        let inotify = watch
            .then(|| inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK))
            .and_then(|created| {
                created
                    .map_err(|error| {
                        tracing::warn!(%error, "no inotify instance: host-side truncations of mapped files are not repaired");
                    })
                    .ok()
            });
        Self {
            registry: Mutex::new(Registry::default()),
            inotify,
            unwatched: AtomicU64::new(0),
        }
    }

    /// Whether host-side changes are watched.
    pub(super) fn watching(&self) -> bool {
        self.inotify.is_some()
    }

    /// How many files could not be watched.
    pub(super) fn unwatched(&self) -> u64 {
        self.unwatched.load(Relaxed)
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Registers a SETUPMAPPING of `nodeid` from `file` (opened for writing
    /// when `writable`) before it maps anything: keeps the descriptor (shared,
    /// not duplicated) and watches the file the first time (taking over its
    /// idle watch if it has one), and a writable descriptor once one is
    /// offered. The returned pin keeps the entry until the map is done.
    pub(super) fn pin<'a>(
        &'a self, window: &'a Window, nodeid: u64, file: &Arc<File>, writable: bool,
    ) -> Pin<'a> {
        let mut registry = self.lock();
        let registry = &mut *registry;
        match registry.by_node.get_mut(&nodeid) {
            Some(entry) => {
                if writable && !entry.writable {
                    entry.file = Arc::clone(file);
                    entry.writable = true;
                }
                entry.pins += 1;
            }
            None => {
                let idle = registry.idle.iter().position(|(n, _)| *n == nodeid);
                let wd = match idle.and_then(|at| registry.idle.remove(at)) {
                    Some((_, wd)) => Some(wd),
                    None => {
                        let wd = self.add_watch(&registry.by_wd, file, nodeid);
                        if let Some(wd) = wd {
                            registry.by_wd.entry(wd).or_default().push(nodeid);
                        }
                        wd
                    }
                };
                registry.by_node.insert(
                    nodeid,
                    Entry {
                        file: Arc::clone(file),
                        writable,
                        wd,
                        pins: 1,
                    },
                );
            }
        }
        Pin {
            files: self,
            window,
            nodeid,
        }
    }

    /// Adds a watch on `file`'s inode (see [`add_inode_watch`]); `by_wd` holds the
    /// watches in use. `None` (counted, logged) if it cannot be added.
    fn add_watch(&self, by_wd: &HashMap<i32, Vec<u64>>, file: &File, nodeid: u64) -> Option<i32> {
        let inotify = self.inotify.as_ref()?;
        match add_inode_watch(inotify, file, |wd| by_wd.contains_key(&wd)) {
            Ok(wd) => Some(wd),
            Err(error) => {
                self.unwatched.fetch_add(1, Relaxed);
                tracing::warn!(
                    nodeid,
                    error = %crate::error_chain(&error),
                    "cannot watch a mapped file: host-side truncations of it are not repaired"
                );
                None
            }
        }
    }

    /// Forgets `nodeid` if no SETUPMAPPING of it is in progress and the
    /// window holds no record of it.
    pub(super) fn release_if_unmapped(&self, window: &Window, nodeid: u64) {
        let mut registry = self.lock();
        let unused = registry
            .by_node
            .get(&nodeid)
            .is_some_and(|entry| entry.pins == 0 && window.slots_of(InodeId(nodeid)).is_empty());
        if unused {
            self.forget(&mut registry, nodeid);
        }
    }

    /// [`Self::release_if_unmapped`] for every entry (after a reset or a
    /// failed request whose side effects are not itemised).
    pub(super) fn sweep(&self, window: &Window) {
        let mut registry = self.lock();
        let unused: Vec<u64> = registry
            .by_node
            .iter()
            .filter(|(nodeid, entry)| {
                entry.pins == 0 && window.slots_of(InodeId(**nodeid)).is_empty()
            })
            .map(|(nodeid, _)| *nodeid)
            .collect();
        for nodeid in unused {
            self.forget(&mut registry, nodeid);
        }
    }

    /// Drops the descriptor of `nodeid`; its watch stays, idle (see
    /// [`Registry::idle`]), the oldest idle watch going beyond
    /// [`IDLE_WATCHES`].
    fn forget(&self, registry: &mut Registry, nodeid: u64) {
        let Some(entry) = registry.by_node.remove(&nodeid) else {
            return;
        };
        let Some(wd) = entry.wd else {
            return;
        };
        registry.idle.push_back((nodeid, wd));
        while registry.idle.len() > IDLE_WATCHES {
            if let Some((old, wd)) = registry.idle.pop_front() {
                self.unwatch(registry, old, wd);
            }
        }
    }

    /// Removes `nodeid` from watch `wd`, and the watch once no nodeid uses it.
    fn unwatch(&self, registry: &mut Registry, nodeid: u64, wd: i32) {
        let last = match registry.by_wd.get_mut(&wd) {
            Some(nodes) => {
                nodes.retain(|n| *n != nodeid);
                nodes.is_empty()
            }
            None => false,
        };
        if last {
            registry.by_wd.remove(&wd);
            if let Some(inotify) = &self.inotify {
                // Fails harmlessly if the kernel already dropped the watch.
                let _ = inotify::remove_watch(inotify, wd);
            }
        }
    }

    /// Removes every idle watch (the session's window was reset: the next
    /// session's nodeids name other inodes).
    pub(super) fn drop_idle(&self) {
        let mut registry = self.lock();
        while let Some((nodeid, wd)) = registry.idle.pop_front() {
            self.unwatch(&mut registry, nodeid, wd);
        }
    }

    /// The file of `nodeid`, if it has mappings.
    pub(super) fn file(&self, nodeid: u64) -> Option<Arc<File>> {
        self.lock()
            .by_node
            .get(&nodeid)
            .map(|entry| Arc::clone(&entry.file))
    }

    /// Whether `nodeid` has (or is getting) mappings (for tests).
    #[cfg(test)]
    pub(super) fn contains(&self, nodeid: u64) -> bool {
        self.lock().by_node.contains_key(&nodeid)
    }

    /// Number of files held.
    pub(super) fn len(&self) -> usize {
        self.lock().by_node.len()
    }

    /// The nodeids a watch stands for.
    fn nodes_of(&self, wd: i32) -> Vec<u64> {
        self.lock().by_wd.get(&wd).cloned().unwrap_or_default()
    }

    /// Every nodeid held (after lost events).
    fn all_nodes(&self) -> Vec<u64> {
        self.lock().by_node.keys().copied().collect()
    }

    /// The kernel dropped watch `wd` (IN_IGNORED): forget the number, which
    /// it may reuse.
    fn watch_gone(&self, wd: i32) {
        let mut registry = self.lock();
        registry.idle.retain(|(_, idle)| *idle != wd);
        if let Some(nodes) = registry.by_wd.remove(&wd) {
            for nodeid in nodes {
                if let Some(entry) = registry.by_node.get_mut(&nodeid) {
                    entry.wd = None;
                }
            }
        }
    }
}

/// Why a mapped file could not be watched.
#[derive(Debug, thiserror::Error)]
enum WatchError {
    /// The `/proc/self/fd` directory is not available.
    #[error("no /proc/self/fd directory")]
    Proc(#[source] std::io::Error),
    /// The descriptor's link could not be read, or the file not stat'ed.
    #[error("cannot find the file's path")]
    Path(#[source] rustix::io::Errno),
    /// The path names another inode (the file was renamed or deleted).
    #[error("the file's path {0:?} names another file now")]
    Moved(std::ffi::CString),
    /// inotify refused (`fs.inotify.max_user_watches` reached?).
    #[error("inotify_add_watch failed")]
    Add(#[source] rustix::io::Errno),
}

/// Adds a watch on the inode of `file`. inotify takes a path, not a
/// descriptor, and inside the sandbox `/proc` is not procfs, so the path is
/// the target of the descriptor's link in the `/proc/self/fd` directory the
/// sandbox keeps open (it names the file below the root this process sees:
/// the shared directory, in a sandbox). The file may be renamed meanwhile:
/// the path's inode is compared with the descriptor's before and after the
/// watch is added, and a watch that may be on another inode is not used
/// (removed, unless `in_use` says it serves another mapped file).
fn add_inode_watch(
    inotify: &OwnedFd, file: &File, in_use: impl Fn(i32) -> bool,
) -> Result<i32, WatchError> {
    let proc_fd = crate::process::fds::proc_self_fd().map_err(WatchError::Proc)?;
    let path = rustix::fs::readlinkat(proc_fd, file.as_raw_fd().to_string(), Vec::new())
        .map_err(WatchError::Path)?;
    let want = rustix::fs::fstat(file).map_err(WatchError::Path)?;
    let names_file = || {
        rustix::fs::statat(
            rustix::fs::CWD,
            &path,
            rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
        )
        .is_ok_and(|st| st.st_dev == want.st_dev && st.st_ino == want.st_ino)
    };
    if !names_file() {
        return Err(WatchError::Moved(path));
    }
    let wd = inotify::add_watch(inotify, &path, WATCHED | inotify::WatchFlags::DONT_FOLLOW)
        .map_err(WatchError::Add)?;
    if !names_file() {
        if !in_use(wd) {
            let _ = inotify::remove_watch(inotify, wd);
        }
        return Err(WatchError::Moved(path));
    }
    Ok(wd)
}

/// A SETUPMAPPING in progress; dropping it releases the entry if the map
/// left no record.
#[derive(Debug)]
pub(super) struct Pin<'a> {
    files: &'a MappedFiles,
    window: &'a Window,
    nodeid: u64,
}

impl Drop for Pin<'_> {
    fn drop(&mut self) {
        {
            let mut registry = self.files.lock();
            if let Some(entry) = registry.by_node.get_mut(&self.nodeid) {
                entry.pins = entry.pins.saturating_sub(1);
            }
        }
        self.files.release_if_unmapped(self.window, self.nodeid);
    }
}

/// The thread that reads the watches' events; stopped and joined on drop.
#[derive(Debug)]
pub(super) struct HostWatcher {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

const STOP: u64 = 0;
const EVENTS: u64 = 1;

impl HostWatcher {
    /// Starts reading the events of `core.files`' watches.
    pub(super) fn start(core: Arc<Core>) -> std::io::Result<Self> {
        let stop = EventFd::new(EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        let Some(inotify) = &core.files.inotify else {
            return Err(std::io::Error::other("no inotify instance to watch"));
        };
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, STOP),
        )?;
        epoll.ctl(
            ControlOperation::Add,
            inotify.as_raw_fd(),
            EpollEvent::new(EventSet::IN, EVENTS),
        )?;
        let thread = std::thread::Builder::new()
            .name("daxfsd-host-watch".into())
            .spawn(move || watch(&core, &epoll))?;
        Ok(Self {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for HostWatcher {
    fn drop(&mut self) {
        if self.stop.write(1).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// The watcher's loop: wait, drain the events, repair each inode named once.
fn watch(core: &Core, epoll: &Epoll) {
    let Some(inotify) = &core.files.inotify else {
        return;
    };
    let mut ready = [EpollEvent::default(); 2];
    let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
    loop {
        let count = match epoll.wait(-1, &mut ready) {
            Ok(count) => count,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(error) => {
                tracing::error!(%error, "host watch stopped: host-side truncations are no longer repaired");
                return;
            }
        };
        if ready[..count].iter().any(|event| event.data() == STOP) {
            return;
        }
        let mut nodes: Vec<u64> = Vec::new();
        let mut events = 0u64;
        let mut reader = inotify::Reader::new(inotify.as_fd(), &mut buf);
        loop {
            match reader.next() {
                Ok(event) => {
                    events += 1;
                    let flags = event.events();
                    if flags.contains(inotify::ReadFlags::QUEUE_OVERFLOW) {
                        tracing::warn!("host watch events were lost; checking every mapped file");
                        nodes = core.files.all_nodes();
                    } else if flags.contains(inotify::ReadFlags::IGNORED) {
                        core.files.watch_gone(event.wd());
                    } else {
                        nodes.extend(core.files.nodes_of(event.wd()));
                    }
                }
                Err(rustix::io::Errno::AGAIN) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(error) => {
                    tracing::error!(%error, "reading host watch events failed");
                    break;
                }
            }
        }
        core.metrics.host_events(events);
        nodes.sort_unstable();
        nodes.dedup();
        for nodeid in nodes {
            core.repair_to_current_size(nodeid, RepairSource::Host);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::io::Write as _;

    use dax_window::{MapRequest, Mapper, WindowGeometry, SLOT_SIZE};

    use super::*;

    /// A VMM that accepts everything.
    struct Accepting;

    impl Mapper for Accepting {
        type File = File;
        type Error = Infallible;

        fn map(&self, _: u64, _: u64, _: &File, _: u64, _: bool) -> Result<(), Infallible> {
            Ok(())
        }

        fn unmap(&self, _: u64, _: u64) -> Result<(), Infallible> {
            Ok(())
        }
    }

    /// Reads the pending events of `files`' watches: the nodeids named.
    fn events(files: &MappedFiles) -> Vec<u64> {
        let mut buf = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
        let inotify = files.inotify.as_ref().unwrap();
        let mut reader = inotify::Reader::new(inotify.as_fd(), &mut buf);
        let mut nodes = Vec::new();
        while let Ok(event) = reader.next() {
            nodes.extend(files.nodes_of(event.wd()));
        }
        nodes.sort_unstable();
        nodes.dedup();
        nodes
    }

    #[test]
    fn a_mapped_file_is_held_and_watched_until_its_last_record_goes() {
        let window = Window::new(WindowGeometry::new(2 * SLOT_SIZE).unwrap());
        let files = MappedFiles::new(true);
        // A named file: an unlinked one has no path to watch by.
        let named = tempfile::NamedTempFile::new().unwrap();
        let file = Arc::new(named.reopen().unwrap());
        (&*file).write_all(&[7; 8192]).unwrap();

        // A SETUPMAPPING that maps nothing leaves no descriptor behind.
        drop(files.pin(&window, 5, &file, false));
        assert!(!files.contains(5) && files.len() == 0);

        let pin = files.pin(&window, 5, &file, false);
        assert!(files.contains(5));
        let request = MapRequest {
            moffset: 0,
            len: SLOT_SIZE,
            inode: InodeId(5),
            file: &*file,
            foffset: 0,
            writable: false,
        };
        window.setup_mapping(&Accepting, &request).unwrap();
        drop(pin);
        assert!(files.contains(5), "released while mapped");
        assert_eq!(files.unwatched(), 0);

        // Another process shrinks it: the watch reports the nodeid.
        let _ = events(&files);
        file.set_len(100).unwrap();
        assert_eq!(events(&files), vec![5]);

        // A writable mapping swaps in a writable descriptor; still one entry.
        let held = files.file(5).unwrap();
        let writable = Arc::new(named.reopen().unwrap());
        let pin = files.pin(&window, 5, &writable, true);
        assert!(!Arc::ptr_eq(&held, &files.file(5).unwrap()));
        drop((pin, held));
        assert_eq!(files.len(), 1);

        window.remove_mapping(&Accepting, 0, SLOT_SIZE).unwrap();
        files.release_if_unmapped(&window, 5);
        assert!(!files.contains(5) && files.file(5).is_none());
        // The writable descriptor went; its close woke nobody, and its
        // watch stays idle like any other.
        assert_eq!(
            Arc::strong_count(&writable),
            1,
            "the registry still holds the file"
        );
        drop(writable);
        assert_eq!(events(&files), Vec::<u64>::new(), "a close is no event");
        file.set_len(10).unwrap();
        assert_eq!(events(&files), vec![5]);
        files.drop_idle();
        assert!(files.lock().by_wd.is_empty());

        // A read-only descriptor's watch stays idle for the next mapping.
        drop(files.pin(&window, 5, &file, false));
        assert!(!files.contains(5));
        file.set_len(15).unwrap();
        assert_eq!(events(&files), vec![5]);
        drop(files.pin(&window, 5, &file, false));
        assert_eq!(
            files.lock().by_wd.len(),
            1,
            "the idle watch was not taken over"
        );

        // A reset drops idle watches.
        files.drop_idle();
        assert!(files.lock().by_wd.is_empty() && files.lock().idle.is_empty());
        file.set_len(20).unwrap();
        assert_eq!(events(&files), Vec::<u64>::new());
    }

    #[test]
    fn idle_watches_are_bounded() {
        let window = Window::new(WindowGeometry::new(SLOT_SIZE).unwrap());
        let files = MappedFiles::new(true);
        let named = tempfile::NamedTempFile::new().unwrap();
        let file = Arc::new(named.reopen().unwrap());
        // One inode under many nodeids: one watch, shared.
        for nodeid in 0..(IDLE_WATCHES as u64 + 10) {
            drop(files.pin(&window, nodeid, &file, false));
        }
        let registry = files.lock();
        assert_eq!(registry.idle.len(), IDLE_WATCHES);
        assert_eq!(registry.idle.front().map(|(n, _)| *n), Some(10));
        let shared: usize = registry.by_wd.values().map(Vec::len).sum();
        assert_eq!(shared, IDLE_WATCHES);
    }

    #[test]
    fn without_watching_files_are_held_but_not_watched() {
        let window = Window::new(WindowGeometry::new(SLOT_SIZE).unwrap());
        let files = MappedFiles::new(false);
        assert!(!files.watching());
        let file = Arc::new(tempfile::tempfile().unwrap());
        let pin = files.pin(&window, 1, &file, false);
        assert!(files.contains(1));
        drop(pin);
        files.sweep(&window);
        assert_eq!(files.len(), 0);
    }
}
