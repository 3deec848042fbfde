//! A virtio-fs device as the VMM and guest driver see it: connected to a backend over
//! vhost-user, with guest memory, virtqueues and (optionally) the DAX window.
//!
//! All methods take `&self`, so several threads may drive different queues (or the same
//! one) of one `Device` at once. Lock order: a queue's lock, then the allocator's lock;
//! never the other way round. Every wait is bounded by `DeviceConfig::timeout`.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use vhost::vhost_user::{Frontend, VhostUserProtocolFeatures};
use vhost::VhostBackend;
use vmm_sys_util::eventfd::EventFd;

use crate::backend_channel::{BackendChannel, FrontendBehaviour};
use crate::error::{HarnessError, Result};
use crate::guest_memory::{GuestAllocator, GuestBuf, GuestMemory};
use crate::handshake::{self, QueueSetup};
use crate::virtqueue::{ring_layout, Completion, QueueStats, RawDesc, SplitQueue, Token};
use crate::watchdog::Watchdog;
use crate::window::Window;

/// Default guest memory: 64 MiB at guest-physical 0.
pub const DEFAULT_MEMORY_SIZE: usize = 64 << 20;
/// Default bound of every wait, overridable with `DAXFSD_HARNESS_TIMEOUT_SECS`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest single sleep inside a wait, so waiters sharing a queue re-check often.
const WAIT_SLICE: Duration = Duration::from_millis(50);

/// How to set the device up.
#[derive(Debug, Clone)]
pub struct DeviceConfig {
    /// Request queues besides the hiprio queue 0 (queues 1..=N).
    pub request_queues: usize,
    /// Descriptors per configured queue (a power of two).
    pub queue_size: u16,
    /// Queues that get SET_VRING_ENABLE but no ring setup, as QEMU leaves the request
    /// queues a guest does not use.
    pub unconfigured_queues: Vec<usize>,
    /// Guest memory size in bytes.
    pub memory_size: usize,
    /// Guest-physical address of guest memory.
    pub memory_base: u64,
    /// Negotiate `VIRTIO_RING_F_EVENT_IDX` when offered.
    pub event_idx: bool,
    /// Negotiate REPLY_ACK when offered and ask for a reply to every message.
    pub reply_ack: bool,
    /// DAX window size: reserve it, negotiate BACKEND_REQ + BACKEND_SEND_FD (and SHMEM,
    /// see `offer_shmem`) and serve backend requests.
    pub cache_size: Option<u64>,
    /// Offer the SHMEM protocol feature with a window (false: a legacy-only frontend).
    pub offer_shmem: bool,
    /// Which frontend the backend channel plays (patched QEMU, or upstream QEMU 11.1).
    pub frontend: FrontendBehaviour,
    /// Negotiate CONFIGURE_MEM_SLOTS when offered (ADD_MEM_REG / REM_MEM_REG through
    /// [`Device::vhost_call`]).
    pub configure_mem_slots: bool,
    /// Negotiate LOG_SHMFD when offered, so that a dirty log can be installed with
    /// SET_LOG_BASE ([`crate::DirtyLog`]).
    pub log_shmfd: bool,
    /// Negotiate CONFIG when offered and read the virtio-fs config space with GET_CONFIG
    /// (false: like QEMU, which never negotiates CONFIG for vhost-user-fs).
    pub read_config: bool,
    /// Extra virtio feature bits to accept if offered.
    pub extra_features: u64,
    /// Bound of every wait (vhost-user replies, used buffers, backend channel I/O).
    pub timeout: Duration,
    /// Serve backend requests only while no vhost-user call is waiting for its reply, as
    /// QEMU's main loop does: a backend that sends a backend request from inside a
    /// frontend message's handler then deadlocks into a timeout, as it would under QEMU.
    pub qemu_main_loop: bool,
    /// Only look at the used ring after the call eventfd fired, as a guest would; a
    /// backend that forgets to notify then times out instead of passing.
    pub strict_notifications: bool,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        let timeout = std::env::var("DAXFSD_HARNESS_TIMEOUT_SECS")
            .ok()
            .and_then(|s| s.parse().ok())
            .map(Duration::from_secs)
            .unwrap_or(DEFAULT_TIMEOUT);
        DeviceConfig {
            request_queues: 1,
            queue_size: 128,
            unconfigured_queues: Vec::new(),
            memory_size: DEFAULT_MEMORY_SIZE,
            memory_base: 0,
            event_idx: false,
            reply_ack: true,
            cache_size: None,
            offer_shmem: true,
            frontend: FrontendBehaviour::Patched,
            configure_mem_slots: false,
            log_shmfd: false,
            read_config: true,
            extra_features: 0,
            timeout,
            qemu_main_loop: true,
            strict_notifications: true,
        }
    }
}

/// What was negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// GET_FEATURES answer.
    pub offered_features: u64,
    /// SET_FEATURES value.
    pub features: u64,
    /// GET_PROTOCOL_FEATURES answer.
    pub offered_protocol_features: VhostUserProtocolFeatures,
    /// SET_PROTOCOL_FEATURES value.
    pub protocol_features: VhostUserProtocolFeatures,
    /// GET_QUEUE_NUM answer, when MQ was negotiated.
    pub max_queues: Option<u64>,
}

/// The virtio-fs device config space.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsConfig {
    /// Mount tag.
    pub tag: String,
    /// Number of request queues the device offers.
    pub num_request_queues: u32,
}

struct QueueHandle {
    call: EventFd,
    kick: EventFd,
    /// `None` for a queue left unconfigured on purpose.
    state: Option<Mutex<SplitQueue>>,
}

/// A connected virtio-fs device.
pub struct Device {
    frontend: Mutex<Frontend>,
    /// Bounds every call on `frontend`.
    watchdog: Watchdog,
    memory: GuestMemory,
    /// Free guest memory outside the rings.
    allocator: Mutex<GuestAllocator>,
    queues: Vec<QueueHandle>,
    negotiated: Negotiated,
    fs_config: Option<FsConfig>,
    shmem_sizes: Option<Vec<u64>>,
    // Channel before window: the serving thread must stop before the window goes.
    channel: Option<BackendChannel>,
    window: Option<Arc<Window>>,
    timeout: Duration,
    strict: bool,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("negotiated", &self.negotiated)
            .field("queues", &self.queues.len())
            .field("fs_config", &self.fs_config)
            .field("window", &self.window)
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Device {
    /// Connects to the backend listening on `socket` and sets the device up.
    pub fn connect(socket: &Path, config: DeviceConfig) -> Result<Device> {
        let total = 1 + config.request_queues;
        if !config.queue_size.is_power_of_two() {
            return Err(HarnessError::InvalidConfig(format!(
                "queue size {} is not a power of two",
                config.queue_size
            )));
        }
        if let Some(&bad) = config.unconfigured_queues.iter().find(|&&q| q >= total) {
            return Err(HarnessError::InvalidConfig(format!(
                "unconfigured queue {bad} does not exist ({total} queues)"
            )));
        }
        let memory = GuestMemory::new_memfd(config.memory_base, config.memory_size)?;
        let mut allocator = GuestAllocator::new(config.memory_base, memory.size());

        let mut connected = handshake::negotiate(socket, &config)?;
        let event_idx = connected.negotiated.features & handshake::VIRTIO_RING_F_EVENT_IDX != 0;

        let mut queues = Vec::with_capacity(total);
        for index in 0..total {
            let new_fd = || {
                EventFd::new(libc::EFD_NONBLOCK)
                    .map_err(|e| HarnessError::io(format!("creating eventfd of queue {index}"), e))
            };
            let (call, kick) = (new_fd()?, new_fd()?);
            let state = if config.unconfigured_queues.contains(&index) {
                None
            } else {
                let (_, _, ring_len) = ring_layout(config.queue_size);
                let rings = allocator.alloc(ring_len, 4096)?;
                Some(Mutex::new(SplitQueue::new(
                    index,
                    config.queue_size,
                    rings.addr,
                    event_idx,
                )))
            };
            queues.push(QueueHandle { call, kick, state });
        }

        let setups: Vec<QueueSetup<'_>> = queues
            .iter()
            .enumerate()
            .filter_map(|(index, q)| {
                let state = q.state.as_ref()?;
                Some(QueueSetup {
                    index,
                    size: config.queue_size,
                    rings: lock(state).addresses(),
                    call: &q.call,
                    kick: &q.kick,
                })
            })
            .collect();
        handshake::start(
            &connected.watchdog,
            &mut connected.frontend,
            &connected.negotiated,
            &memory,
            &setups,
            total,
        )?;
        drop(setups);

        Ok(Device {
            frontend: Mutex::new(connected.frontend),
            watchdog: connected.watchdog,
            memory,
            allocator: Mutex::new(allocator),
            queues,
            negotiated: connected.negotiated,
            fs_config: connected.fs_config,
            shmem_sizes: connected.shmem_sizes,
            channel: connected.channel,
            window: connected.window,
            timeout: config.timeout,
            strict: config.strict_notifications,
        })
    }

    /// Like [`Self::connect`], retrying for up to `wait` while nobody listens yet
    /// (connection refused, socket missing), e.g. while a `--persist` daemon re-arms.
    pub fn connect_when_ready(
        socket: &Path, config: DeviceConfig, wait: Duration,
    ) -> Result<Device> {
        let deadline = Instant::now() + wait;
        loop {
            match Device::connect(socket, config.clone()) {
                Err(HarnessError::Io { source, .. })
                    if matches!(
                        source.kind(),
                        std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                    ) && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(10));
                }
                other => return other,
            }
        }
    }

    /// Number of queues (hiprio + request queues).
    pub fn num_queues(&self) -> usize {
        self.queues.len()
    }

    /// What was negotiated.
    pub fn negotiated(&self) -> &Negotiated {
        &self.negotiated
    }

    /// The virtio-fs config space, if it was read.
    pub fn fs_config(&self) -> Option<&FsConfig> {
        self.fs_config.as_ref()
    }

    /// Shared-memory region sizes from GET_SHMEM_CONFIG, if SHMEM was negotiated.
    pub fn shmem_sizes(&self) -> Option<&[u64]> {
        self.shmem_sizes.as_deref()
    }

    /// Guest memory.
    pub fn memory(&self) -> &GuestMemory {
        &self.memory
    }

    /// The DAX window, if `cache_size` was set.
    pub fn window(&self) -> Option<&Arc<Window>> {
        self.window.as_ref()
    }

    /// The backend-request channel, if `cache_size` was set.
    pub fn backend_channel(&self) -> Option<&BackendChannel> {
        self.channel.as_ref()
    }

    /// What the frontend does to the DAX window when the guest resets the device: both
    /// QEMUs drop every mapping, whichever protocol made it (the back-end's later SHMEM
    /// unmaps of them are refused; legacy unmaps clear whatever is there and succeed).
    /// Nothing is sent to the back-end (QEMU negotiates no RESET_DEVICE with it); the
    /// guest's next INIT starts the new session.
    pub fn device_reset_window(&self) -> Result<()> {
        if let Some(window) = &self.window {
            window.clear()?;
        }
        Ok(())
    }

    /// The bound of every wait.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs `f` on the vhost-user frontend (for messages the harness does not wrap),
    /// bounded by the device timeout; `what` names the call in errors. After a timeout
    /// the connection is closed.
    pub fn vhost_call<T>(
        &self, what: &str, f: impl FnOnce(&mut Frontend) -> vhost::Result<T>,
    ) -> Result<T> {
        let mut frontend = lock(&self.frontend);
        self.watchdog.call(what, || f(&mut frontend))
    }

    /// Allocates a guest buffer (for raw chains); free it with [`Self::free`].
    pub fn alloc(&self, len: u64) -> Result<GuestBuf> {
        lock(&self.allocator).alloc(len, 16)
    }

    /// Allocates a guest buffer aligned to `align` (a power of two), e.g. whole pages;
    /// free it with [`Self::free`].
    pub fn alloc_aligned(&self, len: u64, align: u64) -> Result<GuestBuf> {
        lock(&self.allocator).alloc(len, align)
    }

    /// Returns a buffer from [`Self::alloc`].
    pub fn free(&self, buf: GuestBuf) {
        lock(&self.allocator).free(buf);
    }

    fn queue(&self, queue: usize) -> Result<(&QueueHandle, &Mutex<SplitQueue>)> {
        let handle = self
            .queues
            .get(queue)
            .ok_or(HarnessError::NoSuchQueue(queue))?;
        let state = handle
            .state
            .as_ref()
            .ok_or(HarnessError::QueueNotConfigured(queue))?;
        Ok((handle, state))
    }

    /// Guest-physical addresses of a configured queue's descriptor table, avail ring and
    /// used ring.
    pub fn ring_addresses(&self, queue: usize) -> Result<(u64, u64, u64)> {
        let (_, state) = self.queue(queue)?;
        Ok(lock(state).addresses())
    }

    /// SET_VRING_ADDR again for every configured queue, with or without the
    /// VHOST_VRING_F_LOG flag: what QEMU sends when dirty logging starts or stops.
    pub fn set_vring_logging(&self, log: bool) -> Result<()> {
        for (index, handle) in self.queues.iter().enumerate() {
            let Some(state) = &handle.state else { continue };
            let (size, rings) = {
                let q = lock(state);
                (q.size(), q.addresses())
            };
            let config = handshake::vring_config(&self.memory, size, rings, log)?;
            self.vhost_call(&format!("SET_VRING_ADDR({index})"), |fe| {
                fe.set_vring_addr(index, &config)
            })?;
        }
        Ok(())
    }

    /// Counters of a configured queue.
    pub fn queue_stats(&self, queue: usize) -> Result<QueueStats> {
        let (_, state) = self.queue(queue)?;
        Ok(lock(state).stats)
    }

    /// Chains in flight and free descriptors of a configured queue.
    pub fn queue_occupancy(&self, queue: usize) -> Result<(usize, usize)> {
        let (_, state) = self.queue(queue)?;
        let q = lock(state);
        Ok((q.in_flight(), q.free_descriptors()))
    }

    /// Places a request: one readable descriptor per `readable` segment (in order, empty
    /// segments become zero-length descriptors), then one writable descriptor per entry
    /// of `writable` (its length). Kicks the queue and returns without waiting.
    pub fn submit(&self, queue: usize, readable: &[&[u8]], writable: &[u32]) -> Result<Token> {
        let (handle, state) = self.queue(queue)?;
        let mut owned = Vec::with_capacity(readable.len() + writable.len());
        let mut segments = Vec::with_capacity(owned.capacity());
        let placed = (|| {
            let mut alloc = lock(&self.allocator);
            for seg in readable {
                let len = u32::try_from(seg.len())
                    .map_err(|_| HarnessError::SegmentTooLarge(seg.len()))?;
                let buf = alloc.alloc(u64::from(len), 16)?;
                owned.push(buf);
                self.memory.write(buf.addr, seg)?;
                segments.push((buf.addr, len, false));
            }
            for &len in writable {
                let buf = alloc.alloc(u64::from(len), 16)?;
                owned.push(buf);
                segments.push((buf.addr, len, true));
            }
            Ok(())
        })();
        if let Err(e) = placed {
            self.free_all(owned);
            return Err(e);
        }
        let pushed = lock(state).push_chain(&self.memory, &segments, owned.clone());
        match pushed {
            Ok(id) => {
                self.kick_handle(handle, queue)?;
                Ok(Token { queue, id })
            }
            Err(e) => {
                self.free_all(owned);
                Err(e)
            }
        }
    }

    /// Places a hand-built chain (addresses are used as given; nothing is allocated) and
    /// kicks. The reply, if any, is read from the chain's writable descriptors.
    pub fn submit_raw_chain(&self, queue: usize, chain: &[RawDesc]) -> Result<Token> {
        let (handle, state) = self.queue(queue)?;
        let id = lock(state).push_raw(&self.memory, chain, Vec::new())?;
        self.kick_handle(handle, queue)?;
        Ok(Token { queue, id })
    }

    /// Submits and waits: the bytes the backend wrote (at most `writable_len`).
    pub fn request(&self, queue: usize, readable: &[&[u8]], writable_len: u32) -> Result<Vec<u8>> {
        let writable: &[u32] = if writable_len == 0 {
            &[]
        } else {
            &[writable_len]
        };
        let token = self.submit(queue, readable, writable)?;
        Ok(self.wait(token)?.data)
    }

    /// Waits (bounded by the device timeout) for a request to complete.
    pub fn wait(&self, token: Token) -> Result<Completion> {
        self.wait_timeout(token, self.timeout)
    }

    /// Waits up to `timeout` for a request to complete.
    pub fn wait_timeout(&self, token: Token, timeout: Duration) -> Result<Completion> {
        let (handle, state) = self.queue(token.queue)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(done) = lock(state).take(token.id)? {
                return Ok(done);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(HarnessError::Timeout {
                    what: format!(
                        "request {} on queue {} to be used{}",
                        token.id,
                        token.queue,
                        if self.strict { " (and notified)" } else { "" }
                    ),
                    timeout,
                });
            }
            let signalled = wait_call(&handle.call, (deadline - now).min(WAIT_SLICE))?;
            if signalled || !self.strict {
                self.harvest(token.queue, state, signalled)?;
            }
        }
    }

    /// Non-blocking: the completion of `token` if it is already there (harvesting what a
    /// notification announced).
    pub fn try_take(&self, token: Token) -> Result<Option<Completion>> {
        let (handle, state) = self.queue(token.queue)?;
        let signalled = wait_call(&handle.call, Duration::ZERO)?;
        if signalled || !self.strict {
            self.harvest(token.queue, state, signalled)?;
        }
        lock(state).take(token.id)
    }

    /// Waits for several requests, in order.
    pub fn wait_all(&self, tokens: &[Token]) -> Result<Vec<Completion>> {
        tokens.iter().map(|&t| self.wait(t)).collect()
    }

    fn harvest(&self, queue: usize, state: &Mutex<SplitQueue>, signalled: bool) -> Result<()> {
        let freed = {
            let mut q = lock(state);
            if signalled {
                q.stats.notifications += 1;
            }
            q.harvest(&self.memory)
        };
        debug_assert!(queue < self.queues.len());
        self.free_all(freed?);
        Ok(())
    }

    fn free_all(&self, bufs: Vec<GuestBuf>) {
        let mut alloc = lock(&self.allocator);
        for buf in bufs {
            alloc.free(buf);
        }
    }

    /// Kicks a configured or unconfigured queue's eventfd (a doorbell write).
    pub fn kick(&self, queue: usize) -> Result<()> {
        let handle = self
            .queues
            .get(queue)
            .ok_or(HarnessError::NoSuchQueue(queue))?;
        self.kick_handle(handle, queue)
    }

    fn kick_handle(&self, handle: &QueueHandle, queue: usize) -> Result<()> {
        handle
            .kick
            .write(1)
            .map_err(|e| HarnessError::io(format!("kicking queue {queue}"), e))
    }

    /// GET_VRING_BASE: stops the queue in the backend and returns its next avail index.
    pub fn stop_queue(&self, queue: usize) -> Result<u32> {
        if queue >= self.queues.len() {
            return Err(HarnessError::NoSuchQueue(queue));
        }
        self.vhost_call(&format!("GET_VRING_BASE({queue})"), |fe| {
            fe.get_vring_base(queue)
        })
    }

    /// Closes the connection (the backend sees a disconnect); the window and the backend
    /// channel are torn down.
    pub fn disconnect(self) {
        drop(self);
    }
}

/// Waits up to `timeout` for the call eventfd; true if it carried a notification.
fn wait_call(call: &EventFd, timeout: Duration) -> Result<bool> {
    use std::os::fd::AsRawFd;
    let mut pfd = libc::pollfd {
        fd: call.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    // SAFETY: `pfd` is one valid pollfd living across the call, and we pass count 1.
    let rc = unsafe { libc::poll(&mut pfd, 1, ms) };
    if rc < 0 {
        let err = std::io::Error::last_os_error();
        if err.kind() == std::io::ErrorKind::Interrupted {
            return Ok(false);
        }
        return Err(HarnessError::io("polling a call eventfd", err));
    }
    if rc == 0 {
        return Ok(false);
    }
    match call.read() {
        Ok(n) => Ok(n > 0),
        // Another waiter consumed it first.
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(HarnessError::io("reading a call eventfd", e)),
    }
}
