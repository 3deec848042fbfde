//! `--uid-map` and `--gid-map`: virtiofsd 1.14's syntax and checks.
//!
//! A map is `:namespace_id:host_id:count:`, repeatable: the last character
//! is the delimiter (any character but a letter or digit), the map starts
//! with it too, and three decimal ids lie between (`/0/1000/1/` is
//! `:0:1000:1:`). The ranges are the ids of the daemon's own user
//! namespace (see `process::sandbox::userns`), so, as in virtiofsd, they
//! are only for a daemon started unprivileged with `--sandbox namespace`.
//! Unlike virtiofsd, whose unprivileged default sandbox is `namespace`,
//! daxfsd's is `none`: a map given without `--sandbox` chooses `namespace`
//! (see [`super::Config::sandbox_mode`]).

use super::id::{parse_id, NotAnId};

use crate::process::sandbox::userns::{IdRange, UserNsMaps};
use crate::process::sandbox::SandboxMode;

/// What is wrong with one map's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MapSyntax {
    /// Nothing was given.
    #[error("empty (it takes :namespace_id:host_id:count:)")]
    Empty,
    /// The last character, the delimiter, is a letter or a digit.
    #[error("the last character {0:?} is the delimiter, which cannot be a letter or digit (it takes :namespace_id:host_id:count:)")]
    Delimiter(char),
    /// The map does not start with its delimiter.
    #[error("it does not start with its delimiter {0:?} (it takes :namespace_id:host_id:count:)")]
    Start(char),
    /// Not three fields.
    #[error("{0} fields where three are needed (:namespace_id:host_id:count:)")]
    FieldCount(usize),
    /// A field is not an id.
    #[error(transparent)]
    NotAnId(#[from] NotAnId),
}

/// Why `--uid-map`/`--gid-map` is refused. The message names the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserNsError {
    /// A map does not parse.
    #[error("{flag} {value:?}")]
    Syntax {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// What is wrong.
        #[source]
        source: MapSyntax,
    },
    /// The daemon runs as root.
    #[error("{flag} maps ids into the user namespace of a daemon started unprivileged: not as root (there the daemon acts as any id itself; --translate-uid/--translate-gid translate ids)")]
    AsRoot {
        /// The flag.
        flag: &'static str,
    },
    /// Another sandbox than `namespace` was asked for.
    #[error("{flag} needs --sandbox namespace (the user namespace it maps ids into), not --sandbox {mode}")]
    Sandbox {
        /// The flag.
        flag: &'static str,
        /// The sandbox asked for.
        mode: &'static str,
    },
}

/// One map's text as a range.
pub fn parse_range(text: &str) -> Result<IdRange, MapSyntax> {
    let delimiter = text.chars().next_back().ok_or(MapSyntax::Empty)?;
    if delimiter.is_alphanumeric() {
        return Err(MapSyntax::Delimiter(delimiter));
    }
    let inner = &text[..text.len() - delimiter.len_utf8()];
    let fields: Vec<&str> = inner
        .strip_prefix(delimiter)
        .ok_or(MapSyntax::Start(delimiter))?
        .split(delimiter)
        .collect();
    let [inside, outside, count] = fields[..] else {
        return Err(MapSyntax::FieldCount(fields.len()));
    };
    Ok(IdRange {
        inside: parse_id(inside)?,
        outside: parse_id(outside)?,
        count: parse_id(count)?,
    })
}

/// The maps of `--uid-map` (`uid`) and `--gid-map` (`gid`), checked against
/// the sandbox asked for (`None`: not given) and whether the daemon runs as
/// root.
pub fn parse(
    uid: &[String], gid: &[String], sandbox: Option<SandboxMode>, root: bool,
) -> Result<UserNsMaps, UserNsError> {
    let ranges = |flag: &'static str, values: &[String]| {
        values
            .iter()
            .map(|value| {
                parse_range(value).map_err(|source| UserNsError::Syntax {
                    flag,
                    value: value.clone(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let maps = UserNsMaps {
        uid: ranges("--uid-map", uid)?,
        gid: ranges("--gid-map", gid)?,
    };
    let flag = if !maps.uid.is_empty() {
        "--uid-map"
    } else if !maps.gid.is_empty() {
        "--gid-map"
    } else {
        return Ok(maps);
    };
    if root {
        return Err(UserNsError::AsRoot { flag });
    }
    let mode = match sandbox {
        None | Some(SandboxMode::Namespace) => return Ok(maps),
        Some(SandboxMode::Chroot) => "chroot",
        Some(SandboxMode::None) => "none",
    };
    Err(UserNsError::Sandbox { flag, mode })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(inside: u32, outside: u32, count: u32) -> IdRange {
        IdRange {
            inside,
            outside,
            count,
        }
    }

    #[test]
    fn maps_parse_as_virtiofsd_reads_them() {
        assert_eq!(parse_range(":0:1000:1:"), Ok(range(0, 1000, 1)));
        assert_eq!(parse_range("/1/100000/65536/"), Ok(range(1, 100000, 65536)));
        assert_eq!(parse_range(""), Err(MapSyntax::Empty));
        assert_eq!(parse_range("0:0:1"), Err(MapSyntax::Delimiter('1')));
        assert_eq!(parse_range("0:0:1:"), Err(MapSyntax::Start(':')));
        assert_eq!(parse_range(":0:0:"), Err(MapSyntax::FieldCount(2)));
        assert_eq!(parse_range(":0:0:1:2:"), Err(MapSyntax::FieldCount(4)));
        assert_eq!(parse_range(":0/0/1:"), Err(MapSyntax::FieldCount(1)));
        assert!(matches!(
            parse_range(":0:-1:1:"),
            Err(MapSyntax::NotAnId(NotAnId { value, .. })) if value == "-1"
        ));
        assert!(matches!(
            parse_range(":0:4294967296:1:"),
            Err(MapSyntax::NotAnId(_))
        ));
    }

    #[test]
    fn maps_choose_the_namespace_sandbox_unprivileged() {
        let config = |extra: &[&str]| {
            super::super::Config::try_parse_from(
                ["daxfsd", "--socket-path", "s", "--shared-dir", "d"]
                    .iter()
                    .chain(extra),
            )
        };
        let refusal = |extra: &[&str]| crate::error_chain(&config(extra).unwrap_err());
        let maps = ["--uid-map=:0:1000:1:", "--gid-map", ":0:1000:1:"];
        if rustix::process::geteuid().is_root() {
            assert!(refusal(&maps).starts_with("--uid-map maps ids"));
            assert!(refusal(&["--gid-map=:0:0:1:"]).starts_with("--gid-map"));
        } else {
            let config = config(&maps).unwrap();
            assert_eq!(config.user_ns.uid, [range(0, 1000, 1)]);
            assert_eq!(config.sandbox_mode(), SandboxMode::Namespace);
            let err = refusal(&["--uid-map=:0:1000:1:", "-o", "sandbox=chroot"]);
            assert!(err.contains("--sandbox chroot"), "{err}");
        }
        assert_eq!(
            config(&[]).unwrap().sandbox_mode(),
            SandboxMode::default_for_euid()
        );
        assert!(refusal(&["--uid-map=0:0:1"]).starts_with("--uid-map \"0:0:1\": "));
    }

    #[test]
    fn maps_are_for_an_unprivileged_namespace_sandbox() {
        let uid = [":0:1000:1:".to_owned(), ":1:100000:65536:".to_owned()];
        let gid = [":0:1000:1:".to_owned()];
        let maps = parse(&uid, &gid, None, false).unwrap();
        assert_eq!(maps.uid, [range(0, 1000, 1), range(1, 100000, 65536)]);
        assert_eq!(maps.gid, [range(0, 1000, 1)]);
        assert_eq!(
            parse(&uid, &[], Some(SandboxMode::Namespace), false)
                .unwrap()
                .gid,
            []
        );
        assert_eq!(
            parse(&[], &gid, None, true),
            Err(UserNsError::AsRoot { flag: "--gid-map" })
        );
        assert_eq!(
            parse(&uid, &gid, Some(SandboxMode::Namespace), true),
            Err(UserNsError::AsRoot { flag: "--uid-map" })
        );
        assert_eq!(
            parse(&uid, &[], Some(SandboxMode::None), false),
            Err(UserNsError::Sandbox {
                flag: "--uid-map",
                mode: "none"
            })
        );
        assert_eq!(
            parse(&[], &gid, Some(SandboxMode::Chroot), false)
                .unwrap_err()
                .to_string(),
            "--gid-map needs --sandbox namespace (the user namespace it maps ids into), \
             not --sandbox chroot"
        );
        assert!(parse(&[], &[], Some(SandboxMode::None), true)
            .unwrap()
            .is_empty());
        let err = parse(&["0:0:1".to_owned()], &[], None, false).unwrap_err();
        assert_eq!(
            crate::error_chain(&err),
            "--uid-map \"0:0:1\": the last character '1' is the delimiter, which cannot be \
             a letter or digit (it takes :namespace_id:host_id:count:)"
        );
    }
}
