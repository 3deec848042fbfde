//! The host /dev/fuse transport, end to end: the real binary mounts a
//! scratch share with `--mount-point`, the host kernel's FUSE client drives
//! it, and SIGTERM or an outside `umount` ends it cleanly.
//!
//! Needs root and /dev/fuse; elsewhere each test says it is skipped.

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

fn can_mount() -> bool {
    if !rustix::process::geteuid().is_root() || !Path::new("/dev/fuse").exists() {
        // Under CI (.ci/run sets CI=true) every test must run.
        assert!(
            std::env::var("CI").map_or(true, |v| v != "true"),
            "needs root and /dev/fuse: CI=true, so this test must run, not be skipped"
        );
        eprintln!("skipped: needs root and /dev/fuse");
        return false;
    }
    true
}

fn is_mounted(mount_point: &Path) -> bool {
    let info = fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let target = mount_point.to_str().expect("utf-8 path");
    info.lines().any(|line| {
        let f: Vec<&str> = line.split(' ').collect();
        f.get(4) == Some(&target) && line.contains(" - fuse.daxfsd ")
    })
}

/// A running `daxfsd --mount-point`; unmounts and kills it if a test fails.
struct Mounted {
    child: Option<Child>,
    mount_point: PathBuf,
    shared: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mounted {
    fn start(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let shared = dir.path().join("shared");
        let mount_point = dir.path().join("mnt");
        fs::create_dir(&shared).unwrap();
        fs::create_dir(&mount_point).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_daxfsd"))
            .arg("--shared-dir")
            .arg(&shared)
            .arg("--mount-point")
            .arg(&mount_point)
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .expect("spawn daxfsd");
        let mut m = Self {
            child: Some(child),
            mount_point,
            shared,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !is_mounted(&m.mount_point) {
            if let Some(status) = m.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("daxfsd exited before mounting: {status}");
            }
            assert!(Instant::now() < deadline, "no mount after 20 s");
            std::thread::sleep(Duration::from_millis(20));
        }
        m
    }

    fn pid(&self) -> rustix::process::Pid {
        let id = self.child.as_ref().unwrap().id();
        rustix::process::Pid::from_raw(id as i32).unwrap()
    }

    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("daxfsd still running after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if is_mounted(&self.mount_point) {
            let _ = rustix::mount::unmount(&self.mount_point, rustix::mount::UnmountFlags::DETACH);
        }
    }
}

#[test]
fn files_written_through_the_mount_reach_the_share_and_sigterm_unmounts() {
    if !can_mount() {
        return;
    }
    let mut m = Mounted::start(&["--num-request-queues", "2"]);
    let mnt = m.mount_point.clone();
    // Host-created file read through the mount.
    fs::write(m.shared.join("host.txt"), b"from the host\n").unwrap();
    assert_eq!(fs::read(mnt.join("host.txt")).unwrap(), b"from the host\n");
    // 3 MiB + 1 in one write(2): the kernel splits it at max_write (1 MiB).
    let big: Vec<u8> = (0..3 * 1024 * 1024 + 1)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let mut f = fs::File::create(mnt.join("big")).unwrap();
    f.write_all(&big).unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_eq!(fs::read(m.shared.join("big")).unwrap(), big);
    let mut back = Vec::new();
    fs::File::open(mnt.join("big"))
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert!(back == big, "read back through the mount differs");
    // Directories, rename, symlink, mode, hard link, readdir, unlink.
    fs::create_dir(mnt.join("d")).unwrap();
    fs::rename(mnt.join("big"), mnt.join("d/big2")).unwrap();
    assert!(m.shared.join("d/big2").exists() && !m.shared.join("big").exists());
    std::os::unix::fs::symlink("d/big2", mnt.join("link")).unwrap();
    assert_eq!(
        fs::read_link(m.shared.join("link")).unwrap(),
        Path::new("d/big2")
    );
    fs::set_permissions(mnt.join("host.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(
        fs::metadata(m.shared.join("host.txt")).unwrap().mode() & 0o777,
        0o640
    );
    fs::hard_link(mnt.join("host.txt"), mnt.join("hard")).unwrap();
    assert_eq!(fs::metadata(mnt.join("hard")).unwrap().nlink(), 2);
    let mut names: Vec<String> = fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["d", "hard", "host.txt", "link"]);
    fs::remove_file(mnt.join("hard")).unwrap();
    assert!(!m.shared.join("hard").exists());
    // Errors travel back as errnos.
    let e = fs::remove_dir(mnt.join("d")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOTEMPTY));
    let e = fs::metadata(mnt.join("absent")).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOENT));

    rustix::process::kill_process(m.pid(), rustix::process::Signal::TERM).unwrap();
    let status = m.wait(Duration::from_secs(20));
    assert!(status.success(), "daxfsd exit after SIGTERM: {status}");
    assert!(!is_mounted(&mnt), "still mounted after SIGTERM");
}

#[test]
fn an_outside_umount_ends_the_daemon() {
    if !can_mount() {
        return;
    }
    let mut m = Mounted::start(&[]);
    assert!(fs::read_dir(&m.mount_point).unwrap().next().is_none());
    rustix::mount::unmount(&m.mount_point, rustix::mount::UnmountFlags::empty()).unwrap();
    let status = m.wait(Duration::from_secs(20));
    assert!(status.success(), "daxfsd exit after umount: {status}");
}

#[test]
fn a_mount_point_inside_the_share_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let inner = dir.path().join("inner");
    fs::create_dir(&inner).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_daxfsd"))
        .arg("--shared-dir")
        .arg(dir.path())
        .arg("--mount-point")
        .arg(&inner)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("is inside the shared directory"),
        "{stderr}"
    );
    assert!(!is_mounted(&inner));
}
