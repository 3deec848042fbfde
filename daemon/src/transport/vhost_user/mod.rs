//! The vhost-user-fs device: configuration space and the queue workers, on
//! rust-vmm `vhost-user-backend`; the features it offers (`features`);
//! serving one chain (`serve`), whose buffers are in guest memory
//! ([`guest_io`]) or the DAX window ([`window_buffers`]); the dirty log of a
//! live migration ([`dirty_log`]).
//!
//! Queue 0 is the hiprio queue (FORGET, INTERRUPT); queues 1..=N carry
//! requests. Each queue is served by its own worker thread
//! ([`VhostUserBackend::queues_per_thread`] returns one bit per thread), so
//! queues progress in parallel and a slow request on one queue never holds
//! up another. With `--thread-pool-size N` a request queue's worker only
//! pops chains and N threads of the queue's [`pool`] serve them, so that
//! requests of one queue complete out of order and one that blocks on the
//! host holds only its own thread. A queue that the frontend enables but
//! never configures simply never yields a descriptor chain; nothing waits
//! for DRIVER_OK.

mod chain;
mod chain_stats;
mod device_state;
pub mod dirty_log;
mod features;
pub mod guest_io;
mod pool;
mod serve;
pub mod window_buffers;

use self::chain::QueueBuffers;
pub use self::chain_stats::ChainStats;
pub use self::dirty_log::GuestRam;
use self::dirty_log::{DirtyBitmap, DirtyLog};
use self::pool::QueuePool;

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use daxfsd_protocol::abi::VirtioFsConfig;
use vhost::vhost_user::message::{
    VhostTransferStateDirection, VhostTransferStatePhase, VhostUserProtocolFeatures,
    VhostUserShMemConfig,
};
use vhost::vhost_user::Backend;
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringState, VringT};
use virtio_queue::{DescriptorChain, QueueT};
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};
use zerocopy::IntoBytes;

use crate::dax::{Dax, DaxProtocol};
use crate::dispatch::{Dispatcher, SessionEnd, MAX_TRANSFER};
use crate::migration::{MigrationConfig, Transfer};
use crate::ratelimit::RateLimit;
use crate::transport::vhost_user::window_buffers::WindowPlacement;
use crate::worker_guard::{run_guarded, WorkerFailure};

/// A descriptor chain as popped from a request queue.
type GuestChain = DescriptorChain<GuestMemoryLoadGuard<GuestRam>>;
/// A queue's vring, over guest memory with its dirty log.
type Vring = VringRwLock<GuestMemoryAtomic<GuestRam>>;

/// Largest request the daemon reads from a chain: the largest WRITE plus
/// headroom for the headers.
const MAX_REQUEST: usize = MAX_TRANSFER as usize + 4096;
/// With EVENT_IDX, the longest a completion the driver waits for goes
/// unsignalled while the worker serves the rest of a batch. A batch is
/// otherwise signalled once, at its end: cheap for fast requests (one
/// wake-up of the driver per batch), but a driver that refills only when
/// woken then idles while a batch of slow requests is served, and a quick
/// reply waits behind the slow ones queued with it.
const SIGNAL_COALESCE: Duration = Duration::from_micros(20);
/// With EVENT_IDX, the most completions the worker puts on the used ring
/// within a batch before it signals (if the driver asks). Fast requests
/// (a 4 KiB READ from the host page cache takes 2-3 µs) would otherwise
/// finish a whole batch within [`SIGNAL_COALESCE`]: the driver, woken only
/// at the batch's end, refilled while the worker sat idle, and READ 4 KiB
/// on one queue ran at 0.6x of virtiofsd's rate (docs/benchmarks.md).
const SIGNAL_BATCH: u32 = 4;

/// How long GET_VRING_BASE waits for a queue's pool to finish its requests.
const STOP_WAIT: Duration = Duration::from_secs(5);

/// Errors of the device's event handling, reported to vhost-user-backend.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// An event other than a kick arrived.
    #[error("unexpected event set {0:?}")]
    UnexpectedEvent(EventSet),
    /// The event names a queue this device does not have.
    #[error("event for queue {0}, which does not exist")]
    NoSuchQueue(u16),
    /// The used ring could not be updated.
    #[error("updating the used ring of queue {queue}")]
    UsedRing {
        /// Queue index.
        queue: u16,
        /// Cause.
        #[source]
        source: virtio_queue::Error,
    },
    /// Notifying the guest failed.
    #[error("signalling queue {queue}")]
    Signal {
        /// Queue index.
        queue: u16,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

impl From<DeviceError> for io::Error {
    fn from(e: DeviceError) -> Self {
        io::Error::other(e)
    }
}

/// Static configuration of the device.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Filesystem tag for the config space.
    pub tag: String,
    /// Request queues (the hiprio queue not counted).
    pub num_request_queues: u16,
    /// Largest queue size accepted.
    pub queue_size: u16,
    /// Threads serving each request queue's requests (`--thread-pool-size`);
    /// 0: the queue's own worker serves them one at a time.
    pub thread_pool_size: usize,
    /// `--migration-*`: how the device state is saved and loaded.
    pub migration: MigrationConfig,
}

/// The vhost-user-fs device.
#[derive(Debug)]
pub struct FsDevice {
    config: DeviceConfig,
    dispatcher: Arc<Dispatcher>,
    /// The DAX window, when `--cache-size` is set (the same one the
    /// dispatcher serves SETUPMAPPING with).
    dax: Option<Arc<Dax>>,
    /// Guest memory; replaced by vhost-user-backend on SET_MEM_TABLE through
    /// [`VhostUserBackend::update_memory`]. The atomic handle itself is
    /// shared with the vrings, so a load always sees the current table.
    mem: Mutex<Option<GuestMemoryAtomic<GuestRam>>>,
    /// The frontend's dirty log across memory-table changes and
    /// SET_FEATURES (see [`dirty_log`]).
    dirty_log: DirtyLog,
    event_idx: AtomicBool,
    /// One buffer set per queue; each is only ever locked by that queue's
    /// worker thread, so the lock is uncontended.
    buffers: Vec<Mutex<QueueBuffers>>,
    stats: ChainStats,
    bad_chain_log: RateLimit,
    /// Where the frontend placed the DAX window (SET_CONFIG at offset 64).
    placement: WindowPlacement,
    /// Queue workers that panicked; the daemon stops at the first.
    failure: WorkerFailure,
    /// Each request queue's thread pool (`None` for the hiprio queue, and
    /// for every queue without `--thread-pool-size`).
    pools: Vec<Option<QueuePool>>,
    /// This device, for the pool threads (which must not keep it alive).
    this: Weak<FsDevice>,
    /// Whether the frontend logs dirty pages (a migration is under way).
    logging: AtomicBool,
    /// The device-state transfer of a migration (its own lock).
    transfer: Transfer,
}

impl FsDevice {
    /// A device serving `dispatcher`.
    pub fn new(config: DeviceConfig, dispatcher: Arc<Dispatcher>) -> Arc<Self> {
        let queues = config.num_request_queues.saturating_add(1);
        let dax = dispatcher.dax().cloned();
        let placement = WindowPlacement::new(dax.as_ref().map(|dax| dax.size()));
        let pools = (0..queues)
            .map(|queue| {
                (queue > 0 && config.thread_pool_size > 0)
                    .then(|| QueuePool::new(queue, config.thread_pool_size))
            })
            .collect();
        Arc::new_cyclic(|this| Self {
            pools,
            this: Weak::clone(this),
            buffers: (0..queues)
                .map(|_| Mutex::new(QueueBuffers::default()))
                .collect(),
            config,
            dispatcher,
            dax,
            mem: Mutex::new(None),
            dirty_log: DirtyLog::default(),
            event_idx: AtomicBool::new(false),
            stats: ChainStats::default(),
            bad_chain_log: RateLimit::per_second(10),
            placement,
            failure: WorkerFailure::default(),
            logging: AtomicBool::new(false),
            transfer: Transfer::new(),
        })
    }

    /// Panics of queue workers: [`WorkerFailure::on_panic`] says how the
    /// daemon stops, [`WorkerFailure::first`] whether one happened.
    pub fn worker_failure(&self) -> &WorkerFailure {
        &self.failure
    }

    /// The dispatcher.
    pub fn dispatcher(&self) -> &Arc<Dispatcher> {
        &self.dispatcher
    }

    /// Chain counters.
    pub fn chain_stats(&self) -> &ChainStats {
        &self.stats
    }

    /// The DAX window's guest-physical placement and the counters of
    /// window-backed buffers.
    pub fn window_placement(&self) -> &WindowPlacement {
        &self.placement
    }

    /// Forgets the window's placement: the frontend is gone, and the next
    /// one reports its own.
    pub fn forget_window_placement(&self) {
        self.placement.forget();
    }

    fn memory(&self) -> Option<GuestMemoryLoadGuard<GuestRam>> {
        let mem = self.mem.lock().unwrap_or_else(|e| e.into_inner());
        mem.as_ref().map(|m| m.memory())
    }

    /// Pops and serves every available chain of `vring`, then notifies the
    /// guest once for the batch.
    fn process_queue(&self, queue: u16, vring: &Vring) -> Result<(), DeviceError> {
        let Some(mem) = self.memory() else {
            return Ok(());
        };
        if let Some(pool) = self.pools.get(usize::from(queue)).and_then(Option::as_ref) {
            return self.hand_to_pool(queue, vring, &mem, pool);
        }
        let mut buffers = self
            .buffers
            .get(usize::from(queue))
            .ok_or(DeviceError::NoSuchQueue(queue))?
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let event_idx = self.event_idx.load(Ordering::Relaxed);
        let mut signalled = Instant::now();
        let mut used_any = false;
        let mut unsignalled = 0u32;
        self.drain(queue, vring, &mem, &mut |chain| {
            let Some(chain) = chain else {
                // The ring is empty: one notification for the batch.
                if std::mem::take(&mut used_any) {
                    self.signal_if_needed(queue, vring)?;
                    signalled = Instant::now();
                    unsignalled = 0;
                }
                return Ok(());
            };
            let head = chain.head_index();
            let written = self.serve_chain(&mem, chain, &mut buffers);
            if !self.put_used(queue, &mut vring.get_mut(), head, written)? {
                return Ok(());
            }
            used_any = true;
            // Within a batch, tell the driver about completions it waits
            // for after SIGNAL_BATCH of them or SIGNAL_COALESCE, whichever
            // comes first (see there).
            unsignalled += 1;
            if event_idx && (unsignalled >= SIGNAL_BATCH || signalled.elapsed() >= SIGNAL_COALESCE)
            {
                self.signal_if_needed(queue, vring)?;
                signalled = Instant::now();
                unsignalled = 0;
            }
            Ok(())
        })
    }

    /// Pops every available chain of `vring` and passes it to `each`, then
    /// `None` once the ring is empty. With EVENT_IDX, notifications stay off
    /// while it pops, and it goes again if chains arrived before they were
    /// back on.
    fn drain(
        &self, queue: u16, vring: &Vring, mem: &GuestMemoryLoadGuard<GuestRam>,
        each: &mut dyn FnMut(Option<GuestChain>) -> Result<(), DeviceError>,
    ) -> Result<(), DeviceError> {
        let event_idx = self.event_idx.load(Ordering::Relaxed);
        let ready = || vring.get_ref().get_queue().ready();
        loop {
            // A queue the frontend stopped (GET_VRING_BASE) or reset is left
            // alone: its rings are the frontend's again. (Going on would spin:
            // popping from it finds nothing while its available index still
            // differs from the next one to take.)
            if !ready() {
                return Ok(());
            }
            if event_idx {
                vring
                    .disable_notification()
                    .map_err(|source| DeviceError::UsedRing { queue, source })?;
            }
            loop {
                // Hold the vring lock only to pop, never across a request.
                let chain = {
                    let mut state = vring.get_mut();
                    let ring = state.get_queue_mut();
                    if ring.ready() {
                        ring.pop_descriptor_chain(mem.clone())
                    } else {
                        None
                    }
                };
                let Some(chain) = chain else { break };
                each(Some(chain))?;
            }
            each(None)?;
            if !event_idx || !ready() {
                return Ok(());
            }
            // Re-enable notifications; if chains arrived meanwhile, go again.
            let more = vring
                .enable_notification()
                .map_err(|source| DeviceError::UsedRing { queue, source })?;
            if !more {
                return Ok(());
            }
        }
    }

    /// Puts a served chain on the used ring, through `state` (the vring's
    /// lock, held by the caller), unless the frontend stopped the queue
    /// while the request ran: that ring is no longer the daemon's to write,
    /// and the reply is dropped (counted). Returns whether it was put.
    fn put_used(
        &self, queue: u16, state: &mut VringState<GuestMemoryAtomic<GuestRam>>, head: u16,
        written: u32,
    ) -> Result<bool, DeviceError> {
        if !state.get_queue().ready() {
            self.stats
                .dropped_completions
                .fetch_add(1, Ordering::Relaxed);
            return Ok(false);
        }
        state
            .add_used(head, written)
            .map_err(|source| DeviceError::UsedRing { queue, source })?;
        self.stats.chains.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Signals the driver if it asked to hear of the used entries so far
    /// (always, without EVENT_IDX).
    fn signal_if_needed(&self, queue: u16, vring: &Vring) -> Result<(), DeviceError> {
        let notify = vring
            .needs_notification()
            .map_err(|source| DeviceError::UsedRing { queue, source })?;
        if notify {
            vring
                .signal_used_queue()
                .map_err(|source| DeviceError::Signal { queue, source })?;
        }
        Ok(())
    }
}

impl VhostUserBackend for FsDevice {
    /// Each region's slot for the frontend's dirty log (SET_LOG_BASE):
    /// see [`dirty_log`].
    type Bitmap = DirtyBitmap;
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        usize::from(self.config.num_request_queues) + 1
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.config.queue_size)
    }

    fn features(&self) -> u64 {
        features::virtio_features()
    }

    /// SET_FEATURES: LOG_ALL dropped ends the dirty logging; LOG_ALL
    /// turned on or off starts or cancels a migration.
    fn acked_features(&self, features: u64) {
        self.dirty_log.features_acked(features);
        self.features_acked(features);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        features::protocol_features(self.dax.as_ref().map(|dax| dax.protocol()))
    }

    fn set_device_state_fd(
        &self, direction: VhostTransferStateDirection, phase: VhostTransferStatePhase, file: File,
    ) -> io::Result<Option<File>> {
        self.start_state_transfer(direction, phase, file)
    }

    fn check_device_state(&self) -> io::Result<()> {
        self.finish_state_transfer()
    }

    fn set_backend_req_fd(&self, backend: Backend) {
        // Only stored here: requests on it are sent from queue workers,
        // never from this frontend-message handler.
        if let Some(dax) = &self.dax {
            tracing::debug!("backend channel installed for the DAX window");
            dax.set_channel(Some(backend));
        }
    }

    fn get_shmem_config(&self) -> io::Result<VhostUserShMemConfig> {
        match self
            .dax
            .as_ref()
            .filter(|dax| dax.protocol() == DaxProtocol::Shmem)
        {
            Some(dax) => Ok(VhostUserShMemConfig::new(1, &[dax.size()])),
            None => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "no DAX window (--cache-size 0)",
            )),
        }
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Ordering::Relaxed);
    }

    /// The guest-visible config is read-only: writes to it are ignored, as
    /// they always were. Offset 64 (16 bytes) is the frontend's report of
    /// where the DAX window sits in guest-physical memory (see
    /// [`crate::window_buffers`]); a bad one is ignored with a warning.
    fn set_config(&self, offset: u32, buf: &[u8]) -> io::Result<()> {
        self.placement.set_config(offset, buf);
        Ok(())
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let mut config = VirtioFsConfig {
            tag: [0; 36],
            num_request_queues: u32::from(self.config.num_request_queues),
            notify_buf_size: 0,
        };
        let tag = self.config.tag.as_bytes();
        config.tag[..tag.len()].copy_from_slice(tag);
        let bytes = config.as_bytes();
        let start = (offset as usize).min(bytes.len());
        let end = start.saturating_add(size as usize).min(bytes.len());
        bytes[start..end].to_vec()
    }

    fn update_memory(&self, mem: GuestMemoryAtomic<GuestRam>) -> io::Result<()> {
        self.dirty_log.memory_changed(&mem.memory());
        *self.mem.lock().unwrap_or_else(|e| e.into_inner()) = Some(mem);
        Ok(())
    }

    fn reset_device(&self) {
        tracing::info!("device reset: ending the guest session");
        self.dispatcher.end_session(SessionEnd::DeviceReset);
        // The next guest may place the window elsewhere.
        self.placement.forget();
    }

    /// GET_VRING_BASE: the queue is already marked not ready; wait for its
    /// pool's requests in flight, so that none completes into a ring the
    /// frontend has taken back. Bounded: a request blocked on the host
    /// must not hang the frontend; its reply is dropped when it finishes.
    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        if let Some(dax) = &self.dax {
            dax.queue_stopping();
        }
        let pool = usize::try_from(queue_index)
            .ok()
            .and_then(|q| self.pools.get(q))
            .and_then(Option::as_ref);
        if let Some(pool) = pool {
            let running = pool.wait_idle(STOP_WAIT);
            if running > 0 {
                tracing::warn!(
                    queue = queue_index,
                    running,
                    "queue stopped with requests still running; their replies will be dropped"
                );
            }
        }
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        (0..self.num_queues()).map(|q| 1u64 << q).collect()
    }

    /// Each connection's worker threads get a fresh exit eventfd, which
    /// vhost-user-backend signals (and then joins the thread) when the
    /// connection's handler is dropped. Without one a worker would never
    /// leave its epoll loop and the join would hang.
    fn exit_event(&self, thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        match new_event_consumer_and_notifier(EventFlag::NONBLOCK) {
            Ok(pair) => Some(pair),
            Err(error) => {
                tracing::error!(thread_index, %error, "cannot create a worker exit eventfd");
                None
            }
        }
    }

    fn handle_event(
        &self, device_event: u16, evset: EventSet, vrings: &[Vring], thread_id: usize,
    ) -> io::Result<()> {
        if evset != EventSet::IN {
            return Err(DeviceError::UnexpectedEvent(evset).into());
        }
        let vring = vrings
            .get(usize::from(device_event))
            .ok_or(DeviceError::NoSuchQueue(device_event))?;
        // One queue per thread (`queues_per_thread`), so the thread's index
        // is the queue's; `device_event` indexes this thread's vrings (always
        // 0). The queue's index picks its own reply buffers: queues served by
        // different threads never wait for each other's.
        let queue = u16::try_from(thread_id).map_err(|_| DeviceError::NoSuchQueue(u16::MAX))?;
        let served = run_guarded(
            || format!("queue {thread_id} worker"),
            || self.process_queue(queue, vring),
        );
        match served {
            Ok(Ok(())) => Ok(()),
            // vhost-user-backend ends the worker on an error: say so, or
            // the queue would just stop answering.
            Ok(Err(error)) => {
                tracing::error!(
                    queue,
                    error = %crate::error_chain(&error),
                    "queue worker stops: its queue gets no more replies"
                );
                Err(error.into())
            }
            Err(panic) => {
                self.failure.report(panic.clone());
                Err(io::Error::other(panic))
            }
        }
    }
}
