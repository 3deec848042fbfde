//! What the frontend can map, found out once per session.
//!
//! Frontends differ in two ways that decide which files can go through the
//! window (docs/protocol.md, "Frontend capabilities"):
//!
//! - **Partial last pages.** A file whose size is not a multiple of 4 KiB
//!   ends inside a page. The patched QEMU maps that page (the bytes past the
//!   end read as zeros); upstream QEMU 11.1 refuses any map whose page-rounded
//!   length passes the file's end ("backing store size 0x14 is too small for
//!   'size' option 0x1000").
//! - **Read-only descriptors.** The patched QEMU maps a read-only mapping of
//!   an `O_RDONLY` descriptor; QEMU 11.1 maps every mapping `PROT_WRITE |
//!   MAP_SHARED` and so refuses one ("unable to map backing store for guest
//!   RAM: Permission denied").
//!
//! Neither answer is announced anywhere, so at FUSE INIT, on the queue worker
//! serving it (never in a frontend-message handler: the frontend would wait
//! for that message's reply and never read ours), before the reply goes
//! back, the daemon asks: at window offset 0 it maps a full 4 KiB memfd page
//! (the control: every frontend must take it), a 16-byte memfd as one 4 KiB
//! page, and a 4 KiB memfd re-opened `O_RDONLY` as a read-only mapping,
//! unmapping each one that was mapped. A refused control makes the probe
//! inconclusive (both assumed possible, with a warning). The legacy protocol
//! (FS_MAP) is not probed: its frontends map both.
//!
//! The probe's requests are not DAX events: they are not counted in the
//! window's counters or traced as `vmm_map` lines (one `probe` line instead).

use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

use dax_window::PAGE_SIZE;
use rustix::fs::{ftruncate, memfd_create, MemfdFlags, Mode, OFlags};

use super::vmm_mapper::{VmmMapError, VmmMapper};
use crate::ratelimit::RateLimit;
pub use crate::session::FrontendMapCaps;

/// Bytes of the probe file whose only page is partial.
const TAIL_PROBE_LEN: u64 = 16;

/// How the capabilities of the current session were found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapsSource {
    /// Not probed yet (no session since start-up).
    Unprobed,
    /// Probed through the backend channel.
    Probed,
    /// Not probed: legacy protocol, no backend channel, or the control map
    /// was refused; [`FrontendMapCaps::ASSUMED`] applies.
    Assumed,
}

/// Why the probe files could not be made at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ProbeSetupError {
    /// A memfd could not be created or sized.
    #[error("cannot create the frontend probe memfd {name}")]
    Memfd {
        /// Its name.
        name: &'static str,
        /// Cause.
        #[source]
        source: rustix::io::Errno,
    },
    /// The read-only descriptor could not be opened through /proc/self/fd.
    #[error("cannot re-open the probe memfd read-only through /proc/self/fd")]
    Reopen(#[source] std::io::Error),
}

/// The descriptors the probe maps, made at start-up (before the seccomp
/// filter, which has no memfd_create).
#[derive(Debug)]
pub(super) struct ProbeFiles {
    /// A 4 KiB memfd, `O_RDWR`: the control.
    full: OwnedFd,
    /// A 16-byte memfd, `O_RDWR`: its one page is partial.
    tail: OwnedFd,
    /// `full` re-opened `O_RDONLY` through `/proc/self/fd`.
    read_only: OwnedFd,
    /// Limits the probe's warnings (a guest may INIT again and again).
    warn_log: RateLimit,
}

fn memfd(name: &'static str, len: u64) -> Result<OwnedFd, ProbeSetupError> {
    let fd = memfd_create(name, MemfdFlags::CLOEXEC)
        .map_err(|source| ProbeSetupError::Memfd { name, source })?;
    ftruncate(&fd, len).map_err(|source| ProbeSetupError::Memfd { name, source })?;
    Ok(fd)
}

impl ProbeFiles {
    /// Creates the three descriptors.
    pub(super) fn new() -> Result<Self, ProbeSetupError> {
        let full = memfd("daxfsd-probe-page", PAGE_SIZE)?;
        let tail = memfd("daxfsd-probe-tail", TAIL_PROBE_LEN)?;
        let proc_self_fd = crate::process::fds::proc_self_fd().map_err(ProbeSetupError::Reopen)?;
        let name = std::os::fd::AsRawFd::as_raw_fd(&full).to_string();
        let read_only = rustix::fs::openat(
            proc_self_fd,
            name.as_str(),
            OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| ProbeSetupError::Reopen(e.into()))?;
        Ok(Self {
            full,
            tail,
            read_only,
            warn_log: RateLimit::per_second(1),
        })
    }
}

/// The capabilities of the current session, read by the request paths.
#[derive(Debug)]
pub(super) struct CapsState {
    partial_tail: AtomicBool,
    read_only_fd: AtomicBool,
    source: AtomicU8,
    /// What was last logged at info level (logged again only when it changes).
    logged: Mutex<Option<FrontendMapCaps>>,
}

impl Default for CapsState {
    fn default() -> Self {
        Self {
            partial_tail: AtomicBool::new(true),
            read_only_fd: AtomicBool::new(true),
            source: AtomicU8::new(CapsSource::Unprobed as u8),
            logged: Mutex::new(None),
        }
    }
}

impl CapsState {
    /// The capabilities in force.
    pub(super) fn get(&self) -> FrontendMapCaps {
        FrontendMapCaps {
            partial_tail: self.partial_tail.load(Ordering::Acquire),
            read_only_fd: self.read_only_fd.load(Ordering::Acquire),
        }
    }

    /// How they were found.
    pub(super) fn source(&self) -> CapsSource {
        match self.source.load(Ordering::Acquire) {
            s if s == CapsSource::Probed as u8 => CapsSource::Probed,
            s if s == CapsSource::Assumed as u8 => CapsSource::Assumed,
            _ => CapsSource::Unprobed,
        }
    }

    /// Records the result of a session's probe; logs it at info level the
    /// first time and whenever it changes, at debug level otherwise.
    pub(super) fn set(&self, caps: FrontendMapCaps, source: CapsSource) {
        self.partial_tail
            .store(caps.partial_tail, Ordering::Release);
        self.read_only_fd
            .store(caps.read_only_fd, Ordering::Release);
        self.source.store(source as u8, Ordering::Release);
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if *logged == Some(caps) {
            tracing::debug!(?source, "{}", caps.describe());
        } else {
            tracing::info!(?source, "{}", caps.describe());
            *logged = Some(caps);
        }
    }
}

/// One probe map: whether the frontend took it. A map it took is unmapped
/// again; an unmap it refuses leaves window offset 0 mapped in the frontend,
/// which is logged (the session's first map of that page would be refused).
fn try_map(
    mapper: &VmmMapper, files: &ProbeFiles, fd: &OwnedFd, writable: bool, what: &str,
) -> Result<bool, VmmMapError> {
    match mapper.send(0, PAGE_SIZE, Some(fd.as_fd()), 0, writable) {
        Ok(()) => {
            if let Err(error) = mapper.send(0, PAGE_SIZE, None, 0, false) {
                if let Some(suppressed) = files.warn_log.check() {
                    tracing::error!(
                        probe = what,
                        suppressed,
                        error = %crate::error_chain(&error),
                        "the frontend refused to unmap a probe mapping at window offset 0"
                    );
                }
            }
            Ok(true)
        }
        Err(VmmMapError::NoChannel) => Err(VmmMapError::NoChannel),
        Err(error) => {
            tracing::debug!(probe = what, error = %crate::error_chain(&error), "probe map refused");
            Ok(false)
        }
    }
}

/// Asks the frontend, through `mapper`'s channel, what it maps. `None` when
/// the answer is unknown (no channel, or the control map was refused).
pub(super) fn probe(mapper: &VmmMapper, files: &ProbeFiles) -> Option<FrontendMapCaps> {
    let run = || -> Result<Option<FrontendMapCaps>, VmmMapError> {
        if !try_map(mapper, files, &files.full, true, "control")? {
            if let Some(suppressed) = files.warn_log.check() {
                tracing::warn!(
                    suppressed,
                    "the frontend refused to map one full page at window offset 0: \
                     cannot tell what it maps; assuming partial last pages and \
                     read-only descriptors work"
                );
            }
            return Ok(None);
        }
        Ok(Some(FrontendMapCaps {
            partial_tail: try_map(mapper, files, &files.tail, true, "partial last page")?,
            read_only_fd: try_map(
                mapper,
                files,
                &files.read_only,
                false,
                "read-only descriptor",
            )?,
        }))
    };
    run().unwrap_or_else(|error| {
        tracing::debug!(error = %crate::error_chain(&error), "frontend not probed");
        None
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn probe_files_have_the_expected_access_and_sizes() {
        let files = ProbeFiles::new().expect("probe files");
        let mode = |fd: &OwnedFd| rustix::fs::fcntl_getfl(fd).unwrap() & OFlags::RWMODE;
        assert_eq!(mode(&files.full), OFlags::RDWR);
        assert_eq!(mode(&files.tail), OFlags::RDWR);
        assert_eq!(mode(&files.read_only), OFlags::RDONLY);
        let size = |fd: &OwnedFd| rustix::fs::fstat(fd).unwrap().st_size;
        assert_eq!(size(&files.full), PAGE_SIZE as i64);
        assert_eq!(size(&files.tail), TAIL_PROBE_LEN as i64);
        assert_eq!(size(&files.read_only), PAGE_SIZE as i64);
    }

    #[test]
    fn the_log_line_names_both_answers() {
        let caps = FrontendMapCaps {
            partial_tail: false,
            read_only_fd: false,
        };
        assert_eq!(
            caps.describe(),
            "frontend maps partial last pages: no; read-only descriptors: no"
        );
    }

    #[test]
    fn without_a_channel_nothing_is_known() {
        let mapper =
            VmmMapper::new(4 << 20, super::super::DaxProtocol::Shmem, false, None).unwrap();
        let files = ProbeFiles::new().unwrap();
        assert_eq!(probe(&mapper, &files), None);
        let state = CapsState::default();
        assert_eq!(state.get(), FrontendMapCaps::ASSUMED);
        assert_eq!(state.source(), CapsSource::Unprobed);
        state.set(
            FrontendMapCaps {
                partial_tail: false,
                read_only_fd: true,
            },
            CapsSource::Probed,
        );
        assert!(!state.get().partial_tail);
        assert_eq!(state.source(), CapsSource::Probed);
    }
}
