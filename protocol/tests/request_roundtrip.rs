//! encode → parse round trips for every request type.
//!
//! A strategy builds a [`Model`] of one request — any opcode the crate
//! knows, with arbitrary fixed-part values, names, paths, payloads and
//! record lists within the bounds the parser enforces — plus an arbitrary
//! header. The model is encoded with [`RequestEncoder`], parsed, and the
//! parsed [`Operation`] and header must carry exactly what was encoded.
//! Bytes appended past the header's `len` (a longer descriptor chain) must
//! change nothing.

use std::mem::size_of;

use daxfsd_protocol::abi::*;
use daxfsd_protocol::encode::RequestEncoder;
use daxfsd_protocol::{parse, Limits, Operation};
use proptest::collection::vec;
use proptest::prelude::*;
use zerocopy::{FromBytes, Immutable, IntoBytes};

/// Any value of a fixed-layout struct: every bit pattern is valid.
fn arb<T: FromBytes + std::fmt::Debug>() -> impl Strategy<Value = T> {
    vec(any::<u8>(), size_of::<T>())
        .prop_map(|bytes| T::read_from_bytes(&bytes).expect("exact size"))
}

/// A directory entry name: 1..=NAME_MAX bytes, no NUL, no '/', not . or ..
fn entry_name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        // Mostly printable, sometimes the full byte range.
        vec(
            (1u8..=255).prop_map(|b| if b == b'/' { b'_' } else { b }),
            1..=NAME_MAX
        ),
        "[a-zA-Z0-9._-]{1,32}".prop_map(String::into_bytes),
        Just(vec![b'x'; NAME_MAX]),
    ]
    .prop_filter("not . or ..", |n| n != b"." && n != b"..")
}

/// A symlink target: 1..=PATH_MAX bytes without NUL ('/', '.', '..' allowed).
fn path() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "(\\.\\./|/|[a-z]{1,8}/){0,8}[a-z.]{1,8}".prop_map(String::into_bytes),
        vec(1u8..=255, 1..=PATH_MAX),
    ]
}

/// An xattr name: 1..=NAME_MAX non-NUL bytes (no component rules).
fn xattr_name() -> impl Strategy<Value = Vec<u8>> {
    vec(1u8..=255, 1..=NAME_MAX)
}

/// One request, owned, as the test describes it.
#[derive(Debug, Clone)]
enum Model {
    Init(InitInCompat, Option<InitInExt>),
    Destroy,
    Lookup(Vec<u8>),
    Forget(ForgetIn),
    BatchForget(u32, Vec<ForgetOne>),
    Getattr(GetattrIn),
    Setattr(SetattrIn),
    Readlink,
    Symlink(Vec<u8>, Vec<u8>),
    Mknod(MknodIn, Vec<u8>),
    Mkdir(MkdirIn, Vec<u8>),
    Unlink(Vec<u8>),
    Rmdir(Vec<u8>),
    Rename(RenameIn, Vec<u8>, Vec<u8>),
    Rename2(Rename2In, Vec<u8>, Vec<u8>),
    Link(LinkIn, Vec<u8>),
    Open(OpenIn),
    Create(CreateIn, Vec<u8>),
    Read(ReadIn),
    Write(WriteIn, Vec<u8>),
    Statfs,
    Release(ReleaseIn),
    Flush(FlushIn),
    Fsync(FsyncIn),
    Opendir(OpenIn),
    Readdir(ReadIn),
    Readdirplus(ReadIn),
    Releasedir(ReleaseIn),
    Fsyncdir(FsyncIn),
    Access(AccessIn),
    Setxattr(SetxattrIn, Vec<u8>, Vec<u8>),
    Getxattr(GetxattrIn, Vec<u8>),
    Listxattr(GetxattrIn),
    Removexattr(Vec<u8>),
    Interrupt(InterruptIn),
    Fallocate(FallocateIn),
    Lseek(LseekIn),
    CopyFileRange(CopyFileRangeIn),
    Syncfs(SyncfsIn),
    SetupMapping(SetupMappingIn),
    RemoveMapping(Vec<RemoveMappingOne>),
    /// A defined opcode the server does not implement, with any body.
    Unsupported(Opcode, Vec<u8>),
}

/// Opcodes answered ENOSYS whatever their body.
const UNSUPPORTED: [Opcode; 10] = [
    Opcode::Getlk,
    Opcode::Setlk,
    Opcode::Setlkw,
    Opcode::Bmap,
    Opcode::Ioctl,
    Opcode::Poll,
    Opcode::NotifyReply,
    Opcode::Tmpfile,
    Opcode::Statx,
    Opcode::CopyFileRange64,
];

impl Model {
    fn opcode(&self) -> Opcode {
        use Model as M;
        match self {
            M::Init(..) => Opcode::Init,
            M::Destroy => Opcode::Destroy,
            M::Lookup(_) => Opcode::Lookup,
            M::Forget(_) => Opcode::Forget,
            M::BatchForget(..) => Opcode::BatchForget,
            M::Getattr(_) => Opcode::Getattr,
            M::Setattr(_) => Opcode::Setattr,
            M::Readlink => Opcode::Readlink,
            M::Symlink(..) => Opcode::Symlink,
            M::Mknod(..) => Opcode::Mknod,
            M::Mkdir(..) => Opcode::Mkdir,
            M::Unlink(_) => Opcode::Unlink,
            M::Rmdir(_) => Opcode::Rmdir,
            M::Rename(..) => Opcode::Rename,
            M::Rename2(..) => Opcode::Rename2,
            M::Link(..) => Opcode::Link,
            M::Open(_) => Opcode::Open,
            M::Create(..) => Opcode::Create,
            M::Read(_) => Opcode::Read,
            M::Write(..) => Opcode::Write,
            M::Statfs => Opcode::Statfs,
            M::Release(_) => Opcode::Release,
            M::Flush(_) => Opcode::Flush,
            M::Fsync(_) => Opcode::Fsync,
            M::Opendir(_) => Opcode::Opendir,
            M::Readdir(_) => Opcode::Readdir,
            M::Readdirplus(_) => Opcode::Readdirplus,
            M::Releasedir(_) => Opcode::Releasedir,
            M::Fsyncdir(_) => Opcode::Fsyncdir,
            M::Access(_) => Opcode::Access,
            M::Setxattr(..) => Opcode::Setxattr,
            M::Getxattr(..) => Opcode::Getxattr,
            M::Listxattr(_) => Opcode::Listxattr,
            M::Removexattr(_) => Opcode::Removexattr,
            M::Interrupt(_) => Opcode::Interrupt,
            M::Fallocate(_) => Opcode::Fallocate,
            M::Lseek(_) => Opcode::Lseek,
            M::CopyFileRange(_) => Opcode::CopyFileRange,
            M::Syncfs(_) => Opcode::Syncfs,
            M::SetupMapping(_) => Opcode::SetupMapping,
            M::RemoveMapping(_) => Opcode::RemoveMapping,
            M::Unsupported(op, _) => *op,
        }
    }

    /// The request's body, in wire order.
    fn encode(&self, e: RequestEncoder) -> RequestEncoder {
        use Model as M;
        fn records<T: IntoBytes + Immutable>(mut e: RequestEncoder, all: &[T]) -> RequestEncoder {
            for r in all {
                e = e.push(r);
            }
            e
        }
        match self {
            M::Init(compat, ext) => match ext {
                Some(ext) => e.push(compat).push(ext),
                None => e.push(compat),
            },
            M::Destroy | M::Readlink | M::Statfs => e,
            M::Lookup(n) | M::Unlink(n) | M::Rmdir(n) | M::Removexattr(n) => e.name(n),
            M::Forget(a) => e.push(a),
            M::BatchForget(dummy, list) => records(
                e.push(&BatchForgetIn {
                    count: list.len() as u32,
                    dummy: *dummy,
                }),
                list,
            ),
            M::Getattr(a) => e.push(a),
            M::Setattr(a) => e.push(a),
            M::Symlink(n, t) => e.name(n).name(t),
            M::Mknod(a, n) => e.push(a).name(n),
            M::Mkdir(a, n) => e.push(a).name(n),
            M::Rename(a, o, n) => e.push(a).name(o).name(n),
            M::Rename2(a, o, n) => e.push(a).name(o).name(n),
            M::Link(a, n) => e.push(a).name(n),
            M::Open(a) | M::Opendir(a) => e.push(a),
            M::Create(a, n) => e.push(a).name(n),
            M::Read(a) | M::Readdir(a) | M::Readdirplus(a) => e.push(a),
            M::Write(a, d) => e.push(a).bytes(d),
            M::Release(a) | M::Releasedir(a) => e.push(a),
            M::Flush(a) => e.push(a),
            M::Fsync(a) | M::Fsyncdir(a) => e.push(a),
            M::Access(a) => e.push(a),
            M::Setxattr(a, n, v) => e.push(a).name(n).bytes(v),
            M::Getxattr(a, n) => e.push(a).name(n),
            M::Listxattr(a) => e.push(a),
            M::Interrupt(a) => e.push(a),
            M::Fallocate(a) => e.push(a),
            M::Lseek(a) => e.push(a),
            M::CopyFileRange(a) => e.push(a),
            M::Syncfs(a) => e.push(a),
            M::SetupMapping(a) => e.push(a),
            M::RemoveMapping(list) => records(
                e.push(&RemoveMappingIn {
                    count: list.len() as u32,
                }),
                list,
            ),
            M::Unsupported(_, body) => e.bytes(body),
        }
    }

    /// Whether `op` carries exactly this model's arguments.
    fn matches(&self, op: &Operation<'_>) -> bool {
        use Model as M;
        use Operation as O;
        match (self, op) {
            (
                M::Init(c, ext),
                O::Init {
                    major,
                    minor,
                    max_readahead,
                    flags,
                },
            ) => {
                let flags2 = ext.map_or(0, |e| e.flags2);
                (*major, *minor, *max_readahead) == (c.major, c.minor, c.max_readahead)
                    && *flags == (u64::from(c.flags) | u64::from(flags2) << 32)
            }
            (M::Destroy, O::Destroy) | (M::Readlink, O::Readlink) | (M::Statfs, O::Statfs) => true,
            (M::Lookup(n), O::Lookup { name })
            | (M::Unlink(n), O::Unlink { name })
            | (M::Rmdir(n), O::Rmdir { name }) => name.as_bytes() == n,
            (M::Removexattr(n), O::Removexattr { name }) => name.to_bytes() == n,
            (M::Forget(a), O::Forget { nlookup }) => a.nlookup == *nlookup,
            (M::BatchForget(_, list), O::BatchForget { entries }) => {
                entries.len() == list.len() && entries.zip(list).all(|(a, b)| a == *b)
            }
            (M::Getattr(a), O::Getattr(b)) => a == b,
            (M::Setattr(a), O::Setattr(b)) => a == b,
            (M::Symlink(n, t), O::Symlink { name, target }) => {
                name.as_bytes() == n && target.to_bytes() == t
            }
            (M::Mknod(a, n), O::Mknod { arg, name }) => a == arg && name.as_bytes() == n,
            (M::Mkdir(a, n), O::Mkdir { arg, name }) => a == arg && name.as_bytes() == n,
            (
                M::Rename(a, o, n),
                O::Rename {
                    newdir,
                    flags,
                    old,
                    new,
                },
            ) => a.newdir == *newdir && *flags == 0 && old.as_bytes() == o && new.as_bytes() == n,
            (
                M::Rename2(a, o, n),
                O::Rename {
                    newdir,
                    flags,
                    old,
                    new,
                },
            ) => {
                a.newdir == *newdir
                    && a.flags == *flags
                    && old.as_bytes() == o
                    && new.as_bytes() == n
            }
            (M::Link(a, n), O::Link { oldnodeid, name }) => {
                a.oldnodeid == *oldnodeid && name.as_bytes() == n
            }
            (M::Open(a), O::Open(b)) | (M::Opendir(a), O::Opendir(b)) => a == b,
            (M::Create(a, n), O::Create { arg, name }) => a == arg && name.as_bytes() == n,
            (M::Read(a), O::Read(b))
            | (M::Readdir(a), O::Readdir(b))
            | (M::Readdirplus(a), O::Readdirplus(b)) => a == b,
            (M::Write(a, d), O::Write { arg, data }) => a == arg && data == d,
            (M::Release(a), O::Release(b)) | (M::Releasedir(a), O::Releasedir(b)) => a == b,
            (M::Flush(a), O::Flush(b)) => a == b,
            (M::Fsync(a), O::Fsync(b)) | (M::Fsyncdir(a), O::Fsyncdir(b)) => a == b,
            (M::Access(a), O::Access(b)) => a == b,
            (
                M::Setxattr(a, n, v),
                O::Setxattr {
                    arg, name, value, ..
                },
            ) => a == arg && name.to_bytes() == n && value == v,
            (M::Getxattr(a, n), O::Getxattr { size, name }) => {
                a.size == *size && name.to_bytes() == n
            }
            (M::Listxattr(a), O::Listxattr { size }) => a.size == *size,
            (M::Interrupt(a), O::Interrupt { unique }) => a.unique == *unique,
            (M::Fallocate(a), O::Fallocate(b)) => a == b,
            (M::Lseek(a), O::Lseek(b)) => a == b,
            (M::CopyFileRange(a), O::CopyFileRange(b)) => a == b,
            (M::Syncfs(_), O::Syncfs) => true,
            (M::SetupMapping(a), O::SetupMapping(b)) => a == b,
            (M::RemoveMapping(list), O::RemoveMapping { ranges }) => {
                ranges.len() == list.len() && ranges.zip(list).all(|(a, b)| a == *b)
            }
            (M::Unsupported(want, _), O::Unsupported(got)) => want == got,
            _ => false,
        }
    }
}

fn read_in(max: u32) -> impl Strategy<Value = ReadIn> {
    (arb::<ReadIn>(), 0..=max).prop_map(|(mut a, size)| {
        a.size = size;
        a
    })
}

/// Every request type, arbitrary but within the parser's bounds.
fn model() -> impl Strategy<Value = Model> {
    use Model as M;
    let lim = Limits::default();
    let simple = prop_oneof![
        (
            arb::<InitInCompat>(),
            proptest::option::of(arb::<InitInExt>())
        )
            .prop_map(|(c, e)| M::Init(c, e)),
        Just(M::Destroy),
        entry_name().prop_map(M::Lookup),
        arb().prop_map(M::Forget),
        (any::<u32>(), vec(arb::<ForgetOne>(), 0..64)).prop_map(|(d, l)| M::BatchForget(d, l)),
        arb().prop_map(M::Getattr),
        arb().prop_map(M::Setattr),
        Just(M::Readlink),
        (entry_name(), path()).prop_map(|(n, t)| M::Symlink(n, t)),
        (arb(), entry_name()).prop_map(|(a, n)| M::Mknod(a, n)),
        (arb(), entry_name()).prop_map(|(a, n)| M::Mkdir(a, n)),
        entry_name().prop_map(M::Unlink),
        entry_name().prop_map(M::Rmdir),
        (arb(), entry_name(), entry_name()).prop_map(|(a, o, n)| M::Rename(a, o, n)),
        (arb::<Rename2In>(), 0u32..8, entry_name(), entry_name()).prop_map(|(mut a, f, o, n)| {
            a.flags = f; // any combination of the three defined flags
            M::Rename2(a, o, n)
        }),
        (arb(), entry_name()).prop_map(|(a, n)| M::Link(a, n)),
        arb().prop_map(M::Open),
        (arb(), entry_name()).prop_map(|(a, n)| M::Create(a, n)),
        read_in(lim.max_read).prop_map(M::Read),
    ];
    let data = prop_oneof![
        (arb::<WriteIn>(), vec(any::<u8>(), 0..4096)).prop_map(|(mut a, d)| {
            a.size = d.len() as u32;
            M::Write(a, d)
        }),
        Just(M::Statfs),
        arb().prop_map(M::Release),
        arb().prop_map(M::Flush),
        arb().prop_map(M::Fsync),
        arb().prop_map(M::Opendir),
        read_in(lim.max_read).prop_map(M::Readdir),
        read_in(lim.max_read).prop_map(M::Readdirplus),
        arb().prop_map(M::Releasedir),
        arb().prop_map(M::Fsyncdir),
        arb().prop_map(M::Access),
        (arb::<SetxattrIn>(), xattr_name(), vec(any::<u8>(), 0..2048)).prop_map(|(mut a, n, v)| {
            a.size = v.len() as u32;
            M::Setxattr(a, n, v)
        }),
        (arb::<GetxattrIn>(), 0..=XATTR_SIZE_MAX as u32, xattr_name()).prop_map(|(mut a, s, n)| {
            a.size = s;
            M::Getxattr(a, n)
        }),
        (arb::<GetxattrIn>(), 0..=XATTR_LIST_MAX as u32).prop_map(|(mut a, s)| {
            a.size = s;
            M::Listxattr(a)
        }),
        xattr_name().prop_map(M::Removexattr),
        arb().prop_map(M::Interrupt),
        arb().prop_map(M::Fallocate),
        arb().prop_map(M::Lseek),
        arb().prop_map(M::CopyFileRange),
        arb().prop_map(M::Syncfs),
        (arb::<SetupMappingIn>(), 0u64..4).prop_map(|(mut a, f)| {
            a.flags = f; // READ, WRITE, both or neither
            M::SetupMapping(a)
        }),
        vec(
            arb::<RemoveMappingOne>(),
            0..=REMOVEMAPPING_MAX_ENTRIES as usize
        )
        .prop_map(M::RemoveMapping),
        (
            proptest::sample::select(&UNSUPPORTED[..]),
            vec(any::<u8>(), 0..256)
        )
            .prop_map(|(op, body)| M::Unsupported(op, body)),
    ];
    prop_oneof![simple, data]
}

/// Header fields a request may carry (`len` and `opcode` are the encoder's).
#[derive(Debug, Clone, Copy)]
struct Header {
    unique: u64,
    nodeid: u64,
    uid: u32,
    gid: u32,
    pid: u32,
}

fn header() -> impl Strategy<Value = Header> {
    (
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(|(unique, nodeid, uid, gid, pid)| Header {
            unique,
            nodeid,
            uid,
            gid,
            pid,
        })
}

fn encode(model: &Model, h: Header) -> Vec<u8> {
    model
        .encode(RequestEncoder::new(model.opcode(), h.unique, h.nodeid).caller(h.uid, h.gid, h.pid))
        .finish()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn every_request_round_trips(
        model in model(),
        h in header(),
        junk in vec(any::<u8>(), 0..64),
    ) {
        let mut bytes = encode(&model, h);
        let len = bytes.len();
        // Bytes past `len` belong to the chain, not the request.
        bytes.extend_from_slice(&junk);
        let req = parse(&bytes, &Limits::default())
            .map_err(|e| TestCaseError::fail(format!("{model:?} refused: {e}")))?;
        prop_assert_eq!(req.header.len as usize, len);
        prop_assert_eq!(req.header.opcode, model.opcode() as u32);
        prop_assert_eq!(
            (req.header.unique, req.header.nodeid, req.header.uid, req.header.gid, req.header.pid),
            (h.unique, h.nodeid, h.uid, h.gid, h.pid)
        );
        prop_assert!(model.matches(&req.op), "{:?} parsed as {:?}", model, req.op);
    }

    /// Cutting the chain anywhere inside the request is refused, never
    /// served from bytes that are not there.
    #[test]
    fn a_truncated_chain_is_refused(model in model(), h in header(), cut in any::<prop::sample::Index>()) {
        let bytes = encode(&model, h);
        let keep = cut.index(bytes.len());
        prop_assert!(parse(&bytes[..keep], &Limits::default()).is_err());
    }
}

/// The generator covers every opcode the crate defines.
#[test]
fn the_model_covers_every_opcode() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let strategy = model();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..5_000 {
        let tree = strategy.new_tree(&mut runner).expect("strategy");
        seen.insert(tree.current().opcode());
    }
    let missing: Vec<_> = Opcode::ALL.iter().filter(|op| !seen.contains(op)).collect();
    assert!(missing.is_empty(), "never generated: {missing:?}");
}
