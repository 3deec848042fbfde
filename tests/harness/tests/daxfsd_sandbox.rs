//! The sandbox seen from outside: with `--sandbox namespace` the daemon is PID 1 of its
//! own PID namespace, has its own mount and network namespaces, `/` is the shared
//! directory, seccomp is on (filter mode) with no new privileges, and only the documented
//! capabilities remain, in every set including the bounding set; with `chroot` the same
//! without the namespaces. Inside either, the daemon still serves (including xattrs, which
//! go through its fd directory) and keeps no descriptor of a directory above the share.
//! `--modcaps` changes the kept set in every set (a guest root's MKNOD of a device gets
//! EPERM without `mknod`), and a bad list is refused at start naming the flag.
//! These need root (namespaces, chroot); without it they return early and say so.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{encode_dev, is_root, Session};
use daxfsd_protocol::abi::ROOT_ID;

/// CHOWN, DAC_OVERRIDE, FOWNER, FSETID, SETGID, SETUID, MKNOD, SETFCAP.
const KEPT_CAPS: u64 = 1 << 0 | 1 << 1 | 1 << 3 | 1 << 4 | 1 << 6 | 1 << 7 | 1 << 27 | 1 << 31;
/// DAC_READ_SEARCH, kept for open_by_handle_at unless `--inode-file-handles=never`.
const HANDLE_CAPS: u64 = 1 << 2;
const SYS_ADMIN: u64 = 1 << 21;
const MKNOD: u64 = 1 << 27;
const SETFCAP: u64 = 1 << 31;

fn root_or_skip(test: &str) -> bool {
    if !is_root() {
        daxfsd_harness::skip(&format!("{test}: needs root"));
    }
    is_root()
}

/// The `Key:` line of /proc/<pid>/status, without the key.
fn status_field(pid: u32, key: &str) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {key} in /proc/{pid}/status"))
        .trim()
        .to_string()
}

fn cap_field(pid: u32, key: &str) -> u64 {
    u64::from_str_radix(&status_field(pid, key), 16).expect("hex capability set")
}

fn ns(pid: &str, kind: &str) -> PathBuf {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}")).expect("ns link")
}

fn dev_ino(path: &Path) -> (u64, u64) {
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.dev(), m.ino())
}

/// Seccomp, no-new-privs and every capability set of the daemon (file handles in use).
fn assert_confined(s: &Session, mode: &str) {
    assert_confined_to(s, mode, KEPT_CAPS | HANDLE_CAPS);
}

/// Seccomp, no-new-privs and every capability set of the daemon: `kept`.
fn assert_confined_to(s: &Session, mode: &str, kept: u64) {
    let daemon = s.backend.daemon_pid();
    assert_eq!(
        status_field(daemon, "Seccomp"),
        "2",
        "{mode}: seccomp filter mode"
    );
    assert_eq!(status_field(daemon, "NoNewPrivs"), "1", "{mode}");
    for set in ["CapEff", "CapPrm", "CapBnd"] {
        assert_eq!(
            cap_field(daemon, set),
            kept,
            "{mode}: {set} {:#x}",
            cap_field(daemon, set)
        );
    }
    assert_eq!(cap_field(daemon, "CapInh"), 0, "{mode}");
    assert_eq!(cap_field(daemon, "CapAmb"), 0, "{mode}");
}

/// The daemon's root (and its parent, which a mount root's `..` stays at) is the shared
/// directory, and the files beside the shared directory are out of its reach.
fn assert_rooted_in_share(s: &Session, mode: &str) {
    let daemon = s.backend.daemon_pid();
    let root = PathBuf::from(format!("/proc/{daemon}/root"));
    let share = dev_ino(s.dir());
    assert_eq!(dev_ino(&root.join(".")), share, "{mode}: / is the share");
    assert_eq!(dev_ino(&root.join("..")), share, "{mode}: /.. is the share");
    // backend.stderr sits beside the shared directory in the harness's work dir.
    let beside = s.backend.stderr_path().file_name().unwrap();
    assert!(s.backend.stderr_path().exists());
    assert!(
        !root.join("..").join(beside).exists(),
        "{mode}: reached a host file"
    );
}

/// No descriptor of the daemon is a directory above the shared directory (from which
/// `openat(fd, "..")` would walk the host).
fn assert_no_descriptor_above_share(s: &Session, mode: &str) {
    let daemon = s.backend.daemon_pid();
    let share = s.dir().canonicalize().unwrap();
    let ancestors: Vec<(u64, u64)> = share.ancestors().skip(1).map(dev_ino).collect();
    let mut dirs = 0;
    for entry in std::fs::read_dir(format!("/proc/{daemon}/fd")).expect("fd dir") {
        let link = entry.expect("entry").path();
        let Ok(meta) = std::fs::metadata(&link) else {
            continue;
        };
        if meta.is_dir() {
            dirs += 1;
            assert!(
                !ancestors.contains(&(meta.dev(), meta.ino())),
                "{mode}: {} is a directory above the share",
                link.display()
            );
        }
    }
    // The share's root and the fd directory at least: the check looked at something.
    assert!(dirs >= 2, "{mode}: {dirs} directory descriptors");
}

/// The daemon serves inside the sandbox: reads a host file, creates one the host sees,
/// and reads and writes xattrs (through its fd directory as working directory).
fn assert_serves(s: &Session, mode: &str) {
    s.assert_serving();
    let entry = s.host_file("from-host", b"written on the host");
    let open = s.open(entry.nodeid, libc::O_RDONLY).expect("OPEN");
    assert_eq!(
        s.read(entry.nodeid, open.fh, 0, 64).expect("READ"),
        b"written on the host"
    );
    s.release(entry.nodeid, open.fh).expect("RELEASE");
    let (nodeid, fh) = s.create_file("from-guest");
    assert_eq!(
        s.write(nodeid, fh, 0, b"written by the guest")
            .expect("WRITE"),
        20
    );
    s.release(nodeid, fh).expect("RELEASE");
    assert_eq!(
        std::fs::read(s.path("from-guest")).unwrap(),
        b"written by the guest",
        "{mode}"
    );
    s.setxattr(entry.nodeid, b"user.sandboxed", b"yes", 0)
        .expect("SETXATTR");
    assert_eq!(
        s.getxattr(entry.nodeid, b"user.sandboxed", 16)
            .expect("GETXATTR"),
        common::XattrReply::Data(b"yes".to_vec()),
        "{mode}"
    );
    let mut host = [0u8; 16];
    let n = rustix::fs::getxattr(s.path("from-host"), "user.sandboxed", &mut host)
        .expect("host getxattr");
    assert_eq!(
        &host[..n],
        b"yes",
        "{mode}: the host sees the guest's xattr"
    );
}

#[test]
fn namespace_sandbox_confines_the_daemon() {
    if !root_or_skip("namespace_sandbox_confines_the_daemon") {
        return;
    }
    let s = Session::start(&["--sandbox", "namespace", "--xattr"]);
    let daemon = s.backend.daemon_pid();
    assert_ne!(
        daemon,
        s.backend.pid(),
        "a supervisor runs the sandboxed daemon"
    );
    let nspid = status_field(daemon, "NSpid");
    assert!(
        nspid.ends_with("\t1") || nspid.ends_with(" 1"),
        "NSpid {nspid}"
    );
    let d = daemon.to_string();
    for kind in ["mnt", "pid", "net"] {
        assert_ne!(
            ns(&d, kind),
            ns("self", kind),
            "{kind} namespace shared with the host"
        );
    }
    // No network: only the loopback device exists in the new namespace.
    let dev = std::fs::read_to_string(format!("/proc/{daemon}/net/dev")).expect("net/dev");
    let ifaces: Vec<&str> = dev
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next())
        .collect();
    assert_eq!(ifaces.iter().map(|i| i.trim()).collect::<Vec<_>>(), ["lo"]);
    assert_confined(&s, "namespace");
    assert_rooted_in_share(&s, "namespace");
    assert_no_descriptor_above_share(&s, "namespace");
    assert_serves(&s, "namespace");
    // The supervisor keeps only what it needs to write outside: DAC_OVERRIDE.
    assert_eq!(cap_field(s.backend.pid(), "CapEff"), 1 << 1);
}

#[test]
fn chroot_sandbox_confines_the_daemon() {
    if !root_or_skip("chroot_sandbox_confines_the_daemon") {
        return;
    }
    let s = Session::start(&["--sandbox", "chroot", "--xattr"]);
    let daemon = s.backend.daemon_pid();
    assert_ne!(
        daemon,
        s.backend.pid(),
        "a supervisor runs the sandboxed daemon"
    );
    assert_eq!(ns(&daemon.to_string(), "mnt"), ns("self", "mnt"));
    assert_confined(&s, "chroot");
    assert_eq!(
        dev_ino(Path::new(&format!("/proc/{daemon}/root/."))),
        dev_ino(s.dir())
    );
    assert_no_descriptor_above_share(&s, "chroot");
    assert_serves(&s, "chroot");
}

#[test]
fn without_a_sandbox_seccomp_and_capabilities_still_apply() {
    if !root_or_skip("without_a_sandbox_seccomp_and_capabilities_still_apply") {
        return;
    }
    let s = Session::start(&["--sandbox", "none", "--xattr"]);
    assert_eq!(s.backend.daemon_pid(), s.backend.pid());
    assert_confined(&s, "none");
    assert_serves(&s, "none");
    let s = Session::start(&["--sandbox", "none", "--inode-file-handles=never"]);
    assert_confined_to(&s, "none, never", KEPT_CAPS);
    s.assert_serving();
}

#[test]
fn seccomp_none_installs_no_filter_and_log_installs_one() {
    let s = Session::start(&["--sandbox", "none", "--seccomp", "none"]);
    assert_eq!(status_field(s.backend.daemon_pid(), "Seccomp"), "0");
    s.assert_serving();
    let s = Session::start(&["--sandbox", "none", "--seccomp", "log"]);
    assert_eq!(status_field(s.backend.daemon_pid(), "Seccomp"), "2");
    s.assert_serving();
}

#[test]
fn symlinks_to_the_host_root_are_never_followed() {
    for mode in if is_root() {
        &["namespace", "none"][..]
    } else {
        &["none"][..]
    } {
        let s = Session::start(&["--sandbox", mode]);
        let outside = s.backend.stderr_path().to_owned();
        std::os::unix::fs::symlink("/", s.path("to-root")).unwrap();
        std::os::unix::fs::symlink(&outside, s.path("to-host-file")).unwrap();
        for (name, target) in [
            ("to-root", PathBuf::from("/")),
            ("to-host-file", outside.clone()),
        ] {
            let entry = s.lookup(ROOT_ID, name.as_bytes()).expect("LOOKUP");
            assert_eq!(
                entry.attr.mode & libc::S_IFMT,
                libc::S_IFLNK,
                "{mode}: {name}"
            );
            assert_eq!(
                s.readlink(entry.nodeid).expect("READLINK"),
                target.as_os_str().as_encoded_bytes()
            );
            assert_eq!(
                s.open(entry.nodeid, libc::O_RDONLY).map(|_| ()),
                Err(libc::ELOOP),
                "{mode}: {name}"
            );
            // A hard link to the symlink links the symlink, not its target.
            let link = s
                .link(entry.nodeid, ROOT_ID, format!("{name}-link").as_bytes())
                .expect("LINK");
            assert_eq!(link.attr.mode & libc::S_IFMT, libc::S_IFLNK);
        }
        // A lookup beneath a symlink does not pass through it.
        let to_root = s.lookup(ROOT_ID, b"to-root").expect("LOOKUP").nodeid;
        assert!(
            s.lookup(to_root, b"etc").is_err(),
            "{mode}: looked up through a symlink"
        );
        s.assert_serving();
    }
}

/// MKNOD of a character device (1:3) named `name` by guest root.
fn mknod_device(s: &Session, name: &str) -> Result<(), i32> {
    let mode = libc::S_IFCHR | 0o666;
    s.mknod(ROOT_ID, name.as_bytes(), mode, encode_dev(1, 3))
        .map(|_| ())
}

#[test]
fn modcaps_adds_and_removes_capabilities_in_every_set() {
    if !root_or_skip("modcaps_adds_and_removes_capabilities_in_every_set") {
        return;
    }
    let s = Session::start(&["--sandbox", "namespace", "--modcaps=+sys_admin:-mknod"]);
    assert_ne!(s.backend.daemon_pid(), s.backend.pid(), "sandboxed child");
    let kept = (KEPT_CAPS | HANDLE_CAPS | SYS_ADMIN) & !MKNOD;
    assert_confined_to(&s, "namespace, +sys_admin:-mknod", kept);
    assert_eq!(mknod_device(&s, "null"), Err(libc::EPERM), "without mknod");
    assert!(!s.path("null").exists());
    s.mknod(ROOT_ID, b"fifo", libc::S_IFIFO | 0o644, 0)
        .expect("a fifo needs no capability");
    // The supervisor's set is not changed.
    assert_eq!(cap_field(s.backend.pid(), "CapEff"), 1 << 1);

    let s = Session::start(&["--sandbox", "namespace"]);
    assert_confined(&s, "namespace, no --modcaps");
    mknod_device(&s, "null").expect("MKNOD of a device with mknod");
    assert!(s.path("null").exists());

    let s = Session::start(&[
        "--inode-file-handles=never",
        "-o",
        "modcaps=-dac_read_search:-SETFCAP:+dac_read_search:-dac_read_search",
    ]);
    assert_confined_to(&s, "none, -o modcaps=", KEPT_CAPS & !SETFCAP);
    s.assert_serving();
}

#[test]
fn a_bad_modcaps_list_is_refused_naming_the_flag() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("sock");
    for list in [
        "--modcaps=sys_admin",
        "--modcaps=+no_such_cap",
        "--modcaps=+chown:",
        "--modcaps=-dac_read_search",
    ] {
        let out = std::process::Command::new(common::daxfsd_bin())
            .args(["--socket-path", socket.to_str().unwrap(), "--shared-dir"])
            .arg(dir.path())
            .args(["--sandbox", "none", list])
            .output()
            .expect("run daxfsd");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{list}: {stderr}");
        assert!(stderr.contains("--modcaps"), "{list}: {stderr}");
        assert!(
            !socket.exists(),
            "{list}: no socket before the flags are checked"
        );
    }
}
