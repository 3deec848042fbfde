//! Backend process management and handshake failure paths, with stand-in programs.

use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use daxfsd_harness::{BackendCommand, Device, DeviceConfig, HarnessError};

#[test]
fn placeholders_are_substituted_and_an_early_exit_reports_stderr() {
    let err = BackendCommand::new("sh")
        .args([
            "-c",
            "echo socket=$0 dir=$1 >&2; exit 3",
            "{socket}",
            "{shared_dir}",
        ])
        .startup_timeout(Duration::from_secs(5))
        .spawn()
        .unwrap_err();
    match err {
        HarnessError::BackendExited { status, stderr, .. } => {
            assert_eq!(status.code(), Some(3));
            let line = stderr.trim();
            assert!(line.starts_with("socket=/"), "{line}");
            assert!(line.contains("/vhost-user-fs.sock dir=/"), "{line}");
            assert!(line.ends_with("/shared"), "{line}");
        }
        other => panic!("expected BackendExited, got {other:?}"),
    }
}

#[test]
fn startup_timeout_is_bounded_and_the_process_is_killed() {
    let started = Instant::now();
    let err = BackendCommand::new("sleep")
        .arg("30")
        .startup_timeout(Duration::from_millis(300))
        .spawn()
        .unwrap_err();
    assert!(matches!(err, HarnessError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn missing_program_is_a_spawn_error() {
    let err = BackendCommand::new("/nonexistent/daxfsd")
        .spawn()
        .unwrap_err();
    assert!(matches!(err, HarnessError::Spawn { .. }), "{err:?}");
}

#[test]
fn a_backend_that_creates_its_socket_is_found_and_killed_on_drop() {
    // `sh` cannot bind a unix socket; python3 can, and is on every CI image we use. Skip
    // when absent rather than fake it.
    if std::process::Command::new("python3")
        .arg("--version")
        .output()
        .is_err()
    {
        daxfsd_harness::skip("python3 not available");
        return;
    }
    let script = "import socket,sys,time\n\
                  s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)\n\
                  print('listening', sys.argv[2], flush=True)\n\
                  time.sleep(60)";
    let backend = BackendCommand::new("python3")
        .args(["-c", script, "{socket}", "{shared_dir}"])
        .spawn()
        .unwrap();
    let pid = backend.pid();
    assert!(backend.socket_path().exists());
    assert!(backend.shared_dir().is_dir());
    // Give python a moment to flush.
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        backend
            .stdout()
            .contains(&format!("listening {}", backend.shared_dir().display())),
        "{}",
        backend.diagnostics()
    );
    let workdir = backend.workdir().to_path_buf();
    drop(backend);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    assert!(!workdir.exists());
}

/// A "backend" that accepts the connection and never answers: the handshake must fail
/// within the timeout.
#[test]
fn a_silent_backend_fails_the_handshake_within_the_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    let holder = std::thread::spawn(move || {
        let (conn, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(1));
        drop(conn);
    });
    let started = Instant::now();
    let err = Device::connect(
        &path,
        DeviceConfig {
            timeout: Duration::from_millis(300),
            ..DeviceConfig::default()
        },
    )
    .unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    match err {
        HarnessError::Timeout { what, .. } => assert!(what.contains("GET_FEATURES"), "{what}"),
        other => panic!("expected a timeout, got {other:?}"),
    }
    holder.join().unwrap();
}
