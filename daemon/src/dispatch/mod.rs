//! Request dispatch: bytes of one descriptor chain in, reply bytes out.
//!
//! The dispatcher parses with the protocol crate, enforces the session
//! state (nothing but INIT before INIT), calls the passthrough filesystem
//! and encodes the reply into the worker's reusable buffer. It knows nothing
//! about virtqueues or `/dev/fuse`: every transport hands it the request's
//! bytes and a [`ReplySpace`] (its writable bytes, into which READ data goes
//! directly), and sends what the [`Reply`] says.

mod device_state;
mod init;
mod reply;
mod route;
mod size_effect;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use daxfsd_protocol::abi::{
    AttrOut, EntryOut, GetxattrOut, InitOut, LseekOut, OpenOut, OutHeader, StatfsOut, WriteOut,
};
use daxfsd_protocol::reply::{error_reply, ReplyBuf, OUT_HEADER_LEN};
use daxfsd_protocol::{parse_with, Limits, Operation, ParseError, Request};
use zerocopy::{FromBytes, IntoBytes};

use self::init::{dax_always_unservable, negotiate, refuse_dax, InitOutcome};
pub use self::init::{InitPolicy, Offers, MAX_TRANSFER};
pub use self::reply::{DaemonReplySpace, Reply, ReplySpace};
use self::route::FsRequest;
use self::size_effect::{size_effect, SizeEffect};
use crate::dax::Dax;
use crate::errno::Errno;
use crate::fs::{Context, FileSystem};
use crate::prometheus::{ExportMetrics, PrometheusText};
use crate::ratelimit::RateLimit;
use crate::session::Session;

/// Bytes of a FUSE request header: what a transport reads of a request it
/// will not read whole, so that it can be refused ([`Dispatcher::refuse`]).
pub const REQUEST_HEADER_LEN: usize = 40;

/// The largest reply the dispatcher builds: a full READ or READDIR after
/// the reply header.
pub const MAX_REPLY: usize = OUT_HEADER_LEN + MAX_TRANSFER as usize;

/// End of the unique id in a request header (bytes 8..16).
const UNIQUE_END: usize = 16;

/// Counters the dispatcher keeps; read them with [`Dispatcher::stats`].
#[derive(Debug, Default)]
pub struct DispatchStats {
    /// Requests parsed successfully.
    pub requests: AtomicU64,
    /// Requests refused because they did not parse.
    pub malformed: AtomicU64,
    /// Requests answered ENOSYS because the operation is not implemented.
    pub unsupported: AtomicU64,
}

/// Why a guest session ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionEnd {
    /// FUSE_DESTROY, on a queue worker: the backend channel may be used.
    Destroy,
    /// An INIT without DESTROY (the guest rebooted or reloaded its driver),
    /// on a queue worker: the backend channel may be used, but the frontend
    /// may have dropped the window's mappings at its device reset.
    NewInit,
    /// The frontend reset the device; runs in the frontend-message handler,
    /// which must not send backend requests.
    DeviceReset,
    /// The frontend closed the socket; the backend channel is gone.
    Disconnect,
}

/// Serves FUSE requests for one vhost-user device.
#[derive(Debug)]
pub struct Dispatcher {
    fs: Arc<dyn FileSystem>,
    policy: InitPolicy,
    limits: Limits,
    /// The FUSE session (INIT seen, the features agreed), shared with the
    /// filesystem, which reads it; only the dispatcher writes it.
    session: Arc<Session>,
    stats: DispatchStats,
    malformed_log: RateLimit,
    /// Limits the error logged for each INIT refused for DAX.
    dax_refusal_log: RateLimit,
    /// The DAX window, when `--cache-size` is set.
    dax: Option<Arc<Dax>>,
}

impl Dispatcher {
    /// A dispatcher over `fs`.
    pub fn new(fs: Arc<dyn FileSystem>, policy: InitPolicy, dax: Option<Arc<Dax>>) -> Self {
        let session = Arc::clone(fs.session());
        Self {
            fs,
            policy,
            limits: Limits {
                max_write: MAX_TRANSFER,
                max_read: MAX_TRANSFER,
            },
            session,
            stats: DispatchStats::default(),
            malformed_log: RateLimit::per_second(10),
            dax_refusal_log: RateLimit::per_second(1),
            dax,
        }
    }

    /// The DAX window, if any.
    pub fn dax(&self) -> Option<&Arc<Dax>> {
        self.dax.as_ref()
    }

    /// The filesystem served.
    pub fn fs(&self) -> &Arc<dyn FileSystem> {
        &self.fs
    }

    /// Counters.
    pub fn stats(&self) -> &DispatchStats {
        &self.stats
    }

    /// Ends the session: forget every inode and handle; the next guest must
    /// INIT again. The DAX window is emptied now when the backend channel may
    /// be used (DESTROY, on a queue worker); otherwise its mappings are
    /// reclaimed before the next session's first DAX request.
    pub fn end_session(&self, why: SessionEnd) {
        self.session.end();
        if let Some(dax) = &self.dax {
            match why {
                SessionEnd::Destroy => dax.reset(),
                SessionEnd::NewInit => dax.reset_after_session_end(),
                SessionEnd::DeviceReset => dax.mark_stale(),
                SessionEnd::Disconnect => {
                    dax.set_channel(None);
                    dax.mark_stale();
                }
            }
        }
        self.fs.destroy();
        self.session.forget_features();
    }

    /// Handles one request whose reply goes into `space`: the reply never
    /// exceeds its capacity, and READ data goes into it in place, right
    /// after the out header, never through `reply`.
    pub fn dispatch(&self, request: &[u8], reply: &mut Vec<u8>, space: &dyn ReplySpace) -> Reply {
        let capacity = space.capacity();
        let layout = self.session.negotiated().layout();
        let parse = |request| parse_with(request, &self.limits, &layout);
        if capacity < OUT_HEADER_LEN {
            // Not even an error fits. Still run no-reply operations (FORGET
            // must not leak references just because the chain is short).
            if let Ok(req) = parse(request) {
                if is_no_reply(&req.op) {
                    self.stats.requests.fetch_add(1, Ordering::Relaxed);
                    let _ = self
                        .admit(&req, capacity)
                        .and_then(|()| self.handle(&req, reply, space, &mut None));
                }
            }
            return Reply::Nothing;
        }
        let req = match parse(request) {
            Ok(req) => req,
            Err(e) => return self.refuse_malformed(request, &e, reply),
        };
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        let unique = req.header.unique;
        let handled = self
            .admit(&req, capacity)
            .and_then(|()| self.handle_and_repair(&req, reply, space));
        match handled {
            Ok(Reply::Buffer(len)) if len > capacity => {
                tracing::debug!(
                    unique,
                    len,
                    capacity,
                    "reply larger than the chain's writable space"
                );
                write_error(reply, unique, Errno::ERANGE)
            }
            Ok(done) => done,
            Err(errno) => write_error(reply, unique, errno),
        }
    }

    fn refuse_malformed(&self, request: &[u8], error: &ParseError, reply: &mut Vec<u8>) -> Reply {
        self.stats.malformed.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.malformed_log.check() {
            tracing::warn!(unique = request_unique(request), suppressed, %error, "malformed request refused");
        }
        write_error(reply, request_unique(request), Errno(error.errno()))
    }

    /// Refuses a request the queue worker would not even read whole (too
    /// large for any reply the daemon gives): an error reply echoing the
    /// unique id in `head`, the request's first bytes.
    pub fn refuse(&self, head: &[u8], errno: Errno, reply: &mut Vec<u8>, capacity: usize) -> Reply {
        self.stats.malformed.fetch_add(1, Ordering::Relaxed);
        if capacity < OUT_HEADER_LEN {
            return Reply::Nothing;
        }
        if let Some(suppressed) = self.malformed_log.check() {
            tracing::warn!(unique = request_unique(head), suppressed, %errno, "oversized request refused");
        }
        write_error(reply, request_unique(head), errno)
    }

    /// Refuses a request of which only the first bytes `head` could be read
    /// (its later buffers are unusable): as [`Self::refuse`] when `head`
    /// holds the unique id and `capacity` a reply header; otherwise nothing
    /// is answered (or counted).
    pub fn refuse_partial(
        &self, head: &[u8], errno: Errno, reply: &mut Vec<u8>, capacity: usize,
    ) -> Reply {
        if head.len() < UNIQUE_END || capacity < OUT_HEADER_LEN {
            return Reply::Nothing;
        }
        self.refuse(head, errno, reply, capacity)
    }

    /// Whether `req` may run now: nothing but INIT before INIT, and only
    /// when even the fixed part of its reply fits `capacity` (an entry or
    /// handle the guest never hears of could never be forgotten or
    /// released, so this is refused before acting).
    fn admit(&self, req: &Request<'_>, capacity: usize) -> Result<(), Errno> {
        if !matches!(req.op, Operation::Init { .. }) && !self.session.is_initialized() {
            return Err(Errno::EIO);
        }
        if !is_no_reply(&req.op) && capacity < OUT_HEADER_LEN + min_reply_body(&req.op) {
            return Err(Errno::ERANGE);
        }
        Ok(())
    }

    /// Serves an admitted `req`, then repairs the DAX mappings of the file
    /// it may have resized (see [`size_effect`]) before the reply goes back.
    fn handle_and_repair(
        &self, req: &Request<'_>, reply: &mut Vec<u8>, space: &dyn ReplySpace,
    ) -> Result<Reply, Errno> {
        let mut created = None;
        let handled = self.handle(req, reply, space, &mut created);
        let resized = match size_effect(req) {
            SizeEffect::Keeps => None,
            SizeEffect::MayChange { nodeid, on_failure } => {
                (handled.is_ok() || on_failure).then_some(nodeid)
            }
            SizeEffect::MayChangeCreated => created.filter(|_| handled.is_ok()),
        };
        if let (Some(nodeid), Some(dax)) = (resized, &self.dax) {
            dax.file_changed(nodeid);
        }
        handled
    }

    /// Serves an admitted `req`; `created` receives the nodeid of the file
    /// a CREATE opened.
    fn handle(
        &self, req: &Request<'_>, reply: &mut Vec<u8>, space: &dyn ReplySpace,
        created: &mut Option<u64>,
    ) -> Result<Reply, Errno> {
        let h = &req.header;
        let ctx = Context {
            uid: h.uid,
            gid: h.gid,
            pid: h.pid,
        };
        let fs = &*self.fs;
        let nodeid = h.nodeid;
        let mut r = ReplyBuf::new(reply, h.unique);
        match &req.op {
            Operation::Init {
                major,
                minor,
                max_readahead,
                flags,
            } => return self.init(r, *major, *minor, *max_readahead, *flags),
            Operation::Destroy => {
                self.end_session(SessionEnd::Destroy);
            }
            Operation::Forget { nlookup } => {
                fs.forget(nodeid, *nlookup);
                return Ok(Reply::Nothing);
            }
            Operation::BatchForget { entries } => {
                for e in *entries {
                    fs.forget(e.nodeid, e.nlookup);
                }
                return Ok(Reply::Nothing);
            }
            Operation::Interrupt { .. } => {
                // Requests run to completion synchronously on their queue's
                // worker; by the time an interrupt is read the request it
                // names has either finished or will finish promptly.
                return Ok(Reply::Nothing);
            }
            Operation::SetupMapping(arg) => {
                let dax = self.dax.as_ref().ok_or(Errno::ENOSYS)?;
                dax.setup(h.unique, nodeid, arg, |access| {
                    fs.open_for_mapping(ctx, nodeid, arg.fh, access)
                })?;
            }
            Operation::RemoveMapping { ranges } => {
                let dax = self.dax.as_ref().ok_or(Errno::ENOSYS)?;
                dax.remove(h.unique, *ranges)?;
            }
            Operation::Unsupported(op) => {
                self.stats.unsupported.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(?op, "unsupported operation");
                return Err(Errno::ENOSYS);
            }
            op => {
                let fs_request = FsRequest {
                    fs,
                    ctx,
                    nodeid,
                    op,
                    security_ctx: req.security_ctx,
                    space,
                };
                if let Some(data) = route::serve(&fs_request, &mut r, created)? {
                    return Ok(data_reply(reply, h.unique, data));
                }
            }
        }
        Ok(Reply::Buffer(r.finish().len()))
    }

    /// INIT: negotiates, ends a session the guest did not DESTROY, probes
    /// the frontend for the DAX window, and starts the session.
    fn init(
        &self, mut r: ReplyBuf<'_>, major: u32, minor: u32, max_readahead: u32, flags: u64,
    ) -> Result<Reply, Errno> {
        match negotiate(&self.policy, major, minor, max_readahead, flags) {
            InitOutcome::Accepted(mut out, mut negotiated) => {
                if self.session.is_initialized() {
                    // A new guest driver (the guest rebooted or its
                    // driver was reloaded) without DESTROY: what the old
                    // one held is released, its window mappings unmapped
                    // (this runs on a queue worker, so the backend
                    // channel may be used).
                    tracing::info!("INIT during a session: the previous session ends");
                    self.end_session(SessionEnd::NewInit);
                }
                if let Some(dax) = &self.dax {
                    // On this queue worker, before the reply: the probe
                    // of what the frontend maps.
                    negotiated.dax_caps = dax.begin_session();
                    if dax_always_unservable(flags, negotiated.dax_caps) {
                        dax.init_refused();
                        if let Some(suppressed) = self.dax_refusal_log.check() {
                            tracing::error!(
                                suppressed,
                                "the guest mounted with dax=always, but this frontend \
                                 (QEMU 11.1?) cannot map partial last pages: mount with \
                                 -o dax=inode, or use a frontend that can; refusing the \
                                 mount (the INIT reply carries a map_alignment the guest \
                                 rejects)"
                            );
                        }
                        refuse_dax(&mut out);
                        r.push(&out);
                        return Ok(Reply::Buffer(r.finish().len()));
                    }
                }
                self.session.begin(negotiated);
                tracing::info!(major, minor, "guest session initialised");
                r.push(&out);
            }
            InitOutcome::RetryWithMajor(out) => {
                r.push(&out);
            }
            InitOutcome::Unsupported => {
                tracing::warn!(major, minor, "guest FUSE protocol too old");
                return Err(Errno(libc::EPROTO));
            }
            InitOutcome::Missing(missing) => {
                tracing::error!("{missing}: refusing the guest's INIT");
                return Err(Errno(libc::EPROTO));
            }
        }
        Ok(Reply::Buffer(r.finish().len()))
    }
}

/// The unique id at bytes 8..16 of a request header, or 0 when absent.
fn request_unique(request: &[u8]) -> u64 {
    request
        .get(8..UNIQUE_END)
        .and_then(|b| u64::read_from_bytes(b).ok())
        .unwrap_or(0)
}

/// Bytes of reply body an operation always produces on success.
fn min_reply_body(op: &Operation<'_>) -> usize {
    use std::mem::size_of;
    match op {
        Operation::Init { .. } => size_of::<InitOut>(),
        Operation::Lookup { .. }
        | Operation::Mknod { .. }
        | Operation::Mkdir { .. }
        | Operation::Symlink { .. }
        | Operation::Link { .. } => size_of::<EntryOut>(),
        Operation::Create { .. } => size_of::<EntryOut>() + size_of::<OpenOut>(),
        Operation::Open(_) | Operation::Opendir(_) => size_of::<OpenOut>(),
        Operation::Getattr(_) | Operation::Setattr(_) => size_of::<AttrOut>(),
        Operation::Statfs => size_of::<StatfsOut>(),
        Operation::Write { .. } | Operation::CopyFileRange(_) => size_of::<WriteOut>(),
        Operation::Lseek(_) => size_of::<LseekOut>(),
        Operation::Getxattr { size: 0, .. } | Operation::Listxattr { size: 0 } => {
            size_of::<GetxattrOut>()
        }
        _ => 0,
    }
}

/// FORGET, BATCH_FORGET and INTERRUPT are answered with silence.
fn is_no_reply(op: &Operation<'_>) -> bool {
    matches!(
        op,
        Operation::Forget { .. } | Operation::BatchForget { .. } | Operation::Interrupt { .. }
    )
}

/// GETXATTR / LISTXATTR: size 0 asks how much room is needed; a buffer too
/// small for the value is ERANGE.
pub(super) fn push_sized(r: &mut ReplyBuf<'_>, value: &[u8], size: u32) -> Result<(), Errno> {
    if size == 0 {
        r.push(&GetxattrOut {
            size: u32::try_from(value.len()).map_err(|_| Errno::E2BIG)?,
            padding: 0,
        });
    } else if value.len() > size as usize {
        return Err(Errno::ERANGE);
    } else {
        r.push_bytes(value);
    }
    Ok(())
}

/// The out header of a success reply whose `data` bytes of body were placed
/// in guest memory.
fn data_reply(reply: &mut Vec<u8>, unique: u64, data: usize) -> Reply {
    let header = OutHeader {
        len: (OUT_HEADER_LEN + data) as u32,
        error: 0,
        unique,
    };
    reply.clear();
    reply.extend_from_slice(header.as_bytes());
    Reply::WithData {
        head: OUT_HEADER_LEN,
        data,
    }
}

fn write_error(reply: &mut Vec<u8>, unique: u64, errno: Errno) -> Reply {
    reply.clear();
    reply.extend_from_slice(&error_reply(unique, errno.0));
    Reply::Buffer(reply.len())
}

/// Reads the reply header back (tests and the queue worker's tracing).
pub fn reply_header(reply: &[u8]) -> Option<OutHeader> {
    OutHeader::read_from_prefix(reply).ok().map(|(h, _)| h)
}

impl ExportMetrics for DispatchStats {
    fn export_metrics(&self, out: &mut PrometheusText) {
        out.metric(
            "requests_total",
            "counter",
            "FUSE requests parsed.",
            self.requests.load(Ordering::Relaxed),
        );
        out.metric(
            "malformed_requests_total",
            "counter",
            "FUSE requests refused as malformed.",
            self.malformed.load(Ordering::Relaxed),
        );
        out.metric(
            "unsupported_requests_total",
            "counter",
            "FUSE requests answered ENOSYS.",
            self.unsupported.load(Ordering::Relaxed),
        );
    }
}
