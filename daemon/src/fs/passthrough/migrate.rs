//! The passthrough filesystem's part of a live migration: its inodes and
//! handles written as a [`FsState`] on the source, and opened again from
//! one on the destination (see `crate::migration` for the whole).
//!
//! On the source, with `find-paths`, an inode's path is what
//! `/proc/self/fd` says of its descriptor, relative to the shared
//! directory, taken when the migration starts (the frontend turns on dirty
//! logging: [`PassthroughFs::prepare_migration`]). At switch-over those
//! paths are used as they are, unless the daemon itself renamed or
//! removed names since (then every path is taken again) or
//! `--migration-confirm-paths` asks for each to be checked; a path taken
//! at switch-over is always checked (opened from the shared directory, its
//! identity compared). An inode no path leads to (its name was removed, or
//! `/proc` names a place outside the share) is searched for through the
//! whole shared directory once, for all such inodes together.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::CString;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use daxfsd_protocol::abi::ROOT_ID;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags, StatxFlags};

use super::attr::statx_fd;
use super::entry_ops::RESOLVE;
use super::fd_cache::PathFd;
use super::file_handle::FileHandle;
use super::handle::Handle;
use super::inode::{Inode, InodeKey};
use super::reopen::FdName;
use super::PassthroughFs;
use crate::errno::Errno;
use crate::migration::{
    FsState, HandleBytes, HandleState, ImportSummary, InodeState, Location, MigrationConfig,
    MigrationError, MigrationMode, OnError,
};

/// Paths resolved for a migration never cross a symlink: `/proc` gives
/// real paths, so a symlink on the way means the tree changed.
const MIGRATION_RESOLVE: ResolveFlags = RESOLVE.union(ResolveFlags::NO_SYMLINKS);

/// What the source prepares when a migration starts.
///
/// Locking: `names_changed` is a counter (Relaxed: it is compared, never
/// used to order other memory); `collected` is its own `Mutex`, held while
/// paths are stored or taken, never across a system call.
#[derive(Debug, Default)]
pub(super) struct MigrationPrep {
    /// RENAMEs, UNLINKs and RMDIRs served so far: a path collected before
    /// one of them may be stale.
    names_changed: AtomicU64,
    collected: Mutex<Option<Collected>>,
}

/// Paths taken when the migration started.
#[derive(Debug)]
struct Collected {
    /// `names_changed` when they were taken.
    names_changed_at: u64,
    paths: HashMap<u64, Vec<u8>>,
}

impl MigrationPrep {
    /// The daemon renamed or removed a name.
    pub fn name_changed(&self) {
        self.names_changed.fetch_add(1, Ordering::Relaxed);
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Collected>> {
        self.collected
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl PassthroughFs {
    /// The migration starts: take every inode's path now, while the guest
    /// still runs, so that switch-over only uses them. Runs on the
    /// frontend's message thread: one `readlink` per inode.
    pub(super) fn prepare_migration(&self) {
        let names_changed_at = self.migration.names_changed.load(Ordering::Relaxed);
        let (inodes, _) = self.inodes.snapshot();
        let Ok(prefix) = self.root_fd().and_then(|root| self.root_prefix(&root)) else {
            return;
        };
        let paths: HashMap<u64, Vec<u8>> = inodes
            .iter()
            .filter_map(|inode| Some((inode.nodeid, self.proc_path(inode, &prefix).ok()?)))
            .collect();
        tracing::info!(
            inodes = inodes.len(),
            paths = paths.len(),
            "migration starts: inode paths collected"
        );
        *self.migration.slot() = Some(Collected {
            names_changed_at,
            paths,
        });
    }

    /// The migration was cancelled: forget the collected paths.
    pub(super) fn cancel_migration(&self) {
        self.migration.slot().take();
    }

    /// The source's state (the guest and the queues are stopped).
    pub(super) fn export(&self, config: &MigrationConfig) -> Result<FsState, MigrationError> {
        let (inodes, next_nodeid) = self.inodes.snapshot();
        let collected =
            self.migration.slot().take().filter(|c| {
                c.names_changed_at == self.migration.names_changed.load(Ordering::Relaxed)
            });
        let root = self.root_fd().map_err(host)?;
        let prefix = self.root_prefix(&root).map_err(host)?;
        let mut states = Vec::with_capacity(inodes.len());
        let mut missing = Vec::new();
        for inode in &inodes {
            let location = self
                .location(inode, config, collected.as_ref(), &root, &prefix)
                .unwrap_or_else(|| {
                    missing.push(states.len());
                    Location::Lost("no path in the shared directory leads to it".into())
                });
            let verify = (config.verify_handles && config.mode == MigrationMode::FindPaths)
                .then(|| {
                    self.path_fd(inode)
                        .ok()
                        .and_then(|fd| FileHandle::of(&*fd).ok())
                })
                .flatten()
                .map(|h| handle_bytes(&h));
            states.push(InodeState {
                nodeid: inode.nodeid,
                lookups: inode.lookups(),
                location,
                verify,
            });
        }
        if !missing.is_empty() {
            let wanted: HashMap<(u64, u64), usize> = missing
                .iter()
                .map(|&i| {
                    let key = inodes[i].key();
                    ((key.dev, key.ino), i)
                })
                .collect();
            for (i, path) in search(&root, wanted) {
                states[i].location = Location::Path(path);
            }
        }
        let lost = states
            .iter()
            .filter(|s| matches!(s.location, Location::Lost(_)))
            .count();
        if lost > 0 {
            tracing::warn!(
                lost,
                "inodes the guest holds cannot be named for the destination"
            );
        }
        let (handles, next_fh) = self.handles.snapshot();
        let handles = handles
            .into_iter()
            .map(|(fh, h)| handle_state(fh, &h))
            .collect();
        Ok(FsState {
            inodes: states,
            handles,
            next_nodeid,
            next_fh,
        })
    }

    /// The destination opens the source's inodes and handles again, under
    /// their nodeids and fhs. With `OnError::Abort` the first failure
    /// undoes it all and fails.
    pub(super) fn import(
        &self, state: FsState, on_error: OnError,
    ) -> Result<ImportSummary, MigrationError> {
        if self.inodes.len() > 1 || self.handles.len() > 0 {
            return Err(MigrationError::SessionActive);
        }
        let root = self.root_fd().map_err(host)?;
        // open_by_handle_at wants a descriptor on the mount that is not O_PATH.
        let mount = rustix::fs::openat(
            &*root,
            c".",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        );
        let mut summary = ImportSummary::default();
        for inode in state.inodes {
            match self.import_inode(&inode, &root, mount.as_ref()) {
                Ok(()) => summary.inodes += 1,
                Err(why) => summary.failures.push(format!(
                    "inode {} ({}): {why}",
                    inode.nodeid,
                    describe(&inode.location)
                )),
            }
        }
        for handle in state.handles {
            match self.import_handle(&handle) {
                Ok(()) => summary.handles += 1,
                Err(why) => {
                    self.handles.restore_lost(handle.fh);
                    summary.failures.push(format!(
                        "handle {} of inode {}: {why}",
                        handle.fh, handle.nodeid
                    ));
                }
            }
        }
        self.inodes.advance_next_id(state.next_nodeid);
        self.handles.advance_next_fh(state.next_fh);
        if on_error == OnError::Abort && !summary.failures.is_empty() {
            self.handles.clear();
            self.inodes.clear_except_root();
            return Err(MigrationError::Unmigratable {
                count: summary.failures.len(),
                first: summary.failures.swap_remove(0),
            });
        }
        Ok(summary)
    }

    /// Where the destination will find `inode`; `None` when no path was
    /// found for it (it is then searched for).
    fn location(
        &self, inode: &Arc<Inode>, config: &MigrationConfig, collected: Option<&Collected>,
        root: &PathFd, prefix: &[u8],
    ) -> Option<Location> {
        if inode.is_lost() {
            return Some(Location::Lost(
                "not opened after an earlier migration".into(),
            ));
        }
        if config.mode == MigrationMode::FileHandles {
            return Some(self.handle_location(inode));
        }
        let earlier = collected.and_then(|c| c.paths.get(&inode.nodeid));
        let path = match earlier {
            Some(path) if !config.confirm_paths => Some(path.clone()),
            Some(path) if leads_to(root, path, inode.key()) => Some(path.clone()),
            _ => self
                .proc_path(inode, prefix)
                .ok()
                .filter(|path| leads_to(root, path, inode.key())),
        };
        path.map(Location::Path)
    }

    /// Opens one migrated inode and enters it under its nodeid; on failure
    /// it is entered as lost (EIO) and the error says why.
    fn import_inode(
        &self, inode: &InodeState, root: &PathFd, mount: Result<&OwnedFd, &rustix::io::Errno>,
    ) -> Result<(), String> {
        let needs_handles = matches!(inode.location, Location::Handle(_)) || inode.verify.is_some();
        let opened = if needs_handles && !self.config.handle_calls {
            Err(
                "the source sent a file handle, and this daemon does not use them \
                 (--inode-file-handles=never)"
                    .into(),
            )
        } else {
            open_location(&inode.location, root, mount).and_then(|fd| {
                verify(&fd, inode.verify.as_ref())?;
                let st = statx_fd(&fd).map_err(|e| e.to_string())?;
                Ok((fd, st))
            })
        };
        let (fd, st) = match opened {
            Ok(opened) => opened,
            Err(why) => {
                self.inodes.restore(inode.nodeid, inode.lookups, None);
                return Err(why);
            }
        };
        let handle = self.fds.handle_of(&fd, &self.proc_self_fd);
        let fd = self.fds.wrap(fd);
        let restored = self
            .inodes
            .restore(inode.nodeid, inode.lookups, Some((fd, &st, handle)))
            .ok_or_else(|| "its nodeid appears twice".to_owned())?;
        self.fds.track(&restored);
        Ok(())
    }

    /// Opens one migrated handle again and enters it under its fh.
    fn import_handle(&self, handle: &HandleState) -> Result<(), String> {
        let flags = OFlags::from_bits_retain(handle.flags) - OFlags::TRUNC;
        let inode = self.inodes.get(handle.nodeid).map_err(|e| e.to_string())?;
        let fd = self.reopen(&inode, flags).map_err(|e| e.to_string())?;
        match self
            .handles
            .restore(handle.fh, handle.nodeid, fd, handle.directory)
        {
            true => Ok(()),
            false => Err("its fh appears twice".into()),
        }
    }

    /// The file-handles mode's location of `inode`.
    fn handle_location(&self, inode: &Arc<Inode>) -> Location {
        if let Some(handle) = &inode.handle {
            return Location::Handle(handle_bytes(handle));
        }
        match self.path_fd(inode).and_then(|fd| FileHandle::of(&*fd)) {
            Ok(handle) => Location::Handle(handle_bytes(&handle)),
            Err(e) => Location::Lost(format!("no file handle: {e}")),
        }
    }

    /// What `/proc/self/fd` says the shared directory (`root`) is.
    fn root_prefix(&self, root: &PathFd) -> Result<Vec<u8>, Errno> {
        Ok(self.proc_link(root)?.into_bytes())
    }

    /// The shared directory's O_PATH descriptor.
    fn root_fd(&self) -> Result<Arc<PathFd>, Errno> {
        self.path_fd(&self.inodes.get(ROOT_ID)?)
    }

    /// `/proc/self/fd`'s path of `inode`, relative to the shared directory
    /// (`prefix`); an error if it was deleted or lies outside the share.
    fn proc_path(&self, inode: &Arc<Inode>, prefix: &[u8]) -> Result<Vec<u8>, Errno> {
        let fd = self.path_fd(inode)?;
        let link = self.proc_link(&*fd)?.into_bytes();
        relative_to(&link, prefix).ok_or(Errno::ENOENT)
    }

    fn proc_link(&self, fd: impl AsFd) -> Result<CString, Errno> {
        let name = FdName::of(fd);
        Ok(rustix::fs::readlinkat(
            &self.proc_self_fd,
            name.as_cstr(),
            Vec::new(),
        )?)
    }
}

/// `link` relative to `prefix` (both absolute): `None` if it lies outside
/// or names a deleted file.
fn relative_to(link: &[u8], prefix: &[u8]) -> Option<Vec<u8>> {
    if link.ends_with(b" (deleted)") {
        return None;
    }
    let rest = link.strip_prefix(prefix)?;
    if prefix == b"/" {
        return Some(rest.to_vec());
    }
    match rest {
        [] => Some(Vec::new()),
        [b'/', tail @ ..] => Some(tail.to_vec()),
        _ => None,
    }
}

/// Opens `path` (relative; empty for the share itself) below `root`, as
/// an O_PATH descriptor.
fn open_beneath(root: impl AsFd, path: &[u8]) -> Result<OwnedFd, String> {
    open_beneath_as(root, path, OFlags::PATH)
}

/// [`open_beneath`] with `flags` (O_NOFOLLOW and O_CLOEXEC are added).
fn open_beneath_as(root: impl AsFd, path: &[u8], flags: OFlags) -> Result<OwnedFd, String> {
    let path = if path.is_empty() {
        b".".to_vec()
    } else {
        path.to_vec()
    };
    let path = CString::new(path).map_err(|_| "a path with a NUL byte".to_owned())?;
    rustix::fs::openat2(
        root,
        &path,
        flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        MIGRATION_RESOLVE,
    )
    .map_err(|e| Errno::from(e).to_string())
}

/// Whether `path` below `root` is the inode `key`.
fn leads_to(root: impl AsFd, path: &[u8], key: InodeKey) -> bool {
    open_beneath(root, path)
        .ok()
        .and_then(|fd| statx_fd(&fd).ok())
        .is_some_and(|st| InodeKey::of(&st) == key)
}

/// Walks the shared directory (breadth first, each directory once) for
/// the inodes `wanted` names by (device, inode number); returns the path
/// found for each value.
fn search(root: impl AsFd, mut wanted: HashMap<(u64, u64), usize>) -> Vec<(usize, Vec<u8>)> {
    // A directory entry's d_ino is compared first; only a match (or an
    // entry of unknown type) costs a statx.
    let inos: HashSet<u64> = wanted.keys().map(|&(_, ino)| ino).collect();
    let mut found = Vec::new();
    let mut queue: VecDeque<Vec<u8>> = VecDeque::from([Vec::new()]);
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    while let Some(dir_path) = queue.pop_front() {
        if wanted.is_empty() {
            break;
        }
        let Ok(dir_fd) = open_beneath_as(&root, &dir_path, OFlags::RDONLY | OFlags::DIRECTORY)
        else {
            continue;
        };
        let Ok(st) = statx_fd(&dir_fd) else { continue };
        let key = InodeKey::of(&st);
        if !seen.insert((key.dev, key.ino)) {
            continue;
        }
        let Ok(dir) = rustix::fs::Dir::read_from(&dir_fd) else {
            continue;
        };
        for entry in dir.flatten() {
            let name = entry.file_name();
            if name == c"." || name == c".." {
                continue;
            }
            let mut path = dir_path.clone();
            if !path.is_empty() {
                path.push(b'/');
            }
            path.extend_from_slice(name.to_bytes());
            let mut is_dir = entry.file_type() == FileType::Directory;
            if inos.contains(&entry.ino()) || entry.file_type() == FileType::Unknown {
                let Ok(st) = rustix::fs::statx(
                    &dir_fd,
                    name,
                    AtFlags::SYMLINK_NOFOLLOW,
                    StatxFlags::TYPE | StatxFlags::INO,
                ) else {
                    continue;
                };
                if let Some(i) = wanted.remove(&(InodeKey::of(&st).dev, st.stx_ino)) {
                    found.push((i, path.clone()));
                }
                is_dir = FileType::from_raw_mode(u32::from(st.stx_mode)) == FileType::Directory;
            }
            if is_dir {
                queue.push_back(path);
            }
        }
    }
    found
}

/// What the destination opens for `location`.
fn open_location(
    location: &Location, root: &PathFd, mount: Result<&OwnedFd, &rustix::io::Errno>,
) -> Result<OwnedFd, String> {
    match location {
        Location::Path(path) => open_beneath(root, path),
        Location::Handle(h) => {
            let mount =
                mount.map_err(|e| format!("cannot open the share for file handles: {e}"))?;
            let handle = FileHandle::from_parts(0, h.handle_type, &h.bytes)
                .ok_or("a file handle longer than any")?;
            handle
                .open(mount, OFlags::PATH | OFlags::NOFOLLOW)
                .map_err(|e| e.to_string())
        }
        Location::Lost(why) => Err(format!("the source lost it: {why}")),
    }
}

/// Whether `fd` is the inode whose handle the source sent (if it sent one).
fn verify(fd: &OwnedFd, expected: Option<&HandleBytes>) -> Result<(), String> {
    let Some(expected) = expected else {
        return Ok(());
    };
    match FileHandle::of(fd) {
        Ok(h) if handle_bytes(&h) == *expected => Ok(()),
        Ok(_) => {
            Err("the path leads to another inode than the source's (file handles differ)".into())
        }
        Err(e) => Err(format!("cannot take its file handle to verify it: {e}")),
    }
}

/// A handle as the migration carries it.
fn handle_state(fh: u64, handle: &Handle) -> HandleState {
    HandleState {
        fh,
        nodeid: handle.nodeid,
        flags: rustix::fs::fcntl_getfl(&handle.fd).map_or(0, |f| f.bits()),
        directory: handle.dir_cursor.is_some(),
    }
}

fn handle_bytes(handle: &FileHandle) -> HandleBytes {
    let (handle_type, bytes) = handle.parts();
    HandleBytes {
        handle_type,
        bytes: bytes.to_vec(),
    }
}

fn describe(location: &Location) -> String {
    match location {
        Location::Path(path) => format!("path \"{}\"", String::from_utf8_lossy(path)),
        Location::Handle(_) => "file handle".into(),
        Location::Lost(_) => "lost at the source".into(),
    }
}

fn host(errno: Errno) -> MigrationError {
    MigrationError::Host(std::io::Error::from_raw_os_error(errno.0))
}

#[cfg(test)]
mod tests {
    use super::relative_to;

    #[test]
    fn paths_are_taken_relative_to_the_share() {
        assert_eq!(relative_to(b"/a/b", b"/"), Some(b"a/b".to_vec()));
        assert_eq!(
            relative_to(b"/srv/share/a", b"/srv/share"),
            Some(b"a".to_vec())
        );
        assert_eq!(relative_to(b"/srv/share", b"/srv/share"), Some(Vec::new()));
        // A sibling whose name starts with the share's is outside it.
        assert_eq!(relative_to(b"/srv/shared/a", b"/srv/share"), None);
        assert_eq!(relative_to(b"/srv/share/a (deleted)", b"/srv/share"), None);
        assert_eq!(relative_to(b"/elsewhere/a", b"/srv/share"), None);
    }
}
