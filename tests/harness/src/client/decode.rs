//! Typed replies: each success body checked to be exactly as long as the operation's
//! reply struct, so a daemon that appends or drops bytes fails here, not in a test.

use std::mem::size_of;

use daxfsd_protocol::abi::{dirent_size, Dirent, EntryOut, GetxattrOut, OpenOut};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use crate::error::{HarnessError, Result};
use crate::fuse::FuseReply;

/// `Ok(body)` or `Err(positive errno)`: the daemon's answer, both ways a valid one.
pub type FuseResult<T> = std::result::Result<T, i32>;

/// One directory entry of a READDIR / READDIRPLUS reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Inode number.
    pub ino: u64,
    /// Cookie of the entry after this one.
    pub off: u64,
    /// `DT_*`.
    pub typ: u32,
    /// The name, without NUL.
    pub name: Vec<u8>,
}

/// The entries of a READDIR(PLUS) body, each with its lookup for READDIRPLUS.
pub type Listing = Vec<(Option<EntryOut>, DirEntry)>;

/// A GETXATTR / LISTXATTR answer: the size (for a size-0 query) or the bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum XattrReply {
    /// The size of the value or list.
    Size(u32),
    /// The value or the NUL-separated names.
    Data(Vec<u8>),
}

fn malformed(detail: String) -> HarnessError {
    HarnessError::MalformedReply(detail)
}

/// The body as exactly one `T`, or the errno.
pub fn exact<T: FromBytes + IntoBytes + Immutable>(reply: FuseReply) -> Result<FuseResult<T>> {
    if reply.errno() != 0 {
        return Ok(Err(reply.errno()));
    }
    if reply.body.len() != size_of::<T>() {
        return Err(malformed(format!(
            "{}-byte reply body is not one {} ({} bytes)",
            reply.body.len(),
            std::any::type_name::<T>(),
            size_of::<T>()
        )));
    }
    reply.body_as::<T>().map(Ok)
}

/// Success with an empty body, or the errno.
pub fn empty(reply: FuseReply) -> Result<FuseResult<()>> {
    if reply.errno() != 0 {
        return Ok(Err(reply.errno()));
    }
    if !reply.body.is_empty() {
        return Err(malformed(format!(
            "unexpected {}-byte body",
            reply.body.len()
        )));
    }
    Ok(Ok(()))
}

/// The body bytes (at most `limit` of them), or the errno.
pub fn bytes(reply: FuseReply, limit: u32) -> Result<FuseResult<Vec<u8>>> {
    if reply.errno() != 0 {
        return Ok(Err(reply.errno()));
    }
    if reply.body.len() > limit as usize {
        return Err(malformed(format!(
            "{}-byte reply body over the {limit} bytes asked for",
            reply.body.len()
        )));
    }
    Ok(Ok(reply.body))
}

/// CREATE's entry and open handle, or the errno.
pub fn entry_open(reply: FuseReply) -> Result<FuseResult<(EntryOut, OpenOut)>> {
    let body = match exact::<[u8; size_of::<EntryOut>() + size_of::<OpenOut>()]>(reply)? {
        Ok(body) => body,
        Err(errno) => return Ok(Err(errno)),
    };
    let (entry, rest) = EntryOut::read_from_prefix(&body).map_err(|_| malformed("entry".into()))?;
    let (open, _) = OpenOut::read_from_prefix(rest).map_err(|_| malformed("open".into()))?;
    Ok(Ok((entry, open)))
}

/// The reply room Linux gives GETXATTR / LISTXATTR: the value's size, or a
/// `fuse_getxattr_out` for a size query.
pub fn xattr_room(size: u32) -> u32 {
    let body = if size == 0 {
        size_of::<GetxattrOut>() as u32
    } else {
        size
    };
    body.saturating_add(16)
}

/// A GETXATTR / LISTXATTR reply to a query of `size` bytes.
pub fn xattr(reply: FuseReply, size: u32) -> Result<FuseResult<XattrReply>> {
    if size == 0 {
        Ok(exact::<GetxattrOut>(reply)?.map(|o| XattrReply::Size(o.size)))
    } else {
        Ok(bytes(reply, size)?.map(XattrReply::Data))
    }
}

/// Splits a READDIR(PLUS) body into entries; a malformed layout is an error.
pub fn parse_dirents(mut body: &[u8], plus: bool) -> Result<Listing> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let entry = if plus {
            let (e, rest) = EntryOut::read_from_prefix(body)
                .map_err(|_| malformed("READDIRPLUS entry shorter than an EntryOut".into()))?;
            body = rest;
            Some(e)
        } else {
            None
        };
        let (d, rest) = Dirent::read_from_prefix(body)
            .map_err(|_| malformed("dirent shorter than its header".into()))?;
        let namelen = d.namelen as usize;
        let padded = dirent_size(namelen) - size_of::<Dirent>();
        if rest.len() < padded {
            return Err(malformed("dirent name runs past the reply".into()));
        }
        if rest[namelen..padded].iter().any(|&b| b != 0) {
            return Err(malformed("dirent padding is not zero".into()));
        }
        let name = rest[..namelen].to_vec();
        out.push((
            entry,
            DirEntry {
                ino: d.ino,
                off: d.off,
                typ: d.typ,
                name,
            },
        ));
        body = &rest[padded..];
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use daxfsd_protocol::abi::{OutHeader, WriteOut};
    use zerocopy::IntoBytes;

    use super::*;

    fn reply(error: i32, body: &[u8]) -> FuseReply {
        let header = OutHeader {
            len: (16 + body.len()) as u32,
            error,
            unique: 1,
        };
        FuseReply {
            header,
            body: body.to_vec(),
        }
    }

    fn dirent(ino: u64, name: &[u8], pad: u8) -> Vec<u8> {
        let head = Dirent {
            ino,
            off: ino + 1,
            namelen: name.len() as u32,
            typ: 8,
        };
        let mut out = head.as_bytes().to_vec();
        out.extend_from_slice(name);
        out.resize(dirent_size(name.len()), pad);
        out
    }

    #[test]
    fn exact_takes_one_struct_and_refuses_other_lengths() {
        let out = WriteOut {
            size: 7,
            padding: 0,
        };
        assert_eq!(
            exact::<WriteOut>(reply(0, out.as_bytes())).unwrap(),
            Ok(out)
        );
        assert_eq!(exact::<WriteOut>(reply(-2, &[])).unwrap(), Err(2));
        let mut long = out.as_bytes().to_vec();
        long.push(0);
        assert!(exact::<WriteOut>(reply(0, &long)).is_err());
        assert!(exact::<WriteOut>(reply(0, &long[..4])).is_err());
    }

    #[test]
    fn empty_and_bytes_check_the_body_length() {
        assert_eq!(empty(reply(0, &[])).unwrap(), Ok(()));
        assert!(empty(reply(0, &[1])).is_err());
        assert_eq!(bytes(reply(0, b"abc"), 3).unwrap(), Ok(b"abc".to_vec()));
        assert!(bytes(reply(0, b"abcd"), 3).is_err());
        assert_eq!(bytes(reply(-13, &[]), 3).unwrap(), Err(13));
    }

    #[test]
    fn dirents_parse_and_bad_padding_is_refused() {
        let mut body = dirent(5, b"a", 0);
        body.extend(dirent(6, b"longer-name", 0));
        let entries = parse_dirents(&body, false).unwrap();
        let names: Vec<_> = entries.iter().map(|(_, d)| d.name.clone()).collect();
        assert_eq!(names, [b"a".to_vec(), b"longer-name".to_vec()]);
        assert_eq!((entries[1].1.ino, entries[1].1.off), (6, 7));
        assert!(parse_dirents(&dirent(5, b"a", 0xff), false).is_err());
        assert!(parse_dirents(&body[..body.len() - 1], false).is_err());
        // READDIRPLUS needs an EntryOut before each dirent.
        assert!(parse_dirents(&body, true).is_err());
    }
}
