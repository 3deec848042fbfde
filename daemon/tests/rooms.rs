//! The daemon's rooms do not import each other in a cycle.
//!
//! A room is a top-level module of `daemon/src` (a file or a directory),
//! except `transport`, whose two transports are rooms of their own. Every
//! `crate::ROOM` path in a room's files (in `use` lines and inline, grouped
//! `crate::{a, b}` imports included) is an edge; the test fails on a cycle
//! and prints it. It also keeps guest memory (vm-memory) out of the rooms
//! that must not see it: the filesystem and the dispatcher.

use std::collections::{BTreeMap, BTreeSet};
mod common;

use std::path::Path;

use common::source_files;

/// Rooms that must never name vm-memory.
const NO_GUEST_MEMORY: [&str; 2] = ["fs", "dispatch"];

/// The room of a file, from its path below `src`; `None` for the crate
/// root (`lib.rs`, `main.rs`).
fn room_of(relative: &Path) -> Option<String> {
    let parts: Vec<String> = relative
        .components()
        .map(|c| {
            c.as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_owned()
        })
        .collect();
    match parts.as_slice() {
        [only] if only == "lib" || only == "main" => None,
        [transport, inner, ..] if transport == "transport" && inner != "mod" => {
            Some(format!("transport::{inner}"))
        }
        [first, ..] => Some(first.clone()),
        [] => None,
    }
}

/// The room a path after `crate::` names: `transport::X` for a transport,
/// else its first segment.
fn room_named(path: &str) -> String {
    let mut segments = path.split("::").map(str::trim);
    let first = segments.next().unwrap_or_default().to_owned();
    if first == "transport" {
        if let Some(inner) = segments.next().filter(|s| !s.is_empty() && *s != "{") {
            return format!("transport::{inner}");
        }
    }
    first
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// Every path a `crate::` in `text` names (a grouped import gives one path
/// per item of its outer group).
fn crate_paths(text: &str) -> Vec<String> {
    let mut paths = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at].chars().next_back().is_some_and(is_ident);
        rest = &rest[at + "crate::".len()..];
        if preceded_by_ident {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        paths.push(std::mem::take(&mut item));
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            paths.push(item);
        } else {
            let end = rest
                .find(|c: char| !(is_ident(c) || c == ':'))
                .unwrap_or(rest.len());
            paths.push(rest[..end].to_owned());
        }
    }
    paths
        .into_iter()
        .map(|p| p.trim().to_owned())
        .filter(|p| !p.is_empty())
        .collect()
}

/// A cycle in `graph`, as the rooms along it, if there is one.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        room: &str, graph: &BTreeMap<String, BTreeSet<String>>, stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|r| r == room) {
            let mut cycle = stack[at..].to_vec();
            cycle.push(room.to_owned());
            return Some(cycle);
        }
        if done.contains(room) {
            return None;
        }
        stack.push(room.to_owned());
        for next in graph.get(room).into_iter().flatten() {
            if let Some(cycle) = visit(next, graph, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(room.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|room| visit(room, graph, &mut Vec::new(), &mut done))
}

#[test]
fn rooms_import_each_other_without_cycles() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in &files {
        let relative = file.strip_prefix(&src).expect("below src");
        let Some(room) = room_of(relative) else {
            continue;
        };
        let text = std::fs::read_to_string(file).expect("read a source file");
        if NO_GUEST_MEMORY.contains(&room.as_str()) {
            assert!(
                !text.contains("vm_memory"),
                "{} ({room}) names vm_memory: guest memory belongs to the transport",
                relative.display()
            );
        }
        let edges = graph.entry(room.clone()).or_default();
        for path in crate_paths(&text) {
            let target = room_named(&path);
            if target != room {
                edges.insert(target);
            }
        }
    }
    // Items of the crate root (`crate::error_chain`) are not rooms.
    let rooms: BTreeSet<String> = graph.keys().cloned().collect();
    for edges in graph.values_mut() {
        edges.retain(|target| rooms.contains(target));
    }
    assert!(
        rooms.len() >= 10 && rooms.contains("fs") && rooms.contains("transport::vhost_user"),
        "rooms found: {rooms:?}"
    );
    if let Some(cycle) = find_cycle(&graph) {
        panic!(
            "rooms import each other in a cycle: {}\nedges: {graph:#?}",
            cycle.join(" -> ")
        );
    }
}

#[test]
fn the_check_finds_grouped_imports_and_cycles() {
    let paths = crate_paths(
        "use crate::fs::{Context, FileSystem};\nuse crate::{dax, session::Session};\n\
         let x = crate::transport::vhost_user::FsDevice::new(); mycrate::not_this();",
    );
    let rooms: Vec<String> = paths.iter().map(|p| room_named(p)).collect();
    assert_eq!(rooms, ["fs", "dax", "session", "transport::vhost_user"]);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    graph.entry("a".into()).or_default().insert("b".into());
    graph.entry("b".into()).or_default().insert("c".into());
    assert_eq!(find_cycle(&graph), None);
    graph.entry("c".into()).or_default().insert("a".into());
    assert_eq!(
        find_cycle(&graph),
        Some(vec!["a".into(), "b".into(), "c".into(), "a".into()])
    );
    assert_eq!(
        room_of(Path::new("transport/vhost_user/guest_io.rs")).as_deref(),
        Some("transport::vhost_user")
    );
    assert_eq!(
        room_of(Path::new("transport/mod.rs")).as_deref(),
        Some("transport")
    );
    assert_eq!(
        room_of(Path::new("fs/passthrough/mod.rs")).as_deref(),
        Some("fs")
    );
    assert_eq!(room_of(Path::new("lib.rs")), None);
}
