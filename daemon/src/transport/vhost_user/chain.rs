//! A descriptor chain's buffers: one walk splits them into the request's
//! and the reply's, checked against guest memory and the DAX window.

use virtio_queue::DescriptorChain;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryLoadGuard};

use super::dirty_log::GuestRam;

use crate::dispatch::DaemonReplySpace;
use crate::transport::vhost_user::window_buffers::WindowView;

/// Why a chain's buffers cannot be used.
#[derive(Debug, thiserror::Error)]
pub(super) enum ChainError {
    /// The lengths of one direction's descriptors add up past `usize`.
    #[error("descriptor lengths overflow")]
    Overflow,
    /// A descriptor lies (partly) outside guest memory and is not wholly
    /// inside the DAX window's reported placement.
    #[error("descriptor outside guest memory")]
    Memory(#[source] vm_memory::GuestMemoryError),
}

/// What [`QueueBuffers::split_chain`] found.
pub(super) struct SplitChain {
    pub(super) readable_len: usize,
    pub(super) writable_len: usize,
    /// A readable descriptor outside guest memory: `readable` holds only the
    /// buffers before it.
    pub(super) readable_fault: Option<ChainError>,
    /// Whether `readable` (`writable`) holds window pieces: descriptors
    /// wholly inside the DAX window, kept whole at their guest-physical
    /// address (see [`crate::window_buffers`]).
    pub(super) readable_window: bool,
    pub(super) writable_window: bool,
}

/// Per-queue scratch buffers, reused for every request on that queue.
#[derive(Debug, Default)]
pub(super) struct QueueBuffers {
    pub(super) request: Vec<u8>,
    pub(super) reply: Vec<u8>,
    /// The current chain's device-readable buffers, cut at memory-region
    /// boundaries (window pieces whole), in chain order.
    pub(super) readable: Vec<(GuestAddress, usize)>,
    /// Its device-writable buffers, likewise.
    pub(super) writable: Vec<(GuestAddress, usize)>,
    /// The reply space of a chain whose reply buffers lie in the DAX
    /// window (the reply is made here, then written through the files).
    pub(super) bounce_space: DaemonReplySpace,
}

impl QueueBuffers {
    /// Splits `chain` into readable and writable buffers, checking every
    /// descriptor against guest memory, in one walk of the chain (what
    /// virtio-queue's `Reader::new` and `Writer::new` each check, without
    /// their per-request allocations). With a `window`, a descriptor outside
    /// guest memory but wholly inside the window is a window piece.
    pub(super) fn split_chain(
        &mut self, mem: &GuestRam, chain: DescriptorChain<GuestMemoryLoadGuard<GuestRam>>,
        window: Option<&WindowView<'_>>,
    ) -> Result<SplitChain, ChainError> {
        self.readable.clear();
        self.writable.clear();
        let (mut readable_len, mut writable_len) = (0usize, 0usize);
        let (mut readable_window, mut writable_window) = (false, false);
        let mut readable_fault = None;
        for desc in chain {
            let len = desc.len() as usize;
            let write_only = desc.is_write_only();
            if !write_only && readable_fault.is_some() {
                // Readable bytes after an unusable one are never read.
                continue;
            }
            let (pieces, total, in_window) = if write_only {
                (&mut self.writable, &mut writable_len, &mut writable_window)
            } else {
                (&mut self.readable, &mut readable_len, &mut readable_window)
            };
            *total = total.checked_add(len).ok_or(ChainError::Overflow)?;
            let mut at = desc.addr();
            if window.is_some_and(|w| w.window_offset(mem, at, len).is_some()) {
                pieces.push((at, len));
                *in_window = true;
                continue;
            }
            for slice in mem.get_slices(at, len) {
                let piece = match slice {
                    Ok(slice) => slice.len(),
                    // A readable buffer the daemon cannot see (e.g. data in
                    // the DAX window before the frontend reported where it
                    // is): the request cannot be served, but its header may
                    // still be readable for an EFAULT.
                    Err(e) if !write_only => {
                        readable_fault = Some(ChainError::Memory(e));
                        break;
                    }
                    Err(e) => return Err(ChainError::Memory(e)),
                };
                pieces.push((at, piece));
                // Only used if another piece follows, so it cannot have wrapped.
                at = GuestAddress(at.0.wrapping_add(piece as u64));
            }
        }
        Ok(SplitChain {
            readable_len,
            writable_len,
            readable_fault,
            readable_window,
            writable_window,
        })
    }
}

/// What [`FsDevice::serve_chain`] learnt of a chain before serving it.
pub(super) struct ChainShape<'a> {
    /// Readable bytes (the request).
    pub(super) len: usize,
    /// Writable bytes (room for the reply).
    pub(super) capacity: usize,
    /// Whether the request is too large to serve (refused from its header).
    pub(super) oversized: bool,
    /// The window, when the chain has buffers in it.
    pub(super) window: Option<WindowView<'a>>,
    /// The window, when the chain's reply buffers are in it.
    pub(super) bounce: Option<WindowView<'a>>,
}
