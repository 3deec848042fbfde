//! The one reply writer's contract with a transport: the transport offers
//! a [`ReplySpace`] (its writable bytes, which take READ data in place);
//! the dispatcher answers with a [`Reply`] saying what to send.
//!
//! The split is what keeps the rooms apart: the dispatcher decides the FUSE
//! layout (the out header first, READ data right after it), the transport
//! only moves bytes into its memory (guest buffers of a virtqueue chain, a
//! daemon buffer for `/dev/fuse`), and the filesystem only sees a
//! [`ReadSink`].

use std::cell::RefCell;

use crate::errno::Errno;
use crate::fs::{BufferSink, ReadSink};

/// What a transport sends back for one request.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    /// The first `len` bytes of the reply buffer are the whole reply.
    Buffer(usize),
    /// The first `head` bytes of the reply buffer (the out header) start
    /// the reply; `data` more bytes already sit right after them in the
    /// transport's [`ReplySpace`] (a READ filled them in place).
    WithData {
        /// Bytes of the reply buffer (the out header).
        head: usize,
        /// Bytes placed in the reply space after them.
        data: usize,
    },
    /// Nothing is sent: the operation has no reply (FORGET, BATCH_FORGET,
    /// INTERRUPT), or the space has no room for even an out header.
    Nothing,
}

impl Reply {
    /// The reply as (bytes of the reply buffer, bytes in the space after
    /// them), or `None` when nothing is sent.
    pub fn head_and_data(&self) -> Option<(usize, usize)> {
        match *self {
            Reply::Buffer(len) => Some((len, 0)),
            Reply::WithData { head, data } => Some((head, data)),
            Reply::Nothing => None,
        }
    }
}

/// A transport's writable reply space. READ data goes straight from the
/// file into it; the dispatcher decides where (after the out header).
pub trait ReplySpace {
    /// Writable bytes the transport offers for the reply.
    fn capacity(&self) -> usize;

    /// Runs `read` with a sink for bytes `[from, from + len)` of the space
    /// (clipped to it); returns what `read` returns.
    fn read_into_range(
        &self, from: usize, len: usize,
        read: &mut dyn FnMut(&mut dyn ReadSink) -> Result<usize, Errno>,
    ) -> Result<usize, Errno>;
}

/// A [`ReplySpace`] of the daemon's own memory, for transports that send a
/// reply from daemon buffers (`/dev/fuse`, a virtqueue chain whose reply
/// buffers lie in the DAX window). READ data lands in [`Self::data`]; the
/// transport sends the reply buffer's head, then that data.
///
/// Guarded by its `RefCell`: one request at a time on one thread (the
/// transport's worker owns the space).
#[derive(Debug, Default)]
pub struct DaemonReplySpace {
    capacity: usize,
    /// The in-place bytes of the current reply (the range the dispatcher
    /// asked for, from its start).
    data: RefCell<Vec<u8>>,
}

impl DaemonReplySpace {
    /// A space of `capacity` bytes.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            data: RefCell::new(Vec::new()),
        }
    }

    /// Sets the capacity of the next reply (a chain's writable bytes).
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
    }

    /// The first `data` bytes placed in the space by the last
    /// [`Reply::WithData`].
    pub fn data(&mut self, data: usize) -> &[u8] {
        let bytes = self.data.get_mut();
        &bytes[..data.min(bytes.len())]
    }

    /// Appends the reply's in-place data to `reply`, for a transport that
    /// sends one contiguous buffer: the same reply, all in `reply`.
    pub fn assemble(&mut self, reply: &mut Vec<u8>, answer: Reply) -> Reply {
        let Some((head, data)) = answer.head_and_data() else {
            return Reply::Nothing;
        };
        reply.truncate(head);
        reply.extend_from_slice(self.data(data));
        Reply::Buffer(head + data)
    }
}

impl ReplySpace for DaemonReplySpace {
    fn capacity(&self) -> usize {
        self.capacity
    }

    fn read_into_range(
        &self, from: usize, len: usize,
        read: &mut dyn FnMut(&mut dyn ReadSink) -> Result<usize, Errno>,
    ) -> Result<usize, Errno> {
        let len = len.min(self.capacity.saturating_sub(from));
        let mut data = self.data.borrow_mut();
        data.clear();
        data.resize(len, 0);
        let n = read(&mut BufferSink(&mut data))?;
        data.truncate(n);
        Ok(n)
    }
}
