use super::*;

fn map(rules: &[(Kind, Scope, &str, &str)]) -> XattrMap {
    let rules = rules
        .iter()
        .map(|&(kind, scope, key, prepend)| {
            Rule::new(kind, scope, key.as_bytes(), prepend.as_bytes())
        })
        .collect();
    XattrMap::new(rules).unwrap()
}

fn client(map: &XattrMap, name: &CStr) -> ClientName<'static> {
    match map.map_client(name) {
        ClientName::Pass(name) => ClientName::Pass(Cow::Owned(name.into_owned())),
        ClientName::Deny => ClientName::Deny,
        ClientName::Unsupported => ClientName::Unsupported,
    }
}

fn pass(name: &str) -> ClientName<'static> {
    ClientName::Pass(Cow::Owned(CString::new(name).unwrap()))
}

/// virtiofsd's `:map::user.virtiofs.:`.
fn everything_prefixed() -> XattrMap {
    XattrMap::new(XattrMap::expand_map(b"", b"user.virtiofs.")).unwrap()
}

#[test]
fn prefix_adds_for_the_guest_and_strips_for_the_host() {
    let m = everything_prefixed();
    assert_eq!(client(&m, c"user.foo"), pass("user.virtiofs.user.foo"));
    assert_eq!(
        client(&m, c"security.selinux"),
        pass("user.virtiofs.security.selinux")
    );
    assert_eq!(
        m.map_server_list(b"user.virtiofs.user.foo\0user.other\0security.selinux\0"),
        b"user.foo\0"
    );
    // Stripping the whole name leaves nothing to show.
    assert_eq!(m.map_server_list(b"user.virtiofs.\0"), b"");
    assert_eq!(m.map_server_list(b""), b"");
}

#[test]
fn ok_bad_and_unsupported() {
    let m = map(&[
        (Kind::Bad, Scope::All, "trusted.", "trusted."),
        (Kind::Unsupported, Scope::All, "security.", "security."),
        (Kind::Ok, Scope::All, "", ""),
    ]);
    assert_eq!(client(&m, c"user.a"), pass("user.a"));
    assert!(matches!(
        m.map_client(c"user.a"),
        ClientName::Pass(Cow::Borrowed(_))
    ));
    assert_eq!(client(&m, c"trusted.x"), ClientName::Deny);
    assert_eq!(client(&m, c"security.x"), ClientName::Unsupported);
    assert_eq!(
        m.map_server_list(b"trusted.x\0user.a\0security.x\0user.b\0"),
        b"user.a\0user.b\0"
    );
}

#[test]
fn scopes_choose_the_direction_and_the_first_match_wins() {
    let m = map(&[
        (Kind::Bad, Scope::Client, "user.secret", ""),
        (Kind::Bad, Scope::Server, "", "user.hidden"),
        (Kind::Prefix, Scope::Client, "trusted.", "user.t."),
        (Kind::Prefix, Scope::Server, "", "user.t."),
        (Kind::Ok, Scope::All, "", ""),
    ]);
    // A client rule is not tried on host names, nor a server rule on guest names.
    assert_eq!(client(&m, c"user.secret.x"), ClientName::Deny);
    assert_eq!(client(&m, c"user.hidden"), pass("user.hidden"));
    assert_eq!(client(&m, c"trusted.a"), pass("user.t.trusted.a"));
    assert_eq!(client(&m, c"user.t.direct"), pass("user.t.direct"));
    assert_eq!(
        m.map_server_list(b"user.secret.x\0user.hidden.y\0user.t.trusted.a\0"),
        b"user.secret.x\0trusted.a\0"
    );
}

#[test]
fn map_with_a_key_hides_the_unprefixed_and_guards_the_prefix() {
    let m = XattrMap::new(XattrMap::expand_map(b"trusted.", b"user.virtiofs.")).unwrap();
    assert_eq!(client(&m, c"trusted.a"), pass("user.virtiofs.trusted.a"));
    assert_eq!(client(&m, c"user.virtiofs.trusted.a"), ClientName::Deny);
    assert_eq!(client(&m, c"user.plain"), pass("user.plain"));
    assert_eq!(
        m.map_server_list(b"user.virtiofs.trusted.a\0trusted.host\0user.plain\0"),
        b"trusted.a\0user.plain\0"
    );
}

#[test]
fn unmatched_names_are_refused_and_hidden_not_a_panic() {
    let m = map(&[(Kind::Prefix, Scope::All, "user.", "user.g.")]);
    assert_eq!(client(&m, c"trusted.x"), ClientName::Deny);
    assert_eq!(
        m.map_server_list(b"trusted.x\0user.g.user.y\0"),
        b"user.y\0"
    );
    assert_eq!(m.unterminated(), ["client", "server"]);
    assert!(everything_prefixed().unterminated().is_empty());
}

#[test]
fn security_capability_remapped_or_not() {
    assert_eq!(
        everything_prefixed().remapped_capability().as_deref(),
        Some(c"user.virtiofs.security.capability")
    );
    let untouched = map(&[(Kind::Ok, Scope::All, "", "")]);
    assert_eq!(untouched.remapped_capability(), None);
    let refused = map(&[
        (Kind::Bad, Scope::All, "security.", ""),
        (Kind::Ok, Scope::All, "", ""),
    ]);
    assert_eq!(refused.remapped_capability(), None);
}
