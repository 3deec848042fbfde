//! CONFIGURE_MEM_SLOTS: a frontend that puts DAX window mappings into the vhost-user
//! memory table (upstream QEMU 11.1 adds one region per mapping) passes them one by one
//! with ADD_MEM_REG / REM_MEM_REG instead of being capped at 8 regions in SET_MEM_TABLE.
//! vhost-user-backend serves both (the daemon's memory is updated), and a chain whose
//! buffers lie in such a region is served directly, like any guest memory.

mod dax_common;

use std::os::unix::fs::FileExt as _;

use dax_common::{pattern, DaxDaemon, MIB};
use daxfsd_harness::client::requests;
use daxfsd_harness::guest_memory::memfd_region;
use daxfsd_harness::RawDesc;
use vhost::vhost_user::{VhostUserFrontend as _, VhostUserProtocolFeatures};

/// Where the added regions go: far above the harness's 64 MiB of guest RAM.
const REGION_GPA: u64 = 1 << 32;
const REGION: u64 = MIB;
const REGIONS: u64 = 20;

#[test]
fn regions_added_one_by_one_serve_chains_until_removed() {
    let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
    daemon.patterned_file("data", MIB);
    let s = daemon.connect_with(|c| c.configure_mem_slots = true);
    assert!(s
        .dev
        .negotiated()
        .protocol_features
        .contains(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS));
    let slots = dax_common::check(
        s.backend(),
        s.dev
            .vhost_call("GET_MAX_MEM_SLOTS", |fe| fe.get_max_mem_slots()),
    );
    assert!(slots >= 8 + REGIONS, "only {slots} memory slots");

    // More regions than SET_MEM_TABLE can carry (8), as QEMU 11.1 adds one per mapping.
    let regions: Vec<_> = (0..REGIONS)
        .map(|i| memfd_region(REGION_GPA + i * 2 * REGION, REGION).unwrap())
        .collect();
    for (_, info) in &regions {
        dax_common::check(
            s.backend(),
            s.dev
                .vhost_call("ADD_MEM_REG", |fe| fe.add_mem_region(info)),
        );
    }

    let nodeid = s.lookup("data");
    let fh = s.open(nodeid, libc::O_RDONLY);
    // READ 8 KiB at 4 KiB into the last region, straddling nothing else.
    let read_into = |gpa: u64| {
        let req = requests::read(s.uniques.next(), nodeid, fh, 4096, 8192).finish();
        let inbuf = dax_common::check(s.backend(), s.dev.alloc(req.len() as u64));
        dax_common::check(s.backend(), s.dev.memory().write(inbuf.addr, &req));
        let head = dax_common::check(s.backend(), s.dev.alloc(16));
        let chain = [
            RawDesc::readable(inbuf.addr, req.len() as u32),
            RawDesc::writable(head.addr, 16),
            RawDesc::writable(gpa, 8192),
        ];
        let token = dax_common::check(s.backend(), s.dev.submit_raw_chain(1, &chain));
        let done = dax_common::check(s.backend(), s.dev.wait(token));
        s.dev.free(inbuf);
        s.dev.free(head);
        done
    };
    let (last_file, last_info) = &regions[(REGIONS - 1) as usize];
    let done = read_into(last_info.guest_phys_addr + 4096);
    assert_eq!(done.used_len, 16 + 8192, "{}", daemon.backend.diagnostics());
    let mut got = vec![0u8; 8192];
    last_file.read_exact_at(&mut got, 4096).unwrap();
    assert!(
        got == pattern(4096, 8192),
        "the READ data is not in the region"
    );

    // Removed: its buffers are no longer guest memory; the chain is refused, not served.
    for (_, info) in &regions {
        dax_common::check(
            s.backend(),
            s.dev
                .vhost_call("REM_MEM_REG", |fe| fe.remove_mem_region(info)),
        );
    }
    let done = read_into(last_info.guest_phys_addr + 4096);
    assert_eq!(done.used_len, 0);
    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_bad_chains_total"), 1);
    assert!(daemon.is_running());
}
