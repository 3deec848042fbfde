//! UID/GID translation by the daemon (`--translate-uid`,
//! `--translate-gid`), as virtiofsd 1.14 does it.
//!
//! Each map has two independent directions: guest to host (applied to the
//! caller's ids and to the owner a SETATTR sets) and host to guest (applied
//! to every attribute reply). A rule adds a range to one direction or, for
//! `map`, one to each. An id no rule covers maps to itself; a guest id
//! under `forbid-guest` has no host id, and the request that needs one
//! gets EPERM. Host to guest never fails. Within one direction ranges may
//! not overlap (virtiofsd refuses that too); the two directions need not
//! be inverses of each other.

use std::fmt;

/// One rule of `--translate-uid`/`--translate-gid`, as written on the
/// command line (`TYPE:...`, see [`fmt::Display`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `guest:GUEST:HOST:COUNT`: guest ids to host ids, one to one.
    Guest { guest: u32, host: u32, count: u32 },
    /// `host:HOST:GUEST:COUNT`: host ids to guest ids, one to one.
    Host { host: u32, guest: u32, count: u32 },
    /// `squash-guest:GUEST:HOST:COUNT`: a range of guest ids to one host id.
    SquashGuest { guest: u32, host: u32, count: u32 },
    /// `squash-host:HOST:GUEST:COUNT`: a range of host ids to one guest id.
    SquashHost { host: u32, guest: u32, count: u32 },
    /// `forbid-guest:GUEST:COUNT`: requests needing these guest ids fail.
    ForbidGuest { guest: u32, count: u32 },
    /// `map:GUEST:HOST:COUNT`: one to one in both directions.
    Map { guest: u32, host: u32, count: u32 },
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Guest { guest, host, count } => write!(f, "guest:{guest}:{host}:{count}"),
            Self::Host { host, guest, count } => write!(f, "host:{host}:{guest}:{count}"),
            Self::SquashGuest { guest, host, count } => {
                write!(f, "squash-guest:{guest}:{host}:{count}")
            }
            Self::SquashHost { host, guest, count } => {
                write!(f, "squash-host:{host}:{guest}:{count}")
            }
            Self::ForbidGuest { guest, count } => write!(f, "forbid-guest:{guest}:{count}"),
            Self::Map { guest, host, count } => write!(f, "map:{guest}:{host}:{count}"),
        }
    }
}

/// Why rules do not make a map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdMapError {
    /// A range (FIRST+COUNT) passes the largest id.
    #[error(
        "{rule}: the range passes the largest id ({first} + {count} > {})",
        u32::MAX
    )]
    Overflow {
        /// The rule.
        rule: Rule,
        /// The range's first id (source or target).
        first: u32,
        /// Its length.
        count: u32,
    },
    /// A range overlaps one an earlier rule gave the same direction.
    #[error("{rule}: its {direction} range overlaps that of {earlier}")]
    Overlap {
        /// The rule.
        rule: Rule,
        /// "guest-to-host" or "host-to-guest".
        direction: &'static str,
        /// The earlier rule.
        earlier: Rule,
    },
}

/// What a range of source ids becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// The range maps one to one onto the range starting here.
    Base(u32),
    /// Every id of the range maps to this one.
    Squash(u32),
    /// The ids have no translation (`forbid-guest`).
    Forbid,
}

/// A range `[start, end)` of source ids and what it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    start: u32,
    end: u32,
    target: Target,
    /// The rule it came from (for overlap messages).
    rule: Rule,
}

impl Entry {
    fn map(&self, id: u32) -> Option<u32> {
        match self.target {
            // Cannot overflow: the target range was checked to fit.
            Target::Base(base) => Some(base + (id - self.start)),
            Target::Squash(to) => Some(to),
            Target::Forbid => None,
        }
    }
}

/// The end (exclusive) of the range of `count` ids from `first`.
fn range_end(rule: Rule, first: u32, count: u32) -> Result<u32, IdMapError> {
    first
        .checked_add(count)
        .ok_or(IdMapError::Overflow { rule, first, count })
}

/// One direction: disjoint ranges of source ids.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Direction {
    entries: Vec<Entry>,
}

impl Direction {
    /// Adds `count` ids from `first` becoming `target` (an empty range adds
    /// nothing). A one-to-one target range must fit as well.
    fn push(
        &mut self, name: &'static str, rule: Rule, (first, count): (u32, u32), target: Target,
    ) -> Result<(), IdMapError> {
        let end = range_end(rule, first, count)?;
        if let Target::Base(base) = target {
            range_end(rule, base, count)?;
        }
        if count == 0 {
            return Ok(());
        }
        if let Some(earlier) = self.entries.iter().find(|e| e.start < end && first < e.end) {
            return Err(IdMapError::Overlap {
                rule,
                direction: name,
                earlier: earlier.rule,
            });
        }
        self.entries.push(Entry {
            start: first,
            end,
            target,
            rule,
        });
        Ok(())
    }

    /// `id` translated: itself if no range covers it, `None` if forbidden.
    fn map(&self, id: u32) -> Option<u32> {
        match self.entries.iter().find(|e| e.start <= id && id < e.end) {
            Some(entry) => entry.map(id),
            None => Some(id),
        }
    }
}

/// The translation of one kind of id (uids or gids).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMap {
    to_host: Direction,
    to_guest: Direction,
}

impl IdMap {
    /// The map of `rules`, in order.
    pub fn new(rules: &[Rule]) -> Result<Self, IdMapError> {
        let mut map = Self::default();
        for &rule in rules {
            map.push(rule)?;
        }
        Ok(map)
    }

    /// Adds `rule`.
    pub fn push(&mut self, rule: Rule) -> Result<(), IdMapError> {
        use Target::{Base, Forbid, Squash};
        // The range it adds to each direction: (first, count, target).
        let (to_host, to_guest) = match rule {
            Rule::Guest { guest, host, count } => (Some((guest, count, Base(host))), None),
            Rule::Host { host, guest, count } => (None, Some((host, count, Base(guest)))),
            Rule::SquashGuest { guest, host, count } => (Some((guest, count, Squash(host))), None),
            Rule::SquashHost { host, guest, count } => (None, Some((host, count, Squash(guest)))),
            Rule::ForbidGuest { guest, count } => (Some((guest, count, Forbid)), None),
            Rule::Map { guest, host, count } => (
                Some((guest, count, Base(host))),
                Some((host, count, Base(guest))),
            ),
        };
        if let Some((first, count, target)) = to_host {
            self.to_host
                .push("guest-to-host", rule, (first, count), target)?;
        }
        if let Some((first, count, target)) = to_guest {
            self.to_guest
                .push("host-to-guest", rule, (first, count), target)?;
        }
        Ok(())
    }

    /// Whether every id maps to itself.
    pub fn is_identity(&self) -> bool {
        self.to_host.entries.is_empty() && self.to_guest.entries.is_empty()
    }

    /// The host id of guest id `guest`; `None` if it is forbidden.
    pub fn to_host(&self, guest: u32) -> Option<u32> {
        self.to_host.map(guest)
    }

    /// The guest id of host id `host`.
    pub fn to_guest(&self, host: u32) -> u32 {
        // Only guest-to-host ranges can forbid.
        self.to_guest.map(host).unwrap_or(host)
    }
}

/// The uid and gid maps of a share.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IdMaps {
    /// `--translate-uid`.
    pub uid: IdMap,
    /// `--translate-gid`.
    pub gid: IdMap,
}

#[cfg(test)]
#[path = "idmap_tests.rs"]
mod tests;
