//! `-o OPTIONS`: the legacy C virtiofsd's option list, as virtiofsd 1.14
//! reads it (libvirt 9.0 passes `-o source=DIR,cache=...,xattr`).
//!
//! Each `-o` is split on every comma; an option with `=` is split on every
//! `=` and must have exactly one. Options apply in order after the flags,
//! so they override them and the last one wins. Anything virtiofsd refuses
//! is refused here too, naming the option.

use super::cli::{Args, NegotiationMode};
use crate::fs::passthrough::CachePolicy;
use crate::process::sandbox::SandboxMode;

/// Why an `-o` option is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompatError {
    /// An option virtiofsd does not know (or refuses, like `flock`).
    #[error("-o {0}: not an option daxfsd (or virtiofsd) takes")]
    Unknown(String),
    /// A known option with a value it does not take.
    #[error("-o {name}={value}: not a value of {name} (it takes {valid})")]
    Value {
        /// The option.
        name: String,
        /// The value given.
        value: String,
        /// The values it takes.
        valid: &'static str,
    },
    /// An `xattrmap=` (or `--xattrmap`) value that is not a rule list (the
    /// message names which).
    #[error(transparent)]
    Xattrmap(#[from] super::xattrmap::XattrmapError),
}

/// Applies every `-o` list in `args.compat_options` to `args`.
pub fn apply(args: &mut Args) -> Result<(), CompatError> {
    // virtiofsd's clap refuses a bad flag even if `-o xattrmap=` replaces it.
    super::xattrmap::parse("--xattrmap", args.xattrmap.as_deref())?;
    let lists = std::mem::take(&mut args.compat_options);
    for option in lists.iter().flat_map(|list| list.split(',')) {
        match option.split('=').collect::<Vec<_>>()[..] {
            [name] => apply_switch(args, name)?,
            [name, value] => apply_value(args, name, value)?,
            _ => return Err(CompatError::Unknown(option.to_owned())),
        }
    }
    args.compat_options = lists;
    Ok(())
}

fn apply_value(args: &mut Args, name: &str, value: &str) -> Result<(), CompatError> {
    let bad = |valid| CompatError::Value {
        name: name.to_owned(),
        value: value.to_owned(),
        valid,
    };
    match name {
        "source" => args.shared_dir = Some(value.into()),
        "cache" => {
            args.cache = match value {
                "auto" => CachePolicy::Auto,
                "always" => CachePolicy::Always,
                "none" => CachePolicy::Never,
                "metadata" => CachePolicy::Metadata,
                _ => return Err(bad("auto, always, none, metadata")),
            }
        }
        "loglevel" => {
            args.log_level = match value {
                "debug" | "info" | "warn" => value.to_owned(),
                "err" => "error".to_owned(),
                _ => return Err(bad("debug, info, warn, err")),
            }
        }
        "sandbox" => {
            args.sandbox = Some(match value {
                "namespace" => SandboxMode::Namespace,
                "chroot" => SandboxMode::Chroot,
                _ => return Err(bad("namespace, chroot")),
            })
        }
        "modcaps" => args.modcaps = Some(value.to_owned()),
        "xattrmap" => {
            super::xattrmap::parse("-o xattrmap", Some(value))?;
            args.xattrmap = Some(value.to_owned());
        }
        _ => return Err(CompatError::Unknown(format!("{name}={value}"))),
    }
    Ok(())
}

fn apply_switch(args: &mut Args, name: &str) -> Result<(), CompatError> {
    match name {
        "xattr" | "no_xattr" => args.xattr = name == "xattr",
        "readdirplus" | "no_readdirplus" => args.no_readdirplus = name == "no_readdirplus",
        "writeback" | "no_writeback" => args.writeback = name == "writeback",
        "allow_direct_io" | "no_allow_direct_io" => {
            args.allow_direct_io = name == "allow_direct_io"
        }
        "announce_submounts" => {
            args.announce_submounts = true;
            args.no_announce_submounts = false;
        }
        "killpriv_v2" | "no_killpriv_v2" => {
            args.killpriv_v2 = name == "killpriv_v2";
            args.no_killpriv_v2 = !args.killpriv_v2;
        }
        "posix_acl" => args.posix_acl = Some(NegotiationMode::Always),
        "no_posix_acl" => args.posix_acl = Some(NegotiationMode::Never),
        "security_label" => args.security_label = Some(NegotiationMode::Always),
        "no_security_label" => args.security_label = Some(NegotiationMode::Never),
        // Remote locks are never offered: turning them off changes nothing.
        "no_posix_lock" | "no_flock" => {}
        _ => return Err(CompatError::Unknown(name.to_owned())),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn applied(options: &[&str]) -> Result<Args, CompatError> {
        let mut args = Args::try_parse_from(
            ["daxfsd", "--socket-path", "s"]
                .into_iter()
                .chain(options.iter().flat_map(|&o| ["-o", o])),
        )
        .unwrap();
        apply(&mut args).map(|()| args)
    }

    #[test]
    fn libvirt_lists_apply() {
        let args =
            applied(&["source=/srv/a,cache=none,sandbox=chroot,xattr,no_flock,no_posix_lock"])
                .unwrap();
        assert_eq!(args.shared_dir, Some("/srv/a".into()));
        assert_eq!(args.cache, CachePolicy::Never);
        assert_eq!(args.sandbox, Some(SandboxMode::Chroot));
        assert!(args.xattr);
        let args = applied(&[
            "xattr,no_xattr",
            "loglevel=err",
            "cache=metadata",
            "killpriv_v2",
        ])
        .unwrap();
        assert!(!args.xattr, "the last one wins");
        assert_eq!(args.log_level, "error");
        assert_eq!(args.cache, CachePolicy::Metadata);
        assert!(args.killpriv_v2 && !args.no_killpriv_v2);
    }

    #[test]
    fn refusals_name_the_option() {
        for (option, named) in [
            ("flock", "-o flock"),
            ("posix_lock", "-o posix_lock"),
            ("no_announce_submounts", "-o no_announce_submounts"),
            ("cache=never", "-o cache=never"),
            ("sandbox=none", "-o sandbox=none"),
            ("loglevel=error", "-o loglevel=error"),
            ("cache=auto=always", "-o cache=auto=always"),
            ("bogus=1", "-o bogus=1"),
        ] {
            let err = applied(&[option]).unwrap_err().to_string();
            assert!(err.starts_with(named), "{option}: {err}");
        }
    }
}
