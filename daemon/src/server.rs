//! Start-up and the connection loop.

use std::path::PathBuf;
use std::sync::Arc;

use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

use crate::cli::Args;
use crate::device::{DeviceConfig, FsDevice};
use crate::dispatch::{Dispatcher, InitPolicy};
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
    /// The vhost-user daemon could not be created.
    #[error("cannot create the vhost-user device: {0}")]
    Device(vhost_user_backend::Error),
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
    let fs = PassthroughFs::new(FsConfig {
        shared_dir: args.shared_dir.clone(),
        cache: args.cache,
        readonly: args.readonly,
        xattr: args.xattr,
    })
    .map_err(|source| ServerError::SharedDir {
        path: args.shared_dir.clone(),
        source,
    })?;
    let policy = InitPolicy {
        cache: args.cache,
        dax_window: false,
        inode_dax: false,
    };
    let dispatcher = Arc::new(Dispatcher::new(Arc::new(fs), policy));
    Ok(Arc::new(FsDevice::new(
        DeviceConfig {
            tag: args.tag.clone(),
            num_request_queues: args.num_request_queues,
            queue_size: args.queue_size,
        },
        dispatcher,
    )))
}

/// Serves the socket: one frontend connection, or one after another with
/// `--persist`. Every connection starts with a fresh session.
pub fn run(args: &Args) -> Result<(), ServerError> {
    // Modes arrive with the guest's umask already applied; the daemon's own
    // umask must not mask them again.
    rustix::process::umask(rustix::fs::Mode::empty());
    let device = build_device(args)?;
    tracing::info!(
        socket = %args.socket_path.display(),
        shared_dir = %args.shared_dir.display(),
        tag = %args.tag,
        queues = args.num_request_queues,
        "daxfsd listening"
    );
    loop {
        let mut daemon = VhostUserDaemon::new(
            "daxfsd".to_owned(),
            device.clone(),
            GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        )
        .map_err(ServerError::Device)?;
        let served = daemon.serve(&args.socket_path);
        // The frontend is gone: whatever the guest held is released.
        device.dispatcher().reset();
        match served {
            Ok(()) => tracing::info!("frontend disconnected"),
            Err(cause) => {
                return Err(ServerError::Serve {
                    socket: args.socket_path.clone(),
                    cause,
                })
            }
        }
        if !args.persist {
            return Ok(());
        }
        tracing::info!("--persist: waiting for the next frontend");
    }
}
