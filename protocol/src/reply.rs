//! Reply encoding.
//!
//! A reply is an [`OutHeader`] followed by an operation-specific body. The
//! server owns one reusable buffer per queue worker; [`ReplyBuf`] writes into
//! it without allocating once it has grown to the largest reply seen.

use core::mem::size_of;

use zerocopy::{Immutable, IntoBytes};

use crate::abi::{dirent_size, Dirent, EntryOut, OutHeader};

/// Size of [`OutHeader`].
pub const OUT_HEADER_LEN: usize = size_of::<OutHeader>();

/// The 16 bytes of an error reply (`errno` positive).
pub fn error_reply(unique: u64, errno: i32) -> [u8; OUT_HEADER_LEN] {
    let header = OutHeader {
        len: OUT_HEADER_LEN as u32,
        error: -errno,
        unique,
    };
    let mut out = [0u8; OUT_HEADER_LEN];
    out.copy_from_slice(header.as_bytes());
    out
}

/// A reply being built in a reusable buffer.
#[derive(Debug)]
pub struct ReplyBuf<'a> {
    buf: &'a mut Vec<u8>,
    unique: u64,
}

impl<'a> ReplyBuf<'a> {
    /// Starts a success reply to `unique` in `buf` (its old contents are dropped).
    pub fn new(buf: &'a mut Vec<u8>, unique: u64) -> Self {
        buf.clear();
        buf.resize(OUT_HEADER_LEN, 0);
        Self { buf, unique }
    }

    /// Appends a fixed-layout struct.
    pub fn push<T: IntoBytes + Immutable>(&mut self, value: &T) -> &mut Self {
        self.buf.extend_from_slice(value.as_bytes());
        self
    }

    /// Appends raw bytes.
    pub fn push_bytes(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// Body bytes written so far.
    pub fn body_len(&self) -> usize {
        self.buf.len() - OUT_HEADER_LEN
    }

    /// Gives `n` zeroed bytes at the end of the body to fill in place (a READ
    /// target), returning them.
    pub fn extend_zeroed(&mut self, n: usize) -> &mut [u8] {
        let start = self.buf.len();
        self.buf.resize(start + n, 0);
        &mut self.buf[start..]
    }

    /// Drops body bytes beyond `body_len` (after a short read).
    pub fn truncate_body(&mut self, body_len: usize) {
        self.buf.truncate(OUT_HEADER_LEN + body_len);
    }

    /// Writes the header and returns the finished reply.
    pub fn finish(self) -> &'a [u8] {
        let header = OutHeader {
            len: self.buf.len() as u32,
            error: 0,
            unique: self.unique,
        };
        self.buf[..OUT_HEADER_LEN].copy_from_slice(header.as_bytes());
        self.buf
    }
}

/// Packs directory entries for READDIR / READDIRPLUS up to a byte budget.
#[derive(Debug)]
pub struct DirentWriter<'r, 'a> {
    reply: &'r mut ReplyBuf<'a>,
    budget: usize,
}

impl<'r, 'a> DirentWriter<'r, 'a> {
    /// Entries go after whatever `reply` holds; at most `budget` bytes.
    pub fn new(reply: &'r mut ReplyBuf<'a>, budget: usize) -> Self {
        Self { reply, budget }
    }

    fn fits(&self, size: usize) -> bool {
        self.reply.body_len() + size <= self.budget
    }

    fn push_dirent(&mut self, dirent: &Dirent, name: &[u8]) {
        let padded = dirent_size(name.len());
        self.reply.push(dirent).push_bytes(name);
        let pad = padded - size_of::<Dirent>() - name.len();
        self.reply.push_bytes(&[0u8; 8][..pad]);
    }

    /// Adds a READDIR entry; false (and nothing written) if it does not fit.
    pub fn add(&mut self, ino: u64, next_offset: u64, typ: u32, name: &[u8]) -> bool {
        if !self.fits(dirent_size(name.len())) {
            return false;
        }
        let dirent = Dirent {
            ino,
            off: next_offset,
            namelen: name.len() as u32,
            typ,
        };
        self.push_dirent(&dirent, name);
        true
    }

    /// Whether a READDIRPLUS entry with this name would fit.
    pub fn fits_plus(&self, name: &[u8]) -> bool {
        self.fits(size_of::<EntryOut>() + dirent_size(name.len()))
    }

    /// Adds a READDIRPLUS entry; false (and nothing written) if it does not fit.
    pub fn add_plus(&mut self, entry: &EntryOut, next_offset: u64, typ: u32, name: &[u8]) -> bool {
        if !self.fits_plus(name) {
            return false;
        }
        self.reply.push(entry);
        let dirent = Dirent {
            ino: entry.attr.ino,
            off: next_offset,
            namelen: name.len() as u32,
            typ,
        };
        self.push_dirent(&dirent, name);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zerocopy::FromBytes;

    #[test]
    fn error_reply_negates_errno() {
        let bytes = error_reply(7, crate::errno::ENOENT);
        let (h, _) = OutHeader::read_from_prefix(&bytes).unwrap();
        assert_eq!((h.len, h.error, h.unique), (16, -2, 7));
    }

    #[test]
    fn reply_header_counts_body() {
        let mut buf = vec![0xAA; 100];
        let mut r = ReplyBuf::new(&mut buf, 9);
        r.push(&crate::abi::WriteOut {
            size: 5,
            padding: 0,
        });
        let out = r.finish();
        let (h, body) = OutHeader::read_from_prefix(out).unwrap();
        assert_eq!((h.len, h.error, h.unique), (24, 0, 9));
        assert_eq!(body, &[5, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn dirents_stop_at_budget_and_pad() {
        let mut buf = Vec::new();
        let mut r = ReplyBuf::new(&mut buf, 1);
        let mut w = DirentWriter::new(&mut r, 80);
        assert!(w.add(10, 1, 8, b"a"));
        assert!(w.add(11, 2, 8, b"bcdefghij"));
        assert!(
            !w.add(12, 3, 8, b"c"),
            "third entry exceeds the 80-byte budget"
        );
        let out = r.finish();
        assert_eq!(out.len(), OUT_HEADER_LEN + 32 + 40);
        let (d, _) = Dirent::read_from_prefix(&out[OUT_HEADER_LEN + 32..]).unwrap();
        assert_eq!((d.ino, d.off, d.namelen), (11, 2, 9));
    }
}
