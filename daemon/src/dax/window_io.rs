//! Window-backed buffers: bytes of a descriptor chain that lie in the DAX
//! window rather than in guest RAM, moved through the files the window maps.
//!
//! A guest using DAX can hand the device a buffer that is a window page:
//! `write(2)` from a DAX-mapped file's mmap (git writing `.git/config` into
//! `config.lock`), or a direct-I/O `read(2)` into one. The window is not
//! guest RAM to a vhost-user backend, and the daemon never maps it; but the
//! index knows which file range every window page shows. So a window page is
//! read with `pread` from its file (zeros for a placeholder past the file's
//! end) and written with `pwrite` into it (only through a writable mapping,
//! never into a placeholder): exactly what the guest's own load or store
//! through its `MAP_SHARED` window page would have done. A page with no
//! mapping fails the request with `EFAULT`, as the guest's access would
//! have faulted.
//!
//! [`resolve`] is the pure rule for one page run; the [`Dax`] methods apply
//! it with the index and the held files ([`super::host_watch::MappedFiles`]).

use std::fs::File;
use std::sync::Arc;

use dax_window::{MappingRecord, MappingState, Window};

use super::Dax;
use crate::errno::Errno;

/// Why window-backed bytes cannot be moved.
#[derive(Debug, thiserror::Error)]
pub enum WindowIoError {
    /// No mapping, or one the VMM no longer holds (a zapped extent without
    /// placeholder): the guest's access would fault.
    #[error("window offset {moffset:#x} maps nothing")]
    Unmapped {
        /// Window offset.
        moffset: u64,
    },
    /// A device write into a page the guest mapped read-only.
    #[error("window offset {moffset:#x} is mapped read-only")]
    ReadOnly {
        /// Window offset.
        moffset: u64,
    },
    /// A device write into a zero placeholder (file pages past the end).
    #[error("window offset {moffset:#x} is a placeholder past its file's end")]
    Placeholder {
        /// Window offset.
        moffset: u64,
    },
    /// The daemon holds no descriptor of the mapped file (repair switched off,
    /// or it could not keep one).
    #[error("the file of inode {nodeid} mapped at window offset {moffset:#x} is not held")]
    NoFile {
        /// Inode.
        nodeid: u64,
        /// Window offset.
        moffset: u64,
    },
    /// The held descriptor appends on every write, so `pwrite` cannot place
    /// bytes at an offset.
    #[error("the file of inode {nodeid} is open for appending")]
    Append {
        /// Inode.
        nodeid: u64,
    },
    /// The host refused the transfer.
    #[error("{op} of inode {nodeid} at file offset {foffset:#x}")]
    Io {
        /// `pread`, `pwrite`, `fstat` or `fcntl`.
        op: &'static str,
        /// Inode.
        nodeid: u64,
        /// File offset.
        foffset: u64,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
}

impl WindowIoError {
    /// What the guest's request is answered: `EIO` when the host failed,
    /// `EFAULT` when the guest's buffer is not usable.
    pub fn errno(&self) -> Errno {
        match self {
            Self::Io { .. } | Self::Append { .. } => Errno::EIO,
            _ => Errno::EFAULT,
        }
    }
}

/// The direction of a transfer, seen from the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// The device reads the buffer (request bytes, WRITE data).
    Read,
    /// The device writes the buffer (reply bytes, READ data).
    Write,
}

/// Where the bytes of a run of window pages are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Source {
    /// In the file of `nodeid`, from `foffset` on.
    File {
        /// Inode.
        nodeid: u64,
        /// File offset of the run's first byte.
        foffset: u64,
    },
    /// A placeholder: reads as zeros.
    Zeros,
}

/// The first part of a transfer at one window offset that one record serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Run {
    pub(super) source: Source,
    /// Bytes of the run (at most the transfer's length, never past the record).
    pub(super) len: u64,
}

/// Resolves the first run of a transfer of `len` bytes (more than zero) at
/// window offset `moffset`, where `record` is what the index holds for the page
/// of `moffset` ([`Window::lookup`]).
pub(super) fn resolve(
    record: Option<MappingRecord>, moffset: u64, len: u64, access: Access,
) -> Result<Run, WindowIoError> {
    let record = record
        .filter(|r| r.moffset <= moffset && moffset < r.end())
        .ok_or(WindowIoError::Unmapped { moffset })?;
    let len = len.min(record.end() - moffset);
    let source = match (record.state, access) {
        (MappingState::Live, Access::Write) if !record.writable => {
            return Err(WindowIoError::ReadOnly { moffset })
        }
        (MappingState::Live, _) => Source::File {
            nodeid: record.inode.0,
            foffset: record.foffset + (moffset - record.moffset),
        },
        (MappingState::Zapped { placeholder: true }, Access::Read) => Source::Zeros,
        (MappingState::Zapped { placeholder: true }, Access::Write) => {
            return Err(WindowIoError::Placeholder { moffset })
        }
        (MappingState::Zapped { placeholder: false }, _) => {
            return Err(WindowIoError::Unmapped { moffset })
        }
    };
    Ok(Run { source, len })
}

/// Calls `each` for every run of `[moffset, moffset + len)` with the offset
/// of the run in the transfer; stops at the first error.
fn for_each_run(
    window: &Window, moffset: u64, len: u64, access: Access,
    mut each: impl FnMut(u64, Run) -> Result<(), WindowIoError>,
) -> Result<(), WindowIoError> {
    let mut done = 0;
    while done < len {
        let at = moffset
            .checked_add(done)
            .ok_or(WindowIoError::Unmapped { moffset })?;
        let run = resolve(window.lookup(at), at, len - done, access)?;
        each(done, run)?;
        done += run.len;
    }
    Ok(())
}

fn held(
    file_of: &dyn Fn(u64) -> Option<Arc<File>>, nodeid: u64, moffset: u64,
) -> Result<Arc<File>, WindowIoError> {
    file_of(nodeid).ok_or(WindowIoError::NoFile { nodeid, moffset })
}

fn io_error(op: &'static str, nodeid: u64, foffset: u64, e: rustix::io::Errno) -> WindowIoError {
    WindowIoError::Io {
        op,
        nodeid,
        foffset,
        source: e.into(),
    }
}

/// Fills `buf` with the window's bytes at `moffset`.
pub(super) fn read(
    window: &Window, file_of: &dyn Fn(u64) -> Option<Arc<File>>, moffset: u64, buf: &mut [u8],
) -> Result<(), WindowIoError> {
    for_each_run(
        window,
        moffset,
        buf.len() as u64,
        Access::Read,
        |from, run| {
            let part = &mut buf[from as usize..(from + run.len) as usize];
            let Source::File { nodeid, foffset } = run.source else {
                part.fill(0);
                return Ok(());
            };
            let file = held(file_of, nodeid, moffset + from)?;
            let mut done = 0;
            while done < part.len() {
                let pos = foffset + done as u64;
                match rustix::io::pread(&*file, &mut part[done..], pos) {
                    // The end of the file: what a mapping shows past it is zeros.
                    Ok(0) => break,
                    Ok(n) => done += n,
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(io_error("pread", nodeid, pos, e)),
                }
            }
            part[done..].fill(0);
            Ok(())
        },
    )
}

/// Checks that a device write of `len` bytes at `moffset` would succeed as
/// far as the index can tell (every page mapped writable to a held file).
pub(super) fn check_write(
    window: &Window, file_of: &dyn Fn(u64) -> Option<Arc<File>>, moffset: u64, len: u64,
) -> Result<(), WindowIoError> {
    for_each_run(window, moffset, len, Access::Write, |from, run| {
        if let Source::File { nodeid, .. } = run.source {
            held(file_of, nodeid, moffset + from)?;
        }
        Ok(())
    })
}

/// Writes `data` into the window at `moffset`, into the mapped files. Bytes
/// that fall past a file's end (the tail of its last page) are dropped, as a
/// store through the mapping would be: the file does not grow.
pub(super) fn write(
    window: &Window, file_of: &dyn Fn(u64) -> Option<Arc<File>>, moffset: u64, data: &[u8],
) -> Result<(), WindowIoError> {
    for_each_run(
        window,
        moffset,
        data.len() as u64,
        Access::Write,
        |from, run| {
            let Source::File { nodeid, foffset } = run.source else {
                // resolve() never gives a placeholder for a write.
                return Err(WindowIoError::Placeholder {
                    moffset: moffset + from,
                });
            };
            let file = held(file_of, nodeid, moffset + from)?;
            let flags = rustix::fs::fcntl_getfl(&*file)
                .map_err(|e| io_error("fcntl", nodeid, foffset, e))?;
            if flags.contains(rustix::fs::OFlags::APPEND) {
                return Err(WindowIoError::Append { nodeid });
            }
            let size = rustix::fs::fstat(&*file)
                .map_err(|e| io_error("fstat", nodeid, foffset, e))?
                .st_size;
            let size = u64::try_from(size).unwrap_or(0);
            let keep = size.saturating_sub(foffset).min(run.len) as usize;
            let part = &data[from as usize..from as usize + keep];
            let mut done = 0;
            while done < part.len() {
                let pos = foffset + done as u64;
                match rustix::io::pwrite(&*file, &part[done..], pos) {
                    Ok(0) => {
                        return Err(WindowIoError::Io {
                            op: "pwrite",
                            nodeid,
                            foffset: pos,
                            source: std::io::ErrorKind::WriteZero.into(),
                        })
                    }
                    Ok(n) => done += n,
                    Err(rustix::io::Errno::INTR) => {}
                    Err(e) => return Err(io_error("pwrite", nodeid, pos, e)),
                }
            }
            Ok(())
        },
    )
}

impl Dax {
    fn held_file(&self) -> impl Fn(u64) -> Option<Arc<File>> + '_ {
        |nodeid| self.core.files.file(nodeid)
    }

    /// Fills `buf` with the bytes the window shows at `moffset` (a device
    /// read of a window-backed buffer).
    pub fn read_window(&self, moffset: u64, buf: &mut [u8]) -> Result<(), WindowIoError> {
        read(&self.core.window, &self.held_file(), moffset, buf)
    }

    /// Whether a device write of `len` bytes at window offset `moffset` can
    /// be carried out: checked before a request runs, so a chain whose reply
    /// buffers cannot take the reply is refused before anything changes.
    pub fn check_window_write(&self, moffset: u64, len: u64) -> Result<(), WindowIoError> {
        check_write(&self.core.window, &self.held_file(), moffset, len)
    }

    /// Writes `data` where the window shows file bytes at `moffset` (a
    /// device write into a window-backed buffer).
    pub fn write_window(&self, moffset: u64, data: &[u8]) -> Result<(), WindowIoError> {
        write(&self.core.window, &self.held_file(), moffset, data)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::io::Write as _;
    use std::os::unix::fs::FileExt as _;

    use dax_window::{InodeId, MapRequest, MemoryMapper, WindowGeometry, PAGE_SIZE, SLOT_SIZE};

    const A: u64 = 7;
    const B: u64 = 8;

    fn record(state: MappingState, writable: bool) -> MappingRecord {
        MappingRecord {
            moffset: SLOT_SIZE,
            len: 4 * PAGE_SIZE,
            inode: InodeId(A),
            foffset: 10 * PAGE_SIZE,
            writable,
            state,
        }
    }

    #[test]
    fn a_live_page_reads_and_writes_its_file_offset() {
        let live = record(MappingState::Live, true);
        let at = SLOT_SIZE + PAGE_SIZE + 5;
        for access in [Access::Read, Access::Write] {
            let run = resolve(Some(live), at, 100, access).unwrap();
            assert_eq!(
                run,
                Run {
                    source: Source::File {
                        nodeid: A,
                        foffset: 11 * PAGE_SIZE + 5
                    },
                    len: 100
                }
            );
        }
        // A run never leaves its record.
        let run = resolve(Some(live), at, 1 << 20, Access::Read).unwrap();
        assert_eq!(run.len, 3 * PAGE_SIZE - 5);
    }

    #[test]
    fn a_read_only_page_reads_but_refuses_a_device_write() {
        let ro = record(MappingState::Live, false);
        assert!(resolve(Some(ro), SLOT_SIZE, 8, Access::Read).is_ok());
        let e = resolve(Some(ro), SLOT_SIZE, 8, Access::Write).unwrap_err();
        assert!(matches!(e, WindowIoError::ReadOnly { moffset } if moffset == SLOT_SIZE));
        assert_eq!(e.errno(), Errno::EFAULT);
    }

    #[test]
    fn a_placeholder_reads_zeros_and_refuses_a_write() {
        let zapped = record(MappingState::Zapped { placeholder: true }, true);
        let run = resolve(Some(zapped), SLOT_SIZE, 8, Access::Read).unwrap();
        assert_eq!(run.source, Source::Zeros);
        let e = resolve(Some(zapped), SLOT_SIZE, 8, Access::Write).unwrap_err();
        assert!(matches!(e, WindowIoError::Placeholder { .. }));
    }

    #[test]
    fn an_unmapped_page_faults_both_ways() {
        let gone = record(MappingState::Zapped { placeholder: false }, true);
        for access in [Access::Read, Access::Write] {
            for rec in [None, Some(gone)] {
                let e = resolve(rec, SLOT_SIZE, 8, access).unwrap_err();
                assert!(matches!(e, WindowIoError::Unmapped { .. }), "{e}");
                assert_eq!(e.errno(), Errno::EFAULT);
            }
            // A record that does not cover the offset (defensive).
            let live = record(MappingState::Live, true);
            let e = resolve(Some(live), 0, 8, access).unwrap_err();
            assert!(matches!(e, WindowIoError::Unmapped { .. }));
        }
    }

    /// A window of 4 MiB with file `A` (64 KiB of a pattern) mapped at pages
    /// 2..4 of slot 0, writable, from file offset 8 KiB, and 16 KiB of file
    /// `B` (12 KiB long) mapped read-only at pages 4..8 from offset 0: three
    /// file pages and a placeholder.
    struct Fixture {
        window: Window,
        files: HashMap<u64, Arc<File>>,
    }

    fn pattern(len: usize, seed: u8) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
    }

    fn fixture() -> Fixture {
        let window = Window::new(WindowGeometry::new(2 * SLOT_SIZE).unwrap());
        let mapper = MemoryMapper::new().with_placeholders(true);
        let mut files = HashMap::new();
        for (nodeid, len, seed) in [(A, 16 * PAGE_SIZE, 0), (B, 3 * PAGE_SIZE, 0x55)] {
            let mut file = tempfile::tempfile().unwrap();
            file.write_all(&pattern(len as usize, seed)).unwrap();
            mapper.set_eof(InodeId(nodeid), len);
            files.insert(nodeid, Arc::new(file));
        }
        let map = |inode, moffset, len, foffset, writable| {
            window
                .setup_mapping(
                    &mapper,
                    &MapRequest {
                        moffset,
                        len,
                        inode: InodeId(inode),
                        file: &InodeId(inode),
                        foffset,
                        writable,
                    },
                )
                .unwrap();
        };
        map(A, 2 * PAGE_SIZE, 2 * PAGE_SIZE, 2 * PAGE_SIZE, true);
        map(B, 4 * PAGE_SIZE, 4 * PAGE_SIZE, 0, false);
        Fixture { window, files }
    }

    impl Fixture {
        fn file_of(&self) -> impl Fn(u64) -> Option<Arc<File>> + '_ {
            |nodeid| self.files.get(&nodeid).cloned()
        }

        fn contents(&self, nodeid: u64) -> Vec<u8> {
            let file = &self.files[&nodeid];
            let mut buf = vec![0; file.metadata().unwrap().len() as usize];
            file.read_exact_at(&mut buf, 0).unwrap();
            buf
        }
    }

    #[test]
    fn a_read_spanning_two_mappings_and_a_placeholder_gathers_their_bytes() {
        let f = fixture();
        let a = pattern(16 * PAGE_SIZE as usize, 0);
        let b = pattern(3 * PAGE_SIZE as usize, 0x55);
        // From 100 bytes before the end of A's mapping to the middle of B's
        // placeholder page.
        let from = 4 * PAGE_SIZE - 100;
        let mut buf = vec![0xee; 100 + 3 * PAGE_SIZE as usize + 50];
        read(&f.window, &f.file_of(), from, &mut buf).unwrap();
        let a_end = 4 * PAGE_SIZE as usize;
        assert_eq!(buf[..100], a[a_end - 100..a_end]);
        assert_eq!(buf[100..100 + b.len()], b[..]);
        assert!(buf[100 + b.len()..].iter().all(|&x| x == 0));
    }

    #[test]
    fn a_read_of_an_unmapped_page_or_an_unheld_file_fails() {
        let f = fixture();
        let mut buf = [0u8; 16];
        let e = read(&f.window, &f.file_of(), PAGE_SIZE + 8, &mut buf).unwrap_err();
        assert!(matches!(e, WindowIoError::Unmapped { .. }), "{e}");
        // Starting in a mapping and running into an unmapped page.
        let e = read(&f.window, &f.file_of(), 8 * PAGE_SIZE - 8, &mut buf).unwrap_err();
        assert!(matches!(e, WindowIoError::Unmapped { moffset } if moffset == 8 * PAGE_SIZE));
        let none = |_| None;
        let e = read(&f.window, &none, 2 * PAGE_SIZE, &mut buf).unwrap_err();
        assert!(matches!(e, WindowIoError::NoFile { nodeid: A, .. }), "{e}");
    }

    #[test]
    fn a_write_lands_in_the_writable_file_at_the_mapped_offset() {
        let f = fixture();
        let at = 3 * PAGE_SIZE + 10;
        check_write(&f.window, &f.file_of(), at, 20).unwrap();
        write(&f.window, &f.file_of(), at, b"written by the device").unwrap();
        let mut expected = pattern(16 * PAGE_SIZE as usize, 0);
        let foffset = (3 * PAGE_SIZE + 10) as usize;
        expected[foffset..foffset + 21].copy_from_slice(b"written by the device");
        assert_eq!(f.contents(A), expected);
    }

    #[test]
    fn a_write_into_a_read_only_placeholder_or_unmapped_page_is_refused_unchanged() {
        let f = fixture();
        let before = (f.contents(A), f.contents(B));
        // Into B (read-only), across A's end into B, and into nothing.
        for (at, len) in [
            (5 * PAGE_SIZE, 8),
            (4 * PAGE_SIZE - 4, 8),
            (9 * PAGE_SIZE, 8),
        ] {
            let e = check_write(&f.window, &f.file_of(), at, len).unwrap_err();
            assert_eq!(e.errno(), Errno::EFAULT, "{e}");
        }
        let e = write(&f.window, &f.file_of(), 5 * PAGE_SIZE, b"no").unwrap_err();
        assert!(matches!(e, WindowIoError::ReadOnly { .. }), "{e}");
        assert_eq!((f.contents(A), f.contents(B)), before);
    }

    #[test]
    fn a_write_past_the_end_of_the_file_is_dropped_and_the_file_does_not_grow() {
        let mut f = fixture();
        // Shrink A under its mapping to 3 pages + 100 bytes: the window's page
        // 3 (file page 3) now holds 100 file bytes and 3996 past the end.
        f.files[&A].set_len(3 * PAGE_SIZE + 100).unwrap();
        write(&f.window, &f.file_of(), 3 * PAGE_SIZE + 90, &[1; 20]).unwrap();
        let got = f.contents(A);
        assert_eq!(got.len(), 3 * PAGE_SIZE as usize + 100);
        assert_eq!(got[got.len() - 10..], [1; 10]);
        // Reading it back shows zeros past the end, as the mapping would.
        let mut buf = [0xee; 20];
        read(&f.window, &f.file_of(), 3 * PAGE_SIZE + 90, &mut buf).unwrap();
        assert_eq!(buf[..10], [1; 10]);
        assert_eq!(buf[10..], [0; 10]);
        // An appending descriptor cannot place bytes.
        let appending = tempfile::NamedTempFile::new().unwrap();
        appending.as_file().set_len(16 * PAGE_SIZE).unwrap();
        let file = std::fs::OpenOptions::new()
            .append(true)
            .read(true)
            .open(appending.path())
            .unwrap();
        f.files.insert(A, Arc::new(file));
        let e = write(&f.window, &f.file_of(), 2 * PAGE_SIZE, b"x").unwrap_err();
        assert!(matches!(e, WindowIoError::Append { nodeid: A }), "{e}");
        assert_eq!(e.errno(), Errno::EIO);
    }
}
