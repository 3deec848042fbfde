//! Request streams and the closed-loop driver that keeps them in flight.
//!
//! A workload is a set of *slots*, each a small state machine that produces one request
//! at a time and checks its reply. The driver of one queue keeps every slot's request in
//! flight: it waits for the oldest, lets its slot check the reply, and submits that
//! slot's next request, until the deadline. Requests are laid out in descriptors the
//! way the Linux virtio-fs driver lays them out: the in header, the in arguments
//! coalesced, data pages one descriptor each; then the out header, the out arguments
//! coalesced, and one writable descriptor per data page.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use daxfsd_harness::client::requests;
use daxfsd_harness::fuse::Uniques;
use daxfsd_harness::{Completion, Device, Token};
use daxfsd_protocol::abi::{dirent_size, Dirent, EntryOut, OpenOut, OutHeader, WriteOut};
use daxfsd_protocol::Opcode;
use zerocopy::FromBytes;

use crate::error::{BenchError, HarnessContext, Result};

pub use daxfsd_harness::client::HIPRIO_QUEUE;
/// Page size of the guest's data descriptors.
pub const PAGE: u32 = 4096;
const IN_HEADER_LEN: usize = 40;
const OUT_HEADER_LEN: u32 = 16;

/// One request, ready to submit on the driver's queue: readable segments and writable
/// lengths.
pub struct Submission<'a> {
    /// Readable descriptors, in order.
    pub readable: Vec<&'a [u8]>,
    /// Lengths of the writable descriptors, in order.
    pub writable: &'a [u32],
}

/// What a completed request amounted to.
#[derive(Debug, Default)]
pub struct Step {
    /// Units of work it finished: 1 per GETATTR, LOOKUP, READ, WRITE or create/remove
    /// cycle; 1 per directory entry listed by READDIRPLUS (a listing is
    /// [`Readdirplus::entries`] of them).
    pub ops: u64,
    /// A request without reply (FORGET) to send on the hiprio queue, not waited for in
    /// order.
    pub background: Option<Vec<u8>>,
}

/// A stream of dependent requests; one is in flight at a time.
pub trait Slot: Send {
    /// The next request, with id `unique`.
    fn next(&mut self, unique: u64) -> Submission<'_>;
    /// Checks the reply to the request from [`Slot::next`].
    fn complete(&mut self, completion: &Completion) -> Result<Step, String>;
    /// Whether the stream may stop here (no file half created).
    fn at_rest(&self) -> bool {
        true
    }
    /// Whether the stream has nothing more to send (a fixed amount of work done); the
    /// driver then stops it before the deadline.
    fn finished(&self) -> bool {
        false
    }
}

/// A request's readable segments as the Linux driver places them: header, arguments.
pub(crate) fn split(req: &[u8]) -> Vec<&[u8]> {
    if req.len() > IN_HEADER_LEN {
        vec![&req[..IN_HEADER_LEN], &req[IN_HEADER_LEN..]]
    } else {
        vec![req]
    }
}

/// Checks framing, unique and success; returns the body, which must be `body_len` bytes
/// when given.
pub(crate) fn check(c: &Completion, unique: u64, body_len: Option<usize>) -> Result<&[u8], String> {
    let (header, body) = OutHeader::read_from_prefix(&c.data)
        .map_err(|_| format!("{}-byte reply, shorter than a header", c.data.len()))?;
    if header.unique != unique {
        return Err(format!("reply unique {} for {unique}", header.unique));
    }
    if header.error != 0 {
        return Err(format!("errno {}", -header.error));
    }
    if header.len as usize != c.data.len() || c.used_len as usize != c.data.len() {
        return Err(format!(
            "header len {} / used len {} / bytes {}",
            header.len,
            c.used_len,
            c.data.len()
        ));
    }
    if let Some(want) = body_len {
        if body.len() != want {
            return Err(format!("{}-byte body, expected {want}", body.len()));
        }
    }
    Ok(body)
}

/// Writable layout of a reply with `args` bytes of arguments and `pages` data pages.
pub fn reply_layout(args: u32, pages: u32) -> Vec<u32> {
    let mut layout = vec![OUT_HEADER_LEN];
    if args > 0 {
        layout.push(args);
    }
    layout.extend(std::iter::repeat_n(PAGE, pages as usize));
    layout
}

/// GETATTR of one inode.
pub struct Getattr {
    nodeid: u64,
    req: Vec<u8>,
    unique: u64,
    layout: Vec<u32>,
}

impl Getattr {
    /// GETATTR of `nodeid`.
    pub fn new(nodeid: u64) -> Self {
        Self {
            nodeid,
            req: Vec::new(),
            unique: 0,
            layout: reply_layout(104, 0),
        }
    }
}

impl Slot for Getattr {
    fn next(&mut self, unique: u64) -> Submission<'_> {
        self.unique = unique;
        self.req = requests::getattr(unique, self.nodeid, None).finish();
        Submission {
            readable: split(&self.req),
            writable: &self.layout,
        }
    }

    fn complete(&mut self, c: &Completion) -> Result<Step, String> {
        check(c, self.unique, Some(104))?;
        Ok(Step {
            ops: 1,
            ..Step::default()
        })
    }
}

/// LOOKUP of existing names in one directory, cycling through them.
pub struct Lookup {
    parent: u64,
    names: Arc<Vec<String>>,
    next_name: usize,
    req: Vec<u8>,
    unique: u64,
    layout: Vec<u32>,
}

impl Lookup {
    /// LOOKUPs in `parent` of `names`, starting at index `start`.
    pub fn new(parent: u64, names: Arc<Vec<String>>, start: usize) -> Self {
        Self {
            parent,
            next_name: start % names.len().max(1),
            names,
            req: Vec::new(),
            unique: 0,
            layout: reply_layout(128, 0),
        }
    }
}

impl Slot for Lookup {
    fn next(&mut self, unique: u64) -> Submission<'_> {
        self.unique = unique;
        let name = &self.names[self.next_name];
        self.next_name = (self.next_name + 1) % self.names.len();
        self.req = requests::lookup(unique, self.parent, name.as_bytes()).finish();
        Submission {
            readable: split(&self.req),
            writable: &self.layout,
        }
    }

    fn complete(&mut self, c: &Completion) -> Result<Step, String> {
        self.entry(c)?;
        Ok(Step {
            ops: 1,
            ..Step::default()
        })
    }
}

impl Lookup {
    /// The entry a LOOKUP reply carries (a positive one).
    fn entry(&self, c: &Completion) -> Result<EntryOut, String> {
        let body = check(c, self.unique, Some(128))?;
        let entry = EntryOut::read_from_bytes(body).map_err(|_| "short entry".to_string())?;
        if entry.nodeid == 0 {
            return Err("negative entry for an existing name".into());
        }
        Ok(entry)
    }
}

/// LOOKUP of a name, then GETATTR of the inode it names, cycling through the names (what
/// `ls -l` of a large directory sends once the guest's cache expired); one operation is
/// the pair.
pub struct LookupGetattr {
    lookup: Lookup,
    /// The GETATTR of the inode just looked up, while it is in flight.
    getattr: Option<Getattr>,
}

impl LookupGetattr {
    /// LOOKUP + GETATTR in `parent` of `names`, starting at index `start`.
    pub fn new(parent: u64, names: Arc<Vec<String>>, start: usize) -> Self {
        Self {
            lookup: Lookup::new(parent, names, start),
            getattr: None,
        }
    }
}

impl Slot for LookupGetattr {
    fn next(&mut self, unique: u64) -> Submission<'_> {
        match &mut self.getattr {
            Some(getattr) => getattr.next(unique),
            None => self.lookup.next(unique),
        }
    }

    fn complete(&mut self, c: &Completion) -> Result<Step, String> {
        match &mut self.getattr.take() {
            Some(getattr) => getattr.complete(c),
            None => {
                self.getattr = Some(Getattr::new(self.lookup.entry(c)?.nodeid));
                Ok(Step::default())
            }
        }
    }
}

/// READ of `size` bytes at offsets stepping through a file.
pub struct Read {
    nodeid: u64,
    fh: u64,
    size: u32,
    file_len: u64,
    offset: u64,
    req: Vec<u8>,
    unique: u64,
    layout: Vec<u32>,
}

impl Read {
    /// READs of `size` (a multiple of the page size) from the open file `fh` of
    /// `nodeid`, `file_len` bytes long, starting at `start`.
    pub fn new(nodeid: u64, fh: u64, size: u32, file_len: u64, start: u64) -> Self {
        Self {
            nodeid,
            fh,
            size,
            file_len,
            offset: start % file_len,
            req: Vec::new(),
            unique: 0,
            layout: reply_layout(0, size / PAGE),
        }
    }
}

impl Slot for Read {
    fn next(&mut self, unique: u64) -> Submission<'_> {
        self.unique = unique;
        let offset = self.offset;
        self.offset = (self.offset + u64::from(self.size)) % self.file_len;
        self.req = requests::read(unique, self.nodeid, self.fh, offset, self.size).finish();
        Submission {
            readable: split(&self.req),
            writable: &self.layout,
        }
    }

    fn complete(&mut self, c: &Completion) -> Result<Step, String> {
        check(c, self.unique, Some(self.size as usize))?;
        Ok(Step {
            ops: 1,
            ..Step::default()
        })
    }
}

/// WRITE of one page at offsets stepping through an existing file (overwrites).
pub struct Write {
    nodeid: u64,
    fh: u64,
    file_len: u64,
    offset: u64,
    data: Vec<u8>,
    req: Vec<u8>,
    unique: u64,
    layout: Vec<u32>,
}

impl Write {
    /// WRITEs of one page to the open file `fh` of `nodeid`, starting at `start`.
    pub fn new(nodeid: u64, fh: u64, file_len: u64, start: u64) -> Self {
        Self {
            nodeid,
            fh,
            file_len,
            offset: start % file_len,
            data: (0..PAGE).map(|i| (i % 251) as u8).collect(),
            req: Vec::new(),
            unique: 0,
            layout: reply_layout(8, 0),
        }
    }
}

impl Slot for Write {
    fn next(&mut self, unique: u64) -> Submission<'_> {
        self.unique = unique;
        let offset = self.offset;
        self.offset = (self.offset + u64::from(PAGE)) % self.file_len;
        // The header's len covers the data, which travels in its own descriptor.
        let mut req = requests::write(unique, self.nodeid, self.fh, offset, &self.data, 0).finish();
        req.truncate(req.len() - self.data.len());
        self.req = req;
        let mut readable = split(&self.req);
        readable.push(&self.data);
        Submission {
            readable,
            writable: &self.layout,
        }
    }

    fn complete(&mut self, c: &Completion) -> Result<Step, String> {
        let body = check(c, self.unique, Some(8))?;
        let out = WriteOut::read_from_bytes(body).map_err(|_| "short write reply".to_string())?;
        if out.size != PAGE {
            return Err(format!("wrote {} bytes of {PAGE}", out.size));
        }
        Ok(Step {
            ops: 1,
            ..Step::default()
        })
    }
}

/// Whole listings of a directory with READDIRPLUS, one page per request, over its own
/// open handle.
pub struct Readdirplus {
    nodeid: u64,
    fh: u64,
    expected: usize,
    offset: u64,
    seen: usize,
    req: Vec<u8>,
    unique: u64,
    layout: Vec<u32>,
}

impl Readdirplus {
    /// Listings of directory `nodeid` (open as `fh`), which holds `expected` entries
    /// besides "." and "..".
    pub fn new(nodeid: u64, fh: u64, expected: usize) -> Self {
        Self {
            nodeid,
            fh,
            expected,
            offset: 0,
            seen: 0,
            req: Vec::new(),
            unique: 0,
            layout: reply_layout(0, 1),
        }
    }
}

impl Slot for Readdirplus {
    fn next(&mut self, unique: u64) -> Submission<'_> {
        self.unique = unique;
        let (nodeid, fh) = (self.nodeid, self.fh);
        self.req =
            requests::read_op(Opcode::Readdirplus, unique, nodeid, fh, self.offset, PAGE).finish();
        Submission {
            readable: split(&self.req),
            writable: &self.layout,
        }
    }

    fn complete(&mut self, c: &Completion) -> Result<Step, String> {
        let mut body = check(c, self.unique, None)?;
        if body.is_empty() {
            // End of the directory: the listing must have been complete.
            let seen = std::mem::take(&mut self.seen);
            self.offset = 0;
            if seen != self.expected {
                return Err(format!(
                    "listing had {seen} entries, expected {}",
                    self.expected
                ));
            }
            return Ok(Step::default());
        }
        let before = self.seen;
        const ENTRY_LEN: usize = std::mem::size_of::<EntryOut>();
        while !body.is_empty() {
            let (_, rest) = EntryOut::read_from_prefix(body)
                .map_err(|_| "truncated direntplus entry".to_string())?;
            let (dirent, _) =
                Dirent::read_from_prefix(rest).map_err(|_| "truncated dirent".to_string())?;
            let namelen = dirent.namelen as usize;
            let record = ENTRY_LEN + dirent_size(namelen);
            let name_at = ENTRY_LEN + std::mem::size_of::<Dirent>();
            let name = body
                .get(name_at..name_at + namelen)
                .ok_or_else(|| "name beyond the reply".to_string())?;
            if name != b"." && name != b".." {
                self.seen += 1;
            }
            self.offset = dirent.off;
            body = body.get(record..).unwrap_or(&[]);
        }
        Ok(Step {
            ops: (self.seen - before) as u64,
            ..Step::default()
        })
    }
}

enum CreateState {
    Create,
    Release { nodeid: u64, fh: u64 },
    Unlink { nodeid: u64 },
}

/// CREATE of a new file, then RELEASE of its handle, UNLINK, and FORGET of the inode
/// (on the hiprio queue), as a guest's create-then-remove sends them.
pub struct CreateUnlink {
    parent: u64,
    name: String,
    state: CreateState,
    req: Vec<u8>,
    unique: u64,
    create_layout: Vec<u32>,
    empty_layout: Vec<u32>,
}

impl CreateUnlink {
    /// Creates and removes `name` in `parent`.
    pub fn new(parent: u64, name: String) -> Self {
        Self {
            parent,
            name,
            state: CreateState::Create,
            req: Vec::new(),
            unique: 0,
            create_layout: reply_layout(128 + 16, 0),
            empty_layout: reply_layout(0, 0),
        }
    }
}

impl Slot for CreateUnlink {
    fn next(&mut self, unique: u64) -> Submission<'_> {
        self.unique = unique;
        let (req, writable) = match self.state {
            CreateState::Create => (
                requests::create(
                    unique,
                    self.parent,
                    self.name.as_bytes(),
                    (libc::O_RDWR | libc::O_CREAT) as u32,
                    libc::S_IFREG | 0o644,
                    0o022,
                )
                .finish(),
                &self.create_layout,
            ),
            CreateState::Release { nodeid, fh } => (
                requests::release(Opcode::Release, unique, nodeid, fh, libc::O_RDWR as u32)
                    .finish(),
                &self.empty_layout,
            ),
            CreateState::Unlink { .. } => (
                requests::named(Opcode::Unlink, unique, self.parent, self.name.as_bytes()).finish(),
                &self.empty_layout,
            ),
        };
        self.req = req;
        Submission {
            readable: split(&self.req),
            writable,
        }
    }

    fn at_rest(&self) -> bool {
        matches!(self.state, CreateState::Create)
    }

    fn complete(&mut self, c: &Completion) -> Result<Step, String> {
        match self.state {
            CreateState::Create => {
                let body = check(c, self.unique, Some(128 + 16))?;
                let (entry, rest) =
                    EntryOut::read_from_prefix(body).map_err(|_| "short entry".to_string())?;
                let open = OpenOut::read_from_bytes(rest).map_err(|_| "short open".to_string())?;
                self.state = CreateState::Release {
                    nodeid: entry.nodeid,
                    fh: open.fh,
                };
                Ok(Step::default())
            }
            CreateState::Release { nodeid, .. } => {
                check(c, self.unique, Some(0))?;
                self.state = CreateState::Unlink { nodeid };
                Ok(Step::default())
            }
            CreateState::Unlink { nodeid } => {
                check(c, self.unique, Some(0))?;
                self.state = CreateState::Create;
                let forget = requests::forget(0, nodeid, 1).finish();
                Ok(Step {
                    ops: 1,
                    background: Some(forget),
                })
            }
        }
    }
}

/// FORGETs outstanding on the hiprio queue before the driver waits for the oldest.
const MAX_BACKGROUND: usize = 64;

/// Keeps every slot's request in flight on `queue` until `until`; returns the
/// operations finished before `until`. Requests still in flight then are completed and
/// checked but not counted.
pub fn drive(
    dev: &Device, uniques: &Uniques, queue: usize, slots: &mut [Box<dyn Slot>], until: Instant,
    who: (&'static str, &'static str),
) -> Result<u64> {
    let (backend, workload) = who;
    let bad = |detail: String| BenchError::BadReply {
        backend,
        workload,
        detail,
    };
    let submit = |slot: &mut Box<dyn Slot>| -> Result<Token> {
        let s = slot.next(uniques.next());
        dev.submit(queue, &s.readable, s.writable)
            .during(|| format!("submitting a {workload} request to {backend}"))
    };
    let mut in_flight = VecDeque::with_capacity(slots.len());
    for (i, slot) in slots.iter_mut().enumerate() {
        in_flight.push_back((submit(slot)?, i));
    }
    let mut background: VecDeque<Token> = VecDeque::new();
    let mut ops = 0;
    while let Some((token, i)) = in_flight.pop_front() {
        let done = dev
            .wait(token)
            .during(|| format!("waiting for a {workload} reply from {backend}"))?;
        let step = slots[i].complete(&done).map_err(bad)?;
        let now = Instant::now();
        if now < until {
            ops += step.ops;
        }
        if let Some(req) = step.background {
            let forget = unique_of(uniques, req);
            background.push_back(
                dev.submit(HIPRIO_QUEUE, &[&forget], &[])
                    .during(|| format!("submitting a FORGET to {backend}"))?,
            );
        }
        // Collect what the hiprio queue returned; wait only when too many are out.
        while let Some(&t) = background.front() {
            let done = if background.len() >= MAX_BACKGROUND {
                Some(
                    dev.wait(t)
                        .during(|| format!("waiting for a FORGET from {backend}"))?,
                )
            } else {
                dev.try_take(t)
                    .during(|| format!("collecting a FORGET from {backend}"))?
            };
            match done {
                Some(c) if c.used_len == 0 => {
                    background.pop_front();
                }
                Some(c) => return Err(bad(format!("FORGET came back with {} bytes", c.used_len))),
                None => break,
            }
        }
        // After the deadline a slot only finishes its cycle (a created file is released
        // and removed), so every run leaves the shared directory as it found it.
        if (now < until && !slots[i].finished()) || !slots[i].at_rest() {
            in_flight.push_back((submit(&mut slots[i])?, i));
        }
    }
    for t in background {
        dev.wait(t)
            .during(|| format!("collecting a FORGET from {backend}"))?;
    }
    Ok(ops)
}

/// `req` with a fresh unique.
fn unique_of(uniques: &Uniques, mut req: Vec<u8>) -> Vec<u8> {
    req[8..16].copy_from_slice(&uniques.next().to_le_bytes());
    req
}
