//! daxfsd started as libvirt starts it: `--fd=N -o source=DIR` in a new
//! process group, the listening socket and a locked pidfile inherited. It
//! serves the inherited socket, keeps the pidfile's descriptor (libvirt's
//! liveness lock), and a SIGTERM to the whole group stops it with status 0.
//! A descriptor that is not a listening socket is refused, naming `--fd`.

mod common;

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixListener;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use daxfsd_harness::{Device, DeviceConfig};

/// Starts daxfsd in a new session with `inherit[i]` as descriptor 3 + i.
fn spawn_with_fds(args: &[&str], inherit: &[RawFd]) -> Child {
    assert!(inherit.len() <= 8);
    let inherit = inherit.to_vec();
    let mut command = Command::new(daxfsd_bin());
    command
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: between fork and exec the closure runs `enter_session_with`,
    // which calls only setsid, fcntl and dup2 (async-signal-safe) and
    // touches no lock or allocation (the vector was cloned before the fork).
    unsafe { command.pre_exec(move || enter_session_with(&inherit)) };
    command.spawn().expect("spawn daxfsd")
}

/// In the forked child: a new session, and `inherit[i]` as descriptor
/// 3 + i without close-on-exec. Each is first copied above every target, so
/// that placing one cannot overwrite another's source and each dup2 has a
/// different source and target (it then clears close-on-exec).
fn enter_session_with(inherit: &[RawFd]) -> std::io::Result<()> {
    let failed = |rc: i32| rc < 0;
    // SAFETY: setsid takes no argument and touches no memory.
    if failed(unsafe { libc::setsid() }) {
        return Err(std::io::Error::last_os_error());
    }
    let mut high = [0; 8];
    for (slot, &fd) in high.iter_mut().zip(inherit) {
        // SAFETY: F_DUPFD on any number only fails (EBADF) if it is not open.
        *slot = unsafe { libc::fcntl(fd, libc::F_DUPFD, 100) };
        if failed(*slot) {
            return Err(std::io::Error::last_os_error());
        }
    }
    for (i, &fd) in high[..inherit.len()].iter().enumerate() {
        // SAFETY: dup2 of an open descriptor onto a small number; whatever
        // was there is this child's and not needed by it.
        if failed(unsafe { libc::dup2(fd, 3 + i as RawFd) }) {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("daxfsd did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn serves_an_inherited_socket_keeps_other_descriptors_and_stops_on_group_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let share = dir.path().join("share");
    std::fs::create_dir(&share).unwrap();
    let socket = dir.path().join("fs.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let pidfile = std::fs::File::create(dir.path().join("fs.pid")).unwrap();
    let source = format!("source={}", share.display());
    let mut child = spawn_with_fds(
        &[
            "--fd=3",
            "-o",
            &source,
            "--thread-pool-size=0",
            "--sandbox=none",
        ],
        &[listener.as_raw_fd(), pidfile.as_raw_fd()],
    );
    drop(listener);
    let device =
        Device::connect_when_ready(&socket, DeviceConfig::default(), Duration::from_secs(10))
            .expect("daxfsd serves the inherited socket");
    let pid = child.id();
    let held = std::fs::read_link(format!("/proc/{pid}/fd/4")).expect("descriptor 4 still open");
    assert_eq!(
        held,
        dir.path().join("fs.pid"),
        "the pidfile's descriptor was kept"
    );
    drop(device);
    // The frontend left: without --persist the daemon stops by itself. Start
    // one that waits, to stop it with a group SIGTERM as libvirt does.
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert!(status.success(), "after the frontend left: {status:?}");
    assert!(socket.exists(), "libvirt's socket is libvirt's to remove");

    std::fs::remove_file(&socket).unwrap();
    let listener = UnixListener::bind(&socket).unwrap();
    let sandbox = if is_root() {
        "--sandbox=namespace"
    } else {
        "--sandbox=none"
    };
    let mut child = spawn_with_fds(&["--fd=3", "-o", &source, sandbox], &[listener.as_raw_fd()]);
    drop(listener);
    let device =
        Device::connect_when_ready(&socket, DeviceConfig::default(), Duration::from_secs(10))
            .expect("daxfsd serves the inherited socket");
    let group = i32::try_from(child.id()).unwrap();
    // SAFETY: kill with a negative pid signals the process group the child
    // leads (setsid above); no memory is involved.
    assert_eq!(unsafe { libc::kill(-group, libc::SIGTERM) }, 0);
    let status = wait_exit(&mut child, Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "group SIGTERM: {status:?}");
    drop(device);
}

#[test]
fn a_descriptor_that_is_not_a_listening_socket_is_refused_naming_fd() {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::File::open("/dev/null").unwrap();
    for (fd, inherit) in [("--fd=3", vec![file.as_raw_fd()]), ("--fd=99", vec![])] {
        let mut child = spawn_with_fds(
            &[fd, "--shared-dir", dir.path().to_str().unwrap()],
            &inherit,
        );
        let status = wait_exit(&mut child, Duration::from_secs(10));
        let mut err = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
        assert!(!status.success(), "{fd}: {status:?}");
        assert!(err.contains("--fd"), "{fd}: {err}");
    }
}
