//! The driver side of a split virtqueue living in guest memory: descriptor table, avail
//! ring (with `used_event`), used ring (with `avail_event`). Chains are placed in free
//! descriptor slots, published through the avail ring, and harvested from the used ring.
//!
//! Layout (virtio 1.x, 2.7): descriptors 16 bytes each; avail = flags, idx, ring[size],
//! used_event; used = flags, idx, ring[size] of (id u32, len u32), avail_event.

use std::collections::HashMap;
use std::sync::atomic::{fence, Ordering};

use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;

use crate::error::{HarnessError, Result};
use crate::guest_memory::{GuestBuf, GuestMemory};

const DESC_SIZE: u64 = 16;
const NEXT: u16 = VRING_DESC_F_NEXT as u16;
const WRITE: u16 = VRING_DESC_F_WRITE as u16;

/// Where a raw descriptor's `next` field points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// NEXT set to the following element of the slice; no NEXT on the last element.
    Auto,
    /// No NEXT flag: the chain ends here even if elements follow (those are written to
    /// the table but unreachable).
    End,
    /// NEXT set to element `i` of the same slice (may point backwards: loops).
    Element(usize),
    /// NEXT set with this raw descriptor-table index, e.g. `>= queue size` or a free slot.
    Index(u16),
}

/// One descriptor of a hand-built chain ([`crate::Device::submit_raw_chain`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RawDesc {
    /// Guest-physical address (may lie outside guest memory).
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Device-writable (`VRING_DESC_F_WRITE`).
    pub writable: bool,
    /// Extra flag bits OR-ed in (e.g. `VRING_DESC_F_INDIRECT`).
    pub extra_flags: u16,
    /// Where `next` points.
    pub link: Link,
}

impl RawDesc {
    /// A device-readable descriptor, linked to the following element.
    pub fn readable(addr: u64, len: u32) -> Self {
        RawDesc {
            addr,
            len,
            writable: false,
            extra_flags: 0,
            link: Link::Auto,
        }
    }

    /// A device-writable descriptor, linked to the following element.
    pub fn writable(addr: u64, len: u32) -> Self {
        RawDesc {
            writable: true,
            ..Self::readable(addr, len)
        }
    }

    /// Same descriptor with another link.
    pub fn link(self, link: Link) -> Self {
        RawDesc { link, ..self }
    }

    /// Same descriptor with extra flag bits.
    pub fn flags(self, extra_flags: u16) -> Self {
        RawDesc {
            extra_flags,
            ..self
        }
    }
}

/// A finished request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The `len` of the used element: bytes the backend says it wrote.
    pub used_len: u32,
    /// The first `used_len` bytes of the chain's writable space (writable descriptors
    /// outside guest memory contribute nothing).
    pub data: Vec<u8>,
}

/// Identifies a request in flight on a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Token {
    /// Queue index.
    pub queue: usize,
    /// Per-queue sequence number.
    pub id: u64,
}

/// Counters of one queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Chains published in the avail ring.
    pub submitted: u64,
    /// Used elements harvested.
    pub completed: u64,
    /// Call-eventfd reads that returned a count (interrupts seen).
    pub notifications: u64,
}

struct InFlight {
    token: u64,
    slots: Vec<u16>,
    /// Writable segments in chain order (addr, len), as placed.
    writable: Vec<(u64, u32)>,
    /// Buffers the harness allocated for this chain; freed on completion.
    owned: Vec<GuestBuf>,
}

/// Driver state of one configured queue. Guarded by the `Mutex` in `Device`.
pub(crate) struct SplitQueue {
    index: usize,
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    free_slots: Vec<u16>,
    next_avail: u16,
    last_used: u16,
    next_token: u64,
    event_idx: bool,
    /// In flight, keyed by head descriptor index.
    in_flight: HashMap<u16, InFlight>,
    /// Completed but not yet collected, keyed by token id.
    done: HashMap<u64, Result<Completion>>,
    /// Tokens submitted and not yet collected.
    outstanding: std::collections::HashSet<u64>,
    pub(crate) stats: QueueStats,
}

/// Bytes of ring memory a queue of `size` needs, and offsets of avail and used rings.
pub(crate) fn ring_layout(size: u16) -> (u64, u64, u64) {
    let n = u64::from(size);
    let avail_off = DESC_SIZE * n;
    let avail_len = 6 + 2 * n;
    let used_off = (avail_off + avail_len).next_multiple_of(4096);
    let used_len = 6 + 8 * n;
    (avail_off, used_off, used_off + used_len)
}

impl SplitQueue {
    /// A queue whose rings start at `ring_base` (zeroed, `ring_layout(size).2` bytes).
    pub(crate) fn new(index: usize, size: u16, ring_base: u64, event_idx: bool) -> Self {
        let (avail_off, used_off, _) = ring_layout(size);
        SplitQueue {
            index,
            size,
            desc: ring_base,
            avail: ring_base + avail_off,
            used: ring_base + used_off,
            free_slots: (0..size).rev().collect(),
            next_avail: 0,
            last_used: 0,
            next_token: 0,
            event_idx,
            in_flight: HashMap::new(),
            done: HashMap::new(),
            outstanding: Default::default(),
            stats: QueueStats::default(),
        }
    }

    /// Guest-physical addresses of descriptor table, avail ring and used ring.
    pub(crate) fn addresses(&self) -> (u64, u64, u64) {
        (self.desc, self.avail, self.used)
    }

    pub(crate) fn size(&self) -> u16 {
        self.size
    }

    pub(crate) fn free_descriptors(&self) -> usize {
        self.free_slots.len()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    fn check_room(&self, needed: usize) -> Result<()> {
        if needed == 0 {
            return Err(HarnessError::EmptyChain);
        }
        if self.free_slots.len() < needed {
            return Err(HarnessError::QueueFull {
                queue: self.index,
                free: self.free_slots.len(),
                needed,
            });
        }
        Ok(())
    }

    /// Places a chain of `segments` (addr, len, writable) linked in order, then publishes it.
    pub(crate) fn push_chain(
        &mut self, mem: &GuestMemory, segments: &[(u64, u32, bool)], owned: Vec<GuestBuf>,
    ) -> Result<u64> {
        let raw: Vec<RawDesc> = segments
            .iter()
            .map(|&(addr, len, writable)| RawDesc {
                addr,
                len,
                writable,
                extra_flags: 0,
                link: Link::Auto,
            })
            .collect();
        self.push_raw(mem, &raw, owned)
    }

    /// Places an arbitrary chain and publishes its first element as the head.
    pub(crate) fn push_raw(
        &mut self, mem: &GuestMemory, chain: &[RawDesc], owned: Vec<GuestBuf>,
    ) -> Result<u64> {
        self.check_room(chain.len())?;
        for (i, d) in chain.iter().enumerate() {
            if let Link::Element(target) = d.link {
                if target >= chain.len() {
                    return Err(HarnessError::BadRawLink {
                        element: i,
                        target,
                        len: chain.len(),
                    });
                }
            }
        }
        let slots: Vec<u16> = (0..chain.len())
            .filter_map(|_| self.free_slots.pop())
            .collect();
        for (i, d) in chain.iter().enumerate() {
            let (has_next, next) = match d.link {
                Link::Auto if i + 1 < chain.len() => (true, slots[i + 1]),
                Link::Auto | Link::End => (false, 0),
                Link::Element(target) => (true, slots[target]),
                Link::Index(index) => (true, index),
            };
            let mut flags = d.extra_flags;
            if has_next {
                flags |= NEXT;
            }
            if d.writable {
                flags |= WRITE;
            }
            let desc = Descriptor::new(d.addr, d.len, flags, next);
            let at = self.desc + DESC_SIZE * u64::from(slots[i]);
            if let Err(e) = mem.write_obj(desc, at) {
                self.free_slots.extend(slots.iter().rev());
                return Err(e);
            }
        }
        let writable = chain
            .iter()
            .filter(|d| d.writable)
            .map(|d| (d.addr, d.len))
            .collect();
        let head = slots[0];
        let token = self.next_token;
        self.next_token += 1;

        // avail.ring[next_avail % size] = head, then publish idx (release).
        let ring_slot = self.avail + 4 + 2 * u64::from(self.next_avail % self.size);
        mem.store_u16(head, ring_slot, Ordering::Relaxed)?;
        self.next_avail = self.next_avail.wrapping_add(1);
        fence(Ordering::Release);
        mem.store_u16(self.next_avail, self.avail + 2, Ordering::Release)?;
        // The kick that follows must not be reordered before the idx store.
        fence(Ordering::SeqCst);

        self.in_flight.insert(
            head,
            InFlight {
                token,
                slots,
                writable,
                owned,
            },
        );
        self.outstanding.insert(token);
        self.stats.submitted += 1;
        Ok(token)
    }

    /// Moves every new used element into `done`; returns the buffers to free.
    /// Errors describe backend misbehaviour that cannot be attributed to one request.
    pub(crate) fn harvest(&mut self, mem: &GuestMemory) -> Result<Vec<GuestBuf>> {
        let mut to_free = Vec::new();
        loop {
            self.harvest_once(mem, &mut to_free)?;
            if !self.event_idx {
                return Ok(to_free);
            }
            // used_event: interrupt me when the used index passes what I have seen.
            let used_event = self.avail + 4 + 2 * u64::from(self.size);
            mem.store_u16(self.last_used, used_event, Ordering::Release)?;
            fence(Ordering::SeqCst);
            // An element used after the load of used.idx above but before this store
            // was not notified (the device saw the old used_event): look again, as the
            // Linux driver does after re-enabling callbacks.
            if mem.load_u16(self.used + 2, Ordering::Acquire)? == self.last_used {
                return Ok(to_free);
            }
        }
    }

    /// Moves the used elements published so far into `done`.
    fn harvest_once(&mut self, mem: &GuestMemory, to_free: &mut Vec<GuestBuf>) -> Result<()> {
        let used_idx = mem.load_u16(self.used + 2, Ordering::Acquire)?;
        let pending = used_idx.wrapping_sub(self.last_used);
        if pending > self.size {
            return Err(HarnessError::UsedIndexJump {
                queue: self.index,
                last: self.last_used,
                now: used_idx,
                size: self.size,
            });
        }
        while self.last_used != used_idx {
            let at = self.used + 4 + 8 * u64::from(self.last_used % self.size);
            // Used element: id (le32), len (le32).
            let elem: [u8; 8] = mem.read_obj(at)?;
            let id = u32::from_le_bytes([elem[0], elem[1], elem[2], elem[3]]);
            let used_len = u32::from_le_bytes([elem[4], elem[5], elem[6], elem[7]]);
            self.last_used = self.last_used.wrapping_add(1);
            let Some(flight) = u16::try_from(id)
                .ok()
                .and_then(|head| self.in_flight.remove(&head))
            else {
                return Err(HarnessError::UnknownUsedId {
                    queue: self.index,
                    id,
                });
            };
            self.stats.completed += 1;
            let result = collect_reply(mem, &flight.writable, used_len);
            self.free_slots.extend(flight.slots.iter().rev());
            to_free.extend(flight.owned);
            self.done.insert(flight.token, result);
        }
        Ok(())
    }

    /// Takes the completion of `token`, if it arrived.
    pub(crate) fn take(&mut self, token: u64) -> Result<Option<Completion>> {
        if !self.outstanding.contains(&token) {
            return Err(HarnessError::UnknownToken {
                queue: self.index,
                token,
            });
        }
        match self.done.remove(&token) {
            Some(result) => {
                self.outstanding.remove(&token);
                result.map(Some)
            }
            None => Ok(None),
        }
    }
}

/// Gathers the first `used_len` bytes of the writable segments.
fn collect_reply(mem: &GuestMemory, writable: &[(u64, u32)], used_len: u32) -> Result<Completion> {
    let capacity: u64 = writable.iter().map(|&(_, len)| u64::from(len)).sum();
    if u64::from(used_len) > capacity {
        return Err(HarnessError::UsedLenTooLarge { used_len, capacity });
    }
    let mut data = Vec::with_capacity(used_len as usize);
    let mut left = used_len as usize;
    for &(addr, len) in writable {
        if left == 0 {
            break;
        }
        let take = left.min(len as usize);
        if mem.contains(addr, take as u64) {
            data.extend_from_slice(&mem.read(addr, take)?);
        }
        left -= take;
    }
    Ok(Completion { used_len, data })
}

#[cfg(test)]
mod tests {
    //! The driver against a hand-played device: the test writes used elements itself.
    use super::*;

    const SIZE: u16 = 8;

    fn setup() -> (GuestMemory, SplitQueue) {
        let mem = GuestMemory::new_memfd(0, 1 << 20).unwrap();
        let q = SplitQueue::new(1, SIZE, 0, false);
        (mem, q)
    }

    fn desc(mem: &GuestMemory, q: &SplitQueue, slot: u16) -> (u64, u32, u16, u16) {
        let raw = mem.read(q.desc + DESC_SIZE * u64::from(slot), 16).unwrap();
        let u64_at = |i: usize| u64::from_le_bytes(raw[i..i + 8].try_into().unwrap());
        let u32_at = |i: usize| u32::from_le_bytes(raw[i..i + 4].try_into().unwrap());
        let u16_at = |i: usize| u16::from_le_bytes(raw[i..i + 2].try_into().unwrap());
        (u64_at(0), u32_at(8), u16_at(12), u16_at(14))
    }

    fn avail_head(mem: &GuestMemory, q: &SplitQueue, n: u16) -> u16 {
        mem.load_u16(q.avail + 4 + 2 * u64::from(n % SIZE), Ordering::Acquire)
            .unwrap()
    }

    /// Plays the device: appends a used element and bumps used.idx.
    fn complete(mem: &GuestMemory, q: &SplitQueue, id: u32, len: u32) {
        let idx = mem.load_u16(q.used + 2, Ordering::Acquire).unwrap();
        let at = q.used + 4 + 8 * u64::from(idx % SIZE);
        let mut elem = id.to_le_bytes().to_vec();
        elem.extend_from_slice(&len.to_le_bytes());
        mem.write(at, &elem).unwrap();
        mem.store_u16(idx.wrapping_add(1), q.used + 2, Ordering::Release)
            .unwrap();
    }

    #[test]
    fn chain_is_linked_published_and_harvested() {
        let (mem, mut q) = setup();
        mem.write(0x8000, b"request").unwrap();
        let token = q
            .push_chain(
                &mem,
                &[(0x8000, 7, false), (0x9000, 4, true), (0x9100, 8, true)],
                Vec::new(),
            )
            .unwrap();
        let head = avail_head(&mem, &q, 0);
        let (addr, len, flags, next) = desc(&mem, &q, head);
        assert_eq!((addr, len, flags), (0x8000, 7, NEXT));
        let (addr, len, flags, next2) = desc(&mem, &q, next);
        assert_eq!((addr, len, flags), (0x9000, 4, NEXT | WRITE));
        let (addr, len, flags, _) = desc(&mem, &q, next2);
        assert_eq!((addr, len, flags), (0x9100, 8, WRITE));
        assert_eq!(mem.load_u16(q.avail + 2, Ordering::Acquire).unwrap(), 1);
        assert_eq!(q.free_descriptors(), 5);

        // Nothing used yet.
        q.harvest(&mem).unwrap();
        assert_eq!(q.take(token).unwrap(), None);
        // The "device" writes 6 bytes spanning both writable buffers.
        mem.write(0x9000, b"abcd").unwrap();
        mem.write(0x9100, b"ef").unwrap();
        complete(&mem, &q, u32::from(head), 6);
        q.harvest(&mem).unwrap();
        let done = q.take(token).unwrap().unwrap();
        assert_eq!(done.used_len, 6);
        assert_eq!(done.data, b"abcdef");
        assert_eq!(q.free_descriptors(), usize::from(SIZE));
        // A token is collected once.
        assert!(matches!(
            q.take(token),
            Err(HarnessError::UnknownToken { .. })
        ));
    }

    #[test]
    fn raw_links_are_written_as_asked() {
        let (mem, mut q) = setup();
        let chain = [
            RawDesc::readable(0x100, 16),
            RawDesc::readable(0x200, 16).link(Link::Element(0)),
            RawDesc::writable(0x300, 16).link(Link::Index(999)),
            RawDesc::writable(0x400, 16).link(Link::End).flags(4),
        ];
        q.push_raw(&mem, &chain, Vec::new()).unwrap();
        let head = avail_head(&mem, &q, 0);
        let (_, _, flags0, next0) = desc(&mem, &q, head);
        assert_eq!(flags0, NEXT);
        let (addr1, _, flags1, next1) = desc(&mem, &q, next0);
        assert_eq!(
            (addr1, flags1, next1),
            (0x200, NEXT, head),
            "loop back to the head"
        );
        // Elements 2 and 3 are written to the table though unreachable from the head.
        let slots: Vec<u16> = (0..SIZE)
            .filter(|&s| desc(&mem, &q, s).0 == 0x300 || desc(&mem, &q, s).0 == 0x400)
            .collect();
        assert_eq!(slots.len(), 2);
        for s in slots {
            let (addr, _, flags, next) = desc(&mem, &q, s);
            if addr == 0x300 {
                assert_eq!((flags, next), (NEXT | WRITE, 999));
            } else {
                assert_eq!(flags, WRITE | 4, "End clears NEXT, extra flags kept");
            }
        }
        let bad = [RawDesc::readable(0, 1).link(Link::Element(5))];
        assert!(matches!(
            q.push_raw(&mem, &bad, Vec::new()),
            Err(HarnessError::BadRawLink { target: 5, .. })
        ));
        assert!(matches!(
            q.push_raw(&mem, &[], Vec::new()),
            Err(HarnessError::EmptyChain)
        ));
    }

    #[test]
    fn full_queue_is_an_error_not_an_overwrite() {
        let (mem, mut q) = setup();
        let chain = [RawDesc::readable(0x100, 1); 5];
        q.push_raw(&mem, &chain, Vec::new()).unwrap();
        assert!(matches!(
            q.push_raw(&mem, &chain, Vec::new()),
            Err(HarnessError::QueueFull {
                free: 3,
                needed: 5,
                ..
            })
        ));
    }

    #[test]
    fn device_misbehaviour_is_reported() {
        let (mem, mut q) = setup();
        let t = q
            .push_chain(&mem, &[(0x100, 4, false), (0x200, 8, true)], Vec::new())
            .unwrap();
        let head = avail_head(&mem, &q, 0);
        // More bytes than the chain can hold.
        complete(&mem, &q, u32::from(head), 9);
        q.harvest(&mem).unwrap();
        assert!(matches!(
            q.take(t),
            Err(HarnessError::UsedLenTooLarge {
                used_len: 9,
                capacity: 8
            })
        ));
        // An id that is not in flight.
        complete(&mem, &q, 7, 0);
        assert!(matches!(
            q.harvest(&mem),
            Err(HarnessError::UnknownUsedId { id: 7, .. })
        ));
        // used.idx running ahead of anything published.
        mem.store_u16(100, q.used + 2, Ordering::Release).unwrap();
        assert!(matches!(
            q.harvest(&mem),
            Err(HarnessError::UsedIndexJump { now: 100, .. })
        ));
    }

    #[test]
    fn event_idx_publishes_used_event() {
        let mem = GuestMemory::new_memfd(0, 1 << 20).unwrap();
        let mut q = SplitQueue::new(0, SIZE, 0, true);
        for _ in 0..3 {
            q.push_chain(&mem, &[(0x100, 1, false)], Vec::new())
                .unwrap();
        }
        for head in [0u32, 1, 2] {
            let slot = avail_head(&mem, &q, head as u16);
            complete(&mem, &q, u32::from(slot), 0);
        }
        q.harvest(&mem).unwrap();
        let used_event = mem
            .load_u16(q.avail + 4 + 2 * u64::from(SIZE), Ordering::Acquire)
            .unwrap();
        assert_eq!(used_event, 3);
    }
}
