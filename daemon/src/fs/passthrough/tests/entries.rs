//! Names, references and directories.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;

use daxfsd_protocol::abi::{RENAME_EXCHANGE, RENAME_NOREPLACE};

use super::*;
use crate::errno::Errno;
use crate::fs::{AttrOps, DirOps, EntryOps, FileOps, FileSystem};

#[test]
fn lookup_counts_references_and_forget_drops_at_zero() {
    let f = fixture();
    std::fs::write(f.path("a"), b"x").unwrap();
    assert_eq!(
        f.fs.counts(),
        (1, 0),
        "a fresh filesystem holds only the root"
    );

    let first = f.fs.lookup(me(), ROOT, &cs("a")).expect("lookup");
    let second = f.fs.lookup(me(), ROOT, &cs("a")).expect("lookup again");
    assert_eq!(first.nodeid, second.nodeid, "one host inode, one nodeid");
    assert_ne!(first.nodeid, ROOT);
    assert_eq!(f.fs.counts(), (2, 0));
    assert_eq!(f.fs.inodes.get(first.nodeid).unwrap().lookups(), 2);

    f.fs.forget(first.nodeid, 1);
    assert_eq!(f.fs.counts(), (2, 0), "one reference is left");
    f.fs.getattr(me(), first.nodeid, None)
        .expect("still usable");
    f.fs.forget(first.nodeid, 1);
    assert_eq!(f.fs.counts(), (1, 0));
    assert_eq!(
        f.fs.getattr(me(), first.nodeid, None).err(),
        Some(Errno::EBADF),
        "a forgotten nodeid is gone"
    );

    // Forgetting more than was looked up, unknown ids and the root are harmless.
    let again = f.fs.lookup(me(), ROOT, &cs("a")).expect("lookup");
    assert_ne!(again.nodeid, first.nodeid, "nodeids are not reused");
    f.fs.forget(again.nodeid, 1000);
    f.fs.forget(999_999, 1);
    f.fs.forget(ROOT, 5);
    assert_eq!(f.fs.counts(), (1, 0));
    f.fs.getattr(me(), ROOT, None)
        .expect("the root survives any forget");
}

#[test]
fn lookup_reports_host_identity_and_timeouts() {
    let f = fixture();
    std::fs::write(f.path("a"), b"hello").unwrap();
    let meta = std::fs::metadata(f.path("a")).unwrap();
    let e = f.fs.lookup(me(), ROOT, &cs("a")).unwrap();
    assert_eq!(e.attr.ino, meta.ino());
    assert_eq!(e.attr.size, 5);
    assert_eq!(e.attr.mode, meta.mode());
    assert_eq!((e.entry_valid, e.attr_valid), (1, 1), "cache=auto is 1 s");

    assert_eq!(
        f.fs.lookup(me(), ROOT, &cs("missing")).err(),
        Some(Errno::ENOENT)
    );
    assert_eq!(f.fs.counts(), (2, 0), "a failed lookup takes no reference");

    let never = fixture_with(false, false, CachePolicy::Never);
    std::fs::write(never.path("a"), b"x").unwrap();
    let e = never.fs.lookup(me(), ROOT, &cs("a")).unwrap();
    assert_eq!((e.entry_valid, e.attr_valid), (0, 0));
    let always = fixture_with(false, false, CachePolicy::Always);
    let attr = always.fs.getattr(me(), ROOT, None).unwrap();
    assert_eq!(attr.attr_valid, 86_400);
}

#[test]
fn symlinks_do_not_let_lookups_escape() {
    let f = fixture();
    std::os::unix::fs::symlink("/etc", f.path("etc")).unwrap();
    std::os::unix::fs::symlink("../../../../..", f.path("up")).unwrap();

    let link =
        f.fs.lookup(me(), ROOT, &cs("etc"))
            .expect("the link itself");
    assert_eq!(link.attr.mode & libc::S_IFMT, libc::S_IFLNK);
    let through = f.fs.lookup(me(), link.nodeid, &cs("passwd"));
    assert!(
        matches!(through, Err(Errno(libc::ENOTDIR | libc::ELOOP))),
        "lookup under a symlink to /etc must fail, got {through:?}"
    );
    let up = f.fs.lookup(me(), ROOT, &cs("up")).unwrap();
    assert!(f.fs.lookup(me(), up.nodeid, &cs("etc")).is_err());

    // A symlink the guest makes is just as inert.
    let made =
        f.fs.symlink(me(), ROOT, &cs("made"), &cs("/etc"), &PLAIN)
            .expect("symlink");
    assert!(f.fs.lookup(me(), made.nodeid, &cs("passwd")).is_err());
    assert_eq!(f.fs.readlink(me(), made.nodeid).unwrap(), b"/etc");
    assert_eq!(
        f.fs.open(me(), made.nodeid, libc::O_RDONLY as u32, 0).err(),
        Some(Errno(libc::ELOOP)),
        "symlinks are never opened for I/O"
    );
    assert_eq!(
        f.fs.opendir(me(), made.nodeid, 0).err(),
        Some(Errno::ENOTDIR)
    );
    // CREATE over an existing symlink refuses instead of following it.
    let over = f.fs.create(
        me(),
        ROOT,
        &cs("etc"),
        &create_in(libc::O_RDWR, 0o644),
        &PLAIN,
    );
    assert_eq!(over.err(), Some(Errno(libc::ELOOP)));
    assert_eq!(f.fs.readlink(me(), ROOT).err(), Some(Errno::EINVAL));
}

#[test]
fn mkdir_mknod_unlink_rmdir() {
    let f = fixture();
    let d =
        f.fs.mkdir(me(), ROOT, &cs("d"), 0o755, &PLAIN)
            .expect("mkdir");
    assert!(f.path("d").is_dir());
    assert_eq!(d.attr.mode & libc::S_IFMT, libc::S_IFDIR);

    let fifo = f
        .mknod(me(), d.nodeid, "fifo", libc::S_IFIFO | 0o600, 0)
        .expect("fifo");
    assert_eq!(fifo.attr.mode & libc::S_IFMT, libc::S_IFIFO);
    assert_eq!(
        f.fs.open(me(), fifo.nodeid, libc::O_RDONLY as u32, 0).err(),
        Some(Errno(libc::ENXIO)),
        "a FIFO is never opened (it would block the worker)"
    );
    let sock = f
        .mknod(me(), d.nodeid, "sock", libc::S_IFSOCK | 0o600, 0)
        .expect("socket");
    assert_eq!(sock.attr.mode & libc::S_IFMT, libc::S_IFSOCK);
    let reg = f
        .mknod(me(), d.nodeid, "reg", 0o600, 0)
        .expect("type 0 is a regular file");
    assert_eq!(reg.attr.mode & libc::S_IFMT, libc::S_IFREG);
    assert_eq!(
        f.mknod(me(), d.nodeid, "dir", libc::S_IFDIR | 0o700, 0)
            .err(),
        Some(Errno::EINVAL)
    );
    if is_root() {
        let null = f
            .mknod(me(), d.nodeid, "null", libc::S_IFCHR | 0o600, 0x103)
            .expect("device node as root");
        assert_eq!(null.attr.rdev, 0x103, "rdev round-trips as 1:3");
        let meta = std::fs::symlink_metadata(f.path("d/null")).unwrap();
        assert_eq!(meta.rdev(), libc::makedev(1, 3));
    }

    assert_eq!(
        f.fs.rmdir(me(), ROOT, &cs("d")).err(),
        Some(Errno(libc::ENOTEMPTY))
    );
    for name in ["fifo", "sock", "reg", "null"] {
        if f.path("d").join(name).symlink_metadata().is_ok() {
            f.fs.unlink(me(), d.nodeid, &cs(name)).expect("unlink");
        }
    }
    assert_eq!(
        f.fs.unlink(me(), ROOT, &cs("d")).err(),
        Some(Errno(libc::EISDIR))
    );
    f.fs.rmdir(me(), ROOT, &cs("d")).expect("rmdir");
    assert!(!f.path("d").exists());
}

#[test]
fn creation_runs_as_the_caller() {
    if !is_root() {
        eprintln!("skipped: switching credentials needs root");
        return;
    }
    let f = fixture();
    let guest = Context {
        uid: 1234,
        gid: 5678,
        pid: 1,
    };
    // The caller needs write permission on the parent, as on Linux.
    assert_eq!(
        f.fs.mkdir(guest, ROOT, &cs("denied"), 0o755, &PLAIN).err(),
        Some(Errno(libc::EACCES))
    );
    std::fs::set_permissions(
        f.dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let d =
        f.fs.mkdir(guest, ROOT, &cs("d"), 0o755, &PLAIN)
            .expect("mkdir");
    assert_eq!((d.attr.uid, d.attr.gid), (1234, 5678));
    let (e, o) =
        f.fs.create(
            guest,
            ROOT,
            &cs("f"),
            &create_in(libc::O_RDWR, 0o644),
            &PLAIN,
        )
        .expect("create");
    f.fs.release(e.nodeid, o.fh).unwrap();
    let meta = std::fs::metadata(f.path("f")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    let s =
        f.fs.symlink(guest, ROOT, &cs("s"), &cs("f"), &PLAIN)
            .expect("symlink");
    assert_eq!((s.attr.uid, s.attr.gid), (1234, 5678));
    // Filesystem capabilities are masked while the caller is non-root.
    assert_eq!(
        f.mknod(guest, ROOT, "null", libc::S_IFCHR | 0o600, 0x103)
            .err(),
        Some(Errno::EPERM)
    );
    // And the worker thread is root again afterwards.
    let root_dir = f.fs.mkdir(me(), d.nodeid, &cs("sub"), 0o755, &PLAIN);
    assert!(root_dir.is_ok(), "root may create in the caller's 0755 dir");
}

#[test]
fn rename_honours_flags() {
    let f = fixture();
    std::fs::write(f.path("a"), b"A").unwrap();
    std::fs::write(f.path("b"), b"B").unwrap();
    let noreplace =
        f.fs.rename(me(), ROOT, &cs("a"), ROOT, &cs("b"), RENAME_NOREPLACE);
    assert_eq!(noreplace.err(), Some(Errno(libc::EEXIST)));
    f.fs.rename(me(), ROOT, &cs("a"), ROOT, &cs("b"), RENAME_EXCHANGE)
        .expect("exchange");
    assert_eq!(std::fs::read(f.path("a")).unwrap(), b"B");
    assert_eq!(std::fs::read(f.path("b")).unwrap(), b"A");
    assert_eq!(
        f.fs.rename(me(), ROOT, &cs("a"), ROOT, &cs("b"), 1 << 20)
            .err(),
        Some(Errno::EINVAL),
        "unknown rename flags"
    );

    let d = f.fs.mkdir(me(), ROOT, &cs("d"), 0o755, &PLAIN).unwrap();
    f.fs.rename(
        me(),
        ROOT,
        &cs("a"),
        d.nodeid,
        &cs("moved"),
        RENAME_NOREPLACE,
    )
    .expect("noreplace onto a free name");
    assert_eq!(std::fs::read(f.path("d/moved")).unwrap(), b"B");
    f.fs.rename(me(), ROOT, &cs("b"), d.nodeid, &cs("moved"), 0)
        .expect("plain rename replaces");
    assert_eq!(std::fs::read(f.path("d/moved")).unwrap(), b"A");
    assert!(!f.path("b").exists());
}

#[test]
fn link_shares_the_inode_and_counts_a_reference() {
    let f = fixture();
    let (node, fh) = create_file(&f.fs, "orig");
    f.fs.release(node, fh).unwrap();
    let d = f.fs.mkdir(me(), ROOT, &cs("d"), 0o755, &PLAIN).unwrap();
    let linked = f.fs.link(me(), node, d.nodeid, &cs("alias")).expect("link");
    assert_eq!(linked.nodeid, node, "a hard link is the same nodeid");
    assert_eq!(linked.attr.nlink, 2);
    assert_eq!(f.fs.inodes.get(node).unwrap().lookups(), 2);
    let a = std::fs::metadata(f.path("orig")).unwrap();
    let b = std::fs::metadata(f.path("d/alias")).unwrap();
    assert_eq!(a.ino(), b.ino());

    assert_eq!(
        f.fs.link(me(), node, ROOT, &cs("orig")).err(),
        Some(Errno(libc::EEXIST))
    );
    if !is_root() {
        eprintln!("skipped linking a symlink: AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH");
        return;
    }
    // Symlinks are linked as themselves, not as their targets.
    let s =
        f.fs.symlink(me(), ROOT, &cs("s"), &cs("orig"), &PLAIN)
            .unwrap();
    let s2 =
        f.fs.link(me(), s.nodeid, ROOT, &cs("s2"))
            .expect("link a symlink");
    assert_eq!(s2.nodeid, s.nodeid);
    assert_eq!(
        std::fs::read_link(f.path("s2")).unwrap().to_str(),
        Some("orig")
    );
}

#[test]
fn readdir_lists_everything_across_small_replies() {
    let f = fixture();
    let mut expected = BTreeSet::new();
    for i in 0..50 {
        let name = format!("file-with-a-longish-name-{i:03}");
        std::fs::write(f.path(&name), b"").unwrap();
        expected.insert(name);
    }
    std::fs::create_dir(f.path("sub")).unwrap();
    expected.insert("sub".into());
    let listed = readdir_all(&f.fs, ROOT, false, 200);
    let names: Vec<_> = listed.iter().map(|l| l.name.clone()).collect();
    let unique: BTreeSet<_> = names.iter().cloned().collect();
    assert_eq!(names.len(), unique.len(), "no entry twice: {names:?}");
    let mut want = expected.clone();
    want.insert(".".into());
    want.insert("..".into());
    assert_eq!(unique, want);
    let sub = listed.iter().find(|l| l.name == "sub").unwrap();
    assert_eq!(sub.typ, libc::DT_DIR as u32);
    assert_eq!(sub.ino, std::fs::metadata(f.path("sub")).unwrap().ino());
    assert_eq!(f.fs.counts(), (1, 0), "plain READDIR takes no references");
}

#[test]
fn readdirplus_counts_exactly_the_entries_sent() {
    let f = fixture();
    for i in 0..20 {
        std::fs::write(f.path(&format!("f{i:02}")), b"").unwrap();
    }
    let fh = f.fs.opendir(me(), ROOT, 0).unwrap().fh;
    // Room for two entries and a bit: the third must not be looked up.
    let one = std::mem::size_of::<EntryOut>() + 32;
    let first = readdir_once(&f.fs, ROOT, fh, 0, true, one * 2 + 10);
    assert_eq!(first.len(), 2);
    let real: Vec<_> = first
        .iter()
        .filter(|l| l.name != "." && l.name != "..")
        .collect();
    assert_eq!(
        f.fs.counts(),
        (1 + real.len(), 1),
        "one reference per real entry sent, none for the one that did not fit"
    );
    for l in &first {
        let e = l.entry.as_ref().unwrap();
        if l.name == "." || l.name == ".." {
            assert_eq!(e.nodeid, 0, "dot entries carry no nodeid");
        } else {
            assert_ne!(e.nodeid, 0);
            assert_eq!(e.attr.ino, l.ino);
        }
    }

    // The rest, in replies of varying size; every file exactly once.
    let mut seen: Vec<_> = first.clone();
    let mut offset = first.last().unwrap().off;
    let mut budget = 300;
    loop {
        let batch = readdir_once(&f.fs, ROOT, fh, offset, true, budget);
        let Some(last) = batch.last() else { break };
        offset = last.off;
        seen.extend(batch);
        budget += 97;
    }
    let files: Vec<_> = seen.iter().filter(|l| l.name.starts_with('f')).collect();
    assert_eq!(files.len(), 20);
    assert_eq!(f.fs.counts(), (21, 1));
    for l in &files {
        let nodeid = l.entry.as_ref().unwrap().nodeid;
        assert_eq!(f.fs.inodes.get(nodeid).unwrap().lookups(), 1);
        f.fs.forget(nodeid, 1);
    }
    assert_eq!(f.fs.counts(), (1, 1), "forgetting what was sent frees all");
    f.fs.releasedir(ROOT, fh).unwrap();
    assert_eq!(f.fs.counts(), (1, 0));
}

#[test]
fn readdir_needs_a_directory_handle() {
    let f = fixture();
    let (node, fh) = create_file(&f.fs, "a");
    let mut buf = Vec::new();
    let mut reply = ReplyBuf::new(&mut buf, 1);
    let mut w = DirentWriter::new(&mut reply, 4096);
    assert_eq!(
        f.fs.readdir(me(), node, fh, 0, false, &mut w).err(),
        Some(Errno::ENOTDIR)
    );
    assert_eq!(
        f.fs.readdir(me(), ROOT, fh, 0, false, &mut w).err(),
        Some(Errno::EBADF),
        "a handle of another inode"
    );
    assert_eq!(f.fs.opendir(me(), node, 0).err(), Some(Errno::ENOTDIR));
}

#[test]
fn destroy_keeps_only_the_root() {
    let f = fixture();
    let (_node, _fh) = create_file(&f.fs, "a");
    let d = f.fs.mkdir(me(), ROOT, &cs("d"), 0o755, &PLAIN).unwrap();
    f.fs.opendir(me(), d.nodeid, 0).unwrap();
    assert_eq!(f.fs.counts(), (3, 2));
    f.fs.destroy();
    assert_eq!(f.fs.counts(), (1, 0));
    f.fs.getattr(me(), ROOT, None).expect("root still served");
    let again =
        f.fs.lookup(me(), ROOT, &cs("a"))
            .expect("lookup after destroy");
    assert_eq!(f.fs.counts(), (2, 0));
    assert_ne!(again.nodeid, ROOT);
}

#[test]
fn readdir_read_ahead_resumes_seeks_back_and_rewinds() {
    let f = fixture();
    // More names than one getdents64 buffer holds, so listings refill.
    let total = 400;
    for i in 0..total {
        std::fs::write(f.path(&format!("entry-{i:04}")), b"").unwrap();
    }
    let fh = f.fs.opendir(me(), ROOT, 0).unwrap().fh;
    let names = |batch: &[Listed]| batch.iter().map(|l| l.name.clone()).collect::<Vec<_>>();
    let budget = 300;
    let first = readdir_once(&f.fs, ROOT, fh, 0, false, budget);
    let second = readdir_once(&f.fs, ROOT, fh, first.last().unwrap().off, false, budget);
    let third = readdir_once(&f.fs, ROOT, fh, second.last().unwrap().off, false, budget);
    assert!(!second.is_empty() && !third.is_empty());
    // Back to an earlier cookie: the same entries as the first time.
    let again = readdir_once(&f.fs, ROOT, fh, first.last().unwrap().off, false, budget);
    assert_eq!(names(&again), names(&second));
    // Rewind mid-listing.
    assert_eq!(
        names(&readdir_once(&f.fs, ROOT, fh, 0, false, budget)),
        names(&first)
    );
    // Someone moved the fd (a guest LSEEK on the directory handle): a listing
    // continued at its cookie is still right.
    let resumed = readdir_once(&f.fs, ROOT, fh, first.last().unwrap().off, false, budget);
    assert_eq!(names(&resumed), names(&second));
    let handle = f.fs.handles.get(fh, ROOT).unwrap();
    rustix::fs::seek(&handle.fd, rustix::fs::SeekFrom::Start(0)).unwrap();
    drop(handle);
    let mut seen: Vec<String> = names(&first);
    seen.extend(names(&second));
    let mut offset = second.last().unwrap().off;
    loop {
        let batch = readdir_once(&f.fs, ROOT, fh, offset, false, budget);
        let Some(last) = batch.last() else { break };
        offset = last.off;
        seen.extend(names(&batch));
    }
    let unique: BTreeSet<_> = seen.iter().cloned().collect();
    assert_eq!(seen.len(), unique.len(), "no entry twice");
    assert_eq!(unique.len(), total + 2, "every entry, with . and ..");
    f.fs.releasedir(ROOT, fh).unwrap();
}

/// `/dev/pts` is a mount of its own (devpts) inside `/dev` on Linux hosts
/// and containers alike. With `/dev` shared (read-only), LOOKUP marks it
/// ATTR_SUBMOUNT when submounts are announced, and nothing else: not a
/// device file, not a directory on the parent's own filesystem, nothing at
/// all with `--no-announce-submounts`.
#[test]
fn mount_points_inside_the_share_are_announced_as_submounts() {
    use daxfsd_protocol::abi::ATTR_SUBMOUNT;
    let dev_of = |path: &str| std::fs::metadata(path).unwrap().dev();
    assert_ne!(dev_of("/dev"), dev_of("/dev/pts"), "/dev/pts is a mount");
    let share_dev = |announce_submounts| {
        PassthroughFs::new(FsConfig {
            shared_dir: "/dev".into(),
            cache: CachePolicy::Auto,
            readonly: true,
            xattr: false,
            xattrmap: None,
            allow_direct_io: false,
            preserve_noatime: false,
            announce_submounts,
            inode_dax: InodeDaxPolicy::Always,
            inode_file_handles: InodeFileHandles::Never,
            handle_calls: false,
            ids: Default::default(),
        })
        .unwrap()
    };
    let submount = |fs: &PassthroughFs, name: &str| {
        fs.lookup(me(), ROOT, &cs(name)).unwrap().attr.flags & ATTR_SUBMOUNT != 0
    };
    let announcing = share_dev(true);
    assert!(submount(&announcing, "pts"));
    assert!(!submount(&announcing, "null"), "not a directory");
    assert!(!submount(&share_dev(false), "pts"));
    let f = fixture();
    std::fs::create_dir(f.path("d")).unwrap();
    assert!(!submount(&f.fs, "d"), "same filesystem as its parent");
}
