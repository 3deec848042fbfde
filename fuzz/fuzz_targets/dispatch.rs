//! Request parsing and dispatch over a scratch share and an in-process VMM:
//! see `daxfsd_fuzz` for the input format and the invariants checked.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(
    init: daxfsd_fuzz::init(),
    |data: &[u8]| daxfsd_fuzz::run_input(data)
);
