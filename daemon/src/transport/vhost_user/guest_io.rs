//! File data moved straight from a host file into the guest's buffers: READ
//! fills the writable descriptors of its chain with `preadv`, so the data is
//! never copied through a daemon buffer. [`GuestBuffers`] is the vhost-user
//! transport's [`ReadSink`]: the filesystem reads into it without knowing it
//! is guest memory. (WRITE still copies its request: for
//! 4 KiB writes the copy is under 1% of the daemon's time, the rest being the
//! host filesystem's write path; see docs/benchmarks.md.)
//!
//! [`GuestBuffers`] names a byte range of a chain's buffers as pieces of
//! guest-physical memory, each inside one memory region. The kernel reaches
//! them through iovecs built from vm-memory `VolatileSlice`s, a bounded batch
//! on the stack at a time: no allocation per request. The kernel's writes
//! bypass vm-memory, so the bytes each call returned are marked in the dirty
//! log afterwards ([`super::dirty_log`]).

use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use vm_memory::bitmap::{Bitmap, MS};
use vm_memory::volatile_memory::PtrGuardMut;
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, VolatileSlice};

use super::dirty_log::{mark_written, DirtyBitmap};
use crate::dispatch::ReplySpace;
use crate::errno::Errno;
use crate::fs::ReadSink;

/// Most iovecs handed to one `preadv` (a 1 MiB transfer in 4 KiB
/// guest pages takes 256; the kernel's limit is 1024).
const IOV_BATCH: usize = 64;

/// A byte range of guest buffers: `len` bytes starting `skip` bytes into the
/// concatenation of `pieces` (guest address, length), all inside `mem`,
/// whose regions' bitmaps `B` take the dirty marks (the daemon's: the
/// frontend's dirty log).
#[derive(Debug)]
pub struct GuestBuffers<'a, B: Bitmap + 'static = DirtyBitmap> {
    mem: &'a GuestMemoryMmap<B>,
    pieces: &'a [(GuestAddress, usize)],
    skip: usize,
    len: usize,
}

// Derived, they would ask `B` to be `Copy` too.
impl<B: Bitmap + 'static> Clone for GuestBuffers<'_, B> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<B: Bitmap + 'static> Copy for GuestBuffers<'_, B> {}

impl<'a, B: Bitmap + 'static> GuestBuffers<'a, B> {
    /// All of `pieces`, which the caller validated against `mem` (a piece that
    /// is not inside one region makes the transfer fail with EFAULT).
    pub fn new(mem: &'a GuestMemoryMmap<B>, pieces: &'a [(GuestAddress, usize)]) -> Self {
        let len = pieces.iter().map(|&(_, n)| n).sum();
        Self {
            mem,
            pieces,
            skip: 0,
            len,
        }
    }

    /// Bytes in the range.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the range is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sub-range `[from, from + len)` of this range, clipped to it.
    pub fn range(&self, from: usize, len: usize) -> Self {
        let from = from.min(self.len);
        Self {
            skip: self.skip + from,
            len: len.min(self.len - from),
            ..*self
        }
    }

    /// Fills `batch` with iovecs for the pieces from byte `from` of the range
    /// on, at most [`IOV_BATCH`] of them; returns how many.
    fn fill(&self, from: usize, batch: &mut IovBatch<'a, B>) -> std::io::Result<usize> {
        let mut start = self.skip + from;
        let mut left = self.len.saturating_sub(from);
        let mut count = 0;
        for &(addr, piece_len) in self.pieces {
            if left == 0 || count == IOV_BATCH {
                break;
            }
            if start >= piece_len {
                start -= piece_len;
                continue;
            }
            let take = (piece_len - start).min(left);
            let slice = addr
                .checked_add(start as u64)
                .and_then(|at| self.mem.get_slice(at, take).ok())
                .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EFAULT))?;
            let guard = slice.ptr_guard_mut();
            batch.iov[count] = libc::iovec {
                iov_base: guard.as_ptr().cast(),
                iov_len: guard.len(),
            };
            batch.slices[count] = Some((slice, guard));
            count += 1;
            left -= take;
            start = 0;
        }
        Ok(count)
    }
}

impl<B: Bitmap + 'static> ReplySpace for GuestBuffers<'_, B> {
    fn capacity(&self) -> usize {
        self.len()
    }

    fn read_into_range(
        &self, from: usize, len: usize,
        read: &mut dyn FnMut(&mut dyn ReadSink) -> Result<usize, Errno>,
    ) -> Result<usize, Errno> {
        read(&mut self.range(from, len))
    }
}

impl<B: Bitmap + 'static> ReadSink for GuestBuffers<'_, B> {
    fn len(&self) -> usize {
        GuestBuffers::len(self)
    }

    fn read_from(&mut self, file: BorrowedFd<'_>, offset: u64) -> std::io::Result<usize> {
        read_into(file, offset, self)
    }
}

/// Iovecs for one system call, with the slices they were made from (whose
/// bitmaps take the dirty marks) and the guards that keep their memory
/// mapped until the call returns.
struct IovBatch<'a, B: Bitmap + 'static> {
    iov: [libc::iovec; IOV_BATCH],
    slices: [Option<GuestSlice<'a, B>>; IOV_BATCH],
}

/// A slice of guest memory and the guard of the pointer an iovec holds.
type GuestSlice<'a, B> = (VolatileSlice<'a, MS<'a, GuestMemoryMmap<B>>>, PtrGuardMut);

impl<B: Bitmap + 'static> IovBatch<'_, B> {
    fn new() -> Self {
        let empty = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        Self {
            iov: [empty; IOV_BATCH],
            slices: std::array::from_fn(|_| None),
        }
    }
}

/// Retries a positional vectored read into `buffers` until they are full,
/// the file ends (a 0 return) or it fails; EINTR is retried. An error after
/// some bytes moved returns the count so far, as a short read. The bytes
/// each call returned are marked dirty (only those: a short read leaves the
/// rest of the buffers unmarked).
fn transfer_all<B: Bitmap + 'static>(
    buffers: &GuestBuffers<'_, B>, offset: u64, mut op: impl FnMut(&[libc::iovec], i64) -> isize,
) -> std::io::Result<usize> {
    let mut batch = IovBatch::new();
    let mut done = 0;
    while done < buffers.len() {
        let count = buffers.fill(done, &mut batch)?;
        let pos = offset
            .checked_add(done as u64)
            .and_then(|p| i64::try_from(p).ok())
            .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let n = op(&batch.iov[..count], pos);
        if n < 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            if done == 0 {
                return Err(err);
            }
            break;
        }
        if n == 0 {
            break;
        }
        let n = n as usize;
        mark_written(batch.slices[..count].iter().flatten().map(|(s, _)| s), n);
        done += n;
    }
    Ok(done)
}

/// Reads from `fd` at `offset` into `buffers` until they are full or the file
/// ends; returns the bytes read.
pub fn read_into<B: Bitmap + 'static>(
    fd: impl AsFd, offset: u64, buffers: &GuestBuffers<'_, B>,
) -> std::io::Result<usize> {
    let raw = fd.as_fd().as_raw_fd();
    transfer_all(buffers, offset, |iov, pos| {
        // SAFETY: each iovec is exactly a VolatileSlice obtained from
        // `buffers.mem` (so inside one mapped region), whose pointer guard the
        // batch keeps alive until this call returns; no Rust reference covers
        // guest memory, and the kernel writing into it while the guest may
        // look is what a device-writable virtio buffer is for. `raw` is
        // borrowed from `fd` for the call; the count is at most IOV_BATCH.
        unsafe { libc::preadv(raw, iov.as_ptr(), iov.len() as i32, pos) }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::vhost_user::dirty_log::{dirty_pages, PAGE};
    use std::io::Write;
    use vm_memory::bitmap::AtomicBitmap;
    use vm_memory::Bytes;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10000), (GuestAddress(0x20000), 0x1000)])
            .unwrap()
    }

    #[test]
    fn read_fills_pieces_after_the_skipped_bytes() {
        let mem = memory();
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        file.write_all(&data).unwrap();
        let pieces = [
            (GuestAddress(0x100), 10),
            (GuestAddress(0x2000), 30),
            (GuestAddress(0x20010), 500),
        ];
        let all = GuestBuffers::new(&mem, &pieces);
        assert_eq!(all.len(), 540);
        // Skip a 16-byte "header": 10 bytes of piece 0 and 6 of piece 1.
        let body = all.range(16, 100);
        let n = read_into(&file, 5, &body).unwrap();
        assert_eq!(n, 100);
        let mut got = vec![0u8; 24];
        mem.read_slice(&mut got, GuestAddress(0x2006)).unwrap();
        assert_eq!(got, data[5..29]);
        let mut got = vec![0u8; 76];
        mem.read_slice(&mut got, GuestAddress(0x20010)).unwrap();
        assert_eq!(got, data[29..105]);
        // The skipped bytes were not touched.
        let mut head = vec![0u8; 6];
        mem.read_slice(&mut head, GuestAddress(0x2000)).unwrap();
        assert_eq!(head, [0; 6]);
    }

    #[test]
    fn read_stops_at_end_of_file() {
        let mem = memory();
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(b"short").unwrap();
        let pieces = [(GuestAddress(0), 4096)];
        let n = read_into(&file, 2, &GuestBuffers::new(&mem, &pieces)).unwrap();
        assert_eq!(n, 3);
    }

    #[test]
    fn many_pieces_take_several_batches() {
        let mem = memory();
        let mut file = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..(IOV_BATCH * 3 * 16) as u32)
            .map(|i| (i % 251) as u8)
            .collect();
        file.write_all(&data).unwrap();
        // 16-byte pieces with 16-byte gaps: 3 batches of iovecs.
        let pieces: Vec<_> = (0..IOV_BATCH * 3)
            .map(|i| (GuestAddress(i as u64 * 32), 16))
            .collect();
        let n = read_into(&file, 0, &GuestBuffers::new(&mem, &pieces)).unwrap();
        assert_eq!(n, data.len());
        for (i, &(addr, len)) in pieces.iter().enumerate() {
            let mut got = vec![0u8; len];
            mem.read_slice(&mut got, addr).unwrap();
            assert_eq!(got, data[i * 16..i * 16 + 16], "piece {i}");
        }
    }

    /// Guest memory whose pages' dirty bits are tracked (vm-memory's own
    /// bitmap: the daemon's is only readable through the frontend's log).
    fn tracked(pages: usize) -> GuestMemoryMmap<AtomicBitmap> {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), pages * PAGE as usize)]).unwrap()
    }

    #[test]
    fn a_read_marks_the_pages_it_filled_and_no_other() {
        let mem = tracked(8);
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&[7; 2 * PAGE as usize + 100]).unwrap();
        // The Linux layout: the reply header's descriptor (page 0), then one
        // descriptor per data page.
        let page = |n: u64| (GuestAddress(n * PAGE), PAGE as usize);
        let pieces = [(GuestAddress(0), 16), page(2), page(3), page(5), page(7)];
        let body = GuestBuffers::new(&mem, &pieces).range(16, 4 * PAGE as usize);
        // The file ends 100 bytes into the third page: page 7 stays clean,
        // and so does the header's page, which the read skipped.
        let n = read_into(&file, 0, &body).unwrap();
        assert_eq!(n, 2 * PAGE as usize + 100);
        assert_eq!(dirty_pages(&mem), [2, 3, 5]);
    }

    #[test]
    fn a_read_over_several_batches_marks_each_batchs_bytes() {
        let pieces: Vec<_> = (0..IOV_BATCH as u64 + 4)
            .map(|i| (GuestAddress((2 * i + 1) * PAGE), PAGE as usize))
            .collect();
        let mem = tracked(2 * pieces.len() + 2);
        let mut file = tempfile::tempfile().unwrap();
        // The second batch's second piece gets 1 byte.
        let len = (IOV_BATCH + 1) * PAGE as usize + 1;
        file.write_all(&vec![1; len]).unwrap();
        let n = read_into(&file, 0, &GuestBuffers::new(&mem, &pieces)).unwrap();
        assert_eq!(n, len);
        let want: Vec<u64> = (0..IOV_BATCH as u64 + 2).map(|i| 2 * i + 1).collect();
        assert_eq!(dirty_pages(&mem), want);
    }

    #[test]
    fn a_piece_outside_memory_is_efault() {
        let mem = memory();
        let pieces = [(GuestAddress(0x18000), 16)];
        let file = tempfile::tempfile().unwrap();
        let err = read_into(&file, 0, &GuestBuffers::new(&mem, &pieces)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EFAULT));
    }
}
