//! DAX glue: FUSE_SETUPMAPPING / FUSE_REMOVEMAPPING through the window index
//! and the VMM mapper, plus invalidation, sync and reset.
//!
//! The index ([`dax_window::Window`]) decides what may happen to which slots
//! and in which order; [`VmmMapper`] carries it out in the VMM. Nothing here
//! holds a lock across a VMM round trip except the index's own entry locks.

mod frontend_caps;
mod host_watch;
pub mod legacy;
mod metrics;
mod session;
mod trace;
mod vmm_mapper;
mod window_io;

use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use dax_window::{
    InodeId, MapRequest, MappingRecord, SetupError, SetupOutcome, Window, WindowGeometry, PAGE_SIZE,
};
use daxfsd_protocol::abi::{RemoveMappingOne, SetupMappingIn, SETUPMAPPING_FLAG_WRITE};
use daxfsd_protocol::request::Records;
use vhost::vhost_user::Backend;

use self::frontend_caps::ProbeFiles;
pub use self::frontend_caps::{FrontendMapCaps, ProbeSetupError};
use self::host_watch::{HostWatcher, MappedFiles};
pub use self::metrics::{DaxMetrics, DaxMetricsSnapshot, RepairSource};
use self::session::{access_for, covers_partial_tail, ForgetDropped, PartialTailError};
pub use self::trace::{DaxTrace, TraceOpenError};
pub use self::vmm_mapper::{DaxProtocol, VmmMapError, VmmMapper, WINDOW_SHMID};
pub use self::window_io::WindowIoError;
use crate::errno::Errno;
use crate::fs::MapAccess;
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
    /// The descriptors of the frontend probe could not be made.
    #[error("cannot prepare the frontend probe")]
    Probe(#[source] ProbeSetupError),
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

/// A read mapping refused because the frontend needs a writable descriptor
/// for it and the caller may not open the file for writing.
#[derive(Debug, thiserror::Error)]
#[error(
    "nodeid {nodeid}: this frontend maps only writable descriptors, and the caller may not \
     open the file for writing"
)]
struct ReadOnlyFdError {
    nodeid: u64,
}

/// Whether `[foffset, foffset + len)` can be mapped: page aligned, and ending
/// within `off_t` (mmap refuses larger offsets).
fn file_range_is_valid(foffset: u64, len: u64) -> bool {
    foffset % PAGE_SIZE == 0
        && foffset
            .checked_add(len)
            .is_some_and(|end| i64::try_from(end).is_ok())
}

/// Environment variable that switches off keeping mappings within their
/// files' sizes (no placeholders past the end, no repair after truncations,
/// no host watch), so tests can show that a shrunk mapped file then kills
/// the VMM with SIGBUS. Honoured by debug builds only; a release build
/// ignores it.
pub const NO_REPAIR_ENV: &str = "DAXFSD_TEST_NO_DAX_REPAIR";

fn repair_switched_off() -> bool {
    cfg!(debug_assertions) && std::env::var_os(NO_REPAIR_ENV).is_some_and(|value| value == "1")
}

/// What the request paths and the host watcher share.
#[derive(Debug)]
struct Core {
    window: Window,
    mapper: VmmMapper,
    metrics: DaxMetrics,
    /// Files of the inodes with mappings (for repairs) and their watches.
    files: MappedFiles,
    /// Whether mappings are kept within their files' sizes.
    repair: bool,
    /// `--dax-trace`.
    trace: Option<Arc<DaxTrace>>,
}

impl Core {
    /// Repairs the mappings of `nodeid` to the current size of its file.
    fn repair_to_current_size(&self, nodeid: u64, source: RepairSource) {
        let Some(file) = self.files.file(nodeid) else {
            return;
        };
        match rustix::fs::fstat(&*file) {
            Ok(stat) => self.repair(
                nodeid,
                &file,
                u64::try_from(stat.st_size).unwrap_or(0),
                source,
            ),
            Err(error) => tracing::warn!(nodeid, %error, "cannot stat a mapped file to repair it"),
        }
    }

    /// Repairs the mappings of `nodeid` (mapped from `file`) to `size`
    /// (placed by whole pages when the frontend cannot map a partial last
    /// page: [`VmmMapper::mappable_size`]).
    fn repair(&self, nodeid: u64, file: &File, size: u64, source: RepairSource) {
        let report = self.window.repair(
            &self.mapper,
            InodeId(nodeid),
            file,
            self.mapper.mappable_size(size),
        );
        for failure in &report.failures {
            tracing::error!(nodeid, size, error = %crate::error_chain(failure), "DAX repair incomplete");
        }
        if report.changed() {
            tracing::debug!(
                nodeid,
                size,
                ?source,
                clipped = report.clipped,
                restored = report.restored,
                "DAX mappings repaired"
            );
        }
        self.metrics.record_repair(source, &report);
        if let Some(trace) = &self.trace {
            trace.event(
                "repair",
                &[
                    ("nodeid", nodeid.into()),
                    ("size", size.into()),
                    (
                        "source",
                        match source {
                            RepairSource::Daemon => "daemon",
                            RepairSource::Host => "host",
                        }
                        .into(),
                    ),
                    ("records", (report.records.len() as u64).into()),
                    ("clipped", report.clipped.into()),
                    ("restored", report.restored.into()),
                    ("failures", (report.failures.len() as u64).into()),
                ],
            );
        }
    }
}

/// What a SETUPMAPPING found out, for its trace line.
#[derive(Debug, Default)]
struct SetupSeen {
    path: Option<String>,
    size: Option<u64>,
    outcome: Option<&'static str>,
}

/// The DAX window of one device.
#[derive(Debug)]
pub struct Dax {
    core: Arc<Core>,
    /// Repairs mappings after host-side changes; `None` when off.
    _watcher: Option<HostWatcher>,
    refusal_log: RateLimit,
    /// Set when a session ended without the chance to unmap (device reset in
    /// the frontend-message handler, disconnect): the index still records
    /// what the VMM may map, to be unmapped before the next session maps
    /// anything. Checked with Acquire; cleared under `reclaim_lock`.
    stale: AtomicBool,
    /// Serialises reclaiming a stale window; held only while reclaiming.
    reclaim_lock: Mutex<()>,
    /// How many times the frontend stopped a queue (GET_VRING_BASE), counted
    /// before the stop is answered. A request that sees it change while it
    /// waits for the VMM was cut short by the stop (see [`Dax::queue_stopping`]).
    queue_stops: AtomicU64,
    /// The vhost-user socket, by which the legacy channel is found.
    socket_path: PathBuf,
    /// What the probe at INIT maps.
    probe_files: ProbeFiles,
}

impl Dax {
    /// A window of `size` bytes (a multiple of 2 MiB), mapped with
    /// `protocol` by the frontend connected to `socket_path`.
    pub fn new(
        size: u64, protocol: DaxProtocol, socket_path: PathBuf,
    ) -> Result<Self, DaxSetupError> {
        Self::with_trace(size, protocol, socket_path, None)
    }

    /// [`Dax::new`] writing every DAX event to `trace` (`--dax-trace`).
    pub fn with_trace(
        size: u64, protocol: DaxProtocol, socket_path: PathBuf, trace: Option<Arc<DaxTrace>>,
    ) -> Result<Self, DaxSetupError> {
        let geometry = WindowGeometry::new(size).map_err(DaxSetupError::Geometry)?;
        let probe_files = ProbeFiles::new().map_err(DaxSetupError::Probe)?;
        let repair = !repair_switched_off();
        if !repair {
            tracing::warn!(
                "{NO_REPAIR_ENV}=1: DAX repair switched off (test builds only); \
                 a mapped file that shrinks can kill the VMM with SIGBUS"
            );
        }
        let core = Arc::new(Core {
            window: Window::new(geometry),
            mapper: VmmMapper::new(size, protocol, repair, trace.clone())
                .map_err(DaxSetupError::Placeholder)?,
            metrics: DaxMetrics::default(),
            files: MappedFiles::new(repair),
            repair,
            trace,
        });
        let watcher = if core.files.watching() {
            HostWatcher::start(Arc::clone(&core))
                .map_err(|error| {
                    tracing::warn!(%error, "cannot watch mapped files: host-side truncations are not repaired");
                })
                .ok()
        } else {
            None
        };
        Ok(Self {
            core,
            _watcher: watcher,
            socket_path,
            refusal_log: RateLimit::per_second(10),
            stale: AtomicBool::new(false),
            reclaim_lock: Mutex::new(()),
            queue_stops: AtomicU64::new(0),
            probe_files,
        })
    }

    /// Window size in bytes.
    pub fn size(&self) -> u64 {
        self.core.window.geometry().size()
    }

    /// The index (tests, metrics).
    pub fn window(&self) -> &Window {
        &self.core.window
    }

    /// Counters for the metrics file.
    pub fn metrics(&self) -> DaxMetricsSnapshot {
        let caps = self.frontend_caps();
        DaxMetricsSnapshot {
            mapped_files: self.core.files.len() as u64,
            unwatched_files: self.core.files.unwatched(),
            frontend_probed: u64::from(self.frontend_probed()),
            frontend_partial_tail: u64::from(caps.partial_tail),
            frontend_read_only_fd: u64::from(caps.read_only_fd),
            ..self.core.metrics.snapshot(&self.core.window)
        }
    }

    /// The DAX protocol the frontend speaks.
    pub fn protocol(&self) -> DaxProtocol {
        self.core.mapper.protocol()
    }

    /// Installs the backend channel the frontend opened (SET_BACKEND_REQ_FD).
    pub fn set_channel(&self, channel: Option<Backend>) {
        self.core.mapper.set_channel(channel, &self.socket_path);
    }

    /// Serves FUSE_SETUPMAPPING `unique` for `nodeid`. `open` opens the
    /// file to map (by handle, or by nodeid when the guest sends fh = -1)
    /// with the access it is given: read-write when the mapping is
    /// writable, and for a read mapping too when the frontend cannot map
    /// read-only descriptors (then only for a caller who may write the
    /// file: `open` refuses with EACCES otherwise).
    pub fn setup(
        &self, unique: u64, nodeid: u64, arg: &SetupMappingIn,
        open: impl FnOnce(MapAccess) -> Result<File, Errno>,
    ) -> Result<(), Errno> {
        let mut seen = SetupSeen::default();
        let stops = self.queue_stops.load(Ordering::SeqCst);
        let result = self.setup_inner(nodeid, arg, open, &mut seen, stops);
        if let Some(trace) = &self.core.trace {
            trace.event(
                "setup",
                &[
                    ("unique", unique.into()),
                    ("nodeid", nodeid.into()),
                    ("fh", arg.fh.into()),
                    ("foffset", arg.foffset.into()),
                    ("len", arg.len.into()),
                    ("flags", arg.flags.into()),
                    ("moffset", arg.moffset.into()),
                    ("path", seen.path.as_deref().into()),
                    ("size", seen.size.into()),
                    ("result", trace::result_name(result).as_ref().into()),
                    ("outcome", seen.outcome.into()),
                ],
            );
        }
        result
    }

    fn setup_inner(
        &self, nodeid: u64, arg: &SetupMappingIn,
        open: impl FnOnce(MapAccess) -> Result<File, Errno>, seen: &mut SetupSeen, stops: u64,
    ) -> Result<(), Errno> {
        self.reclaim_if_stale();
        let writable = arg.flags & SETUPMAPPING_FLAG_WRITE != 0;
        // Validate the window and file ranges before touching the file or the
        // window: a bad request leaves everything as it was (the index would
        // find a bad file range only after unmapping what is in the way).
        self.check_setup_ranges(arg)?;
        // Shared with the registry of mapped files, not duplicated.
        let file = Arc::new(self.open_for_setup(nodeid, arg, writable, open)?);
        let tracing = self.core.trace.as_deref();
        if let Some(trace) = tracing {
            seen.path = trace.relative_path(&file);
        }
        let request = MapRequest {
            moffset: arg.moffset,
            len: arg.len,
            inode: InodeId(nodeid),
            file: &*file,
            foffset: arg.foffset,
            writable,
        };
        let core = &*self.core;
        // Held (and watched) before the map reads the file's size, so a
        // host-side truncation after that read is seen and repaired.
        let pin = core
            .repair
            .then(|| core.files.pin(&core.window, nodeid, &file, writable));
        let result = core.window.setup_mapping(&core.mapper, &request);
        drop(pin);
        if tracing.is_some() {
            seen.size = rustix::fs::fstat(&file)
                .ok()
                .map(|stat| u64::try_from(stat.st_size).unwrap_or(0));
            seen.outcome = result.as_ref().ok().map(|outcome| match outcome {
                SetupOutcome::Mapped { .. } => "mapped",
                SetupOutcome::Upgraded { .. } => "upgraded",
                SetupOutcome::AlreadyMapped { .. } => "already",
            });
        }
        self.record_setup(nodeid, arg.foffset, result, stops)
    }

    /// The window and file ranges of a SETUPMAPPING, checked.
    fn check_setup_ranges(&self, arg: &SetupMappingIn) -> Result<(), Errno> {
        if let Err(e) = self.core.window.geometry().range(arg.moffset, arg.len) {
            return Err(self.refuse("SETUPMAPPING", &e, Errno::EINVAL));
        }
        if !file_range_is_valid(arg.foffset, arg.len) {
            let e = FileRangeError {
                foffset: arg.foffset,
                len: arg.len,
            };
            return Err(self.refuse("SETUPMAPPING", &e, Errno::EINVAL));
        }
        Ok(())
    }

    /// Opens the file of a SETUPMAPPING with the access the frontend needs,
    /// refusing what the frontend could not map.
    fn open_for_setup(
        &self, nodeid: u64, arg: &SetupMappingIn, writable: bool,
        open: impl FnOnce(MapAccess) -> Result<File, Errno>,
    ) -> Result<File, Errno> {
        let caps = self.frontend_caps();
        let file = match open(access_for(writable, caps)) {
            Err(Errno::EACCES) if !writable && !caps.read_only_fd => {
                let e = ReadOnlyFdError { nodeid };
                return Err(self.refuse("SETUPMAPPING", &e, Errno::EACCES));
            }
            opened => opened?,
        };
        if !caps.partial_tail {
            // Refused here rather than by the frontend: the guest gets EIO
            // either way, without a round trip or a frontend error message.
            let size = rustix::fs::fstat(&file)
                .map(|stat| u64::try_from(stat.st_size).unwrap_or(0))
                .map_err(Errno::from)?;
            if covers_partial_tail(arg.foffset, arg.len, size) {
                let e = PartialTailError {
                    foffset: arg.foffset,
                    len: arg.len,
                    size,
                };
                return Err(self.refuse("SETUPMAPPING", &e, Errno::EIO));
            }
        }
        Ok(file)
    }

    /// Counts a SETUPMAPPING's result and releases what it replaced; a
    /// failure becomes the guest's errno. `stops` is the queue-stop count
    /// when the request began.
    fn record_setup(
        &self, nodeid: u64, foffset: u64, result: Result<SetupOutcome, SetupError<VmmMapError>>,
        stops: u64,
    ) -> Result<(), Errno> {
        let core = &*self.core;
        match result {
            Ok(outcome) => {
                core.metrics.record_setup(nodeid, foffset, &outcome);
                if let SetupOutcome::Mapped { replaced, .. } = &outcome {
                    core.metrics.record_removed(replaced);
                    self.release_files(replaced);
                }
                Ok(())
            }
            Err(e) => {
                // What was unmapped before the failure is not itemised.
                core.files.sweep(&core.window);
                if e.is_invalid_request() {
                    Err(self.refuse("SETUPMAPPING", &e, Errno::EINVAL))
                } else {
                    Err(self.refuse_vmm("SETUPMAPPING", &e, stops))
                }
            }
        }
    }

    /// Drops the files of inodes of `records` that have no mapping left.
    fn release_files(&self, records: &[MappingRecord]) {
        let mut nodes: Vec<u64> = records.iter().map(|record| record.inode.0).collect();
        nodes.dedup();
        for nodeid in nodes {
            self.core
                .files
                .release_if_unmapped(&self.core.window, nodeid);
        }
    }

    /// Serves FUSE_REMOVEMAPPING. Every range is checked against the window
    /// first, so a batch holding a malformed range is refused (EINVAL) before
    /// anything is unmapped. Then every range in turn; a failure that depends
    /// on the window's state (a range cutting a mapping, a VMM refusal) ends
    /// the request, and ranges before it stay removed, as the guest expects
    /// of a batch it will not retry partially.
    ///
    /// With `--dax-trace`, every range of the request gets a `remove` line
    /// (in order, all with the request's `unique`): `"ok"` for those removed,
    /// the errno for the one that ended the request, `"skipped"` for the
    /// others.
    pub fn remove(&self, unique: u64, ranges: Records<'_, RemoveMappingOne>) -> Result<(), Errno> {
        self.reclaim_if_stale();
        let stops = self.queue_stops.load(Ordering::SeqCst);
        let mut done = 0;
        let result = self.remove_ranges(ranges, &mut done, stops);
        if let Some(trace) = &self.core.trace {
            for (i, range) in ranges.into_iter().enumerate() {
                let outcome = match result {
                    _ if i < done => trace::result_name(Ok(())),
                    Err((failed, errno)) if failed == i => trace::result_name(Err(errno)),
                    _ => "skipped".into(),
                };
                trace.event(
                    "remove",
                    &[
                        ("unique", unique.into()),
                        ("moffset", range.moffset.into()),
                        ("len", range.len.into()),
                        ("result", outcome.as_ref().into()),
                    ],
                );
            }
        }
        result.map_err(|(_, errno)| errno)
    }

    /// The work of [`Dax::remove`]: `done` counts the ranges removed; a
    /// failure names the range that caused it. `stops` is the queue-stop
    /// count when the request began.
    fn remove_ranges(
        &self, ranges: Records<'_, RemoveMappingOne>, done: &mut usize, stops: u64,
    ) -> Result<(), (usize, Errno)> {
        for (i, range) in ranges.into_iter().enumerate() {
            if let Err(e) = self.core.window.geometry().range(range.moffset, range.len) {
                return Err((i, self.refuse("REMOVEMAPPING", &e, Errno::EINVAL)));
            }
        }
        for (i, range) in ranges.into_iter().enumerate() {
            match self
                .core
                .window
                .remove_mapping(&self.core.mapper, range.moffset, range.len)
            {
                Ok(removed) => {
                    self.core.metrics.record_removed(&removed);
                    self.release_files(&removed);
                    *done += 1;
                }
                Err(e) if e.is_invalid_request() => {
                    return Err((i, self.refuse("REMOVEMAPPING", &e, Errno::EINVAL)))
                }
                Err(e) => {
                    self.core.files.sweep(&self.core.window);
                    return Err((i, self.refuse_vmm("REMOVEMAPPING", &e, stops)));
                }
            }
        }
        Ok(())
    }

    /// Keeps the mappings of `nodeid` within its file after the daemon may
    /// have changed the file's size (SETATTR with a size, OPEN or CREATE with
    /// O_TRUNC, FALLOCATE, WRITE, COPY_FILE_RANGE): reads the size now, then
    /// file pages at or beyond `round_up(size, 4 KiB)` are replaced by zero
    /// placeholders (the head of a mapping stays mapped) and placeholders
    /// below it show the file again. Call it *after* the change and before
    /// replying, so the guest never sees the new size with the old window.
    /// Cheap when `nodeid` has no mapping; a no-op with repair switched off.
    pub fn file_changed(&self, nodeid: u64) {
        if self.core.repair {
            self.core
                .repair_to_current_size(nodeid, RepairSource::Daemon);
        }
    }

    /// Empties the window (FUSE_DESTROY): every waiter is woken and every
    /// mapping unmapped through the frontend of this session.
    pub fn reset(&self) {
        let report = self.core.window.reset(&self.core.mapper);
        self.report_reset(&report, 0);
    }

    /// Empties the window after a session that ended without DESTROY (a new
    /// INIT, a device reset, a disconnect). The frontend may have dropped the
    /// mappings itself (QEMU 11.1 does at a device reset; a new frontend
    /// never had them): then its first refusal ends the unmapping and the
    /// records are forgotten, logged at debug level only.
    pub fn reset_after_session_end(&self) {
        let mapper = ForgetDropped::new(&self.core.mapper);
        let report = self.core.window.reset(&mapper);
        let forgotten = mapper.forgotten.load(Ordering::Relaxed);
        if forgotten > 0 {
            self.core.metrics.forgotten(forgotten);
            tracing::debug!(
                forgotten,
                "DAX records of the previous session forgotten: the frontend no longer held them"
            );
        }
        self.report_reset(&report, forgotten);
    }

    /// Traces and logs a reset; `forgotten` of the removed records were
    /// forgotten without an unmap (logged at debug level only).
    fn report_reset(&self, report: &dax_window::ResetReport<VmmMapError>, forgotten: u64) {
        self.core.files.sweep(&self.core.window);
        self.core.files.drop_idle();
        if let Some(trace) = &self.core.trace {
            trace.event(
                "reset",
                &[
                    ("removed", (report.removed.len() as u64).into()),
                    ("failures", (report.failures.len() as u64).into()),
                ],
            );
        }
        let unmapped = (report.removed.len() as u64).saturating_sub(forgotten);
        if unmapped > 0 || !report.failures.is_empty() {
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
            self.reset_after_session_end();
            self.stale.store(false, Ordering::Release);
        }
    }

    /// Notes that the frontend is stopping a queue (GET_VRING_BASE); call it
    /// before the stop is answered. QEMU stops the queues at a device reset
    /// and then drops every mapping of the window, before it reads the
    /// backend requests that arrived meanwhile: an unmap (or an upgrade's
    /// unmap) sent by a request served across the stop is refused for a
    /// mapping that is already gone. Such a request's reply is dropped with
    /// its queue; its failure is the reset at work, not a refusal (its record
    /// stays until the next session's reclaim forgets it).
    pub fn queue_stopping(&self) {
        self.queue_stops.fetch_add(1, Ordering::SeqCst);
    }

    /// A failure the VMM caused (EIO): a refusal, unless a queue stopped
    /// since the request began (`stops` was the count then); see
    /// [`Dax::queue_stopping`].
    fn refuse_vmm(&self, what: &str, error: &dyn std::error::Error, stops: u64) -> Errno {
        let errno = Errno::EIO;
        // SeqCst pairs with `queue_stopping`: the stop was counted before
        // its answer left, and the frontend drops its mappings only after
        // reading that answer, so a refusal caused by the drop sees it.
        if self.queue_stops.load(Ordering::SeqCst) == stops {
            return self.refuse(what, error, errno);
        }
        if let Some(suppressed) = self.refusal_log.check() {
            tracing::debug!(
                suppressed,
                %errno,
                "{what} failed after the frontend stopped a queue (a device reset drops the window's mappings): {}",
                crate::error_chain(error)
            );
        }
        errno
    }

    fn refuse(&self, what: &str, error: &dyn std::error::Error, errno: Errno) -> Errno {
        self.core.metrics.refused();
        if let Some(suppressed) = self.refusal_log.check() {
            tracing::warn!(suppressed, %errno, "{what} refused: {}", crate::error_chain(error));
        }
        errno
    }
}
