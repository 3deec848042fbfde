//! The sandbox (`--sandbox namespace|chroot|none`), the capability set the
//! daemon keeps, and the seccomp allow-list (`--seccomp`).
//!
//! # Order of start-up
//! Everything outside the shared directory is opened before the sandbox
//! closes the host's filesystem view, and nothing outside it is kept open
//! by the sandboxed process except the listening socket:
//!
//! 1. the stop signals are blocked (before any thread or child exists);
//! 2. the socket is bound on the host path;
//! 3. `namespace` and `chroot` fork: the parent stays outside as the
//!    [`Supervisor`] (it forwards stop signals, writes the metrics file the
//!    child sends it, removes the socket file and exits with the child's
//!    status); the child enters the sandbox (see [`namespace`]) and opens
//!    `/proc/self/fd` there;
//! 4. the child (or the only process with `none`) opens the shared directory
//!    as its root, creates the DAX placeholder memfd, drops capabilities
//!    ([`caps`]), starts its threads and installs the seccomp filter on all
//!    of them ([`seccomp`]); only then does it accept a frontend.
//!
//! Why a supervisor: the metrics file and the socket file live outside the
//! shared directory. A sandboxed process holding a directory descriptor out
//! there could walk the host's filesystem from it (`openat(dirfd, "..")`),
//! which is exactly what the sandbox is for preventing; so the process
//! outside does that little work, and the sandboxed one keeps no path out.

pub mod caps;
pub mod namespace;
pub mod seccomp;
pub mod supervisor;
pub mod userns;

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::process::{Pid, PidfdFlags};

pub use self::seccomp::SeccompMode;
pub use self::supervisor::Supervisor;
pub use self::userns::UserNsMaps;
use super::fds;

/// How the daemon isolates itself from the host (`--sandbox`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SandboxMode {
    /// New mount, PID and network namespaces (and a user namespace when not
    /// root); the shared directory becomes `/` with pivot_root, and a fresh
    /// /proc of the new PID namespace serves /proc/self/fd.
    Namespace,
    /// chroot into the shared directory (root only): for containers whose
    /// runtime already set up namespaces.
    Chroot,
    /// No isolation beyond the name resolution that keeps lookups inside the
    /// shared directory.
    None,
}

impl SandboxMode {
    /// The default: `namespace` when running as root, `none` otherwise (a
    /// non-root daemon would need a user namespace, which maps every owner
    /// but its own to the overflow id and is disabled on some hosts).
    pub fn default_for_euid() -> Self {
        if rustix::process::geteuid().is_root() {
            Self::Namespace
        } else {
            Self::None
        }
    }
}

/// Why the sandbox could not be entered.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// chroot needs root.
    #[error("--sandbox chroot needs root (CAP_SYS_CHROOT); use --sandbox namespace or none")]
    ChrootNeedsRoot,
    /// `--modcaps` adds capabilities this process was not given.
    #[error("--modcaps adds {0}, which the daemon was not given (not in its permitted set)")]
    NotPermitted(String),
    /// A thread already runs, so forking is not safe.
    #[error("the sandbox must be entered before any thread starts ({0} threads run)")]
    Threads(usize),
    /// /proc/self/fd was opened before the sandbox (it would name the wrong
    /// process or the wrong /proc).
    #[error("/proc/self/fd was opened before the sandbox")]
    ProcOpenedEarly,
    /// `--uid-map`/`--gid-map` given to a root daemon or with another
    /// sandbox (the configuration refuses them before).
    #[error("--uid-map and --gid-map need --sandbox namespace and a daemon not started as root")]
    MapsNeedUserNamespace,
    /// The ids of the user namespace could not be mapped.
    #[error("mapping the user namespace's ids")]
    IdMap(#[source] userns::MapError),
    /// One step failed.
    #[error("sandbox: {step}")]
    Step {
        /// What was being done.
        step: &'static str,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

pub(crate) fn step(step: &'static str) -> impl FnOnce(rustix::io::Errno) -> SandboxError {
    move |e| SandboxError::Step {
        step,
        source: e.into(),
    }
}

pub fn step_io(step: &'static str) -> impl FnOnce(io::Error) -> SandboxError {
    move |source| SandboxError::Step { step, source }
}

/// What the daemon process (inside the sandbox) works with.
#[derive(Debug)]
pub struct Jail {
    /// The mode entered.
    pub mode: SandboxMode,
    /// The path the passthrough opens as its root: `/` inside a sandbox,
    /// the shared directory otherwise.
    pub root: PathBuf,
    /// The child's end of the metrics relay (sandboxed modes with
    /// `--metrics-file`).
    pub metrics_relay: Option<OwnedFd>,
}

/// Which process this is after [`enter`].
#[derive(Debug)]
pub enum Role {
    /// The parent outside the sandbox.
    Supervisor(Supervisor),
    /// The daemon (the sandboxed child, or the only process with `none`).
    Daemon(Jail),
}

fn install_proc_self_fd(fd: OwnedFd) -> Result<(), SandboxError> {
    fds::install_proc_self_fd(fd).map_err(|_| SandboxError::ProcOpenedEarly)
}

/// Number of threads of this process.
fn thread_count() -> io::Result<usize> {
    Ok(std::fs::read_dir("/proc/self/task")?.count())
}

/// Enters the sandbox `mode` around `shared_dir`. `listener` is the bound
/// socket (the child listens on it again so that it, not the supervisor,
/// is its owner); `relay_metrics` asks for a metrics relay to the
/// supervisor; `maps` are the ids of the user namespace (`namespace`, not
/// root). Must run before any thread starts.
pub fn enter(
    mode: SandboxMode, shared_dir: &Path, listener: BorrowedFd<'_>, relay_metrics: bool,
    maps: &UserNsMaps,
) -> Result<Role, SandboxError> {
    let root = rustix::process::geteuid().is_root();
    if !maps.is_empty() && (root || mode != SandboxMode::Namespace) {
        return Err(SandboxError::MapsNeedUserNamespace);
    }
    if mode == SandboxMode::None {
        return Ok(Role::Daemon(Jail {
            mode,
            root: shared_dir.to_owned(),
            metrics_relay: None,
        }));
    }
    if mode == SandboxMode::Chroot && !root {
        return Err(SandboxError::ChrootNeedsRoot);
    }
    if fds::proc_self_fd_opened() {
        return Err(SandboxError::ProcOpenedEarly);
    }
    let threads = thread_count().map_err(step_io("counting threads"))?;
    if threads != 1 {
        return Err(SandboxError::Threads(threads));
    }
    if mode == SandboxMode::Namespace {
        namespace::unshare_before_fork(root, maps)?;
    }
    let relay = if relay_metrics {
        let (parent, child) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::SEQPACKET,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .map_err(step("creating the metrics relay"))?;
        Some((parent, child))
    } else {
        None
    };
    // Lets the child find out whether the parent died before it asked to be
    // told (PR_SET_PDEATHSIG).
    let parent = rustix::process::pidfd_open(rustix::process::getpid(), PidfdFlags::empty())
        .map_err(step("opening a pidfd of the daemon"))?;
    // SAFETY: the process has exactly one thread (checked above), so no lock
    // or allocator state can be held by another thread at the fork; the
    // child continues as an ordinary single-threaded copy of this process.
    let forked = unsafe { libc::fork() };
    match forked {
        -1 => Err(step_io("fork")(io::Error::last_os_error())),
        0 => {
            let (relay_parent, relay_child) = relay.unzip();
            drop(relay_parent);
            become_sandboxed_child(mode, shared_dir, listener, parent)?;
            Ok(Role::Daemon(Jail {
                mode,
                root: PathBuf::from("/"),
                metrics_relay: relay_child,
            }))
        }
        pid => {
            let (relay_parent, relay_child) = relay.unzip();
            drop(relay_child);
            let child =
                Pid::from_raw(pid).ok_or_else(|| step_io("fork")(io::Error::other("pid")))?;
            let child_fd = rustix::process::pidfd_open(child, PidfdFlags::empty())
                .map_err(step("opening a pidfd of the sandboxed daemon"))?;
            Ok(Role::Supervisor(Supervisor::new(
                child,
                child_fd,
                relay_parent,
            )))
        }
    }
}

fn become_sandboxed_child(
    mode: SandboxMode, shared_dir: &Path, listener: BorrowedFd<'_>, parent: OwnedFd,
) -> Result<(), SandboxError> {
    rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::TERM))
        .map_err(step("PR_SET_PDEATHSIG"))?;
    let mut poll = [rustix::event::PollFd::new(
        &parent,
        rustix::event::PollFlags::IN,
    )];
    if rustix::event::poll(&mut poll, Some(&rustix::event::Timespec::default()))
        .map_err(step("polling the parent"))?
        != 0
    {
        return Err(step_io("starting")(io::Error::other("the parent exited")));
    }
    drop(parent);
    // listen() again records this process as the socket's owner
    // (SO_PEERCRED), so that the legacy DAX channel discovery tells it
    // apart from the frontend's connection.
    rustix::net::listen(listener, 128).map_err(step("listen"))?;
    match mode {
        SandboxMode::Namespace => {
            let proc_fd = namespace::enter_in_child(shared_dir)?;
            install_proc_self_fd(proc_fd)
        }
        SandboxMode::Chroot => {
            let proc_fd = rustix::fs::open(
                c"/proc/self/fd",
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(step("opening /proc/self/fd"))?;
            install_proc_self_fd(proc_fd)?;
            rustix::process::chroot(shared_dir).map_err(step("chroot"))?;
            rustix::process::chdir("/").map_err(step("chdir /"))
        }
        SandboxMode::None => Ok(()),
    }
}
