//! Request encoding, for clients: the test harness, fuzz seeds and the
//! round-trip property tests. The server never encodes requests.

use zerocopy::{Immutable, IntoBytes};

pub mod requests;

use crate::abi::{InHeader, Opcode};

/// Builds one request: header first, then the pieces in order.
#[derive(Debug, Clone)]
pub struct RequestEncoder {
    header: InHeader,
    body: Vec<u8>,
}

impl RequestEncoder {
    /// A request for `opcode` on `nodeid` with id `unique`, as uid/gid 0.
    pub fn new(opcode: Opcode, unique: u64, nodeid: u64) -> Self {
        Self {
            header: InHeader {
                opcode: opcode as u32,
                unique,
                nodeid,
                ..InHeader::default()
            },
            body: Vec::new(),
        }
    }

    /// Sets the caller's credentials.
    pub fn caller(mut self, uid: u32, gid: u32, pid: u32) -> Self {
        self.header.uid = uid;
        self.header.gid = gid;
        self.header.pid = pid;
        self
    }

    /// Appends a fixed-layout struct.
    pub fn push<T: IntoBytes + Immutable>(mut self, value: &T) -> Self {
        self.body.extend_from_slice(value.as_bytes());
        self
    }

    /// Appends a name with its terminating NUL.
    pub fn name(mut self, name: &[u8]) -> Self {
        self.body.extend_from_slice(name);
        self.body.push(0);
        self
    }

    /// Appends raw bytes.
    pub fn bytes(mut self, bytes: &[u8]) -> Self {
        self.body.extend_from_slice(bytes);
        self
    }

    /// Appends a request extension (a multiple of 8 bytes, as Linux pads
    /// them), counted in the header's `total_extlen`. Extensions come
    /// last, after every argument.
    pub fn extension(mut self, ext: &[u8]) -> Self {
        debug_assert_eq!(ext.len() % 8, 0, "extensions are padded to 8 bytes");
        self.body.extend_from_slice(ext);
        let units = u16::try_from(ext.len() / 8).unwrap_or(u16::MAX);
        self.header.total_extlen = self.header.total_extlen.saturating_add(units);
        self
    }

    /// The finished request, with `len` set to its size.
    pub fn finish(mut self) -> Vec<u8> {
        let len = core::mem::size_of::<InHeader>() + self.body.len();
        self.header.len = len as u32;
        let mut out = Vec::with_capacity(len);
        out.extend_from_slice(self.header.as_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}
