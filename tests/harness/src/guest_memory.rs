//! Guest memory shared with the backend: one memfd-backed region, mapped here through
//! vm-memory and handed to the backend with SET_MEM_TABLE, plus a small allocator that
//! places rings and request buffers in it.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;

use vhost::VhostUserMemoryRegionInfo;
use vm_memory::{
    Bytes, FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
};

use crate::error::{HarnessError, Result};

/// The guest's RAM: `size` bytes at guest-physical `base`, backed by a memfd.
#[derive(Debug)]
pub struct GuestMemory {
    mem: GuestMemoryMmap,
    base: u64,
    size: u64,
}

impl GuestMemory {
    /// Creates a memfd of `size` bytes and maps it at guest-physical `base`.
    pub fn new_memfd(base: u64, size: usize) -> Result<Self> {
        if size == 0 {
            return Err(HarnessError::InvalidConfig(
                "guest memory size is 0".to_string(),
            ));
        }
        let fd =
            rustix::fs::memfd_create("daxfsd-harness-guest-ram", rustix::fs::MemfdFlags::CLOEXEC)
                .map_err(|e| HarnessError::io("memfd_create for guest memory", e.into()))?;
        let file = File::from(fd);
        file.set_len(size as u64)
            .map_err(|e| HarnessError::io("sizing the guest memory memfd", e))?;
        let mem = GuestMemoryMmap::from_ranges_with_files([(
            GuestAddress(base),
            size,
            Some(FileOffset::new(file, 0)),
        )])
        .map_err(HarnessError::GuestMemoryMap)?;
        Ok(GuestMemory {
            mem,
            base,
            size: size as u64,
        })
    }

    /// The vm-memory view, for code that wants `Bytes` access directly.
    pub fn mmap(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// First guest-physical address.
    pub fn base(&self) -> u64 {
        self.base
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Whether `[addr, addr + len)` lies inside guest memory.
    pub fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.base
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= self.base + self.size)
    }

    /// Region descriptions for SET_MEM_TABLE (memfd, offset, this process's address).
    pub fn region_infos(&self) -> Result<Vec<VhostUserMemoryRegionInfo>> {
        self.mem
            .iter()
            .map(|region| {
                VhostUserMemoryRegionInfo::from_guest_region(region)
                    .map_err(|e| HarnessError::vhost("describing guest memory region", e))
            })
            .collect()
    }

    /// This process's address of guest-physical `addr` (vring addresses in vhost-user are
    /// frontend virtual addresses).
    pub fn host_address(&self, addr: u64) -> Result<u64> {
        let region = self
            .mem
            .find_region(GuestAddress(addr))
            .ok_or(HarnessError::OutOfGuestMemory(addr))?;
        let offset = addr - region.start_addr().0;
        Ok(region.as_ptr() as u64 + offset)
    }

    /// Copies `data` to guest-physical `addr`.
    pub fn write(&self, addr: u64, data: &[u8]) -> Result<()> {
        self.mem
            .write_slice(data, GuestAddress(addr))
            .map_err(|source| HarnessError::GuestMemoryAccess {
                addr,
                len: data.len(),
                source,
            })
    }

    /// Reads `len` bytes at guest-physical `addr`.
    pub fn read(&self, addr: u64, len: usize) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; len];
        self.mem
            .read_slice(&mut buf, GuestAddress(addr))
            .map_err(|source| HarnessError::GuestMemoryAccess { addr, len, source })?;
        Ok(buf)
    }

    /// Writes a plain-old-data value.
    pub(crate) fn write_obj<T: vm_memory::ByteValued>(&self, val: T, addr: u64) -> Result<()> {
        self.mem
            .write_obj(val, GuestAddress(addr))
            .map_err(|source| HarnessError::GuestMemoryAccess {
                addr,
                len: std::mem::size_of::<T>(),
                source,
            })
    }

    /// Reads a plain-old-data value.
    pub(crate) fn read_obj<T: vm_memory::ByteValued>(&self, addr: u64) -> Result<T> {
        self.mem
            .read_obj(GuestAddress(addr))
            .map_err(|source| HarnessError::GuestMemoryAccess {
                addr,
                len: std::mem::size_of::<T>(),
                source,
            })
    }

    /// Atomic little-endian u16 store (ring indices).
    pub(crate) fn store_u16(&self, val: u16, addr: u64, order: Ordering) -> Result<()> {
        self.mem
            .store(u16::to_le(val), GuestAddress(addr), order)
            .map_err(|source| HarnessError::GuestMemoryAccess {
                addr,
                len: 2,
                source,
            })
    }

    /// Atomic little-endian u16 load (ring indices).
    pub(crate) fn load_u16(&self, addr: u64, order: Ordering) -> Result<u16> {
        self.mem
            .load(GuestAddress(addr), order)
            .map(u16::from_le)
            .map_err(|source| HarnessError::GuestMemoryAccess {
                addr,
                len: 2,
                source,
            })
    }
}

/// A memory region besides guest RAM, as a frontend adds one with ADD_MEM_REG (upstream
/// QEMU 11.1 adds one per DAX mapping): a memfd of `len` bytes at guest-physical `gpa`,
/// and its description (keep the file open while the description is in use).
pub fn memfd_region(gpa: u64, len: u64) -> Result<(File, VhostUserMemoryRegionInfo)> {
    let fd = rustix::fs::memfd_create("daxfsd-harness-region", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| HarnessError::io("memfd_create for a memory region", e.into()))?;
    let file = File::from(fd);
    file.set_len(len)
        .map_err(|e| HarnessError::io("sizing a memory region's memfd", e))?;
    let info = VhostUserMemoryRegionInfo {
        guest_phys_addr: gpa,
        memory_size: len,
        // The frontend's own address of the region; only a label for the backend.
        userspace_addr: 0x7000_0000_0000 + gpa,
        mmap_offset: 0,
        mmap_handle: file.as_raw_fd(),
    };
    Ok((file, info))
}

/// A block of guest memory handed out by [`GuestAllocator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestBuf {
    /// Guest-physical address.
    pub addr: u64,
    /// Length in bytes (as allocated, at least the requested length).
    pub len: u64,
}

/// First-fit allocator over a guest-physical range; frees coalesce with neighbours.
#[derive(Debug)]
pub struct GuestAllocator {
    /// Free blocks: start → length, disjoint and non-adjacent.
    free: BTreeMap<u64, u64>,
}

/// Granule of every allocation.
const ALLOC_GRANULE: u64 = 16;

impl GuestAllocator {
    /// An allocator owning `[base, base + len)`.
    pub fn new(base: u64, len: u64) -> Self {
        let mut free = BTreeMap::new();
        if len > 0 {
            free.insert(base, len);
        }
        GuestAllocator { free }
    }

    /// Allocates `len` bytes (rounded up to 16) aligned to `align` (a power of two).
    pub fn alloc(&mut self, len: u64, align: u64) -> Result<GuestBuf> {
        let align = align.max(ALLOC_GRANULE);
        debug_assert!(align.is_power_of_two());
        let len = len
            .max(1)
            .checked_next_multiple_of(ALLOC_GRANULE)
            .ok_or(HarnessError::OutOfGuestMemory(len))?;
        let found = self.free.iter().find_map(|(&start, &size)| {
            let aligned = start.checked_next_multiple_of(align)?;
            let end = aligned.checked_add(len)?;
            (end <= start + size).then_some((start, size, aligned))
        });
        let (start, size, aligned) = found.ok_or(HarnessError::OutOfGuestMemory(len))?;
        self.free.remove(&start);
        if aligned > start {
            self.free.insert(start, aligned - start);
        }
        let end = aligned + len;
        if end < start + size {
            self.free.insert(end, start + size - end);
        }
        Ok(GuestBuf { addr: aligned, len })
    }

    /// Returns a block to the allocator.
    pub fn free(&mut self, buf: GuestBuf) {
        let mut start = buf.addr;
        let mut len = buf.len;
        // Merge with the block just before.
        if let Some((&prev, &prev_len)) = self.free.range(..start).next_back() {
            if prev + prev_len == start {
                self.free.remove(&prev);
                start = prev;
                len += prev_len;
            }
        }
        // Merge with the block just after.
        if let Some(&next_len) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            len += next_len;
        }
        self.free.insert(start, len);
    }

    /// Total free bytes.
    pub fn free_bytes(&self) -> u64 {
        self.free.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocator_reuses_and_coalesces() {
        let mut a = GuestAllocator::new(0x1000, 0x1000);
        let x = a.alloc(100, 16).unwrap();
        let y = a.alloc(0x200, 0x100).unwrap();
        assert_eq!(x.addr, 0x1000);
        assert_eq!(x.len, 112);
        assert_eq!(y.addr % 0x100, 0);
        assert!(y.addr >= x.addr + x.len);
        assert!(a.alloc(0x1000, 16).is_err());
        a.free(x);
        a.free(y);
        assert_eq!(a.free_bytes(), 0x1000);
        assert_eq!(a.free.len(), 1, "blocks must coalesce: {:?}", a.free);
        assert_eq!(a.alloc(0x1000, 16).unwrap().addr, 0x1000);
    }

    #[test]
    fn memfd_memory_round_trip() {
        let mem = GuestMemory::new_memfd(0x10_0000, 1 << 20).unwrap();
        mem.write(0x10_0010, b"hello").unwrap();
        assert_eq!(mem.read(0x10_0010, 5).unwrap(), b"hello");
        assert!(mem.read(0x0, 4).is_err());
        assert!(mem.contains(0x10_0000, 1 << 20));
        assert!(!mem.contains(0x10_0000, (1 << 20) + 1));
        let infos = mem.region_infos().unwrap();
        assert_eq!(infos.len(), 1);
        assert_eq!(infos[0].guest_phys_addr, 0x10_0000);
        assert!(infos[0].mmap_handle >= 0);
    }
}
