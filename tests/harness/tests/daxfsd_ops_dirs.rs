//! daxfsd over its socket: directory handles (OPENDIR, READDIR, READDIRPLUS, RELEASEDIR,
//! FSYNCDIR), listings checked against the host directory.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;

use common::*;
use daxfsd_protocol::abi::*;

const ENTRIES: usize = 1000;

/// A session whose root holds `ENTRIES` files `f0000`.. (file i holds i bytes) and a
/// directory `sub`.
fn populated() -> Session {
    let s = Session::start(&[]);
    for i in 0..ENTRIES {
        std::fs::write(s.path(&format!("f{i:04}")), vec![b'x'; i]).unwrap();
    }
    std::fs::create_dir(s.path("sub")).unwrap();
    s
}

fn host_listing(s: &Session) -> BTreeMap<Vec<u8>, std::fs::Metadata> {
    let mut map = BTreeMap::new();
    for entry in std::fs::read_dir(s.dir()).unwrap() {
        let entry = entry.unwrap();
        map.insert(
            entry.file_name().into_encoded_bytes(),
            entry.metadata().unwrap(),
        );
    }
    map
}

#[test]
fn readdir_lists_every_host_entry_across_calls() {
    let s = populated();
    let fh = s.opendir(ROOT_ID).expect("opendir").fh;
    let mut seen = Vec::new();
    let mut offset = 0;
    let mut calls = 0;
    loop {
        let batch = s.readdir(ROOT_ID, fh, offset, 4096).expect("readdir");
        if batch.is_empty() {
            break;
        }
        calls += 1;
        offset = batch.last().unwrap().off;
        seen.extend(batch);
        assert!(calls < 1000, "READDIR never reached the end");
    }
    assert!(calls > 5, "{ENTRIES} entries in {calls} calls of 4 KiB");
    let names: Vec<&[u8]> = seen.iter().map(|d| d.name.as_slice()).collect();
    let unique: BTreeSet<&[u8]> = names.iter().copied().collect();
    assert_eq!(unique.len(), names.len(), "an entry was listed twice");
    let host = host_listing(&s);
    assert_eq!(names.len(), host.len() + 2, "host entries plus . and ..");
    let root_ino = std::fs::metadata(s.dir()).unwrap().ino();
    for d in &seen {
        match d.name.as_slice() {
            b"." => {
                assert_eq!(d.ino, root_ino);
                assert_eq!(d.typ, libc::DT_DIR as u32);
            }
            b".." => assert_eq!(d.typ, libc::DT_DIR as u32),
            name => {
                let meta = host.get(name).unwrap_or_else(|| {
                    panic!("{} is not on the host", String::from_utf8_lossy(name))
                });
                assert_eq!(d.ino, meta.ino());
                let typ = if meta.is_dir() {
                    libc::DT_DIR
                } else {
                    libc::DT_REG
                };
                assert_eq!(d.typ, typ as u32);
            }
        }
    }
    // Resuming from a cookie in the middle gives exactly the rest.
    let mid = &seen[seen.len() / 2];
    let mut rest = Vec::new();
    let mut offset = mid.off;
    loop {
        let batch = s.readdir(ROOT_ID, fh, offset, 4096).unwrap();
        let Some(last) = batch.last() else { break };
        offset = last.off;
        rest.extend(batch);
    }
    assert_eq!(rest, seen[seen.len() / 2 + 1..]);
    s.releasedir(ROOT_ID, fh).expect("releasedir");
}

#[test]
fn readdirplus_returns_1000_entries_with_attributes_and_references() {
    let s = populated();
    let baseline = s.fd_count();
    let fh = s.opendir(ROOT_ID).unwrap().fh;
    let host = host_listing(&s);
    let mut seen = BTreeSet::new();
    let mut nodeids = Vec::new();
    let mut inos = Vec::new();
    let mut offset = 0;
    let mut calls = 0;
    loop {
        let batch = s
            .readdirplus(ROOT_ID, fh, offset, 8192)
            .expect("readdirplus");
        let Some((_, last)) = batch.last() else { break };
        offset = last.off;
        calls += 1;
        for (entry, d) in batch {
            assert!(seen.insert(d.name.clone()), "listed twice");
            if d.name == b"." || d.name == b".." {
                assert_eq!(entry.nodeid, 0, "no dentry for . and ..");
                continue;
            }
            let meta = &host[&d.name];
            assert_ne!(entry.nodeid, 0);
            assert_eq!(entry.attr.ino, meta.ino());
            assert_eq!(d.ino, meta.ino());
            assert_eq!(entry.attr.size, meta.len());
            assert_eq!(entry.attr.mode, meta.mode());
            assert_eq!(entry.entry_valid, 1);
            nodeids.push(entry.nodeid);
            inos.push((entry.nodeid, meta.ino()));
        }
    }
    assert!(calls > 5, "{ENTRIES} entries in {calls} calls of 8 KiB");
    assert_eq!(nodeids.len(), ENTRIES + 1, "1000 files and sub");
    // Each entry is a lookup the guest now holds: GETATTR works, one O_PATH fd each.
    let sub = s.lookup(ROOT_ID, b"sub").unwrap().nodeid;
    assert!(
        nodeids.contains(&sub),
        "LOOKUP found the READDIRPLUS nodeid"
    );
    for &(id, ino) in inos.iter().step_by(50) {
        assert_eq!(s.getattr(id).unwrap().attr.ino, ino);
    }
    assert_eq!(
        s.fd_count(),
        baseline + 1 + ENTRIES + 1,
        "dir handle + inodes"
    );
    // Forget them all (sub twice: READDIRPLUS and LOOKUP).
    let mut forgets: Vec<(u64, u64)> = nodeids.iter().map(|&id| (id, 1)).collect();
    forgets.push((sub, 1));
    s.batch_forget(&forgets);
    s.releasedir(ROOT_ID, fh).unwrap();
    assert_eq!(s.fd_count(), baseline, "READDIRPLUS references leaked");
    assert_eq!(s.getattr(nodeids[0]).unwrap_err(), libc::EBADF);
}

#[test]
fn readdirplus_with_a_tiny_buffer_takes_no_reference_it_does_not_return() {
    let s = populated();
    let baseline = s.fd_count();
    let fh = s.opendir(ROOT_ID).unwrap().fh;
    // Room for no plus entry at all: an empty reply, and no lookups taken.
    let none = s
        .readdirplus(ROOT_ID, fh, 0, 100)
        .expect("tiny readdirplus");
    assert!(none.is_empty());
    assert_eq!(s.fd_count(), baseline + 1);
    // Room for exactly two entries (EntryOut + dirent of a 5-byte name = 160 bytes).
    let mut offset = 0;
    let mut got = Vec::new();
    while got.len() < 10 {
        let batch = s.readdirplus(ROOT_ID, fh, offset, 320).unwrap();
        assert!(batch.len() <= 2);
        offset = batch.last().unwrap().1.off;
        got.extend(batch);
    }
    let held: Vec<(u64, u64)> = got
        .iter()
        .filter(|(e, _)| e.nodeid != 0)
        .map(|(e, _)| (e.nodeid, 1))
        .collect();
    assert_eq!(s.fd_count(), baseline + 1 + held.len());
    s.batch_forget(&held);
    s.releasedir(ROOT_ID, fh).unwrap();
    assert_eq!(s.fd_count(), baseline);
}

#[test]
fn readdir_sees_changes_made_through_the_daemon() {
    let s = Session::start(&[]);
    let d = s.mkdir(ROOT_ID, b"d", 0o755).unwrap();
    let list = |s: &Session| -> BTreeSet<Vec<u8>> {
        let fh = s.opendir(d.nodeid).unwrap().fh;
        let names = s
            .readdir(d.nodeid, fh, 0, 65_536)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        s.releasedir(d.nodeid, fh).unwrap();
        names
    };
    let dots: BTreeSet<Vec<u8>> = [b".".to_vec(), b"..".to_vec()].into();
    assert_eq!(list(&s), dots);
    s.mkdir(d.nodeid, b"a", 0o755).unwrap();
    s.symlink(d.nodeid, b"b", b"a").unwrap();
    s.mknod(d.nodeid, b"c", libc::S_IFIFO | 0o644, 0).unwrap();
    let fh = s.opendir(d.nodeid).unwrap().fh;
    let typed: BTreeMap<Vec<u8>, u32> = s
        .readdir(d.nodeid, fh, 0, 65_536)
        .unwrap()
        .into_iter()
        .map(|e| (e.name, e.typ))
        .collect();
    assert_eq!(typed[&b"a".to_vec()], libc::DT_DIR as u32);
    assert_eq!(typed[&b"b".to_vec()], libc::DT_LNK as u32);
    assert_eq!(typed[&b"c".to_vec()], libc::DT_FIFO as u32);
    s.fsyncdir(d.nodeid, fh, false).expect("fsyncdir");
    s.fsyncdir(d.nodeid, fh, true).expect("fsyncdir datasync");
    s.releasedir(d.nodeid, fh).unwrap();
    s.rmdir(d.nodeid, b"a").unwrap();
    s.unlink(d.nodeid, b"b").unwrap();
    s.unlink(d.nodeid, b"c").unwrap();
    assert_eq!(list(&s), dots);
}

#[test]
fn directory_handle_errors() {
    let s = Session::start(&[]);
    let f = s.host_file("f", b"x");
    assert_eq!(s.opendir(f.nodeid).unwrap_err(), libc::ENOTDIR);
    let base = s.fd_count();
    let fh = s.opendir(ROOT_ID).unwrap().fh;
    assert_eq!(s.fd_count(), base + 1);
    // A file handle is not a directory handle.
    let file_fh = s.open(f.nodeid, libc::O_RDONLY).unwrap().fh;
    assert_eq!(
        s.readdir(f.nodeid, file_fh, 0, 4096).unwrap_err(),
        libc::ENOTDIR
    );
    // A directory handle belongs to its nodeid.
    let d = s.mkdir(ROOT_ID, b"d", 0o755).unwrap();
    assert_eq!(s.readdir(d.nodeid, fh, 0, 4096).unwrap_err(), libc::EBADF);
    assert_eq!(s.readdir(ROOT_ID, 4242, 0, 4096).unwrap_err(), libc::EBADF);
    assert_eq!(s.fsyncdir(ROOT_ID, 4242, false).unwrap_err(), libc::EBADF);
    s.releasedir(ROOT_ID, fh).expect("releasedir");
    assert_eq!(s.fd_count(), base + 2, "file handle and d remain");
    assert_eq!(s.readdir(ROOT_ID, fh, 0, 4096).unwrap_err(), libc::EBADF);
    assert_eq!(s.releasedir(ROOT_ID, fh).unwrap_err(), libc::EBADF);
}
