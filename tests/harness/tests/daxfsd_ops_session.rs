//! daxfsd over its socket: the session (INIT, requests before INIT, DESTROY), reference
//! counting (LOOKUP, FORGET, BATCH_FORGET, and no fd leaks), INTERRUPT, STATFS, SYNCFS and
//! the operations the daemon does not implement.

mod common;

use common::*;
use daxfsd_protocol::abi::*;
use daxfsd_protocol::Opcode;

#[test]
fn requests_before_init_get_eio() {
    let s = Session::start_uninit(&[]);
    assert_eq!(s.getattr(ROOT_ID).unwrap_err(), libc::EIO);
    assert_eq!(s.lookup(ROOT_ID, b"x").unwrap_err(), libc::EIO);
    assert_eq!(s.statfs(ROOT_ID).unwrap_err(), libc::EIO);
    assert_eq!(s.mkdir(ROOT_ID, b"d", 0o755).unwrap_err(), libc::EIO);
    assert!(
        !s.path("d").exists(),
        "a refused MKDIR created the directory"
    );
    s.init(LINUX_INIT_FLAGS).expect("INIT");
    s.assert_serving();
}

#[test]
fn init_agrees_on_what_both_sides_implement() {
    let s = Session::start_uninit(&[]);
    let out = s.init(LINUX_INIT_FLAGS).expect("INIT");
    assert_eq!(
        (out.major, out.minor),
        (KERNEL_VERSION, KERNEL_MINOR_VERSION)
    );
    let agreed = u64::from(out.flags) | (u64::from(out.flags2) << 32);
    assert_eq!(
        agreed & !LINUX_INIT_FLAGS,
        0,
        "agreed {agreed:#x} beyond the offer"
    );
    for wanted in [
        ASYNC_READ,
        ATOMIC_O_TRUNC,
        BIG_WRITES,
        DO_READDIRPLUS,
        MAX_PAGES,
        INIT_EXT,
    ] {
        assert_ne!(agreed & wanted, 0, "{wanted:#x} not agreed ({agreed:#x})");
    }
    // Bits that would change request layouts the daemon parses, or promise features it
    // does not have (locks, ACLs, writeback), must not be agreed.
    for refused in [
        DONT_MASK,
        SETXATTR_EXT,
        SECURITY_CTX,
        CREATE_SUPP_GROUP,
        POSIX_LOCKS,
        FLOCK_LOCKS,
        POSIX_ACL,
        WRITEBACK_CACHE,
        MAP_ALIGNMENT,
        // Offered only with --killpriv-v2, as virtiofsd does.
        HANDLE_KILLPRIV_V2,
    ] {
        assert_eq!(agreed & refused, 0, "{refused:#x} agreed ({agreed:#x})");
    }
    assert_eq!(out.max_write, 1 << 20);
    assert_eq!(out.max_pages, 256);
    assert_eq!(out.map_alignment, 0, "no DAX window, no alignment");
    s.assert_serving();
}

#[test]
fn init_with_a_too_old_minor_is_eproto_and_starts_no_session() {
    let s = Session::start_uninit(&[]);
    let req = daxfsd_protocol::encode::RequestEncoder::new(Opcode::Init, s.unique(), 0)
        .push(&InitInCompat {
            major: 7,
            minor: 26,
            max_readahead: 0,
            flags: 0,
        })
        .finish();
    assert_eq!(exact::<InitOut>(s.send(&req)).unwrap_err(), libc::EPROTO);
    assert_eq!(s.getattr(ROOT_ID).unwrap_err(), libc::EIO);
    s.init(LINUX_INIT_FLAGS).expect("INIT");
    s.assert_serving();
}

#[test]
fn init_with_a_newer_major_gets_the_daemon_major_to_retry_with() {
    let s = Session::start_uninit(&[]);
    let req = daxfsd_protocol::encode::RequestEncoder::new(Opcode::Init, s.unique(), 0)
        .push(&InitInCompat {
            major: 8,
            minor: 0,
            max_readahead: 0,
            flags: 0,
        })
        .finish();
    let reply = s.send(&req);
    assert_eq!(reply.errno(), 0);
    let out: InitOut = reply.body_as().expect("InitOut");
    assert_eq!(out.major, 7);
    // No session started: the guest must retry with 7.
    assert_eq!(s.getattr(ROOT_ID).unwrap_err(), libc::EIO);
    s.init(LINUX_INIT_FLAGS).expect("INIT");
    s.assert_serving();
}

#[test]
fn unknown_nodeids_are_ebadf() {
    // InodeTable::get documents EBADF for a nodeid the guest holds no reference to.
    let s = Session::start(&[]);
    assert_eq!(s.getattr(999).unwrap_err(), libc::EBADF);
    assert_eq!(s.lookup(999, b"x").unwrap_err(), libc::EBADF);
    assert_eq!(s.opendir(999).unwrap_err(), libc::EBADF);
    assert_eq!(s.open(999, libc::O_RDONLY).unwrap_err(), libc::EBADF);
    assert_eq!(s.getattr(0).unwrap_err(), libc::EBADF);
    s.assert_serving();
}

#[test]
fn lookup_finds_host_entries_and_reports_their_attributes() {
    use std::os::unix::fs::MetadataExt;
    let s = Session::start(&[]);
    std::fs::write(s.path("file"), b"12345").unwrap();
    std::fs::create_dir(s.path("dir")).unwrap();
    let e = s.lookup(ROOT_ID, b"file").expect("lookup file");
    let meta = std::fs::metadata(s.path("file")).unwrap();
    assert!(e.nodeid > ROOT_ID);
    assert_eq!(e.attr.ino, meta.ino());
    assert_eq!(e.attr.size, 5);
    assert_eq!(e.attr.mode, meta.mode());
    assert_eq!(e.attr.nlink, 1);
    assert_eq!((e.attr.uid, e.attr.gid), (meta.uid(), meta.gid()));
    assert_eq!(e.attr.mtime, meta.mtime() as u64);
    assert_eq!(e.attr.mtimensec, meta.mtime_nsec() as u32);
    assert_eq!((e.entry_valid, e.attr_valid), (1, 1), "--cache auto: 1 s");
    // The same host inode keeps its nodeid.
    assert_eq!(s.lookup(ROOT_ID, b"file").unwrap().nodeid, e.nodeid);
    let d = s.lookup(ROOT_ID, b"dir").expect("lookup dir");
    assert_ne!(d.nodeid, e.nodeid);
    assert_eq!(d.attr.mode & libc::S_IFMT, libc::S_IFDIR);
    assert_eq!(s.lookup(ROOT_ID, b"missing").unwrap_err(), libc::ENOENT);
    assert_eq!(s.lookup(e.nodeid, b"x").unwrap_err(), libc::ENOTDIR);
    // Nested lookup.
    std::fs::write(s.path("dir/inner"), b"").unwrap();
    let inner = s.lookup(d.nodeid, b"inner").expect("nested lookup");
    assert_eq!(
        inner.attr.ino,
        std::fs::metadata(s.path("dir/inner")).unwrap().ino()
    );
}

#[test]
fn getattr_reflects_host_changes() {
    use std::os::unix::fs::MetadataExt;
    let s = Session::start(&[]);
    let e = s.host_file("f", b"abc");
    std::fs::write(s.path("f"), b"longer content").unwrap();
    let a = s.getattr(e.nodeid).expect("getattr");
    let meta = std::fs::metadata(s.path("f")).unwrap();
    assert_eq!(a.attr.size, 14);
    assert_eq!(a.attr.ino, meta.ino());
    assert_eq!(a.attr.blocks, meta.blocks());
    assert_eq!(a.attr.blksize, meta.blksize() as u32);
    assert_eq!(a.attr_valid, 1);
}

#[test]
fn cache_policy_sets_timeouts_and_open_flags() {
    for (policy, timeout, open_flags, dir_flags) in [
        ("never", 0, FOPEN_DIRECT_IO, 0),
        ("auto", 1, 0, 0),
        (
            "always",
            86_400,
            FOPEN_KEEP_CACHE,
            FOPEN_CACHE_DIR | FOPEN_KEEP_CACHE,
        ),
    ] {
        let s = Session::start(&["--cache", policy]);
        let e = s.host_file("f", b"x");
        assert_eq!(
            (e.entry_valid, e.attr_valid),
            (timeout, timeout),
            "{policy}"
        );
        assert_eq!(s.getattr(e.nodeid).unwrap().attr_valid, timeout, "{policy}");
        let open = s.open(e.nodeid, libc::O_RDONLY).unwrap();
        assert_eq!(open.open_flags, open_flags, "{policy}");
        assert_eq!(
            s.opendir(ROOT_ID).unwrap().open_flags,
            dir_flags,
            "{policy}"
        );
    }
}

#[test]
fn forget_drops_lookup_references_one_by_one() {
    let s = Session::start(&[]);
    let baseline = s.fd_count();
    std::fs::write(s.path("f"), b"x").unwrap();
    let id = s.lookup(ROOT_ID, b"f").unwrap().nodeid;
    assert_eq!(s.lookup(ROOT_ID, b"f").unwrap().nodeid, id);
    assert_eq!(s.fd_count(), baseline + 1, "one O_PATH fd per inode");
    s.forget(id, 1);
    assert!(s.getattr(id).is_ok(), "one lookup is still held");
    s.forget(id, 1);
    assert_eq!(s.getattr(id).unwrap_err(), libc::EBADF);
    assert_eq!(s.fd_count(), baseline);
    // Forgetting an unknown nodeid, or the root, changes nothing.
    s.forget(id, 1);
    s.forget(12345, 1);
    s.forget(ROOT_ID, 1000);
    s.assert_serving();
    // A new lookup gets a new nodeid (ids are not reused within a session).
    let again = s.lookup(ROOT_ID, b"f").unwrap().nodeid;
    assert_ne!(again, id);
}

#[test]
fn batch_forget_drops_every_listed_reference() {
    let s = Session::start(&[]);
    let baseline = s.fd_count();
    let mut ids = Vec::new();
    for i in 0..20 {
        let name = format!("f{i}");
        std::fs::write(s.path(&name), b"x").unwrap();
        ids.push(s.lookup(ROOT_ID, name.as_bytes()).unwrap().nodeid);
    }
    // f0 is looked up a second time and forgotten only once: it must survive.
    s.lookup(ROOT_ID, b"f0").unwrap();
    assert_eq!(s.fd_count(), baseline + 20);
    let entries: Vec<(u64, u64)> = ids.iter().map(|&id| (id, 1)).collect();
    s.batch_forget(&entries);
    assert!(s.getattr(ids[0]).is_ok());
    for &id in &ids[1..] {
        assert_eq!(s.getattr(id).unwrap_err(), libc::EBADF);
    }
    assert_eq!(s.fd_count(), baseline + 1);
    s.batch_forget(&[(ids[0], 1)]);
    assert_eq!(s.getattr(ids[0]).unwrap_err(), libc::EBADF);
    assert_eq!(s.fd_count(), baseline);
    // An empty batch is fine.
    s.batch_forget(&[]);
    s.assert_serving();
}

/// A short writable buffer (below the 16-byte reply header) must not stop a FORGET:
/// dropping it would leak the reference.
#[test]
fn forget_with_a_tiny_reply_buffer_still_forgets() {
    let s = Session::start(&[]);
    let id = s.host_file("f", b"x").nodeid;
    let req = s
        .req(Opcode::Forget, id)
        .push(&ForgetIn { nlookup: 1 })
        .finish();
    let done = s.send_chain(REQUEST_QUEUE, &[&req], &[8]);
    assert_eq!(done.used_len, 0);
    assert_eq!(s.getattr(id).unwrap_err(), libc::EBADF);
}

#[test]
fn open_release_forget_cycles_leak_no_fds() {
    let s = Session::start(&[]);
    let baseline = s.fd_count();
    // The count must be able to move: a created, still-open file holds two fds.
    let (id, fh) = s.create_file("probe");
    assert_eq!(s.fd_count(), baseline + 2, "O_PATH fd + open handle");
    s.release(id, fh).unwrap();
    s.forget(id, 1);
    assert_eq!(s.fd_count(), baseline);

    for i in 0..25 {
        let name = format!("c{i}");
        let (id, fh) = s.create_file(&name);
        assert_eq!(s.write(id, fh, 0, b"data").unwrap(), 4);
        s.flush(id, fh).unwrap();
        s.release(id, fh).unwrap();
        let open = s.open(id, libc::O_RDONLY).unwrap();
        assert_eq!(s.read(id, open.fh, 0, 16).unwrap(), b"data");
        s.release(id, open.fh).unwrap();
        let dir = s.mkdir(ROOT_ID, format!("d{i}").as_bytes(), 0o755).unwrap();
        let dh = s.opendir(dir.nodeid).unwrap().fh;
        s.readdir(dir.nodeid, dh, 0, 4096).unwrap();
        s.releasedir(dir.nodeid, dh).unwrap();
        let link = s
            .symlink(ROOT_ID, format!("l{i}").as_bytes(), b"target")
            .unwrap();
        // The second lookup of c{i} adds a reference FORGET must drop too.
        s.lookup(ROOT_ID, name.as_bytes()).unwrap();
        s.batch_forget(&[(id, 2), (dir.nodeid, 1), (link.nodeid, 1)]);
        s.syncfs(ROOT_ID).unwrap();
        assert!(s.statfs(ROOT_ID).is_ok());
    }
    assert_eq!(s.fd_count(), baseline, "fds leaked over the cycles");
    s.assert_serving();
}

#[test]
fn destroy_ends_the_session_and_closes_everything() {
    let s = Session::start(&[]);
    let baseline = s.fd_count();
    let (id, fh) = s.create_file("f");
    let dh = s.opendir(ROOT_ID).unwrap().fh;
    let d = s.mkdir(ROOT_ID, b"d", 0o755).unwrap();
    assert_eq!(s.fd_count(), baseline + 4);
    s.destroy().expect("DESTROY");
    assert_eq!(
        s.fd_count(),
        baseline,
        "DESTROY closed every inode and handle"
    );
    // Nothing but INIT until the next session.
    assert_eq!(s.getattr(ROOT_ID).unwrap_err(), libc::EIO);
    s.init(LINUX_INIT_FLAGS).expect("second INIT");
    for nodeid in [id, d.nodeid] {
        assert_eq!(s.getattr(nodeid).unwrap_err(), libc::EBADF);
    }
    assert_eq!(s.read(id, fh, 0, 1).unwrap_err(), libc::EBADF);
    assert_eq!(s.releasedir(ROOT_ID, dh).unwrap_err(), libc::EBADF);
    // The files themselves are untouched, and the new session sees them.
    assert!(s.path("f").is_file() && s.path("d").is_dir());
    assert!(s.lookup(ROOT_ID, b"f").is_ok());
    s.assert_serving();
}

#[test]
fn interrupt_gets_no_reply_and_the_daemon_keeps_serving() {
    let s = Session::start(&[]);
    let req = s
        .req(Opcode::Interrupt, 0)
        .push(&InterruptIn { unique: 12345 })
        .finish();
    s.send_no_reply(HIPRIO_QUEUE, &req);
    // Even with room for a reply, INTERRUPT is answered with silence.
    let req = s
        .req(Opcode::Interrupt, 0)
        .push(&InterruptIn { unique: 1 })
        .finish();
    let done = s.send_chain(REQUEST_QUEUE, &[&req], &[4096]);
    assert_eq!(done.used_len, 0);
    s.assert_serving();
}

#[test]
fn unimplemented_operations_are_enosys() {
    let s = Session::start(&[]);
    let id = s.host_file("f", b"x").nodeid;
    // Bodies as the kernel would send them (sizes of fuse_lk_in, fuse_ioctl_in, ...);
    // the daemon must not care.
    for (opcode, body_len) in [
        (Opcode::Getlk, 48),
        (Opcode::Setlk, 48),
        (Opcode::Setlkw, 48),
        (Opcode::Ioctl, 32),
        (Opcode::Bmap, 16),
        (Opcode::Poll, 24),
        (Opcode::NotifyReply, 40),
        (Opcode::Tmpfile, 16),
        (Opcode::Statx, 24),
        (Opcode::CopyFileRange64, 56),
    ] {
        let req = s.req(opcode, id).bytes(&vec![0u8; body_len]).finish();
        let reply = s.send(&req);
        assert_eq!(reply.errno(), libc::ENOSYS, "{opcode:?}");
    }
    // Without --cache-size there is no DAX window.
    let req = s
        .req(Opcode::SetupMapping, id)
        .push(&SetupMappingIn {
            fh: u64::MAX,
            foffset: 0,
            len: 4096,
            flags: SETUPMAPPING_FLAG_READ,
            moffset: 0,
        })
        .finish();
    assert_eq!(s.send(&req).errno(), libc::ENOSYS);
    let req = s
        .req(Opcode::RemoveMapping, id)
        .push(&RemoveMappingIn { count: 1 })
        .push(&RemoveMappingOne {
            moffset: 0,
            len: 4096,
        })
        .finish();
    assert_eq!(s.send(&req).errno(), libc::ENOSYS);
    s.assert_serving();
}

#[test]
fn statfs_reports_the_host_filesystem() {
    let s = Session::start(&[]);
    let st = s.statfs(ROOT_ID).expect("statfs");
    let host = rustix::fs::statvfs(s.dir()).unwrap();
    assert_eq!(st.blocks, host.f_blocks);
    assert_eq!(st.files, host.f_files);
    assert_eq!(u64::from(st.bsize), host.f_bsize);
    assert_eq!(u64::from(st.frsize), host.f_frsize);
    assert_eq!(u64::from(st.namelen), host.f_namemax);
    assert!(st.bfree <= st.blocks && st.bavail <= st.bfree);
    // Any nodeid on the filesystem answers the same.
    let id = s.host_file("f", b"x").nodeid;
    assert_eq!(s.statfs(id).unwrap().blocks, host.f_blocks);
}

#[test]
fn syncfs_succeeds_on_the_root_and_on_a_file() {
    let s = Session::start(&[]);
    s.syncfs(ROOT_ID).expect("syncfs root");
    let id = s.host_file("f", b"x").nodeid;
    s.syncfs(id).expect("syncfs file");
    assert_eq!(s.syncfs(777).unwrap_err(), libc::EBADF);
}

/// Several request queues at once, as a multi-queue guest drives them: lookups of one
/// shared file racing FORGETs on the hiprio queue, and per-queue create/write/read/
/// unlink cycles. Every reply must be right, and at the end every reference is gone.
#[test]
fn queues_in_parallel_keep_reference_counts_exact() {
    const QUEUES: usize = 4;
    let s = Session::start_queues(&[], QUEUES);
    s.init(LINUX_INIT_FLAGS).expect("INIT");
    std::fs::write(s.path("shared"), b"shared").unwrap();
    let baseline = s.fd_count();
    std::thread::scope(|scope| {
        for q in 1..=QUEUES {
            let s = &s;
            scope.spawn(move || {
                // The typed client on queue q; FORGETs go to the hiprio queue.
                let c = s.client().on_queue(q);
                for i in 0..40 {
                    let shared = s.check(c.lookup(ROOT_ID, b"shared")).expect("lookup");
                    let attr = s
                        .check(c.getattr(shared.nodeid))
                        .expect("getattr of a nodeid this queue holds");
                    assert_eq!(attr.attr.size, 6);
                    s.forget(shared.nodeid, 1);

                    let name = format!("q{q}-{i}");
                    let (entry, open) = s
                        .check(c.create(ROOT_ID, name.as_bytes(), libc::O_RDWR, 0o644))
                        .unwrap_or_else(|e| panic!("create {name}: errno {e}"));
                    let data = name.as_bytes();
                    let written = s.check(c.write(entry.nodeid, open.fh, 0, data));
                    assert_eq!(written, Ok(data.len() as u32));
                    let read = s.check(c.read(entry.nodeid, open.fh, 0, 64));
                    assert_eq!(read.as_deref(), Ok(data));
                    assert_eq!(s.check(c.release(entry.nodeid, open.fh)), Ok(()));
                    if i % 2 == 0 {
                        assert_eq!(s.check(c.unlink(ROOT_ID, name.as_bytes())), Ok(()));
                    }
                    s.forget(entry.nodeid, 1);
                }
            });
        }
    });
    assert_eq!(s.fd_count(), baseline, "references left after all FORGETs");
    for q in 1..=QUEUES {
        for i in 0..40 {
            let name = format!("q{q}-{i}");
            let path = s.path(&name);
            if i % 2 == 0 {
                assert!(!path.exists(), "{name}");
            } else {
                assert_eq!(std::fs::read(&path).unwrap(), name.as_bytes());
            }
        }
    }
    s.assert_serving();
}
