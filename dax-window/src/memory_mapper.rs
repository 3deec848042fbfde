//! [`MemoryMapper`]: an in-memory VMM for tests of the index and of daemons.
//!
//! It keeps the set of mappings a VMM would hold and enforces the vhost-user
//! SHMEM rules: a map must land on a free range (unless built with
//! [`MemoryMapper::replacing`], the legacy `MAP_FIXED` behaviour, where a map
//! cuts whatever it overlaps) and an unmap must name exactly one existing
//! mapping. Failures can be injected. A per-inode end of file
//! ([`MemoryMapper::set_eof`]) is reported as the file's size, so the index
//! maps only the pages below it; [`MemoryMapper::mappings_past_eof`] lists the
//! file mappings that would raise SIGBUS in a real VMM.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::entry::{file_pages_end, InodeId, MappingRecord};
use crate::sync::{self, Mutex};
use crate::{Mapper, Window};

/// One mapping held by the in-memory VMM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VmmMapping {
    /// Window offset.
    pub moffset: u64,
    /// Length.
    pub len: u64,
    /// The file mapped, or `None` for a placeholder.
    pub inode: Option<InodeId>,
    /// File offset (0 for a placeholder).
    pub foffset: u64,
    /// Writable.
    pub writable: bool,
}

/// Why the in-memory VMM refused a call.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MemoryMapperError {
    /// A map overlapped an existing mapping.
    #[error("map {moffset:#x}+{len:#x} overlaps an existing mapping")]
    Overlap {
        /// Window offset.
        moffset: u64,
        /// Length.
        len: u64,
    },
    /// An unmap did not name exactly one existing mapping.
    #[error("unmap {moffset:#x}+{len:#x} names no existing mapping")]
    NoSuchMapping {
        /// Window offset.
        moffset: u64,
        /// Length.
        len: u64,
    },
    /// A failure injected by the test.
    #[error("injected failure of call {call}")]
    Injected {
        /// Sequence number of the failed call.
        call: u64,
    },
}

#[derive(Debug, Default)]
struct FailurePlan {
    every: u64,
    next: u32,
}

impl FailurePlan {
    fn should_fail(&mut self, call: u64) -> bool {
        if self.next > 0 {
            self.next -= 1;
            return true;
        }
        self.every != 0 && call % self.every == 0
    }
}

#[derive(Debug, Default)]
struct VmmState {
    mappings: BTreeMap<u64, VmmMapping>,
    eof: BTreeMap<InodeId, u64>,
    map_failures: FailurePlan,
    unmap_failures: FailurePlan,
    maps: u64,
    unmaps: u64,
}

/// An in-memory VMM window (see the module documentation). `File` is the
/// inode id itself.
#[derive(Debug, Default)]
pub struct MemoryMapper {
    state: Mutex<VmmState>,
    replaces: bool,
    placeholders: bool,
}

impl MemoryMapper {
    /// A VMM with the standard SHMEM rules.
    pub fn new() -> Self {
        Self::default()
    }

    /// A VMM whose maps replace existing mappings (legacy `FS_MAP`).
    pub fn replacing() -> Self {
        Self {
            replaces: true,
            ..Self::default()
        }
    }

    /// Whether invalidation gets a placeholder mapping in place of the file.
    pub fn with_placeholders(mut self, on: bool) -> Self {
        self.placeholders = on;
        self
    }

    /// Makes every `every`-th map call fail (0 turns it off).
    pub fn fail_every_map(&self, every: u64) {
        sync::lock(&self.state).map_failures.every = every;
    }

    /// Makes every `every`-th unmap call fail (0 turns it off).
    pub fn fail_every_unmap(&self, every: u64) {
        sync::lock(&self.state).unmap_failures.every = every;
    }

    /// Makes the next `count` map calls fail.
    pub fn fail_next_maps(&self, count: u32) {
        sync::lock(&self.state).map_failures.next = count;
    }

    /// Makes the next `count` unmap calls fail.
    pub fn fail_next_unmaps(&self, count: u32) {
        sync::lock(&self.state).unmap_failures.next = count;
    }

    /// Sets the end of file of `inode`, reported by [`Mapper::file_size`].
    pub fn set_eof(&self, inode: InodeId, eof: u64) {
        sync::lock(&self.state).eof.insert(inode, eof);
    }

    /// The end of file set for `inode`, if any.
    pub fn eof(&self, inode: InodeId) -> Option<u64> {
        sync::lock(&self.state).eof.get(&inode).copied()
    }

    /// The mappings the VMM holds, in window order.
    pub fn mappings(&self) -> Vec<VmmMapping> {
        sync::lock(&self.state).mappings.values().copied().collect()
    }

    /// File mappings that reach a page at or beyond `round_up(eof, 4 KiB)` of
    /// their inode (touching it would raise SIGBUS in a real VMM).
    pub fn mappings_past_eof(&self) -> Vec<VmmMapping> {
        let state = sync::lock(&self.state);
        state
            .mappings
            .values()
            .filter(|mapping| {
                mapping.inode.is_some_and(|inode| {
                    state.eof.get(&inode).is_some_and(|&eof| {
                        mapping.foffset.saturating_add(mapping.len) > file_pages_end(eof)
                    })
                })
            })
            .copied()
            .collect()
    }

    /// Number of map and unmap calls received (including refused ones).
    pub fn calls(&self) -> (u64, u64) {
        let state = sync::lock(&self.state);
        (state.maps, state.unmaps)
    }

    /// Compares the VMM's mappings with the window's records: every record the
    /// VMM should hold (live, or zapped with a placeholder) must be there with
    /// the same extent, file and access, and nothing else. Call when quiet.
    pub fn check_matches(&self, window: &Window) -> Result<(), String> {
        let expected: Vec<VmmMapping> = window
            .mappings_in(0, window.geometry().size())
            .map_err(|error| error.to_string())?
            .into_iter()
            .filter(MappingRecord::in_vmm)
            .map(|record| VmmMapping {
                moffset: record.moffset,
                len: record.len,
                inode: record.is_live().then_some(record.inode),
                foffset: if record.is_live() { record.foffset } else { 0 },
                writable: record.writable,
            })
            .collect();
        let actual = self.mappings();
        if expected == actual {
            Ok(())
        } else {
            Err(format!(
                "index expects {expected:#?}\nVMM holds {actual:#?}"
            ))
        }
    }

    fn insert(&self, mapping: VmmMapping) -> Result<(), MemoryMapperError> {
        let mut state = sync::lock(&self.state);
        state.maps += 1;
        let call = state.maps;
        if state.map_failures.should_fail(call) {
            return Err(MemoryMapperError::Injected { call });
        }
        let end = mapping.moffset + mapping.len;
        let overlapping: Vec<u64> = state
            .mappings
            .range(..end)
            .filter(|(_, existing)| existing.moffset + existing.len > mapping.moffset)
            .map(|(start, _)| *start)
            .collect();
        if !overlapping.is_empty() {
            if !self.replaces {
                return Err(MemoryMapperError::Overlap {
                    moffset: mapping.moffset,
                    len: mapping.len,
                });
            }
            // MAP_FIXED: what the new mapping overlaps is cut away; the parts
            // of old mappings outside it stay.
            for start in overlapping {
                let Some(old) = state.mappings.remove(&start) else {
                    continue;
                };
                let old_end = old.moffset + old.len;
                if old.moffset < mapping.moffset {
                    let head = VmmMapping {
                        len: mapping.moffset - old.moffset,
                        ..old
                    };
                    state.mappings.insert(head.moffset, head);
                }
                if old_end > end {
                    let shift = end - old.moffset;
                    let tail = VmmMapping {
                        moffset: end,
                        len: old_end - end,
                        foffset: if old.inode.is_some() {
                            old.foffset + shift
                        } else {
                            0
                        },
                        ..old
                    };
                    state.mappings.insert(tail.moffset, tail);
                }
            }
        }
        state.mappings.insert(mapping.moffset, mapping);
        Ok(())
    }
}

impl Mapper for MemoryMapper {
    type File = InodeId;
    type Error = MemoryMapperError;

    fn map(
        &self, moffset: u64, len: u64, file: &InodeId, foffset: u64, writable: bool,
    ) -> Result<(), MemoryMapperError> {
        self.insert(VmmMapping {
            moffset,
            len,
            inode: Some(*file),
            foffset,
            writable,
        })
    }

    fn unmap(&self, moffset: u64, len: u64) -> Result<(), MemoryMapperError> {
        let mut state = sync::lock(&self.state);
        state.unmaps += 1;
        let call = state.unmaps;
        if state.unmap_failures.should_fail(call) {
            return Err(MemoryMapperError::Injected { call });
        }
        match state.mappings.get(&moffset) {
            Some(existing) if existing.len == len => {
                state.mappings.remove(&moffset);
                Ok(())
            }
            _ => Err(MemoryMapperError::NoSuchMapping { moffset, len }),
        }
    }

    fn map_replaces_existing(&self) -> bool {
        self.replaces
    }

    fn map_placeholder(
        &self, moffset: u64, len: u64, writable: bool,
    ) -> Result<bool, MemoryMapperError> {
        if !self.placeholders {
            return Ok(false);
        }
        self.insert(VmmMapping {
            moffset,
            len,
            inode: None,
            foffset: 0,
            writable,
        })
        .map(|()| true)
    }

    fn file_size(&self, file: &InodeId) -> Result<Option<u64>, MemoryMapperError> {
        Ok(self.eof(*file))
    }
}
