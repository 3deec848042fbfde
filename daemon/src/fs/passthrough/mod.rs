//! Passthrough filesystem over the shared directory.
//!
//! The implementation of [`crate::fs::FileSystem`] over a host directory;
//! the contract of each operation is documented on the trait.
//!
//! # How it is built
//! - `inode`: every inode the guest knows is an `O_PATH | O_NOFOLLOW` fd,
//!   keyed by (st_dev, st_ino, mount id) so one host inode has one nodeid,
//!   refcounted by the guest's lookup count. The root is nodeid 1 and is
//!   never dropped.
//! - `fd_cache`, `file_handle`: with `--inode-file-handles` (prefer by
//!   default) an inode also has a file handle, and its fd may be closed
//!   when more than the budget (half of RLIMIT_NOFILE) are open, to be
//!   opened again by the handle when next needed.
//! - `handle`: OPEN / CREATE / OPENDIR results, real fds the guest names by
//!   `fh`.
//! - Names (`entry_ops`) are resolved one component at a time relative
//!   to the parent's O_PATH fd with `openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_MAGICLINKS)` and `O_NOFOLLOW`, so no lookup can leave the
//!   shared directory through a symlink or `..`.
//! - `reopen`: an inode is opened for I/O through a kept-open
//!   `/proc/self/fd` directory (the magic link to our own fd); symlinks are
//!   never reopened (ELOOP) and special files never opened (ENXIO), so a
//!   FIFO cannot block a queue worker and a device node cannot be driven
//!   from the guest.
//! - `creds`: creation operations run under the caller's fsuid/fsgid.
//!
//! Each operation is implemented where its trait of [`crate::fs::ops`] is:
//! `entry_ops` ([`crate::fs::EntryOps`]: names), `attr_ops` (attributes,
//! ACCESS, STATFS), `file_ops` (open files), `dir_ops` (directory handles)
//! and `xattr_ops`; this file keeps the types and the session-wide
//! [`FileSystem`] methods.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::errno::Errno;
use crate::fs::FileSystem;
pub use crate::fs::{Context, MapAccess};
use crate::migration::{FsState, ImportSummary, MigrationConfig, MigrationError, OnError};
pub use crate::session::Negotiated;
use crate::session::Session;

mod attr;
mod attr_ops;
mod creds;
mod dir_ops;
mod entry_ops;
mod fd_cache;
mod file_handle;
mod file_ops;
mod handle;
mod inode;
mod migrate;
mod reopen;
mod xattr_ops;

#[cfg(test)]
mod tests;

use fd_cache::{FdCache, PathFd};
use handle::HandleTable;
use inode::{Inode, InodeTable};
use migrate::MigrationPrep;

/// How inodes are referenced (`--inode-file-handles`, as virtiofsd).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum InodeFileHandles {
    /// O_PATH descriptors only, one open per inode the guest knows.
    Never,
    /// File handles where the filesystem makes them and the daemon may open
    /// them (CAP_DAC_READ_SEARCH); O_PATH descriptors otherwise.
    #[default]
    Prefer,
    /// Deprecated name of `prefer`.
    Fallback,
    /// File handles, or the daemon does not start.
    Mandatory,
}

/// `--inode-file-handles=mandatory` where handles do not work.
#[derive(Debug, thiserror::Error)]
#[error("--inode-file-handles=mandatory, but file handles cannot be used here")]
pub struct NoFileHandles(#[source] pub std::io::Error);

/// How long the guest may cache names and attributes, and what OPEN tells
/// the guest's page cache (`--cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum CachePolicy {
    /// No caching: timeouts 0, files opened with FOPEN_DIRECT_IO.
    Never,
    /// Cache for 1 second; the guest revalidates on open.
    #[default]
    Auto,
    /// Cache for a day; FOPEN_KEEP_CACHE on open.
    Always,
    /// Names and attributes cached for a day, file data not (files opened
    /// with FOPEN_DIRECT_IO, directories cached).
    Metadata,
}

impl CachePolicy {
    /// Seconds the guest may cache an entry or its attributes.
    pub fn timeout_secs(self) -> u64 {
        match self {
            CachePolicy::Never => 0,
            CachePolicy::Auto => 1,
            CachePolicy::Always | CachePolicy::Metadata => 86_400,
        }
    }
}

/// Configuration of the passthrough filesystem.
#[derive(Debug, Clone)]
pub struct FsConfig {
    /// The host directory that becomes the guest's root.
    pub shared_dir: std::path::PathBuf,
    /// Cache policy.
    pub cache: CachePolicy,
    /// Refuse every modifying operation with EROFS.
    pub readonly: bool,
    /// Serve extended attributes (otherwise the xattr operations return ENOSYS).
    pub xattr: bool,
    /// `--xattrmap`: attribute names mapped between guest and host.
    pub xattrmap: Option<crate::fs::xattrmap::XattrMap>,
    /// Keep the guest's O_DIRECT (`--allow-direct-io`); dropped otherwise.
    pub allow_direct_io: bool,
    /// Keep the guest's O_NOATIME (`--preserve-noatime`); dropped otherwise.
    pub preserve_noatime: bool,
    /// Mark directories on another mount than their parent with
    /// ATTR_SUBMOUNT in LOOKUP and READDIRPLUS replies (`--announce-submounts`,
    /// the default; a guest that did not negotiate SUBMOUNTS ignores it).
    pub announce_submounts: bool,
    /// Which files the guest should access through the DAX window when it
    /// mounts with `dax=inode` (reported with ATTR_DAX).
    pub inode_dax: InodeDaxPolicy,
    /// Whether inodes get file handles, so their fds can be closed.
    pub inode_file_handles: InodeFileHandles,
    /// Whether the sandbox lets the daemon take and open file handles
    /// (`Config::file_handle_calls`): a migration that carries or checks
    /// them is refused here otherwise, rather than killed by seccomp.
    pub handle_calls: bool,
    /// `--translate-uid`/`--translate-gid` (identity by default).
    pub ids: crate::fs::idmap::IdMaps,
}

/// Per-inode DAX policy (`--inode-dax`), applied to regular files when the
/// guest negotiated HAS_INODE_DAX (it mounted with `dax=inode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InodeDaxPolicy {
    /// No file uses the window.
    Never,
    /// Every regular file uses the window.
    #[default]
    Always,
    /// Regular files of at least this many bytes use the window; smaller
    /// ones go through the guest page cache.
    MinSize(u64),
}

impl InodeDaxPolicy {
    /// Whether a regular file of `size` bytes should use the window.
    pub fn applies(self, size: u64) -> bool {
        match self {
            Self::Never => false,
            Self::Always => true,
            Self::MinSize(min) => size >= min,
        }
    }
}

/// The passthrough filesystem.
///
/// Locking: the inode table and the handle table each sit behind their own
/// `RwLock` (documented at `InodeTable` and `HandleTable`); no code path
/// holds both at once. The session's features are read from the
/// [`Session`] (its own lock, see there). Everything else is immutable
/// after [`PassthroughFs::new`].
#[derive(Debug)]
pub struct PassthroughFs {
    config: FsConfig,
    /// Inodes the guest holds references to (nodeid → O_PATH fd).
    inodes: InodeTable,
    /// The inodes' fds: how many are open, which to close, the handles
    /// to open them again by (its own locks, see there).
    fds: FdCache,
    /// Open files and directories (fh → fd).
    handles: HandleTable,
    /// `/proc/self/fd`, the directory through which inodes are reopened.
    proc_self_fd: OwnedFd,
    /// Whether creation operations switch to the caller's fsuid/fsgid
    /// (only possible, and only needed, when the daemon runs as root, of
    /// the host or of its own user namespace with `--uid-map`).
    switch_creds: bool,
    /// The host name `--xattrmap` gives `security.capability`, when it
    /// renames it (see `kill_mapped_capability`).
    mapped_capability: Option<std::ffi::CString>,
    /// The FUSE session served: the features agreed in INIT (written by the
    /// dispatcher, read here).
    session: Arc<Session>,
    /// What a live migration prepared (its own locks, see there).
    migration: MigrationPrep,
}

impl PassthroughFs {
    /// Opens the shared directory.
    ///
    /// Fails if the directory cannot be opened, `/proc/self/fd` is missing,
    /// or the kernel lacks `openat2` (Linux 5.6) — without it names could
    /// not be resolved safely.
    pub fn new(config: FsConfig) -> std::io::Result<Self> {
        Self::with_session(config, Arc::new(Session::new()))
    }

    /// Like [`Self::new`], serving `session` (whose owner, the dispatcher,
    /// writes it at INIT and at the session's end).
    pub fn with_session(config: FsConfig, session: Arc<Session>) -> std::io::Result<Self> {
        Self::with_budget(config, session, fd_budget())
    }

    /// Like [`Self::with_session`], keeping at most `budget` inode fds
    /// open (of inodes with file handles).
    fn with_budget(
        config: FsConfig, session: Arc<Session>, budget: usize,
    ) -> std::io::Result<Self> {
        let root = rustix::fs::open(
            &config.shared_dir,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        // Probe openat2 now so that an old kernel fails at startup, not on
        // the guest's first LOOKUP.
        rustix::fs::openat2(
            &root,
            c".",
            OFlags::PATH | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )?;
        // Opened by the sandbox before it hid the host's /proc.
        let proc_self_fd = crate::process::fds::proc_self_fd()?.try_clone_to_owned()?;
        let root_stat = attr::statx_fd(&root)?;
        let use_handles = use_handles(config.inode_file_handles, &root, &proc_self_fd)?;
        let fds = FdCache::new(budget, use_handles);
        // The share's mount is known from the start.
        fds.handle_of(&root, &proc_self_fd);
        let inodes = InodeTable::new(fds.wrap(root), &root_stat);
        let mapped_capability = config
            .xattrmap
            .as_ref()
            .and_then(|map| map.remapped_capability());
        Ok(Self {
            config,
            mapped_capability,
            inodes,
            fds,
            handles: HandleTable::default(),
            proc_self_fd,
            switch_creds: rustix::process::geteuid().is_root(),
            session,
            migration: MigrationPrep::default(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &FsConfig {
        &self.config
    }

    /// The features agreed in INIT.
    pub(crate) fn negotiated(&self) -> Negotiated {
        self.session.negotiated()
    }

    /// `inode`'s O_PATH fd, opened again by its handle if the budget closed
    /// it (ESTALE if the inode is gone from the host).
    fn path_fd(&self, inode: &Arc<Inode>) -> Result<Arc<PathFd>, Errno> {
        self.fds.fd(inode)
    }

    /// Whether inodes are referenced by file handles.
    pub fn uses_file_handles(&self) -> bool {
        self.fds.uses_handles()
    }

    /// Inode fds open now (the root's included).
    pub fn open_inode_fds(&self) -> usize {
        self.fds.open_count()
    }
}

/// How many inode fds may stay open: half the soft RLIMIT_NOFILE, the
/// other half left for open files, queues and the daemon's own.
fn fd_budget() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    limit.map_or(usize::MAX / 2, |n| {
        usize::try_from(n / 2).unwrap_or(usize::MAX / 2)
    })
}

/// Whether `mode` and the host let inodes be referenced by file handles
/// (one is taken of the share's `root` and opened again).
fn use_handles(
    mode: InodeFileHandles, root: &OwnedFd, proc_self_fd: &OwnedFd,
) -> std::io::Result<bool> {
    let probed = || {
        file_handle::probe(root, proc_self_fd).map_err(|e| std::io::Error::from_raw_os_error(e.0))
    };
    match mode {
        InodeFileHandles::Never => Ok(false),
        InodeFileHandles::Prefer | InodeFileHandles::Fallback => match probed() {
            Ok(()) => Ok(true),
            Err(error) => {
                tracing::info!(%error, "file handles unavailable: every inode keeps an O_PATH descriptor");
                Ok(false)
            }
        },
        InodeFileHandles::Mandatory => match probed() {
            Ok(()) => Ok(true),
            Err(error) => Err(std::io::Error::other(NoFileHandles(error))),
        },
    }
}

impl FileSystem for PassthroughFs {
    fn counts(&self) -> (usize, usize) {
        (self.inodes.len(), self.handles.len())
    }

    fn descriptor_counts(&self) -> (u64, u64) {
        (self.fds.open_count() as u64, self.fds.reopen_count())
    }

    fn destroy(&self) {
        self.handles.clear();
        self.inodes.clear_except_root();
    }

    fn session(&self) -> &Arc<Session> {
        &self.session
    }

    fn migration_started(&self, started: bool) {
        match started {
            true => self.prepare_migration(),
            false => self.cancel_migration(),
        }
    }

    fn export_state(&self, config: &MigrationConfig) -> Result<FsState, MigrationError> {
        self.export(config)
    }

    fn import_state(
        &self, state: FsState, on_error: OnError,
    ) -> Result<ImportSummary, MigrationError> {
        self.import(state, on_error)
    }
}
