//! DAX glue: FUSE_SETUPMAPPING / FUSE_REMOVEMAPPING through the window index
//! and the VMM mapper, plus invalidation, sync and reset.
//!
//! The index ([`dax_window::Window`]) decides what may happen to which slots
//! and in which order; [`VmmMapper`] carries it out in the VMM. Nothing here
//! holds a lock across a VMM round trip except the index's own entry locks.

pub mod legacy;
mod metrics;
mod vmm_mapper;

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use dax_window::{
    InodeId, MapRequest, MappingRecord, SetupOutcome, Window, WindowGeometry, PAGE_SIZE,
};
use daxfsd_protocol::abi::{RemoveMappingOne, SetupMappingIn, SETUPMAPPING_FLAG_WRITE};
use daxfsd_protocol::request::Records;
use vhost::vhost_user::Backend;

pub use self::metrics::{DaxMetrics, DaxMetricsSnapshot};
pub use self::vmm_mapper::{DaxProtocol, VmmMapError, VmmMapper, WINDOW_SHMID};
use crate::errno::Errno;
use crate::ratelimit::RateLimit;

/// Why the DAX window could not be set up at start-up.
#[derive(Debug, thiserror::Error)]
pub enum DaxSetupError {
    /// The size is not a valid window size.
    #[error("invalid --cache-size")]
    Geometry(#[source] dax_window::GeometryError),
    /// The placeholder memfd could not be created.
    #[error("cannot create the placeholder memory for the window")]
    Placeholder(#[source] std::io::Error),
}

/// A SETUPMAPPING whose file range no mapping can have.
#[derive(Debug, thiserror::Error)]
#[error(
    "file range {foffset:#x}+{len:#x} is not page aligned or ends past the largest file offset"
)]
struct FileRangeError {
    foffset: u64,
    len: u64,
}

/// Whether `[foffset, foffset + len)` can be mapped: page aligned, and ending
/// within `off_t` (mmap refuses larger offsets).
fn file_range_is_valid(foffset: u64, len: u64) -> bool {
    foffset % PAGE_SIZE == 0
        && foffset
            .checked_add(len)
            .is_some_and(|end| i64::try_from(end).is_ok())
}

/// The DAX window of one device.
#[derive(Debug)]
pub struct Dax {
    window: Window,
    mapper: VmmMapper,
    metrics: DaxMetrics,
    refusal_log: RateLimit,
    /// Set when a session ended without the chance to unmap (device reset in
    /// the frontend-message handler, disconnect): the index still records
    /// what the VMM may map, to be unmapped before the next session maps
    /// anything. Checked with Acquire; cleared under `reclaim_lock`.
    stale: AtomicBool,
    /// Serialises reclaiming a stale window; held only while reclaiming.
    reclaim_lock: Mutex<()>,
    /// The vhost-user socket, by which the legacy channel is found.
    socket_path: PathBuf,
}

impl Dax {
    /// A window of `size` bytes (a multiple of 2 MiB), mapped with
    /// `protocol` by the frontend connected to `socket_path`.
    pub fn new(
        size: u64,
        protocol: DaxProtocol,
        socket_path: PathBuf,
    ) -> Result<Self, DaxSetupError> {
        let geometry = WindowGeometry::new(size).map_err(DaxSetupError::Geometry)?;
        Ok(Self {
            window: Window::new(geometry),
            mapper: VmmMapper::new(size, protocol, true).map_err(DaxSetupError::Placeholder)?,
            socket_path,
            metrics: DaxMetrics::default(),
            refusal_log: RateLimit::per_second(10),
            stale: AtomicBool::new(false),
            reclaim_lock: Mutex::new(()),
        })
    }

    /// Window size in bytes.
    pub fn size(&self) -> u64 {
        self.window.geometry().size()
    }

    /// The index (tests, metrics).
    pub fn window(&self) -> &Window {
        &self.window
    }

    /// Counters for the metrics file.
    pub fn metrics(&self) -> DaxMetricsSnapshot {
        self.metrics.snapshot(&self.window)
    }

    /// The DAX protocol the frontend speaks.
    pub fn protocol(&self) -> DaxProtocol {
        self.mapper.protocol()
    }

    /// Installs the backend channel the frontend opened (SET_BACKEND_REQ_FD).
    pub fn set_channel(&self, channel: Option<Backend>) {
        self.mapper.set_channel(channel, &self.socket_path);
    }

    /// Serves FUSE_SETUPMAPPING for `nodeid`. `open` opens the file to map
    /// (by handle, or by nodeid when the guest sends fh = -1), read-write
    /// when the mapping is writable.
    pub fn setup(
        &self,
        nodeid: u64,
        arg: &SetupMappingIn,
        open: impl FnOnce(bool) -> Result<File, Errno>,
    ) -> Result<(), Errno> {
        self.reclaim_if_stale();
        let writable = arg.flags & SETUPMAPPING_FLAG_WRITE != 0;
        // Validate the window and file ranges before touching the file or the
        // window: a bad request leaves everything as it was (the index would
        // find a bad file range only after unmapping what is in the way).
        if let Err(e) = self.window.geometry().range(arg.moffset, arg.len) {
            return Err(self.refuse("SETUPMAPPING", &e, Errno::EINVAL));
        }
        if !file_range_is_valid(arg.foffset, arg.len) {
            let e = FileRangeError {
                foffset: arg.foffset,
                len: arg.len,
            };
            return Err(self.refuse("SETUPMAPPING", &e, Errno::EINVAL));
        }
        let file = open(writable)?;
        let request = MapRequest {
            moffset: arg.moffset,
            len: arg.len,
            inode: InodeId(nodeid),
            file: &file,
            foffset: arg.foffset,
            writable,
        };
        match self.window.setup_mapping(&self.mapper, &request) {
            Ok(outcome) => {
                self.metrics.record_setup(nodeid, arg.foffset, &outcome);
                if let SetupOutcome::Mapped { replaced, .. } = &outcome {
                    self.metrics.record_removed(replaced);
                }
                Ok(())
            }
            Err(e) if e.is_invalid_request() => Err(self.refuse("SETUPMAPPING", &e, Errno::EINVAL)),
            Err(e) => Err(self.refuse("SETUPMAPPING", &e, Errno::EIO)),
        }
    }

    /// Serves FUSE_REMOVEMAPPING. Every range is checked against the window
    /// first, so a batch holding a malformed range is refused (EINVAL) before
    /// anything is unmapped. Then every range in turn; a failure that depends
    /// on the window's state (a range cutting a mapping, a VMM refusal) ends
    /// the request, and ranges before it stay removed, as the guest expects
    /// of a batch it will not retry partially.
    pub fn remove(&self, ranges: Records<'_, RemoveMappingOne>) -> Result<(), Errno> {
        self.reclaim_if_stale();
        for range in ranges {
            if let Err(e) = self.window.geometry().range(range.moffset, range.len) {
                return Err(self.refuse("REMOVEMAPPING", &e, Errno::EINVAL));
            }
        }
        for range in ranges {
            match self
                .window
                .remove_mapping(&self.mapper, range.moffset, range.len)
            {
                Ok(removed) => self.metrics.record_removed(&removed),
                Err(e) if e.is_invalid_request() => {
                    return Err(self.refuse("REMOVEMAPPING", &e, Errno::EINVAL))
                }
                Err(e) => return Err(self.refuse("REMOVEMAPPING", &e, Errno::EIO)),
            }
        }
        Ok(())
    }

    /// Tears down every mapping of `nodeid` at or beyond file offset `from`
    /// (the file shrank to `from`), putting zero placeholders in their place.
    /// Returns the records zapped.
    pub fn invalidate(&self, nodeid: u64, from: u64) -> Vec<MappingRecord> {
        let report = self.window.invalidate(&self.mapper, InodeId(nodeid), from);
        for failure in &report.failures {
            tracing::error!(nodeid, error = %failure, "DAX invalidation incomplete");
        }
        self.metrics.record_invalidated(&report.zapped);
        report.zapped
    }

    /// Generation to pass to [`Dax::synced`] once a sync of `nodeid` started
    /// now has completed.
    pub fn sync_point(&self) -> u64 {
        self.window.current_generation()
    }

    /// Whether `nodeid` has writable mappings made since its last sync.
    pub fn is_dirty(&self, nodeid: u64) -> bool {
        !self.window.dirty_mappings(InodeId(nodeid)).is_empty()
    }

    /// Clears the dirty marks of `nodeid` up to `through` (from [`Dax::sync_point`]).
    pub fn synced(&self, nodeid: u64, through: u64) -> usize {
        self.window.clear_dirty(InodeId(nodeid), through)
    }

    /// Empties the window (device reset, disconnect): every waiter is woken
    /// and every mapping unmapped while the channel still exists.
    pub fn reset(&self) {
        let report = self.window.reset(&self.mapper);
        if !report.removed.is_empty() || !report.failures.is_empty() {
            tracing::info!(
                mappings = report.removed.len(),
                failed_unmaps = report.failures.len(),
                "DAX window reset"
            );
        }
    }

    /// Marks the window's records as belonging to a session that ended
    /// without unmapping them; see [`Dax::reclaim_if_stale`].
    pub fn mark_stale(&self) {
        self.stale.store(true, Ordering::Release);
    }

    /// Unmaps whatever an earlier session left in the window before this
    /// session maps anything. Unmaps that fail (a new VMM that never had
    /// the mapping) are forgotten with the records.
    pub fn reclaim_if_stale(&self) {
        if !self.stale.load(Ordering::Acquire) {
            return;
        }
        let _reclaiming = self.reclaim_lock.lock().unwrap_or_else(|e| e.into_inner());
        if self.stale.load(Ordering::Acquire) {
            self.reset();
            self.stale.store(false, Ordering::Release);
        }
    }

    fn refuse(&self, what: &str, error: &dyn std::error::Error, errno: Errno) -> Errno {
        self.metrics.refused();
        if let Some(suppressed) = self.refusal_log.check() {
            tracing::warn!(suppressed, %errno, "{what} refused: {}", crate::error_chain(error));
        }
        errno
    }
}
