//! The vhost-user handshake, in the order QEMU uses for vhost-user-fs:
//! SET_OWNER, GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM,
//! SET_BACKEND_REQ_FD, GET_SHMEM_CONFIG, GET_CONFIG, then on "start": SET_FEATURES,
//! SET_MEM_TABLE, per configured queue SET_VRING_NUM/BASE/ADDR/CALL/KICK, and
//! SET_VRING_ENABLE on every queue (configured or not). No SET_STATUS / DRIVER_OK is ever
//! sent, as with QEMU's vhost-user-fs.
//!
//! Ordering constraints of vhost 0.18's `Frontend`: GET_FEATURES before
//! GET_PROTOCOL_FEATURES, SET_FEATURES before SET_VRING_ENABLE; NEED_REPLY is switched on
//! only after REPLY_ACK was acked.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::{Arc, Mutex};

use vhost::vhost_user::message::{
    VhostUserConfigFlags, VhostUserHeaderFlag, VhostUserVringAddrFlags,
};
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VringConfigData};
use vmm_sys_util::eventfd::EventFd;

use crate::backend_channel::BackendChannel;
use crate::device::{DeviceConfig, FsConfig, Negotiated};
use crate::error::{HarnessError, Result};
use crate::guest_memory::GuestMemory;
use crate::watchdog::Watchdog;
use crate::window::Window;

/// `VIRTIO_F_VERSION_1`.
pub const VIRTIO_F_VERSION_1: u64 = 1 << 32;
/// `VIRTIO_RING_F_EVENT_IDX`.
pub const VIRTIO_RING_F_EVENT_IDX: u64 = 1 << 29;
/// `VHOST_USER_F_PROTOCOL_FEATURES`.
pub const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
/// Size of the virtio-fs config space read with GET_CONFIG (tag + num_request_queues).
pub const FS_CONFIG_LEN: u32 = 40;
const FS_TAG_LEN: usize = 36;

/// What the first half of the handshake produced.
pub(crate) struct Connected {
    pub(crate) frontend: Frontend,
    pub(crate) watchdog: Watchdog,
    pub(crate) negotiated: Negotiated,
    pub(crate) fs_config: Option<FsConfig>,
    pub(crate) shmem_sizes: Option<Vec<u64>>,
    pub(crate) window: Option<Arc<Window>>,
    pub(crate) channel: Option<BackendChannel>,
}

/// Connects and negotiates features, protocol features, queues, the backend channel and
/// the config space.
pub(crate) fn negotiate(socket: &Path, cfg: &DeviceConfig) -> Result<Connected> {
    let total_queues = 1 + cfg.request_queues;
    let stream = UnixStream::connect(socket)
        .map_err(|e| HarnessError::io(format!("connecting to {}", socket.display()), e))?;
    let watched = stream
        .try_clone()
        .map_err(|e| HarnessError::io("cloning the vhost-user socket", e))?;
    let main_loop = Arc::new(Mutex::new(()));
    let wd = Watchdog::new(watched, cfg.timeout, Arc::clone(&main_loop))?;
    let mut frontend = Frontend::from_stream(stream, total_queues as u64);

    wd.call("SET_OWNER", || frontend.set_owner())?;
    let offered_features = wd.call("GET_FEATURES", || frontend.get_features())?;
    if offered_features & VIRTIO_F_VERSION_1 == 0 {
        return Err(HarnessError::MissingFeature("VIRTIO_F_VERSION_1"));
    }
    if offered_features & VHOST_USER_F_PROTOCOL_FEATURES == 0 {
        return Err(HarnessError::MissingFeature(
            "VHOST_USER_F_PROTOCOL_FEATURES",
        ));
    }
    let mut wanted = VIRTIO_F_VERSION_1 | VHOST_USER_F_PROTOCOL_FEATURES | cfg.extra_features;
    if cfg.event_idx {
        wanted |= VIRTIO_RING_F_EVENT_IDX;
    }
    let features = offered_features & wanted;

    let offered_protocol = wd.call("GET_PROTOCOL_FEATURES", || frontend.get_protocol_features())?;
    // DEVICE_STATE: as QEMU, which migrates a vhost-user-fs back-end's state.
    let mut wanted_protocol =
        VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::DEVICE_STATE;
    if cfg.read_config {
        wanted_protocol |= VhostUserProtocolFeatures::CONFIG;
    }
    if cfg.reply_ack {
        wanted_protocol |= VhostUserProtocolFeatures::REPLY_ACK;
    }
    if cfg.configure_mem_slots {
        wanted_protocol |= VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS;
    }
    if cfg.log_shmfd {
        wanted_protocol |= VhostUserProtocolFeatures::LOG_SHMFD;
    }
    if cfg.cache_size.is_some() {
        wanted_protocol |=
            VhostUserProtocolFeatures::BACKEND_REQ | VhostUserProtocolFeatures::BACKEND_SEND_FD;
        if cfg.offer_shmem {
            wanted_protocol |= VhostUserProtocolFeatures::SHMEM;
        }
    }
    let protocol = offered_protocol & wanted_protocol;
    wd.call("SET_PROTOCOL_FEATURES", || {
        frontend.set_protocol_features(protocol)
    })?;
    if protocol.contains(VhostUserProtocolFeatures::REPLY_ACK) {
        frontend.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
    }

    let max_queues = if protocol.contains(VhostUserProtocolFeatures::MQ) {
        let n = wd.call("GET_QUEUE_NUM", || frontend.get_queue_num())?;
        if n < total_queues as u64 {
            return Err(HarnessError::TooManyQueues {
                supported: n,
                requested: total_queues,
            });
        }
        Some(n)
    } else {
        None
    };

    let (window, channel) = match cfg.cache_size {
        Some(size) => {
            if !protocol.contains(VhostUserProtocolFeatures::BACKEND_REQ) {
                return Err(HarnessError::MissingFeature(
                    "the BACKEND_REQ protocol feature",
                ));
            }
            let window = Arc::new(Window::reserve(size)?);
            let (ours, theirs) = UnixStream::pair()
                .map_err(|e| HarnessError::io("creating the backend channel socketpair", e))?;
            let gate = cfg.qemu_main_loop.then(|| Arc::clone(&main_loop));
            let channel = BackendChannel::serve_as(
                ours,
                Arc::clone(&window),
                cfg.timeout,
                gate,
                cfg.frontend,
            )?;
            wd.call("SET_BACKEND_REQ_FD", || {
                frontend.set_backend_request_fd(&theirs)
            })?;
            (Some(window), Some(channel))
        }
        None => (None, None),
    };

    let shmem_sizes = if protocol.contains(VhostUserProtocolFeatures::SHMEM) {
        let config = wd.call("GET_SHMEM_CONFIG", || frontend.get_shmem_config())?;
        let n = (config.nregions as usize).min(config.memory_sizes.len());
        Some(config.memory_sizes[..n].to_vec())
    } else {
        None
    };

    let fs_config = if cfg.read_config && protocol.contains(VhostUserProtocolFeatures::CONFIG) {
        let buf = [0u8; FS_CONFIG_LEN as usize];
        let (_, payload) = wd.call("GET_CONFIG", || {
            frontend.get_config(0, FS_CONFIG_LEN, VhostUserConfigFlags::empty(), &buf)
        })?;
        Some(parse_fs_config(&payload)?)
    } else {
        None
    };

    Ok(Connected {
        frontend,
        watchdog: wd,
        negotiated: Negotiated {
            offered_features,
            features,
            offered_protocol_features: offered_protocol,
            protocol_features: protocol,
            max_queues,
        },
        fs_config,
        shmem_sizes,
        window,
        channel,
    })
}

/// Decodes the virtio-fs config space: tag (NUL padded) and num_request_queues.
pub fn parse_fs_config(payload: &[u8]) -> Result<FsConfig> {
    if payload.len() < FS_CONFIG_LEN as usize {
        return Err(HarnessError::MalformedReply(format!(
            "virtio-fs config of {} bytes, expected {FS_CONFIG_LEN}",
            payload.len()
        )));
    }
    let tag_bytes = &payload[..FS_TAG_LEN];
    let end = tag_bytes.iter().position(|&b| b == 0).unwrap_or(FS_TAG_LEN);
    let tag = String::from_utf8_lossy(&tag_bytes[..end]).into_owned();
    let mut n = [0u8; 4];
    n.copy_from_slice(&payload[FS_TAG_LEN..FS_TAG_LEN + 4]);
    Ok(FsConfig {
        tag,
        num_request_queues: u32::from_le_bytes(n),
    })
}

/// SET_VRING_ADDR's payload for a queue of `size` whose rings sit at the guest-physical
/// `(desc, avail, used)`; with `log`, the VHOST_VRING_F_LOG flag and the used ring's
/// guest-physical address as the log address, as QEMU sends while migrating.
pub(crate) fn vring_config(
    memory: &GuestMemory, size: u16, (desc, avail, used): (u64, u64, u64), log: bool,
) -> Result<VringConfigData> {
    Ok(VringConfigData {
        queue_max_size: size,
        queue_size: size,
        flags: if log {
            VhostUserVringAddrFlags::VHOST_VRING_F_LOG.bits()
        } else {
            0
        },
        desc_table_addr: memory.host_address(desc)?,
        used_ring_addr: memory.host_address(used)?,
        avail_ring_addr: memory.host_address(avail)?,
        log_addr: log.then_some(used),
    })
}

/// Per-queue setup data for [`start`].
pub(crate) struct QueueSetup<'a> {
    pub(crate) index: usize,
    pub(crate) size: u16,
    /// Guest-physical desc, avail, used addresses.
    pub(crate) rings: (u64, u64, u64),
    pub(crate) call: &'a EventFd,
    pub(crate) kick: &'a EventFd,
}

/// SET_FEATURES, SET_MEM_TABLE, ring setup of the configured queues, then
/// SET_VRING_ENABLE on all `total_queues`.
pub(crate) fn start(
    wd: &Watchdog, frontend: &mut Frontend, negotiated: &Negotiated, memory: &GuestMemory,
    queues: &[QueueSetup<'_>], total_queues: usize,
) -> Result<()> {
    wd.call("SET_FEATURES", || {
        frontend.set_features(negotiated.features)
    })?;
    let regions = memory.region_infos()?;
    wd.call("SET_MEM_TABLE", || frontend.set_mem_table(&regions))?;
    for q in queues {
        let i = q.index;
        let config = vring_config(memory, q.size, q.rings, false)?;
        wd.call(&format!("SET_VRING_NUM({i})"), || {
            frontend.set_vring_num(i, q.size)
        })?;
        wd.call(&format!("SET_VRING_BASE({i})"), || {
            frontend.set_vring_base(i, 0)
        })?;
        wd.call(&format!("SET_VRING_ADDR({i})"), || {
            frontend.set_vring_addr(i, &config)
        })?;
        wd.call(&format!("SET_VRING_CALL({i})"), || {
            frontend.set_vring_call(i, q.call)
        })?;
        wd.call(&format!("SET_VRING_KICK({i})"), || {
            frontend.set_vring_kick(i, q.kick)
        })?;
    }
    for i in 0..total_queues {
        wd.call(&format!("SET_VRING_ENABLE({i})"), || {
            frontend.set_vring_enable(i, true)
        })?;
    }
    Ok(())
}
