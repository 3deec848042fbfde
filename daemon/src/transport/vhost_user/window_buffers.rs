//! Window-backed buffers of descriptor chains: where the frontend says the
//! DAX window sits in guest-physical memory, and the fallback that moves a
//! chain's bytes when some of its descriptors point into the window.
//!
//! The window is not guest RAM in the vhost-user memory table, so a
//! descriptor there (the data of a `write(2)` from a DAX-mapped file, a
//! direct-I/O `read(2)` into one) cannot be reached through vm-memory. The
//! frontend reports the window's guest-physical address with SET_CONFIG at
//! config offset [`WINDOW_CONFIG_OFFSET`] (16 bytes: address, then length,
//! both u64 little-endian; the guest's virtio-fs config is only 40 bytes and
//! never shows them). A descriptor that is not in guest memory but lies
//! wholly inside the window is then a *window piece*; its bytes are moved
//! through the files the window maps ([`crate::dax::Dax::read_window`],
//! [`crate::dax::Dax::write_window`]), copied through the daemon's buffers.
//! A chain without window pieces never comes here.

use std::sync::atomic::{AtomicU64, Ordering};

use vm_memory::{GuestAddress, GuestMemoryBackend};

use super::dirty_log::GuestRam;

use crate::dax::{Dax, WindowIoError};
use crate::errno::Errno;
use crate::prometheus::{ExportMetrics, PrometheusText};
use crate::ratelimit::RateLimit;

/// Config-space offset of the window placement a frontend writes.
pub const WINDOW_CONFIG_OFFSET: u32 = 64;
/// Its length: guest-physical address and length, u64 little-endian each.
pub const WINDOW_CONFIG_LEN: usize = 16;
/// The address that means "not mapped / unknown".
pub const ADDRESS_UNKNOWN: u64 = u64::MAX;

/// Where the window sits in guest-physical memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpan {
    /// Guest-physical address of window offset 0.
    pub gpa: u64,
    /// Window length.
    pub len: u64,
}

impl WindowSpan {
    /// The window offset of `[addr, addr + len)` if that lies wholly inside
    /// the window and is not empty.
    pub fn offset_of(&self, addr: u64, len: u64) -> Option<u64> {
        let moffset = addr.checked_sub(self.gpa)?;
        let end = moffset.checked_add(len)?;
        (len > 0 && end <= self.len).then_some(moffset)
    }
}

/// Why a placement write was not recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    /// The daemon has no window.
    #[error("no DAX window (--cache-size 0)")]
    NoWindow,
    /// The length is not the window's.
    #[error("length {got:#x} differs from the window's {want:#x}")]
    Length {
        /// Length written.
        got: u64,
        /// `--cache-size`.
        want: u64,
    },
    /// The range wraps around the address space.
    #[error("{gpa:#x}+{len:#x} wraps around the address space")]
    Wraps {
        /// Address written.
        gpa: u64,
        /// Length written.
        len: u64,
    },
    /// A write covering only part of the 16 bytes, or more.
    #[error("{len} bytes at config offset {offset} (the placement is 16 bytes at offset 64)")]
    Partial {
        /// Config offset.
        offset: u32,
        /// Bytes written.
        len: usize,
    },
}

/// What a SET_CONFIG meant for the placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigWrite {
    /// Elsewhere in the config space: not ours (ignored, as always).
    Elsewhere,
    /// The window sits at this span.
    Placed(WindowSpan),
    /// Address [`ADDRESS_UNKNOWN`]: the window is not mapped.
    Unplaced,
    /// Ignored.
    Refused(PlacementError),
}

/// Counters of window-backed buffers.
#[derive(Debug, Default)]
pub struct WindowIoStats {
    /// Bytes read from the window (request bytes, WRITE data).
    pub read_bytes: AtomicU64,
    /// Bytes written into the window (reply bytes, READ data).
    pub written_bytes: AtomicU64,
    /// Chains whose window pieces could not be used (answered EFAULT or EIO).
    pub faults: AtomicU64,
}

/// The window's guest-physical placement as the frontend reported it.
#[derive(Debug)]
pub struct WindowPlacement {
    /// Window size; `None` without a window.
    size: Option<u64>,
    /// Guest-physical address, [`ADDRESS_UNKNOWN`] until reported.
    gpa: AtomicU64,
    refusal_log: RateLimit,
    stats: WindowIoStats,
}

impl WindowPlacement {
    /// The placement of a window of `size` bytes (`None`: no window), unknown.
    pub fn new(size: Option<u64>) -> Self {
        Self {
            size,
            gpa: AtomicU64::new(ADDRESS_UNKNOWN),
            refusal_log: RateLimit::per_second(1),
            stats: WindowIoStats::default(),
        }
    }

    /// What a SET_CONFIG of `buf` at `offset` says about the placement.
    pub fn parse(&self, offset: u32, buf: &[u8]) -> ConfigWrite {
        let start = u64::from(offset);
        let end = start + buf.len() as u64;
        let ours = u64::from(WINDOW_CONFIG_OFFSET)..u64::from(WINDOW_CONFIG_OFFSET) + 16;
        if end <= ours.start || start >= ours.end {
            return ConfigWrite::Elsewhere;
        }
        let Ok(bytes) = <[u8; WINDOW_CONFIG_LEN]>::try_from(buf) else {
            return ConfigWrite::Refused(PlacementError::Partial {
                offset,
                len: buf.len(),
            });
        };
        if start != ours.start {
            return ConfigWrite::Refused(PlacementError::Partial {
                offset,
                len: buf.len(),
            });
        }
        let Some(want) = self.size else {
            return ConfigWrite::Refused(PlacementError::NoWindow);
        };
        let (gpa, len) = bytes.split_at(8);
        let gpa = u64::from_le_bytes(gpa.try_into().unwrap_or_default());
        let len = u64::from_le_bytes(len.try_into().unwrap_or_default());
        if gpa == ADDRESS_UNKNOWN {
            return ConfigWrite::Unplaced;
        }
        if len != want {
            return ConfigWrite::Refused(PlacementError::Length { got: len, want });
        }
        if gpa.checked_add(len).is_none() {
            return ConfigWrite::Refused(PlacementError::Wraps { gpa, len });
        }
        ConfigWrite::Placed(WindowSpan { gpa, len })
    }

    /// Applies a SET_CONFIG (see [`Self::parse`]) and logs what changed.
    pub fn set_config(&self, offset: u32, buf: &[u8]) -> ConfigWrite {
        let write = self.parse(offset, buf);
        match &write {
            ConfigWrite::Elsewhere => {
                tracing::debug!(
                    offset,
                    len = buf.len(),
                    "SET_CONFIG ignored: read-only field"
                );
            }
            ConfigWrite::Placed(span) => {
                if self.gpa.swap(span.gpa, Ordering::AcqRel) != span.gpa {
                    tracing::info!(
                        "frontend reports the DAX window at guest-physical {:#x} ({:#x} bytes): \
                         chain buffers inside it are served through the mapped files",
                        span.gpa,
                        span.len
                    );
                }
            }
            ConfigWrite::Unplaced => {
                if self.gpa.swap(ADDRESS_UNKNOWN, Ordering::AcqRel) != ADDRESS_UNKNOWN {
                    tracing::info!("frontend reports the DAX window unmapped");
                }
            }
            ConfigWrite::Refused(error) => {
                if let Some(suppressed) = self.refusal_log.check() {
                    tracing::warn!(suppressed, %error, "SET_CONFIG of the DAX window placement ignored");
                }
            }
        }
        write
    }

    /// Forgets the placement (device reset, disconnect: the next guest may
    /// place the window elsewhere).
    pub fn forget(&self) {
        if self.gpa.swap(ADDRESS_UNKNOWN, Ordering::AcqRel) != ADDRESS_UNKNOWN {
            tracing::debug!("DAX window placement forgotten");
        }
    }

    /// The window's span, if the frontend reported it.
    pub fn span(&self) -> Option<WindowSpan> {
        let len = self.size?;
        let gpa = self.gpa.load(Ordering::Acquire);
        (gpa != ADDRESS_UNKNOWN).then_some(WindowSpan { gpa, len })
    }

    /// Counters.
    pub fn stats(&self) -> &WindowIoStats {
        &self.stats
    }
}

/// Why a chain's buffers could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// A piece in guest memory could not be reached (not expected: the chain
    /// was checked).
    #[error("descriptor outside guest memory")]
    Memory(#[source] vm_memory::GuestMemoryError),
    /// A window piece.
    #[error("window-backed buffer")]
    Window(#[source] WindowIoError),
}

impl BufferError {
    /// The errno to answer the request with.
    pub fn errno(&self) -> Errno {
        match self {
            Self::Memory(_) => Errno::EFAULT,
            Self::Window(e) => e.errno(),
        }
    }
}

/// A failed [`gather`]: how many bytes were copied, and why the rest was
/// not.
#[derive(Debug)]
pub struct GatherError {
    /// Bytes copied before the failure.
    pub copied: usize,
    /// Cause.
    pub error: BufferError,
}

/// The window as one chain sees it: its placement when the chain was
/// split, and the index and files behind it.
#[derive(Debug, Clone, Copy)]
pub struct WindowView<'a> {
    span: WindowSpan,
    dax: &'a Dax,
    stats: &'a WindowIoStats,
}

impl<'a> WindowView<'a> {
    /// The view of `dax` placed as `placement` says, if it was reported.
    pub fn new(placement: &'a WindowPlacement, dax: Option<&'a Dax>) -> Option<Self> {
        Some(Self {
            span: placement.span()?,
            dax: dax?,
            stats: placement.stats(),
        })
    }

    /// The window offset of a descriptor (or piece) `[addr, addr + len)`
    /// that is a window piece: it does not start in guest memory and lies
    /// wholly inside the window. Guest memory wins where both claim it.
    pub fn window_offset(&self, mem: &GuestRam, addr: GuestAddress, len: usize) -> Option<u64> {
        let moffset = self.span.offset_of(addr.0, len as u64)?;
        (!mem.address_in_range(addr)).then_some(moffset)
    }

    /// Checks, before a request runs, that every window piece of `pieces`
    /// can take a device write.
    pub fn check_scatter(
        &self, mem: &GuestRam, pieces: &[(GuestAddress, usize)],
    ) -> Result<(), BufferError> {
        for &(addr, len) in pieces {
            if let Some(moffset) = self.window_offset(mem, addr, len) {
                self.dax
                    .check_window_write(moffset, len as u64)
                    .map_err(|e| self.fault(e))?;
            }
        }
        Ok(())
    }

    fn fault(&self, error: WindowIoError) -> BufferError {
        self.stats.faults.fetch_add(1, Ordering::Relaxed);
        BufferError::Window(error)
    }

    fn read(&self, moffset: u64, out: &mut [u8]) -> Result<(), BufferError> {
        self.dax
            .read_window(moffset, out)
            .map_err(|e| self.fault(e))?;
        self.stats
            .read_bytes
            .fetch_add(out.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    fn write(&self, moffset: u64, bytes: &[u8]) -> Result<(), BufferError> {
        self.dax
            .write_window(moffset, bytes)
            .map_err(|e| self.fault(e))?;
        self.stats
            .written_bytes
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// Copies the first `out.len()` bytes of a chain's buffers `pieces` into
/// `out`: window pieces (only with a `window`) through the mapped files,
/// the others from guest memory.
pub fn gather(
    window: Option<&WindowView<'_>>, mem: &GuestRam, pieces: &[(GuestAddress, usize)],
    out: &mut [u8],
) -> Result<(), GatherError> {
    let mut done = 0;
    for &(addr, len) in pieces {
        if done == out.len() {
            break;
        }
        let take = len.min(out.len() - done);
        let part = &mut out[done..done + take];
        let copied = match window.and_then(|w| Some((w, w.window_offset(mem, addr, len)?))) {
            Some((w, moffset)) => w.read(moffset, part),
            None => mem
                .get_slice(addr, take)
                .map(|slice| slice.copy_to(part))
                .map(|_| ())
                .map_err(BufferError::Memory),
        };
        if let Err(error) = copied {
            return Err(GatherError {
                copied: done,
                error,
            });
        }
        done += take;
    }
    Ok(())
}

/// Writes `bytes` at the start of a chain's buffers `pieces`, which hold at
/// least that many: window pieces (only with a `window`) into the mapped
/// files, the others into guest memory.
pub fn scatter(
    window: Option<&WindowView<'_>>, mem: &GuestRam, pieces: &[(GuestAddress, usize)], bytes: &[u8],
) -> Result<(), BufferError> {
    let mut done = 0;
    for &(addr, len) in pieces {
        if done == bytes.len() {
            break;
        }
        let take = len.min(bytes.len() - done);
        let part = &bytes[done..done + take];
        match window.and_then(|w| Some((w, w.window_offset(mem, addr, len)?))) {
            Some((w, moffset)) => w.write(moffset, part)?,
            None => mem
                .get_slice(addr, take)
                .map(|slice| slice.copy_from(part))
                .map_err(BufferError::Memory)?,
        }
        done += take;
    }
    Ok(())
}

impl ExportMetrics for WindowPlacement {
    fn export_metrics(&self, out: &mut PrometheusText) {
        out.metric(
            "dax_window_address_known",
            "gauge",
            "1 once the frontend reported where the window sits in guest-physical memory (SET_CONFIG at offset 64).",
            u64::from(self.span().is_some()),
        );
        let io = self.stats();
        out.metric(
            "dax_window_io_read_bytes_total",
            "counter",
            "Bytes of chain buffers inside the window read through the mapped files (e.g. WRITE data).",
            io.read_bytes.load(Ordering::Relaxed),
        );
        out.metric(
            "dax_window_io_written_bytes_total",
            "counter",
            "Bytes of chain buffers inside the window written through the mapped files (e.g. READ data).",
            io.written_bytes.load(Ordering::Relaxed),
        );
        out.metric(
            "dax_window_io_faults_total",
            "counter",
            "Chains refused because a buffer inside the window maps nothing usable (EFAULT) or its file failed (EIO).",
            io.faults.load(Ordering::Relaxed),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    fn placement_bytes(gpa: u64, len: u64) -> Vec<u8> {
        [gpa.to_le_bytes(), len.to_le_bytes()].concat()
    }

    #[test]
    fn a_placement_of_the_windows_length_is_recorded_and_forgotten() {
        let p = WindowPlacement::new(Some(8 * MIB));
        assert_eq!(p.span(), None);
        let span = WindowSpan {
            gpa: 1 << 40,
            len: 8 * MIB,
        };
        let bytes = placement_bytes(1 << 40, 8 * MIB);
        assert_eq!(p.set_config(64, &bytes), ConfigWrite::Placed(span));
        assert_eq!(p.span(), Some(span));
        // Moved.
        let moved = placement_bytes(1 << 41, 8 * MIB);
        p.set_config(64, &moved);
        assert_eq!(p.span().map(|s| s.gpa), Some(1 << 41));
        // Unmapped by the frontend, then forgotten at a reset.
        assert_eq!(
            p.set_config(64, &placement_bytes(u64::MAX, 0)),
            ConfigWrite::Unplaced
        );
        assert_eq!(p.span(), None);
        p.set_config(64, &bytes);
        p.forget();
        assert_eq!(p.span(), None);
    }

    #[test]
    fn bad_placements_are_ignored_and_leave_the_last_one() {
        let p = WindowPlacement::new(Some(8 * MIB));
        p.set_config(64, &placement_bytes(1 << 40, 8 * MIB));
        let cases: [(u32, Vec<u8>, PlacementError); 4] = [
            (
                64,
                placement_bytes(1 << 41, 4 * MIB),
                PlacementError::Length {
                    got: 4 * MIB,
                    want: 8 * MIB,
                },
            ),
            (
                64,
                placement_bytes(u64::MAX - MIB, 8 * MIB),
                PlacementError::Wraps {
                    gpa: u64::MAX - MIB,
                    len: 8 * MIB,
                },
            ),
            (
                64,
                placement_bytes(1 << 41, 8 * MIB)[..8].to_vec(),
                PlacementError::Partial { offset: 64, len: 8 },
            ),
            (
                60,
                placement_bytes(1 << 41, 8 * MIB),
                PlacementError::Partial {
                    offset: 60,
                    len: 16,
                },
            ),
        ];
        for (offset, bytes, error) in cases {
            assert_eq!(p.set_config(offset, &bytes), ConfigWrite::Refused(error));
            assert_eq!(p.span().map(|s| s.gpa), Some(1 << 40));
        }
        // The guest-visible config and beyond the placement: not ours.
        assert_eq!(p.set_config(0, &[0; 40]), ConfigWrite::Elsewhere);
        assert_eq!(p.set_config(80, &[0; 16]), ConfigWrite::Elsewhere);
        assert_eq!(p.span().map(|s| s.gpa), Some(1 << 40));
        // Without a window, nothing is recorded.
        let none = WindowPlacement::new(None);
        assert_eq!(
            none.set_config(64, &placement_bytes(1 << 40, 8 * MIB)),
            ConfigWrite::Refused(PlacementError::NoWindow)
        );
        assert_eq!(none.span(), None);
    }

    #[test]
    fn a_window_piece_lies_wholly_inside_the_span() {
        let span = WindowSpan {
            gpa: 0x1_0000_0000,
            len: 2 * MIB,
        };
        assert_eq!(span.offset_of(0x1_0000_0000, 4096), Some(0));
        assert_eq!(
            span.offset_of(0x1_0000_0000 + 2 * MIB - 8, 8),
            Some(2 * MIB - 8)
        );
        // Straddling either end, empty, or wrapping: not a window piece.
        assert_eq!(span.offset_of(0x1_0000_0000 + 2 * MIB - 8, 9), None);
        assert_eq!(span.offset_of(0x1_0000_0000 - 1, 8), None);
        assert_eq!(span.offset_of(0x1_0000_0000, 0), None);
        assert_eq!(span.offset_of(0x1_0000_0000 + 8, u64::MAX), None);
    }
}
