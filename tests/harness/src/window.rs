//! The DAX window as a VMM holds it: an anonymous `PROT_NONE` reservation into which
//! backend requests map file ranges with `MAP_FIXED`, plus the harness's own table of what
//! is mapped where.
//!
//! Two mapping disciplines:
//! - standard SHMEM_MAP/UNMAP: a map must land on free space (overlap is an error), an
//!   unmap must name exactly one existing mapping;
//! - legacy FS_MAP/FS_UNMAP: a map replaces whatever was in the range, an unmap punches
//!   any range (partial mappings are trimmed in the table).
//!
//! Reading and writing through the window goes through the table under its lock: a byte
//! that is not mapped (the page is `PROT_NONE`) or lies in a page past the mapped file's
//! end (`SIGBUS`) is refused instead of touched.

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use rustix::mm::{MapFlags, ProtFlags};
use vm_memory::VolatileSlice;

/// Why a window operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// The window size is zero or not a multiple of the page size.
    #[error("window size {size:#x} is not a positive multiple of the page size {page:#x}")]
    InvalidSize {
        /// Requested size.
        size: u64,
        /// Page size.
        page: u64,
    },
    /// The reservation mmap failed.
    #[error("cannot reserve a window of {size:#x} bytes")]
    Reserve {
        /// Requested size.
        size: u64,
        /// Cause reported by the OS.
        #[source]
        source: io::Error,
    },
    /// Zero-length map or unmap.
    #[error("zero-length range at window offset {offset:#x}")]
    ZeroLength {
        /// Window offset.
        offset: u64,
    },
    /// Offsets or length not page aligned.
    #[error(
        "misaligned request: window offset {offset:#x}, file offset {fd_offset:#x}, \
         length {len:#x} (page size {page:#x})"
    )]
    Misaligned {
        /// Window offset.
        offset: u64,
        /// File offset.
        fd_offset: u64,
        /// Length.
        len: u64,
        /// Page size.
        page: u64,
    },
    /// The range does not lie inside the window.
    #[error("range {offset:#x}+{len:#x} lies outside the window of {size:#x} bytes")]
    OutOfWindow {
        /// Window offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Window size.
        size: u64,
    },
    /// Standard map over an existing mapping.
    #[error(
        "map {offset:#x}+{len:#x} overlaps the existing mapping {existing_offset:#x}+{existing_len:#x}"
    )]
    Overlap {
        /// Window offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Offset of the mapping in the way.
        existing_offset: u64,
        /// Length of the mapping in the way.
        existing_len: u64,
    },
    /// Standard unmap that does not name exactly one mapping.
    #[error("no mapping is exactly {offset:#x}+{len:#x}")]
    NoSuchMapping {
        /// Window offset.
        offset: u64,
        /// Length.
        len: u64,
    },
    /// Unknown flag bits.
    #[error("unsupported flags {0:#x}")]
    BadFlags(u64),
    /// A backend request the harness does not serve (or with a body of the wrong size).
    #[error("unsupported backend request {request} with a {size}-byte body")]
    UnsupportedRequest {
        /// Request id.
        request: u32,
        /// Body size.
        size: u32,
    },
    /// Shared-memory region id other than 0.
    #[error("unknown shared memory region id {0}")]
    BadShmid(u8),
    /// A map request came without exactly one fd.
    #[error("map request carries {0} file descriptors, expected 1")]
    FdCount(usize),
    /// An unmap-style request carried fds.
    #[error("request carries {0} unexpected file descriptors")]
    UnexpectedFds(usize),
    /// mmap of the passed file failed.
    #[error("mmap of {len:#x} bytes at window offset {offset:#x} failed")]
    Mmap {
        /// Window offset.
        offset: u64,
        /// Length.
        len: u64,
        /// Cause reported by the OS.
        #[source]
        source: io::Error,
    },
    /// fstat of a mapped file failed.
    #[error("cannot stat the mapped file")]
    Stat(#[source] io::Error),
    /// Read or write touches an unmapped (`PROT_NONE`) byte.
    #[error("window offset {offset:#x} is not mapped")]
    NotMapped {
        /// First unmapped offset.
        offset: u64,
    },
    /// Write to a read-only mapping.
    #[error("window offset {offset:#x} is mapped read-only")]
    NotWritable {
        /// First read-only offset.
        offset: u64,
    },
    /// QEMU 11.1: the descriptor is shorter than the mapping (its message).
    #[error(
        "backing store size {size:#x} is too small for 'size' option {len:#x} plus 'offset' \
         option {offset:#x}"
    )]
    BackingStoreTooSmall {
        /// Size of the descriptor's file.
        size: u64,
        /// Length of the mapping.
        len: u64,
        /// File offset of the mapping.
        offset: u64,
    },
    /// QEMU 11.1: the descriptor is not open read-write (it maps every mapping writable).
    #[error("unable to map backing store for guest RAM: Permission denied")]
    BackingStoreNotWritable,
    /// Access to a page past the end of the mapped file (would raise SIGBUS).
    #[error("window offset {offset:#x} lies past the end of {source_path} ({file_size} bytes)")]
    BeyondFileEnd {
        /// Window offset.
        offset: u64,
        /// Path of the mapped file.
        source_path: String,
        /// Current file size.
        file_size: u64,
    },
}

impl WindowError {
    /// The errno a frontend would answer this refusal with (non-zero).
    pub fn errno(&self) -> i32 {
        match self {
            WindowError::Mmap { source, .. } | WindowError::Reserve { source, .. } => {
                source.raw_os_error().unwrap_or(libc::EIO)
            }
            WindowError::Overlap { .. } => libc::EEXIST,
            WindowError::NoSuchMapping { .. } => libc::ENOENT,
            WindowError::FdCount(_) | WindowError::UnexpectedFds(_) => libc::EBADF,
            WindowError::BackingStoreNotWritable => libc::EACCES,
            _ => libc::EINVAL,
        }
    }
}

/// One mapping as the harness recorded it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappingInfo {
    /// Window offset.
    pub offset: u64,
    /// Length.
    pub len: u64,
    /// Offset in the file.
    pub fd_offset: u64,
    /// Mapped `PROT_WRITE`.
    pub writable: bool,
    /// Mapped `PROT_READ` (always true for SHMEM_MAP).
    pub readable: bool,
    /// Path of the file at map time (from /proc/self/fd).
    pub source: PathBuf,
    /// Device of the file.
    pub dev: u64,
    /// Inode of the file.
    pub ino: u64,
}

struct Mapping {
    info: MappingInfo,
    file: Arc<OwnedFd>,
}

/// A reserved window. Dropping it unmaps the whole reservation.
pub struct Window {
    /// Start of the reservation in this process.
    base: usize,
    size: u64,
    page: u64,
    /// Mappings keyed by window offset; disjoint. This lock also serialises every mmap
    /// into the reservation and every access through it, so a byte checked as mapped stays
    /// mapped while it is copied.
    table: Mutex<BTreeMap<u64, Mapping>>,
}

impl std::fmt::Debug for Window {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Window")
            .field("base", &format_args!("{:#x}", self.base))
            .field("size", &self.size)
            .field("mappings", &self.mappings())
            .finish()
    }
}

impl Window {
    /// Reserves `size` bytes of address space, all `PROT_NONE`.
    pub fn reserve(size: u64) -> Result<Window, WindowError> {
        let page = rustix::param::page_size() as u64;
        if size == 0 || size % page != 0 || usize::try_from(size).is_err() {
            return Err(WindowError::InvalidSize { size, page });
        }
        // SAFETY: a fresh anonymous mapping at an address the kernel chooses cannot alias
        // any existing Rust object; we own it until Drop unmaps it.
        let base = unsafe {
            rustix::mm::mmap_anonymous(
                std::ptr::null_mut(),
                size as usize,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::NORESERVE,
            )
        }
        .map_err(|e| WindowError::Reserve {
            size,
            source: e.into(),
        })?;
        Ok(Window {
            base: base as usize,
            size,
            page,
            table: Mutex::new(BTreeMap::new()),
        })
    }

    /// Window size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Address of window offset 0 in this process.
    pub fn host_base(&self) -> usize {
        self.base
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, Mapping>> {
        // A panic while holding the lock leaves the table consistent with the address
        // space (updates happen after the mmap succeeded), so poisoning is ignored.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Snapshot of the mapping table, ordered by offset.
    pub fn mappings(&self) -> Vec<MappingInfo> {
        self.lock().values().map(|m| m.info.clone()).collect()
    }

    /// The mapping covering window offset `offset`, if any.
    pub fn mapping_at(&self, offset: u64) -> Option<MappingInfo> {
        let table = self.lock();
        covering(&table, offset).map(|m| m.info.clone())
    }

    /// Bytes currently mapped.
    pub fn mapped_bytes(&self) -> u64 {
        self.lock().values().map(|m| m.info.len).sum()
    }

    fn check_range(&self, offset: u64, len: u64, fd_offset: u64) -> Result<(), WindowError> {
        if len == 0 {
            return Err(WindowError::ZeroLength { offset });
        }
        if offset % self.page != 0 || fd_offset % self.page != 0 || len % self.page != 0 {
            return Err(WindowError::Misaligned {
                offset,
                fd_offset,
                len,
                page: self.page,
            });
        }
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(WindowError::OutOfWindow {
                offset,
                len,
                size: self.size,
            });
        }
        if fd_offset.checked_add(len).is_none() {
            return Err(WindowError::Misaligned {
                offset,
                fd_offset,
                len,
                page: self.page,
            });
        }
        Ok(())
    }

    /// Standard SHMEM_MAP: the range must be free.
    pub fn map_exclusive(
        &self, offset: u64, len: u64, file: OwnedFd, fd_offset: u64, writable: bool,
    ) -> Result<(), WindowError> {
        self.check_range(offset, len, fd_offset)?;
        let mut table = self.lock();
        if let Some(m) = overlapping(&table, offset, len).next() {
            return Err(WindowError::Overlap {
                offset,
                len,
                existing_offset: m.info.offset,
                existing_len: m.info.len,
            });
        }
        let mapping = self.map_file(offset, len, file, fd_offset, true, writable)?;
        table.insert(offset, mapping);
        Ok(())
    }

    /// Standard SHMEM_UNMAP: `[offset, offset + len)` must be exactly one mapping.
    pub fn unmap_exact(&self, offset: u64, len: u64) -> Result<MappingInfo, WindowError> {
        self.check_range(offset, len, 0)?;
        let mut table = self.lock();
        match table.get(&offset) {
            Some(m) if m.info.len == len => {}
            _ => return Err(WindowError::NoSuchMapping { offset, len }),
        }
        self.protect_none(offset, len)?;
        let removed = table.remove(&offset).map(|m| m.info);
        removed.ok_or(WindowError::NoSuchMapping { offset, len })
    }

    /// Legacy FS_MAP: replaces whatever lies in the range.
    pub fn map_replace(
        &self, offset: u64, len: u64, file: OwnedFd, fd_offset: u64, readable: bool, writable: bool,
    ) -> Result<(), WindowError> {
        self.check_range(offset, len, fd_offset)?;
        let mut table = self.lock();
        let mapping = self.map_file(offset, len, file, fd_offset, readable, writable)?;
        punch(&mut table, offset, len);
        table.insert(offset, mapping);
        Ok(())
    }

    /// Legacy FS_UNMAP: makes any range `PROT_NONE`, trimming partially covered mappings.
    /// `len == u64::MAX` means "to the end of the window".
    pub fn unmap_range(&self, offset: u64, len: u64) -> Result<(), WindowError> {
        let len = if len == u64::MAX {
            self.size.saturating_sub(offset)
        } else {
            len
        };
        self.check_range(offset, len, 0)?;
        let mut table = self.lock();
        self.protect_none(offset, len)?;
        punch(&mut table, offset, len);
        Ok(())
    }

    /// Makes the whole window `PROT_NONE` and forgets every mapping (a device reset).
    pub fn clear(&self) -> Result<(), WindowError> {
        let mut table = self.lock();
        self.protect_none(0, self.size)?;
        table.clear();
        Ok(())
    }

    fn map_file(
        &self, offset: u64, len: u64, file: OwnedFd, fd_offset: u64, readable: bool, writable: bool,
    ) -> Result<Mapping, WindowError> {
        let stat = rustix::fs::fstat(&file).map_err(|e| WindowError::Stat(e.into()))?;
        let source = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .unwrap_or_else(|_| PathBuf::from("<unknown>"));
        let mut prot = ProtFlags::empty();
        if readable {
            prot |= ProtFlags::READ;
        }
        if writable {
            prot |= ProtFlags::WRITE;
        }
        let addr = (self.base + offset as usize) as *mut std::ffi::c_void;
        // SAFETY: check_range proved [offset, offset + len) lies inside our reservation, so
        // MAP_FIXED replaces only pages this Window owns; no Rust reference points into the
        // window (accesses copy under the table lock, which the caller holds).
        let mapped = unsafe {
            rustix::mm::mmap(
                addr,
                len as usize,
                prot,
                MapFlags::SHARED | MapFlags::FIXED,
                file.as_fd(),
                fd_offset,
            )
        };
        mapped.map_err(|e| WindowError::Mmap {
            offset,
            len,
            source: e.into(),
        })?;
        Ok(Mapping {
            info: MappingInfo {
                offset,
                len,
                fd_offset,
                writable,
                readable,
                source,
                dev: stat.st_dev,
                ino: stat.st_ino,
            },
            file: Arc::new(file),
        })
    }

    fn protect_none(&self, offset: u64, len: u64) -> Result<(), WindowError> {
        let addr = (self.base + offset as usize) as *mut std::ffi::c_void;
        // SAFETY: callers checked [offset, offset + len) lies inside our reservation; the
        // fresh anonymous PROT_NONE pages replace only window pages, which no Rust
        // reference points into.
        let mapped = unsafe {
            rustix::mm::mmap_anonymous(
                addr,
                len as usize,
                ProtFlags::empty(),
                MapFlags::PRIVATE | MapFlags::FIXED | MapFlags::NORESERVE,
            )
        };
        mapped.map(|_| ()).map_err(|e| WindowError::Mmap {
            offset,
            len,
            source: e.into(),
        })
    }

    /// Copies `len` bytes at window offset `offset` out of the window.
    pub fn read(&self, offset: u64, len: usize) -> Result<Vec<u8>, WindowError> {
        let mut out = vec![0u8; len];
        let table = self.lock();
        self.for_each_piece(&table, offset, len as u64, false, |slice, at| {
            slice.copy_to(&mut out[at..at + slice.len()]);
        })?;
        Ok(out)
    }

    /// Calls `f(slice, position in range)` for each mapped piece of `[offset, offset + len)`
    /// without copying it out, after the checks of [`Self::read`] (every byte mapped,
    /// readable and within its file); the table stays locked meanwhile. For checkers that
    /// look at a few words of many pages.
    pub fn inspect(
        &self, offset: u64, len: u64, f: impl FnMut(VolatileSlice<'_>, usize),
    ) -> Result<(), WindowError> {
        let table = self.lock();
        self.for_each_piece(&table, offset, len, false, f)
    }

    /// Copies `data` into the window at `offset` (the mappings must be writable).
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), WindowError> {
        let table = self.lock();
        self.for_each_piece(&table, offset, data.len() as u64, true, |slice, at| {
            slice.copy_from(&data[at..at + slice.len()]);
        })
    }

    /// Checks the whole range first, then calls `f(slice, position in range)` per mapping.
    fn for_each_piece(
        &self, table: &BTreeMap<u64, Mapping>, offset: u64, len: u64, write: bool,
        mut f: impl FnMut(VolatileSlice<'_>, usize),
    ) -> Result<(), WindowError> {
        if offset.checked_add(len).is_none_or(|end| end > self.size) {
            return Err(WindowError::OutOfWindow {
                offset,
                len,
                size: self.size,
            });
        }
        let end = offset + len;
        let mut pieces = Vec::new();
        let mut cur = offset;
        while cur < end {
            let m = covering(table, cur).ok_or(WindowError::NotMapped { offset: cur })?;
            let info = &m.info;
            if write && !info.writable {
                return Err(WindowError::NotWritable { offset: cur });
            }
            if !info.readable {
                return Err(WindowError::NotMapped { offset: cur });
            }
            let piece_end = end.min(info.offset + info.len);
            // Pages wholly past EOF raise SIGBUS; the partial last page reads as zeros.
            let file_size = rustix::fs::fstat(&*m.file)
                .map_err(|e| WindowError::Stat(e.into()))?
                .st_size as u64;
            let valid_file_end = file_size.next_multiple_of(self.page);
            let last_file_byte = info.fd_offset + (piece_end - 1 - info.offset);
            if last_file_byte >= valid_file_end {
                // Window offset of the first page past the file's end.
                let first_bad = info.offset + valid_file_end.saturating_sub(info.fd_offset);
                return Err(WindowError::BeyondFileEnd {
                    offset: first_bad.max(cur),
                    source_path: info.source.display().to_string(),
                    file_size,
                });
            }
            pieces.push((cur, piece_end));
            cur = piece_end;
        }
        for (start, stop) in pieces {
            let ptr = (self.base + start as usize) as *mut u8;
            // SAFETY: [start, stop) lies in the reservation and is covered by a readable
            // (and, for writes, writable) file mapping whose pages are within the file
            // (checked above); the table lock held by our caller keeps the mapping in
            // place while the slice lives, and all access is volatile copying.
            let slice = unsafe { VolatileSlice::new(ptr, (stop - start) as usize) };
            f(slice, (start - offset) as usize);
        }
        Ok(())
    }
}

impl Drop for Window {
    fn drop(&mut self) {
        // SAFETY: the reservation [base, base + size) was created by `reserve` and is owned
        // by this Window alone; nothing can use it after drop.
        let _ =
            unsafe { rustix::mm::munmap(self.base as *mut std::ffi::c_void, self.size as usize) };
    }
}

fn covering(table: &BTreeMap<u64, Mapping>, offset: u64) -> Option<&Mapping> {
    table
        .range(..=offset)
        .next_back()
        .map(|(_, m)| m)
        .filter(|m| offset < m.info.offset + m.info.len)
}

fn overlapping(
    table: &BTreeMap<u64, Mapping>, offset: u64, len: u64,
) -> impl Iterator<Item = &Mapping> {
    let end = offset + len;
    // A mapping starting before `offset` that reaches into the range; mappings starting
    // inside the range come from the range scan.
    let before = covering(table, offset).filter(|m| m.info.offset < offset);
    before
        .into_iter()
        .chain(table.range(offset..end).map(|(_, m)| m))
        .filter(move |m| m.info.offset < end && offset < m.info.offset + m.info.len)
}

/// Removes `[offset, offset + len)` from the table, keeping the uncovered remainders.
fn punch(table: &mut BTreeMap<u64, Mapping>, offset: u64, len: u64) {
    let end = offset + len;
    let hit: Vec<u64> = overlapping(table, offset, len)
        .map(|m| m.info.offset)
        .collect();
    for key in hit {
        let Some(m) = table.remove(&key) else {
            continue;
        };
        let m_end = m.info.offset + m.info.len;
        if m.info.offset < offset {
            let mut left = m.info.clone();
            left.len = offset - m.info.offset;
            table.insert(
                left.offset,
                Mapping {
                    info: left,
                    file: Arc::clone(&m.file),
                },
            );
        }
        if m_end > end {
            let mut right = m.info.clone();
            right.offset = end;
            right.len = m_end - end;
            right.fd_offset = m.info.fd_offset + (end - m.info.offset);
            table.insert(
                right.offset,
                Mapping {
                    info: right,
                    file: Arc::clone(&m.file),
                },
            );
        }
    }
}
