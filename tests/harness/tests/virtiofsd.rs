//! The harness against a known-good backend, upstream virtiofsd. Skipped (with a printed
//! reason) when virtiofsd is not installed; `DAXFSD_TEST_VIRTIOFSD=1` installs it with
//! tests/tools/install-virtiofsd.sh and makes its absence a failure.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use daxfsd_harness::client::requests;
use daxfsd_harness::fuse::{FuseReply, Uniques, DEFAULT_REPLY_CAPACITY};
use daxfsd_harness::{
    locate_virtiofsd, BackendCommand, BackendProcess, Device, DeviceConfig, HarnessError, RawDesc,
};
use daxfsd_protocol::abi::{
    AttrOut, EntryOut, OpenOut, ASYNC_READ, BIG_WRITES, MAX_PAGES, ROOT_ID,
};
use daxfsd_protocol::Opcode;
use vhost::vhost_user::VhostUserProtocolFeatures;

const TAG: &str = "harness-test";
const HELLO: &[u8] = b"hello from the host\n";

fn virtiofsd() -> Option<PathBuf> {
    let required =
        std::env::var("DAXFSD_TEST_VIRTIOFSD").is_ok_and(|v| v == "1") || daxfsd_harness::in_ci();
    match locate_virtiofsd(required) {
        Ok(Some(bin)) => Some(bin),
        Ok(None) => {
            daxfsd_harness::skip(
                "upstream virtiofsd is not installed (run tests/tools/install-virtiofsd.sh \
                 or set DAXFSD_TEST_VIRTIOFSD=1)",
            );
            None
        }
        Err(e) if required => panic!("{}", daxfsd_harness::error_chain(&e)),
        Err(e) => {
            daxfsd_harness::skip(&daxfsd_harness::error_chain(&e));
            None
        }
    }
}

/// virtiofsd sharing a fresh directory that holds `hello.txt`.
fn start() -> Option<BackendProcess> {
    let bin = virtiofsd()?;
    let backend = BackendCommand::virtiofsd(bin)
        .args(["--tag", TAG])
        .spawn()
        .unwrap_or_else(|e| panic!("{}", daxfsd_harness::error_chain(&e)));
    std::fs::write(backend.shared_dir().join("hello.txt"), HELLO).unwrap();
    Some(backend)
}

/// Unwraps or panics with the backend's logs.
fn check<T>(backend: &BackendProcess, r: Result<T, HarnessError>) -> T {
    r.unwrap_or_else(|e| panic!("{}", backend.report(&e)))
}

fn connect(backend: &BackendProcess, config: DeviceConfig) -> Device {
    check(backend, Device::connect(backend.socket_path(), config))
}

/// Sends INIT on request queue 1 and checks virtiofsd's answer; returns the request ids
/// for what the test sends next.
fn init(backend: &BackendProcess, dev: &Device) -> Uniques {
    let uniques = Uniques::default();
    let out = check(
        backend,
        dev.fuse_init(1, uniques.next(), ASYNC_READ | BIG_WRITES | MAX_PAGES),
    );
    assert_eq!(out.major, 7);
    assert!(out.minor >= 27, "minor {}", out.minor);
    assert!(out.max_write >= 4096, "max_write {}", out.max_write);
    uniques
}

fn getattr_request(unique: u64, nodeid: u64) -> Vec<u8> {
    requests::getattr(unique, nodeid, None).finish()
}

fn lookup_request(unique: u64, parent: u64, name: &[u8]) -> Vec<u8> {
    requests::lookup(unique, parent, name).finish()
}

#[test]
fn handshake_negotiates_what_virtiofsd_offers() {
    let Some(backend) = start() else { return };
    let dev = connect(&backend, DeviceConfig::default());
    let n = dev.negotiated();
    assert_ne!(n.features & (1 << 32), 0, "VERSION_1 acked");
    assert_ne!(n.features & (1 << 30), 0, "PROTOCOL_FEATURES acked");
    // DEVICE_STATE: virtiofsd migrates its state, and the harness asks for it as QEMU.
    let expected = VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::DEVICE_STATE;
    assert_eq!(n.protocol_features, expected);
    assert!(!n
        .protocol_features
        .contains(VhostUserProtocolFeatures::STATUS));
    assert_eq!(
        n.max_queues,
        Some(2),
        "virtiofsd has hiprio + 1 request queue"
    );
    let config = dev.fs_config().expect("CONFIG negotiated, config read");
    assert_eq!(config.tag, TAG);
    assert_eq!(config.num_request_queues, 1);
}

#[test]
fn handshake_fails_cleanly_when_asking_for_too_many_queues() {
    let Some(backend) = start() else { return };
    let config = DeviceConfig {
        request_queues: 4,
        ..DeviceConfig::default()
    };
    match Device::connect(backend.socket_path(), config) {
        Err(HarnessError::TooManyQueues {
            supported,
            requested,
        }) => {
            assert_eq!((supported, requested), (2, 5));
        }
        other => panic!("expected TooManyQueues, got {other:?}"),
    }
}

#[test]
fn init_and_getattr_of_the_root() {
    let Some(backend) = start() else { return };
    let dev = connect(&backend, DeviceConfig::default());
    let uniques = init(&backend, &dev);

    let reply = check(
        &backend,
        dev.fuse(
            1,
            &getattr_request(uniques.next(), ROOT_ID),
            DEFAULT_REPLY_CAPACITY,
        ),
    );
    let attr = check(&backend, reply.ok().and_then(|r| r.body_as::<AttrOut>())).attr;
    let host = std::fs::metadata(backend.shared_dir()).unwrap();
    assert_eq!(attr.ino, host.ino());
    assert_eq!(attr.mode, host.mode());
    assert_eq!(attr.mode & libc::S_IFMT, libc::S_IFDIR);

    // The request split into header and body segments works the same.
    let req = getattr_request(uniques.next(), ROOT_ID);
    let (head, body) = req.split_at(40);
    let reply = check(
        &backend,
        dev.fuse_segments(1, &[head, body], DEFAULT_REPLY_CAPACITY),
    );
    assert_eq!(
        check(&backend, reply.body_as::<AttrOut>()).attr.ino,
        host.ino()
    );

    // A nodeid virtiofsd never handed out is refused, not fatal.
    let reply = check(
        &backend,
        dev.fuse(
            1,
            &getattr_request(uniques.next(), 0xdead_beef),
            DEFAULT_REPLY_CAPACITY,
        ),
    );
    assert_ne!(reply.errno(), 0);
}

#[test]
fn lookup_open_and_read_a_host_file_into_split_reply_buffers() {
    let Some(backend) = start() else { return };
    let dev = connect(&backend, DeviceConfig::default());
    let uniques = init(&backend, &dev);

    let entry = check(
        &backend,
        dev.fuse(
            1,
            &lookup_request(uniques.next(), ROOT_ID, b"hello.txt"),
            4096,
        )
        .and_then(FuseReply::ok)
        .and_then(|r| r.body_as::<EntryOut>()),
    );
    assert_eq!(entry.attr.size, HELLO.len() as u64);
    let open = requests::open(uniques.next(), entry.nodeid, libc::O_RDONLY as u32).finish();
    let fh = check(
        &backend,
        dev.fuse(1, &open, 4096)
            .and_then(FuseReply::ok)
            .and_then(|r| r.body_as::<OpenOut>()),
    )
    .fh;
    let unique = uniques.next();
    let read = requests::read(unique, entry.nodeid, fh, 0, 4096).finish();
    // Reply space in three writable descriptors: the header spans the first two.
    let token = check(&backend, dev.submit(1, &[&read], &[10, 10, 4096]));
    let done = check(&backend, dev.wait(token));
    assert_eq!(done.used_len as usize, 16 + HELLO.len());
    let reply = check(&backend, FuseReply::parse(&done.data));
    assert_eq!(reply.header.unique, unique);
    assert_eq!(reply.body, HELLO);
}

#[test]
fn many_requests_in_flight_on_two_queues() {
    let Some(backend) = start() else { return };
    let dev = connect(
        &backend,
        DeviceConfig {
            queue_size: 64,
            ..DeviceConfig::default()
        },
    );
    let uniques = init(&backend, &dev);
    let host = std::fs::metadata(backend.shared_dir()).unwrap();

    // 3 rounds of 60 requests, 30 per queue (2 descriptors each: 60 of the 64), all
    // submitted before any is collected.
    for _round in 0..3 {
        let mut pending = Vec::new();
        for i in 0..60 {
            let queue = i % 2;
            let unique = uniques.next();
            let req = if i % 3 == 0 {
                lookup_request(unique, ROOT_ID, b"hello.txt")
            } else {
                getattr_request(unique, ROOT_ID)
            };
            let token = check(&backend, dev.fuse_submit(queue, &req, 4096));
            pending.push((token, req));
        }
        for q in 0..2 {
            let (in_flight, _) = check(&backend, dev.queue_occupancy(q));
            assert!(in_flight <= 30, "queue {q}: {in_flight}");
        }
        // Collect in reverse order: completion order must not matter.
        for (token, req) in pending.iter().rev() {
            let reply = check(&backend, dev.fuse_wait(*token, req).and_then(FuseReply::ok));
            let opcode = u32::from_le_bytes(req[4..8].try_into().unwrap());
            if opcode == Opcode::Getattr as u32 {
                assert_eq!(
                    check(&backend, reply.body_as::<AttrOut>()).attr.ino,
                    host.ino()
                );
            } else {
                let entry = check(&backend, reply.body_as::<EntryOut>());
                assert_eq!(entry.attr.size, HELLO.len() as u64);
            }
        }
    }
    for q in 0..2 {
        let stats = check(&backend, dev.queue_stats(q));
        assert_eq!(stats.submitted, stats.completed, "queue {q}: {stats:?}");
        assert!(stats.notifications > 0, "queue {q}: {stats:?}");
        assert_eq!(check(&backend, dev.queue_occupancy(q)), (0, 64));
    }
}

#[test]
fn concurrent_threads_on_both_queues_with_event_idx() {
    let Some(backend) = start() else { return };
    let dev = connect(
        &backend,
        DeviceConfig {
            event_idx: true,
            ..DeviceConfig::default()
        },
    );
    assert_ne!(
        dev.negotiated().features & (1 << 29),
        0,
        "EVENT_IDX negotiated"
    );
    let uniques = init(&backend, &dev);
    std::thread::scope(|s| {
        for queue in 0..2 {
            let (dev, uniques, backend) = (&dev, &uniques, &backend);
            s.spawn(move || {
                for _ in 0..200 {
                    let req = getattr_request(uniques.next(), ROOT_ID);
                    let reply = check(backend, dev.fuse(queue, &req, 4096));
                    assert_eq!(reply.errno(), 0);
                }
            });
        }
    });
    assert_eq!(check(&backend, dev.queue_stats(0)).completed, 200);
    assert_eq!(check(&backend, dev.queue_stats(1)).completed, 201);
}

/// QEMU's pattern: the hiprio queue enabled but never configured, no DRIVER_OK ever.
#[test]
fn enabled_but_unconfigured_queue_and_no_driver_ok() {
    let Some(backend) = start() else { return };
    let dev = connect(
        &backend,
        DeviceConfig {
            unconfigured_queues: vec![0],
            ..DeviceConfig::default()
        },
    );
    let uniques = init(&backend, &dev);
    let reply = check(
        &backend,
        dev.fuse(1, &getattr_request(uniques.next(), ROOT_ID), 4096),
    );
    assert_eq!(reply.errno(), 0);
    assert!(matches!(
        dev.submit(0, &[b"x"], &[16]),
        Err(HarnessError::QueueNotConfigured(0))
    ));
}

#[test]
fn raw_chain_carries_a_well_formed_request() {
    let Some(backend) = start() else { return };
    let dev = connect(&backend, DeviceConfig::default());
    let uniques = init(&backend, &dev);
    let unique = uniques.next();
    let req = getattr_request(unique, ROOT_ID);
    let inbuf = check(&backend, dev.alloc(req.len() as u64));
    let outbuf = check(&backend, dev.alloc(256));
    check(&backend, dev.memory().write(inbuf.addr, &req));
    // Header and body in separate readable descriptors, one writable.
    let chain = [
        RawDesc::readable(inbuf.addr, 40),
        RawDesc::readable(inbuf.addr + 40, (req.len() - 40) as u32),
        RawDesc::writable(outbuf.addr, 256),
    ];
    let token = check(&backend, dev.submit_raw_chain(1, &chain));
    let done = check(&backend, dev.wait(token));
    let reply = check(&backend, FuseReply::parse(&done.data));
    assert_eq!(reply.header.unique, unique);
    assert_eq!(reply.errno(), 0);
    // The data also sits in guest memory where the descriptor said.
    let raw = check(
        &backend,
        dev.memory().read(outbuf.addr, done.used_len as usize),
    );
    assert_eq!(raw, done.data);
    dev.free(inbuf);
    dev.free(outbuf);
}

/// A backend that stops answering makes waits fail within the timeout instead of hanging.
#[test]
fn a_stopped_backend_fails_the_wait_instead_of_hanging() {
    let Some(backend) = start() else { return };
    let dev = connect(
        &backend,
        DeviceConfig {
            timeout: Duration::from_secs(2),
            ..DeviceConfig::default()
        },
    );
    let uniques = init(&backend, &dev);
    let pid = rustix::process::Pid::from_raw(backend.pid() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::STOP).unwrap();
    wait_all_threads_stopped(backend.pid());
    let started = Instant::now();
    let req = getattr_request(uniques.next(), ROOT_ID);
    let token = check(&backend, dev.fuse_submit(1, &req, 4096));
    let err = dev.wait(token).unwrap_err();
    assert!(matches!(err, HarnessError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(8));
    rustix::process::kill_process(pid, rustix::process::Signal::CONT).unwrap();
    // Once resumed it answers the request that timed out.
    let reply = check(&backend, dev.fuse_wait(token, &req));
    assert_eq!(reply.errno(), 0);
    assert!(backend.is_running().unwrap());
}

/// SIGSTOP takes effect asynchronously; wait until every thread reports state `T`.
fn wait_all_threads_stopped(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let all_stopped = std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .all(|task| {
                let stat = std::fs::read_to_string(task.unwrap().path().join("stat")).unwrap();
                // State is the field after the parenthesised command name.
                let state = stat.rsplit(')').next().unwrap().split_whitespace().next();
                matches!(state, Some("T") | Some("t"))
            });
        if all_stopped {
            return;
        }
        assert!(Instant::now() < deadline, "pid {pid} did not stop");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn virtiofsd_exits_when_the_frontend_disconnects() {
    let Some(backend) = start() else { return };
    let dev = connect(&backend, DeviceConfig::default());
    init(&backend, &dev);
    dev.disconnect();
    let status = check(&backend, backend.wait_exit(Duration::from_secs(10)));
    assert!(status.success(), "{}", backend.diagnostics());
}

/// With a window configured the harness negotiates the backend channel; virtiofsd (no
/// SHMEM, no DAX) accepts it, reports no shared memory and never maps anything.
#[test]
fn backend_channel_is_negotiated_with_a_window() {
    let Some(backend) = start() else { return };
    let dev = connect(
        &backend,
        DeviceConfig {
            cache_size: Some(8 << 20),
            ..DeviceConfig::default()
        },
    );
    let proto = dev.negotiated().protocol_features;
    assert!(proto.contains(VhostUserProtocolFeatures::BACKEND_REQ));
    assert!(proto.contains(VhostUserProtocolFeatures::BACKEND_SEND_FD));
    assert!(!proto.contains(VhostUserProtocolFeatures::SHMEM));
    assert_eq!(dev.shmem_sizes(), None);
    assert_eq!(dev.window().unwrap().size(), 8 << 20);
    let uniques = init(&backend, &dev);
    let reply = check(
        &backend,
        dev.fuse(1, &getattr_request(uniques.next(), ROOT_ID), 4096),
    );
    assert_eq!(reply.errno(), 0);
    let channel = dev.backend_channel().unwrap();
    assert_eq!(channel.stats(), Default::default());
    assert!(channel.stopped().is_none());
}
