//! The transports: how FUSE requests reach the daemon and replies leave it.
//! Each turns its own framing into request bytes for the dispatcher and its
//! own buffers into reply space; neither interprets FUSE beyond that.
//!
//! - [`vhost_user`]: virtqueues of a vhost-user-fs device (a VMM's guest),
//!   with the DAX window's chain buffers;
//! - [`fuse_dev`]: the host kernel's `/dev/fuse` (`--mount-point`), for
//!   testing the request path without a VM.

pub mod fuse_dev;
pub mod vhost_user;
