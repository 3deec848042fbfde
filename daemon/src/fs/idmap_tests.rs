use super::*;

const MAX: u32 = u32::MAX;

fn guest(guest: u32, host: u32, count: u32) -> Rule {
    Rule::Guest { guest, host, count }
}

fn host(host: u32, guest: u32, count: u32) -> Rule {
    Rule::Host { host, guest, count }
}

fn squash_guest(guest: u32, host: u32, count: u32) -> Rule {
    Rule::SquashGuest { guest, host, count }
}

fn squash_host(host: u32, guest: u32, count: u32) -> Rule {
    Rule::SquashHost { host, guest, count }
}

fn forbid(guest: u32, count: u32) -> Rule {
    Rule::ForbidGuest { guest, count }
}

fn map(guest: u32, host: u32, count: u32) -> Rule {
    Rule::Map { guest, host, count }
}

/// A rule, guest ids with their host ids (`None`: forbidden), and host ids
/// with their guest ids.
type Case<'a> = (Rule, &'a [(u32, Option<u32>)], &'a [(u32, u32)]);

fn check(cases: &[Case<'_>]) {
    for &(rule, to_host, to_guest) in cases {
        let m = IdMap::new(&[rule]).expect("a valid rule");
        for &(id, want) in to_host {
            assert_eq!(m.to_host(id), want, "{rule}: guest {id}");
        }
        for &(id, want) in to_guest {
            assert_eq!(m.to_guest(id), want, "{rule}: host {id}");
        }
    }
}

#[test]
fn no_rule_maps_every_id_to_itself() {
    let m = IdMap::default();
    assert!(m.is_identity());
    for id in [0, 1, 1000, MAX - 1, MAX] {
        assert_eq!(m.to_host(id), Some(id));
        assert_eq!(m.to_guest(id), id);
    }
    assert!(!IdMap::new(&[forbid(1, 1)]).unwrap().is_identity());
}

#[test]
fn each_type_translates_its_ranges_and_nothing_else() {
    let g2h = [
        (9, Some(9)),
        (10, Some(1000)),
        (14, Some(1004)),
        (15, Some(15)),
    ];
    let forbidden = [
        (999, Some(999)),
        (1000, None),
        (1009, None),
        (1010, Some(1010)),
    ];
    check(&[
        // guest: guest ids only; host 1000 is still guest 1000.
        (
            guest(10, 1000, 5),
            &g2h,
            &[(10, 10), (1000, 1000), (1004, 1004)],
        ),
        // host: host ids only.
        (
            host(1000, 0, 2),
            &[(0, Some(0)), (1000, Some(1000))],
            &[(999, 999), (1000, 0), (1001, 1), (1002, 1002)],
        ),
        // squash-guest: the range ends before the largest id, not in it.
        (
            squash_guest(0, 1000, MAX),
            &[(0, Some(1000)), (MAX - 1, Some(1000)), (MAX, Some(MAX))],
            &[(0, 0), (1000, 1000)],
        ),
        (
            squash_host(100, 7, 3),
            &[(100, Some(100)), (7, Some(7))],
            &[(99, 99), (100, 7), (102, 7), (103, 103)],
        ),
        (forbid(1000, 10), &forbidden, &[(1000, 1000), (1005, 1005)]),
        // map: both ways, and unmapped ids stay, so host 0 is guest 0 as
        // well: not a bijection.
        (
            map(0, 1000, 1),
            &[(0, Some(1000)), (1, Some(1)), (1000, Some(1000))],
            &[(1000, 0), (0, 0), (1001, 1001)],
        ),
    ]);
}

#[test]
fn rules_combine_across_directions_and_at_the_top() {
    let pair = [host(1000, 0, 1), squash_guest(0, 1000, MAX)];
    let m = IdMap::new(&pair).unwrap();
    assert_eq!((m.to_host(0), m.to_host(5)), (Some(1000), Some(1000)));
    assert_eq!((m.to_guest(1000), m.to_guest(0), m.to_guest(5)), (0, 0, 5));
    let top = IdMap::new(&[map(MAX - 10, MAX - 20, 10)]).unwrap();
    for (guest, want) in [
        (MAX - 11, MAX - 11),
        (MAX - 10, MAX - 20),
        (MAX - 1, MAX - 11),
        (MAX, MAX),
    ] {
        assert_eq!(top.to_host(guest), Some(want), "guest {guest}");
    }
    for (host, want) in [
        (MAX - 20, MAX - 10),
        (MAX - 11, MAX - 1),
        (MAX - 10, MAX - 10),
    ] {
        assert_eq!(top.to_guest(host), want, "host {host}");
    }
}

#[test]
fn overlapping_ranges_of_one_direction_are_refused() {
    let first = guest(10, 0, 10);
    for (later, refused) in [
        (forbid(19, 1), true),
        (forbid(5, 6), true),
        (forbid(0, 100), true),
        (forbid(20, 1), false),
        (forbid(5, 5), false),
        // The other direction: no overlap.
        (host(10, 0, 10), false),
        // `map` adds a guest range too.
        (map(15, 50, 1), true),
        // An empty range overlaps nothing.
        (forbid(15, 0), false),
    ] {
        let result = IdMap::new(&[first, later]);
        assert_eq!(result.is_err(), refused, "{later}: {result:?}");
        if let Err(e) = result {
            let direction = "guest-to-host";
            let want = IdMapError::Overlap {
                rule: later,
                direction,
                earlier: first,
            };
            assert_eq!(e, want);
            assert!(e.to_string().contains(&later.to_string()), "{e}");
        }
    }
    let e = IdMap::new(&[squash_host(0, 0, 100), map(1000, 50, 1)]).unwrap_err();
    assert!(e.to_string().contains("host-to-guest"), "{e}");
}

#[test]
fn ranges_passing_the_largest_id_are_refused() {
    for (rule, refused) in [
        (forbid(MAX, 1), true),
        (forbid(1, MAX), true),
        (forbid(0, MAX), false),
        (forbid(MAX, 0), false),
        (squash_guest(2, 0, MAX - 1), true),
        // A squash target is one id: no range to pass the end.
        (squash_host(0, MAX, 10), false),
        // A one-to-one target range must fit too.
        (guest(0, MAX - 5, 10), true),
        (host(MAX - 10, 0, 10), false),
        (map(0, MAX - 1, 2), true),
    ] {
        let result = IdMap::new(&[rule]);
        assert_eq!(result.is_err(), refused, "{rule}: {result:?}");
        if let Err(e) = result {
            assert!(matches!(e, IdMapError::Overflow { .. }), "{e}");
            assert!(e.to_string().starts_with(&rule.to_string()), "{e}");
        }
    }
}

#[test]
fn rules_print_as_written() {
    for (rule, text) in [
        (guest(1, 2, 3), "guest:1:2:3"),
        (host(1, 2, 3), "host:1:2:3"),
        (squash_guest(1, 2, 3), "squash-guest:1:2:3"),
        (squash_host(1, 2, 3), "squash-host:1:2:3"),
        (forbid(1, 3), "forbid-guest:1:3"),
        (map(1, 2, 3), "map:1:2:3"),
    ] {
        assert_eq!(rule.to_string(), text);
    }
}
