//! The protocol crate alone, on inputs in the dispatch target's format (so
//! both share the seed corpus): every request is parsed with the default
//! and with tight limits. Parsing must never panic, and what it accepts
//! must stay within the bytes given.
#![no_main]

use daxfsd_protocol::{parse, Limits, Operation};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let tight = Limits {
        max_write: 4096,
        max_read: 4096,
    };
    for request in daxfsd_fuzz::split_requests(data.get(1..).unwrap_or_default()) {
        for limits in [Limits::default(), tight] {
            let Ok(parsed) = parse(request, &limits) else {
                continue;
            };
            assert!(parsed.header.len as usize <= request.len());
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
