//! The protocol crate alone, on inputs in the dispatch target's format (so
//! both share the seed corpus): every request is parsed with the default
//! and with tight limits, before and after INIT agreed the layouts that
//! change requests (SETXATTR_EXT, SECURITY_CTX). Parsing must never panic,
//! and what it accepts must stay within the bytes given.
#![no_main]

use daxfsd_protocol::{parse_with, Layout, Limits, Operation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tight = Limits {
        max_write: 4096,
        max_read: 4096,
    };
    for request in daxfsd_fuzz::split_requests(data.get(1..).unwrap_or_default()) {
        let agreed = Layout {
            setxattr_ext: true,
            security_ctx: true,
        };
        for (limits, layout) in [
            (Limits::default(), Layout::default()),
            (tight, Layout::default()),
            (Limits::default(), agreed),
        ] {
            let Ok(parsed) = parse_with(request, &limits, &layout) else {
                continue;
            };
            assert!(parsed.header.len as usize <= request.len());
            if let Some(ctx) = parsed.security_ctx {
                assert!(!ctx.name.to_bytes().is_empty() && !ctx.value.is_empty());
                assert!(ctx.value.len() < request.len());
            }
            match parsed.op {
                Operation::BatchForget { entries } => {
                    let n = entries.len();
                    assert_eq!(entries.count(), n);
                }
                Operation::RemoveMapping { ranges } => {
                    let n = ranges.len();
                    assert_eq!(ranges.count(), n);
                }
                Operation::Write { arg, data: payload } => {
                    assert_eq!(payload.len(), arg.size as usize);
                    assert!(arg.size <= limits.max_write);
                }
                _ => {}
            }
        }
    }
});
