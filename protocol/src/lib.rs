//! FUSE and virtio-fs wire format for daxfsd.
//!
//! Bytes in, types out: [`request::parse`] turns the readable bytes of one
//! virtqueue descriptor chain into a validated [`request::Request`], and
//! [`reply`] encodes answers. The crate does no I/O and never panics on
//! input; malformed requests become a [`request::ParseError`] that names the
//! errno to reply with.

pub mod abi;
pub mod encode;
pub mod errno;
pub mod extension;
mod parse_error;
pub mod reply;
pub mod request;

pub use abi::Opcode;
pub use extension::{Layout, SecurityContext};
pub use request::{parse, parse_with, Limits, Operation, ParseError, Request};
