//! Stopping daxfsd: SIGTERM and SIGINT end the session, write the final metrics, remove
//! the socket file and exit 0, with and without the namespace sandbox (where the signal
//! goes to the supervisor, which forwards it), while a frontend is connected and while the
//! daemon waits for one.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{is_root, Session};
use daxfsd_harness::BackendProcess;
use daxfsd_protocol::abi::ROOT_ID;
use rustix::process::Signal;

/// How long a stop may take: ending a session is a few system calls.
const STOP_BOUND: Duration = Duration::from_secs(5);

fn signal(backend: &BackendProcess, signal: Signal) {
    let pid = rustix::process::Pid::from_raw(backend.pid() as i32).expect("pid");
    rustix::process::kill_process(pid, signal).expect("kill");
}

/// Sends `sig` and checks the daemon exits 0 within the bound, leaving no socket file.
fn stops_cleanly(backend: &BackendProcess, sig: Signal) {
    let socket = backend.socket_path().to_owned();
    assert!(socket.exists(), "socket missing before the signal");
    let sent = Instant::now();
    signal(backend, sig);
    let status = backend
        .wait_exit(STOP_BOUND)
        .unwrap_or_else(|e| panic!("{}", backend.report(&e)));
    let took = sent.elapsed();
    assert!(
        status.success(),
        "{sig:?}: exit {status} after {took:?}\n{}",
        backend.diagnostics()
    );
    assert!(
        !socket.exists(),
        "{sig:?}: socket file left behind\n{}",
        backend.diagnostics()
    );
    assert!(
        backend.stderr().contains("stopped"),
        "no 'stopped' line\n{}",
        backend.diagnostics()
    );
}

/// The modes to test: `none` always, `namespace` when the tests run as root.
fn modes() -> Vec<&'static str> {
    if is_root() {
        vec!["none", "namespace"]
    } else {
        vec!["none"]
    }
}

fn metrics_value(path: &Path, name: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

fn serving_session_stops_on(sig: Signal) {
    for mode in modes() {
        let metrics = tempfile::tempdir().expect("tempdir");
        let metrics_file = metrics.path().join("daxfsd.prom");
        let s = Session::start(&[
            "--sandbox",
            mode,
            "--metrics-file",
            metrics_file.to_str().unwrap(),
        ]);
        // Requests served before the signal: the final snapshot must count them
        // (INIT, this GETATTR and the one in assert_serving).
        s.getattr(ROOT_ID).expect("GETATTR");
        s.assert_serving();
        stops_cleanly(&s.backend, sig);
        assert_eq!(
            metrics_value(&metrics_file, "daxfsd_requests_total"),
            Some(3),
            "{mode}: the final metrics\n{}",
            s.backend.diagnostics()
        );
        assert!(!metrics_file.with_extension("prom.tmp").exists());
    }
}

#[test]
fn sigterm_while_a_frontend_is_connected_stops_cleanly() {
    serving_session_stops_on(Signal::TERM);
}

#[test]
fn sigint_while_a_frontend_is_connected_stops_cleanly() {
    serving_session_stops_on(Signal::INT);
}

#[test]
fn sigterm_while_waiting_for_a_frontend_stops_cleanly() {
    for mode in modes() {
        let backend = daxfsd_harness::BackendCommand::daxfsd_sandboxed(common::daxfsd_bin(), mode)
            .spawn()
            .unwrap_or_else(|e| panic!("{}", daxfsd_harness::error_chain(&e)));
        stops_cleanly(&backend, Signal::TERM);
    }
}

#[test]
fn sigint_while_waiting_for_a_frontend_stops_cleanly() {
    for mode in modes() {
        let backend = daxfsd_harness::BackendCommand::daxfsd_sandboxed(common::daxfsd_bin(), mode)
            .spawn()
            .unwrap_or_else(|e| panic!("{}", daxfsd_harness::error_chain(&e)));
        stops_cleanly(&backend, Signal::INT);
    }
}

#[test]
fn a_frontend_that_leaves_still_ends_the_daemon_with_status_0() {
    for mode in modes() {
        let s = Session::start(&["--sandbox", mode]);
        s.assert_serving();
        let Session { backend, dev, .. } = s;
        dev.disconnect();
        let status = backend
            .wait_exit(STOP_BOUND)
            .unwrap_or_else(|e| panic!("{}", backend.report(&e)));
        assert!(
            status.success(),
            "{mode}: {status}\n{}",
            backend.diagnostics()
        );
        assert!(
            !backend.socket_path().exists(),
            "{mode}: socket left behind"
        );
    }
}

#[test]
fn the_socket_is_private_to_the_daemon_user() {
    use std::os::unix::fs::PermissionsExt;
    let s = Session::start(&[]);
    let mode = std::fs::metadata(s.backend.socket_path())
        .expect("socket metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "socket mode {mode:o}");
}

#[test]
fn a_regular_file_at_the_socket_path_is_not_replaced() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("not-a-socket");
    std::fs::write(&path, b"precious").expect("write");
    let out = std::process::Command::new(common::daxfsd_bin())
        .args(["--socket-path", path.to_str().unwrap(), "--shared-dir"])
        .arg(dir.path())
        .args(["--sandbox", "none"])
        .output()
        .expect("run daxfsd");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("is not a socket"), "{stderr}");
    assert_eq!(std::fs::read(&path).expect("read"), b"precious");
}

#[test]
fn a_window_flag_without_a_window_is_refused_naming_both_flags() {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("sock");
    for window_flag in [
        &["--inode-dax", "min-size=1M"][..],
        &["--dax-protocol", "legacy"],
    ] {
        let out = std::process::Command::new(common::daxfsd_bin())
            .args(["--socket-path", socket.to_str().unwrap(), "--shared-dir"])
            .arg(dir.path())
            .args(["--sandbox", "none"])
            .args(window_flag)
            .output()
            .expect("run daxfsd");
        assert_eq!(out.status.code(), Some(2), "{window_flag:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(window_flag[0]) && stderr.contains("--cache-size"),
            "{window_flag:?}: {stderr}"
        );
        assert!(!socket.exists(), "no socket before the flags are checked");
    }
}

/// A second daemon given a socket path a daemon serves finds `PATH.pid` locked and exits
/// before it replaces the socket (virtiofsd's pid file): the first keeps serving on it.
#[test]
fn a_second_daemon_on_the_same_socket_path_is_refused() {
    for mode in modes() {
        let first = daxfsd_harness::BackendCommand::daxfsd_sandboxed(common::daxfsd_bin(), mode)
            .spawn()
            .unwrap_or_else(|e| panic!("{}", daxfsd_harness::error_chain(&e)));
        let socket = first.socket_path().to_owned();
        let pid_file = {
            let mut name = socket.clone().into_os_string();
            name.push(".pid");
            std::path::PathBuf::from(name)
        };
        let written = std::fs::read_to_string(&pid_file).expect("the pid file");
        assert_eq!(written, format!("{}\n", first.pid()), "{mode}");
        let before = std::fs::metadata(&socket).expect("socket").ino();
        let out = std::process::Command::new(common::daxfsd_bin())
            .args(["--socket-path", socket.to_str().unwrap(), "--shared-dir"])
            .arg(first.shared_dir())
            .args(["--sandbox", mode])
            .output()
            .expect("run a second daxfsd");
        assert_eq!(out.status.code(), Some(1), "{mode}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let want = format!(
            "another daemon (pid {}) serves this socket path",
            first.pid()
        );
        assert!(stderr.contains(&want), "{mode}: {stderr}");
        let after = std::fs::metadata(&socket)
            .expect("socket still there")
            .ino();
        assert_eq!(
            before, after,
            "{mode}: the first daemon's socket was replaced"
        );
        let s = Session::connect(first, 1);
        s.init(common::LINUX_INIT_FLAGS)
            .expect("INIT on the first daemon");
        s.assert_serving();
        stops_cleanly(&s.backend, Signal::TERM);
    }
}
