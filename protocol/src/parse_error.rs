//! [`ParseError`]: why a request is refused, and the errno it is answered
//! with.

use crate::abi::Opcode;
use crate::errno;
use crate::extension::ExtensionError;

/// Why a request could not be parsed. [`ParseError::errno`] is the reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer bytes than a `fuse_in_header`.
    #[error("request has {got} bytes, fewer than the 40-byte FUSE header")]
    ShortHeader {
        /// Bytes present.
        got: usize,
    },
    /// The header's length disagrees with the bytes present.
    #[error("header claims {claimed} bytes but the chain holds {available}")]
    LengthMismatch {
        /// `len` from the header.
        claimed: u32,
        /// Readable bytes in the chain.
        available: usize,
    },
    /// The body is shorter than the operation's fixed part.
    #[error("{opcode:?} body has {got} bytes, needs {need}")]
    ShortBody {
        /// The operation.
        opcode: Opcode,
        /// Bytes present.
        got: usize,
        /// Bytes needed.
        need: usize,
    },
    /// The extension length in the header exceeds the body.
    #[error("request extensions of {extlen} bytes exceed the {body}-byte body")]
    BadExtensionLength {
        /// Extension bytes claimed.
        extlen: usize,
        /// Body bytes present.
        body: usize,
    },
    /// No operation has this number.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u32),
    /// A name or path has no terminating NUL inside the body.
    #[error("name is not NUL-terminated")]
    UnterminatedName,
    /// A name is empty.
    #[error("name is empty")]
    EmptyName,
    /// A directory entry name contains `/`.
    #[error("name contains '/'")]
    NameWithSlash,
    /// A directory entry name is `.` or `..`.
    #[error("name is '.' or '..'")]
    DotName,
    /// A name or path exceeds its limit.
    #[error("name of {len} bytes exceeds the limit of {max}")]
    NameTooLong {
        /// Length without the NUL.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Bytes left after the last field of a request that has no trailing data.
    #[error("{opcode:?} carries {extra} unexpected trailing bytes")]
    TrailingBytes {
        /// The operation.
        opcode: Opcode,
        /// Bytes left over.
        extra: usize,
    },
    /// A record count disagrees with the payload or exceeds its bound.
    #[error("{opcode:?} count {count} does not fit: {available} bytes of records, at most {max} entries")]
    BadCount {
        /// The operation.
        opcode: Opcode,
        /// Count claimed.
        count: u32,
        /// Record bytes present.
        available: usize,
        /// The bound.
        max: u32,
    },
    /// A data size disagrees with the payload.
    #[error("{opcode:?} declares {declared} bytes of data but carries {actual}")]
    DataSizeMismatch {
        /// The operation.
        opcode: Opcode,
        /// Size in the fixed part.
        declared: u32,
        /// Bytes present.
        actual: usize,
    },
    /// A size exceeds what the server accepts.
    #[error("{opcode:?} size {size} exceeds the limit of {max}")]
    TooLarge {
        /// The operation.
        opcode: Opcode,
        /// Size requested.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// The request's extensions are malformed or not expected.
    #[error(transparent)]
    Extension(#[from] ExtensionError),
    /// Undefined flag bits are set.
    #[error("{opcode:?} has undefined flag bits {flags:#x}")]
    UnknownFlags {
        /// The operation.
        opcode: Opcode,
        /// The undefined bits.
        flags: u64,
    },
}

impl ParseError {
    /// The positive errno to reply with.
    pub fn errno(&self) -> i32 {
        match self {
            Self::UnknownOpcode(_) => errno::ENOSYS,
            Self::NameTooLong { .. } => errno::ENAMETOOLONG,
            Self::TooLarge { .. } => errno::E2BIG,
            _ => errno::EINVAL,
        }
    }
}
