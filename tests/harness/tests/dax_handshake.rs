//! DAX negotiation against daxfsd: the window size over GET_SHMEM_CONFIG, the protocol
//! features a standard frontend needs, and MAP_ALIGNMENT in the INIT reply.

mod dax_common;

use dax_common::{DaxDaemon, MIB};
use daxfsd_harness::fuse::Uniques;
use daxfsd_harness::DeviceConfig;
use daxfsd_protocol::abi::{ASYNC_READ, MAP_ALIGNMENT};
use vhost::vhost_user::VhostUserProtocolFeatures;

#[test]
fn shmem_config_reports_one_region_of_the_cache_size() {
    let daemon = DaxDaemon::start(24 * MIB, 1, &[]);
    let session = daemon.connect();
    let proto = session.dev.negotiated().protocol_features;
    for needed in [
        VhostUserProtocolFeatures::SHMEM,
        VhostUserProtocolFeatures::BACKEND_REQ,
        VhostUserProtocolFeatures::BACKEND_SEND_FD,
        VhostUserProtocolFeatures::REPLY_ACK,
    ] {
        assert!(
            proto.contains(needed),
            "{needed:?} not negotiated: {proto:?}"
        );
    }
    assert_eq!(session.dev.shmem_sizes(), Some(&[24 * MIB][..]));
    assert_eq!(session.window().size(), 24 * MIB);
}

#[test]
fn init_announces_page_alignment_when_the_guest_offers_map_alignment() {
    let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
    let session = daemon.connect();
    assert_ne!(
        u64::from(session.init.flags) & MAP_ALIGNMENT,
        0,
        "MAP_ALIGNMENT not in the INIT reply: {:#x}",
        session.init.flags
    );
    assert_eq!(session.init.map_alignment, 12);
}

#[test]
fn init_without_map_alignment_offered_does_not_announce_it() {
    let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
    let dev = dax_common::check(
        &daemon.backend,
        daxfsd_harness::Device::connect(
            daemon.backend.socket_path(),
            DeviceConfig {
                cache_size: Some(8 * MIB),
                ..DeviceConfig::default()
            },
        ),
    );
    let init = dax_common::check(
        &daemon.backend,
        dev.fuse_init(1, Uniques::default().next(), ASYNC_READ),
    );
    assert_eq!(u64::from(init.flags) & MAP_ALIGNMENT, 0);
    assert_eq!(init.map_alignment, 0);
}
