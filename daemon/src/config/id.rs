//! Ids in flag values (`--translate-uid`, `--uid-map`, ...): decimal 32-bit
//! unsigned integers.

use std::num::ParseIntError;

/// A field that is not an id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not an id")]
pub struct NotAnId {
    /// The field.
    pub value: String,
    /// Why it does not parse.
    #[source]
    pub source: ParseIntError,
}

/// `field` as an id.
pub fn parse_id(field: &str) -> Result<u32, NotAnId> {
    field.parse::<u32>().map_err(|source| NotAnId {
        value: field.to_owned(),
        source,
    })
}
