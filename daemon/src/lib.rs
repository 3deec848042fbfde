//! daxfsd: a vhost-user-fs daemon that shares a host directory with a VM over
//! virtio-fs and serves the DAX window.
//!
//! The binary (`main.rs`) is a thin shell over this library so that tests and
//! fuzz targets can drive the dispatcher and filesystem directly.

pub mod cli;
pub mod device;
pub mod dispatch;
pub mod errno;
pub mod passthrough;
pub mod ratelimit;
pub mod server;
