//! A mapped file shrinking under the window. A page of the window that maps a file page
//! past the new end of file raises SIGBUS in the VMM when the guest touches it (QEMU dies,
//! measured with another backend), and an unmapped (PROT_NONE) one raises SIGSEGV; the
//! daemon must replace such extents with zero-filled placeholders before the truncation
//! is answered.

mod dax_common;

use dax_common::{pattern, DaxDaemon, Session, FH_BY_NODEID, MIB, READ, READ_WRITE, SLOT};
use daxfsd_protocol::abi::{OpenIn, SetattrIn, FATTR_SIZE};
use daxfsd_protocol::encode::RequestEncoder;
use daxfsd_protocol::Opcode;

/// Maps two extents of a 4 MiB file, lets `truncate` shrink it to 0 through the guest,
/// and checks the window and the metrics.
fn extents_become_zero_placeholders(truncate: impl FnOnce(&Session<'_>, u64)) {
    let daemon = DaxDaemon::start(8 * MIB, 1, &[]);
    let path = daemon.patterned_file("data", 4 * MIB);
    let s = daemon.connect();
    let nodeid = s.lookup("data");
    assert_eq!(s.setup(nodeid, FH_BY_NODEID, 0, SLOT, 0, READ_WRITE), 0);
    assert_eq!(s.setup(nodeid, FH_BY_NODEID, SLOT, SLOT, SLOT, READ), 0);

    truncate(&s, nodeid);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);

    // Every byte of both extents is readable (no SIGBUS, no SIGSEGV) and zero.
    for slot in [0, SLOT] {
        let bytes = s
            .window()
            .read(slot, SLOT as usize)
            .unwrap_or_else(|e| panic!("extent {slot:#x} after truncation: {e}"));
        assert!(bytes.iter().all(|&b| b == 0), "extent {slot:#x} not zeroed");
        let mapping = s.window().mapping_at(slot).unwrap();
        assert!(
            !dax_common::same_file(&mapping.source, &path),
            "extent {slot:#x} still maps the truncated file: {mapping:?}"
        );
    }
    assert_eq!(s.channel().stats().failed, 0, "{:?}", s.channel().log());

    // The guest removes them later like any mapping; the placeholders go with them.
    assert_eq!(s.remove(&[(0, SLOT), (SLOT, SLOT)]), 0);
    assert!(
        s.window().mappings().is_empty(),
        "{:?}",
        s.window().mappings()
    );
    // And the file maps again once it has grown.
    std::fs::write(&path, pattern(0, SLOT)).unwrap();
    assert_eq!(s.setup(nodeid, FH_BY_NODEID, 0, SLOT, 0, READ), 0);
    assert!(s.window().read(0, SLOT as usize).unwrap() == pattern(0, SLOT));

    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_invalidated_mappings_total"), 2);
    assert_eq!(m.get("daxfsd_dax_live_mappings"), 1);
}

#[test]
fn truncation_by_setattr_replaces_mapped_extents_with_zero_placeholders() {
    extents_become_zero_placeholders(|s, nodeid| {
        let req = RequestEncoder::new(Opcode::Setattr, s.uniques.next(), nodeid)
            .push(&SetattrIn {
                valid: FATTR_SIZE,
                size: 0,
                ..SetattrIn::default()
            })
            .finish();
        assert_eq!(s.fuse(1, &req).errno(), 0);
    });
}

#[test]
fn truncation_by_open_o_trunc_replaces_mapped_extents_with_zero_placeholders() {
    extents_become_zero_placeholders(|s, nodeid| {
        let req = RequestEncoder::new(Opcode::Open, s.uniques.next(), nodeid)
            .push(&OpenIn {
                flags: (libc::O_WRONLY | libc::O_TRUNC) as u32,
                open_flags: 0,
            })
            .finish();
        assert_eq!(s.fuse(1, &req).errno(), 0);
    });
}
