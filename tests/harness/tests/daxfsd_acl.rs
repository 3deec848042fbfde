//! daxfsd over its socket: `--posix-acl` (FUSE_POSIX_ACL with DONT_MASK and
//! SETXATTR_EXT: the umask applied by the daemon unless a default ACL replaces it,
//! SETXATTR_ACL_KILL_SGID) and `--security-label` (FUSE_SECURITY_CTX: the context each
//! creating request carries is set on the new host inode), as virtiofsd 1.14.
//!
//! Once these are agreed the requests have other layouts than the plain helpers send,
//! so the requests here are built with the protocol crate's builders.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::*;
use daxfsd_harness::client::decode;
use daxfsd_protocol::abi::*;

/// The flags ACLs need.
const ACL: u64 = POSIX_ACL | DONT_MASK | SETXATTR_EXT;

// Tags of a `posix_acl_xattr_entry`.
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;

/// An ACL in the `system.posix_acl_*` format: version 2, then (tag, perm, id).
fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut out = 2u32.to_le_bytes().to_vec();
    for &(tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

fn agreed(out: &InitOut) -> u64 {
    u64::from(out.flags) | (u64::from(out.flags2) << 32)
}

fn mode_of(s: &Session, rel: &str) -> u32 {
    std::fs::symlink_metadata(s.path(rel)).unwrap().mode() & 0o7777
}

fn host_xattr(s: &Session, rel: &str, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::lgetxattr(s.path(rel), name, &mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

fn mkdir_req(s: &Session, parent: u64, name: &[u8], mode: u32, umask: u32) -> Vec<u8> {
    requests::mkdir(s.unique(), parent, name, mode, umask).finish()
}

fn entry(s: &Session, request: &[u8]) -> FuseResult<EntryOut> {
    exact::<EntryOut>(s.send(request))
}

#[test]
fn auto_agrees_posix_acls_only_when_the_guest_offers_all_three_flags() {
    let s = Session::start_uninit(&["--posix-acl=auto"]);
    let out = s.init(LINUX_INIT_FLAGS).expect("INIT");
    assert_eq!(agreed(&out) & ACL, ACL, "agreed {:#x}", agreed(&out));
    assert_eq!(agreed(&out) & SECURITY_CTX, 0);
    // A guest without SETXATTR_EXT gets none of them, and is served.
    let out = s.init(LINUX_INIT_FLAGS & !SETXATTR_EXT).expect("INIT");
    assert_eq!(agreed(&out) & ACL, 0);
    s.assert_serving();
}

#[test]
fn always_refuses_a_guest_without_posix_acls() {
    for flag in ["--posix-acl", "--posix-acl=always"] {
        let s = Session::start_uninit(&[flag]);
        assert_eq!(
            s.init(LINUX_INIT_FLAGS & !POSIX_ACL).unwrap_err(),
            libc::EPROTO
        );
        assert_eq!(s.getattr(ROOT_ID).unwrap_err(), libc::EIO, "no session");
        let out = s.init(LINUX_INIT_FLAGS).expect("INIT");
        assert_eq!(agreed(&out) & ACL, ACL);
    }
}

#[test]
fn the_umask_applies_unless_a_default_acl_replaces_it() {
    let s = Session::start(&["--posix-acl=auto"]);
    // No default ACL: the daemon applies the guest's umask.
    let plain = entry(&s, &mkdir_req(&s, ROOT_ID, b"plain", 0o777, 0o022)).expect("MKDIR");
    assert_eq!(mode_of(&s, "plain"), 0o755);
    let node = requests::mknod(
        s.unique(),
        plain.nodeid,
        b"n",
        libc::S_IFREG | 0o666,
        0,
        0o027,
    );
    entry(&s, &node.finish()).expect("MKNOD");
    assert_eq!(mode_of(&s, "plain/n"), 0o640);
    let flags = (libc::O_CREAT | libc::O_RDWR) as u32;
    let create = requests::create(
        s.unique(),
        plain.nodeid,
        b"f",
        flags,
        libc::S_IFREG | 0o666,
        0o077,
    );
    decode::entry_open(s.send(&create.finish()))
        .unwrap()
        .expect("CREATE");
    assert_eq!(mode_of(&s, "plain/f"), 0o600);

    // A minimal default ACL granting everything: the umask is ignored.
    std::fs::create_dir(s.path("open")).unwrap();
    let everything = acl(&[
        (USER_OBJ, 7, u32::MAX),
        (GROUP_OBJ, 7, u32::MAX),
        (OTHER, 7, u32::MAX),
    ]);
    let set = |rel: &str, name: &str, value: &[u8]| {
        rustix::fs::setxattr(s.path(rel), name, value, rustix::fs::XattrFlags::empty()).unwrap()
    };
    set("open", "system.posix_acl_default", &everything);
    let open = s.lookup(ROOT_ID, b"open").unwrap();
    entry(&s, &mkdir_req(&s, open.nodeid, b"d", 0o777, 0o022)).expect("MKDIR");
    assert_eq!(mode_of(&s, "open/d"), 0o777);
    assert!(
        host_xattr(&s, "open/d", "system.posix_acl_default").is_some(),
        "inherited"
    );

    // An extended default ACL: the new directory gets it as its access ACL too, and
    // its mode from the ACL masked by the requested mode, not by the umask.
    std::fs::create_dir(s.path("named")).unwrap();
    let named = acl(&[
        (USER_OBJ, 7, u32::MAX),
        (USER, 7, 1234),
        (GROUP_OBJ, 5, u32::MAX),
        (MASK, 7, u32::MAX),
        (OTHER, 5, u32::MAX),
    ]);
    set("named", "system.posix_acl_default", &named);
    let parent = s.lookup(ROOT_ID, b"named").unwrap();
    entry(&s, &mkdir_req(&s, parent.nodeid, b"d", 0o777, 0o077)).expect("MKDIR");
    assert_eq!(mode_of(&s, "named/d"), 0o775);
    assert!(host_xattr(&s, "named/d", "system.posix_acl_access").is_some());
}

#[test]
fn without_posix_acls_the_umask_is_the_guests() {
    // The guest applied it already: the daemon ignores it, as before.
    for args in [&[][..], &["--posix-acl=auto"]] {
        let s = Session::start_uninit(args);
        s.init(LINUX_INIT_FLAGS & !ACL).expect("INIT");
        entry(&s, &mkdir_req(&s, ROOT_ID, b"d", 0o777, 0o022)).expect("MKDIR");
        assert_eq!(mode_of(&s, "d"), 0o777, "{args:?}");
    }
}

#[test]
fn setting_the_access_acl_with_kill_sgid_clears_setgid() {
    let s = Session::start(&["--posix-acl=auto"]);
    let minimal = acl(&[
        (USER_OBJ, 7, u32::MAX),
        (GROUP_OBJ, 5, u32::MAX),
        (OTHER, 5, u32::MAX),
    ]);
    for (name, flags, kept) in [
        ("kill", SETXATTR_ACL_KILL_SGID, 0),
        ("keep", 0, libc::S_ISGID),
    ] {
        let e = s.host_file(name, b"x");
        std::fs::set_permissions(s.path(name), std::fs::Permissions::from_mode(0o2775)).unwrap();
        let req = requests::setxattr_ext(
            s.unique(),
            e.nodeid,
            b"system.posix_acl_access",
            &minimal,
            0,
            flags,
        );
        decode::empty(s.send(&req.finish()))
            .unwrap()
            .expect("SETXATTR");
        assert_eq!(mode_of(&s, name), 0o755 | kept, "{name}");
    }
    // Another attribute with the flag leaves the bit alone.
    let e = s.host_file("other", b"x");
    std::fs::set_permissions(s.path("other"), std::fs::Permissions::from_mode(0o2775)).unwrap();
    let req = requests::setxattr_ext(
        s.unique(),
        e.nodeid,
        b"user.k",
        b"v",
        0,
        SETXATTR_ACL_KILL_SGID,
    );
    decode::empty(s.send(&req.finish()))
        .unwrap()
        .expect("SETXATTR");
    assert_eq!(mode_of(&s, "other"), 0o2775);
    // Undefined setxattr_flags bits are refused.
    let req = requests::setxattr_ext(s.unique(), e.nodeid, b"user.k", b"v", 0, 1 << 9);
    assert_eq!(
        decode::empty(s.send(&req.finish())).unwrap().unwrap_err(),
        libc::EINVAL
    );
}

/// The security context extension naming `name` = `value`.
fn label(name: &[u8], value: &[u8]) -> Vec<u8> {
    requests::security_context(Some((name, value)))
}

#[test]
fn security_labels_are_agreed_as_asked() {
    let s = Session::start_uninit(&["--security-label=auto"]);
    let out = s.init(LINUX_INIT_FLAGS).expect("INIT");
    assert_eq!(agreed(&out) & (SECURITY_CTX | ACL), SECURITY_CTX);
    let out = s.init(LINUX_INIT_FLAGS & !SECURITY_CTX).expect("INIT");
    assert_eq!(agreed(&out) & SECURITY_CTX, 0);
    let s = Session::start_uninit(&["--security-label"]);
    assert_eq!(
        s.init(LINUX_INIT_FLAGS & !SECURITY_CTX).unwrap_err(),
        libc::EPROTO
    );
}

#[test]
fn each_creating_request_labels_its_new_inode() {
    let s = Session::start(&["--security-label=auto"]);
    let flags = (libc::O_CREAT | libc::O_RDWR) as u32;
    let create = requests::create(s.unique(), ROOT_ID, b"f", flags, libc::S_IFREG | 0o644, 0)
        .extension(&label(b"user.label", b"file_t"));
    decode::entry_open(s.send(&create.finish()))
        .unwrap()
        .expect("CREATE");
    assert_eq!(
        host_xattr(&s, "f", "user.label").as_deref(),
        Some(&b"file_t"[..])
    );
    let mkdir = requests::mkdir(s.unique(), ROOT_ID, b"d", 0o755, 0)
        .extension(&label(b"user.label", b"dir_t"));
    entry(&s, &mkdir.finish()).expect("MKDIR");
    assert_eq!(
        host_xattr(&s, "d", "user.label").as_deref(),
        Some(&b"dir_t"[..])
    );
    let mknod = requests::mknod(s.unique(), ROOT_ID, b"n", libc::S_IFREG | 0o600, 0, 0)
        .extension(&label(b"user.label", b"node_t"));
    entry(&s, &mknod.finish()).expect("MKNOD");
    assert_eq!(
        host_xattr(&s, "n", "user.label").as_deref(),
        Some(&b"node_t"[..])
    );
    // No LSM label: created without one.
    let none = requests::mkdir(s.unique(), ROOT_ID, b"bare", 0o755, 0)
        .extension(&requests::security_context(None));
    entry(&s, &none.finish()).expect("MKDIR");
    assert_eq!(host_xattr(&s, "bare", "user.label"), None);
}

#[test]
fn a_symlink_itself_is_labelled() {
    if !is_root() {
        eprintln!("skipped: trusted.* needs a root daemon");
        return;
    }
    // trusted.* (like security.* without an LSM) needs CAP_SYS_ADMIN, which the
    // daemon drops unless told to keep it.
    let s = Session::start(&["--security-label=auto", "--modcaps=+sys_admin"]);
    let symlink = requests::symlink(s.unique(), ROOT_ID, b"l", b"absent")
        .extension(&label(b"trusted.label", b"link_t"));
    entry(&s, &symlink.finish()).expect("SYMLINK");
    assert_eq!(
        host_xattr(&s, "l", "trusted.label").as_deref(),
        Some(&b"link_t"[..])
    );
}

#[test]
fn an_unsettable_label_undoes_the_creation() {
    let s = Session::start(&["--security-label=auto"]);
    // user.* is refused on a symlink (EPERM): the symlink is removed again.
    let symlink =
        requests::symlink(s.unique(), ROOT_ID, b"l", b"t").extension(&label(b"user.label", b"x"));
    assert_eq!(entry(&s, &symlink.finish()).unwrap_err(), libc::EPERM);
    assert!(
        std::fs::symlink_metadata(s.path("l")).is_err(),
        "the symlink stayed"
    );
    // An unknown namespace: the directory is removed again.
    let mkdir = requests::mkdir(s.unique(), ROOT_ID, b"d", 0o755, 0)
        .extension(&label(b"bogus.label", b"x"));
    assert_eq!(entry(&s, &mkdir.finish()).unwrap_err(), libc::EOPNOTSUPP);
    assert!(!s.path("d").exists(), "the directory stayed");
    s.assert_serving();
}

#[test]
fn create_labels_only_a_file_it_made() {
    let s = Session::start(&["--security-label=auto"]);
    std::fs::write(s.path("old"), b"x").unwrap();
    let flags = (libc::O_CREAT | libc::O_RDWR) as u32;
    let create = requests::create(s.unique(), ROOT_ID, b"old", flags, libc::S_IFREG | 0o644, 0)
        .extension(&label(b"user.label", b"new_t"));
    decode::entry_open(s.send(&create.finish()))
        .unwrap()
        .expect("CREATE of an existing file");
    assert_eq!(host_xattr(&s, "old", "user.label"), None);
    // With O_EXCL it is EEXIST, as without a label.
    let excl = requests::create(
        s.unique(),
        ROOT_ID,
        b"old",
        flags | libc::O_EXCL as u32,
        libc::S_IFREG | 0o644,
        0,
    )
    .extension(&label(b"user.label", b"new_t"));
    assert_eq!(
        decode::entry_open(s.send(&excl.finish()))
            .unwrap()
            .unwrap_err(),
        libc::EEXIST
    );
}

#[test]
fn a_creating_request_without_its_context_is_malformed() {
    let s = Session::start(&["--security-label=auto"]);
    assert_eq!(
        entry(&s, &mkdir_req(&s, ROOT_ID, b"d", 0o755, 0)).unwrap_err(),
        libc::EINVAL
    );
    assert!(!s.path("d").exists());
    // A context whose value runs past its record.
    let mut ext = label(b"user.label", b"v");
    ext[8..12].copy_from_slice(&64u32.to_ne_bytes());
    let bad = requests::mkdir(s.unique(), ROOT_ID, b"d", 0o755, 0).extension(&ext);
    assert_eq!(entry(&s, &bad.finish()).unwrap_err(), libc::EINVAL);
    assert!(!s.path("d").exists());
    s.assert_serving();
}
