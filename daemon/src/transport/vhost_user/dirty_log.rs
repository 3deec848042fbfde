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
//! Guest memory carries vhost-user-backend's [`BitmapMmapRegion`] as its
//! bitmap ([`GuestRam`]): SET_LOG_BASE installs the log in every region
//! (vhost-user-backend's handler does it), and from then on every write
//! through vm-memory sets the bits of the pages it touched — reply headers
//! and small replies (`VolatileSlice::copy_from` in
//! [`super::window_buffers::scatter`]) and the used ring (virtio-queue).
//! Without a log the bitmap is an empty slot behind a read lock, checked on
//! each such write. The one write that bypasses vm-memory is READ data,
//! read by `preadv` straight into iovecs built from the slices' pointers
//! ([`super::guest_io`]): it marks what the call returned with
//! [`mark_written`]. Window pieces are written into the mapped files
//! (`pwrite`), not guest RAM, so they have nothing to mark.

use vm_memory::bitmap::BitmapSlice;
use vm_memory::{GuestMemoryMmap, VolatileSlice};

pub use vhost_user_backend::bitmap::BitmapMmapRegion;

/// Guest memory as the daemon maps it: each region with the slot for the
/// frontend's dirty log.
pub type GuestRam = GuestMemoryMmap<BitmapMmapRegion>;

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
pub(super) const PAGE: u64 = 4096;

/// The numbers of the guest pages (address / [`PAGE`]) whose dirty bit is
/// set in a memory tracked with vm-memory's own bitmap, as the tests use.
#[cfg(test)]
pub(super) fn dirty_pages(mem: &GuestMemoryMmap<vm_memory::bitmap::AtomicBitmap>) -> Vec<u64> {
    use vm_memory::bitmap::Bitmap;
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
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
    use vm_memory::bitmap::{AtomicBitmap, Bitmap};
    use vm_memory::{GuestAddress, GuestMemoryBackend};

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
    fn without_a_log_marking_is_a_no_op() {
        // The daemon's bitmap before SET_LOG_BASE: marking is a no-op.
        let mem = GuestRam::from_ranges(&[(GuestAddress(0), 4 * PAGE as usize)]).unwrap();
        let slices = [mem.get_slice(GuestAddress(0), PAGE as usize).unwrap()];
        mark_written(&slices, PAGE as usize);
        assert!(!slices[0].bitmap().dirty_at(0));
    }
}
