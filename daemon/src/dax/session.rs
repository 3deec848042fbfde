//! Where a guest session meets the frontend: the probe at INIT, the choice of
//! descriptor for a mapping, what this frontend cannot map, and emptying
//! the window after a device reset the frontend may already have acted on.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use dax_window::{Mapper, PAGE_SIZE};

use super::frontend_caps::{self, CapsSource, FrontendMapCaps};
use super::vmm_mapper::{VmmMapError, VmmMapper};
use super::{Dax, DaxProtocol};
use crate::fs::MapAccess;

/// A SETUPMAPPING whose range holds the partial last page of its file, on a
/// frontend that cannot map one.
#[derive(Debug, thiserror::Error)]
#[error(
    "file range {foffset:#x}+{len:#x} holds the partial last page of a file of {size} bytes, \
     which this frontend cannot map (it refuses maps that pass the file's end)"
)]
pub(super) struct PartialTailError {
    pub(super) foffset: u64,
    pub(super) len: u64,
    pub(super) size: u64,
}

/// Whether `[foffset, foffset + len)` holds the page in which a file of
/// `size` bytes ends partway (none when `size` is a multiple of 4 KiB).
pub(super) fn covers_partial_tail(foffset: u64, len: u64, size: u64) -> bool {
    if size % PAGE_SIZE == 0 {
        return false;
    }
    let tail = size - size % PAGE_SIZE;
    foffset <= tail && foffset.saturating_add(len) > tail
}

/// How the file of a mapping must be opened on a frontend with `caps`.
pub(super) fn access_for(writable: bool, caps: FrontendMapCaps) -> MapAccess {
    if writable {
        MapAccess::Write
    } else if caps.read_only_fd {
        MapAccess::Read
    } else {
        MapAccess::ReadWithWritableFd
    }
}

/// The mapper for emptying the window after a session ended where the
/// frontend may have dropped every mapping itself (QEMU 11.1 does at a
/// device reset; a new frontend never had them). When the first unmap is
/// refused and none succeeded before it, the frontend is taken to hold none
/// of the records: that refusal and every later unmap are reported as done
/// (the records are forgotten) and nothing more is sent. A refusal after a
/// successful unmap is a real failure and is reported as such.
pub(super) struct ForgetDropped<'a> {
    inner: &'a VmmMapper,
    unmapped_any: AtomicBool,
    dropped: AtomicBool,
    /// Records forgotten without a successful unmap.
    pub(super) forgotten: AtomicU64,
}

impl<'a> ForgetDropped<'a> {
    pub(super) fn new(inner: &'a VmmMapper) -> Self {
        Self {
            inner,
            unmapped_any: AtomicBool::new(false),
            dropped: AtomicBool::new(false),
            forgotten: AtomicU64::new(0),
        }
    }
}

impl Mapper for ForgetDropped<'_> {
    type File = std::fs::File;
    type Error = VmmMapError;

    fn map(
        &self, moffset: u64, len: u64, file: &std::fs::File, foffset: u64, writable: bool,
    ) -> Result<(), VmmMapError> {
        self.inner.map(moffset, len, file, foffset, writable)
    }

    fn unmap(&self, moffset: u64, len: u64) -> Result<(), VmmMapError> {
        if self.dropped.load(Ordering::Relaxed) {
            self.forgotten.fetch_add(1, Ordering::Relaxed);
            return Ok(());
        }
        match self.inner.unmap(moffset, len) {
            Ok(()) => {
                self.unmapped_any.store(true, Ordering::Relaxed);
                Ok(())
            }
            Err(VmmMapError::NoChannel) => Err(VmmMapError::NoChannel),
            Err(error) if !self.unmapped_any.load(Ordering::Relaxed) => {
                tracing::debug!(
                    moffset,
                    len,
                    error = %crate::error_chain(&error),
                    "the frontend no longer holds the previous session's mappings \
                     (dropped at its device reset, or a new frontend): forgetting them"
                );
                self.dropped.store(true, Ordering::Relaxed);
                self.forgotten.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(error) => Err(error),
        }
    }

    fn map_replaces_existing(&self) -> bool {
        self.inner.map_replaces_existing()
    }

    fn map_placeholder(&self, moffset: u64, len: u64, writable: bool) -> Result<bool, VmmMapError> {
        self.inner.map_placeholder(moffset, len, writable)
    }

    fn file_size(&self, file: &std::fs::File) -> Result<Option<u64>, VmmMapError> {
        self.inner.file_size(file)
    }
}

impl Dax {
    /// Starts a guest session (FUSE INIT, on the queue worker serving it,
    /// before the reply): empties what an earlier session left in the window,
    /// then finds out what the frontend maps (see
    /// [`super::frontend_caps`]). The answer holds until the next INIT.
    pub fn begin_session(&self) -> FrontendMapCaps {
        self.reclaim_if_stale();
        let mapper = &self.core.mapper;
        let probed = match mapper.protocol() {
            DaxProtocol::Legacy => None,
            DaxProtocol::Shmem => frontend_caps::probe(mapper, &self.probe_files),
        };
        let (caps, source) = match probed {
            Some(caps) => (caps, CapsSource::Probed),
            None => (FrontendMapCaps::ASSUMED, CapsSource::Assumed),
        };
        mapper.caps().set(caps, source);
        if let Some(trace) = &self.core.trace {
            trace.event(
                "probe",
                &[
                    ("probed", (source == CapsSource::Probed).into()),
                    ("partial_tail", caps.partial_tail.into()),
                    ("read_only_fd", caps.read_only_fd.into()),
                ],
            );
        }
        caps
    }

    /// What the frontend of the current session maps.
    pub fn frontend_caps(&self) -> FrontendMapCaps {
        self.core.mapper.caps().get()
    }

    /// Whether the current capabilities come from a probe.
    pub fn frontend_probed(&self) -> bool {
        self.core.mapper.caps().source() == CapsSource::Probed
    }

    /// Counts an INIT answered so that the guest's DAX mount fails (see
    /// `dispatch::init`).
    pub fn init_refused(&self) {
        self.core.metrics.init_refused();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_partial_tail_is_the_page_holding_the_end() {
        // 20 bytes: page 0 is partial.
        assert!(covers_partial_tail(0, 2 << 20, 20));
        assert!(covers_partial_tail(0, PAGE_SIZE, 20));
        // Page multiples have no partial page.
        assert!(!covers_partial_tail(0, 2 << 20, 8192));
        assert!(!covers_partial_tail(0, 2 << 20, 0));
        // 8200 bytes: the partial page starts at 8192.
        assert!(!covers_partial_tail(0, 8192, 8200));
        assert!(covers_partial_tail(8192, PAGE_SIZE, 8200));
        assert!(covers_partial_tail(4096, 8192, 8200));
        // Ranges wholly past the end are placeholders only.
        assert!(!covers_partial_tail(12288, PAGE_SIZE, 8200));
        assert!(!covers_partial_tail(
            u64::MAX - PAGE_SIZE + 1,
            PAGE_SIZE,
            8200
        ));
    }

    #[test]
    fn read_mappings_need_a_writable_descriptor_only_where_read_only_ones_fail() {
        let patched = FrontendMapCaps::ASSUMED;
        let upstream = FrontendMapCaps {
            partial_tail: false,
            read_only_fd: false,
        };
        assert_eq!(access_for(false, patched), MapAccess::Read);
        assert_eq!(access_for(true, patched), MapAccess::Write);
        assert_eq!(access_for(false, upstream), MapAccess::ReadWithWritableFd);
        assert_eq!(access_for(true, upstream), MapAccess::Write);
    }
}
