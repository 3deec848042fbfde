//! What the guest asked the window to hold, page by page, and the check of the harness's
//! real window against it.
//!
//! Replay files carry a pattern unique per (file, 4 KiB page, word): each 8-byte
//! little-endian word is `file index << 40 | page index << 12 | word index`, cut at the
//! file's size. A window page the guest mapped to (file, foffset) must show exactly that
//! file page — zeros past the file's end, where the daemon maps a placeholder instead of
//! the file — and a page the guest removed must be unmapped in the harness's table.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use vm_memory::Bytes;

use crate::window::{MappingInfo, Window, WindowError};

/// The guest's page size and the daemon's mapping granule.
pub const PAGE: u64 = 4096;
const WORDS_PER_PAGE: u64 = PAGE / 8;
/// Word indices of a whole page.
const ALL_WORDS: [u64; WORDS_PER_PAGE as usize] = {
    let mut all = [0; WORDS_PER_PAGE as usize];
    let mut i = 0;
    while i < all.len() {
        all[i] = i as u64;
        i += 1;
    }
    all
};

/// Which words of a page a check reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Words {
    None,
    Three,
    All,
}
const SLOT: u64 = 2 << 20;

/// A file the replay created in the shared directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayFile {
    /// Index in the pattern (and in the replay's file list).
    pub index: u64,
    /// Name in the shared directory.
    pub name: String,
    /// Size in bytes.
    pub size: u64,
    /// Device and inode, to recognise its mappings in the harness's table.
    pub dev: u64,
    /// See `dev`.
    pub ino: u64,
    /// The nodeid LOOKUP gave (0 until looked up).
    pub nodeid: u64,
}

impl ReplayFile {
    /// Creates `dir/name` with `size` bytes of the pattern of file `index`.
    pub fn create(dir: &Path, name: &str, index: u64, size: u64) -> std::io::Result<ReplayFile> {
        let path = dir.join(name);
        let mut out = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&path)?);
        let mut page_bytes = Vec::with_capacity(PAGE as usize);
        let mut at = 0;
        while at < size {
            page_bytes.clear();
            let page = at / PAGE;
            for word in 0..WORDS_PER_PAGE {
                page_bytes.extend_from_slice(&pattern_word(index, page, word).to_le_bytes());
            }
            let take = (size - at).min(PAGE) as usize;
            out.write_all(&page_bytes[..take])?;
            at += PAGE;
        }
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_data().ok();
        let meta = file.metadata()?;
        Ok(ReplayFile {
            index,
            name: name.to_string(),
            size,
            dev: meta.dev(),
            ino: meta.ino(),
            nodeid: 0,
        })
    }

    /// The word at file offset `at` (8-byte aligned) as a mapping must show it: the
    /// pattern below the size, zeros at and after it.
    pub fn expected_word(&self, at: u64) -> u64 {
        if at >= self.size {
            return 0;
        }
        let word = pattern_word(self.index, at / PAGE, (at % PAGE) / 8);
        match self.size - at {
            valid @ 1..=7 => word & ((1u64 << (8 * valid)) - 1),
            _ => word,
        }
    }

    /// The end of the last page holding file bytes (pages from there on are past the end).
    pub fn page_end(&self) -> u64 {
        self.size.next_multiple_of(PAGE)
    }

    fn is(&self, m: &MappingInfo) -> bool {
        m.dev == self.dev && m.ino == self.ino
    }
}

/// Word `word` of page `page` of file `file`.
pub fn pattern_word(file: u64, page: u64, word: u64) -> u64 {
    (file << 40) | (page << 12) | word
}

/// Reads a pattern word back as "file F page P word W" (or says it is none).
pub fn describe_word(value: u64) -> String {
    if value == 0 {
        return "0".to_string();
    }
    let (file, page, word) = (value >> 40, (value >> 12) & 0xfff_ffff, value & 0xfff);
    if word < WORDS_PER_PAGE {
        format!("{value:#x} (file {file} page {page} word {word})")
    } else {
        format!("{value:#x} (not a pattern word)")
    }
}

/// What one window page should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageState {
    /// Nothing: PROT_NONE, absent from the harness's table.
    Unmapped,
    /// File `file` (index into the replay's files) at `foffset`.
    Mapped {
        /// Index of the file.
        file: usize,
        /// File offset of the page.
        foffset: u64,
        /// Whether the guest asked for write access (the VMM mapping must allow it).
        writable: bool,
    },
    /// Unknown after a request that failed half way; not checked until changed.
    Unknown,
}

/// How closely [`WindowModel::check`] looks at the pages' bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// The harness's table only: extents, files, offsets, access.
    Structure,
    /// The table, and some words of some pages of each run of mapped pages: the first,
    /// the last, those holding a file's end and the page after it (every word of these),
    /// and every eighth page (three words: first, last, one varying with the page). The
    /// pattern tells each (file, page, word) apart, so a page mapped at the wrong offset,
    /// from the wrong file or a placeholder showing stale data still shows; a 2 MiB range
    /// costs about 70 pages instead of 512.
    Sampled,
    /// The table and every word of every page.
    Full,
}

/// A page that does not hold what the guest asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "window page {page:#x} (slot {}, page {} of it): expected {expected}; found {found}",
    page / SLOT,
    (page % SLOT) / PAGE
)]
pub struct Mismatch {
    /// Window offset of the page.
    pub page: u64,
    /// What the model says.
    pub expected: String,
    /// What the window holds.
    pub found: String,
}

/// The guest's view of the window.
#[derive(Debug, Clone)]
pub struct WindowModel {
    pages: Vec<PageState>,
}

impl WindowModel {
    /// An empty window of `size` bytes.
    pub fn new(size: u64) -> WindowModel {
        WindowModel {
            pages: vec![PageState::Unmapped; (size / PAGE) as usize],
        }
    }

    /// Window size.
    pub fn size(&self) -> u64 {
        self.pages.len() as u64 * PAGE
    }

    fn index(&self, offset: u64) -> usize {
        (offset / PAGE) as usize
    }

    /// The state of the page at window offset `offset`.
    pub fn page(&self, offset: u64) -> PageState {
        self.pages[self.index(offset)]
    }

    /// Sets the state of the page at window offset `offset` (tests of the checker).
    pub fn set_page(&mut self, offset: u64, state: PageState) {
        let i = self.index(offset);
        self.pages[i] = state;
    }

    fn span(&self, moffset: u64, len: u64) -> std::ops::Range<usize> {
        let start = self.index(moffset).min(self.pages.len());
        let end = self
            .index(moffset.saturating_add(len))
            .min(self.pages.len());
        start..end
    }

    /// A successful SETUPMAPPING: `[moffset, moffset + len)` shows `file` from `foffset`.
    /// The same file range already there keeps its write access (the daemon answers
    /// "already mapped" or upgrades it).
    pub fn map(&mut self, moffset: u64, len: u64, file: usize, foffset: u64, writable: bool) {
        let span = self.span(moffset, len);
        let first = span.start;
        let same = self.pages[span.clone()].iter().enumerate().all(|(i, p)| {
            matches!(*p, PageState::Mapped { file: f, foffset: o, .. }
                if f == file && o == foffset + i as u64 * PAGE)
        });
        for i in span {
            let kept = same && matches!(self.pages[i], PageState::Mapped { writable: true, .. });
            self.pages[i] = PageState::Mapped {
                file,
                foffset: foffset + (i - first) as u64 * PAGE,
                writable: writable || kept,
            };
        }
    }

    /// A successful REMOVEMAPPING range.
    pub fn unmap(&mut self, moffset: u64, len: u64) {
        let span = self.span(moffset, len);
        self.pages[span].fill(PageState::Unmapped);
    }

    /// A failed request that may have changed `[moffset, moffset + len)` in any way.
    pub fn forget(&mut self, moffset: u64, len: u64) {
        let span = self.span(moffset, len);
        self.pages[span].fill(PageState::Unknown);
    }

    /// Checks `[moffset, moffset + len)` of `window` against the model (`files` are the
    /// files `Mapped` pages name). Returns the first page that differs.
    pub fn check(
        &self, window: &Window, files: &[ReplayFile], moffset: u64, len: u64, depth: Depth,
    ) -> Result<(), Mismatch> {
        let table = window.mappings();
        let span = self.span(moffset, len);
        for i in span.clone() {
            self.check_structure(&table, files, i as u64 * PAGE)?;
        }
        if depth == Depth::Structure {
            return Ok(());
        }
        // Runs of mapped pages, read in place under the table lock.
        let mut i = span.start;
        while i < span.end {
            if !matches!(self.pages[i], PageState::Mapped { .. }) {
                i += 1;
                continue;
            }
            let start = i;
            while i < span.end && matches!(self.pages[i], PageState::Mapped { .. }) {
                i += 1;
            }
            self.check_bytes(window, files, start, i, depth)?;
        }
        Ok(())
    }

    /// The whole window.
    pub fn check_all(
        &self, window: &Window, files: &[ReplayFile], depth: Depth,
    ) -> Result<(), Mismatch> {
        self.check(window, files, 0, self.size(), depth)
    }

    fn check_structure(
        &self, table: &[MappingInfo], files: &[ReplayFile], page: u64,
    ) -> Result<(), Mismatch> {
        let found = covering(table, page);
        let mismatch = |expected: String| Mismatch {
            page,
            expected,
            found: found.map_or("unmapped (PROT_NONE)".to_string(), |m| {
                describe_mapping(m, page, files)
            }),
        };
        match self.page(page) {
            PageState::Unknown => Ok(()),
            PageState::Unmapped => match found {
                None => Ok(()),
                Some(_) => Err(mismatch("unmapped (removed by the guest)".to_string())),
            },
            PageState::Mapped {
                file,
                foffset,
                writable,
            } => {
                let f = &files[file];
                let want = || describe_expected(f, foffset, writable);
                let Some(m) = found else {
                    return Err(mismatch(want()));
                };
                let at = m.fd_offset + (page - m.offset);
                let ok_source = if foffset < f.page_end() {
                    f.is(m) && at == foffset
                } else {
                    // Past the end: anything but the file (whose page would SIGBUS).
                    !f.is(m)
                };
                if !ok_source || !m.readable || (writable && !m.writable) {
                    return Err(mismatch(want()));
                }
                Ok(())
            }
        }
    }

    /// Which words of the page at window offset `page` (in the run of mapped pages
    /// `[first, end)`) [`Depth::Sampled`] reads: every word, three, or none.
    fn sampled(&self, files: &[ReplayFile], page: u64, first: u64, end: u64) -> Words {
        let near_end = match self.page(page) {
            PageState::Mapped { file, foffset, .. } => {
                // The page holding the end, and the first one past it.
                let size = files[file].size;
                foffset < size + PAGE && size < foffset + PAGE
            }
            _ => false,
        };
        if near_end || page == first || page + PAGE == end {
            Words::All
        } else if (page / PAGE) % 8 == (first / PAGE) % 8 {
            Words::Three
        } else {
            Words::None
        }
    }

    fn check_bytes(
        &self, window: &Window, files: &[ReplayFile], first: usize, end: usize, depth: Depth,
    ) -> Result<(), Mismatch> {
        let base = first as u64 * PAGE;
        let stop = end as u64 * PAGE;
        let mut bad: Option<Mismatch> = None;
        let inspected = window.inspect(base, stop - base, |slice, pos| {
            for p in 0..slice.len() / PAGE as usize {
                if bad.is_some() {
                    return;
                }
                let page = base + pos as u64 + p as u64 * PAGE;
                let words = match depth {
                    Depth::Full => Words::All,
                    _ => self.sampled(files, page, base, stop),
                };
                let PageState::Mapped { file, foffset, .. } = self.page(page) else {
                    continue;
                };
                let f = &files[file];
                let three = [
                    0,
                    1 + (page / PAGE * 131) % (WORDS_PER_PAGE - 2),
                    WORDS_PER_PAGE - 1,
                ];
                let list: &[u64] = match words {
                    Words::None => continue,
                    Words::Three => &three,
                    Words::All => &ALL_WORDS,
                };
                for &word in list {
                    let at = p * PAGE as usize + word as usize * 8;
                    let read = match slice.read_obj::<u64>(at) {
                        Ok(v) => u64::from_le(v),
                        Err(e) => {
                            bad = Some(Mismatch {
                                page,
                                expected: describe_expected(f, foffset, false),
                                found: format!("word {word} unreadable: {e}"),
                            });
                            return;
                        }
                    };
                    let want = f.expected_word(foffset + word * 8);
                    if read != want {
                        bad = Some(Mismatch {
                            page,
                            expected: format!(
                                "{} (word {word}: {})",
                                describe_expected(f, foffset, false),
                                describe_word(want)
                            ),
                            found: format!("word {word}: {}", describe_word(read)),
                        });
                        break;
                    }
                }
            }
        });
        if let Err(e) = inspected {
            let page = match e {
                WindowError::NotMapped { offset } | WindowError::BeyondFileEnd { offset, .. } => {
                    offset / PAGE * PAGE
                }
                _ => base,
            };
            let expected = match self.page(page) {
                PageState::Mapped {
                    file,
                    foffset,
                    writable,
                } => describe_expected(&files[file], foffset, writable),
                other => format!("{other:?}"),
            };
            return Err(Mismatch {
                page,
                expected,
                found: format!("a window the harness refuses to read: {e}"),
            });
        }
        bad.map_or(Ok(()), Err)
    }
}

/// The mapping of `table` (ordered by offset) covering `offset`.
fn covering(table: &[MappingInfo], offset: u64) -> Option<&MappingInfo> {
    let after = table.partition_point(|m| m.offset <= offset);
    let m = table.get(after.checked_sub(1)?)?;
    (offset < m.offset + m.len).then_some(m)
}

fn describe_expected(f: &ReplayFile, foffset: u64, writable: bool) -> String {
    let access = if writable { ", writable" } else { "" };
    if foffset < f.page_end() {
        format!(
            "{} (file {}, {} bytes) at foffset {foffset:#x}{access}",
            f.name, f.index, f.size
        )
    } else {
        format!(
            "zeros: a placeholder for {} (file {}, {} bytes) at foffset {foffset:#x}, past its end{access}",
            f.name, f.index, f.size
        )
    }
}

fn describe_mapping(m: &MappingInfo, page: u64, files: &[ReplayFile]) -> String {
    let at = m.fd_offset + (page - m.offset);
    let access = match (m.readable, m.writable) {
        (true, true) => "rw",
        (true, false) => "r",
        (false, true) => "w",
        (false, false) => "none",
    };
    let what = match files.iter().find(|f| f.is(m)) {
        Some(f) => format!("{} (file {}, {} bytes)", f.name, f.index, f.size),
        None => format!("{} (not a replay file)", m.source.display()),
    };
    format!(
        "{what} at foffset {at:#x} [{access}], in the mapping {:#x}+{:#x}",
        m.offset, m.len
    )
}

#[cfg(test)]
mod tests {
    use std::os::fd::OwnedFd;

    use super::*;

    const MIB: u64 = 1 << 20;

    fn open(dir: &Path, f: &ReplayFile, write: bool) -> OwnedFd {
        std::fs::OpenOptions::new()
            .read(true)
            .write(write)
            .open(dir.join(&f.name))
            .unwrap()
            .into()
    }

    /// A window as the daemon would leave it: slot 0 maps `big` [2 MiB, 4 MiB) writable;
    /// slot 1 maps the 5000-byte `small` (two pages of it) and a zero placeholder after.
    fn fixture() -> (tempfile::TempDir, Window, Vec<ReplayFile>, WindowModel) {
        let dir = tempfile::tempdir().unwrap();
        let big = ReplayFile::create(dir.path(), "big", 0, 4 * MIB + 100).unwrap();
        let small = ReplayFile::create(dir.path(), "small", 1, 5000).unwrap();
        let placeholder = ReplayFile::create(dir.path(), "zeros", 2, 0).unwrap();
        std::fs::File::options()
            .write(true)
            .open(dir.path().join("zeros"))
            .unwrap()
            .set_len(SLOT)
            .unwrap();
        let window = Window::reserve(4 * SLOT).unwrap();
        window
            .map_exclusive(0, SLOT, open(dir.path(), &big, true), 2 * MIB, true)
            .unwrap();
        window
            .map_exclusive(SLOT, 2 * PAGE, open(dir.path(), &small, false), 0, false)
            .unwrap();
        let zeros = open(dir.path(), &placeholder, false);
        window
            .map_exclusive(SLOT + 2 * PAGE, SLOT - 2 * PAGE, zeros, 0, false)
            .unwrap();
        let files = vec![big, small];
        let mut model = WindowModel::new(4 * SLOT);
        model.map(0, SLOT, 0, 2 * MIB, true);
        model.map(SLOT, SLOT, 1, 0, false);
        (dir, window, files, model)
    }

    #[test]
    fn pattern_words_are_cut_at_the_size() {
        let f = ReplayFile {
            index: 3,
            name: "f".into(),
            size: PAGE + 13,
            dev: 0,
            ino: 0,
            nodeid: 0,
        };
        assert_eq!(f.expected_word(8), pattern_word(3, 0, 1));
        assert_eq!(
            f.expected_word(PAGE + 8),
            pattern_word(3, 1, 1) & 0xff_ffff_ffff
        );
        assert_eq!(f.expected_word(PAGE + 16), 0);
        assert_eq!(f.page_end(), 2 * PAGE);
        assert_eq!(
            describe_word(pattern_word(3, 1, 1)),
            "0x30000001001 (file 3 page 1 word 1)"
        );
    }

    #[test]
    fn a_window_matching_the_model_passes_every_depth() {
        let (_dir, window, files, model) = fixture();
        for depth in [Depth::Structure, Depth::Sampled, Depth::Full] {
            model.check_all(&window, &files, depth).unwrap();
        }
    }

    #[test]
    fn a_wrong_file_offset_in_the_model_is_reported_with_the_page() {
        let (_dir, window, files, mut model) = fixture();
        model.set_page(
            7 * PAGE,
            PageState::Mapped {
                file: 0,
                foffset: 2 * MIB + 8 * PAGE,
                writable: true,
            },
        );
        let err = model
            .check_all(&window, &files, Depth::Sampled)
            .unwrap_err();
        assert_eq!(err.page, 7 * PAGE);
        assert!(
            err.expected.contains("big (file 0") && err.expected.contains("0x208000"),
            "{err}"
        );
        assert!(
            err.found.contains("big (file 0") && err.found.contains("0x207000"),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with("window page 0x7000 (slot 0, page 7 of it)"),
            "{err}"
        );
    }

    #[test]
    fn pages_mapped_or_unmapped_against_the_model_are_reported() {
        let (_dir, window, files, mut model) = fixture();
        model.unmap(SLOT, SLOT);
        let err = model
            .check_all(&window, &files, Depth::Structure)
            .unwrap_err();
        assert_eq!(err.page, SLOT);
        assert!(err.expected.starts_with("unmapped"), "{err}");
        assert!(err.found.contains("small (file 1"), "{err}");

        let (_dir, window, files, mut model) = fixture();
        model.map(3 * SLOT, PAGE, 1, 0, false);
        let err = model
            .check_all(&window, &files, Depth::Structure)
            .unwrap_err();
        assert_eq!(err.page, 3 * SLOT);
        assert_eq!(err.found, "unmapped (PROT_NONE)");
    }

    #[test]
    fn write_access_and_pages_past_the_end_are_checked() {
        let (_dir, window, files, mut model) = fixture();
        model.map(SLOT, PAGE, 1, 0, true);
        let err = model
            .check_all(&window, &files, Depth::Structure)
            .unwrap_err();
        assert_eq!(err.page, SLOT);
        assert!(
            err.expected.contains("writable") && err.found.contains("[r]"),
            "{err}"
        );

        // The model says slot 0's last page lies past the end of a file whose page is
        // mapped there: the VMM would take SIGBUS on it.
        let (_dir, window, mut files, model) = fixture();
        files[0].size = 2 * MIB + 10 * PAGE;
        let err = model
            .check_all(&window, &files, Depth::Structure)
            .unwrap_err();
        assert_eq!(err.page, 10 * PAGE);
        assert!(err.expected.starts_with("zeros: a placeholder"), "{err}");
    }

    #[test]
    fn wrong_bytes_under_a_right_table_are_found_by_reading() {
        let (dir, window, files, model) = fixture();
        // Same file, same offsets: only the bytes of two pages change.
        let file = std::fs::File::options()
            .write(true)
            .open(dir.path().join("big"))
            .unwrap();
        let garbage = [0xee; PAGE as usize];
        for page in [5, 8] {
            std::os::unix::fs::FileExt::write_all_at(&file, &garbage, 2 * MIB + page * PAGE)
                .unwrap();
        }
        model.check_all(&window, &files, Depth::Structure).unwrap();
        // Page 8 is one of the sampled ones (every eighth from the run's start); page 5 is
        // not, but the full check reads it.
        let err = model
            .check_all(&window, &files, Depth::Sampled)
            .unwrap_err();
        assert_eq!(err.page, 8 * PAGE, "{err}");
        assert!(err.found.starts_with("word 0: 0xeeeeeeeeeeeeeeee"), "{err}");
        assert!(err.expected.contains("file 0 page 520 word 0"), "{err}");
        let err = model.check_all(&window, &files, Depth::Full).unwrap_err();
        assert_eq!(err.page, 5 * PAGE, "{err}");
        assert!(err.expected.contains("file 0 page 517 word 0"), "{err}");
    }
}
