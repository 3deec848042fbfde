//! FUSE over the device: sending encoded requests (built with
//! `daxfsd_protocol::encode::RequestEncoder`) and checking the replies' framing.

use std::sync::atomic::{AtomicU64, Ordering};

use daxfsd_protocol::abi::{InitOut, OutHeader};
use zerocopy::FromBytes;

use crate::device::Device;
use crate::error::{HarnessError, Result};
use crate::virtqueue::{Completion, Token};

/// Reply buffer large enough for every non-data reply.
pub const DEFAULT_REPLY_CAPACITY: u32 = 4096;
const OUT_HEADER_LEN: usize = std::mem::size_of::<OutHeader>();

/// A reply whose framing was checked: `header.len` equals the bytes the backend wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FuseReply {
    /// The out header.
    pub header: OutHeader,
    /// Everything after the header.
    pub body: Vec<u8>,
}

impl FuseReply {
    /// Checks a reply: at least a header, `len` matching the written length, and an error
    /// field that is 0 or a negated errno (with no body).
    pub fn parse(bytes: &[u8]) -> Result<FuseReply> {
        let (header, body) = OutHeader::read_from_prefix(bytes).map_err(|_| {
            HarnessError::MalformedReply(format!(
                "{} bytes, shorter than the {OUT_HEADER_LEN}-byte out header",
                bytes.len()
            ))
        })?;
        if header.len as usize != bytes.len() {
            return Err(HarnessError::MalformedReply(format!(
                "out header says {} bytes, the backend wrote {}",
                header.len,
                bytes.len()
            )));
        }
        if header.error > 0 || header.error < -4095 {
            return Err(HarnessError::MalformedReply(format!(
                "error field {} is not 0 or a negated errno",
                header.error
            )));
        }
        if header.error != 0 && !body.is_empty() {
            return Err(HarnessError::MalformedReply(format!(
                "error reply ({}) carries a {}-byte body",
                header.error,
                body.len()
            )));
        }
        Ok(FuseReply {
            header,
            body: body.to_vec(),
        })
    }

    /// 0 on success, else the (positive) errno.
    pub fn errno(&self) -> i32 {
        -self.header.error
    }

    /// The body as one fixed-layout struct (it must be at least that long).
    pub fn body_as<T: FromBytes>(&self) -> Result<T> {
        T::read_from_prefix(&self.body)
            .map(|(value, _)| value)
            .map_err(|_| {
                HarnessError::MalformedReply(format!(
                    "body of {} bytes, shorter than {} bytes",
                    self.body.len(),
                    std::mem::size_of::<T>()
                ))
            })
    }

    /// Fails unless the reply is a success; returns self for chaining.
    pub fn ok(self) -> Result<FuseReply> {
        if self.header.error != 0 {
            return Err(HarnessError::MalformedReply(format!(
                "expected success, got errno {}",
                self.errno()
            )));
        }
        Ok(self)
    }
}

/// Source of request ids (`unique`), shared by all queues of a session.
#[derive(Debug, Default)]
pub struct Uniques(AtomicU64);

impl Uniques {
    /// Next id (starting at 1).
    pub fn next(&self) -> u64 {
        self.0.fetch_add(1, Ordering::Relaxed) + 1
    }
}

impl Device {
    /// Sends one FUSE request (as a single readable segment) and checks the reply framing
    /// and its `unique`.
    pub fn fuse(&self, queue: usize, request: &[u8], reply_capacity: u32) -> Result<FuseReply> {
        self.fuse_segments(queue, &[request], reply_capacity)
    }

    /// Like [`Self::fuse`] with the request split over several readable descriptors.
    pub fn fuse_segments(
        &self, queue: usize, segments: &[&[u8]], reply_capacity: u32,
    ) -> Result<FuseReply> {
        let token = self.submit(queue, segments, &[reply_capacity])?;
        let completion = self.wait(token)?;
        check_reply(segments, &completion)
    }

    /// Submits a FUSE request without waiting; collect with [`Self::fuse_wait`].
    pub fn fuse_submit(&self, queue: usize, request: &[u8], reply_capacity: u32) -> Result<Token> {
        self.submit(queue, &[request], &[reply_capacity])
    }

    /// Waits for a request from [`Self::fuse_submit`] and checks its reply against `request`.
    pub fn fuse_wait(&self, token: Token, request: &[u8]) -> Result<FuseReply> {
        let completion = self.wait(token)?;
        check_reply(&[request], &completion)
    }

    /// INIT with `flags`; returns the backend's `InitOut` (after checking the reply).
    pub fn fuse_init(&self, queue: usize, unique: u64, flags: u64) -> Result<InitOut> {
        let reply = self
            .fuse(
                queue,
                &crate::client::requests::init(unique, flags).finish(),
                DEFAULT_REPLY_CAPACITY,
            )?
            .ok()?;
        reply.body_as::<InitOut>()
    }
}

fn check_reply(segments: &[&[u8]], completion: &Completion) -> Result<FuseReply> {
    let reply = FuseReply::parse(&completion.data)?;
    let first: Vec<u8> = segments
        .iter()
        .flat_map(|s| s.iter().copied())
        .take(16)
        .collect();
    if first.len() == 16 {
        let mut unique = [0u8; 8];
        unique.copy_from_slice(&first[8..16]);
        let unique = u64::from_le_bytes(unique);
        if reply.header.unique != unique {
            return Err(HarnessError::MalformedReply(format!(
                "reply unique {} for request unique {unique}",
                reply.header.unique
            )));
        }
    }
    Ok(reply)
}
