//! Start-up and the connection loop.

use std::path::PathBuf;
use std::sync::Arc;

use vhost::vhost_user::Listener;
use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::cli::Args;
use crate::dax::Dax;
use crate::device::{DeviceConfig, FsDevice};
use crate::dispatch::{Dispatcher, InitPolicy, SessionEnd};
use crate::passthrough::{FsConfig, PassthroughFs};

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
    #[error("cannot listen on {socket}")]
    Listen {
        /// The socket.
        socket: PathBuf,
        /// Cause.
        #[source]
        source: vhost::vhost_user::Error,
    },
    /// Neither `--socket-path` nor `--mount-point` was given.
    #[error("no transport: give --socket-path or --mount-point")]
    NoTransport,
    /// The host FUSE transport (`--mount-point`) failed.
    #[error("host FUSE transport")]
    Fuse(#[source] crate::fuse_dev::FuseDevError),
    /// Serving a connection failed.
    #[error("serving {socket}: {cause}")]
    Serve {
        /// The socket.
        socket: PathBuf,
        /// Cause (see above for why it is not a `#[source]`).
        cause: vhost_user_backend::Error,
    },
}

/// Builds the filesystem and device from the command line.
pub fn build_device(args: &Args) -> Result<Arc<FsDevice>, ServerError> {
    let dispatcher = build_dispatcher(args)?;
    Ok(Arc::new(FsDevice::new(
        DeviceConfig {
            tag: args.tag.clone(),
            num_request_queues: args.num_request_queues,
            queue_size: args.queue_size,
        },
        dispatcher,
    )))
}

/// Builds the filesystem, DAX window and dispatcher from the command line.
pub fn build_dispatcher(args: &Args) -> Result<Arc<Dispatcher>, ServerError> {
    let fs = PassthroughFs::new(FsConfig {
        shared_dir: args.shared_dir.clone(),
        cache: args.cache,
        readonly: args.readonly,
        xattr: args.xattr,
        inode_dax: args.inode_dax,
    })
    .map_err(|source| ServerError::SharedDir {
        path: args.shared_dir.clone(),
        source,
    })?;
    let dax = match args.cache_size {
        0 => None,
        size => Some(Arc::new(
            Dax::new(
                size,
                args.dax_protocol,
                args.socket_path.clone().unwrap_or_default(),
            )
            .map_err(ServerError::Dax)?,
        )),
    };
    let policy = InitPolicy {
        cache: args.cache,
        dax_window: dax.is_some(),
        inode_dax: dax.is_some(),
    };
    Ok(Arc::new(Dispatcher::new(Arc::new(fs), policy, dax)))
}

/// Serves the socket: one frontend connection, or one after another with
/// `--persist`. Every connection starts with a fresh session.
pub fn run(args: &Args) -> Result<(), ServerError> {
    // Modes arrive with the guest's umask already applied; the daemon's own
    // umask must not mask them again.
    rustix::process::umask(rustix::fs::Mode::empty());
    raise_fd_limit();
    let socket_path = match (&args.mount_point, &args.socket_path) {
        (Some(mount_point), _) => return run_fuse(args, mount_point),
        (None, Some(socket_path)) => socket_path,
        (None, None) => return Err(ServerError::NoTransport),
    };
    let device = build_device(args)?;
    if let Some(path) = &args.metrics_file {
        crate::metrics::spawn_writer(
            device.clone(),
            path.clone(),
            std::time::Duration::from_secs(1),
        )
        .map_err(|source| ServerError::Metrics {
            path: path.clone(),
            source,
        })?;
    }
    tracing::info!(
        socket = %socket_path.display(),
        shared_dir = %args.shared_dir.display(),
        tag = %args.tag,
        queues = args.num_request_queues,
        "daxfsd listening"
    );
    // One listener for the daemon's whole life: a frontend that connects
    // while the previous session is winding down waits in its backlog
    // instead of landing on a stale socket.
    let mut listener = Listener::new(socket_path, true).map_err(|source| ServerError::Listen {
        socket: socket_path.clone(),
        source,
    })?;
    loop {
        let mut daemon = VhostUserDaemon::new(
            "daxfsd".to_owned(),
            device.clone(),
            GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        )
        .map_err(ServerError::Device)?;
        let served = daemon.start(&mut listener).and_then(|()| daemon.wait());
        // Dropping the daemon stops and joins this connection's workers.
        drop(daemon);
        // The frontend is gone: whatever the guest held is released.
        device.dispatcher().end_session(SessionEnd::Disconnect);
        match served {
            Ok(()) => tracing::info!("frontend disconnected"),
            Err(vhost_user_backend::Error::HandleRequest(
                vhost::vhost_user::Error::Disconnected | vhost::vhost_user::Error::PartialMessage,
            )) => tracing::info!("frontend disconnected"),
            Err(cause) => {
                return Err(ServerError::Serve {
                    socket: socket_path.clone(),
                    cause,
                })
            }
        }
        if !args.persist {
            if let Some(path) = &args.metrics_file {
                if let Err(error) = crate::metrics::write_now(&device, path) {
                    tracing::warn!(path = %path.display(), %error, "cannot write the final metrics");
                }
            }
            return Ok(());
        }
        tracing::info!("--persist: waiting for the next frontend");
    }
}

/// Serves the share over /dev/fuse on `mount_point` until it is unmounted.
fn run_fuse(args: &Args, mount_point: &std::path::Path) -> Result<(), ServerError> {
    let dispatcher = build_dispatcher(args)?;
    crate::fuse_dev::run(
        &dispatcher,
        &args.shared_dir,
        mount_point,
        &args.tag,
        args.num_request_queues,
    )
    .map_err(ServerError::Fuse)
}

/// Every inode the guest holds keeps an O_PATH descriptor open, so the soft
/// limit on descriptors is raised to the hard limit.
fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::debug!(limit = ?limit.maximum, "raised RLIMIT_NOFILE"),
            Err(error) => tracing::warn!(%error, "cannot raise RLIMIT_NOFILE"),
        }
    }
}
