//! An in-process stand-in for the VMM's end of the vhost-user backend
//! channel: a thread that reads every backend request (SHMEM_MAP and
//! SHMEM_UNMAP, with the file descriptors they carry), drops the
//! descriptors, and acknowledges success when asked to (REPLY_ACK).
//!
//! With it the DAX window's whole request path runs — index, placeholders,
//! file pinning, the channel's send and ack — without a VM, at the cost of
//! one socket round trip per map or unmap.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;

use vhost::vhost_user::Backend;

/// `VhostUserMsgHeader` flags: version 1, and the reply / need-reply bits.
const VERSION: u32 = 0x1;
const REPLY: u32 = 0x4;
const NEED_REPLY: u32 = 0x8;

/// Starts the responder; returns the daemon's end of the channel.
pub fn spawn() -> Backend {
    let (daemon_end, vmm_end) = UnixStream::pair().expect("socketpair");
    std::thread::Builder::new()
        .name("fake-vmm".into())
        .spawn(move || respond(vmm_end))
        .expect("spawn the fake VMM");
    let backend = Backend::from_stream(daemon_end);
    backend.set_reply_ack_flag(true);
    backend.set_shmem_flag(true);
    backend
}

/// Acknowledges every request until the daemon's end closes. `read` drops
/// the SCM_RIGHTS descriptors that arrive with a request (the kernel closes
/// them), which is all a VMM that does not really map needs to do.
fn respond(mut sock: UnixStream) {
    let mut header = [0u8; 12];
    let mut body = vec![0u8; 4096];
    loop {
        if sock.read_exact(&mut header).is_err() {
            return;
        }
        let word = |i: usize| u32::from_ne_bytes(header[i..i + 4].try_into().expect("4 bytes"));
        let (request, flags, size) = (word(0), word(4), word(8) as usize);
        if size > body.len() {
            body.resize(size, 0);
        }
        if sock.read_exact(&mut body[..size]).is_err() {
            return;
        }
        if flags & NEED_REPLY != 0 {
            let mut reply = [0u8; 20];
            reply[0..4].copy_from_slice(&request.to_ne_bytes());
            reply[4..8].copy_from_slice(&(VERSION | REPLY).to_ne_bytes());
            reply[8..12].copy_from_slice(&8u32.to_ne_bytes());
            // Bytes 12..20: the u64 result, 0 = success.
            if sock.write_all(&reply).is_err() {
                return;
            }
        }
    }
}
