//! `--translate-uid` and `--translate-gid`: virtiofsd 1.14's syntax,
//! `TYPE:...` with TYPE one of `guest`, `host`, `squash-guest`,
//! `squash-host`, `forbid-guest`, `map` (any case), followed by three
//! numbers (two for `forbid-guest`). As in virtiofsd the separator is the
//! first character after TYPE that is not a letter, digit, `-` or `_`, and
//! every field uses the same one (`map/0/1000/1` is `map:0:1000:1`).

use super::id::{parse_id, NotAnId};

use crate::fs::idmap::{IdMap, IdMapError, IdMaps, Rule};

/// What is wrong with one rule's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleSyntax {
    /// Nothing follows the type.
    #[error("no fields after the type (TYPE:FIRST:...)")]
    NoFields,
    /// The type is none of virtiofsd's.
    #[error("unknown type {0:?} (guest, host, squash-guest, squash-host, forbid-guest or map)")]
    UnknownType(String),
    /// Too many or too few numbers for the type.
    #[error("{kind} takes {expected} numbers, not {seen}")]
    FieldCount {
        /// The type.
        kind: String,
        /// How many it takes.
        expected: usize,
        /// How many were given.
        seen: usize,
    },
    /// A field is not an id.
    #[error(transparent)]
    NotAnId(#[from] NotAnId),
}

/// Why a `--translate-uid`/`--translate-gid` value is refused. The message
/// names the flag and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TranslateError {
    /// The value does not parse as a rule.
    #[error("{flag} {value:?}")]
    Syntax {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong.
        #[source]
        source: RuleSyntax,
    },
    /// The rule does not fit with itself or the earlier ones.
    #[error("{flag} {value:?}")]
    Map {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong.
        #[source]
        source: IdMapError,
    },
}

/// `--translate-uid`/`--translate-gid` with `--posix-acl` other than never:
/// ids in ACLs are not translated, so translating the others would break
/// them (virtiofsd refuses the pair too).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--translate-uid/--translate-gid cannot be used with --posix-acl={mode}: translating ids would break POSIX ACLs")]
pub struct WithPosixAcl {
    /// The `--posix-acl` mode given.
    pub mode: &'static str,
}

/// The rule `text` stands for.
pub fn parse_rule(text: &str) -> Result<Rule, RuleSyntax> {
    let split = text
        .find(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_'))
        .ok_or(RuleSyntax::NoFields)?;
    let kind = text[..split].to_lowercase();
    let rest = &text[split..];
    let separator = rest.chars().next().ok_or(RuleSyntax::NoFields)?;
    let fields = rest[separator.len_utf8()..]
        .split(separator)
        .map(parse_id)
        .collect::<Result<Vec<u32>, NotAnId>>()?;
    let expected = if kind == "forbid-guest" { 2 } else { 3 };
    let count_error = || RuleSyntax::FieldCount {
        kind: kind.clone(),
        expected,
        seen: fields.len(),
    };
    let rule = match (kind.as_str(), fields.as_slice()) {
        ("forbid-guest", &[guest, count]) => Rule::ForbidGuest { guest, count },
        ("guest", &[guest, host, count]) => Rule::Guest { guest, host, count },
        ("host", &[host, guest, count]) => Rule::Host { host, guest, count },
        ("squash-guest", &[guest, host, count]) => Rule::SquashGuest { guest, host, count },
        ("squash-host", &[host, guest, count]) => Rule::SquashHost { host, guest, count },
        ("map", &[guest, host, count]) => Rule::Map { guest, host, count },
        ("forbid-guest" | "guest" | "host" | "squash-guest" | "squash-host" | "map", _) => {
            return Err(count_error())
        }
        _ => return Err(RuleSyntax::UnknownType(kind)),
    };
    Ok(rule)
}

/// The map of the values of `flag`, in order.
fn parse_map(flag: &'static str, values: &[String]) -> Result<IdMap, TranslateError> {
    let mut map = IdMap::default();
    for value in values {
        let rule = parse_rule(value).map_err(|source| TranslateError::Syntax {
            flag,
            value: value.clone(),
            source,
        })?;
        map.push(rule).map_err(|source| TranslateError::Map {
            flag,
            value: value.clone(),
            source,
        })?;
    }
    Ok(map)
}

/// The maps of the `--translate-uid` and `--translate-gid` values.
pub fn parse(uid: &[String], gid: &[String]) -> Result<IdMaps, TranslateError> {
    Ok(IdMaps {
        uid: parse_map("--translate-uid", uid)?,
        gid: parse_map("--translate-gid", gid)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_type_parses_and_prints_back() {
        for text in [
            "guest:1:2:3",
            "host:1:2:3",
            "squash-guest:0:1000:4294967295",
            "squash-host:1:2:3",
            "forbid-guest:1000:10",
            "map:0:1000:1",
        ] {
            assert_eq!(parse_rule(text).map(|r| r.to_string()), Ok(text.to_owned()));
        }
    }

    #[test]
    fn the_type_takes_any_case_and_any_one_separator() {
        let want = parse_rule("map:0:1000:1").unwrap();
        for text in [
            "MAP:0:1000:1",
            "Map/0/1000/1",
            "map,0,1000,1",
            "map 0 1000 1",
        ] {
            assert_eq!(parse_rule(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn malformed_rules_say_what_is_wrong() {
        for (text, wrong) in [
            ("map", "no fields"),
            ("", "no fields"),
            ("shift:0:1000:1", "unknown type \"shift\""),
            (":0:1000:1", "unknown type \"\""),
            ("guest:0:1000", "guest takes 3 numbers, not 2"),
            ("forbid-guest:0:1:2", "forbid-guest takes 2 numbers, not 3"),
            ("map:0:1000:1:", "\"\" is not an id"),
            ("map:0/1000:1", "\"0/1000\" is not an id"),
            ("map:-1:1000:1", "\"-1\" is not an id"),
            ("map:0:4294967296:1", "\"4294967296\" is not an id"),
            ("map:0:x:1", "\"x\" is not an id"),
        ] {
            let err = parse_rule(text).unwrap_err().to_string();
            assert!(err.contains(wrong), "{text:?}: {err}");
        }
    }

    #[test]
    fn errors_name_the_flag_and_the_value() {
        let values = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        let err = parse(&[], &values(&["map:0:1000:1", "nope:1:2:3"])).unwrap_err();
        assert_eq!(err.to_string(), "--translate-gid \"nope:1:2:3\"");
        let text = crate::error_chain(&err);
        assert!(
            text.starts_with("--translate-gid \"nope:1:2:3\": unknown type"),
            "{text}"
        );
        assert!(std::error::Error::source(&err).is_some());
        let err = parse(&values(&["map:0:1000:10", "forbid-guest:5:1"]), &[]).unwrap_err();
        let text = crate::error_chain(&err);
        assert!(
            text.starts_with("--translate-uid \"forbid-guest:5:1\": "),
            "{text}"
        );
        assert!(text.contains("overlaps that of map:0:1000:10"), "{text}");
        let err = parse(&values(&["forbid-guest:4294967295:1"]), &[]).unwrap_err();
        let text = crate::error_chain(&err);
        assert!(text.contains("passes the largest id"), "{text}");
    }

    #[test]
    fn uid_and_gid_maps_are_separate() {
        let maps = parse(&["map:0:1000:1".to_owned()], &["map:0:2000:1".to_owned()]).unwrap();
        assert_eq!(maps.uid.to_host(0), Some(1000));
        assert_eq!(maps.gid.to_host(0), Some(2000));
        assert!(parse(&[], &[]).unwrap().uid.is_identity());
    }
}
