//! Start-up and the connection loop.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::GuestMemoryAtomic;

use crate::config::{Config, Listen, Transport};
use crate::dax::{Dax, DaxTrace};
use crate::dispatch::{Dispatcher, InitPolicy, Offers, SessionEnd};
use crate::fs::passthrough::{FsConfig, InodeFileHandles, PassthroughFs};
use crate::metrics::MetricsSink;
use crate::process::lifecycle::{Shutdown, SocketFile};
use crate::process::pidfile::PidFile;
use crate::process::sandbox::{Jail, Role, SandboxMode};
use crate::process::signals::{BlockedSignals, STOP_SIGNALS};
use crate::transport::vhost_user::{DeviceConfig, FsDevice, GuestRam};

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The shared directory could not be opened.
    #[error("cannot share {path}")]
    SharedDir {
        /// The directory.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    // vhost_user_backend::Error implements Display but not std::error::Error,
    // so it cannot be a `#[source]`; its text is part of these messages.
    /// The DAX window could not be set up.
    #[error("cannot set up the DAX window")]
    Dax(#[source] crate::dax::DaxSetupError),
    /// The `--dax-trace` file could not be opened.
    #[error("--dax-trace")]
    Trace(#[source] crate::dax::TraceOpenError),
    /// The vhost-user daemon could not be created.
    #[error("cannot create the vhost-user device: {0}")]
    Device(vhost_user_backend::Error),
    /// The metrics writer could not start.
    #[error("cannot start writing metrics to {path}")]
    Metrics {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The socket could not be created.
    #[error("cannot listen")]
    Listen(#[source] crate::process::lifecycle::SocketFileError),
    /// The pid file beside the socket is another daemon's, or cannot be
    /// created.
    #[error("cannot take the socket path")]
    PidFile(#[source] crate::process::pidfile::PidFileError),
    /// The `--fd` socket cannot be served.
    #[error("cannot serve the inherited socket")]
    Inherit(#[source] crate::process::inherited::InheritError),
    /// The stop signals could not be blocked or their thread started.
    #[error("cannot set up the stop signals")]
    Signals(#[source] std::io::Error),
    /// The sandbox could not be entered.
    #[error("cannot enter the sandbox")]
    Sandbox(#[source] crate::process::sandbox::SandboxError),
    /// `--rlimit-nofile` could not be applied (the message names the flag).
    #[error(transparent)]
    Rlimit(#[from] crate::process::rlimit::RlimitError),
    /// The seccomp filter could not be installed.
    #[error("seccomp")]
    Seccomp(#[source] crate::process::sandbox::seccomp::SeccompError),
    /// The host FUSE transport (`--mount-point`) failed.
    #[error("host FUSE transport")]
    Fuse(#[source] crate::transport::fuse_dev::FuseDevError),
    /// A queue worker (or `/dev/fuse` reader) panicked; the daemon stopped.
    #[error("stopped after a worker panic")]
    WorkerPanicked(#[source] crate::worker_guard::WorkerPanic),
    /// Serving a connection failed.
    #[error("serving {socket}: {cause}")]
    Serve {
        /// The socket.
        socket: PathBuf,
        /// Cause (see above for why it is not a `#[source]`).
        cause: vhost_user_backend::Error,
    },
}

/// Builds the filesystem and device from the configuration (opening the
/// `--dax-trace` file, if any).
pub fn build_device(config: &Config) -> Result<Arc<FsDevice>, ServerError> {
    let socket_path = configured_socket_path(config);
    build_device_at(
        config,
        &config.shared_dir,
        open_trace(config)?,
        &socket_path,
    )
}

/// Builds the filesystem and device, opening `root` (`/` inside a
/// sandbox) as the shared directory; `trace` is the `--dax-trace` file,
/// opened before the sandbox was entered; `socket_path` is where the
/// frontend connects (the legacy DAX channel is found through it).
pub fn build_device_at(
    config: &Config, root: &Path, trace: Option<File>, socket_path: &Path,
) -> Result<Arc<FsDevice>, ServerError> {
    let dispatcher = build_dispatcher_at(config, root, trace, socket_path)?;
    Ok(FsDevice::new(
        DeviceConfig {
            tag: config.tag.clone(),
            num_request_queues: config.num_request_queues,
            queue_size: config.queue_size,
            thread_pool_size: config.thread_pool_size,
            migration: config.migration,
        },
        dispatcher,
    ))
}

/// Builds the filesystem, DAX window and dispatcher from the configuration.
pub fn build_dispatcher(config: &Config) -> Result<Arc<Dispatcher>, ServerError> {
    let socket_path = configured_socket_path(config);
    build_dispatcher_at(
        config,
        &config.shared_dir,
        open_trace(config)?,
        &socket_path,
    )
}

/// The socket path the configuration names (empty for `--fd` and
/// `--mount-point`).
fn configured_socket_path(config: &Config) -> PathBuf {
    match &config.transport {
        Transport::VhostUser(Listen::Path { path, .. }) => path.clone(),
        _ => PathBuf::new(),
    }
}

/// Opens the `--dax-trace` file, if any (it may lie outside the shared
/// directory, so a sandboxed daemon gets it opened before the sandbox).
fn open_trace(config: &Config) -> Result<Option<File>, ServerError> {
    config
        .dax
        .as_ref()
        .and_then(|dax| dax.trace.as_deref())
        .map(DaxTrace::open_file)
        .transpose()
        .map_err(ServerError::Trace)
}

fn build_dispatcher_at(
    config: &Config, root: &Path, trace: Option<File>, socket_path: &Path,
) -> Result<Arc<Dispatcher>, ServerError> {
    let fs = PassthroughFs::new(FsConfig {
        shared_dir: root.to_owned(),
        cache: config.cache,
        readonly: config.readonly,
        xattr: config.xattr,
        xattrmap: config.xattrmap.clone(),
        allow_direct_io: config.switches.allow_direct_io,
        preserve_noatime: config.switches.preserve_noatime,
        announce_submounts: config.switches.announce_submounts,
        inode_dax: config.inode_dax(),
        inode_file_handles: config.inode_file_handles,
        handle_calls: config.file_handle_calls(),
        ids: config.translate.clone(),
    })
    .map_err(|source| ServerError::SharedDir {
        path: config.shared_dir.clone(),
        source,
    })?;
    let dax = match &config.dax {
        None => None,
        Some(dax) => Some(Arc::new(
            Dax::with_trace(
                dax.window_size,
                dax.protocol,
                socket_path.to_owned(),
                trace.map(|file| Arc::new(DaxTrace::new(file, root))),
            )
            .map_err(ServerError::Dax)?,
        )),
    };
    let policy = InitPolicy {
        cache: config.cache,
        dax_window: dax.is_some(),
        inode_dax: dax.is_some(),
        offers: Offers {
            writeback: config.switches.writeback,
            readdirplus: config.switches.readdirplus,
            killpriv_v2: config.switches.killpriv_v2,
            allow_mmap: config.switches.allow_mmap,
            submounts: config.switches.announce_submounts,
            posix_acl: config.switches.posix_acl,
            security_label: config.switches.security_label,
        },
    };
    Ok(Arc::new(Dispatcher::new(Arc::new(fs), policy, dax)))
}

/// Runs the daemon: binds the socket, enters the sandbox and serves one
/// frontend connection, or one after another with `--persist`, until the
/// frontend leaves or a stop signal arrives. Every connection starts with a
/// fresh session. Returns the status to exit with (a supervisor returns its
/// sandboxed daemon's).
pub fn run(config: &Config) -> Result<ExitCode, ServerError> {
    crate::process::rlimit::apply(config.rlimit_nofile)?;
    if config.inode_file_handles == InodeFileHandles::Fallback {
        tracing::warn!("--inode-file-handles=fallback is deprecated: it means prefer");
    }
    let listen = match &config.transport {
        Transport::FuseDev { mount_point } => {
            if config.sandbox.is_some_and(|m| m != SandboxMode::None) {
                tracing::warn!("--sandbox does not apply to --mount-point (a test transport)");
            }
            // Modes arrive with the guest's umask already applied; the
            // daemon's own umask must not mask them again.
            rustix::process::umask(rustix::fs::Mode::empty());
            return run_fuse(config, mount_point).map(|()| ExitCode::SUCCESS);
        }
        Transport::VhostUser(listen) => listen,
    };
    // Before any thread or child process exists, so all of them inherit it.
    let signals = BlockedSignals::block(&STOP_SIGNALS).map_err(ServerError::Signals)?;
    let (unix_listener, socket_file, socket_path, pid_file) = listen_on(listen)?;
    let socket_path = &socket_path;
    let remove_socket = || {
        if let Some(file) = &socket_file {
            file.remove();
        }
    };
    // Outside the sandbox and under the caller's umask, like the socket.
    let trace = match open_trace(config) {
        Ok(trace) => trace,
        Err(error) => {
            remove_socket();
            return Err(error);
        }
    };
    rustix::process::umask(rustix::fs::Mode::empty());
    let mode = config.sandbox_mode();
    let original = rustix::process::getpid();
    let entered = crate::process::sandbox::enter(
        mode,
        &config.shared_dir,
        unix_listener.as_fd(),
        config.metrics_file.is_some(),
        &config.user_ns,
    );
    let jail = match entered {
        Ok(Role::Supervisor(supervisor)) => {
            // The sandboxed daemon owns the socket now; this copy closes
            // without removing the file. The trace file is the daemon's too.
            drop(unix_listener);
            drop(trace);
            tracing::debug!(
                child = supervisor.child().as_raw_nonzero().get(),
                "supervising"
            );
            return Ok(supervisor.run(
                &signals,
                config.metrics_file.as_deref(),
                socket_file.as_ref(),
            ));
        }
        Ok(Role::Daemon(jail)) => jail,
        Err(error) => {
            // Only the process that bound the socket, outside the sandbox,
            // removes it; a failed child leaves that to its supervisor.
            if rustix::process::getpid() == original {
                remove_socket();
            }
            return Err(ServerError::Sandbox(error));
        }
    };
    let _pid_file = pid_file_of_daemon(pid_file, mode);
    let served = serve_in(config, jail, unix_listener, signals, socket_path, trace);
    if mode == SandboxMode::None {
        remove_socket();
    }
    served.map(|()| ExitCode::SUCCESS)
}

/// What the daemon proper keeps of the pid file. Sandboxed, the supervisor
/// holds its lock and the daemon keeps no descriptor of a file outside the
/// share but the socket (and the trace file it writes); without a sandbox
/// this process is the daemon and holds it until it returns.
fn pid_file_of_daemon(pid_file: Option<PidFile>, mode: SandboxMode) -> Option<PidFile> {
    match pid_file {
        Some(file) if mode != SandboxMode::None => {
            file.close();
            None
        }
        kept => kept,
    }
}

/// The listening socket: bound at `--socket-path` (the socket file is the
/// daemon's, removed when it stops, and `PATH.pid` is locked first so that
/// a second daemon on the same path stops before it replaces the socket),
/// or inherited with `--fd` (libvirt's, which removes it itself). Also
/// returns the socket's path.
fn listen_on(
    listen: &Listen,
) -> Result<(UnixListener, Option<SocketFile>, PathBuf, Option<PidFile>), ServerError> {
    match listen {
        Listen::Path { path, group } => {
            let pid_file = PidFile::lock(&PidFile::path_for(path)).map_err(ServerError::PidFile)?;
            let (listener, file) = SocketFile::bind(path, group.as_ref().map(|&(_, gid)| gid))
                .map_err(ServerError::Listen)?;
            Ok((listener, Some(file), path.clone(), Some(pid_file)))
        }
        Listen::Fd(fd) => {
            let listener =
                crate::process::inherited::take_listener(*fd).map_err(ServerError::Inherit)?;
            let path = listener
                .local_addr()
                .ok()
                .and_then(|addr| addr.as_pathname().map(Path::to_owned))
                .unwrap_or_default();
            Ok((listener, None, path, None))
        }
    }
}

/// The daemon proper, inside `jail`: opens the share, drops capabilities,
/// starts its threads, installs seccomp, then serves.
fn serve_in(
    config: &Config, jail: Jail, unix_listener: UnixListener, signals: BlockedSignals,
    socket_path: &Path, trace: Option<File>,
) -> Result<(), ServerError> {
    let device = build_device_at(config, &jail.root, trace, socket_path)?;
    if jail.mode != SandboxMode::None {
        crate::process::fds::enter_fd_dir().map_err(|source| {
            ServerError::Sandbox(crate::process::sandbox::step_io("entering /proc/self/fd")(
                source,
            ))
        })?;
    }
    let file_handles = config.file_handle_calls();
    crate::process::sandbox::caps::restrict_to(
        crate::process::sandbox::caps::daemon_caps(file_handles, config.modcaps),
        config.modcaps.add,
    )
    .map_err(ServerError::Sandbox)?;
    let shutdown = Shutdown::new(unix_listener.as_fd()).map_err(ServerError::Signals)?;
    let mut listener = Listener::from(unix_listener);
    shutdown
        .spawn_signal_thread(signals)
        .map_err(ServerError::Signals)?;
    let stop_on_panic = Arc::clone(&shutdown);
    device
        .worker_failure()
        .on_panic(move || stop_on_panic.fail());
    let metrics = start_metrics(config, jail.metrics_relay, &device)?;
    let capabilities = crate::process::sandbox::caps::effective();
    crate::process::sandbox::seccomp::install(config.seccomp, file_handles)
        .map_err(ServerError::Seccomp)?;
    tracing::info!(
        socket = %socket_path.display(),
        shared_dir = %config.shared_dir.display(),
        tag = %config.tag,
        queues = config.num_request_queues,
        sandbox = ?jail.mode,
        seccomp = ?config.seccomp,
        ?capabilities,
        "daxfsd listening"
    );
    serve_frontends(config, &device, &mut listener, &shutdown, socket_path)?;
    if let Some(signal) = shutdown.requested() {
        tracing::info!(
            signal = crate::process::signals::signal_name(signal),
            "stopped"
        );
    }
    if let Some(sink) = &metrics {
        if let Err(error) = crate::metrics::write_now(&device, sink) {
            tracing::warn!(%error, "cannot write the final metrics");
        }
    }
    match device.worker_failure().first() {
        Some(panic) => Err(ServerError::WorkerPanicked(panic.clone())),
        None => Ok(()),
    }
}

/// Starts the thread that writes the metrics every second, when asked for
/// (a file of `--metrics-file`, or through the supervisor's relay).
fn start_metrics(
    config: &Config, relay: Option<OwnedFd>, device: &Arc<FsDevice>,
) -> Result<Option<Arc<MetricsSink>>, ServerError> {
    let metrics = match (relay, &config.metrics_file) {
        (Some(relay), _) => Some(Arc::new(MetricsSink::Relay(relay))),
        (None, Some(path)) => Some(Arc::new(MetricsSink::File(path.clone()))),
        (None, None) => None,
    };
    if let Some(sink) = &metrics {
        crate::metrics::spawn_writer(
            Arc::clone(device),
            sink.clone(),
            std::time::Duration::from_secs(1),
        )
        .map_err(|source| ServerError::Metrics {
            path: config.metrics_file.clone().unwrap_or_default(),
            source,
        })?;
    }
    Ok(metrics)
}

/// Serves one frontend after another on `listener` (one with `--persist`,
/// else only the first) until a stop signal or a worker's panic.
fn serve_frontends(
    config: &Config, device: &Arc<FsDevice>, listener: &mut Listener, shutdown: &Shutdown,
    socket_path: &Path,
) -> Result<(), ServerError> {
    // One listener for the daemon's whole life: a frontend that connects
    // while the previous session is winding down waits in its backlog
    // instead of landing on a stale socket.
    loop {
        let mut daemon = VhostUserDaemon::new(
            "daxfsd".to_owned(),
            Arc::clone(device),
            GuestMemoryAtomic::new(GuestRam::new()),
        )
        .map_err(ServerError::Device)?;
        let served = match daemon.start(listener) {
            // The signal thread (or a worker's panic) shut the listener down.
            Err(_) if shutdown.stopping() => break,
            Err(cause) => Err(cause),
            Ok(()) => {
                shutdown.session_started(daemon.shutdown_handle());
                let waited = daemon.wait();
                shutdown.session_ended();
                waited
            }
        };
        // Dropping the daemon stops and joins this connection's workers.
        drop(daemon);
        // The frontend is gone: whatever the guest held is released.
        device.dispatcher().end_session(SessionEnd::Disconnect);
        device.forget_window_placement();
        match served {
            Ok(()) => tracing::info!("frontend disconnected"),
            Err(vhost_user_backend::Error::HandleRequest(
                vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
            )) => tracing::info!("frontend disconnected"),
            Err(cause) => {
                return Err(ServerError::Serve {
                    socket: socket_path.to_owned(),
                    cause,
                })
            }
        }
        if shutdown.stopping() || !config.persist {
            break;
        }
        tracing::info!("--persist: waiting for the next frontend");
    }
    Ok(())
}

/// Serves the share over /dev/fuse on `mount_point` until it is unmounted.
fn run_fuse(config: &Config, mount_point: &std::path::Path) -> Result<(), ServerError> {
    let dispatcher = build_dispatcher(config)?;
    crate::transport::fuse_dev::run(
        &dispatcher,
        &config.shared_dir,
        mount_point,
        &config.tag,
        config.num_request_queues,
    )
    .map_err(ServerError::Fuse)
}
