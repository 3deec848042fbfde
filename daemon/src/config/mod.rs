//! The configuration room: the command line ([`cli`], clap) and the
//! parsers of its values. Everything the daemon is told comes through here.

pub mod cli;

use crate::passthrough::InodeDaxPolicy;

/// Parses a size with an optional K/M/G suffix (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, shift) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 10),
        Some((i, 'm' | 'M')) => (&t[..i], 20),
        Some((i, 'g' | 'G')) => (&t[..i], 30),
        _ => (t, 0),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("'{s}' is not a size (a number with an optional K, M or G suffix)"))?;
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{s}' is too large"))
}

/// Parses `--inode-dax`: `never`, `always` or `min-size=SIZE`.
pub fn parse_inode_dax(s: &str) -> Result<InodeDaxPolicy, String> {
    match s {
        "never" => Ok(InodeDaxPolicy::Never),
        "always" => Ok(InodeDaxPolicy::Always),
        _ => match s.strip_prefix("min-size=") {
            Some(size) => parse_size(size).map(InodeDaxPolicy::MinSize),
            None => Err(format!("'{s}' is not never, always or min-size=SIZE")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_suffixes() {
        assert_eq!(parse_size("0"), Ok(0));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert!(parse_size("M").is_err());
        assert!(parse_size("2T").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn inode_dax_policies_parse() {
        assert_eq!(parse_inode_dax("never"), Ok(InodeDaxPolicy::Never));
        assert_eq!(parse_inode_dax("always"), Ok(InodeDaxPolicy::Always));
        assert_eq!(
            parse_inode_dax("min-size=1M"),
            Ok(InodeDaxPolicy::MinSize(1 << 20))
        );
        assert!(parse_inode_dax("sometimes").is_err());
        assert!(parse_inode_dax("min-size=lots").is_err());
    }
}
