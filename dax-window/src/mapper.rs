//! The [`Mapper`] trait the daemon's VMM transport implements, and the
//! request-level helpers built on it.

use thiserror::Error;

use crate::entry::{InodeId, MappingRecord};
use crate::geometry::{Order, RangeError, WindowRange, PAGE_SIZE, SLOT_SIZE};
use crate::guard::{MapError, SlotGuard, UnmapError, UpgradeError};
use crate::Window;

/// Asks the VMM to change what the window maps (vhost-user `SHMEM_MAP` /
/// `SHMEM_UNMAP`, or the legacy `FS_MAP` / `FS_UNMAP`).
///
/// The index calls it with the affected entries locked and no mutex held, so an
/// implementation may block on a backend-channel round trip. It must not call
/// back into the same window for the same range (that would wait for itself).
pub trait Mapper {
    /// What the daemon maps from: an open file, a file descriptor, ...
    type File: ?Sized;
    /// The transport's error.
    type Error: std::error::Error + 'static;

    /// Maps `len` bytes of `file` at `foffset` into the window at `moffset`.
    /// `[moffset, moffset + len)` never crosses a 2 MiB slot boundary and, unless
    /// [`map_replaces_existing`](Self::map_replaces_existing), holds no mapping.
    fn map(
        &self, moffset: u64, len: u64, file: &Self::File, foffset: u64, writable: bool,
    ) -> Result<(), Self::Error>;

    /// Unmaps exactly one mapping previously made by [`map`](Self::map) (or
    /// [`map_placeholder`](Self::map_placeholder)) with this extent.
    fn unmap(&self, moffset: u64, len: u64) -> Result<(), Self::Error>;

    /// Whether a map over an existing mapping replaces it atomically (legacy
    /// `FS_MAP` is `MAP_FIXED`); upgrades then skip the unmap and the gap.
    fn map_replaces_existing(&self) -> bool {
        false
    }

    /// Maps a harmless placeholder at exactly `[moffset, moffset + len)` (the
    /// same rules as [`map`](Self::map)) in place of file pages that lie past
    /// the file's end, so a guest still using the extent reads zeros instead of
    /// faulting the VMM. `writable` is the access of the guest mapping it
    /// stands in for. Returns whether it mapped anything; a placeholder is
    /// unmapped like a mapping when the extent is removed, repaired or reset.
    fn map_placeholder(&self, moffset: u64, len: u64, writable: bool) -> Result<bool, Self::Error> {
        let _ = (moffset, len, writable);
        Ok(false)
    }

    /// The current size of `file`, or `None` to map whole extents regardless
    /// of it. With a size, the index maps only the pages below
    /// `round_up(size, 4 KiB)` to the file and a placeholder over the rest.
    ///
    /// The index asks *after* registering the map in its reverse index (see
    /// [`crate::SlotGuard::map`]), so a repair started after a truncation
    /// either finds the map or the map sees the truncated size.
    fn file_size(&self, file: &Self::File) -> Result<Option<u64>, Self::Error> {
        let _ = file;
        Ok(None)
    }
}

impl<M: Mapper + ?Sized> Mapper for &M {
    type File = M::File;
    type Error = M::Error;

    fn map(
        &self, moffset: u64, len: u64, file: &Self::File, foffset: u64, writable: bool,
    ) -> Result<(), Self::Error> {
        (**self).map(moffset, len, file, foffset, writable)
    }

    fn unmap(&self, moffset: u64, len: u64) -> Result<(), Self::Error> {
        (**self).unmap(moffset, len)
    }

    fn map_replaces_existing(&self) -> bool {
        (**self).map_replaces_existing()
    }

    fn map_placeholder(&self, moffset: u64, len: u64, writable: bool) -> Result<bool, Self::Error> {
        (**self).map_placeholder(moffset, len, writable)
    }

    fn file_size(&self, file: &Self::File) -> Result<Option<u64>, Self::Error> {
        (**self).file_size(file)
    }
}

/// A FUSE_SETUPMAPPING, decoded.
#[derive(Debug)]
pub struct MapRequest<'a, F: ?Sized> {
    /// Window offset.
    pub moffset: u64,
    /// Length in bytes.
    pub len: u64,
    /// The inode the guest maps.
    pub inode: InodeId,
    /// The file to map from.
    pub file: &'a F,
    /// File offset of the first byte.
    pub foffset: u64,
    /// Whether the guest asked for write access.
    pub writable: bool,
}

/// What [`Window::setup_mapping`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetupOutcome {
    /// New mappings were made, after unmapping whatever was there.
    Mapped {
        /// The new records (one per slot the range touches).
        records: Vec<MappingRecord>,
        /// Records unmapped to make room.
        replaced: Vec<MappingRecord>,
    },
    /// The same file range was mapped read-only and is now writable.
    Upgraded {
        /// The upgraded records.
        records: Vec<MappingRecord>,
    },
    /// The same file range was already mapped with at least the access asked
    /// for; nothing was sent to the VMM.
    AlreadyMapped {
        /// The existing records.
        records: Vec<MappingRecord>,
    },
}

/// Why [`Window::setup_mapping`] failed.
#[derive(Debug, Error)]
pub enum SetupError<E: std::error::Error + 'static> {
    /// The window range is invalid.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// Mapping failed.
    #[error(transparent)]
    Map(#[from] MapError<E>),
    /// Unmapping what was in the way failed, or it extends beyond the range.
    #[error(transparent)]
    Unmap(#[from] UnmapError<E>),
    /// The read -> write upgrade failed.
    #[error(transparent)]
    Upgrade(#[from] UpgradeError<E>),
}

impl<E: std::error::Error + 'static> SetupError<E> {
    /// Whether the guest's request itself is at fault (answer `EINVAL`), as
    /// opposed to the VMM refusing (answer `EIO`).
    pub fn is_invalid_request(&self) -> bool {
        matches!(
            self,
            SetupError::Range(_)
                | SetupError::Map(MapError::FileRange { .. } | MapError::Occupied { .. })
                | SetupError::Unmap(UnmapError::Partial { .. })
                | SetupError::Upgrade(UpgradeError::NotUpgradable { .. })
        )
    }
}

/// Why [`Window::remove_mapping`] failed.
#[derive(Debug, Error)]
pub enum RemoveError<E: std::error::Error + 'static> {
    /// The window range is invalid.
    #[error(transparent)]
    Range(#[from] RangeError),
    /// A mapping extends beyond the range, or the VMM refused an unmap.
    #[error(transparent)]
    Unmap(#[from] UnmapError<E>),
}

impl<E: std::error::Error + 'static> RemoveError<E> {
    /// Whether the guest's request itself is at fault (answer `EINVAL`).
    pub fn is_invalid_request(&self) -> bool {
        matches!(
            self,
            RemoveError::Range(_) | RemoveError::Unmap(UnmapError::Partial { .. })
        )
    }
}

impl Window {
    /// Grabs `range` at the largest order that tiles it, falling back to 4 KiB
    /// entries when a 2 MiB grab meets smaller entries (as Linux falls back from
    /// a PMD fault to PTEs).
    pub fn grab_natural(&self, range: WindowRange) -> Result<SlotGuard<'_>, RangeError> {
        let range = self.geometry().range(range.moffset(), range.len())?;
        if range.is_slot_aligned() {
            if let Ok(guard) = self.grab(range, Order::Slot) {
                return Ok(guard);
            }
        }
        Ok(self.grab_pages(range))
    }

    /// Serves a FUSE_SETUPMAPPING: grab, then either nothing (already mapped),
    /// an upgrade (same file range, now writable), or unmap whatever is in the
    /// way and map, one VMM mapping per slot. Releases on return.
    pub fn setup_mapping<M: Mapper + ?Sized>(
        &self, mapper: &M, request: &MapRequest<'_, M::File>,
    ) -> Result<SetupOutcome, SetupError<M::Error>> {
        let range = self.geometry().range(request.moffset, request.len)?;
        let mut guard = self.grab_natural(range)?;
        let existing = guard.mappings();
        if !existing.is_empty() && tiles_request(&existing, range, request) {
            if request.writable && existing.iter().any(|record| !record.writable) {
                let records = guard.upgrade(mapper, request.file, request.inode)?;
                return Ok(SetupOutcome::Upgraded { records });
            }
            return Ok(SetupOutcome::AlreadyMapped { records: existing });
        }
        let replaced = if existing.is_empty() {
            Vec::new()
        } else {
            guard.unmap(mapper)?
        };
        let records = guard.map(
            mapper,
            request.file,
            request.inode,
            request.foffset,
            request.writable,
        )?;
        Ok(SetupOutcome::Mapped { records, replaced })
    }

    /// Serves one `[moffset, len]` entry of a FUSE_REMOVEMAPPING: unmaps and
    /// forgets every mapping inside the range. A mapping that extends beyond the
    /// range is refused ([`RemoveError::is_invalid_request`]) without changing
    /// anything. A range holding nothing succeeds with an empty list.
    pub fn remove_mapping<M: Mapper + ?Sized>(
        &self, mapper: &M, moffset: u64, len: u64,
    ) -> Result<Vec<MappingRecord>, RemoveError<M::Error>> {
        let range = self.geometry().range(moffset, len)?;
        let mut guard = self.grab_natural(range)?;
        Ok(guard.unmap(mapper)?)
    }
}

/// Whether `existing` is exactly what mapping `request` over `range` makes:
/// every slot piece of the range covered, in order and without gaps, by
/// records of the same inode whose file offsets follow the request's. A piece
/// is one live record, or — when the file ends inside it — a live record and
/// the zapped record (placeholder) after it, or zapped records only when the
/// file ends before it.
fn tiles_request<F: ?Sized>(
    existing: &[MappingRecord], range: WindowRange, request: &MapRequest<'_, F>,
) -> bool {
    let (first, last) = range.slot_span();
    let mut records = existing.iter();
    for slot in first..=last {
        let (a, b) = range.pages_in_slot(slot);
        let slot_start = u64::from(slot) * SLOT_SIZE;
        let (mut at, end) = (
            slot_start + u64::from(a) * PAGE_SIZE,
            slot_start + u64::from(b) * PAGE_SIZE,
        );
        while at < end {
            let Some(record) = records.next() else {
                return false;
            };
            if record.moffset != at
                || record.end() > end
                || record.inode != request.inode
                || Some(record.foffset) != request.foffset.checked_add(at - range.moffset())
            {
                return false;
            }
            at = record.end();
        }
    }
    records.next().is_none()
}
