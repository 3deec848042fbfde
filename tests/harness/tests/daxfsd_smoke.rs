//! The harness against daxfsd itself: the plumbing (handshake, INIT, replies on every
//! request queue, QEMU's queue pattern, disconnect). The per-operation tests belong to the
//! daemon; these only prove the harness can drive it.

use std::time::Duration;

use daxfsd_harness::fuse::{Uniques, DEFAULT_REPLY_CAPACITY};
use daxfsd_harness::{
    locate_daxfsd, BackendCommand, BackendProcess, Device, DeviceConfig, HarnessError,
};
use daxfsd_protocol::abi::{GetattrIn, ROOT_ID};
use daxfsd_protocol::encode::RequestEncoder;
use daxfsd_protocol::Opcode;
use vhost::vhost_user::VhostUserProtocolFeatures;

const TAG: &str = "smoke";

fn start(request_queues: usize, extra: &[&str]) -> BackendProcess {
    let bin = locate_daxfsd().unwrap_or_else(|e| panic!("{}", daxfsd_harness::error_chain(&e)));
    BackendCommand::daxfsd(bin)
        .args(["--tag", TAG, "--num-request-queues"])
        .arg(request_queues.to_string())
        .args(extra.iter().copied())
        .spawn()
        .unwrap_or_else(|e| panic!("{}", daxfsd_harness::error_chain(&e)))
}

fn check<T>(backend: &BackendProcess, r: Result<T, HarnessError>) -> T {
    r.unwrap_or_else(|e| panic!("{}", backend.report(&e)))
}

fn getattr(unique: u64) -> Vec<u8> {
    RequestEncoder::new(Opcode::Getattr, unique, ROOT_ID)
        .push(&GetattrIn::default())
        .finish()
}

#[test]
fn handshake_init_and_a_reply_on_every_request_queue() {
    let backend = start(3, &[]);
    let dev = check(
        &backend,
        Device::connect(
            backend.socket_path(),
            DeviceConfig {
                request_queues: 3,
                ..DeviceConfig::default()
            },
        ),
    );
    let proto = dev.negotiated().protocol_features;
    assert!(proto.contains(VhostUserProtocolFeatures::MQ), "{proto:?}");
    if let Some(config) = dev.fs_config() {
        assert_eq!(config.tag, TAG);
        assert_eq!(config.num_request_queues, 3);
    }
    let uniques = Uniques::default();
    let init = check(&backend, dev.fuse_init(1, uniques.next(), 0));
    assert_eq!(init.major, 7);
    // Requests in flight on all three request queues at once; each gets a well-framed
    // reply to its own unique (fuse_wait checks both).
    let mut pending = Vec::new();
    for i in 0..30 {
        let req = getattr(uniques.next());
        let token = check(
            &backend,
            dev.fuse_submit(1 + i % 3, &req, DEFAULT_REPLY_CAPACITY),
        );
        pending.push((token, req));
    }
    for (token, req) in &pending {
        check(&backend, dev.fuse_wait(*token, req));
    }
    for q in 1..=3 {
        assert_eq!(
            check(&backend, dev.queue_stats(q)).completed,
            if q == 1 { 11 } else { 10 }
        );
    }
}

/// QEMU's pattern: every queue enabled, only some configured, no DRIVER_OK ever.
#[test]
fn enabled_but_unconfigured_queues_are_tolerated() {
    let backend = start(4, &[]);
    let dev = check(
        &backend,
        Device::connect(
            backend.socket_path(),
            DeviceConfig {
                request_queues: 4,
                unconfigured_queues: vec![3, 4],
                ..DeviceConfig::default()
            },
        ),
    );
    let uniques = Uniques::default();
    check(&backend, dev.fuse_init(1, uniques.next(), 0));
    for q in [0, 1, 2] {
        let req = getattr(uniques.next());
        check(&backend, dev.fuse(q, &req, DEFAULT_REPLY_CAPACITY));
    }
    // Kicking an unconfigured queue must not upset the daemon either.
    check(&backend, dev.kick(3));
    let req = getattr(uniques.next());
    check(&backend, dev.fuse(2, &req, DEFAULT_REPLY_CAPACITY));
}

#[test]
fn without_persist_the_daemon_exits_on_disconnect() {
    let backend = start(1, &[]);
    let dev = check(
        &backend,
        Device::connect(backend.socket_path(), DeviceConfig::default()),
    );
    let uniques = Uniques::default();
    check(&backend, dev.fuse_init(1, uniques.next(), 0));
    dev.disconnect();
    let status = check(&backend, backend.wait_exit(Duration::from_secs(10)));
    assert!(status.success(), "{}", backend.diagnostics());
}

#[test]
fn with_persist_a_second_frontend_is_served() {
    let backend = start(1, &["--persist"]);
    assert!(check(&backend, backend.is_running()));
    for round in 0..2 {
        // The daemon may need a moment to listen again after a disconnect.
        let dev = check(
            &backend,
            Device::connect_when_ready(
                backend.socket_path(),
                DeviceConfig::default(),
                Duration::from_secs(10),
            ),
        );
        let uniques = Uniques::default();
        let init = check(&backend, dev.fuse_init(1, uniques.next(), 0));
        assert_eq!(init.major, 7, "round {round}");
        dev.disconnect();
        assert!(check(&backend, backend.is_running()), "round {round}");
    }
}
