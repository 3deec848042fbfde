//! `--xattrmap` and `-o xattrmap=`: virtiofsd 1.14's rule syntax (its
//! `doc/xattr-mapping.md`), parsed as virtiofsd parses it.
//!
//! The value is a list of rules, `:type:scope:key:prepend:` or
//! `:map:key:prepend:`, each using the first character that is not ASCII
//! white space as its field separator (any character: `/prefix/all///` is
//! `:prefix:all:::`). White space may separate rules. The type is `prefix`,
//! `ok`, `bad`, `unsupported` or `map`; the scope `client`, `server` or
//! `all`. A `map` rule must be the last one. What the rules mean is
//! [`crate::fs::xattrmap`]'s.
//!
//! Two more things virtiofsd refuses at start, by aborting rather than with
//! a message, are refused here with one: a character whose low byte is 0
//! in a key or prepend (virtiofsd keeps only the low byte of each
//! character; daxfsd does the same, so a map names the same host
//! attributes with both), and a map with no rule for the guest name
//! `security.capability` (virtiofsd maps it when it starts).

use std::iter::Peekable;
use std::str::Chars;

use crate::fs::xattrmap::{Kind, Rule, Scope, XattrMap};

/// What is wrong with one rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleSyntax {
    /// The type is none of virtiofsd's.
    #[error("type {0:?} is none of prefix, ok, bad, unsupported, map")]
    UnknownType(String),
    /// The scope is none of virtiofsd's.
    #[error("scope {0:?} is none of all, client, server")]
    UnknownScope(String),
    /// The text ends inside a field.
    #[error("the text ends before the field's closing {0:?} (a rule is :type:scope:key:prepend: with its own first character as separator)")]
    Incomplete(char),
    /// A `map` rule is followed by more text.
    #[error("a map rule must be the last rule")]
    MapNotLast,
    /// A key or prepend character whose low byte is 0.
    #[error(
        "{0:?} in a key or prepend is a NUL byte (only the low byte of each character is kept)"
    )]
    NulByte(char),
}

/// What is wrong with the list of rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapSyntax {
    /// Nothing but white space.
    #[error("no rules")]
    NoRules,
    /// One rule, numbered from 1.
    #[error("rule {number}")]
    Rule {
        /// Its number, from 1.
        number: usize,
        /// What is wrong with it.
        #[source]
        source: RuleSyntax,
    },
    /// No rule matches the guest name `security.capability`.
    #[error("no rule matches the guest name security.capability (virtiofsd maps it at start, and aborts)")]
    NoCapabilityRule,
}

/// Why an `--xattrmap` (or `-o xattrmap=`) value is refused. The message
/// names the flag and the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{flag} {value:?}")]
pub struct XattrmapError {
    /// The flag (`--xattrmap` or `-o xattrmap`).
    pub flag: &'static str,
    /// The value given.
    pub value: String,
    /// What is wrong.
    #[source]
    pub source: MapSyntax,
}

/// The map `value` of `flag` stands for (`None` without a value).
pub fn parse(flag: &'static str, value: Option<&str>) -> Result<Option<XattrMap>, XattrmapError> {
    value
        .map(|value| {
            parse_map(value).map_err(|source| XattrmapError {
                flag,
                value: value.to_owned(),
                source,
            })
        })
        .transpose()
}

/// Warnings for a map some names match no rule of: virtiofsd aborts on
/// such a name, daxfsd refuses (or hides) it.
pub fn warnings(map: &XattrMap) -> Vec<&'static str> {
    map.unterminated()
        .into_iter()
        .map(|scope| match scope {
            "client" => "--xattrmap: no rule matches every guest name; a guest name none matches is refused with EPERM (virtiofsd aborts)",
            _ => "--xattrmap: no rule matches every host name; LISTXATTR hides a host name none matches (virtiofsd aborts)",
        })
        .collect()
}

/// The map `text` stands for, `map` rules expanded.
pub fn parse_map(text: &str) -> Result<XattrMap, MapSyntax> {
    let mut chars = text.trim().chars().peekable();
    let mut rules = Vec::new();
    let mut number = 0;
    while let Some(&c) = chars.peek() {
        if c.is_ascii_whitespace() {
            chars.next();
            continue;
        }
        number += 1;
        let rule = read_rule(&mut chars).map_err(|source| MapSyntax::Rule { number, source })?;
        rules.extend(rule);
    }
    let map = XattrMap::new(rules).ok_or(MapSyntax::NoRules)?;
    if !map.rules().iter().any(matches_capability) {
        return Err(MapSyntax::NoCapabilityRule);
    }
    Ok(map)
}

/// Whether `rule` matches the guest name `security.capability`.
fn matches_capability(rule: &Rule) -> bool {
    rule.scope != Scope::Server && b"security.capability".starts_with(&rule.key)
}

/// One rule from `chars` (positioned on its separator): the rules it
/// stands for (several for `map`).
fn read_rule(chars: &mut Peekable<Chars>) -> Result<Vec<Rule>, RuleSyntax> {
    let Some(separator) = chars.next() else {
        return Ok(Vec::new());
    };
    let type_field = read_field(chars, separator)?;
    let kind = match type_field.as_slice() {
        b"prefix" => Some(Kind::Prefix),
        b"ok" => Some(Kind::Ok),
        b"bad" => Some(Kind::Bad),
        b"unsupported" => Some(Kind::Unsupported),
        b"map" => None,
        _ => return Err(RuleSyntax::UnknownType(type_field.text)),
    };
    let Some(kind) = kind else {
        let key = no_nul(read_field(chars, separator)?)?;
        let prepend = no_nul(read_field(chars, separator)?)?;
        if chars.peek().is_some() {
            return Err(RuleSyntax::MapNotLast);
        }
        return Ok(XattrMap::expand_map(&key, &prepend));
    };
    let scope_field = read_field(chars, separator)?;
    let scope = match scope_field.as_slice() {
        b"all" => Scope::All,
        b"client" => Scope::Client,
        b"server" => Scope::Server,
        _ => return Err(RuleSyntax::UnknownScope(scope_field.text)),
    };
    let key = no_nul(read_field(chars, separator)?)?;
    let prepend = no_nul(read_field(chars, separator)?)?;
    Ok(vec![Rule::new(kind, scope, &key, &prepend)])
}

/// The characters up to the next `separator` (consumed), as virtiofsd
/// keeps them: the low byte of each, with the character itself kept
/// aside for a message about a NUL.
fn read_field(chars: &mut Peekable<Chars>, separator: char) -> Result<Field, RuleSyntax> {
    let mut field = Field::default();
    loop {
        match chars.next() {
            Some(c) if c == separator => return Ok(field),
            Some(c) => {
                // virtiofsd's `ch as u8`: the low byte (identity for ASCII).
                let low = (u32::from(c) & 0xff) as u8;
                if low == 0 && field.nul.is_none() {
                    field.nul = Some(c);
                }
                field.bytes.push(low);
                field.text.push(c);
            }
            None => return Err(RuleSyntax::Incomplete(separator)),
        }
    }
}

/// A field's bytes (and its text, for messages), and the first character that became a NUL byte.
#[derive(Default)]
struct Field {
    bytes: Vec<u8>,
    text: String,
    nul: Option<char>,
}

impl Field {
    fn as_slice(&self) -> &[u8] {
        &self.bytes
    }
}

/// A key or prepend: NUL-free bytes.
fn no_nul(field: Field) -> Result<Vec<u8>, RuleSyntax> {
    match field.nul {
        Some(c) => Err(RuleSyntax::NulByte(c)),
        None => Ok(field.bytes),
    }
}

#[cfg(test)]
#[path = "xattrmap_tests.rs"]
mod tests;
