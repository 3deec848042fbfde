//! The reverse index: which slots hold (or are about to hold) mappings of an
//! inode.
//!
//! ## Who guards what
//! Inodes are spread over a few shards by hash; each shard's mutex guards its map
//! from inode to `slot -> count`. The count is the number of records of the inode
//! in that slot plus the number of maps of the inode in flight there. Entries are
//! changed only by a thread holding the lock of the entry concerned, so for every
//! unlocked entry the count equals the number of its records for the inode —
//! the invariant [`crate::Window::check_invariants`] verifies.
//!
//! A reverse-index mutex is never held together with any other lock.
//!
//! A map registers here *before* it asks the VMM to map (see
//! [`crate::SlotGuard::map`]); an invalidation reads the slots *after* its caller
//! changed the file. Both go through the shard mutex, so every invalidation that
//! starts after a map has registered finds that map's slot and waits for it.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasherDefault;

use smallvec::SmallVec;

use crate::entry::InodeId;
use crate::sync::{self, CachePadded, Mutex};

/// Deterministic hasher for inode and slot numbers (a multiply-shift), so that
/// iteration order never depends on a random seed (loom replays executions and
/// needs them deterministic).
#[derive(Default, Clone, Copy, Debug)]
pub(crate) struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 = (self.0 ^ u64::from(*byte)).wrapping_mul(0x100_0000_01B3);
        }
    }

    fn write_u64(&mut self, value: u64) {
        self.0 = (self.0 ^ value).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// Slots of one inode, inline up to 8 (16 MiB of mappings).
pub(crate) type SlotList = SmallVec<[u32; 8]>;

type InodeMap = HashMap<InodeId, BTreeMap<u32, u32>, BuildHasherDefault<IdHasher>>;

/// Inode -> slots, sharded by inode.
#[derive(Debug)]
pub(crate) struct ReverseIndex {
    shards: Box<[CachePadded<Mutex<InodeMap>>]>,
}

impl ReverseIndex {
    pub(crate) fn new(shards: usize) -> Self {
        let count = shards.max(1).next_power_of_two();
        Self {
            shards: (0..count)
                .map(|_| CachePadded(Mutex::new(InodeMap::default())))
                .collect(),
        }
    }

    fn shard(&self, inode: InodeId) -> &Mutex<InodeMap> {
        let hash = inode.0.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        &self.shards[(hash as usize) & (self.shards.len() - 1)]
    }

    /// Adds one reference from `inode` to `slot`.
    pub(crate) fn add(&self, inode: InodeId, slot: u32) {
        let mut map = sync::lock(self.shard(inode));
        *map.entry(inode).or_default().entry(slot).or_insert(0) += 1;
    }

    /// Drops one reference from `inode` to `slot`.
    pub(crate) fn remove(&self, inode: InodeId, slot: u32) {
        let mut map = sync::lock(self.shard(inode));
        if let Some(slots) = map.get_mut(&inode) {
            if let Some(count) = slots.get_mut(&slot) {
                *count -= 1;
                if *count == 0 {
                    slots.remove(&slot);
                }
            }
            if slots.is_empty() {
                map.remove(&inode);
            }
        }
    }

    /// The slots referenced by `inode`, ascending: a copy, because this
    /// shard's mutex is never held together with another lock. Kept inline
    /// for the common few slots per inode, so that a repair does not allocate
    /// (see [`crate::entry::Records`] for why that matters).
    pub(crate) fn slots(&self, inode: InodeId) -> SlotList {
        let map = sync::lock(self.shard(inode));
        map.get(&inode)
            .map(|slots| slots.keys().copied().collect())
            .unwrap_or_default()
    }

    /// Every `(inode, slot, count)`; for the invariant checker.
    pub(crate) fn snapshot(&self) -> Vec<(InodeId, u32, u32)> {
        let mut all = Vec::new();
        for shard in self.shards.iter() {
            let map = sync::lock(shard);
            for (inode, slots) in map.iter() {
                all.extend(slots.iter().map(|(slot, count)| (*inode, *slot, *count)));
            }
        }
        all.sort_unstable();
        all
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        let mut bytes = std::mem::size_of_val(&*self.shards);
        for shard in self.shards.iter() {
            let map = sync::lock(shard);
            bytes += map.capacity() * (std::mem::size_of::<(InodeId, BTreeMap<u32, u32>)>() + 1);
            bytes += map.values().map(|slots| slots.len() * 16).sum::<usize>();
        }
        bytes
    }
}
