//! `--modcaps` (and `-o modcaps=`): virtiofsd 1.14's changes to the
//! capability set the daemon keeps as root. The value is a colon-separated
//! list of entries, each `+NAME` (keep it) or `-NAME` (drop it), NAME a
//! capability as libcap-ng spells it (`sys_admin`, `mknod`; any case, no
//! `cap_` prefix). The last mention of a capability wins.
//!
//! As in virtiofsd, an empty entry, an unsigned one or an unknown name is
//! refused, and so is removing `dac_read_search` while file handles are
//! used (`open_by_handle_at` needs it). virtiofsd ignores `--modcaps`
//! entirely when not root; daxfsd checks it all the same, and refuses an
//! addition then (a daemon not root keeps no capability, so it could not
//! be honoured; a removal already is).

use clap::ValueEnum;
use rustix::thread::CapabilitySet;

use crate::fs::passthrough::InodeFileHandles;
use crate::process::sandbox::caps::{names, ModCaps};

/// What is wrong with one entry of the list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntrySyntax {
    /// An empty entry (`+a::-b`, a trailing colon, an empty value).
    #[error("an empty entry (each is +NAME or -NAME, separated by colons)")]
    Empty,
    /// An entry that starts with neither `+` nor `-`.
    #[error("{0:?} does not start with + (add) or - (remove)")]
    Unsigned(String),
    /// A name libcap-ng does not know.
    #[error("unknown capability {0:?}")]
    Unknown(String),
}

/// Why a `--modcaps` value is refused. The message names the flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModcapsError {
    /// An entry does not parse.
    #[error("--modcaps {value:?}")]
    Syntax {
        /// The whole value given.
        value: String,
        /// What is wrong with it.
        #[source]
        source: EntrySyntax,
    },
    /// `-dac_read_search` while file handles are used.
    #[error(
        "--modcaps removes dac_read_search, which --inode-file-handles={mode} needs \
         (open_by_handle_at); add --inode-file-handles=never"
    )]
    HandlesNeedDacReadSearch {
        /// The `--inode-file-handles` mode.
        mode: String,
    },
    /// Additions when not root.
    #[error(
        "--modcaps adds {added}, but the daemon is not root: it keeps no capability \
         (it acts as its own user)"
    )]
    AddsNotRoot {
        /// The capabilities added, by name.
        added: String,
    },
}

/// The capability NAME stands for (libcap-ng's names, any case).
fn capability(name: &str) -> Option<CapabilitySet> {
    CapabilitySet::from_name(&name.to_ascii_uppercase())
}

/// The changes `value` lists.
pub fn parse_list(value: &str) -> Result<ModCaps, EntrySyntax> {
    let mut modcaps = ModCaps::NONE;
    for entry in value.split(':') {
        let mut chars = entry.chars();
        let sign = chars.next().ok_or(EntrySyntax::Empty)?;
        let name = chars.as_str();
        if sign != '+' && sign != '-' {
            return Err(EntrySyntax::Unsigned(entry.to_owned()));
        }
        let cap = capability(name).ok_or_else(|| EntrySyntax::Unknown(name.to_owned()))?;
        if sign == '+' {
            modcaps.add(cap);
        } else {
            modcaps.remove(cap);
        }
    }
    Ok(modcaps)
}

/// The changes of `--modcaps` (none without it), checked against the
/// `--inode-file-handles` mode and whether the daemon runs as root.
pub fn parse(
    value: Option<&str>, file_handles: InodeFileHandles, root: bool,
) -> Result<ModCaps, ModcapsError> {
    let Some(value) = value else {
        return Ok(ModCaps::NONE);
    };
    let modcaps = parse_list(value).map_err(|source| ModcapsError::Syntax {
        value: value.to_owned(),
        source,
    })?;
    if file_handles != InodeFileHandles::Never
        && modcaps.remove.contains(CapabilitySet::DAC_READ_SEARCH)
    {
        let mode = file_handles
            .to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned());
        return Err(ModcapsError::HandlesNeedDacReadSearch { mode });
    }
    if !root && !modcaps.add.is_empty() {
        return Err(ModcapsError::AddsNotRoot {
            added: names(modcaps.add),
        });
    }
    Ok(modcaps)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEVER: InodeFileHandles = InodeFileHandles::Never;
    const PREFER: InodeFileHandles = InodeFileHandles::Prefer;

    #[test]
    fn entries_add_and_remove_and_the_last_mention_wins() {
        let m = parse_list("+sys_admin:-mknod").unwrap();
        assert_eq!(m.add, CapabilitySet::SYS_ADMIN);
        assert_eq!(m.remove, CapabilitySet::MKNOD);
        let m = parse_list("-chown:+CHOWN:+Sys_Ptrace:-sys_ptrace").unwrap();
        assert_eq!(m.add, CapabilitySet::CHOWN);
        assert_eq!(m.remove, CapabilitySet::SYS_PTRACE);
    }

    #[test]
    fn every_libcap_ng_name_is_known() {
        let all = [
            "chown",
            "dac_override",
            "dac_read_search",
            "fowner",
            "fsetid",
            "kill",
            "setgid",
            "setuid",
            "setpcap",
            "linux_immutable",
            "net_bind_service",
            "net_broadcast",
            "net_admin",
            "net_raw",
            "ipc_lock",
            "ipc_owner",
            "sys_module",
            "sys_rawio",
            "sys_chroot",
            "sys_ptrace",
            "sys_pacct",
            "sys_admin",
            "sys_boot",
            "sys_nice",
            "sys_resource",
            "sys_time",
            "sys_tty_config",
            "mknod",
            "lease",
            "audit_write",
            "audit_control",
            "setfcap",
            "mac_override",
            "mac_admin",
            "syslog",
            "wake_alarm",
            "block_suspend",
            "audit_read",
            "perfmon",
            "bpf",
            "checkpoint_restore",
        ];
        for (bit, name) in all.iter().enumerate() {
            let cap = capability(name).unwrap_or_else(|| panic!("{name}"));
            assert_eq!(cap.bits(), 1 << bit, "{name}");
            assert_eq!(names(cap), *name);
        }
    }

    #[test]
    fn bad_entries_are_refused() {
        for (value, expected) in [
            ("", EntrySyntax::Empty),
            ("+sys_admin:", EntrySyntax::Empty),
            ("+chown::-mknod", EntrySyntax::Empty),
            ("sys_admin", EntrySyntax::Unsigned("sys_admin".into())),
            ("+chown:*mknod", EntrySyntax::Unsigned("*mknod".into())),
            ("é", EntrySyntax::Unsigned("é".into())),
            ("+no_such_cap", EntrySyntax::Unknown("no_such_cap".into())),
            ("+", EntrySyntax::Unknown(String::new())),
            ("+cap_chown", EntrySyntax::Unknown("cap_chown".into())),
            ("-_", EntrySyntax::Unknown("_".into())),
            ("+ chown", EntrySyntax::Unknown(" chown".into())),
        ] {
            assert_eq!(parse_list(value), Err(expected), "{value:?}");
        }
    }

    #[test]
    fn errors_name_the_flag_and_the_value() {
        let err = parse(Some("+no_such_cap"), PREFER, true).unwrap_err();
        assert_eq!(
            crate::error_chain(&err),
            "--modcaps \"+no_such_cap\": unknown capability \"no_such_cap\""
        );
        let err = parse(Some("sys_admin"), PREFER, true).unwrap_err();
        assert_eq!(
            crate::error_chain(&err),
            "--modcaps \"sys_admin\": \"sys_admin\" does not start with + (add) or - (remove)"
        );
    }

    #[test]
    fn dac_read_search_stays_while_file_handles_are_used() {
        for mode in [PREFER, InodeFileHandles::Mandatory] {
            let err = parse(Some("-dac_read_search"), mode, true).unwrap_err();
            assert!(
                matches!(err, ModcapsError::HandlesNeedDacReadSearch { .. }),
                "{err}"
            );
            assert!(err
                .to_string()
                .starts_with("--modcaps removes dac_read_search"));
            parse(Some("-dac_read_search:+dac_read_search"), mode, true).unwrap();
        }
        let m = parse(Some("-dac_read_search"), NEVER, true).unwrap();
        assert_eq!(m.remove, CapabilitySet::DAC_READ_SEARCH);
    }

    #[test]
    fn not_root_only_removals_are_accepted() {
        assert_eq!(parse(None, PREFER, false), Ok(ModCaps::NONE));
        let m = parse(Some("-mknod:-setfcap"), PREFER, false).unwrap();
        assert_eq!(m.remove, CapabilitySet::MKNOD | CapabilitySet::SETFCAP);
        assert_eq!(
            parse(Some("+sys_admin:+mknod:-chown"), PREFER, false),
            Err(ModcapsError::AddsNotRoot {
                added: "sys_admin, mknod".into()
            })
        );
    }

    #[test]
    fn the_config_carries_the_changes_of_either_spelling() {
        let parsed = |extra: &[&str]| {
            let base = ["daxfsd", "--socket-path", "s", "--shared-dir", "d"];
            super::super::Config::try_parse_from(base.iter().chain(extra))
        };
        assert_eq!(parsed(&[]).unwrap().modcaps, ModCaps::NONE);
        let m = parsed(&["-o", "modcaps=-mknod"]).unwrap().modcaps;
        assert_eq!(m.remove, CapabilitySet::MKNOD);
        let never = ["--modcaps=-dac_read_search", "--inode-file-handles=never"];
        let m = parsed(&never).unwrap().modcaps;
        assert_eq!(m.remove, CapabilitySet::DAC_READ_SEARCH);
        let err = parsed(&["--modcaps=-dac_read_search"]).unwrap_err();
        let message = crate::error_chain(&err);
        assert!(message.starts_with("--modcaps removes"), "{message}");
        let err = parsed(&["--modcaps=+no_such_cap"]).unwrap_err();
        assert!(crate::error_chain(&err).starts_with("--modcaps"), "{err}");
        let added = parsed(&["--modcaps=+sys_admin"]);
        if rustix::process::geteuid().is_root() {
            assert_eq!(added.unwrap().modcaps.add, CapabilitySet::SYS_ADMIN);
        } else {
            assert!(matches!(
                added,
                Err(super::super::ConfigError::Modcaps(
                    ModcapsError::AddsNotRoot { .. }
                ))
            ));
        }
    }
}
