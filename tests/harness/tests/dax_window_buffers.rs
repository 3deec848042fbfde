//! Window-backed buffers: FUSE requests whose data descriptors point into the DAX window
//! (a guest `write(2)` from a DAX-mapped file, a direct-I/O `read(2)` into one), served
//! through the files the window maps once the frontend reported where the window sits
//! (SET_CONFIG at config offset 64: guest-physical address, length).
//!
//! The harness's guest RAM is 64 MiB at 0; the window is reported at 4 GiB, where the
//! daemon has no memory region, so only the window path can serve these descriptors.

mod dax_common;

use std::os::unix::fs::FileExt as _;

use dax_common::{pattern, DaxDaemon, Session, FH_BY_NODEID, MIB, PAGE, READ, READ_WRITE, SLOT};
use daxfsd_harness::{Completion, RawDesc};
use daxfsd_protocol::abi::{ReadIn, WriteIn};
use daxfsd_protocol::encode::RequestEncoder;
use daxfsd_protocol::Opcode;
use vhost::vhost_user::message::VhostUserConfigFlags;
use vhost::vhost_user::VhostUserFrontend as _;

/// Where the harness reports the window: far above its 64 MiB of guest RAM.
const WINDOW_GPA: u64 = 1 << 32;
const WINDOW: u64 = 8 * MIB;
/// Reply header length.
const OUT_HEADER: usize = 16;

/// SET_CONFIG(offset 64, [gpa, len]) as a frontend reports the window's placement.
fn report_window(s: &Session<'_>, gpa: u64, len: u64) {
    let bytes = [gpa.to_le_bytes(), len.to_le_bytes()].concat();
    dax_common::check(
        s.backend(),
        s.dev.vhost_call("SET_CONFIG", |fe| {
            fe.set_config(64, VhostUserConfigFlags::empty(), &bytes)
        }),
    );
}

/// Bytes `len` of a second pattern (differs from [`pattern`] everywhere).
fn other_pattern(from: u64, len: u64) -> Vec<u8> {
    pattern(from, len).iter().map(|b| b ^ 0xa5).collect()
}

fn read_host(path: &std::path::Path, at: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    std::fs::File::open(path)
        .unwrap()
        .read_exact_at(&mut buf, at)
        .unwrap();
    buf
}

/// The errno and unique of a reply's header (the body may lie in the window, which the
/// harness does not gather).
fn header(done: &Completion) -> (i32, u64) {
    assert!(done.data.len() >= OUT_HEADER, "no reply header: {done:?}");
    let error = i32::from_le_bytes(done.data[4..8].try_into().unwrap());
    let unique = u64::from_le_bytes(done.data[8..16].try_into().unwrap());
    (-error, unique)
}

struct Fixture<'a> {
    s: Session<'a>,
}

impl<'a> Fixture<'a> {
    fn new(daemon: &'a DaxDaemon) -> Self {
        Fixture {
            s: daemon.connect(),
        }
    }

    /// Sends a chain: `head` (request bytes in guest RAM), then readable descriptors at
    /// `readable` guest-physical addresses, then `reply` writable bytes in guest RAM and
    /// writable descriptors at `writable`.
    fn send(
        &self, head: &[u8], readable: &[(u64, u32)], reply: u32, writable: &[(u64, u32)],
    ) -> Completion {
        let s = &self.s;
        let inbuf = dax_common::check(s.backend(), s.dev.alloc(head.len() as u64));
        dax_common::check(s.backend(), s.dev.memory().write(inbuf.addr, head));
        let outbuf = dax_common::check(s.backend(), s.dev.alloc(4096));
        let mut chain = vec![RawDesc::readable(inbuf.addr, head.len() as u32)];
        chain.extend(readable.iter().map(|&(a, l)| RawDesc::readable(a, l)));
        chain.push(RawDesc::writable(outbuf.addr, reply));
        chain.extend(writable.iter().map(|&(a, l)| RawDesc::writable(a, l)));
        let token = dax_common::check(s.backend(), s.dev.submit_raw_chain(1, &chain));
        let done = dax_common::check(s.backend(), s.dev.wait(token));
        s.dev.free(inbuf);
        s.dev.free(outbuf);
        done
    }

    /// A WRITE at `offset` of handle `fh`: the header and WriteIn in guest RAM, the data
    /// in one readable descriptor per `(guest-physical address, length)` of `data`.
    fn write(&self, nodeid: u64, fh: u64, offset: u64, data: &[(u64, u32)]) -> (Completion, u64) {
        let size: u32 = data.iter().map(|&(_, l)| l).sum();
        let unique = self.s.uniques.next();
        let full = RequestEncoder::new(Opcode::Write, unique, nodeid)
            .push(&WriteIn {
                fh,
                offset,
                size,
                ..WriteIn::default()
            })
            .bytes(&vec![0; size as usize])
            .finish();
        let head = &full[..full.len() - size as usize];
        (self.send(head, data, 4096, &[]), unique)
    }

    /// A READ at `offset` of handle `fh`, its data going to one writable descriptor per
    /// `(guest-physical address, length)` of `into`.
    fn read(&self, nodeid: u64, fh: u64, offset: u64, into: &[(u64, u32)]) -> (Completion, u64) {
        let size: u32 = into.iter().map(|&(_, l)| l).sum();
        let unique = self.s.uniques.next();
        let req = RequestEncoder::new(Opcode::Read, unique, nodeid)
            .push(&ReadIn {
                fh,
                offset,
                size,
                read_flags: 0,
                lock_owner: 0,
                flags: 0,
                padding: 0,
            })
            .finish();
        (self.send(&req, &[], OUT_HEADER as u32, into), unique)
    }
}

/// A daemon with an 8 MiB window and files `a` and `a2` (patterned, 4 MiB), `c` (another
/// pattern, 1 MiB) and an empty `b`.
fn daemon(extra: &[&str]) -> DaxDaemon {
    let daemon = DaxDaemon::start(WINDOW, 1, extra);
    daemon.patterned_file("a", 4 * MIB);
    daemon.patterned_file("a2", 4 * MIB);
    std::fs::write(daemon.backend.shared_dir().join("c"), other_pattern(0, MIB)).unwrap();
    std::fs::write(daemon.backend.shared_dir().join("b"), b"").unwrap();
    daemon
}

#[test]
fn a_write_whose_data_lies_in_the_window_copies_the_mapped_file_bytes() {
    let daemon = daemon(&["--seccomp", "kill"]);
    let f = Fixture::new(&daemon);
    let s = &f.s;
    report_window(s, WINDOW_GPA, WINDOW);
    let (a, a2, b) = (s.lookup("a"), s.lookup("a2"), s.lookup("b"));
    // File a's page 5 at window page SLOT + 10, a2's page 100 at the next window page: two
    // mappings side by side; a's [2 MiB, 4 MiB) at window slot 2 (writable).
    assert_eq!(
        s.setup(
            a,
            FH_BY_NODEID,
            5 * PAGE,
            PAGE,
            SLOT + 10 * PAGE,
            READ_WRITE
        ),
        0
    );
    assert_eq!(
        s.setup(a2, FH_BY_NODEID, 100 * PAGE, PAGE, SLOT + 11 * PAGE, READ),
        0
    );
    assert_eq!(
        s.setup(a, FH_BY_NODEID, 2 * MIB, SLOT, 2 * SLOT, READ_WRITE),
        0
    );
    let fh = s.open(b, libc::O_RDWR);
    let b_path = daemon.backend.shared_dir().join("b");

    // 3000 bytes from 123 bytes into a's page 5 (through its window page).
    let (done, unique) = f.write(b, fh, 0, &[(WINDOW_GPA + SLOT + 10 * PAGE + 123, 3000)]);
    assert_eq!(
        header(&done),
        (0, unique),
        "{}",
        daemon.backend.diagnostics()
    );
    assert_eq!(read_host(&b_path, 0, 3000), pattern(5 * PAGE + 123, 3000));

    // 3000 bytes across the boundary of the two mappings: 1000 of a, 2000 of a2.
    let (done, unique) = f.write(b, fh, 8192, &[(WINDOW_GPA + SLOT + 11 * PAGE - 1000, 3000)]);
    assert_eq!(header(&done), (0, unique));
    let mut expected = pattern(6 * PAGE - 1000, 1000);
    expected.extend(pattern(100 * PAGE, 2000));
    assert_eq!(read_host(&b_path, 8192, 3000), expected);

    // 1 MiB from the 2 MiB mapping, in two descriptors, from the start of its slot.
    let (done, unique) = f.write(
        b,
        fh,
        MIB,
        &[
            (WINDOW_GPA + 2 * SLOT, 4096),
            (WINDOW_GPA + 2 * SLOT + 4096, (MIB - 4096) as u32),
        ],
    );
    assert_eq!(header(&done), (0, unique));
    assert!(read_host(&b_path, MIB, MIB as usize) == pattern(2 * MIB, MIB));

    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_window_address_known"), 1);
    assert_eq!(
        m.get("daxfsd_dax_window_io_read_bytes_total"),
        3000 + 3000 + MIB
    );
    assert_eq!(m.get("daxfsd_dax_window_io_faults_total"), 0);
    assert!(daemon
        .backend
        .stderr()
        .contains("frontend reports the DAX window at guest-physical 0x100000000"));
}

#[test]
fn a_read_whose_reply_data_lies_in_a_writable_mapping_lands_in_the_mapped_file() {
    let daemon = daemon(&[]);
    let f = Fixture::new(&daemon);
    let s = &f.s;
    report_window(s, WINDOW_GPA, WINDOW);
    let (a, c) = (s.lookup("a"), s.lookup("c"));
    // a's [2 MiB, 4 MiB) writable at window slot 1.
    assert_eq!(s.setup(a, FH_BY_NODEID, 2 * MIB, SLOT, SLOT, READ_WRITE), 0);
    let fh = s.open(c, libc::O_RDONLY);
    let a_path = daemon.backend.shared_dir().join("a");

    // 5000 bytes of c from offset 777 into a's window, 100 bytes into its page 3.
    let at = SLOT + 3 * PAGE + 100;
    let (done, unique) = f.read(c, fh, 777, &[(WINDOW_GPA + at, 5000)]);
    assert_eq!(
        header(&done),
        (0, unique),
        "{}",
        daemon.backend.diagnostics()
    );
    assert_eq!(done.used_len as usize, OUT_HEADER + 5000);
    let a_at = 2 * MIB + 3 * PAGE + 100;
    assert_eq!(read_host(&a_path, a_at, 5000), other_pattern(777, 5000));
    // The bytes around it are a's own, and the window shows the new ones.
    assert_eq!(
        read_host(&a_path, a_at - 100, 100),
        pattern(a_at - 100, 100)
    );
    assert_eq!(
        read_host(&a_path, a_at + 5000, 100),
        pattern(a_at + 5000, 100)
    );
    assert_eq!(s.window().read(at, 5000).unwrap(), other_pattern(777, 5000));

    // A short read (near the end of c) writes only what was read.
    let (done, _) = f.read(c, fh, MIB - 10, &[(WINDOW_GPA + SLOT, 4096)]);
    assert_eq!(header(&done).0, 0);
    assert_eq!(done.used_len as usize, OUT_HEADER + 10);
    assert_eq!(read_host(&a_path, 2 * MIB, 10), other_pattern(MIB - 10, 10));
    assert_eq!(
        read_host(&a_path, 2 * MIB + 10, 10),
        pattern(2 * MIB + 10, 10)
    );

    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_window_io_written_bytes_total"), 5010);
}

#[test]
fn unmapped_read_only_and_straddling_window_buffers_are_efault_and_change_nothing() {
    let daemon = daemon(&[]);
    let f = Fixture::new(&daemon);
    let s = &f.s;
    report_window(s, WINDOW_GPA, WINDOW);
    let (a, b, c) = (s.lookup("a"), s.lookup("b"), s.lookup("c"));
    // a's first 2 MiB read-only at slot 0; slot 1 stays empty.
    assert_eq!(s.setup(a, FH_BY_NODEID, 0, SLOT, 0, READ), 0);
    let fh_b = s.open(b, libc::O_RDWR);
    let fh_c = s.open(c, libc::O_RDONLY);
    let a_path = daemon.backend.shared_dir().join("a");
    let b_path = daemon.backend.shared_dir().join("b");

    // (c) WRITE from an unmapped window page; and from a mapped page running into one.
    for data in [(WINDOW_GPA + SLOT + 8, 100), (WINDOW_GPA + SLOT - 50, 100)] {
        let (done, unique) = f.write(b, fh_b, 0, &[data]);
        assert_eq!(header(&done), (libc::EFAULT, unique), "{data:x?}");
        assert_eq!(std::fs::metadata(&b_path).unwrap().len(), 0);
    }
    // READ into an unmapped window page.
    let (done, unique) = f.read(c, fh_c, 0, &[(WINDOW_GPA + SLOT + 8, 100)]);
    assert_eq!(header(&done), (libc::EFAULT, unique));
    // (d) READ into the read-only mapping: EFAULT, a unchanged.
    let (done, unique) = f.read(c, fh_c, 0, &[(WINDOW_GPA + 4 * PAGE, 100)]);
    assert_eq!(header(&done), (libc::EFAULT, unique));
    assert!(std::fs::read(&a_path).unwrap() == pattern(0, 4 * MIB));
    // A descriptor straddling the window's end: outside both, EFAULT as before.
    let (done, unique) = f.write(b, fh_b, 0, &[(WINDOW_GPA + WINDOW - 8, 16)]);
    assert_eq!(header(&done), (libc::EFAULT, unique));
    // And the mapped read-only page still serves a WRITE's data.
    let (done, unique) = f.write(b, fh_b, 0, &[(WINDOW_GPA + 4 * PAGE, 100)]);
    assert_eq!(header(&done), (0, unique));
    assert_eq!(read_host(&b_path, 0, 100), pattern(4 * PAGE, 100));

    let m = daemon.fresh_metrics();
    assert_eq!(m.get("daxfsd_dax_window_io_faults_total"), 4);
    assert_eq!(m.get("daxfsd_dax_window_io_written_bytes_total"), 0);
}

#[test]
fn without_a_reported_placement_a_window_buffer_is_efault_as_before() {
    let daemon = daemon(&["--persist"]);
    let b_path = daemon.backend.shared_dir().join("b");
    {
        let f = Fixture::new(&daemon);
        let s = &f.s;
        let (a, b) = (s.lookup("a"), s.lookup("b"));
        assert_eq!(s.setup(a, FH_BY_NODEID, 0, SLOT, 0, READ_WRITE), 0);
        let fh = s.open(b, libc::O_RDWR);
        let data = [(WINDOW_GPA + 8, 100)];
        // (e) Nothing reported.
        let (done, unique) = f.write(b, fh, 0, &data);
        assert_eq!(header(&done), (libc::EFAULT, unique));
        // A placement of the wrong length, or in pieces, is ignored.
        report_window(s, WINDOW_GPA, WINDOW / 2);
        dax_common::check(
            s.backend(),
            s.dev.vhost_call("SET_CONFIG", |fe| {
                fe.set_config(64, VhostUserConfigFlags::empty(), &WINDOW_GPA.to_le_bytes())
            }),
        );
        let (done, unique) = f.write(b, fh, 0, &data);
        assert_eq!(header(&done), (libc::EFAULT, unique));
        assert_eq!(
            daemon
                .fresh_metrics()
                .get("daxfsd_dax_window_address_known"),
            0
        );
        // Reported: served.
        report_window(s, WINDOW_GPA, WINDOW);
        let (done, unique) = f.write(b, fh, 0, &data);
        assert_eq!(header(&done), (0, unique));
        assert_eq!(read_host(&b_path, 0, 100), pattern(8, 100));
        // Reported unmapped (address u64::MAX): EFAULT again.
        report_window(s, u64::MAX, 0);
        let (done, unique) = f.write(b, fh, 0, &data);
        assert_eq!(header(&done), (libc::EFAULT, unique));
        report_window(s, WINDOW_GPA, WINDOW);
        // The guest's config space is still the 40 bytes of tag and queue count.
        assert_eq!(s.dev.fs_config().map(|c| c.tag.as_str()), Some("dax"));
    }
    // The frontend went away: its placement is forgotten, the next one must report its own.
    let f = Fixture::new(&daemon);
    let s = &f.s;
    let (a, b) = (s.lookup("a"), s.lookup("b"));
    assert_eq!(s.setup(a, FH_BY_NODEID, 0, SLOT, 0, READ_WRITE), 0);
    let fh = s.open(b, libc::O_RDWR);
    let (done, unique) = f.write(b, fh, 200, &[(WINDOW_GPA + 8, 100)]);
    assert_eq!(header(&done), (libc::EFAULT, unique));
    assert_eq!(std::fs::metadata(&b_path).unwrap().len(), 100);
    assert_eq!(
        daemon
            .fresh_metrics()
            .get("daxfsd_dax_window_address_known"),
        0
    );
}
