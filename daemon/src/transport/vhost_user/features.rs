//! What the device offers the frontend: virtio feature bits and vhost-user
//! protocol features.

use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

use crate::dax::DaxProtocol;

/// The virtio feature bits (GET_FEATURES). LOG_ALL: the device marks what
/// it writes into guest memory in the frontend's dirty log
/// ([`super::dirty_log`]); QEMU refuses to migrate a vhost-user device that
/// does not offer it.
pub(super) fn virtio_features() -> u64 {
    (1 << VIRTIO_F_VERSION_1)
        | (1 << VIRTIO_RING_F_INDIRECT_DESC)
        | (1 << VIRTIO_RING_F_EVENT_IDX)
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
        | VhostUserVirtioFeatures::LOG_ALL.bits()
}

/// The protocol features (GET_PROTOCOL_FEATURES), with the DAX window's
/// backend channel when there is a window.
///
/// CONFIGURE_MEM_SLOTS: a frontend that puts window mappings into the
/// memory table (QEMU 11.1 adds a region per mapping) may then pass up to
/// 509 regions with ADD_MEM_REG / REM_MEM_REG, which vhost-user-backend
/// serves (`update_memory`); without it QEMU is limited to 8 regions in
/// SET_MEM_TABLE. LOG_SHMFD: the dirty log comes as a memfd with
/// SET_LOG_BASE, the only way a vhost-user backend can get one.
/// DEVICE_STATE: live migration carries the guest's session to the
/// destination daemon (`device_state.rs`).
pub(super) fn protocol_features(dax: Option<DaxProtocol>) -> VhostUserProtocolFeatures {
    let base = VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
        | VhostUserProtocolFeatures::LOG_SHMFD
        | VhostUserProtocolFeatures::DEVICE_STATE;
    match dax {
        None => base,
        Some(protocol) => {
            let channel = base
                | VhostUserProtocolFeatures::BACKEND_REQ
                | VhostUserProtocolFeatures::BACKEND_SEND_FD;
            match protocol {
                DaxProtocol::Shmem => channel | VhostUserProtocolFeatures::SHMEM,
                // Legacy frontends know nothing of SHMEM (bit 22).
                DaxProtocol::Legacy => channel,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dirty_logging_is_offered_with_and_without_a_window() {
        // VHOST_F_LOG_ALL is bit 26.
        assert_ne!(virtio_features() & (1 << 26), 0);
        for dax in [None, Some(DaxProtocol::Shmem), Some(DaxProtocol::Legacy)] {
            assert!(protocol_features(dax).contains(VhostUserProtocolFeatures::LOG_SHMFD));
        }
    }

    #[test]
    fn the_window_brings_its_channel_and_shmem_only_with_that_protocol() {
        let channel =
            VhostUserProtocolFeatures::BACKEND_REQ | VhostUserProtocolFeatures::BACKEND_SEND_FD;
        assert!(!protocol_features(None).intersects(channel));
        assert!(protocol_features(Some(DaxProtocol::Legacy)).contains(channel));
        assert!(!protocol_features(Some(DaxProtocol::Legacy))
            .contains(VhostUserProtocolFeatures::SHMEM));
        assert!(protocol_features(Some(DaxProtocol::Shmem))
            .contains(channel | VhostUserProtocolFeatures::SHMEM));
    }
}
