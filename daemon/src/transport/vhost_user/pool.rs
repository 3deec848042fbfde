//! The thread pool within a request queue (`--thread-pool-size N`, N > 0).
//!
//! Without a pool the queue's worker serves each chain it pops before the
//! next, so a request that blocks on the host (a hung network filesystem
//! under the share, a long FSYNC) holds every request behind it. With one,
//! the queue's worker only pops chains and hands them over; N pool threads
//! serve them, each with buffers of its own, and each puts its reply on
//! the used ring (and signals the guest if it asked) as soon as it is done:
//! requests complete out of order, and a blocked one holds one thread.
//!
//! The used ring is only touched under the vring's lock, and only while the
//! queue is ready: vhost-user-backend marks it not ready at GET_VRING_BASE
//! and then calls [`super::FsDevice`]'s `stop_vring`, which waits (bounded)
//! for the pool's requests in flight, so a reply never lands in a ring the
//! frontend has taken back; one that finishes later is dropped.
//!
//! Threads are started on the queue's first chain: QEMU enables every
//! request queue but may use only some.

use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, OnceLock, PoisonError, Weak};
use std::time::{Duration, Instant};

use vhost_user_backend::VringT;
use vm_memory::GuestMemoryLoadGuard;

use super::{DeviceError, FsDevice, GuestChain, GuestRam, QueueBuffers, Vring};
use crate::worker_guard::run_guarded;

/// A chain handed to the pool, with what serving and completing it needs.
pub(super) struct Job {
    /// The request queue's index.
    pub queue: u16,
    /// The chain's head descriptor index (what the used ring names).
    pub head: u16,
    /// Guest memory as it was when the chain was popped.
    pub mem: GuestMemoryLoadGuard<GuestRam>,
    /// The chain.
    pub chain: GuestChain,
    /// The queue's vring, for the completion.
    pub vring: Vring,
}

/// Requests handed to the pool and not completed yet. Guarded by `count`'s
/// mutex; `idle` is notified whenever the count drops to 0.
#[derive(Debug, Default)]
struct InFlight {
    count: Mutex<usize>,
    idle: Condvar,
}

impl InFlight {
    fn add(&self) {
        *self.count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
    }

    fn done(&self) {
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        *count = count.saturating_sub(1);
        if *count == 0 {
            self.idle.notify_all();
        }
    }

    /// Waits until nothing is in flight or `timeout` passed; returns what
    /// is still in flight.
    fn wait_idle(&self, timeout: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        let mut count = self.count.lock().unwrap_or_else(PoisonError::into_inner);
        while *count > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            count = self
                .idle
                .wait_timeout(count, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        *count
    }
}

/// The pool of one request queue.
#[derive(Debug)]
pub(super) struct QueuePool {
    queue: u16,
    threads: usize,
    /// Where jobs go; set once, by the queue's worker, when it first has a
    /// chain (`None` if no thread could be started: the queue is then
    /// served inline).
    jobs: OnceLock<Option<Sender<Job>>>,
    in_flight: Arc<InFlight>,
}

impl QueuePool {
    /// A pool of `threads` threads for request queue `queue`, not started.
    pub(super) fn new(queue: u16, threads: usize) -> Self {
        Self {
            queue,
            threads,
            jobs: OnceLock::new(),
            in_flight: Arc::default(),
        }
    }

    /// Hands `job` to the pool, starting its threads the first time; gives
    /// the job back when the pool has no thread.
    pub(super) fn submit(&self, device: &Weak<FsDevice>, job: Job) -> Result<(), Box<Job>> {
        let jobs = self.jobs.get_or_init(|| self.start(device));
        let Some(jobs) = jobs else {
            return Err(Box::new(job));
        };
        self.in_flight.add();
        jobs.send(job).map_err(|unsent| {
            self.in_flight.done();
            Box::new(unsent.0)
        })
    }

    /// Waits (at most `timeout`) for the requests in flight; returns how
    /// many are still running.
    pub(super) fn wait_idle(&self, timeout: Duration) -> usize {
        self.in_flight.wait_idle(timeout)
    }

    fn start(&self, device: &Weak<FsDevice>) -> Option<Sender<Job>> {
        let (sender, receiver) = mpsc::channel();
        let receiver = Arc::new(Mutex::new(receiver));
        let mut started = 0;
        for i in 0..self.threads {
            let (device, receiver, in_flight) = (
                Weak::clone(device),
                Arc::clone(&receiver),
                Arc::clone(&self.in_flight),
            );
            let spawned = std::thread::Builder::new()
                .name(format!("daxfsd-q{}-{i}", self.queue))
                .spawn(move || work(&device, &receiver, &in_flight));
            match spawned {
                Ok(_) => started += 1,
                Err(error) => {
                    tracing::error!(queue = self.queue, %error, "cannot start a pool thread");
                }
            }
        }
        tracing::debug!(queue = self.queue, threads = started, "queue pool started");
        (started > 0).then_some(sender)
    }
}

/// A pool thread: serves jobs until the pool's sender is gone (the device
/// was dropped).
fn work(device: &Weak<FsDevice>, jobs: &Mutex<Receiver<Job>>, in_flight: &InFlight) {
    let mut buffers = QueueBuffers::default();
    loop {
        // Held while waiting: the other idle threads wait for the lock.
        let job = jobs.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else {
            return;
        };
        if let Some(device) = device.upgrade() {
            device.serve_pooled(job, &mut buffers);
        }
        in_flight.done();
    }
}

impl FsDevice {
    /// Pops every available chain of `vring` and hands it to the queue's
    /// pool, whose threads complete each one (a chain the pool cannot take
    /// is served here).
    pub(super) fn hand_to_pool(
        &self, queue: u16, vring: &Vring, mem: &GuestMemoryLoadGuard<GuestRam>, pool: &QueuePool,
    ) -> Result<(), DeviceError> {
        self.drain(queue, vring, mem, &mut |chain| {
            let Some(chain) = chain else { return Ok(()) };
            let job = Job {
                queue,
                head: chain.head_index(),
                mem: mem.clone(),
                chain,
                vring: vring.clone(),
            };
            if let Err(job) = pool.submit(&self.this, job) {
                let mut buffers = QueueBuffers::default();
                self.serve_pooled(*job, &mut buffers);
            }
            Ok(())
        })
    }

    /// Serves a chain on a pool thread and completes it. A panic stops the
    /// daemon, as on a queue worker; a failure to complete is logged.
    fn serve_pooled(&self, job: Job, buffers: &mut QueueBuffers) {
        let Job {
            queue,
            head,
            mem,
            chain,
            vring,
        } = job;
        let served = run_guarded(
            || format!("queue {queue} pool thread"),
            || {
                let written = self.serve_chain(&mem, chain, buffers);
                self.complete(queue, &vring, head, written)
            },
        );
        match served {
            Ok(Ok(())) => {}
            Ok(Err(error)) => self.bad_chain("completing it", &error),
            Err(panic) => self.failure.report(panic),
        }
    }

    /// Puts a served chain on the used ring and signals the guest if it
    /// asked, all under the vring's lock, unless the frontend stopped the
    /// queue meanwhile (then the reply is dropped: the ring is no longer
    /// the daemon's to write).
    fn complete(
        &self, queue: u16, vring: &Vring, head: u16, written: u32,
    ) -> Result<(), DeviceError> {
        let mut state = vring.get_mut();
        if !self.put_used(queue, &mut state, head, written)? {
            return Ok(());
        }
        let notify = state
            .needs_notification()
            .map_err(|source| DeviceError::UsedRing { queue, source })?;
        if notify {
            state
                .signal_used_queue()
                .map_err(|source| DeviceError::Signal { queue, source })?;
        }
        Ok(())
    }
}
