//! The hashed wait table threads sleep on while an entry is locked.
//!
//! Like Linux's `dax_wait_table`, a fixed number of buckets is shared by every
//! entry (and, when a table is shared, by every window): a waiter is queued in
//! the bucket its [`WaitKey`] hashes to, and a wakeup for a key only ever takes
//! waiters *with that key* off the queue — waiters for other keys that share the
//! bucket stay asleep (Linux's `wake_exceptional_entry_func` key check).
//!
//! ## Who guards what
//! * `Bucket::queue` (a mutex) guards the queue and the ticket counter.
//! * Lock order: a window shard mutex may be held while a bucket mutex is taken
//!   (waiters enqueue, and wakers wake, inside the shard critical section that
//!   observed or changed the entry); a bucket mutex is never held while taking a
//!   shard mutex. Nothing else is ever held with a bucket mutex.
//!
//! Because the waiter enqueues itself before it releases the shard mutex under
//! which it saw the entry locked, and a waker wakes under the shard mutex under
//! which it changed the entry, a wakeup can never fall between a waiter's check
//! and its sleep.

use crate::sync::{self, CachePadded, Condvar, Mutex, MutexGuard};

/// The queue key of an entry: the window it belongs to and the window offset
/// where the entry starts (slot start for an order-9 entry, page start for an
/// order-0 entry, as Linux keys on the index aligned to the entry's order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct WaitKey {
    /// Identifier of the window, unique within a process.
    pub window: u64,
    /// Window offset of the entry's first byte.
    pub start: u64,
}

/// How many queued waiters a wakeup takes off the queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WakeMode {
    /// Every non-exclusive waiter and the first exclusive waiter for the key
    /// (an unlock hands the entry to one successor).
    Next,
    /// Every waiter for the key (the entry went away or changed shape).
    All,
}

/// Whether a waiter takes part in the one-at-a-time hand-off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitKind {
    /// Woken one at a time by [`WakeMode::Next`]; the waiter promises to lock
    /// the entry (and so wake the next one when it unlocks) or to pass the
    /// wakeup on itself.
    Exclusive,
    /// Woken by every wakeup for its key; used by paths that may never perform
    /// a wakeup of their own.
    Shared,
}

#[derive(Debug)]
struct Waiter {
    key: WaitKey,
    ticket: u64,
    kind: WaitKind,
}

#[derive(Debug, Default)]
struct Queue {
    waiters: Vec<Waiter>,
    next_ticket: u64,
}

#[derive(Debug)]
struct Bucket {
    queue: Mutex<Queue>,
    woken: Condvar,
}

/// A fixed-size table of wait queues, shareable by several windows.
#[derive(Debug)]
pub struct WaitTable {
    buckets: Box<[CachePadded<Bucket>]>,
    mask: u64,
}

impl WaitTable {
    /// Creates a table with `buckets` queues, rounded up to a power of two
    /// (at least one).
    pub fn new(buckets: usize) -> Self {
        let count = buckets.max(1).next_power_of_two();
        let buckets = (0..count)
            .map(|_| {
                CachePadded(Bucket {
                    queue: Mutex::new(Queue::default()),
                    woken: Condvar::new(),
                })
            })
            .collect::<Vec<_>>()
            .into_boxed_slice();
        Self {
            mask: count as u64 - 1,
            buckets,
        }
    }

    /// Number of buckets.
    pub fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Bytes this table occupies.
    pub fn heap_bytes(&self) -> usize {
        std::mem::size_of_val(&*self.buckets)
    }

    fn bucket(&self, key: WaitKey) -> &Bucket {
        // Fibonacci hashing of the page number mixed with the window id.
        let mixed = (key.start / crate::PAGE_SIZE)
            .wrapping_add(key.window.wrapping_mul(0x9E37_79B9_7F4A_7C15))
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
        &self.buckets[((mixed >> 32) & self.mask) as usize]
    }

    /// Queues the caller under `key`, releases `shard` (the shard critical
    /// section that saw the entry locked), and sleeps until a wakeup for `key`
    /// takes the caller off the queue. Wakeups for other keys that share the
    /// bucket are ignored.
    pub(crate) fn sleep<T>(&self, shard: MutexGuard<'_, T>, key: WaitKey, kind: WaitKind) {
        let bucket = self.bucket(key);
        let mut queue = sync::lock(&bucket.queue);
        let ticket = queue.next_ticket;
        queue.next_ticket = queue.next_ticket.wrapping_add(1);
        queue.waiters.push(Waiter { key, ticket, kind });
        drop(shard);
        while queue.waiters.iter().any(|waiter| waiter.ticket == ticket) {
            queue = sync::wait(&bucket.woken, queue);
        }
    }

    /// Takes waiters for `key` off their queue as `mode` says and wakes them.
    /// Must be called inside the shard critical section that changed the entry.
    /// Returns whether waiters for `key` remain queued.
    pub(crate) fn wake(&self, key: WaitKey, mode: WakeMode) -> bool {
        let bucket = self.bucket(key);
        let mut queue = sync::lock(&bucket.queue);
        let before = queue.waiters.len();
        let mut handed_off = false;
        queue.waiters.retain(|waiter| {
            if waiter.key != key {
                return true;
            }
            match (mode, waiter.kind) {
                (WakeMode::All, _) | (_, WaitKind::Shared) => false,
                (WakeMode::Next, WaitKind::Exclusive) if !handed_off => {
                    handed_off = true;
                    false
                }
                (WakeMode::Next, WaitKind::Exclusive) => true,
            }
        });
        let remaining = queue.waiters.iter().any(|waiter| waiter.key == key);
        if queue.waiters.len() != before {
            bucket.woken.notify_all();
        }
        remaining
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use std::sync::Arc;
    use std::thread;
    use std::time::Duration;

    use super::*;

    /// A waiter ignores wakeups for another key that shares its bucket, and an
    /// exclusive wakeup takes exactly one exclusive waiter.
    #[test]
    fn wakeups_only_reach_their_key() {
        let table = Arc::new(WaitTable::new(1));
        let key = |start| WaitKey { window: 1, start };
        let (a, b) = (key(0), key(crate::PAGE_SIZE));
        let gate = Arc::new(Mutex::new(()));
        let sleepers: Vec<_> = [(b, WaitKind::Exclusive), (b, WaitKind::Exclusive)]
            .into_iter()
            .map(|(key, kind)| {
                let (table, gate) = (Arc::clone(&table), Arc::clone(&gate));
                thread::spawn(move || table.sleep(sync::lock(&gate), key, kind))
            })
            .collect();
        // Wait until both are queued (a wake for `b` then reports waiters).
        while sync::lock(&table.buckets[0].queue).waiters.len() < 2 {
            thread::sleep(Duration::from_millis(1));
        }
        assert!(!table.wake(a, WakeMode::All), "no waiter has key a");
        thread::sleep(Duration::from_millis(50));
        assert!(sleepers.iter().all(|sleeper| !sleeper.is_finished()));
        assert!(table.wake(b, WakeMode::Next), "one waiter for b remains");
        assert!(!table.wake(b, WakeMode::Next));
        for sleeper in sleepers {
            sleeper.join().unwrap();
        }
    }
}
