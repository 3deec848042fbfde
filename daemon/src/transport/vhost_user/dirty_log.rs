//! Dirty-page logging, so that a frontend can live-migrate the guest
//! (VHOST_F_LOG_ALL, VHOST_USER_PROTOCOL_F_LOG_SHMFD; the vhost-user spec,
//! "Migration").
//!
//! During precopy the frontend copies guest RAM while the guest runs, and
//! copies again every page written since. It learns of the guest's own
//! writes from KVM; of the daemon's only from the *dirty log*, a memfd it
//! passes with SET_LOG_BASE holding one bit per 4 KiB page of guest-physical
//! memory. A byte the daemon writes into guest RAM without setting its
//! page's bit reaches the destination stale.
//!
//! Every region of guest memory ([`GuestRam`]) carries a [`DirtyBitmap`]:
//! a slot for its part of the log. vhost-user-backend's handler fills the
//! slots at SET_LOG_BASE, and from then on every write through vm-memory
//! sets the bits of the pages it touched — reply headers and small replies
//! (`VolatileSlice::copy_from` in [`super::window_buffers::scatter`]) and
//! the used ring (virtio-queue). The one write that bypasses vm-memory is
//! READ data, read by `preadv` straight into iovecs built from the slices'
//! pointers ([`super::guest_io`]): it marks what the call returned with
//! [`mark_written`]. Window pieces are written into the mapped files
//! (`pwrite`), not guest RAM, so they have nothing to mark.
//!
//! vhost-user-backend has a bitmap of its own for this, `BitmapMmapRegion`,
//! but every slice of guest memory clones its `Arc` and every write takes
//! its `RwLock`, logging or not: READ 4 KiB cost 5-17% more daemon CPU
//! (docs/benchmarks.md, "Dirty logging"). A [`DirtySlice`] borrows its
//! region's slot instead, and a write without a log costs one atomic load.
//! Owning the slot also lets the device do what vhost-user-backend leaves
//! out ([`DirtyLog`]): stop logging when a SET_FEATURES drops LOG_ALL (a
//! cancelled migration), and log regions added to the memory table after
//! SET_LOG_BASE.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use vhost::vhost_user::message::VhostUserVirtioFeatures;
use vhost_user_backend::bitmap::{AtomicBitmapMmap, BitmapReplace, MemRegionBitmap, MmapLogReg};
use vm_memory::bitmap::{Bitmap, BitmapSlice, WithBitmapSlice};
use vm_memory::mmap::NewBitmap;
use vm_memory::{
    Address, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion, GuestRegionMmap, MmapRegion,
    VolatileSlice,
};

/// Bytes of guest memory one bit of the log stands for (`VHOST_LOG_PAGE`).
pub const LOG_PAGE: usize = 4096;

/// Guest memory as the daemon maps it: each region with its slot for the
/// frontend's dirty log.
pub type GuestRam = GuestMemoryMmap<DirtyBitmap>;

/// A memory region's slot for its part of the frontend's dirty log. Clones
/// share the slot.
#[derive(Debug, Default, Clone)]
pub struct DirtyBitmap {
    slot: Arc<LogSlot>,
}

/// A [`DirtyBitmap`] from `base` bytes into its region on: what a slice of
/// guest memory carries. It borrows the region's slot.
#[derive(Debug, Clone, Copy)]
pub struct DirtySlice<'a> {
    slot: &'a LogSlot,
    base: usize,
}

#[derive(Debug, Default)]
struct LogSlot {
    /// Whether `log` holds a log: read before every mark, so that a write
    /// without one costs this load and nothing else.
    on: AtomicBool,
    log: RwLock<Option<RegionLog>>,
}

/// The part of the frontend's log that covers one memory region.
#[derive(Debug)]
pub struct RegionLog {
    log: Arc<MmapLogReg>,
    /// The region's guest-physical address and length: the log's bits are
    /// numbered by guest-physical page.
    start: usize,
    len: usize,
}

impl LogSlot {
    fn mark(&self, offset: usize, len: usize) {
        if !self.on.load(Ordering::Acquire) {
            return;
        }
        if let Some(log) = self.read().as_ref() {
            log.mark(offset, len);
        }
    }

    fn dirty_at(&self, offset: usize) -> bool {
        self.on.load(Ordering::Acquire) && self.read().as_ref().is_some_and(|l| l.dirty_at(offset))
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Option<RegionLog>> {
        self.log.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn set(&self, log: Option<RegionLog>) {
        let mut slot = self.log.write().unwrap_or_else(PoisonError::into_inner);
        self.on.store(log.is_some(), Ordering::Release);
        *slot = log;
    }

    /// The log mapping this region's part is in.
    fn log_memory(&self) -> Option<Arc<MmapLogReg>> {
        self.read().as_ref().map(|l| Arc::clone(&l.log))
    }
}

impl MemRegionBitmap for RegionLog {
    fn new<R: GuestMemoryRegion>(region: &R, log: Arc<MmapLogReg>) -> io::Result<Self> {
        // vhost-user-backend's own bitmap checks that the log covers the
        // whole region (the log's length is private to it); if it does not,
        // nothing is installed and SET_LOG_BASE fails.
        AtomicBitmapMmap::new(region, Arc::clone(&log))?;
        let invalid = |_| io::Error::from(io::ErrorKind::InvalidData);
        Ok(Self {
            log,
            start: usize::try_from(region.start_addr().raw_value()).map_err(invalid)?,
            len: usize::try_from(region.len()).map_err(invalid)?,
        })
    }
}

impl RegionLog {
    fn mark(&self, offset: usize, len: usize) {
        for page in log_pages(self.start, self.len, offset, len) {
            // In bounds: `new` checked that the log covers the region.
            self.log[page / 8].fetch_or(1 << (page % 8), Ordering::Relaxed);
        }
    }

    fn dirty_at(&self, offset: usize) -> bool {
        log_pages(self.start, self.len, offset, 1)
            .any(|page| self.log[page / 8].load(Ordering::Relaxed) & (1 << (page % 8)) != 0)
    }
}

/// The guest-physical page numbers of bytes `[offset, offset + len)` of a
/// region of `region_len` bytes at `start`, clipped to the region.
fn log_pages(start: usize, region_len: usize, offset: usize, len: usize) -> std::ops::Range<usize> {
    let end = offset.saturating_add(len).min(region_len);
    if offset >= end {
        return 0..0;
    }
    // `start + region_len` fits: the region is mapped.
    (start + offset) / LOG_PAGE..(start + end - 1) / LOG_PAGE + 1
}

impl<'a> WithBitmapSlice<'a> for DirtyBitmap {
    type S = DirtySlice<'a>;
}

impl Bitmap for DirtyBitmap {
    fn mark_dirty(&self, offset: usize, len: usize) {
        self.slot.mark(offset, len);
    }

    fn dirty_at(&self, offset: usize) -> bool {
        self.slot.dirty_at(offset)
    }

    fn slice_at(&self, offset: usize) -> DirtySlice<'_> {
        DirtySlice {
            slot: &self.slot,
            base: offset,
        }
    }
}

impl NewBitmap for DirtyBitmap {
    fn with_len(_len: usize) -> Self {
        Self::default()
    }
}

/// What vhost-user-backend's handler calls at SET_LOG_BASE, for every
/// region.
impl BitmapReplace for DirtyBitmap {
    type InnerBitmap = RegionLog;

    fn replace(&self, log: RegionLog) {
        self.slot.set(Some(log));
    }
}

impl<'b> WithBitmapSlice<'b> for DirtySlice<'_> {
    type S = Self;
}

impl BitmapSlice for DirtySlice<'_> {}

impl Bitmap for DirtySlice<'_> {
    fn mark_dirty(&self, offset: usize, len: usize) {
        self.slot.mark(self.base.saturating_add(offset), len);
    }

    fn dirty_at(&self, offset: usize) -> bool {
        self.slot.dirty_at(self.base.saturating_add(offset))
    }

    fn slice_at(&self, offset: usize) -> Self {
        Self {
            base: self.base.saturating_add(offset),
            ..*self
        }
    }
}

/// The device's side of the log, for the frontend messages that
/// vhost-user-backend does not pass on to it: the slots of the memory
/// table last seen.
#[derive(Debug, Default)]
pub struct DirtyLog {
    regions: Mutex<Vec<DirtyBitmap>>,
}

impl DirtyLog {
    /// The memory table changed (SET_MEM_TABLE, ADD_MEM_REG, REM_MEM_REG):
    /// regions that came without a log get the one the others hold. QEMU
    /// sends SET_LOG_BASE again only when the log must grow, and expects
    /// the new table to be logged into the old log.
    pub fn memory_changed(&self, mem: &GuestRam) {
        let mut regions = self.regions.lock().unwrap_or_else(PoisonError::into_inner);
        let current = regions
            .iter()
            .chain(mem.iter().map(slot_of))
            .find_map(|bitmap| bitmap.slot.log_memory());
        if let Some(log) = current {
            for region in mem.iter() {
                if slot_of(region).slot.on.load(Ordering::Acquire) {
                    continue;
                }
                match RegionLog::new(region, Arc::clone(&log)) {
                    Ok(part) => slot_of(region).replace(part),
                    Err(error) => tracing::warn!(
                        start = region.start_addr().raw_value(),
                        %error,
                        "memory region outside the dirty log: the daemon's writes into it are not logged"
                    ),
                }
            }
        }
        *regions = mem.iter().map(|region| slot_of(region).clone()).collect();
    }

    /// SET_FEATURES: without LOG_ALL no migration is running (any more):
    /// every region lets go of its log, which the frontend may free.
    pub fn features_acked(&self, features: u64) {
        if features & VhostUserVirtioFeatures::LOG_ALL.bits() != 0 {
            return;
        }
        for bitmap in self
            .regions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            bitmap.slot.set(None);
        }
    }
}

/// A region's own bitmap (`GuestMemoryRegion::bitmap` gives a slice).
fn slot_of(region: &GuestRegionMmap<DirtyBitmap>) -> &DirtyBitmap {
    MmapRegion::bitmap(region)
}

/// Marks the first `written` bytes of `slices`, taken in order as one
/// buffer, in their regions' dirty logs: what a vectored read into iovecs
/// made from those slices wrote. Bytes past the slices are ignored.
pub fn mark_written<'s, 'm: 's, B: BitmapSlice + 'm>(
    slices: impl IntoIterator<Item = &'s VolatileSlice<'m, B>>, written: usize,
) {
    let mut left = written;
    for slice in slices {
        if left == 0 {
            break;
        }
        let len = slice.len().min(left);
        slice.bitmap().mark_dirty(0, len);
        left -= len;
    }
}

/// The page size of the dirty log (and of the tests' bitmaps).
#[cfg(test)]
pub(super) const PAGE: u64 = LOG_PAGE as u64;

/// The numbers of the guest pages (address / [`PAGE`]) whose dirty bit is
/// set in a memory tracked with vm-memory's own bitmap, as the tests use.
#[cfg(test)]
pub(super) fn dirty_pages(mem: &GuestMemoryMmap<vm_memory::bitmap::AtomicBitmap>) -> Vec<u64> {
    mem.iter()
        .flat_map(|region| {
            let start = region.start_addr().0;
            (0..region.len() / PAGE)
                .filter(|page| region.bitmap().dirty_at((page * PAGE) as usize))
                .map(move |page| (start + page * PAGE) / PAGE)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::bitmap::AtomicBitmap;
    use vm_memory::GuestAddress;

    /// 16 pages at 0 and 4 at 64 KiB, each page's dirty bit tracked.
    fn memory() -> GuestMemoryMmap<AtomicBitmap> {
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 16 * PAGE as usize),
            (GuestAddress(64 << 10), 4 * PAGE as usize),
        ])
        .unwrap()
    }

    #[test]
    fn only_the_bytes_written_are_marked_across_slices_and_regions() {
        let mem = memory();
        let slices = [
            // The last 16 bytes of page 1.
            mem.get_slice(GuestAddress(2 * PAGE - 16), 16).unwrap(),
            // Pages 4 and 5, wholly.
            mem.get_slice(GuestAddress(4 * PAGE), 2 * PAGE as usize)
                .unwrap(),
            // The second region's first page, then its third.
            mem.get_slice(GuestAddress(64 << 10), PAGE as usize)
                .unwrap(),
            mem.get_slice(GuestAddress((64 << 10) + 2 * PAGE), PAGE as usize)
                .unwrap(),
        ];
        assert_eq!(dirty_pages(&mem), Vec::<u64>::new());
        // A short read: 16 bytes, page 4, one byte of page 5.
        mark_written(&slices, 16 + PAGE as usize + 1);
        assert_eq!(dirty_pages(&mem), [1, 4, 5]);
        // The rest, and more than the slices hold.
        mark_written(&slices, usize::MAX);
        assert_eq!(dirty_pages(&mem), [1, 4, 5, 16, 18]);
    }

    #[test]
    fn nothing_written_marks_nothing() {
        let mem = memory();
        let slices = [mem.get_slice(GuestAddress(0), PAGE as usize).unwrap()];
        mark_written(&slices, 0);
        mark_written(&slices[..0], 4096);
        assert_eq!(dirty_pages(&mem), Vec::<u64>::new());
    }

    #[test]
    fn a_region_log_covers_the_pages_of_the_bytes_clipped_to_its_region() {
        const P: usize = LOG_PAGE;
        // A region of 3 pages at page 16.
        let pages = |offset, len| log_pages(16 * P, 3 * P, offset, len);
        assert_eq!(pages(0, 1), 16..17);
        assert_eq!(pages(P - 1, 2), 16..18);
        assert_eq!(pages(P, P), 17..18);
        assert_eq!(pages(0, 3 * P), 16..19);
        // Past the region: clipped, or nothing.
        assert_eq!(pages(2 * P, usize::MAX), 18..19);
        assert_eq!(pages(3 * P, 1), 0..0);
        assert_eq!(pages(P, 0), 0..0);
        // A region that does not start on a page: pages by guest address.
        assert_eq!(log_pages(P + 100, P, P - 100, 101), 2..3);
    }

    #[test]
    fn without_a_log_guest_memory_marks_nothing_and_dropping_logall_is_harmless() {
        // The daemon's memory before SET_LOG_BASE: writes go through, and
        // neither a memory change nor a SET_FEATURES finds a log to carry.
        let mem = GuestRam::from_ranges(&[(GuestAddress(0), 4 * PAGE as usize)]).unwrap();
        let log = DirtyLog::default();
        log.memory_changed(&mem);
        let slices = [mem.get_slice(GuestAddress(PAGE), PAGE as usize).unwrap()];
        slices[0].copy_from(&[1u8; 16]);
        mark_written(&slices, PAGE as usize);
        log.features_acked(0);
        assert!(!slices[0].bitmap().dirty_at(0));
        assert!(!slices[0].bitmap().slice_at(8).dirty_at(0));
        let region = mem.iter().next().unwrap();
        assert!(slot_of(region).slot.log_memory().is_none());
    }
}
