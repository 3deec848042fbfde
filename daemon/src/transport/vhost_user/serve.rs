//! Serving one descriptor chain: its buffers split and checked, the
//! request read out of them, dispatched, and the reply written back (into
//! guest memory, or through the mapped files for window pieces); chains
//! that cannot be served are answered with an errno when their header can
//! be read.

use std::sync::atomic::Ordering;

use virtio_queue::DescriptorChain;
use vm_memory::GuestMemoryLoadGuard;

use super::chain::{ChainShape, QueueBuffers};
use super::{FsDevice, GuestRam, MAX_REQUEST};
use crate::dispatch::{Reply, REQUEST_HEADER_LEN};
use crate::errno::Errno;
use crate::transport::vhost_user::guest_io::GuestBuffers;
use crate::transport::vhost_user::window_buffers::{gather, scatter, BufferError, WindowView};

impl FsDevice {
    /// Serves one chain; returns the bytes written into it.
    pub(super) fn serve_chain(
        &self, mem: &GuestMemoryLoadGuard<GuestRam>,
        chain: DescriptorChain<GuestMemoryLoadGuard<GuestRam>>, buffers: &mut QueueBuffers,
    ) -> u32 {
        let view = WindowView::new(&self.placement, self.dax.as_deref());
        let split = match buffers.split_chain(mem, chain, view.as_ref()) {
            Ok(split) => split,
            Err(e) => {
                self.bad_chain("buffers unusable", &e);
                return 0;
            }
        };
        // Only a chain with window pieces moves bytes through the window.
        let window = view.filter(|_| split.readable_window || split.writable_window);
        let (len, capacity) = (split.readable_len, split.writable_len);
        if let Some(e) = split.readable_fault {
            self.bad_chain("request buffers unusable", &e);
            return self.refuse_unreadable(mem, buffers, capacity, window);
        }
        let shape = ChainShape {
            len,
            capacity,
            // An oversized request is refused from its header alone (E2BIG,
            // echoing its unique) without copying the rest.
            oversized: len > MAX_REQUEST,
            window,
            // Reply buffers in the window: the reply is made in the daemon's
            // memory, then written out through the mapped files.
            bounce: window.filter(|_| split.writable_window),
        };
        if let Err(written) = self.read_request(mem, buffers, &shape) {
            return written;
        }
        // Reply buffers in the window are checked before the request runs.
        if let Some(w) = shape.bounce.filter(|_| !shape.oversized) {
            if let Err(e) = w.check_scatter(mem, &buffers.writable) {
                self.bad_chain("reply buffers in the window", &e);
                return self.reply_error(mem, buffers, len, e.errno(), capacity, window);
            }
        }
        self.answer(mem, buffers, &shape)
    }

    /// Copies the request (its header alone when oversized) into
    /// `buffers.request`; on failure, the bytes written into the chain by
    /// the error reply, if any.
    fn read_request(
        &self, mem: &GuestRam, buffers: &mut QueueBuffers, shape: &ChainShape<'_>,
    ) -> Result<(), u32> {
        let len = if shape.oversized {
            REQUEST_HEADER_LEN
        } else {
            shape.len
        };
        buffers.request.clear();
        buffers.request.resize(len, 0);
        let Err(e) = gather(
            shape.window.as_ref(),
            mem,
            &buffers.readable,
            &mut buffers.request,
        ) else {
            return Ok(());
        };
        self.bad_chain("reading the request", &e.error);
        Err(match e.error {
            // A window page that maps nothing: the guest hears EFAULT.
            BufferError::Window(_) => {
                let errno = e.error.errno();
                self.reply_error(mem, buffers, e.copied, errno, shape.capacity, shape.window)
            }
            // split_chain validated every guest buffer, so this is not
            // expected; the request may be partial, so it is not served.
            BufferError::Memory(_) => 0,
        })
    }

    /// Serves the request in `buffers.request` and writes its reply into
    /// the chain; returns the bytes written.
    fn answer(&self, mem: &GuestRam, buffers: &mut QueueBuffers, shape: &ChainShape<'_>) -> u32 {
        let QueueBuffers {
            request,
            reply,
            writable,
            bounce_space,
            ..
        } = buffers;
        let capacity = shape.capacity;
        let answer = if shape.oversized {
            self.dispatcher
                .refuse(request, Errno::E2BIG, reply, capacity)
        } else if shape.bounce.is_some() {
            bounce_space.set_capacity(capacity);
            let answer = self.dispatcher.dispatch(request, reply, bounce_space);
            bounce_space.assemble(reply, answer)
        } else {
            let guest = GuestBuffers::new(mem, writable);
            self.dispatcher.dispatch(request, reply, &guest)
        };
        let Some((head, data)) = answer.head_and_data() else {
            return 0;
        };
        match scatter(shape.bounce.as_ref(), mem, writable, &reply[..head]) {
            Ok(()) => (head + data) as u32,
            Err(e) => {
                self.bad_chain("writing the reply", &e);
                match e {
                    // The guest removed a mapping while using it: tell it.
                    BufferError::Window(_) => {
                        self.reply_error(mem, buffers, shape.len, e.errno(), capacity, shape.window)
                    }
                    BufferError::Memory(_) => 0,
                }
            }
        }
    }

    /// A request whose later buffers the daemon cannot read (outside guest
    /// memory and the DAX window's reported placement): answered EFAULT when
    /// its header is readable, so the guest's request fails instead of
    /// hanging; otherwise given back with nothing written.
    fn refuse_unreadable(
        &self, mem: &GuestRam, buffers: &mut QueueBuffers, capacity: usize,
        window: Option<WindowView<'_>>,
    ) -> u32 {
        let readable: usize = buffers.readable.iter().map(|&(_, len)| len).sum();
        let head = readable.min(REQUEST_HEADER_LEN);
        buffers.request.clear();
        buffers.request.resize(head, 0);
        if gather(
            window.as_ref(),
            mem,
            &buffers.readable,
            &mut buffers.request,
        )
        .is_err()
        {
            return 0;
        }
        self.reply_error(mem, buffers, head, Errno::EFAULT, capacity, window)
    }

    /// Answers the request whose first `head` bytes are in `buffers.request`
    /// with `errno`, when its unique id is among them and the chain has room
    /// for a reply header; returns the bytes written.
    fn reply_error(
        &self, mem: &GuestRam, buffers: &mut QueueBuffers, head: usize, errno: Errno,
        capacity: usize, window: Option<WindowView<'_>>,
    ) -> u32 {
        let head = head.min(REQUEST_HEADER_LEN).min(buffers.request.len());
        let QueueBuffers {
            request,
            reply,
            writable,
            ..
        } = buffers;
        let Reply::Buffer(len) =
            self.dispatcher
                .refuse_partial(&request[..head], errno, reply, capacity)
        else {
            return 0;
        };
        match scatter(window.as_ref(), mem, writable, &reply[..len]) {
            Ok(()) => len as u32,
            Err(e) => {
                self.bad_chain("writing the reply", &e);
                0
            }
        }
    }

    /// Counts a chain the device could not use, and logs it (rate-limited).
    pub(super) fn bad_chain(&self, what: &str, error: &dyn std::fmt::Display) {
        self.stats.bad_chains.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.bad_chain_log.check() {
            tracing::warn!(suppressed, %error, "bad descriptor chain: {what}");
        }
    }
}
