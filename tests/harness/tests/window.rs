//! The window mapper and the backend-request channel, without a backend: the test plays
//! the backend by writing vhost-user backend requests into the channel socket.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::time::Duration;

use daxfsd_harness::backend_channel::{
    BackendChannel, BackendRequest, LEGACY_FS_MAP, LEGACY_FS_UNMAP, SHMEM_MAP, SHMEM_UNMAP,
};
use daxfsd_harness::{Window, WindowError};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

const MIB: u64 = 1 << 20;

fn page() -> u64 {
    rustix::param::page_size() as u64
}

/// A temp file of `len` bytes where byte i is (i % 251) as u8, opened read-write.
fn patterned_file(len: usize) -> (tempfile::NamedTempFile, OwnedFd) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    f.write_all(&data).unwrap();
    f.flush().unwrap();
    let fd = OwnedFd::from(f.reopen().unwrap());
    (f, fd)
}

fn pattern(from: usize, len: usize) -> Vec<u8> {
    (from..from + len).map(|i| (i % 251) as u8).collect()
}

#[test]
fn map_read_write_unmap_round_trip() {
    let window = Window::reserve(8 * MIB).unwrap();
    let (file, fd) = patterned_file(4 * MIB as usize);

    // Nothing is readable before a map.
    assert!(matches!(
        window.read(0, 16),
        Err(WindowError::NotMapped { offset: 0 })
    ));

    window
        .map_exclusive(2 * MIB, 2 * MIB, fd, MIB, true)
        .unwrap();
    let got = window.read(2 * MIB + 100, 4096).unwrap();
    assert_eq!(got, pattern(MIB as usize + 100, 4096));

    // A write through the window lands in the file.
    window.write(2 * MIB + 8, b"through the window").unwrap();
    let host = std::fs::read(file.path()).unwrap();
    assert_eq!(
        &host[MIB as usize + 8..MIB as usize + 26],
        b"through the window"
    );

    // A write to the file is visible through the window.
    let mut f = file.reopen().unwrap();
    use std::io::{Seek, SeekFrom};
    f.seek(SeekFrom::Start(MIB + 3 * 4096)).unwrap();
    f.write_all(b"from the host").unwrap();
    assert_eq!(
        window.read(2 * MIB + 3 * 4096, 13).unwrap(),
        b"from the host"
    );

    let maps = window.mappings();
    assert_eq!(maps.len(), 1);
    assert_eq!(
        (maps[0].offset, maps[0].len, maps[0].fd_offset),
        (2 * MIB, 2 * MIB, MIB)
    );
    assert!(maps[0].writable);
    assert_eq!(maps[0].source, file.path().canonicalize().unwrap());

    let removed = window.unmap_exact(2 * MIB, 2 * MIB).unwrap();
    assert_eq!(removed.offset, 2 * MIB);
    assert!(window.mappings().is_empty());
    assert!(matches!(
        window.read(2 * MIB, 1),
        Err(WindowError::NotMapped { .. })
    ));
    assert_eq!(window.mapped_bytes(), 0);
}

/// After an unmap the pages really are PROT_NONE (checked in the kernel's view).
#[test]
fn unmapped_range_is_prot_none_in_the_address_space() {
    let window = Window::reserve(4 * MIB).unwrap();
    let (_file, fd) = patterned_file(2 * MIB as usize);
    window.map_exclusive(0, 2 * MIB, fd, 0, false).unwrap();
    let start = window.host_base();
    assert_eq!(protection_at(start), "r--s");
    window.unmap_exact(0, 2 * MIB).unwrap();
    assert_eq!(protection_at(start), "---p");
}

/// The permissions column of /proc/self/maps for the mapping containing `addr`.
fn protection_at(addr: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for line in maps.lines() {
        let mut parts = line.split_whitespace();
        let range = parts.next().unwrap();
        let perms = parts.next().unwrap();
        let (lo, hi) = range.split_once('-').unwrap();
        let lo = usize::from_str_radix(lo, 16).unwrap();
        let hi = usize::from_str_radix(hi, 16).unwrap();
        if (lo..hi).contains(&addr) {
            return perms.to_string();
        }
    }
    panic!("{addr:#x} not mapped at all");
}

#[test]
fn standard_discipline_refuses_overlap_and_inexact_unmap() {
    let window = Window::reserve(8 * MIB).unwrap();
    let (_file, fd) = patterned_file(4 * MIB as usize);
    let dup = || fd.try_clone().unwrap();
    window
        .map_exclusive(2 * MIB, 2 * MIB, dup(), 0, false)
        .unwrap();

    let err = window
        .map_exclusive(3 * MIB, 2 * MIB, dup(), 0, false)
        .unwrap_err();
    assert!(
        matches!(err, WindowError::Overlap { existing_offset, .. } if existing_offset == 2 * MIB)
    );
    let err = window
        .map_exclusive(MIB, 2 * MIB, dup(), 0, false)
        .unwrap_err();
    assert!(matches!(err, WindowError::Overlap { .. }));
    // Adjacent is fine.
    window.map_exclusive(4 * MIB, MIB, dup(), 0, false).unwrap();

    // Unmap must name one mapping exactly.
    assert!(matches!(
        window.unmap_exact(2 * MIB, MIB),
        Err(WindowError::NoSuchMapping { .. })
    ));
    assert!(matches!(
        window.unmap_exact(2 * MIB, 3 * MIB),
        Err(WindowError::NoSuchMapping { .. })
    ));
    assert_eq!(window.mappings().len(), 2);
    // The refused unmaps left the data readable.
    assert_eq!(window.read(2 * MIB, 4).unwrap(), pattern(0, 4));

    // Validation.
    assert!(matches!(
        window.map_exclusive(0, 0, dup(), 0, false),
        Err(WindowError::ZeroLength { .. })
    ));
    assert!(matches!(
        window.map_exclusive(7 * MIB, 2 * MIB, dup(), 0, false),
        Err(WindowError::OutOfWindow { .. })
    ));
    assert!(matches!(
        window.map_exclusive(u64::MAX - page() + 1, page(), dup(), 0, false),
        Err(WindowError::OutOfWindow { .. })
    ));
    assert!(matches!(
        window.map_exclusive(100, page(), dup(), 0, false),
        Err(WindowError::Misaligned { .. })
    ));
    // Writing to a read-only mapping is refused instead of faulting.
    assert!(matches!(
        window.write(2 * MIB, b"x"),
        Err(WindowError::NotWritable { .. })
    ));
}

#[test]
fn reads_past_the_file_end_are_refused_not_faulted() {
    let window = Window::reserve(4 * MIB).unwrap();
    // 5000 bytes: the second page is partial, the rest of the 2 MiB is past EOF.
    let (_file, fd) = patterned_file(5000);
    window.map_exclusive(0, 2 * MIB, fd, 0, false).unwrap();
    assert_eq!(window.read(0, 5000).unwrap(), pattern(0, 5000));
    // The partial page reads as zeros past EOF.
    assert_eq!(window.read(5000, 100).unwrap(), vec![0; 100]);
    let err = window.read(0, 3 * page() as usize).unwrap_err();
    assert!(matches!(err, WindowError::BeyondFileEnd { offset, .. } if offset == 2 * page()));
}

#[test]
fn writable_map_of_a_read_only_fd_fails_like_a_vmm() {
    let window = Window::reserve(4 * MIB).unwrap();
    let (file, _) = patterned_file(2 * MIB as usize);
    let ro = OwnedFd::from(std::fs::File::open(file.path()).unwrap());
    let err = window.map_exclusive(0, 2 * MIB, ro, 0, true).unwrap_err();
    assert!(matches!(err, WindowError::Mmap { .. }));
    assert_eq!(err.errno(), libc::EACCES);
    assert!(window.mappings().is_empty());
}

#[test]
fn legacy_discipline_replaces_and_trims() {
    let window = Window::reserve(8 * MIB).unwrap();
    let (_a, fa) = patterned_file(4 * MIB as usize);
    let (_b, fb) = patterned_file(4 * MIB as usize);
    window.map_replace(0, 4 * MIB, fa, 0, true, false).unwrap();
    // Replace the middle with another file at another offset.
    window
        .map_replace(MIB, MIB, fb, 2 * MIB, true, true)
        .unwrap();
    let maps = window.mappings();
    let shape: Vec<_> = maps
        .iter()
        .map(|m| (m.offset, m.len, m.fd_offset, m.writable))
        .collect();
    assert_eq!(
        shape,
        vec![
            (0, MIB, 0, false),
            (MIB, MIB, 2 * MIB, true),
            (2 * MIB, 2 * MIB, 2 * MIB, false),
        ]
    );
    assert_eq!(window.read(MIB, 8).unwrap(), pattern(2 * MIB as usize, 8));
    // Punch across two mappings.
    window.unmap_range(MIB + MIB / 2, MIB).unwrap();
    let shape: Vec<_> = window
        .mappings()
        .iter()
        .map(|m| (m.offset, m.len, m.fd_offset))
        .collect();
    assert_eq!(
        shape,
        vec![
            (0, MIB, 0),
            (MIB, MIB / 2, 2 * MIB),
            (2 * MIB + MIB / 2, 3 * MIB / 2, 2 * MIB + MIB / 2)
        ]
    );
    assert!(matches!(
        window.read(MIB + MIB / 2, 1),
        Err(WindowError::NotMapped { .. })
    ));
    // "Everything from here" unmap.
    window.unmap_range(0, u64::MAX).unwrap();
    assert!(window.mappings().is_empty());
}

#[test]
fn clear_resets_the_whole_window() {
    let window = Window::reserve(4 * MIB).unwrap();
    let (_file, fd) = patterned_file(4 * MIB as usize);
    window
        .map_exclusive(0, MIB, fd.try_clone().unwrap(), 0, false)
        .unwrap();
    window.map_exclusive(2 * MIB, MIB, fd, 0, false).unwrap();
    window.clear().unwrap();
    assert!(window.mappings().is_empty());
    assert_eq!(protection_at(window.host_base() + 2 * MIB as usize), "---p");
}

// ---- the channel, with the test playing the backend ----

fn mmap_body(shmid: u8, fd_offset: u64, shm_offset: u64, len: u64, flags: u64) -> Vec<u8> {
    let mut b = vec![shmid, 0, 0, 0, 0, 0, 0, 0];
    for v in [fd_offset, shm_offset, len, flags] {
        b.extend_from_slice(&v.to_le_bytes());
    }
    b
}

fn legacy_body(entries: &[(u64, u64, u64, u64)]) -> Vec<u8> {
    let mut cols = [[0u64; 8]; 4];
    for (i, &(fd_off, cache_off, len, flags)) in entries.iter().enumerate() {
        cols[0][i] = fd_off;
        cols[1][i] = cache_off;
        cols[2][i] = len;
        cols[3][i] = flags;
    }
    cols.iter()
        .flatten()
        .flat_map(|v| v.to_le_bytes())
        .collect()
}

/// Sends one backend request (NEED_REPLY set) and returns the u64 reply.
fn request(sock: &UnixStream, id: u32, body: &[u8], fds: &[i32]) -> u64 {
    let mut msg = Vec::new();
    msg.extend_from_slice(&id.to_le_bytes());
    msg.extend_from_slice(&(0x1u32 | 0x8).to_le_bytes());
    msg.extend_from_slice(&(body.len() as u32).to_le_bytes());
    msg.extend_from_slice(body);
    sock.send_with_fds(&[&msg[..]], fds).unwrap();
    let mut reply = [0u8; 20];
    (&*sock).read_exact(&mut reply).unwrap();
    assert_eq!(
        u32::from_le_bytes(reply[0..4].try_into().unwrap()),
        id,
        "reply id"
    );
    assert_eq!(
        u32::from_le_bytes(reply[4..8].try_into().unwrap()),
        0x5,
        "reply flags"
    );
    assert_eq!(
        u32::from_le_bytes(reply[8..12].try_into().unwrap()),
        8,
        "reply size"
    );
    u64::from_le_bytes(reply[12..20].try_into().unwrap())
}

fn channel(size: u64) -> (BackendChannel, Arc<Window>, UnixStream) {
    let window = Arc::new(Window::reserve(size).unwrap());
    let (ours, theirs) = UnixStream::pair().unwrap();
    theirs
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let ch = BackendChannel::serve(ours, Arc::clone(&window), Duration::from_secs(10)).unwrap();
    (ch, window, theirs)
}

#[test]
fn channel_serves_shmem_map_and_unmap() {
    let (ch, window, sock) = channel(8 * MIB);
    let (_file, fd) = patterned_file(4 * MIB as usize);
    let raw = fd.as_raw_fd();

    assert_eq!(
        request(
            &sock,
            SHMEM_MAP,
            &mmap_body(0, 0, 2 * MIB, 2 * MIB, 1),
            &[raw]
        ),
        0
    );
    assert_eq!(window.read(2 * MIB + 10, 10).unwrap(), pattern(10, 10));
    assert!(window.mapping_at(2 * MIB).unwrap().writable);
    // Overlap refused, stream still in sync afterwards.
    assert_ne!(
        request(&sock, SHMEM_MAP, &mmap_body(0, 0, 3 * MIB, MIB, 0), &[raw]),
        0
    );
    // len 0 (vhost's handler would drop the ack here) gets an error reply.
    assert_ne!(
        request(&sock, SHMEM_MAP, &mmap_body(0, 0, 0, 0, 0), &[raw]),
        0
    );
    // Out of window, bad shmid, bad flags, missing fd.
    assert_ne!(
        request(
            &sock,
            SHMEM_MAP,
            &mmap_body(0, 0, 8 * MIB, 2 * MIB, 0),
            &[raw]
        ),
        0
    );
    assert_ne!(
        request(&sock, SHMEM_MAP, &mmap_body(1, 0, 0, MIB, 0), &[raw]),
        0
    );
    assert_ne!(
        request(&sock, SHMEM_MAP, &mmap_body(0, 0, 0, MIB, 6), &[raw]),
        0
    );
    assert_ne!(
        request(&sock, SHMEM_MAP, &mmap_body(0, 0, 0, MIB, 0), &[]),
        0
    );
    // Inexact unmap refused, exact unmap works.
    assert_ne!(
        request(&sock, SHMEM_UNMAP, &mmap_body(0, 0, 2 * MIB, MIB, 0), &[]),
        0
    );
    assert_eq!(window.mappings().len(), 1);
    assert_eq!(
        request(
            &sock,
            SHMEM_UNMAP,
            &mmap_body(0, 0, 2 * MIB, 2 * MIB, 0),
            &[]
        ),
        0
    );
    assert!(window.mappings().is_empty());

    let stats = ch.stats();
    assert_eq!(stats.shmem_map, 7);
    assert_eq!(stats.shmem_unmap, 2);
    assert_eq!(stats.failed, 7);
    let log = ch.log();
    assert_eq!(log.len(), 9);
    assert_eq!(
        log[0].request,
        BackendRequest::ShmemMap {
            shmid: 0,
            fd_offset: 0,
            shm_offset: 2 * MIB,
            len: 2 * MIB,
            flags: 1
        }
    );
    assert_eq!(log[0].errno, 0);
    assert_eq!(log[1].errno, libc::EEXIST);
    assert!(
        log[2].error.as_deref().unwrap().contains("zero-length"),
        "{:?}",
        log[2]
    );
    assert!(ch.stopped().is_none());
}

#[test]
fn channel_serves_legacy_requests_and_refuses_shared_objects() {
    let (ch, window, sock) = channel(8 * MIB);
    let (_file, fd) = patterned_file(4 * MIB as usize);
    let raw = fd.as_raw_fd();
    let body = legacy_body(&[(0, 0, MIB, 1), (MIB, 4 * MIB, MIB, 3)]);
    assert_eq!(request(&sock, LEGACY_FS_MAP, &body, &[raw]), 0);
    let shape: Vec<_> = window
        .mappings()
        .iter()
        .map(|m| (m.offset, m.fd_offset, m.writable))
        .collect();
    assert_eq!(shape, vec![(0, 0, false), (4 * MIB, MIB, true)]);
    assert_eq!(window.read(4 * MIB, 4).unwrap(), pattern(MIB as usize, 4));
    // Unknown PROT bits.
    assert_ne!(
        request(
            &sock,
            LEGACY_FS_MAP,
            &legacy_body(&[(0, 0, MIB, 8)]),
            &[raw]
        ),
        0
    );
    // A 16-byte id-6 message is SHARED_OBJECT_ADD: refused, and with an fd the stream
    // stays in sync.
    assert_ne!(request(&sock, LEGACY_FS_MAP, &[0u8; 16], &[raw]), 0);
    // Legacy unmap of everything.
    assert_eq!(
        request(
            &sock,
            LEGACY_FS_UNMAP,
            &legacy_body(&[(0, 0, u64::MAX, 0)]),
            &[]
        ),
        0
    );
    assert!(window.mappings().is_empty());
    let stats = ch.stats();
    assert_eq!(
        (
            stats.legacy_map,
            stats.legacy_unmap,
            stats.other,
            stats.failed
        ),
        (2, 1, 1, 2)
    );
}

#[test]
fn channel_fault_injection_and_shutdown() {
    let (ch, window, sock) = channel(4 * MIB);
    let (_file, fd) = patterned_file(2 * MIB as usize);
    // The same SHMEM_MAP of the file's first MiB, sent twice: the first is refused.
    let map_first_mib = || {
        request(
            &sock,
            SHMEM_MAP,
            &mmap_body(0, 0, 0, MIB, 0),
            &[fd.as_raw_fd()],
        )
    };
    ch.fail_next_maps(1);
    assert_eq!(map_first_mib(), libc::EIO as u64);
    assert!(window.mappings().is_empty());
    assert_eq!(map_first_mib(), 0);
    drop(sock);
    // The thread notices EOF.
    for _ in 0..100 {
        if ch.stopped().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(ch.stopped().as_deref(), Some("backend closed the channel"));
}

/// rust-vmm's own backend-side sender (what daxfsd uses) talks to the channel correctly:
/// REPLY_ACK answers arrive, refusals come back as errors, and the stream stays in sync.
#[test]
fn channel_interoperates_with_the_vhost_backend_sender() {
    use vhost::vhost_user::message::{VhostUserMMap, VhostUserMMapFlags};
    use vhost::vhost_user::{Backend, VhostUserFrontendReqHandler};

    let (ch, window, sock) = channel(8 * MIB);
    let backend = Backend::from_stream(sock);
    backend.set_shmem_flag(true);
    backend.set_reply_ack_flag(true);
    let (file, _) = patterned_file(4 * MIB as usize);
    let f = file.reopen().unwrap();
    let map = VhostUserMMap {
        shm_offset: 2 * MIB,
        fd_offset: MIB,
        len: 2 * MIB,
        flags: VhostUserMMapFlags::WRITABLE.bits(),
        ..Default::default()
    };
    backend.shmem_map(&map, &f).unwrap();
    assert_eq!(window.read(2 * MIB, 16).unwrap(), pattern(MIB as usize, 16));
    // Overlap: the frontend refuses, the sender sees an error, nothing desynchronises.
    let overlap = VhostUserMMap {
        shm_offset: 3 * MIB,
        len: MIB,
        ..map
    };
    assert!(backend.shmem_map(&overlap, &f).is_err());
    // len 0: vhost's FrontendReqHandler would drop the ack here and hang the sender.
    let empty = VhostUserMMap { len: 0, ..map };
    assert!(backend.shmem_map(&empty, &f).is_err());
    // Read→write upgrade the standard way: unmap, then map again.
    let read_only = VhostUserMMap { flags: 0, ..map };
    backend.shmem_unmap(&map).unwrap();
    backend.shmem_map(&read_only, &f).unwrap();
    assert!(!window.mapping_at(2 * MIB).unwrap().writable);
    backend.shmem_unmap(&read_only).unwrap();
    assert!(window.mappings().is_empty());
    let stats = ch.stats();
    assert_eq!(
        (stats.shmem_map, stats.shmem_unmap, stats.failed),
        (4, 2, 2)
    );
}

/// With the main-loop gate held (a vhost-user call waiting for its reply), backend
/// requests wait, as under QEMU; they are served once the gate is released.
#[test]
fn gated_channel_waits_for_the_main_loop() {
    use std::sync::Mutex;
    use vhost::vhost_user::message::VhostUserMMap;
    use vhost::vhost_user::{Backend, VhostUserFrontendReqHandler};

    let window = Arc::new(Window::reserve(4 * MIB).unwrap());
    let (ours, theirs) = UnixStream::pair().unwrap();
    let gate = Arc::new(Mutex::new(()));
    let ch = BackendChannel::serve_gated(
        ours,
        Arc::clone(&window),
        Duration::from_secs(10),
        Some(Arc::clone(&gate)),
    )
    .unwrap();
    let (file, _) = patterned_file(2 * MIB as usize);
    let held = gate.lock().unwrap();
    let sender = std::thread::spawn(move || {
        let backend = Backend::from_stream(theirs);
        backend.set_shmem_flag(true);
        backend.set_reply_ack_flag(true);
        let map = VhostUserMMap {
            len: MIB,
            ..Default::default()
        };
        backend.shmem_map(&map, &file.reopen().unwrap()).is_ok()
    });
    std::thread::sleep(Duration::from_millis(300));
    assert!(!sender.is_finished(), "served while the main loop was busy");
    assert!(window.mappings().is_empty());
    drop(held);
    assert!(sender.join().unwrap());
    assert_eq!(window.mappings().len(), 1);
    assert_eq!(ch.stats().shmem_map, 1);
}

/// Playing upstream QEMU 11.1: a map whose descriptor is shorter than `fd_offset + len`
/// and a map of a descriptor not open read-write are refused (reply 1, nothing mapped);
/// what is mapped is writable whatever the request asked; unmaps are as before.
#[test]
fn the_upstream_channel_refuses_short_and_read_only_descriptors() {
    use daxfsd_harness::FrontendBehaviour;
    use vhost::vhost_user::message::{VhostUserMMap, VhostUserMMapFlags};
    use vhost::vhost_user::{Backend, VhostUserFrontendReqHandler};

    let window = Arc::new(Window::reserve(8 * MIB).unwrap());
    let (ours, theirs) = UnixStream::pair().unwrap();
    let ch = BackendChannel::serve_as(
        ours,
        Arc::clone(&window),
        Duration::from_secs(10),
        None,
        FrontendBehaviour::Upstream11_1,
    )
    .unwrap();
    let backend = Backend::from_stream(theirs);
    backend.set_shmem_flag(true);
    backend.set_reply_ack_flag(true);
    let page = 4096u64;
    // 20 bytes: its one page passes the file's end.
    let mut short = tempfile::tempfile().unwrap();
    short.write_all(&[7u8; 20]).unwrap();
    let read = VhostUserMMap {
        len: page,
        ..Default::default()
    };
    let writable = VhostUserMMap {
        flags: VhostUserMMapFlags::WRITABLE.bits(),
        ..read
    };
    assert!(
        backend.shmem_map(&writable, &short).is_err(),
        "partial page"
    );
    // A whole page, but the descriptor is read-only.
    let (file, _) = patterned_file(2 * MIB as usize);
    let read_only = std::fs::File::open(file.path()).unwrap();
    assert!(backend.shmem_map(&read, &read_only).is_err(), "O_RDONLY");
    assert!(window.mappings().is_empty());
    // Read-write and long enough: mapped, and writable even for a read mapping.
    let read_write = file.reopen().unwrap();
    backend.shmem_map(&read, &read_write).unwrap();
    assert!(window.mapping_at(0).unwrap().writable);
    assert_eq!(window.read(0, 16).unwrap(), pattern(0, 16));
    // Past the end by one page: refused.
    let past = VhostUserMMap {
        shm_offset: MIB,
        fd_offset: 2 * MIB - page,
        len: 2 * page,
        ..read
    };
    assert!(backend.shmem_map(&past, &read_write).is_err());
    backend.shmem_unmap(&read).unwrap();
    assert!(window.mappings().is_empty());

    let log = ch.log();
    let errnos: Vec<i32> = log.iter().map(|r| r.errno).collect();
    assert_eq!(
        errnos,
        [libc::EINVAL, libc::EACCES, 0, libc::EINVAL, 0],
        "{log:?}"
    );
    let access: Vec<Option<i32>> = log.iter().map(|r| r.fd_access).collect();
    assert_eq!(
        access,
        [
            Some(libc::O_RDWR),
            Some(libc::O_RDONLY),
            Some(libc::O_RDWR),
            Some(libc::O_RDWR),
            None
        ]
    );
    assert!(log[0]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("backing store size 0x14 is too small")));
}
