//! A consistency checker for tests, soak runs and debugging.
//!
//! [`Window::check_invariants`] takes every slot-shard mutex (in ascending
//! order) and then every reverse-index shard mutex, so it sees one consistent
//! cut of the index even while other threads work. No other path holds two of
//! these mutexes, so taking them all cannot deadlock.

use std::collections::BTreeMap;

use thiserror::Error;

use crate::entry::{Detail, InodeId, MappingRecord};
use crate::geometry::{PAGES_PER_SLOT, PAGE_SIZE, SLOT_SIZE};
use crate::sync;
use crate::Window;

/// An inconsistency found by [`Window::check_invariants`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("index invariant violated: {0}")]
pub struct InvariantViolation(pub String);

fn violation(message: String) -> Result<(), InvariantViolation> {
    Err(InvariantViolation(message))
}

impl Window {
    /// Verifies, on one consistent cut of the index:
    /// * every slot word is a state the truth table allows;
    /// * records are page aligned, inside their slot, sorted and never overlap
    ///   (so no two VMM mappings overlap);
    /// * for every slot with no entry locked, the reverse index holds exactly
    ///   one reference per record of each inode, and no reference to that slot
    ///   without a record;
    /// * when nothing at all is locked, the occupancy gauges match the records.
    pub fn check_invariants(&self) -> Result<(), InvariantViolation> {
        let shards: Vec<_> = self.shard_mutexes().map(sync::lock).collect();
        let mut expected: BTreeMap<(InodeId, u32), u32> = BTreeMap::new();
        let mut locked_slots = Vec::new();
        let mut live = (0u64, 0u64);
        let mut zapped = 0u64;
        let mut split_slots = 0u64;
        for (shard_index, shard) in shards.iter().enumerate() {
            for (local, word) in shard.words.iter().enumerate() {
                let slot = self.slot_of_local(shard_index, local);
                let slot_start = u64::from(slot) * SLOT_SIZE;
                let records: Vec<MappingRecord> = match shard.detail(*word) {
                    None if word.handle().is_some() => {
                        return violation(format!("slot {slot}: dangling detail handle"))
                    }
                    None if word.split() => {
                        return violation(format!("slot {slot}: split without detail"))
                    }
                    None if word.waiters() && !word.locked() => {
                        return violation(format!("slot {slot}: empty, unlocked, WAITERS set"))
                    }
                    None => Vec::new(),
                    Some(Detail::Whole(record)) => {
                        if word.split() {
                            return violation(format!("slot {slot}: SPLIT over a whole record"));
                        }
                        if record.moffset != slot_start || record.len != SLOT_SIZE {
                            return violation(format!("slot {slot}: whole record {record:?}"));
                        }
                        vec![*record]
                    }
                    Some(Detail::Split(split)) => {
                        split_slots += 1;
                        if !word.split() || word.locked() || word.waiters() {
                            return violation(format!("slot {slot}: split detail, word {word:?}"));
                        }
                        if split.records.is_empty() && !split.locked.any() {
                            return violation(format!("slot {slot}: idle empty split slot"));
                        }
                        split.records.clone()
                    }
                };
                let mut end = slot_start;
                for record in &records {
                    let aligned = record.moffset % PAGE_SIZE == 0
                        && record.len % PAGE_SIZE == 0
                        && record.foffset % PAGE_SIZE == 0
                        && record.len > 0;
                    if !aligned || record.moffset < end || record.end() > slot_start + SLOT_SIZE {
                        return violation(format!(
                            "slot {slot}: record {record:?} misaligned, unsorted, overlapping or outside"
                        ));
                    }
                    end = record.end();
                    if record.is_live() {
                        live.0 += 1;
                        live.1 += record.len;
                    } else {
                        zapped += 1;
                    }
                }
                let any_locked = word.locked()
                    || shard.split(local).is_some_and(|split| {
                        split.locked.first_in(0, PAGES_PER_SLOT as u16).is_some()
                    });
                if any_locked {
                    locked_slots.push(slot);
                    continue;
                }
                for record in &records {
                    *expected.entry((record.inode, slot)).or_insert(0) += 1;
                }
            }
        }
        locked_slots.sort_unstable();
        let references = self.reverse.snapshot();
        let mut seen = BTreeMap::new();
        for (inode, slot, count) in references {
            if locked_slots.binary_search(&slot).is_ok() {
                continue;
            }
            seen.insert((inode, slot), count);
        }
        if seen != expected {
            let missing: Vec<_> = expected
                .iter()
                .filter(|(k, v)| seen.get(k) != Some(v))
                .collect();
            let extra: Vec<_> = seen
                .iter()
                .filter(|(k, v)| expected.get(k) != Some(v))
                .collect();
            return violation(format!(
                "reverse index mismatch: expected-but-not-found {missing:?}, found-but-not-expected {extra:?}"
            ));
        }
        if locked_slots.is_empty() {
            let stats = self.stats();
            let gauges = (
                stats.live_mappings,
                stats.mapped_bytes,
                stats.zapped_mappings,
                stats.split_slots,
            );
            if gauges != (live.0, live.1, zapped, split_slots) {
                return violation(format!(
                    "gauges (live, bytes, zapped, split) = {gauges:?}, records say {:?}",
                    (live.0, live.1, zapped, split_slots)
                ));
            }
        }
        drop(shards);
        Ok(())
    }
}
