use super::*;
use crate::abi::{MkdirIn, SetxattrInExt, SETXATTR_ACL_KILL_SGID};
use crate::encode::requests::{self, security_context};
use crate::encode::RequestEncoder;
use crate::request::{parse_with, Limits, Operation, ParseError, Request};

const SECCTX: Layout = Layout {
    setxattr_ext: false,
    security_ctx: true,
};

fn parse_as(bytes: &[u8], layout: Layout) -> Result<Request<'_>, ParseError> {
    parse_with(bytes, &Limits::default(), &layout)
}

fn ext_err(bytes: &[u8]) -> ExtensionError {
    match parse_as(bytes, SECCTX) {
        Err(ParseError::Extension(e)) => e,
        other => panic!("expected an extension error, got {other:?}"),
    }
}

fn mkdir_with(ext: &[u8]) -> Vec<u8> {
    requests::mkdir(1, 1, b"d", 0o755, 0o22)
        .extension(ext)
        .finish()
}

#[test]
fn a_security_context_is_read_from_each_creating_request() {
    let ext = security_context(Some((b"security.selinux", b"system_u:object_r:x_t:s0\0")));
    let requests = [
        requests::create(1, 1, b"f", 0o2 | 0o100, 0o100644, 0o22),
        requests::mknod(1, 1, b"n", 0o010644, 0, 0o22),
        requests::mkdir(1, 1, b"d", 0o755, 0o22),
        requests::symlink(1, 1, b"l", b"target"),
    ];
    for req in requests {
        let bytes = req.extension(&ext).finish();
        let parsed = parse_as(&bytes, SECCTX).expect("parses");
        let ctx = parsed.security_ctx.expect("a context");
        assert_eq!(ctx.name.to_bytes(), b"security.selinux");
        assert_eq!(ctx.value, b"system_u:object_r:x_t:s0\0");
        // The arguments are read as without the extension.
        assert!(!matches!(parsed.op, Operation::Unsupported(_)));
    }
    let bytes = mkdir_with(&ext);
    let parsed = parse_as(&bytes, SECCTX).unwrap();
    assert!(
        matches!(parsed.op, Operation::Mkdir { arg: MkdirIn { mode: 0o755, umask: 0o22 }, name } if name.as_bytes() == b"d")
    );
}

#[test]
fn no_context_is_a_header_naming_none() {
    let bytes = mkdir_with(&security_context(None));
    assert_eq!(parse_as(&bytes, SECCTX).unwrap().security_ctx, None);
    // With something after the header, it is malformed.
    let mut ext = security_context(None);
    ext[0] = 16;
    ext.extend_from_slice(&[0; 8]);
    assert!(matches!(
        ext_err(&mkdir_with(&ext)),
        ExtensionError::BadLength { got: 8, need: 0 }
    ));
}

#[test]
fn before_security_ctx_is_agreed_extensions_are_ignored() {
    let bytes = mkdir_with(&[0xAA; 16]);
    let parsed = parse_as(&bytes, Layout::default()).unwrap();
    assert_eq!(parsed.security_ctx, None);
    assert!(matches!(parsed.op, Operation::Mkdir { .. }));
}

#[test]
fn a_creating_request_must_carry_the_extension() {
    let bytes = requests::mkdir(1, 1, b"d", 0o755, 0).finish();
    assert_eq!(
        ext_err(&bytes),
        ExtensionError::MissingSecurityContext(Opcode::Mkdir)
    );
    // Other requests carry none and need none.
    let lookup = requests::lookup(1, 1, b"x").finish();
    assert!(parse_as(&lookup, SECCTX).is_ok());
    let with = requests::lookup(1, 1, b"x")
        .extension(&security_context(None))
        .finish();
    assert!(matches!(
        ext_err(&with),
        ExtensionError::Unexpected {
            opcode: Opcode::Lookup,
            ext_type: 0
        }
    ));
}

#[test]
fn malformed_headers_are_refused() {
    let good = security_context(Some((b"user.label", b"v")));
    let with_size = |size: u32| {
        let mut ext = good.clone();
        ext[0..4].copy_from_slice(&size.to_ne_bytes());
        ext
    };
    for size in [0, 4, 12, good.len() as u32 + 8] {
        assert!(
            matches!(
                ext_err(&mkdir_with(&with_size(size))),
                ExtensionError::BadSize { .. }
            ),
            "size {size}"
        );
    }
    // A second record of only 8 bytes whose header says 16.
    let mut two = good.clone();
    two.extend_from_slice(&16u32.to_ne_bytes());
    two.extend_from_slice(&0u32.to_ne_bytes());
    assert!(matches!(
        ext_err(&mkdir_with(&two)),
        ExtensionError::BadSize { size: 16, left: 8 }
    ));
    let mut twice = good.clone();
    twice.extend_from_slice(&good);
    assert_eq!(ext_err(&mkdir_with(&twice)), ExtensionError::Duplicate);
    let mut groups = good.clone();
    groups.extend_from_slice(&16u32.to_ne_bytes());
    groups.extend_from_slice(&32u32.to_ne_bytes());
    groups.extend_from_slice(&[0; 8]);
    assert!(matches!(
        ext_err(&mkdir_with(&groups)),
        ExtensionError::Unexpected { ext_type: 32, .. }
    ));
    let mut unknown = good.clone();
    unknown[4..8].copy_from_slice(&77u32.to_ne_bytes());
    assert_eq!(
        ext_err(&mkdir_with(&unknown)),
        ExtensionError::UnknownType(77)
    );
    let mut many = good.clone();
    many[4..8].copy_from_slice(&2u32.to_ne_bytes());
    assert_eq!(
        ext_err(&mkdir_with(&many)),
        ExtensionError::TooManyContexts(2)
    );
}

#[test]
fn malformed_contexts_are_refused() {
    let good = security_context(Some((b"user.label", b"value")));
    // Header 8, fuse_secctx 8, "user.label\0" 11, "value" 5: 32.
    assert_eq!(good.len(), 32);
    let patched = |at: usize, bytes: &[u8]| {
        let mut ext = good.clone();
        ext[at..at + bytes.len()].copy_from_slice(bytes);
        ext
    };
    // Value size 0, beyond XATTR_SIZE_MAX, or beyond the record.
    assert_eq!(
        ext_err(&mkdir_with(&patched(8, &0u32.to_ne_bytes()))),
        ExtensionError::BadValueSize(0)
    );
    assert_eq!(
        ext_err(&mkdir_with(&patched(8, &70_000u32.to_ne_bytes()))),
        ExtensionError::BadValueSize(70_000)
    );
    assert!(matches!(
        ext_err(&mkdir_with(&patched(8, &6u32.to_ne_bytes()))),
        ExtensionError::BadLength { got: 24, need: 32 }
    ));
    // An empty name, or none ending in the record.
    assert_eq!(
        ext_err(&mkdir_with(&patched(16, &[0]))),
        ExtensionError::BadName
    );
    let unterminated = patched(16, &[b'x'; 16]);
    assert_eq!(ext_err(&mkdir_with(&unterminated)), ExtensionError::BadName);
    // A name longer than 255 bytes.
    let long = vec![b'n'; 256];
    let ext = security_context(Some((&long, b"v")));
    assert_eq!(ext_err(&mkdir_with(&ext)), ExtensionError::BadName);
    // A record only the fuse_secctx long.
    let mut short = good[..16].to_vec();
    short[0..4].copy_from_slice(&16u32.to_ne_bytes());
    assert!(matches!(
        ext_err(&mkdir_with(&short)),
        ExtensionError::BadName
    ));
    // Every error is EINVAL.
    assert_eq!(
        ParseError::from(ExtensionError::BadName).errno(),
        crate::errno::EINVAL
    );
}

#[test]
fn setxattr_ext_reads_the_flags() {
    let layout = Layout {
        setxattr_ext: true,
        security_ctx: false,
    };
    let req = requests::setxattr_ext(
        1,
        2,
        b"system.posix_acl_access",
        b"acl",
        0,
        SETXATTR_ACL_KILL_SGID,
    )
    .finish();
    match parse_as(&req, layout).unwrap().op {
        Operation::Setxattr {
            arg,
            setxattr_flags,
            name,
            value,
        } => {
            assert_eq!((arg.size, arg.flags), (3, 0));
            assert_eq!(setxattr_flags, SETXATTR_ACL_KILL_SGID);
            assert_eq!(name.to_bytes(), b"system.posix_acl_access");
            assert_eq!(value, b"acl");
        }
        other => panic!("{other:?}"),
    }
    // The compat layout under SETXATTR_EXT: the name's first bytes are
    // taken for flags, and the sizes no longer agree.
    let compat = requests::setxattr(1, 2, b"user.k", b"val", 0).finish();
    assert!(parse_as(&compat, layout).is_err());
    // Undefined setxattr_flags bits.
    let bad = RequestEncoder::new(Opcode::Setxattr, 1, 2)
        .push(&SetxattrInExt {
            size: 1,
            flags: 0,
            setxattr_flags: 1 << 4,
            padding: 0,
        })
        .name(b"user.k")
        .bytes(b"v")
        .finish();
    assert!(matches!(
        parse_as(&bad, layout),
        Err(ParseError::UnknownFlags { flags: 16, .. })
    ));
    // Too short for the extended struct.
    let short = RequestEncoder::new(Opcode::Setxattr, 1, 2)
        .bytes(&[0; 12])
        .finish();
    assert!(matches!(
        parse_as(&short, layout),
        Err(ParseError::ShortBody { need: 16, .. })
    ));
    // Without SETXATTR_EXT the flags are 0.
    match parse_as(&compat, Layout::default()).unwrap().op {
        Operation::Setxattr { setxattr_flags, .. } => assert_eq!(setxattr_flags, 0),
        other => panic!("{other:?}"),
    }
}
