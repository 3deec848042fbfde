//! The two daemons under comparison: locating (building, installing) them, starting them
//! on identical shared directories, and reading their CPU time and peak RSS from /proc.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use daxfsd_harness::fuse::Uniques;
use daxfsd_harness::{error_chain, BackendCommand, BackendProcess, Device, DeviceConfig};

use crate::error::{BenchError, HarnessContext, Result};

/// Which daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Daemon {
    /// This project's daemon, release build.
    Daxfsd,
    /// Upstream virtiofsd (the reference).
    Virtiofsd,
}

impl Daemon {
    /// Both, in the order runs alternate (A B A B ...).
    pub const AB: [Daemon; 2] = [Daemon::Daxfsd, Daemon::Virtiofsd];

    /// Display name.
    pub fn name(self) -> &'static str {
        match self {
            Daemon::Daxfsd => "daxfsd",
            Daemon::Virtiofsd => "virtiofsd",
        }
    }
}

/// Paths of both binaries.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// daxfsd (release).
    pub daxfsd: PathBuf,
    /// Upstream virtiofsd.
    pub virtiofsd: PathBuf,
}

impl Binaries {
    /// Locates both daemons: `$DAXFSD_BIN` or a fresh `cargo build --release -p daxfsd`;
    /// `$DAXFSD_VIRTIOFSD_BIN`, the project cache, or an install with
    /// tests/tools/install-virtiofsd.sh.
    pub fn locate(need_virtiofsd: bool) -> Result<Binaries> {
        let daxfsd = locate_daxfsd_release()?;
        let virtiofsd = if need_virtiofsd {
            daxfsd_harness::locate_virtiofsd(true)
                .map_err(|e| BenchError::Binary(error_chain(&e)))?
                .ok_or_else(|| BenchError::Binary("virtiofsd could not be installed".into()))?
        } else {
            PathBuf::new()
        };
        Ok(Binaries { daxfsd, virtiofsd })
    }

    /// The binary of `daemon`.
    pub fn path(&self, daemon: Daemon) -> &Path {
        match daemon {
            Daemon::Daxfsd => &self.daxfsd,
            Daemon::Virtiofsd => &self.virtiofsd,
        }
    }
}

/// Root of the repository (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `$DAXFSD_BIN`, else `cargo build --release -p daxfsd` into the target directory this
/// benchmark runs from (the binary's own directory when it is a release build).
fn locate_daxfsd_release() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("DAXFSD_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(BenchError::Binary(format!(
                "DAXFSD_BIN={} is not a file",
                bin.display()
            )))
        };
    }
    let exe = std::env::current_exe()
        .map_err(|e| BenchError::io("locating the benchmark executable", e))?;
    // <target>/release/daxfsd-bench when run with `cargo run --release`.
    let target_dir = exe
        .parent()
        .filter(|dir| dir.file_name().is_some_and(|n| n == "release"))
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo_root().join("target"));
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(repo_root())
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "daxfsd",
            "--bin",
            "daxfsd",
        ])
        .arg("--target-dir")
        .arg(&target_dir)
        .stdin(Stdio::null())
        .status()
        .map_err(|e| BenchError::io("running cargo build --release -p daxfsd", e))?;
    if !status.success() {
        return Err(BenchError::Binary(format!(
            "cargo build --release -p daxfsd failed ({status})"
        )));
    }
    let bin = target_dir.join("release/daxfsd");
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(BenchError::Binary(format!(
            "{} missing after cargo build",
            bin.display()
        )))
    }
}

/// Descriptors per virtqueue. The harness places every page of a request in its own
/// descriptor (no indirect tables), so 32 READs of 128 KiB in flight on one queue take
/// 1,120 descriptors; both daemons accept 2,048 (virtiofsd up to 32,768, daxfsd with
/// `--queue-size`).
pub const QUEUE_SIZE: u16 = 2048;

/// Starts `daemon` on `shared_dir` with `request_queues` request queues (virtiofsd has
/// exactly one), the cache mode `cache` and `extra` arguments.
pub fn spawn(
    bins: &Binaries, daemon: Daemon, shared_dir: &Path, request_queues: usize, cache: &str,
    extra: &[String],
) -> Result<BackendProcess> {
    let program = bins.path(daemon);
    let command = match daemon {
        Daemon::Daxfsd => BackendCommand::daxfsd(program)
            .args(["--tag", "bench", "--log-level", "warn", "--cache", cache])
            .arg("--num-request-queues")
            .arg(request_queues.to_string())
            .arg("--queue-size")
            .arg(QUEUE_SIZE.to_string()),
        // `--sandbox none` comes with BackendCommand::virtiofsd; seccomp stays on, as
        // users run it.
        Daemon::Virtiofsd => BackendCommand::virtiofsd(program).args([
            "--tag",
            "bench",
            "--log-level",
            "warn",
            "--cache",
            cache,
        ]),
    };
    command
        .args(extra.iter().cloned())
        .shared_dir(shared_dir)
        .spawn()
        .map_err(|e| BenchError::harness(format!("starting {}", daemon.name()), e))
}

/// Connects a device with `request_queues` request queues (EVENT_IDX on, the queue size
/// both daemons take) to `process`, the running `daemon`, and sends INIT with `flags`.
pub fn connect_and_init(
    process: &BackendProcess, daemon: Daemon, request_queues: usize, flags: u64,
) -> Result<(Device, Uniques)> {
    let config = DeviceConfig {
        request_queues,
        queue_size: QUEUE_SIZE,
        event_idx: true,
        read_config: false,
        ..DeviceConfig::default()
    };
    let dev = Device::connect(process.socket_path(), config)
        .during(|| format!("connecting to {}", daemon.name()))?;
    let uniques = Uniques::default();
    dev.fuse_init(1, uniques.next(), flags)
        .during(|| format!("INIT of {}", daemon.name()))?;
    Ok((dev, uniques))
}

/// CPU time (user + system) of every live thread of `pid`, in nanoseconds (the daemons'
/// threads live as long as the connection, so none is missed).
pub fn cpu_ns(pid: u32) -> Result<u64> {
    let dir = format!("/proc/{pid}/task");
    let tasks = std::fs::read_dir(&dir).map_err(|e| BenchError::io(format!("listing {dir}"), e))?;
    let mut total = 0u64;
    for task in tasks.flatten() {
        // A thread may exit between the listing and the read.
        if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
            total += text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    Ok(total)
}

/// CPU time of this process (all threads, exited ones included), in nanoseconds.
pub fn own_cpu_ns() -> Result<u64> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Ok(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64)
}

/// Number of descriptors process `pid` holds.
pub fn fd_count(pid: u32) -> Result<usize> {
    let path = format!("/proc/{pid}/fd");
    std::fs::read_dir(&path)
        .map(Iterator::count)
        .map_err(|e| BenchError::io(format!("reading {path}"), e))
}

/// Peak resident set size (`VmHWM`) of `pid`, in KiB.
pub fn peak_rss_kib(pid: u32) -> Result<u64> {
    status_kib(pid, "VmHWM:")
}

/// A KiB field of `/proc/<pid>/status` (`field` with its colon, e.g. `VmRSS:`).
pub fn status_kib(pid: u32, field: &str) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    let status =
        std::fs::read_to_string(&path).map_err(|e| BenchError::io(format!("reading {path}"), e))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| {
            BenchError::io(
                format!("no {field} in {path}"),
                std::io::ErrorKind::InvalidData.into(),
            )
        })
}

/// The first line of `program --version`, or "unknown".
pub fn version(program: &Path) -> String {
    Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".to_string())
}
