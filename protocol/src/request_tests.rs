use super::*;
use crate::encode::RequestEncoder;
use crate::errno;

fn lim() -> Limits {
    Limits::default()
}

fn parse_ok(bytes: &[u8]) -> Operation<'_> {
    parse(bytes, &lim()).expect("request should parse").op
}

fn parse_err(bytes: &[u8]) -> ParseError {
    parse(bytes, &lim()).expect_err("request should be refused")
}

#[test]
fn short_header_is_refused() {
    let full = RequestEncoder::new(Opcode::Getattr, 1, 1)
        .push(&GetattrIn::default())
        .finish();
    for cut in [0, 1, 16, 39] {
        assert_eq!(
            parse_err(&full[..cut]),
            ParseError::ShortHeader { got: cut }
        );
    }
}

#[test]
fn header_length_must_fit_the_chain() {
    let mut req = RequestEncoder::new(Opcode::Getattr, 1, 1)
        .push(&GetattrIn::default())
        .finish();
    // Truncated chain: the header claims more than is present.
    let e = parse_err(&req[..50]);
    assert!(
        matches!(
            e,
            ParseError::LengthMismatch {
                claimed: 56,
                available: 50
            }
        ),
        "{e:?}"
    );
    assert_eq!(e.errno(), errno::EINVAL);
    // A length below the header size.
    req[0..4].copy_from_slice(&8u32.to_ne_bytes());
    assert!(matches!(
        parse_err(&req),
        ParseError::LengthMismatch { claimed: 8, .. }
    ));
}

#[test]
fn bytes_past_len_are_ignored() {
    let mut req = RequestEncoder::new(Opcode::Lookup, 3, 1)
        .name(b"file")
        .finish();
    req.extend_from_slice(&[0xFF; 32]);
    match parse_ok(&req) {
        Operation::Lookup { name } => assert_eq!(name.as_bytes(), b"file"),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn unknown_and_unsupported_opcodes() {
    let req = RequestEncoder::new(Opcode::Lookup, 1, 1).finish();
    let mut bad = req.clone();
    bad[4..8].copy_from_slice(&4000u32.to_ne_bytes());
    let e = parse_err(&bad);
    assert_eq!(e, ParseError::UnknownOpcode(4000));
    assert_eq!(e.errno(), errno::ENOSYS);
    let ioctl = RequestEncoder::new(Opcode::Ioctl, 1, 1).finish();
    assert!(matches!(
        parse_ok(&ioctl),
        Operation::Unsupported(Opcode::Ioctl)
    ));
}

#[test]
fn names_are_validated() {
    let cases: [(&[u8], ParseError); 5] = [
        (b"abc", ParseError::UnterminatedName),
        (b"\0", ParseError::EmptyName),
        (b"a/b\0", ParseError::NameWithSlash),
        (b".\0", ParseError::DotName),
        (b"..\0", ParseError::DotName),
    ];
    for (raw, want) in cases {
        let req = RequestEncoder::new(Opcode::Lookup, 1, 1)
            .bytes(raw)
            .finish();
        assert_eq!(parse_err(&req), want, "name {raw:?}");
    }
    let long = vec![b'x'; NAME_MAX + 1];
    let req = RequestEncoder::new(Opcode::Mkdir, 1, 1)
        .push(&MkdirIn::default())
        .name(&long)
        .finish();
    let e = parse_err(&req);
    assert_eq!(e, ParseError::NameTooLong { len: 256, max: 255 });
    assert_eq!(e.errno(), errno::ENAMETOOLONG);
    let ok = vec![b'x'; NAME_MAX];
    let req = RequestEncoder::new(Opcode::Unlink, 1, 1).name(&ok).finish();
    assert!(matches!(parse_ok(&req), Operation::Unlink { name } if name.as_bytes().len() == 255));
}

#[test]
fn trailing_bytes_after_a_name_are_refused() {
    let req = RequestEncoder::new(Opcode::Unlink, 1, 1)
        .name(b"a")
        .bytes(b"junk")
        .finish();
    assert!(matches!(
        parse_err(&req),
        ParseError::TrailingBytes { extra: 4, .. }
    ));
}

#[test]
fn rename_reads_both_names_and_flags() {
    let req = RequestEncoder::new(Opcode::Rename2, 1, 5)
        .push(&Rename2In {
            newdir: 9,
            flags: RENAME_NOREPLACE,
            padding: 0,
        })
        .name(b"old")
        .name(b"new")
        .finish();
    match parse_ok(&req) {
        Operation::Rename {
            newdir,
            flags,
            old,
            new,
        } => {
            assert_eq!((newdir, flags), (9, RENAME_NOREPLACE));
            assert_eq!((old.as_bytes(), new.as_bytes()), (&b"old"[..], &b"new"[..]));
        }
        other => panic!("unexpected {other:?}"),
    }
    let bad = RequestEncoder::new(Opcode::Rename2, 1, 5)
        .push(&Rename2In {
            newdir: 9,
            flags: 1 << 7,
            padding: 0,
        })
        .name(b"old")
        .name(b"new")
        .finish();
    assert!(matches!(
        parse_err(&bad),
        ParseError::UnknownFlags { flags: 0x80, .. }
    ));
    let missing_new = RequestEncoder::new(Opcode::Rename, 1, 5)
        .push(&RenameIn { newdir: 1 })
        .name(b"old")
        .finish();
    assert_eq!(parse_err(&missing_new), ParseError::UnterminatedName);
}

#[test]
fn symlink_target_may_hold_slashes_but_not_be_empty() {
    let req = RequestEncoder::new(Opcode::Symlink, 1, 1)
        .name(b"l")
        .name(b"../x/y")
        .finish();
    match parse_ok(&req) {
        Operation::Symlink { name, target } => {
            assert_eq!(name.as_bytes(), b"l");
            assert_eq!(target.to_bytes(), b"../x/y");
        }
        other => panic!("unexpected {other:?}"),
    }
    let empty = RequestEncoder::new(Opcode::Symlink, 1, 1)
        .name(b"l")
        .name(b"")
        .finish();
    assert_eq!(parse_err(&empty), ParseError::EmptyName);
}

#[test]
fn write_size_must_match_payload_and_limit() {
    let arg = WriteIn {
        size: 4,
        ..WriteIn::default()
    };
    let ok = RequestEncoder::new(Opcode::Write, 1, 2)
        .push(&arg)
        .bytes(b"data")
        .finish();
    assert!(matches!(parse_ok(&ok), Operation::Write { data, .. } if data == b"data"));
    let short = RequestEncoder::new(Opcode::Write, 1, 2)
        .push(&arg)
        .bytes(b"dat")
        .finish();
    assert!(matches!(
        parse_err(&short),
        ParseError::DataSizeMismatch {
            declared: 4,
            actual: 3,
            ..
        }
    ));
    let big = WriteIn {
        size: (1 << 20) + 1,
        ..WriteIn::default()
    };
    let req = RequestEncoder::new(Opcode::Write, 1, 2).push(&big).finish();
    let e = parse_err(&req);
    assert!(matches!(e, ParseError::TooLarge { .. }));
    assert_eq!(e.errno(), errno::E2BIG);
}

#[test]
fn read_size_is_bounded() {
    let arg = ReadIn {
        size: u32::MAX,
        ..ReadIn::default()
    };
    let req = RequestEncoder::new(Opcode::Read, 1, 2).push(&arg).finish();
    assert!(matches!(parse_err(&req), ParseError::TooLarge { .. }));
}

#[test]
fn removemapping_count_is_checked_against_payload_and_bound() {
    let one = RemoveMappingOne {
        moffset: 0,
        len: 2 << 20,
    };
    let ok = RequestEncoder::new(Opcode::RemoveMapping, 1, 2)
        .push(&RemoveMappingIn { count: 2 })
        .push(&one)
        .push(&RemoveMappingOne {
            moffset: 4 << 20,
            len: 2 << 20,
        })
        .finish();
    match parse_ok(&ok) {
        Operation::RemoveMapping { ranges } => {
            assert_eq!(ranges.len(), 2);
            let offs: Vec<u64> = ranges.map(|r| r.moffset).collect();
            assert_eq!(offs, [0, 4 << 20]);
        }
        other => panic!("unexpected {other:?}"),
    }
    let over = RequestEncoder::new(Opcode::RemoveMapping, 1, 2)
        .push(&RemoveMappingIn { count: 3 })
        .push(&one)
        .finish();
    assert!(matches!(
        parse_err(&over),
        ParseError::BadCount {
            count: 3,
            available: 16,
            ..
        }
    ));
    let huge = RequestEncoder::new(Opcode::RemoveMapping, 1, 2)
        .push(&RemoveMappingIn { count: u32::MAX })
        .finish();
    assert!(matches!(
        parse_err(&huge),
        ParseError::BadCount { max: 256, .. }
    ));
    let extra = RequestEncoder::new(Opcode::RemoveMapping, 1, 2)
        .push(&RemoveMappingIn { count: 1 })
        .push(&one)
        .bytes(&[0; 8])
        .finish();
    assert!(matches!(
        parse_err(&extra),
        ParseError::TrailingBytes { extra: 8, .. }
    ));
}

#[test]
fn batch_forget_count_is_checked() {
    let req = RequestEncoder::new(Opcode::BatchForget, 0, 0)
        .push(&BatchForgetIn { count: 2, dummy: 0 })
        .push(&ForgetOne {
            nodeid: 5,
            nlookup: 1,
        })
        .finish();
    assert!(matches!(
        parse_err(&req),
        ParseError::BadCount { count: 2, .. }
    ));
}

#[test]
fn setupmapping_flags_are_checked() {
    let mut arg = SetupMappingIn {
        fh: u64::MAX,
        foffset: 0,
        len: 2 << 20,
        flags: SETUPMAPPING_FLAG_READ | SETUPMAPPING_FLAG_WRITE,
        moffset: 0,
    };
    let ok = RequestEncoder::new(Opcode::SetupMapping, 1, 2)
        .push(&arg)
        .finish();
    assert!(matches!(parse_ok(&ok), Operation::SetupMapping(a) if a == arg));
    arg.flags |= 1 << 9;
    let bad = RequestEncoder::new(Opcode::SetupMapping, 1, 2)
        .push(&arg)
        .finish();
    assert!(matches!(parse_err(&bad), ParseError::UnknownFlags { .. }));
}

#[test]
fn init_accepts_old_and_new_layouts() {
    let compat = InitInCompat {
        major: 7,
        minor: 31,
        max_readahead: 4096,
        flags: 3,
    };
    let old = RequestEncoder::new(Opcode::Init, 1, 0)
        .push(&compat)
        .finish();
    assert!(matches!(
        parse_ok(&old),
        Operation::Init {
            minor: 31,
            flags: 3,
            ..
        }
    ));
    let ext = InitInExt {
        flags2: 2,
        unused: [0; 11],
    };
    let new = RequestEncoder::new(Opcode::Init, 1, 0)
        .push(&compat)
        .push(&ext)
        .finish();
    assert!(matches!(parse_ok(&new), Operation::Init { flags, .. } if flags == 3 | (2 << 32)));
    let mut cut = new[..new.len() - 4].to_vec();
    let cut_len = cut.len() as u32;
    cut[0..4].copy_from_slice(&cut_len.to_ne_bytes());
    assert!(matches!(
        parse_err(&cut),
        ParseError::ShortBody { need: 48, .. }
    ));
}

#[test]
fn extensions_are_stripped_and_bounded() {
    let mut req = RequestEncoder::new(Opcode::Lookup, 1, 1)
        .name(b"abc")
        .bytes(&[0; 12])
        .finish();
    // 4 bytes of name+NUL, then 12 bytes: declare 16 bytes... name "abc\0" is
    // 4 bytes, so 12 bytes of padding do not form whole 8-byte units. Use 8.
    req.truncate(req.len() - 4);
    let len = req.len() as u32;
    req[0..4].copy_from_slice(&len.to_ne_bytes());
    req[36..38].copy_from_slice(&1u16.to_ne_bytes());
    assert!(matches!(parse_ok(&req), Operation::Lookup { name } if name.as_bytes() == b"abc"));
    req[36..38].copy_from_slice(&100u16.to_ne_bytes());
    assert!(matches!(
        parse_err(&req),
        ParseError::BadExtensionLength { .. }
    ));
}

#[test]
fn setxattr_value_size_must_match() {
    let req = RequestEncoder::new(Opcode::Setxattr, 1, 2)
        .push(&SetxattrIn { size: 3, flags: 0 })
        .name(b"user.k")
        .bytes(b"val")
        .finish();
    match parse_ok(&req) {
        Operation::Setxattr { name, value, .. } => {
            assert_eq!((name.to_bytes(), value), (&b"user.k"[..], &b"val"[..]));
        }
        other => panic!("unexpected {other:?}"),
    }
    let bad = RequestEncoder::new(Opcode::Setxattr, 1, 2)
        .push(&SetxattrIn { size: 9, flags: 0 })
        .name(b"user.k")
        .bytes(b"val")
        .finish();
    assert!(matches!(
        parse_err(&bad),
        ParseError::DataSizeMismatch { .. }
    ));
}

#[test]
fn every_fixed_size_request_refuses_a_short_body() {
    let fixed: [(Opcode, usize); 12] = [
        (Opcode::Getattr, size_of::<GetattrIn>()),
        (Opcode::Setattr, size_of::<SetattrIn>()),
        (Opcode::Open, size_of::<OpenIn>()),
        (Opcode::Read, size_of::<ReadIn>()),
        (Opcode::Release, size_of::<ReleaseIn>()),
        (Opcode::Flush, size_of::<FlushIn>()),
        (Opcode::Fsync, size_of::<FsyncIn>()),
        (Opcode::Access, size_of::<AccessIn>()),
        (Opcode::Fallocate, size_of::<FallocateIn>()),
        (Opcode::Lseek, size_of::<LseekIn>()),
        (Opcode::CopyFileRange, size_of::<CopyFileRangeIn>()),
        (Opcode::SetupMapping, size_of::<SetupMappingIn>()),
    ];
    for (op, need) in fixed {
        let req = RequestEncoder::new(op, 1, 2)
            .bytes(&vec![0; need - 1])
            .finish();
        assert_eq!(
            parse_err(&req),
            ParseError::ShortBody {
                opcode: op,
                got: need - 1,
                need
            },
            "{op:?}"
        );
    }
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes, &Limits::default());
        }

        #[test]
        fn parse_never_panics_with_a_plausible_header(
            opcode in 0u32..60,
            body in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            let mut req = RequestEncoder::new(Opcode::Lookup, 1, 1).bytes(&body).finish();
            req[4..8].copy_from_slice(&opcode.to_ne_bytes());
            let _ = parse(&req, &Limits::default());
        }

        #[test]
        fn setupmapping_round_trips(fh: u64, foffset: u64, len: u64, moffset: u64, w: bool) {
            let arg = SetupMappingIn {
                fh, foffset, len, moffset,
                flags: SETUPMAPPING_FLAG_READ | if w { SETUPMAPPING_FLAG_WRITE } else { 0 },
            };
            let req = RequestEncoder::new(Opcode::SetupMapping, 5, 6).push(&arg).finish();
            let parsed = parse(&req, &Limits::default()).unwrap();
            prop_assert_eq!(parsed.header.unique, 5);
            prop_assert_eq!(parsed.header.nodeid, 6);
            prop_assert!(matches!(parsed.op, Operation::SetupMapping(a) if a == arg));
        }

        #[test]
        fn names_round_trip(name in "[a-zA-Z0-9_.-]{1,255}") {
            prop_assume!(name != "." && name != "..");
            let req = RequestEncoder::new(Opcode::Lookup, 1, 1).name(name.as_bytes()).finish();
            let parsed = parse(&req, &Limits::default()).unwrap();
            let parsed_name = match parsed.op {
                Operation::Lookup { name: n } => n.as_bytes().to_vec(),
                other => return Err(TestCaseError::fail(format!("unexpected {other:?}"))),
            };
            prop_assert_eq!(parsed_name, name.as_bytes().to_vec());
        }
    }
}
