//! Starting and stopping the backend under test.
//!
//! A [`BackendCommand`] describes the program and its arguments; `{socket}` and
//! `{shared_dir}` inside an argument are replaced with the per-run socket path and shared
//! directory. [`BackendCommand::spawn`] starts the program in a fresh temporary directory,
//! captures its stdout and stderr to files there and waits (bounded) for the socket to
//! appear. The [`BackendProcess`] kills the program when dropped.

use std::ffi::OsString;
use std::fs::File;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::error::{error_chain, HarnessError, Result};

/// Replaced by the vhost-user socket path in backend arguments.
pub const SOCKET_PLACEHOLDER: &str = "{socket}";
/// Replaced by the shared directory in backend arguments.
pub const SHARED_DIR_PLACEHOLDER: &str = "{shared_dir}";

/// Default bound on the wait for the backend's socket.
pub const DEFAULT_STARTUP_TIMEOUT: Duration = Duration::from_secs(20);

const POLL_INTERVAL: Duration = Duration::from_millis(10);
/// How many bytes of a log [`BackendProcess::diagnostics`] shows.
const LOG_TAIL_BYTES: usize = 16 * 1024;

/// How to start a backend.
#[derive(Debug, Clone)]
pub struct BackendCommand {
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(OsString, OsString)>,
    shared_dir: Option<PathBuf>,
    startup_timeout: Duration,
    /// Run as this (uid, gid), without supplementary groups.
    user: Option<(u32, u32)>,
}

impl BackendCommand {
    /// A command running `program` with no arguments yet.
    pub fn new(program: impl Into<PathBuf>) -> Self {
        BackendCommand {
            program: program.into(),
            args: Vec::new(),
            envs: Vec::new(),
            shared_dir: None,
            startup_timeout: DEFAULT_STARTUP_TIMEOUT,
            user: None,
        }
    }

    /// `daxfsd --socket-path {socket} --shared-dir {shared_dir} --sandbox none` with
    /// `NO_COLOR=1` (plain logs in the captured file); add more with [`Self::arg`].
    ///
    /// `--sandbox none` keeps the daemon in the process the harness started, so
    /// [`BackendProcess::pid`] is the daemon's and `/proc/<pid>/fd` counts its descriptors
    /// (with `namespace` or `chroot` it is the supervisor, which holds none of the guest's).
    /// The seccomp filter and the reduced capabilities apply all the same.
    /// `DAXFSD_HARNESS_SANDBOX=namespace` runs every test sandboxed instead (the descriptor
    /// checks then look at the supervisor); the sandbox's own tests pass `--sandbox`
    /// themselves with [`Self::daxfsd_sandboxed`].
    pub fn daxfsd(program: impl Into<PathBuf>) -> Self {
        let sandbox = std::env::var("DAXFSD_HARNESS_SANDBOX").unwrap_or_else(|_| "none".into());
        Self::daxfsd_sandboxed(program, &sandbox)
    }

    /// [`Self::daxfsd`] with `--sandbox MODE`.
    pub fn daxfsd_sandboxed(program: impl Into<PathBuf>, mode: &str) -> Self {
        Self::new(program)
            .args([
                "--socket-path",
                SOCKET_PLACEHOLDER,
                "--shared-dir",
                SHARED_DIR_PLACEHOLDER,
                "--sandbox",
                mode,
            ])
            .env("NO_COLOR", "1")
    }

    /// Upstream virtiofsd with the same socket and directory, without its namespace sandbox
    /// (which needs privileges a test container may lack).
    pub fn virtiofsd(program: impl Into<PathBuf>) -> Self {
        Self::new(program).args([
            "--socket-path",
            SOCKET_PLACEHOLDER,
            "--shared-dir",
            SHARED_DIR_PLACEHOLDER,
            "--sandbox",
            "none",
        ])
    }

    /// Appends one argument (placeholders are substituted at spawn time).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Sets an environment variable for the backend.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Shares this directory instead of a fresh empty temporary one.
    pub fn shared_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.shared_dir = Some(dir.into());
        self
    }

    /// Bounds the wait for the socket to appear.
    pub fn startup_timeout(mut self, timeout: Duration) -> Self {
        self.startup_timeout = timeout;
        self
    }

    /// Runs the backend as `uid`:`gid` with no supplementary groups (the
    /// harness must be root); the temporary directory (socket, logs) and the
    /// fresh shared directory are given to that user.
    pub fn run_as(mut self, uid: u32, gid: u32) -> Self {
        self.user = Some((uid, gid));
        self
    }

    /// Starts the backend and waits until its socket exists.
    pub fn spawn(self) -> Result<BackendProcess> {
        let workdir = tempfile::Builder::new()
            .prefix("daxfsd-harness-")
            .tempdir()
            .map_err(|e| HarnessError::io("creating the backend's temporary directory", e))?;
        let socket_path = workdir.path().join("vhost-user-fs.sock");
        let shared_dir = match &self.shared_dir {
            Some(dir) => dir.clone(),
            None => {
                let dir = workdir.path().join("shared");
                std::fs::create_dir(&dir)
                    .map_err(|e| HarnessError::io("creating the shared directory", e))?;
                dir
            }
        };
        let stdout_path = workdir.path().join("backend.stdout");
        let stderr_path = workdir.path().join("backend.stderr");
        let open_log = |path: &Path| {
            File::create(path)
                .map_err(|e| HarnessError::io(format!("creating log {}", path.display()), e))
        };
        let stdout = open_log(&stdout_path)?;
        let stderr = open_log(&stderr_path)?;
        if let Some((uid, gid)) = self.user {
            let mut owned = vec![workdir.path()];
            if self.shared_dir.is_none() {
                owned.push(&shared_dir);
            }
            for path in owned {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| {
                    HarnessError::io(format!("giving {} to uid {uid}", path.display()), e)
                })?;
            }
        }

        let socket_str = socket_path.to_string_lossy().into_owned();
        let shared_str = shared_dir.to_string_lossy().into_owned();
        let args: Vec<String> = self
            .args
            .iter()
            .map(|a| {
                a.replace(SOCKET_PLACEHOLDER, &socket_str)
                    .replace(SHARED_DIR_PLACEHOLDER, &shared_str)
            })
            .collect();

        let mut command = Command::new(&self.program);
        if let Some((uid, gid)) = self.user {
            // As root, std drops the supplementary groups too (setgroups(0)).
            std::os::unix::process::CommandExt::uid(&mut command, uid);
            std::os::unix::process::CommandExt::gid(&mut command, gid);
        }
        let child = command
            .args(&args)
            .envs(self.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(stdout))
            .stderr(Stdio::from(stderr))
            .spawn()
            .map_err(|source| HarnessError::Spawn {
                program: self.program.clone(),
                source,
            })?;

        let process = BackendProcess {
            pid: child.id(),
            child: Mutex::new(ChildState {
                child,
                exit_status: None,
            }),
            program: self.program,
            args,
            socket_path,
            shared_dir,
            stdout_path,
            stderr_path,
            workdir,
        };
        process.wait_for_socket(self.startup_timeout)?;
        Ok(process)
    }
}

#[derive(Debug)]
struct ChildState {
    child: Child,
    /// Set once the child was reaped.
    exit_status: Option<ExitStatus>,
}

/// A running backend. Killed (SIGKILL) and reaped on drop. All methods take `&self`
/// (the child handle sits behind a lock), so tests can poll it while borrowing it.
#[derive(Debug)]
pub struct BackendProcess {
    pid: u32,
    child: Mutex<ChildState>,
    program: PathBuf,
    args: Vec<String>,
    socket_path: PathBuf,
    shared_dir: PathBuf,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    // Declared last: removed after the child is gone.
    workdir: TempDir,
}

impl BackendProcess {
    /// The vhost-user socket path.
    pub fn socket_path(&self) -> &Path {
        &self.socket_path
    }

    /// The directory the backend shares.
    pub fn shared_dir(&self) -> &Path {
        &self.shared_dir
    }

    /// The per-run temporary directory (socket, logs, default shared dir).
    pub fn workdir(&self) -> &Path {
        self.workdir.path()
    }

    /// File that receives the backend's stderr.
    pub fn stderr_path(&self) -> &Path {
        &self.stderr_path
    }

    /// File that receives the backend's stdout.
    pub fn stdout_path(&self) -> &Path {
        &self.stdout_path
    }

    /// The backend's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The process that serves: [`Self::pid`], or, when that process supervises a
    /// sandboxed daemon (`daxfsd --sandbox namespace|chroot`), its only child (the daemon,
    /// whose `/proc/<pid>/fd` holds the guest's descriptors).
    pub fn daemon_pid(&self) -> u32 {
        let children = format!("/proc/{0}/task/{0}/children", self.pid);
        let listed: Vec<u32> = std::fs::read_to_string(children)
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        match listed.as_slice() {
            [child] => *child,
            _ => self.pid,
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ChildState> {
        self.child.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Everything the backend wrote to stderr so far.
    pub fn stderr(&self) -> String {
        read_lossy(&self.stderr_path)
    }

    /// Everything the backend wrote to stdout so far.
    pub fn stdout(&self) -> String {
        read_lossy(&self.stdout_path)
    }

    /// Command line, exit state and the tails of both logs, for failure messages.
    pub fn diagnostics(&self) -> String {
        let state = match self.state().exit_status {
            Some(status) => format!("exited: {status}"),
            None => "running (or not yet reaped)".to_string(),
        };
        format!(
            "backend: {} {}\nstate: {state}\n--- stderr ({}) ---\n{}\n--- stdout ---\n{}",
            self.program.display(),
            self.args.join(" "),
            self.stderr_path.display(),
            tail(&self.stderr(), LOG_TAIL_BYTES),
            tail(&self.stdout(), LOG_TAIL_BYTES),
        )
    }

    /// An error with its cause chain followed by [`Self::diagnostics`]; meant for
    /// `unwrap_or_else(|e| panic!("{}", backend.report(&e)))` in tests.
    pub fn report(&self, err: &dyn std::error::Error) -> String {
        format!("{}\n{}", error_chain(err), self.diagnostics())
    }

    /// The exit status, if the backend has exited.
    pub fn try_exit_status(&self) -> Result<Option<ExitStatus>> {
        let mut state = self.state();
        if state.exit_status.is_none() {
            state.exit_status = state
                .child
                .try_wait()
                .map_err(|e| HarnessError::io("polling the backend process", e))?;
        }
        Ok(state.exit_status)
    }

    /// Whether the backend is still running.
    pub fn is_running(&self) -> Result<bool> {
        Ok(self.try_exit_status()?.is_none())
    }

    /// Waits (bounded) for the backend to exit on its own.
    pub fn wait_exit(&self, timeout: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit_status()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    what: format!("backend pid {} to exit", self.pid()),
                    timeout,
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Waits (bounded) until the socket path exists and is a socket; fails early if the
    /// backend exits. Also usable after a disconnect, for backends that listen again.
    pub fn wait_for_socket(&self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(meta) = std::fs::metadata(&self.socket_path) {
                // The file appears at bind(), a moment before listen(): a connect in
                // between is refused, so wait for the listening state too.
                if meta.file_type().is_socket() && is_listening(&self.socket_path) != Some(false) {
                    return Ok(());
                }
            }
            if let Some(status) = self.try_exit_status()? {
                return Err(HarnessError::BackendExited {
                    status,
                    waiting_for: "its socket to appear",
                    stderr: tail(&self.stderr(), LOG_TAIL_BYTES).to_string(),
                });
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    what: format!("socket {}", self.socket_path.display()),
                    timeout,
                });
            }
            std::thread::sleep(POLL_INTERVAL);
        }
    }

    /// Sends SIGTERM and waits up to `grace`; then SIGKILL. Returns the exit status.
    pub fn terminate(&self, grace: Duration) -> Result<ExitStatus> {
        if let Some(status) = self.try_exit_status()? {
            return Ok(status);
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.pid as i32) {
            // The child is not reaped yet (try_wait said so), so the pid is still ours.
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        match self.wait_exit(grace) {
            Ok(status) => Ok(status),
            Err(HarnessError::Timeout { .. }) => self.kill(),
            Err(e) => Err(e),
        }
    }

    /// Sends SIGKILL and reaps the backend.
    pub fn kill(&self) -> Result<ExitStatus> {
        let mut state = self.state();
        if let Some(status) = state.exit_status {
            return Ok(status);
        }
        // Child::kill is a no-op error-free call on an exited but unreaped child.
        state
            .child
            .kill()
            .map_err(|e| HarnessError::io("killing the backend", e))?;
        let status = state
            .child
            .wait()
            .map_err(|e| HarnessError::io("reaping the backend", e))?;
        state.exit_status = Some(status);
        Ok(status)
    }
}

impl Drop for BackendProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

fn read_lossy(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) => format!("<cannot read {}: {e}>", path.display()),
    }
}

fn tail(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut start = text.len() - max;
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

/// Root of the repository (two levels above this crate).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Where the upstream virtiofsd binary lives once `tests/tools/install-virtiofsd.sh` ran.
pub fn virtiofsd_install_path() -> PathBuf {
    let cache = std::env::var_os("DAXFSD_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cache"));
    cache.join("virtiofsd/bin/virtiofsd")
}

/// Locates upstream virtiofsd: `$DAXFSD_VIRTIOFSD_BIN`, else the project cache. When it is
/// absent and `install` is set, runs `tests/tools/install-virtiofsd.sh` (minutes: builds
/// from crates.io). `Ok(None)` means not installed and not asked to install.
pub fn locate_virtiofsd(install: bool) -> Result<Option<PathBuf>> {
    if let Some(bin) = std::env::var_os("DAXFSD_VIRTIOFSD_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(Some(bin))
        } else {
            Err(HarnessError::BinaryUnavailable(format!(
                "DAXFSD_VIRTIOFSD_BIN={} is not a file",
                bin.display()
            )))
        };
    }
    let bin = virtiofsd_install_path();
    if bin.is_file() {
        return Ok(Some(bin));
    }
    if !install {
        return Ok(None);
    }
    let script = repo_root().join("tests/tools/install-virtiofsd.sh");
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|source| HarnessError::Spawn {
            program: script.clone(),
            source,
        })?;
    if !output.status.success() {
        return Err(HarnessError::BinaryUnavailable(format!(
            "{} failed ({})",
            script.display(),
            output.status
        )));
    }
    let printed = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let bin = PathBuf::from(printed);
    if bin.is_file() {
        Ok(Some(bin))
    } else {
        Err(HarnessError::BinaryUnavailable(format!(
            "{} printed {}, which is not a file",
            script.display(),
            bin.display()
        )))
    }
}

/// Whether a Unix socket bound at `path` is listening, from /proc/net/unix (flag
/// `__SO_ACCEPTCON`); `None` when that file cannot be read.
fn is_listening(path: &Path) -> Option<bool> {
    const SO_ACCEPTCON: u32 = 1 << 16;
    let table = std::fs::read_to_string("/proc/net/unix").ok()?;
    let path = path.to_str()?;
    Some(table.lines().skip(1).any(|line| {
        // Num RefCount Protocol Flags Type St Inode Path
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8
            && line.ends_with(path)
            && u32::from_str_radix(fields[3], 16).is_ok_and(|flags| flags & SO_ACCEPTCON != 0)
    }))
}

/// Locates the `daxfsd` binary: `$DAXFSD_BIN`, else the target directory of the running
/// test executable (same profile), brought up to date with `cargo build -p daxfsd` once
/// per test process (the first caller builds; the others share its result).
pub fn locate_daxfsd() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("DAXFSD_BIN") {
        let bin = PathBuf::from(bin);
        return if bin.is_file() {
            Ok(bin)
        } else {
            Err(HarnessError::BinaryUnavailable(format!(
                "DAXFSD_BIN={} is not a file",
                bin.display()
            )))
        };
    }
    // One build per test process: tests run in parallel, and each cargo invocation
    // takes the build-directory lock and re-checks the whole dependency graph.
    static BUILT: OnceLock<std::result::Result<PathBuf, String>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            build_daxfsd().map_err(|e| match e {
                HarnessError::BinaryUnavailable(why) => why,
                other => error_chain(&other),
            })
        })
        .clone()
        .map_err(HarnessError::BinaryUnavailable)
}

/// `cargo build -p daxfsd` into the running test's own target profile.
fn build_daxfsd() -> Result<PathBuf> {
    let exe = std::env::current_exe()
        .map_err(|e| HarnessError::io("locating the running test executable", e))?;
    // <target>/<profile>/deps/<test-binary>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| {
            HarnessError::BinaryUnavailable(format!("unexpected test path {}", exe.display()))
        })?
        .to_path_buf();
    let bin = profile_dir.join("daxfsd");
    let mut build = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    build
        .current_dir(repo_root())
        .args(["build", "--quiet", "-p", "daxfsd", "--bin", "daxfsd"])
        .stdin(Stdio::null());
    if profile_dir.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    if let Some(target_dir) = profile_dir.parent() {
        build.arg("--target-dir").arg(target_dir);
    }
    // Always ask cargo: it is a no-op when the binary is fresh, and a stale binary would
    // test old code.
    let status = build
        .status()
        .map_err(|e| HarnessError::io("running cargo build -p daxfsd", e))?;
    if !status.success() {
        return Err(HarnessError::BinaryUnavailable(format!(
            "cargo build -p daxfsd failed ({status})"
        )));
    }
    if bin.is_file() {
        Ok(bin)
    } else {
        Err(HarnessError::BinaryUnavailable(format!(
            "{} missing after cargo build",
            bin.display()
        )))
    }
}
