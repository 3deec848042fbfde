use super::*;

fn rule(kind: Kind, scope: Scope, key: &str, prepend: &str) -> Rule {
    Rule::new(kind, scope, key.as_bytes(), prepend.as_bytes())
}

fn rules(text: &str) -> Vec<Rule> {
    parse_map(text).unwrap().rules().to_vec()
}

fn syntax(text: &str) -> MapSyntax {
    parse_map(text).unwrap_err()
}

fn rule_error(number: usize, source: RuleSyntax) -> MapSyntax {
    MapSyntax::Rule { number, source }
}

#[test]
fn one_rule_of_each_type_and_scope() {
    assert_eq!(
        rules(":prefix:client:trusted.:user.virtiofs.: :ok:all:::"),
        [
            rule(Kind::Prefix, Scope::Client, "trusted.", "user.virtiofs."),
            rule(Kind::Ok, Scope::All, "", ""),
        ]
    );
    assert_eq!(
        rules(":bad:server::security.::unsupported:client:x.::|ok|all|||"),
        [
            rule(Kind::Bad, Scope::Server, "", "security."),
            rule(Kind::Unsupported, Scope::Client, "x.", ""),
            rule(Kind::Ok, Scope::All, "", ""),
        ]
    );
}

#[test]
fn separators_and_white_space_as_virtiofsd_documents() {
    // virtiofsd's example 2, one rule a line.
    let text = "/prefix/all/trusted./user.virtiofs./
            /bad/server//trusted./
            /bad/client/user.virtiofs.//
            /ok/all///";
    assert_eq!(
        rules(text),
        [
            rule(Kind::Prefix, Scope::All, "trusted.", "user.virtiofs."),
            rule(Kind::Bad, Scope::Server, "", "trusted."),
            rule(Kind::Bad, Scope::Client, "user.virtiofs.", ""),
            rule(Kind::Ok, Scope::All, "", ""),
        ]
    );
    // Rules may follow each other with no space; each has its own separator.
    assert_eq!(
        rules("  :prefix:all::user.virtiofs.::bad:all:::\t"),
        rules(":prefix:all::user.virtiofs.: /bad/all/// ")
    );
}

#[test]
fn map_expands_as_virtiofsd_and_must_be_last() {
    assert_eq!(
        rules(":map::user.virtiofs.:"),
        rules(":prefix:all::user.virtiofs.::bad:all:::")
    );
    assert_eq!(
        rules("/map/trusted./user.virtiofs./"),
        [
            rule(Kind::Prefix, Scope::All, "trusted.", "user.virtiofs."),
            rule(Kind::Bad, Scope::All, "user.virtiofs.", "trusted."),
            rule(Kind::Ok, Scope::All, "", ""),
        ]
    );
    assert_eq!(
        rules(":ok:client:user.:: :map::user.virtiofs.:")[0],
        rule(Kind::Ok, Scope::Client, "user.", "")
    );
    assert_eq!(
        syntax(":map::a.::ok:all:::"),
        rule_error(1, RuleSyntax::MapNotLast)
    );
    assert_eq!(
        syntax(":map:trusted.:virtiofs.user.::map:trusted.:virtiofs.user.:"),
        rule_error(1, RuleSyntax::MapNotLast)
    );
}

#[test]
fn malformed_rules_are_refused_with_their_number() {
    assert_eq!(syntax(""), MapSyntax::NoRules);
    assert_eq!(syntax(" \n "), MapSyntax::NoRules);
    assert_eq!(
        syntax("nonsense"),
        rule_error(1, RuleSyntax::UnknownType("o".into()))
    );
    assert_eq!(
        syntax(":ok:all::: :TOMATO:all:::"),
        rule_error(2, RuleSyntax::UnknownType("TOMATO".into()))
    );
    assert_eq!(
        syntax(":prefix:everything:::"),
        rule_error(1, RuleSyntax::UnknownScope("everything".into()))
    );
    assert_eq!(
        syntax(":prefix:client:hi"),
        rule_error(1, RuleSyntax::Incomplete(':'))
    );
    assert_eq!(
        syntax(":ok:all::: /prefix/all//x."),
        rule_error(2, RuleSyntax::Incomplete('/'))
    );
    // A map type takes no scope: `:map:all:::` has a stray field.
    assert_eq!(syntax(":map:all:::"), rule_error(1, RuleSyntax::MapNotLast));
}

#[test]
fn characters_keep_their_low_byte_as_in_virtiofsd() {
    // U+00E9 is byte 0xE9 to virtiofsd, not UTF-8.
    assert_eq!(rules(":ok:all:é:: :ok:all:::")[0].key, [0xe9]);
    assert_eq!(
        syntax(":prefix:all:\u{100}::"),
        rule_error(1, RuleSyntax::NulByte('\u{100}'))
    );
    // A non-ASCII separator is a character like another.
    assert_eq!(rules("éokéallééé"), rules(":ok:all:::"));
}

#[test]
fn a_map_must_match_the_guest_name_security_capability() {
    for text in [
        ":ok:client:user.::",
        ":ok:server:::",
        ":prefix:client:trusted.:user.virtiofs.:",
        ":ok:all:é::",
    ] {
        assert_eq!(syntax(text), MapSyntax::NoCapabilityRule, "{text}");
    }
    for text in [":bad:client:security.::", ":prefix:all::user.x.:"] {
        parse_map(text).unwrap();
    }
}

#[test]
fn errors_name_the_flag_and_value_once_and_warn_of_unmatched_names() {
    let err = parse("--xattrmap", Some(":bogus:all:::")).unwrap_err();
    assert_eq!(
        crate::error_chain(&err),
        "--xattrmap \":bogus:all:::\": rule 1: type \"bogus\" is none of prefix, ok, bad, unsupported, map"
    );
    assert_eq!(parse("--xattrmap", None), Ok(None));
    let map = parse("-o xattrmap", Some(":map::user.virtiofs.:"))
        .unwrap()
        .unwrap();
    assert!(warnings(&map).is_empty());
    let open_ended = parse_map(":prefix:all::user.x.:").unwrap();
    let warned = warnings(&open_ended);
    assert_eq!(warned.len(), 1);
    assert!(warned[0].contains("host name"), "{warned:?}");
    let client_open = parse_map(":ok:client:security.:: :ok:server:::").unwrap();
    assert!(warnings(&client_open)[0].contains("guest name"));
}

#[test]
fn the_flag_and_the_option_as_virtiofsd() {
    let config = |extra: &[&str]| {
        let base = ["daxfsd", "--socket-path", "s", "--shared-dir", "d"];
        crate::config::Config::try_parse_from(base.iter().chain(extra))
    };
    let refusal = |extra: &[&str]| crate::error_chain(&config(extra).unwrap_err());
    let mapped = config(&["--xattrmap=:map::user.virtiofs.:", "-o", "no_xattr"]).unwrap();
    assert!(mapped.xattr, "--xattrmap implies --xattr, whatever -o says");
    assert_eq!(mapped.xattrmap, parse_map(":map::user.virtiofs.:").ok());
    assert!(!config(&[]).unwrap().xattr);
    let from_o = config(&["-o", "xattrmap=:ok:all:::"]).unwrap();
    assert_eq!(from_o.xattrmap, parse_map(":ok:all:::").ok());
    // -o comes after the flags and replaces the flag's map.
    let both = config(&["--xattrmap=:map::a.:", "-o", "xattrmap=:ok:all:::"]).unwrap();
    assert_eq!(both.xattrmap, parse_map(":ok:all:::").ok());
    let err = refusal(&["--xattrmap=nonsense", "-o", "xattrmap=:ok:all:::"]);
    assert!(err.starts_with("--xattrmap \"nonsense\": rule 1"), "{err}");
    let err = refusal(&["-o", "xattrmap=:ok:all:"]);
    assert!(err.starts_with("-o xattrmap \":ok:all:\": rule 1"), "{err}");
    let warned = config(&["--xattrmap=:prefix:all::user.x.:"]).unwrap();
    assert_eq!(
        warned.warnings,
        warnings(&parse_map(":prefix:all::user.x.:").unwrap())
    );
}
