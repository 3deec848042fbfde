//! daxfsd started unprivileged with `--uid-map`/`--gid-map`, as libvirt's session mode
//! starts virtiofsd: an ordinary user with subordinate ids (tests/tools/idmap-user.sh
//! creates it, and installs newuidmap/newgidmap) runs the daemon; the maps make it root of
//! its own user namespace, so a guest caller's ids become the mapped host ids when it
//! creates (guest root: the user itself; guest 1000: subordinate id 999 of the range), and
//! attribute replies carry the namespace's ids. A map the user may not have (newuidmap
//! refuses it) stops the daemon with an error naming the flag.
//!
//! These need root (to create the user and start the daemon as it); without root they
//! say so and return, and under CI=true that fails.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;
use daxfsd_harness::{BackendCommand, HarnessError};
use daxfsd_protocol::abi::ROOT_ID;

/// The user the daemon runs as, and its subordinate ranges.
#[derive(Debug)]
struct IdmapUser {
    uid: u32,
    gid: u32,
    subuid: u32,
    subuid_count: u32,
    subgid: u32,
    subgid_count: u32,
}

/// The test user (created once per test executable), or `None` (skipped) when it cannot
/// be had here.
fn idmap_user() -> Option<&'static IdmapUser> {
    static USER: OnceLock<Result<IdmapUser, String>> = OnceLock::new();
    if !is_root() {
        daxfsd_harness::skip(
            "needs root to create a user with subordinate ids and run daxfsd as it",
        );
        return None;
    }
    match USER.get_or_init(prepare_user) {
        Ok(user) => Some(user),
        Err(reason) => {
            daxfsd_harness::skip(reason);
            None
        }
    }
}

/// Runs tests/tools/idmap-user.sh and reads its line.
fn prepare_user() -> Result<IdmapUser, String> {
    let script = daxfsd_harness::process::repo_root().join("tests/tools/idmap-user.sh");
    let output = Command::new(&script)
        .output()
        .map_err(|e| format!("{}: {e}", script.display()))?;
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        return Err(format!(
            "{} failed ({}): {stderr}",
            script.display(),
            output.status
        ));
    }
    let line = String::from_utf8_lossy(&output.stdout);
    let fields: Vec<u32> = line
        .split_whitespace()
        .skip(1)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("idmap-user.sh printed {line:?}: {e}"))?;
    let [uid, gid, subuid, subuid_count, subgid, subgid_count] = fields[..] else {
        return Err(format!("idmap-user.sh printed {line:?}"));
    };
    Ok(IdmapUser {
        uid,
        gid,
        subuid,
        subuid_count,
        subgid,
        subgid_count,
    })
}

/// The daxfsd binary, copied where any user may run it (the checkout may not be). One
/// fixed place, replaced by each test process (a copy under a temporary name, then a
/// rename), so that runs leave one copy behind, not one each (a static's temporary
/// directory is never dropped).
fn daxfsd_for_anyone() -> PathBuf {
    static COPY: OnceLock<PathBuf> = OnceLock::new();
    COPY.get_or_init(|| {
        let dir = std::env::temp_dir().join("daxfsd-uid-map-bin");
        std::fs::create_dir_all(&dir).expect("creating the binary's directory");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = dir.join("daxfsd");
        let partial = dir.join(format!("daxfsd.{}", std::process::id()));
        std::fs::copy(daxfsd_bin(), &partial).expect("copying daxfsd");
        std::fs::rename(&partial, &path).expect("renaming the copy into place");
        path
    })
    .clone()
}

/// `daxfsd` on a fresh shared directory with `extra` flags, run as `user`.
fn command(user: &IdmapUser, extra: &[String]) -> BackendCommand {
    BackendCommand::new(daxfsd_for_anyone())
        .args(["--socket-path", "{socket}", "--shared-dir", "{shared_dir}"])
        .args(extra.iter().cloned())
        .env("NO_COLOR", "1")
        .run_as(user.uid, user.gid)
}

/// libvirt's session-mode maps: the user is root of the namespace, and its subordinate
/// ranges are the namespace's ids from 1.
fn session_maps(user: &IdmapUser) -> Vec<String> {
    vec![
        format!("--uid-map=:0:{}:1:", user.uid),
        format!("--uid-map=:1:{}:{}:", user.subuid, user.subuid_count),
        format!("--gid-map=:0:{}:1:", user.gid),
        format!("--gid-map=:1:{}:{}:", user.subgid, user.subgid_count),
    ]
}

/// A daemon started with `extra`, connected and initialised; the shared directory is
/// writable by every guest id.
fn session(user: &IdmapUser, extra: &[String]) -> Session {
    let backend = command(user, extra)
        .spawn()
        .unwrap_or_else(|e| panic!("{}", daxfsd_harness::error_chain(&e)));
    let s = Session::connect(backend, 1);
    s.init(LINUX_INIT_FLAGS)
        .unwrap_or_else(|e| panic!("INIT failed with errno {e}\n{}", s.backend.diagnostics()));
    std::fs::set_permissions(s.dir(), std::fs::Permissions::from_mode(0o777)).unwrap();
    s
}

fn host_owner(s: &Session, name: &str) -> (u32, u32) {
    let meta = std::fs::symlink_metadata(s.path(name)).unwrap();
    (meta.uid(), meta.gid())
}

/// The id the kernel shows for a host owner outside the namespace's maps.
fn overflow(kind: &str) -> u32 {
    std::fs::read_to_string(format!("/proc/sys/kernel/overflow{kind}"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65534)
}

#[test]
fn session_mode_maps_guest_ids_through_the_user_namespace() {
    let Some(user) = idmap_user() else { return };
    // No --sandbox: the maps choose namespace (daxfsd's unprivileged default is none).
    let s = session(user, &session_maps(user));
    let daemon = s.backend.daemon_pid();
    assert_ne!(
        daemon,
        s.backend.pid(),
        "a supervisor runs the sandboxed daemon"
    );
    let uid_map = std::fs::read_to_string(format!("/proc/{daemon}/uid_map")).unwrap();
    let lines: Vec<Vec<&str>> = uid_map
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let own = user.uid.to_string();
    let sub = user.subuid.to_string();
    assert!(lines.contains(&vec!["0", &own, "1"]), "uid_map {uid_map}");
    assert!(
        lines.iter().any(|l| l[..2] == ["1", &sub]),
        "uid_map {uid_map}"
    );

    let (root_entry, _) = s
        .create(ROOT_ID, b"by-guest-root", libc::O_RDWR, 0o644)
        .expect("CREATE as guest root");
    assert_eq!(host_owner(&s, "by-guest-root"), (user.uid, user.gid));
    assert_eq!(
        (root_entry.attr.uid, root_entry.attr.gid),
        (0, 0),
        "CREATE reply"
    );

    let (entry, _) = s
        .create_as(ROOT_ID, b"by-guest-1000", libc::O_RDWR, 0o644, 1000, 1000)
        .expect("CREATE as guest 1000");
    assert_eq!(
        host_owner(&s, "by-guest-1000"),
        (user.subuid + 999, user.subgid + 999),
        "guest 1000 is subordinate id 999 on the host"
    );
    assert_eq!(
        (entry.attr.uid, entry.attr.gid),
        (1000, 1000),
        "CREATE reply"
    );
    let attr = s.getattr(entry.nodeid).expect("GETATTR");
    assert_eq!(
        (attr.attr.uid, attr.attr.gid),
        (1000, 1000),
        "GETATTR reply"
    );
    let looked_up = s.lookup(ROOT_ID, b"by-guest-root").expect("LOOKUP");
    assert_eq!(
        (looked_up.attr.uid, looked_up.attr.gid),
        (0, 0),
        "LOOKUP reply"
    );

    // Host root is mapped into no range: the guest sees the overflow ids.
    let host_root = s.host_file("by-host-root", b"x");
    assert_eq!(
        (host_root.attr.uid, host_root.attr.gid),
        (overflow("uid"), overflow("gid"))
    );
    // A guest id outside every range cannot own a file.
    let unmapped = user.subuid_count + 1;
    assert_eq!(
        s.create_as(ROOT_ID, b"unmapped", libc::O_RDWR, 0o644, unmapped, 0)
            .unwrap_err(),
        libc::EPERM
    );
    assert!(!s.path("unmapped").exists());
    s.assert_serving();
}

#[test]
fn without_a_gid_map_the_daemons_own_gid_maps_to_itself() {
    let Some(user) = idmap_user() else { return };
    // One id, the user's own: written without newuidmap, as virtiofsd does.
    let extra = [
        "--sandbox".to_owned(),
        "namespace".to_owned(),
        format!("--uid-map=:0:{}:1:", user.uid),
    ];
    let s = session(user, &extra);
    let daemon = s.backend.daemon_pid();
    let gid_map = std::fs::read_to_string(format!("/proc/{daemon}/gid_map")).unwrap();
    let fields: Vec<&str> = gid_map.split_whitespace().collect();
    let own = user.gid.to_string();
    assert_eq!(
        fields,
        [own.as_str(), own.as_str(), "1"],
        "gid_map {gid_map}"
    );
    let (entry, _) = s
        .create_as(ROOT_ID, b"f", libc::O_RDWR, 0o644, 0, user.gid)
        .expect("CREATE as guest root, group the user's");
    assert_eq!(host_owner(&s, "f"), (user.uid, user.gid));
    assert_eq!((entry.attr.uid, entry.attr.gid), (0, user.gid));
    assert_eq!(
        s.create_as(ROOT_ID, b"g", libc::O_RDWR, 0o644, 0, 0)
            .unwrap_err(),
        libc::EPERM,
        "gid 0 is not mapped"
    );
}

/// Starts a daemon that must fail to start; its exit status and stderr.
fn refused(user: &IdmapUser, extra: &[String]) -> (ExitStatus, String) {
    match command(user, extra).spawn() {
        // The socket appeared before the sandbox failed.
        Ok(backend) => {
            let status = backend
                .wait_exit(Duration::from_secs(20))
                .unwrap_or_else(|e| panic!("{}", backend.report(&e)));
            assert!(!backend.socket_path().exists(), "the socket file is left");
            (status, backend.stderr())
        }
        Err(HarnessError::BackendExited { status, stderr, .. }) => (status, stderr),
        Err(e) => panic!("{}", daxfsd_harness::error_chain(&e)),
    }
}

#[test]
fn a_map_the_user_may_not_have_stops_the_daemon_naming_the_flag() {
    let Some(user) = idmap_user() else { return };
    // Beyond the user's subordinate range: newuidmap refuses.
    let beyond = user.subuid.saturating_add(user.subuid_count);
    let extra = [
        format!("--uid-map=:0:{}:1:", user.uid),
        format!("--uid-map=:1:{beyond}:10:"),
    ];
    let (status, stderr) = refused(user, &extra);
    assert!(!status.success(), "{status}\n{stderr}");
    assert!(
        stderr.contains("--uid-map")
            && stderr.contains("newuidmap")
            && stderr.contains(&beyond.to_string()),
        "{stderr}"
    );
    // Host gid 0 is no gid of the user's.
    let (status, stderr) = refused(user, &["--gid-map=:0:0:1:".to_owned()]);
    assert!(!status.success(), "{status}\n{stderr}");
    assert!(
        stderr.contains("--gid-map") && stderr.contains("newgidmap"),
        "{stderr}"
    );
    // Another sandbox than namespace is refused before anything starts.
    let extra = [
        "--sandbox=none".to_owned(),
        format!("--uid-map=:0:{}:1:", user.uid),
    ];
    let (status, stderr) = refused(user, &extra);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("--uid-map needs --sandbox namespace"),
        "{stderr}"
    );
    // As root the flags are refused (the daemon would act as any id itself).
    let output = Command::new(daxfsd_bin())
        .args(["--socket-path=/nonexistent/s", "--shared-dir=/"])
        .arg(format!("--uid-map=:0:{}:1:", user.uid))
        .output()
        .expect("daxfsd");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--uid-map maps ids"), "{stderr}");
}
