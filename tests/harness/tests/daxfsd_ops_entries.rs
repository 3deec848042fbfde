//! daxfsd over its socket: operations on names (MKDIR, MKNOD, SYMLINK, READLINK, UNLINK,
//! RMDIR, RENAME, RENAME2, LINK), each checked against the host directory.

mod common;

use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};

use common::*;
use daxfsd_protocol::abi::*;
use daxfsd_protocol::encode::RequestEncoder;

#[test]
fn mkdir_creates_a_host_directory_with_the_mode_sent() {
    let s = Session::start(&[]);
    let e = s.mkdir(ROOT_ID, b"d", 0o750).expect("mkdir");
    let meta = std::fs::metadata(s.path("d")).unwrap();
    assert!(meta.is_dir());
    // The guest applied its umask already; the daemon applies none.
    assert_eq!(meta.permissions().mode() & 0o7777, 0o750);
    assert_eq!(e.attr.ino, meta.ino());
    assert_eq!(e.attr.mode, meta.mode());
    assert_eq!(e.attr.nlink, 2);
    // Nested, then the errors.
    let inner = s.mkdir(e.nodeid, b"inner", 0o700).expect("nested mkdir");
    assert!(s.path("d/inner").is_dir());
    assert_ne!(inner.nodeid, e.nodeid);
    assert_eq!(s.mkdir(ROOT_ID, b"d", 0o755).unwrap_err(), libc::EEXIST);
    let f = s.host_file("f", b"");
    assert_eq!(s.mkdir(f.nodeid, b"x", 0o755).unwrap_err(), libc::ENOTDIR);
    // The longest name Linux allows.
    let long = vec![b'n'; 255];
    s.mkdir(ROOT_ID, &long, 0o755).expect("255-byte name");
    assert!(s.dir().join(std::str::from_utf8(&long).unwrap()).is_dir());
}

#[test]
fn mkdir_as_a_caller_makes_the_caller_the_owner() {
    if !is_root() {
        daxfsd_harness::skip("needs root to create as another uid");
        return;
    }
    let s = Session::start(&[]);
    // The shared dir is a 0700 temp dir; give the caller a directory it may write.
    let open = s.mkdir(ROOT_ID, b"open", 0o777).unwrap().nodeid;
    let req = requests::mkdir(s.unique(), open, b"owned", 0o755, 0)
        .caller(1234, 5678, 1)
        .finish();
    let e = exact::<EntryOut>(s.send(&req)).expect("mkdir as 1234");
    let meta = std::fs::metadata(s.path("open/owned")).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1234, 5678));
    assert_eq!((e.attr.uid, e.attr.gid), (1234, 5678));
    // That caller may not create inside a root-owned 0755 directory.
    std::fs::create_dir(s.path("rootonly")).unwrap();
    std::fs::set_permissions(s.path("rootonly"), std::fs::Permissions::from_mode(0o755)).unwrap();
    let parent = s.lookup(ROOT_ID, b"rootonly").unwrap().nodeid;
    let req = requests::mkdir(s.unique(), parent, b"denied", 0o755, 0)
        .caller(1234, 5678, 1)
        .finish();
    assert_eq!(exact::<EntryOut>(s.send(&req)).unwrap_err(), libc::EACCES);
    assert!(!s.path("rootonly/denied").exists());
}

#[test]
fn mknod_creates_fifos_sockets_regular_files_and_devices() {
    let s = Session::start(&[]);
    let fifo = s
        .mknod(ROOT_ID, b"fifo", libc::S_IFIFO | 0o640, 0)
        .expect("fifo");
    let meta = std::fs::symlink_metadata(s.path("fifo")).unwrap();
    assert!(meta.file_type().is_fifo());
    assert_eq!(meta.permissions().mode() & 0o7777, 0o640);
    assert_eq!(fifo.attr.mode, libc::S_IFIFO | 0o640);

    s.mknod(ROOT_ID, b"sock", libc::S_IFSOCK | 0o600, 0)
        .expect("socket");
    assert!(std::fs::symlink_metadata(s.path("sock"))
        .unwrap()
        .file_type()
        .is_socket());

    // File type 0 means a regular file, as for mknod(2).
    let reg = s.mknod(ROOT_ID, b"reg", 0o644, 0).expect("regular");
    assert!(std::fs::symlink_metadata(s.path("reg")).unwrap().is_file());
    assert_eq!(reg.attr.mode, libc::S_IFREG | 0o644);

    if is_root() {
        let rdev = encode_dev(1, 3);
        let dev = s
            .mknod(ROOT_ID, b"null", libc::S_IFCHR | 0o666, rdev)
            .expect("char device as root");
        let meta = std::fs::symlink_metadata(s.path("null")).unwrap();
        assert!(meta.file_type().is_char_device());
        assert_eq!(meta.rdev(), libc::makedev(1, 3));
        assert_eq!(dev.attr.rdev, rdev);
        // Opening a device node from the guest is refused (the guest serves special
        // files itself).
        assert_eq!(s.open(dev.nodeid, libc::O_RDWR).unwrap_err(), libc::ENXIO);
    }
    assert_eq!(
        s.open(fifo.nodeid, libc::O_RDONLY).unwrap_err(),
        libc::ENXIO
    );
    // Directories and symlinks have their own operations.
    assert_eq!(
        s.mknod(ROOT_ID, b"dir", libc::S_IFDIR | 0o755, 0)
            .unwrap_err(),
        libc::EINVAL
    );
    assert_eq!(
        s.mknod(ROOT_ID, b"lnk", libc::S_IFLNK | 0o777, 0)
            .unwrap_err(),
        libc::EINVAL
    );
    assert!(!s.path("dir").exists() && !s.path("lnk").exists());
    assert_eq!(
        s.mknod(ROOT_ID, b"fifo", libc::S_IFIFO | 0o640, 0)
            .unwrap_err(),
        libc::EEXIST
    );
}

#[test]
fn symlink_and_readlink_round_trip_through_the_host() {
    let s = Session::start(&[]);
    let e = s.symlink(ROOT_ID, b"lnk", b"some/target").expect("symlink");
    assert_eq!(
        std::fs::read_link(s.path("lnk")).unwrap().as_os_str(),
        "some/target"
    );
    assert_eq!(e.attr.mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(e.attr.size, 11);
    assert_eq!(s.readlink(e.nodeid).unwrap(), b"some/target");
    // A host-made symlink, even one pointing out of the share, reads back verbatim and
    // is never followed by LOOKUP.
    std::os::unix::fs::symlink("/etc/passwd", s.path("escape")).unwrap();
    let esc = s.lookup(ROOT_ID, b"escape").expect("lookup of a symlink");
    assert_eq!(esc.attr.mode & libc::S_IFMT, libc::S_IFLNK);
    assert_eq!(s.readlink(esc.nodeid).unwrap(), b"/etc/passwd");
    assert_eq!(s.open(esc.nodeid, libc::O_RDONLY).unwrap_err(), libc::ELOOP);
    // A long target (PATH_MAX - 1 bytes) is fine.
    let target = vec![b't'; 4095];
    let long = s.symlink(ROOT_ID, b"long", &target).expect("long target");
    assert_eq!(s.readlink(long.nodeid).unwrap(), target);
    // READLINK of a non-symlink is EINVAL; SYMLINK over an existing name is EEXIST.
    let f = s.host_file("f", b"");
    assert_eq!(s.readlink(f.nodeid).unwrap_err(), libc::EINVAL);
    assert_eq!(s.symlink(ROOT_ID, b"f", b"x").unwrap_err(), libc::EEXIST);
}

#[test]
fn unlink_removes_host_files_but_not_directories() {
    let s = Session::start(&[]);
    let f = s.host_file("f", b"content");
    s.mkdir(ROOT_ID, b"d", 0o755).unwrap();
    std::os::unix::fs::symlink("f", s.path("lnk")).unwrap();
    s.unlink(ROOT_ID, b"lnk").expect("unlink symlink");
    assert!(
        s.path("f").exists(),
        "unlinking a symlink leaves its target"
    );
    s.unlink(ROOT_ID, b"f").expect("unlink file");
    assert!(!s.path("f").exists());
    // The guest still holds the nodeid: the inode lives on, with no links.
    let attr = s.getattr(f.nodeid).expect("getattr of an unlinked inode");
    assert_eq!(attr.attr.nlink, 0);
    assert_eq!(s.unlink(ROOT_ID, b"f").unwrap_err(), libc::ENOENT);
    assert_eq!(s.unlink(ROOT_ID, b"d").unwrap_err(), libc::EISDIR);
    assert!(s.path("d").is_dir());
}

#[test]
fn rmdir_removes_only_empty_host_directories() {
    let s = Session::start(&[]);
    let d = s.mkdir(ROOT_ID, b"d", 0o755).unwrap();
    s.mkdir(d.nodeid, b"sub", 0o755).unwrap();
    assert_eq!(s.rmdir(ROOT_ID, b"d").unwrap_err(), libc::ENOTEMPTY);
    assert!(s.path("d/sub").is_dir());
    s.rmdir(d.nodeid, b"sub").expect("rmdir sub");
    s.rmdir(ROOT_ID, b"d").expect("rmdir d");
    assert!(!s.path("d").exists());
    assert_eq!(s.rmdir(ROOT_ID, b"d").unwrap_err(), libc::ENOENT);
    s.host_file("f", b"");
    assert_eq!(s.rmdir(ROOT_ID, b"f").unwrap_err(), libc::ENOTDIR);
    assert!(s.path("f").is_file());
}

#[test]
fn rename_moves_host_entries_within_and_across_directories() {
    let s = Session::start(&[]);
    let f = s.host_file("a", b"payload");
    let d = s.mkdir(ROOT_ID, b"d", 0o755).unwrap();
    s.rename(ROOT_ID, b"a", ROOT_ID, b"b")
        .expect("rename in place");
    assert!(!s.path("a").exists());
    assert_eq!(std::fs::read(s.path("b")).unwrap(), b"payload");
    s.rename(ROOT_ID, b"b", d.nodeid, b"c")
        .expect("rename across");
    assert_eq!(std::fs::read(s.path("d/c")).unwrap(), b"payload");
    // The nodeid follows the inode, not the name.
    assert_eq!(s.lookup(d.nodeid, b"c").unwrap().nodeid, f.nodeid);
    // Plain rename replaces an existing target.
    std::fs::write(s.path("victim"), b"old").unwrap();
    s.rename(d.nodeid, b"c", ROOT_ID, b"victim")
        .expect("rename over");
    assert_eq!(std::fs::read(s.path("victim")).unwrap(), b"payload");
    assert!(!s.path("d/c").exists());
    // Errors.
    assert_eq!(
        s.rename(ROOT_ID, b"missing", ROOT_ID, b"x").unwrap_err(),
        libc::ENOENT
    );
    s.mkdir(d.nodeid, b"full", 0o755).unwrap();
    std::fs::write(s.path("d/full/x"), b"").unwrap();
    std::fs::create_dir(s.path("empty")).unwrap();
    assert_eq!(
        s.rename(ROOT_ID, b"empty", d.nodeid, b"full").unwrap_err(),
        libc::ENOTEMPTY
    );
    assert_eq!(
        s.rename(ROOT_ID, b"victim", ROOT_ID, b"empty").unwrap_err(),
        libc::EISDIR
    );
    assert_eq!(
        s.rename(ROOT_ID, b"victim", 4242, b"x").unwrap_err(),
        libc::EBADF
    );
    // A directory cannot move into itself.
    assert_eq!(
        s.rename(ROOT_ID, b"d", d.nodeid, b"inside").unwrap_err(),
        libc::EINVAL
    );
    assert!(s.path("d/full/x").exists() && s.path("empty").is_dir());
}

#[test]
fn rename2_noreplace_refuses_an_existing_target() {
    let s = Session::start(&[]);
    std::fs::write(s.path("a"), b"A").unwrap();
    std::fs::write(s.path("b"), b"B").unwrap();
    assert_eq!(
        s.rename2(ROOT_ID, b"a", ROOT_ID, b"b", RENAME_NOREPLACE)
            .unwrap_err(),
        libc::EEXIST
    );
    assert_eq!(std::fs::read(s.path("a")).unwrap(), b"A");
    assert_eq!(std::fs::read(s.path("b")).unwrap(), b"B");
    s.rename2(ROOT_ID, b"a", ROOT_ID, b"c", RENAME_NOREPLACE)
        .expect("noreplace onto a free name");
    assert!(!s.path("a").exists());
    assert_eq!(std::fs::read(s.path("c")).unwrap(), b"A");
    // RENAME2 without flags behaves like RENAME.
    s.rename2(ROOT_ID, b"c", ROOT_ID, b"b", 0)
        .expect("rename2 0");
    assert_eq!(std::fs::read(s.path("b")).unwrap(), b"A");
}

#[test]
fn rename2_exchange_swaps_two_entries() {
    let s = Session::start(&[]);
    std::fs::write(s.path("file"), b"F").unwrap();
    let d = s.mkdir(ROOT_ID, b"dir", 0o755).unwrap();
    std::fs::write(s.path("dir/inner"), b"I").unwrap();
    let f = s.lookup(ROOT_ID, b"file").unwrap();
    s.rename2(ROOT_ID, b"file", d.nodeid, b"inner", RENAME_EXCHANGE)
        .expect("exchange across directories");
    assert_eq!(std::fs::read(s.path("file")).unwrap(), b"I");
    assert_eq!(std::fs::read(s.path("dir/inner")).unwrap(), b"F");
    assert_eq!(s.lookup(d.nodeid, b"inner").unwrap().nodeid, f.nodeid);
    // A file and a directory swap too.
    s.rename2(ROOT_ID, b"file", ROOT_ID, b"dir", RENAME_EXCHANGE)
        .expect("exchange file and directory");
    assert!(s.path("file").is_dir() && s.path("dir").is_file());
    assert_eq!(std::fs::read(s.path("file/inner")).unwrap(), b"F");
    // Exchange needs both names.
    assert_eq!(
        s.rename2(ROOT_ID, b"dir", ROOT_ID, b"nothing", RENAME_EXCHANGE)
            .unwrap_err(),
        libc::ENOENT
    );
    // NOREPLACE and EXCHANGE together are invalid.
    assert_eq!(
        s.rename2(
            ROOT_ID,
            b"dir",
            ROOT_ID,
            b"file",
            RENAME_EXCHANGE | RENAME_NOREPLACE
        )
        .unwrap_err(),
        libc::EINVAL
    );
    assert!(s.path("file").is_dir() && s.path("dir").is_file());
}

#[test]
fn link_adds_a_host_hard_link_to_the_same_nodeid() {
    let s = Session::start(&[]);
    let f = s.host_file("f", b"shared");
    let d = s.mkdir(ROOT_ID, b"d", 0o755).unwrap();
    let l = s.link(f.nodeid, d.nodeid, b"alias").expect("link");
    assert_eq!(l.nodeid, f.nodeid, "one host inode, one nodeid");
    assert_eq!(l.attr.nlink, 2);
    let a = std::fs::metadata(s.path("f")).unwrap();
    let b = std::fs::metadata(s.path("d/alias")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert_eq!(std::fs::read(s.path("d/alias")).unwrap(), b"shared");
    // LINK took a lookup reference: two FORGETs of one are needed to drop the inode.
    s.forget(f.nodeid, 1);
    assert!(s.getattr(f.nodeid).is_ok());
    s.forget(f.nodeid, 1);
    assert_eq!(s.getattr(f.nodeid).unwrap_err(), libc::EBADF);
    // Symlinks can be hard-linked too (the link itself, not its target).
    let sl = s.symlink(ROOT_ID, b"sl", b"f").unwrap();
    s.link(sl.nodeid, ROOT_ID, b"sl2").expect("link a symlink");
    assert_eq!(std::fs::read_link(s.path("sl2")).unwrap().as_os_str(), "f");
    assert_eq!(
        std::fs::symlink_metadata(s.path("sl2")).unwrap().ino(),
        std::fs::symlink_metadata(s.path("sl")).unwrap().ino()
    );
    // Errors: existing name, directories.
    let f = s.lookup(ROOT_ID, b"f").unwrap();
    assert_eq!(
        s.link(f.nodeid, d.nodeid, b"alias").unwrap_err(),
        libc::EEXIST
    );
    assert_eq!(
        s.link(d.nodeid, ROOT_ID, b"dlink").unwrap_err(),
        libc::EPERM
    );
    assert!(!s.path("dlink").exists());
}

#[test]
fn names_resolve_inside_the_share_only() {
    let s = Session::start(&[]);
    // A symlinked directory is not a way out: LOOKUP below it fails (it names the
    // symlink, which is not a directory to look in).
    std::os::unix::fs::symlink("/etc", s.path("etc")).unwrap();
    let etc = s.lookup(ROOT_ID, b"etc").unwrap();
    assert_eq!(s.lookup(etc.nodeid, b"passwd").unwrap_err(), libc::ENOTDIR);
    assert_eq!(s.mkdir(etc.nodeid, b"x", 0o755).unwrap_err(), libc::ENOTDIR);
    assert!(!std::path::Path::new("/etc/x").exists());
    assert_eq!(s.opendir(etc.nodeid).unwrap_err(), libc::ENOTDIR);
}

/// LINK, SYMLINK and MKNOD run as the caller: protected_hardlinks applies to the caller
/// (not to the root daemon), and new inodes belong to the caller.
#[test]
fn link_symlink_mknod_as_a_caller() {
    if !is_root() {
        daxfsd_harness::skip("needs root to act as another uid");
        return;
    }
    let s = Session::start(&[]);
    let dir = s.mkdir(ROOT_ID, b"pub", 0o777).unwrap().nodeid;
    let as_caller = |req: RequestEncoder| req.caller(1000, 1000, 1).finish();
    let req = as_caller(requests::symlink(s.unique(), dir, b"sl", b"target"));
    exact::<EntryOut>(s.send(&req)).expect("symlink as 1000");
    let fifo = libc::S_IFIFO | 0o600;
    let req = as_caller(requests::mknod(s.unique(), dir, b"fifo", fifo, 0, 0));
    exact::<EntryOut>(s.send(&req)).expect("mknod as 1000");
    for name in ["pub/sl", "pub/fifo"] {
        let meta = std::fs::symlink_metadata(s.path(name)).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1000, 1000), "{name}");
    }
    // A device node needs CAP_MKNOD, which the caller's fsuid does not carry.
    let chr = libc::S_IFCHR | 0o600;
    let req = as_caller(requests::mknod(
        s.unique(),
        dir,
        b"null",
        chr,
        encode_dev(1, 3),
        0,
    ));
    assert_eq!(exact::<EntryOut>(s.send(&req)).unwrap_err(), libc::EPERM);
    assert!(!s.path("pub/null").exists());

    // Hard links: the caller may link its own file, not a root-owned 0600 one.
    let mine = s.lookup(dir, b"fifo").unwrap().nodeid;
    std::fs::write(s.path("pub/roots"), b"secret").unwrap();
    std::fs::set_permissions(s.path("pub/roots"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let roots = s.lookup(dir, b"roots").unwrap().nodeid;
    let link = |nodeid: u64, name: &[u8]| {
        let req = as_caller(requests::link(s.unique(), nodeid, dir, name));
        exact::<EntryOut>(s.send(&req))
    };
    link(mine, b"mine2").expect("link own file");
    assert_eq!(
        std::fs::symlink_metadata(s.path("pub/fifo"))
            .unwrap()
            .nlink(),
        2
    );
    if std::fs::read_to_string("/proc/sys/fs/protected_hardlinks").is_ok_and(|v| v.trim() == "1") {
        assert_eq!(link(roots, b"stolen").unwrap_err(), libc::EPERM);
        assert!(!s.path("pub/stolen").exists());
    }
}
