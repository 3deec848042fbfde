//! Extended-attribute name mapping (`--xattrmap`), as virtiofsd 1.14 does
//! it (its `doc/xattr-mapping.md`).
//!
//! A map is a list of rules tried in order; the first that matches a name
//! decides. A rule has a type, a scope, a `key` and a `prepend`:
//!
//! - names from the guest (SETXATTR, GETXATTR, REMOVEXATTR: the client
//!   scope) match a rule whose `key` starts them;
//! - names from the host (the LISTXATTR reply: the server scope) match a
//!   rule whose `prepend` starts them.
//!
//! `prefix` adds `prepend` in front of a guest name and strips it from a
//! host name; `ok` passes the name unchanged; `bad` refuses a guest name
//! with EPERM (GETXATTR: ENODATA) and hides a host name; `unsupported`
//! refuses with EOPNOTSUPP and hides. The `map` shorthand is expanded here
//! into these ([`XattrMap::expand_map`]).
//!
//! virtiofsd wants the last rule to match every name and panics on a name
//! none matches. daxfsd never panics on guest input: a name no rule
//! matches is treated as matched by `bad` (refused, hidden), and the
//! command line gets a warning ([`XattrMap::unterminated`]).

use std::borrow::Cow;
use std::ffi::{CStr, CString};

/// What a rule does with a name it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `prefix`: add `prepend` to a guest name, strip it from a host name.
    Prefix,
    /// `ok`: the name passes unchanged.
    Ok,
    /// `bad`: a guest name is refused with EPERM, a host name hidden.
    Bad,
    /// `unsupported`: a guest name is refused with EOPNOTSUPP, a host name
    /// hidden.
    Unsupported,
}

/// Which names a rule is tried on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Guest names (`client`).
    Client,
    /// Host names in LISTXATTR replies (`server`).
    Server,
    /// Both (`all`).
    All,
}

impl Scope {
    fn client(self) -> bool {
        matches!(self, Self::Client | Self::All)
    }

    fn server(self) -> bool {
        matches!(self, Self::Server | Self::All)
    }
}

/// One rule, `:type:scope:key:prepend:` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// What it does.
    pub kind: Kind,
    /// Which names it is tried on.
    pub scope: Scope,
    /// The prefix a guest name must start with (empty: every name).
    pub key: Vec<u8>,
    /// The prefix a host name must start with (empty: every name), and
    /// what `prefix` adds to guest names.
    pub prepend: Vec<u8>,
}

impl Rule {
    /// The rule `kind` for `scope`.
    pub fn new(kind: Kind, scope: Scope, key: &[u8], prepend: &[u8]) -> Self {
        Self {
            kind,
            scope,
            key: key.to_vec(),
            prepend: prepend.to_vec(),
        }
    }

    fn matches_client(&self, name: &[u8]) -> bool {
        self.scope.client() && name.starts_with(&self.key)
    }

    fn matches_server(&self, name: &[u8]) -> bool {
        self.scope.server() && name.starts_with(&self.prepend)
    }
}

/// What becomes of a guest's attribute name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientName<'a> {
    /// The host name to use.
    Pass(Cow<'a, CStr>),
    /// Refused: `bad` (EPERM; ENODATA for GETXATTR), or no rule matched.
    Deny,
    /// Refused: `unsupported` (EOPNOTSUPP).
    Unsupported,
}

/// A checked list of rules, `map` already expanded. Never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XattrMap {
    rules: Vec<Rule>,
}

impl XattrMap {
    /// The map of `rules`, in order; `None` if there are none.
    pub fn new(rules: Vec<Rule>) -> Option<Self> {
        (!rules.is_empty()).then_some(Self { rules })
    }

    /// The rules, in order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rules `:map:key:prepend:` stands for: `prefix` for every scope;
    /// with a non-empty key, `bad` for guest names already starting with
    /// `prepend` and host names starting with `key` (unprefixed), then `ok`
    /// for the rest; with an empty key, `bad` for the rest.
    pub fn expand_map(key: &[u8], prepend: &[u8]) -> Vec<Rule> {
        let mut rules = vec![Rule::new(Kind::Prefix, Scope::All, key, prepend)];
        let last = if key.is_empty() {
            Kind::Bad
        } else {
            rules.push(Rule::new(Kind::Bad, Scope::All, prepend, key));
            Kind::Ok
        };
        rules.push(Rule::new(last, Scope::All, b"", b""));
        rules
    }

    /// The scopes no rule matches every name of ("client", "server"), for
    /// a warning: virtiofsd aborts on such a name.
    pub fn unterminated(&self) -> Vec<&'static str> {
        let client = self
            .rules
            .iter()
            .any(|r| r.scope.client() && r.key.is_empty());
        let server = self
            .rules
            .iter()
            .any(|r| r.scope.server() && r.prepend.is_empty());
        [(client, "client"), (server, "server")]
            .into_iter()
            .filter(|(terminated, _)| !terminated)
            .map(|(_, scope)| scope)
            .collect()
    }

    /// The host name for the guest's `name` (GETXATTR, SETXATTR,
    /// REMOVEXATTR), or why it is refused.
    pub fn map_client<'a>(&self, name: &'a CStr) -> ClientName<'a> {
        let bytes = name.to_bytes();
        let Some(rule) = self.rules.iter().find(|r| r.matches_client(bytes)) else {
            return ClientName::Deny;
        };
        match rule.kind {
            Kind::Ok => ClientName::Pass(Cow::Borrowed(name)),
            Kind::Bad => ClientName::Deny,
            Kind::Unsupported => ClientName::Unsupported,
            Kind::Prefix => {
                let mut mapped = rule.prepend.clone();
                mapped.extend_from_slice(bytes);
                // Neither part holds a NUL (the parser refuses one in
                // prepend, and `name` is a C string).
                match CString::new(mapped) {
                    Ok(mapped) => ClientName::Pass(Cow::Owned(mapped)),
                    Err(_) => ClientName::Deny,
                }
            }
        }
    }

    /// The guest's view of the host's NUL-separated list of names
    /// (LISTXATTR): `ok` names unchanged, `prefix` names with `prepend`
    /// stripped, the rest (`bad`, `unsupported`, unmatched) left out.
    /// Empty names are dropped, as virtiofsd does.
    pub fn map_server_list(&self, list: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(list.len());
        for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
            let Some(rule) = self.rules.iter().find(|r| r.matches_server(name)) else {
                continue;
            };
            let shown = match rule.kind {
                Kind::Ok => name,
                Kind::Prefix => &name[rule.prepend.len()..],
                Kind::Bad | Kind::Unsupported => continue,
            };
            // virtiofsd drops a name that stripping leaves empty.
            if !shown.is_empty() {
                out.extend_from_slice(shown);
                out.push(0);
            }
        }
        out
    }

    /// The host name `security.capability` maps to, if the map changes it:
    /// the daemon must then remove that attribute where the host kernel
    /// would have removed `security.capability` (write, truncate, chown),
    /// since the host kernel does not know the mapped name.
    pub fn remapped_capability(&self) -> Option<CString> {
        const CAPABILITY: &CStr = c"security.capability";
        match self.map_client(CAPABILITY) {
            ClientName::Pass(name) if name.as_ref() != CAPABILITY => Some(name.into_owned()),
            _ => None,
        }
    }
}

#[cfg(test)]
#[path = "xattrmap_tests.rs"]
mod tests;
