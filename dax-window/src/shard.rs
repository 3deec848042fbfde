//! One shard of a window's slots: the packed words of the slots it owns and a
//! slab of slot details. Guarded as a whole by the shard mutex in `Window`.

use crate::entry::{Detail, MappingRecord, SlotWord, SplitSlot};
use crate::window::EntryAt;

/// The state of one shard: words of slots `s` with `s % shards == index`.
#[derive(Debug)]
pub(crate) struct Shard {
    pub(crate) words: Box<[SlotWord]>,
    pub(crate) details: Vec<Option<Detail>>,
    pub(crate) free: Vec<u32>,
}

impl Shard {
    pub(crate) fn detail(&self, word: SlotWord) -> Option<&Detail> {
        word.handle()
            .and_then(|handle| self.details.get(handle as usize))
            .and_then(Option::as_ref)
    }

    pub(crate) fn detail_mut(&mut self, word: SlotWord) -> Option<&mut Detail> {
        word.handle()
            .and_then(|handle| self.details.get_mut(handle as usize))
            .and_then(Option::as_mut)
    }

    pub(crate) fn split(&self, local: usize) -> Option<&SplitSlot> {
        match self.detail(self.words[local]) {
            Some(Detail::Split(split)) => Some(split),
            _ => None,
        }
    }

    pub(crate) fn split_mut(&mut self, local: usize) -> Option<&mut SplitSlot> {
        let word = self.words[local];
        match self.detail_mut(word) {
            Some(Detail::Split(split)) => Some(split),
            _ => None,
        }
    }

    pub(crate) fn insert_detail(&mut self, detail: Detail) -> u32 {
        match self.free.pop() {
            Some(handle) => {
                self.details[handle as usize] = Some(detail);
                handle
            }
            None => {
                self.details.push(Some(detail));
                (self.details.len() - 1) as u32
            }
        }
    }

    pub(crate) fn take_detail(&mut self, word: SlotWord) -> Option<Detail> {
        let handle = word.handle()?;
        let detail = self.details.get_mut(handle as usize)?.take();
        self.free.push(handle);
        detail
    }

    /// Records of slot `local` overlapping pages `[first, end)`, in place (in
    /// window order). Callers that must keep them past the shard section copy
    /// them (see [`crate::entry::Records`]); the others iterate without
    /// allocating.
    pub(crate) fn records(&self, local: usize, first: u16, end: u16) -> &[MappingRecord] {
        match self.detail(self.words[local]) {
            None => &[],
            Some(Detail::Whole(record)) => std::slice::from_ref(record),
            Some(Detail::Split(split)) => &split.records[split.records_in(first, end)],
        }
    }

    /// The first locked entry of the slot overlapping pages `[first, end)`.
    pub(crate) fn first_locked(&self, local: usize, first: u16, end: u16) -> Option<EntryAt> {
        let word = self.words[local];
        if word.locked() {
            return Some(EntryAt::Whole);
        }
        self.split(local)
            .and_then(|split| split.locked.first_in(first, end))
            .map(EntryAt::Page)
    }

    pub(crate) fn heap_bytes(&self) -> usize {
        let mut bytes = std::mem::size_of_val(&*self.words)
            + self.details.capacity() * std::mem::size_of::<Option<Detail>>()
            + self.free.capacity() * std::mem::size_of::<u32>();
        for detail in self.details.iter().flatten() {
            if let Detail::Split(split) = detail {
                bytes += std::mem::size_of::<SplitSlot>()
                    + split.records.capacity() * std::mem::size_of::<MappingRecord>();
            }
        }
        bytes
    }
}
