//! daxfsd against malformed requests and descriptor chains: each gets the errno
//! `daxfsd_protocol::ParseError::errno` names (EINVAL for bad framing, names and counts,
//! ENAMETOOLONG, E2BIG for sizes over the limits, ENOSYS for unknown opcodes), echoing
//! the request's `unique` when the chain carried one, or is given back with nothing
//! written when there is no room for a reply; and the daemon keeps serving afterwards.

mod common;

use common::*;
use daxfsd_harness::fuse::FuseReply;
use daxfsd_harness::{Completion, GuestBuf, Link, RawDesc};
use daxfsd_protocol::abi::*;
use daxfsd_protocol::Opcode;

/// Guest memory is 64 MiB at address 0 (the harness default).
const MEMORY_END: u64 = 64 << 20;

/// Sends `readable` with a 4 KiB reply buffer and returns the checked reply.
fn reply_to(s: &Session, readable: &[&[u8]]) -> FuseReply {
    let done = s.send_chain(REQUEST_QUEUE, readable, &[4096]);
    assert_eq!(done.used_len as usize, done.data.len());
    FuseReply::parse(&done.data).unwrap_or_else(|e| {
        panic!(
            "malformed reply to a malformed request: {}\n{}",
            daxfsd_harness::error_chain(&e),
            s.backend.diagnostics()
        )
    })
}

/// The request is refused with `errno`, echoing `unique`, and the daemon still serves.
fn assert_refused(s: &Session, readable: &[&[u8]], errno: i32, unique: u64) {
    let reply = reply_to(s, readable);
    assert_eq!(
        (reply.errno(), reply.header.unique),
        (errno, unique),
        "errno and unique of the reply"
    );
    assert!(reply.body.is_empty());
    s.assert_serving();
}

/// `request` with its header's `len` replaced.
fn with_len(mut request: Vec<u8>, len: u32) -> Vec<u8> {
    request[..4].copy_from_slice(&len.to_le_bytes());
    request
}

fn unique_of(request: &[u8]) -> u64 {
    u64::from_le_bytes(request[8..16].try_into().unwrap())
}

/// Copies `bytes` into freshly allocated guest memory.
fn place(s: &Session, bytes: &[u8]) -> GuestBuf {
    let buf = s.check(s.dev.alloc(bytes.len() as u64));
    s.check(s.dev.memory().write(buf.addr, bytes));
    buf
}

fn raw(s: &Session, chain: &[RawDesc]) -> Completion {
    let token = s.check(s.dev.submit_raw_chain(REQUEST_QUEUE, chain));
    s.check(s.dev.wait(token))
}

fn mkdir_request(s: &Session, name: &[u8]) -> Vec<u8> {
    s.req(Opcode::Mkdir, ROOT_ID)
        .push(&MkdirIn {
            mode: 0o755,
            umask: 0,
        })
        .name(name)
        .finish()
}

/// A CREATE of `name` in the root: O_CREAT | O_RDWR, a regular file of mode 0644.
fn create_request(s: &Session, name: &[u8]) -> Vec<u8> {
    s.req(Opcode::Create, ROOT_ID)
        .push(&CreateIn {
            flags: (libc::O_CREAT | libc::O_RDWR) as u32,
            mode: libc::S_IFREG | 0o644,
            ..CreateIn::default()
        })
        .name(name)
        .finish()
}

#[test]
fn short_headers_are_einval() {
    let s = Session::start(&[]);
    let full = getattr_request(s.unique(), ROOT_ID);
    // 39 bytes: the unique (bytes 8..16) is there and is echoed.
    let short = with_len(full[..39].to_vec(), 39);
    assert_refused(&s, &[&short], libc::EINVAL, unique_of(&full));
    // 10 bytes: no unique to echo.
    assert_refused(&s, &[&full[..10]], libc::EINVAL, 0);
    // A chain with no readable bytes at all (a zero-length descriptor, or none).
    assert_refused(&s, &[&[]], libc::EINVAL, 0);
    assert_refused(&s, &[], libc::EINVAL, 0);
}

#[test]
fn header_length_must_match_the_chain() {
    let s = Session::start(&[]);
    // Truncated chain: the header claims more than the descriptors hold.
    let req = getattr_request(s.unique(), ROOT_ID);
    let claimed = req.len() as u32 + 100;
    assert_refused(
        &s,
        &[&with_len(req.clone(), claimed)],
        libc::EINVAL,
        unique_of(&req),
    );
    let req = getattr_request(s.unique(), ROOT_ID);
    assert_refused(
        &s,
        &[&with_len(req.clone(), u32::MAX)],
        libc::EINVAL,
        unique_of(&req),
    );
    // A length below the header's own size.
    let req = getattr_request(s.unique(), ROOT_ID);
    assert_refused(
        &s,
        &[&with_len(req.clone(), 20)],
        libc::EINVAL,
        unique_of(&req),
    );
    assert_refused(
        &s,
        &[&with_len(req.clone(), 0)],
        libc::EINVAL,
        unique_of(&req),
    );
    // A WRITE whose header promises 4 KiB of data the chain does not carry: refused
    // whole, nothing written.
    let (id, fh) = s.create_file("f");
    let req = s
        .req(Opcode::Write, id)
        .push(&WriteIn {
            fh,
            size: 4096,
            ..WriteIn::default()
        })
        .bytes(&[b'w'; 4096])
        .finish();
    let cut = &req[..req.len() - 4000];
    assert_refused(&s, &[cut], libc::EINVAL, unique_of(&req));
    assert_eq!(std::fs::metadata(s.path("f")).unwrap().len(), 0);
    // Bytes beyond `len` are ignored (a guest may hand over a larger buffer).
    let mut padded = getattr_request(s.unique(), ROOT_ID);
    padded.extend_from_slice(&[0xEE; 64]);
    assert_eq!(reply_to(&s, &[&padded]).errno(), 0);
}

#[test]
fn a_request_split_over_many_descriptors_is_reassembled() {
    let s = Session::start(&[]);
    let e = s.host_file("f", b"x");
    let req = getattr_request(s.unique(), e.nodeid);
    // Split inside the header's fields and the body.
    let parts = [
        &req[..3],
        &req[3..17],
        &req[17..40],
        &req[40..41],
        &req[41..],
    ];
    let reply = reply_to(&s, &parts);
    assert_eq!(reply.errno(), 0);
    assert_eq!(reply.header.unique, unique_of(&req));
    // And the reply scattered over several writable descriptors.
    let req = getattr_request(s.unique(), e.nodeid);
    let done = s.send_chain(REQUEST_QUEUE, &[&req], &[8, 8, 24, 4096]);
    let reply = FuseReply::parse(&done.data).expect("scattered reply");
    assert_eq!(reply.header.unique, unique_of(&req));
    let attr = exact::<AttrOut>(reply).expect("getattr");
    assert_eq!(attr.attr.size, 1);
}

#[test]
fn bad_names_are_refused_before_touching_the_host() {
    let s = Session::start(&[]);
    let outside = s.dir().parent().unwrap().join("escape");
    let cases: [(&[u8], i32); 6] = [
        (b"", libc::EINVAL),
        (b"a/b", libc::EINVAL),
        (b"../escape", libc::EINVAL),
        (b"..", libc::EINVAL),
        (b".", libc::EINVAL),
        (&[b'n'; 256], libc::ENAMETOOLONG),
    ];
    for (name, errno) in cases {
        let lookup = s.req(Opcode::Lookup, ROOT_ID).name(name).finish();
        assert_refused(&s, &[&lookup], errno, unique_of(&lookup));
        let mkdir = mkdir_request(&s, name);
        assert_refused(&s, &[&mkdir], errno, unique_of(&mkdir));
        let create = create_request(&s, name);
        assert_refused(&s, &[&create], errno, unique_of(&create));
    }
    // RENAME checks both names, LINK and SYMLINK theirs.
    s.host_file("f", b"x");
    let rename = s
        .req(Opcode::Rename, ROOT_ID)
        .push(&RenameIn { newdir: ROOT_ID })
        .name(b"f")
        .name(b"../escape")
        .finish();
    assert_refused(&s, &[&rename], libc::EINVAL, unique_of(&rename));
    let symlink = s
        .req(Opcode::Symlink, ROOT_ID)
        .name(b"..")
        .name(b"f")
        .finish();
    assert_refused(&s, &[&symlink], libc::EINVAL, unique_of(&symlink));
    assert!(!outside.exists(), "a bad name reached outside the share");
    let listing: Vec<_> = std::fs::read_dir(s.dir()).unwrap().collect();
    assert_eq!(listing.len(), 1, "only f exists");
    // 255 bytes is still a valid name (it just does not exist).
    assert_eq!(s.lookup(ROOT_ID, &[b'n'; 255]).unwrap_err(), libc::ENOENT);
}

#[test]
fn names_without_a_nul_are_einval() {
    let s = Session::start(&[]);
    let lookup = s.req(Opcode::Lookup, ROOT_ID).bytes(b"abc").finish();
    assert_refused(&s, &[&lookup], libc::EINVAL, unique_of(&lookup));
    let mkdir = s
        .req(Opcode::Mkdir, ROOT_ID)
        .push(&MkdirIn::default())
        .bytes(b"abc")
        .finish();
    assert_refused(&s, &[&mkdir], libc::EINVAL, unique_of(&mkdir));
    assert!(!s.path("abc").exists());
    // The NUL exists in the chain but past the header's `len`.
    let lookup = s.req(Opcode::Lookup, ROOT_ID).name(b"abc").finish();
    let cut = with_len(lookup.clone(), lookup.len() as u32 - 1);
    assert_refused(&s, &[&cut], libc::EINVAL, unique_of(&lookup));
    // SYMLINK whose target has no NUL; RENAME whose second name has none.
    let symlink = s
        .req(Opcode::Symlink, ROOT_ID)
        .name(b"l")
        .bytes(b"target")
        .finish();
    assert_refused(&s, &[&symlink], libc::EINVAL, unique_of(&symlink));
    assert!(std::fs::symlink_metadata(s.path("l")).is_err());
    s.host_file("f", b"");
    let rename = s
        .req(Opcode::Rename, ROOT_ID)
        .push(&RenameIn { newdir: ROOT_ID })
        .name(b"f")
        .bytes(b"g")
        .finish();
    assert_refused(&s, &[&rename], libc::EINVAL, unique_of(&rename));
    assert!(s.path("f").exists() && !s.path("g").exists());
    // Bytes after the name are not tolerated either.
    let lookup = s
        .req(Opcode::Lookup, ROOT_ID)
        .name(b"f")
        .bytes(b"junk")
        .finish();
    assert_refused(&s, &[&lookup], libc::EINVAL, unique_of(&lookup));
}

#[test]
fn short_bodies_and_bad_extension_lengths_are_einval() {
    let s = Session::start(&[]);
    let getattr = s.req(Opcode::Getattr, ROOT_ID).bytes(&[0; 10]).finish();
    assert_refused(&s, &[&getattr], libc::EINVAL, unique_of(&getattr));
    let write = s.req(Opcode::Write, ROOT_ID).bytes(&[0; 39]).finish();
    assert_refused(&s, &[&write], libc::EINVAL, unique_of(&write));
    let init = s.req(Opcode::Init, 0).bytes(&[7, 0, 0, 0]).finish();
    assert_refused(&s, &[&init], libc::EINVAL, unique_of(&init));
    // total_extlen (in 8-byte units) beyond the body.
    let mut req = getattr_request(s.unique(), ROOT_ID);
    req[36..38].copy_from_slice(&10u16.to_le_bytes());
    assert_refused(&s, &[&req], libc::EINVAL, unique_of(&req));
    // Undefined flag bits.
    s.host_file("a", b"");
    let rename2 = s
        .req(Opcode::Rename2, ROOT_ID)
        .push(&Rename2In {
            newdir: ROOT_ID,
            flags: 1 << 7,
            padding: 0,
        })
        .name(b"a")
        .name(b"b")
        .finish();
    assert_refused(&s, &[&rename2], libc::EINVAL, unique_of(&rename2));
    assert!(s.path("a").exists());
    let setup = s
        .req(Opcode::SetupMapping, ROOT_ID)
        .push(&SetupMappingIn {
            flags: 1 << 5,
            ..SetupMappingIn::default()
        })
        .finish();
    assert_refused(&s, &[&setup], libc::EINVAL, unique_of(&setup));
}

#[test]
fn write_size_must_match_its_payload() {
    let s = Session::start(&[]);
    let (id, fh) = s.create_file("f");
    for (declared, actual) in [(100u32, 50usize), (10, 50), (0, 1)] {
        let req = s
            .req(Opcode::Write, id)
            .push(&WriteIn {
                fh,
                size: declared,
                ..WriteIn::default()
            })
            .bytes(&vec![b'x'; actual])
            .finish();
        assert_refused(&s, &[&req], libc::EINVAL, unique_of(&req));
    }
    assert_eq!(std::fs::metadata(s.path("f")).unwrap().len(), 0);
    // SETXATTR likewise (checked before the xattr support is).
    let req = s
        .req(Opcode::Setxattr, id)
        .push(&SetxattrIn { size: 10, flags: 0 })
        .name(b"user.a")
        .bytes(b"abc")
        .finish();
    assert_refused(&s, &[&req], libc::EINVAL, unique_of(&req));
}

#[test]
fn sizes_over_the_limits_are_e2big() {
    let s = Session::start(&[]);
    let e = s.host_file("f", b"content");
    let fh = s.open(e.nodeid, libc::O_RDWR).unwrap().fh;
    // max_write and the READ limit, as INIT announced them (asserted in the session tests).
    let max: u32 = 1 << 20;
    for size in [u32::MAX, max + 1] {
        let read = read_request(s.unique(), e.nodeid, fh, 0, size);
        assert_refused(&s, &[&read], libc::E2BIG, unique_of(&read));
        let readdir = s
            .req(Opcode::Readdirplus, ROOT_ID)
            .push(&ReadIn {
                size,
                ..ReadIn::default()
            })
            .finish();
        assert_refused(&s, &[&readdir], libc::E2BIG, unique_of(&readdir));
    }
    // READ of exactly max_write is fine.
    assert_eq!(s.read_cap(e.nodeid, fh, 0, max, 4096).unwrap(), b"content");
    // One byte over max_write, really carried.
    let data = vec![b'z'; max as usize + 1];
    let write = s
        .req(Opcode::Write, e.nodeid)
        .push(&WriteIn {
            fh,
            size: max + 1,
            ..WriteIn::default()
        })
        .bytes(&data)
        .finish();
    assert_refused(&s, &[&write], libc::E2BIG, unique_of(&write));
    // Far beyond it (2 MiB): the daemon reads no more than the largest valid request,
    // so it sees a truncated chain (EINVAL) rather than the size (E2BIG); either way the
    // request is refused whole.
    let data = vec![b'z'; 2 << 20];
    let write = s
        .req(Opcode::Write, e.nodeid)
        .push(&WriteIn {
            fh,
            size: 2 << 20,
            ..WriteIn::default()
        })
        .bytes(&data)
        .finish();
    let reply = reply_to(&s, &[&write]);
    assert_eq!(reply.header.unique, unique_of(&write));
    assert!(
        [libc::EINVAL, libc::E2BIG].contains(&reply.errno()),
        "errno {}",
        reply.errno()
    );
    assert_eq!(std::fs::read(s.path("f")).unwrap(), b"content");
    let getxattr = s
        .req(Opcode::Getxattr, e.nodeid)
        .push(&GetxattrIn {
            size: XATTR_SIZE_MAX as u32 + 1,
            padding: 0,
        })
        .name(b"user.a")
        .finish();
    assert_refused(&s, &[&getxattr], libc::E2BIG, unique_of(&getxattr));
}

#[test]
fn counts_beyond_the_payload_or_bound_are_einval() {
    let s = Session::start(&[]);
    let id = s.host_file("f", b"x").nodeid;
    // BATCH_FORGET claiming two entries but carrying one: refused whole, so the one
    // entry it does carry is not applied.
    let forget = s
        .req(Opcode::BatchForget, 0)
        .push(&BatchForgetIn { count: 2, dummy: 0 })
        .push(&ForgetOne {
            nodeid: id,
            nlookup: 1,
        })
        .finish();
    assert_refused(&s, &[&forget], libc::EINVAL, unique_of(&forget));
    assert!(s.getattr(id).is_ok(), "a refused BATCH_FORGET forgot");
    let forget = s
        .req(Opcode::BatchForget, 0)
        .push(&BatchForgetIn {
            count: u32::MAX,
            dummy: 0,
        })
        .finish();
    assert_refused(&s, &[&forget], libc::EINVAL, unique_of(&forget));
    // More records than the count is malformed too.
    let forget = s
        .req(Opcode::BatchForget, 0)
        .push(&BatchForgetIn { count: 0, dummy: 0 })
        .push(&ForgetOne {
            nodeid: id,
            nlookup: 1,
        })
        .finish();
    assert_refused(&s, &[&forget], libc::EINVAL, unique_of(&forget));
    assert!(s.getattr(id).is_ok());
    // On the hiprio queue without a reply buffer (as Linux sends it) it just vanishes.
    let forget = s
        .req(Opcode::BatchForget, 0)
        .push(&BatchForgetIn { count: 9, dummy: 0 })
        .finish();
    s.send_no_reply(HIPRIO_QUEUE, &forget);
    s.assert_serving();

    // REMOVEMAPPING: count past the records, and past the one-page bound.
    let remove = s
        .req(Opcode::RemoveMapping, ROOT_ID)
        .push(&RemoveMappingIn { count: 3 })
        .push(&RemoveMappingOne {
            moffset: 0,
            len: 4096,
        })
        .finish();
    assert_refused(&s, &[&remove], libc::EINVAL, unique_of(&remove));
    let over = REMOVEMAPPING_MAX_ENTRIES + 1;
    let mut enc = s
        .req(Opcode::RemoveMapping, ROOT_ID)
        .push(&RemoveMappingIn { count: over });
    for i in 0..over {
        enc = enc.push(&RemoveMappingOne {
            moffset: u64::from(i) << 21,
            len: 1 << 21,
        });
    }
    let remove = enc.finish();
    assert_refused(&s, &[&remove], libc::EINVAL, unique_of(&remove));
}

#[test]
fn unknown_opcodes_are_enosys() {
    let s = Session::start(&[]);
    // 7 (FUSE_GETDIR) and 19 were removed from the protocol; 0 and the rest never existed.
    for opcode in [0u32, 7, 19, 54, 4096, u32::MAX] {
        let mut req = getattr_request(s.unique(), ROOT_ID);
        req[4..8].copy_from_slice(&opcode.to_le_bytes());
        assert_refused(&s, &[&req], libc::ENOSYS, unique_of(&req));
    }
}

#[test]
fn no_room_for_a_reply_means_nothing_is_done_and_nothing_written() {
    let s = Session::start(&[]);
    // No writable descriptor: the chain comes back with 0 bytes used, and a request
    // with side effects is not carried out (its result could not be reported).
    let mkdir = mkdir_request(&s, b"unreported");
    let done = s.send_chain(REQUEST_QUEUE, &[&mkdir], &[]);
    assert_eq!(done.used_len, 0);
    assert!(!s.path("unreported").exists());
    s.assert_serving();
    // Writable room below the 16-byte reply header: the same, nothing written.
    for room in [1u32, 8, 15] {
        let mkdir = mkdir_request(&s, b"unreported");
        let done = s.send_chain(REQUEST_QUEUE, &[&mkdir], &[room]);
        assert_eq!((done.used_len, done.data.len()), (0, 0), "room {room}");
        assert!(!s.path("unreported").exists());
        s.assert_serving();
    }
    // Exactly 16 bytes: room for an error, not for the entry; the reply says so.
    let mkdir = mkdir_request(&s, b"tight");
    let done = s.send_chain(REQUEST_QUEUE, &[&mkdir], &[16]);
    let reply = FuseReply::parse(&done.data).expect("16-byte reply");
    assert_eq!(
        (reply.errno(), reply.header.unique),
        (libc::ERANGE, unique_of(&mkdir))
    );
    s.assert_serving();
}

/// An operation whose reply cannot fit must not leave behind a reference (an O_PATH fd)
/// or an open handle the guest never hears of: it cannot FORGET or RELEASE them.
#[test]
fn a_reply_that_cannot_fit_leaks_no_reference() {
    let s = Session::start(&[]);
    let baseline = s.fd_count();
    let mkdir = mkdir_request(&s, b"tight");
    let done = s.send_chain(REQUEST_QUEUE, &[&mkdir], &[16]);
    assert_eq!(FuseReply::parse(&done.data).unwrap().errno(), libc::ERANGE);
    let create = create_request(&s, b"tight-file");
    let done = s.send_chain(REQUEST_QUEUE, &[&create], &[16 + 128]);
    assert_eq!(FuseReply::parse(&done.data).unwrap().errno(), libc::ERANGE);
    assert_eq!(
        s.fd_count(),
        baseline,
        "references the guest never received"
    );
    // Refused before acting: nothing was created on the host either.
    assert!(
        !s.dir().join("tight").exists(),
        "MKDIR ran although its reply could not fit"
    );
    assert!(
        !s.dir().join("tight-file").exists(),
        "CREATE ran although its reply could not fit"
    );
}

#[test]
fn odd_chain_layouts_are_served_or_given_back_never_hung() {
    let s = Session::start(&[]);
    let req = getattr_request(s.unique(), ROOT_ID);
    let inbuf = place(&s, &req);
    let outbuf = s.check(s.dev.alloc(4096));
    let len = req.len() as u32;
    let layouts: [&[RawDesc]; 4] = [
        // The writable descriptor links back to the readable one: a loop.
        &[
            RawDesc::readable(inbuf.addr, len),
            RawDesc::writable(outbuf.addr, 4096).link(Link::Element(0)),
        ],
        // A readable descriptor linked to itself, nothing writable.
        &[RawDesc::readable(inbuf.addr, len).link(Link::Element(0))],
        // `next` beyond the descriptor table.
        &[
            RawDesc::readable(inbuf.addr, len),
            RawDesc::writable(outbuf.addr, 4096).link(Link::Index(5000)),
        ],
        // Writable before readable (the virtio spec forbids it).
        &[
            RawDesc::writable(outbuf.addr, 4096),
            RawDesc::readable(inbuf.addr, len),
        ],
    ];
    for (i, chain) in layouts.iter().enumerate() {
        let done = raw(&s, chain);
        if done.used_len != 0 {
            let reply = FuseReply::parse(&done.data)
                .unwrap_or_else(|e| panic!("layout {i}: {}", daxfsd_harness::error_chain(&e)));
            assert_eq!(reply.header.unique, unique_of(&req), "layout {i}");
        }
        s.assert_serving();
    }
    s.dev.free(inbuf);
    s.dev.free(outbuf);
}

#[test]
fn descriptors_outside_guest_memory_are_given_back_and_serving_goes_on() {
    let s = Session::start(&[]);
    let req = getattr_request(s.unique(), ROOT_ID);
    let inbuf = place(&s, &req);
    let outbuf = s.check(s.dev.alloc(4096));
    // The request outside guest memory.
    let done = raw(
        &s,
        &[
            RawDesc::readable(1 << 40, req.len() as u32),
            RawDesc::writable(outbuf.addr, 4096),
        ],
    );
    assert_eq!(done.used_len, 0);
    s.assert_serving();
    // The request straddling the end of guest memory: its header is
    // readable, so the guest gets EFAULT for it instead of a hang.
    let straddling = getattr_request(s.unique(), ROOT_ID);
    let tail = MEMORY_END - 20;
    s.dev.memory().write(tail, &straddling[..20]).unwrap();
    let done = raw(
        &s,
        &[
            RawDesc::readable(tail, straddling.len() as u32),
            RawDesc::writable(outbuf.addr, 4096),
        ],
    );
    let reply = FuseReply::parse(&done.data).unwrap();
    assert_eq!(reply.errno(), libc::EFAULT);
    assert_eq!(reply.header.unique, unique_of(&straddling));
    s.assert_serving();
    // A WRITE whose data sits where the daemon cannot see it (a guest doing
    // direct I/O from a DAX-mapped buffer: the window is not guest RAM to a
    // backend): EFAULT, counted, nothing written, serving goes on.
    let file = s.create_file("direct");
    let write = s
        .req(Opcode::Write, file.0)
        .push(&WriteIn {
            fh: file.1,
            size: 4096,
            ..WriteIn::default()
        })
        .finish();
    let wbuf = place(&s, &write);
    let done = raw(
        &s,
        &[
            RawDesc::readable(wbuf.addr, write.len() as u32),
            RawDesc::readable(1 << 40, 4096),
            RawDesc::writable(outbuf.addr, 4096),
        ],
    );
    let reply = FuseReply::parse(&done.data).unwrap();
    assert_eq!(reply.errno(), libc::EFAULT);
    assert_eq!(reply.header.unique, unique_of(&write));
    assert_eq!(std::fs::metadata(s.path("direct")).unwrap().len(), 0);
    s.dev.free(wbuf);
    s.assert_serving();
    // The reply buffer outside guest memory, wholly or partly: nothing is written,
    // and a MKDIR in such a chain is not carried out.
    for reply_at in [1u64 << 40, MEMORY_END - 8] {
        let done = raw(
            &s,
            &[
                RawDesc::readable(inbuf.addr, req.len() as u32),
                RawDesc::writable(reply_at, 4096),
            ],
        );
        assert_eq!(done.used_len, 0);
        let mkdir = mkdir_request(&s, b"unreported");
        let mbuf = place(&s, &mkdir);
        let done = raw(
            &s,
            &[
                RawDesc::readable(mbuf.addr, mkdir.len() as u32),
                RawDesc::writable(reply_at, 4096),
            ],
        );
        assert_eq!(done.used_len, 0);
        assert!(!s.path("unreported").exists());
        s.dev.free(mbuf);
        s.assert_serving();
    }
    s.dev.free(inbuf);
    s.dev.free(outbuf);
}

#[test]
fn a_flood_of_malformed_requests_does_not_wear_the_daemon_down() {
    let s = Session::start(&[]);
    let baseline = s.fd_count();
    for i in 0..300u32 {
        let mut req = getattr_request(s.unique(), ROOT_ID);
        match i % 3 {
            0 => req.truncate(20),
            1 => req[..4].copy_from_slice(&9999u32.to_le_bytes()),
            _ => req[4..8].copy_from_slice(&(1000 + i).to_le_bytes()),
        }
        let reply = reply_to(&s, &[&req]);
        assert_ne!(reply.errno(), 0);
    }
    s.assert_serving();
    assert_eq!(s.fd_count(), baseline);
    assert!(s.backend.is_running().unwrap());
}
