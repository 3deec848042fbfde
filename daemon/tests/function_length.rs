//! No function of `daemon/src` is longer than [`MAX_LINES`] lines.
//!
//! The sources are rustfmt-formatted, so a function's body ends at the
//! first line that is its indentation followed by `}`; a function is
//! counted from its `fn` line to that line, both included. Declarations
//! without a body (trait methods) are skipped.

mod common;

use std::path::Path;

use common::source_files;

/// The longest function allowed.
const MAX_LINES: usize = 80;

/// The name of the function a line starts, with the line's indentation.
fn function_start(line: &str) -> Option<(&str, &str)> {
    let trimmed = line.trim_start();
    let indent = &line[..line.len() - trimmed.len()];
    let mut rest = trimmed;
    for qualifier in [
        "pub(crate) ",
        "pub(super) ",
        "pub ",
        "const ",
        "unsafe ",
        "async ",
    ] {
        rest = rest.strip_prefix(qualifier).unwrap_or(rest);
    }
    let rest = rest.strip_prefix("fn ")?;
    let end = rest
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    Some((indent, &rest[..end]))
}

/// Every function of `source` longer than `max`: (name, first line, lines).
fn long_functions(source: &str, max: usize) -> Vec<(String, usize, usize)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut found = Vec::new();
    for (start, line) in lines.iter().enumerate() {
        let Some((indent, name)) = function_start(line) else {
            continue;
        };
        // The signature ends at the body's `{` or at a `;` (no body).
        let Some(open) = (start..lines.len()).find(|&i| {
            let l = lines[i].trim_end();
            l.ends_with('{') || l.ends_with(';') || l.ends_with('}')
        }) else {
            continue;
        };
        if lines[open].trim_end().ends_with(';') {
            continue;
        }
        let close = format!("{indent}}}");
        let end = if lines[open].trim_end().ends_with('}') {
            Some(open)
        } else {
            (open + 1..lines.len()).find(|&i| lines[i] == close)
        };
        if let Some(end) = end {
            let length = end - start + 1;
            if length > max {
                found.push((name.to_owned(), start + 1, length));
            }
        }
    }
    found
}

#[test]
fn no_function_in_daemon_src_is_too_long() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    assert!(files.len() > 20, "found only {} source files", files.len());
    let mut too_long = Vec::new();
    for file in &files {
        let source = std::fs::read_to_string(file).expect("read a source file");
        for (name, line, length) in long_functions(&source, MAX_LINES) {
            let relative = file.strip_prefix(&src).unwrap_or(file);
            too_long.push(format!(
                "{}:{line} fn {name}: {length} lines",
                relative.display()
            ));
        }
    }
    assert!(
        too_long.is_empty(),
        "functions over {MAX_LINES} lines (split them):\n{}",
        too_long.join("\n")
    );
}

#[test]
fn the_scanner_finds_a_long_function_and_skips_declarations() {
    let body = "    let x = 1;\n".repeat(10);
    let source = format!(
        "trait T {{\n    fn declared(&self) -> u32;\n}}\n\
         pub(super) fn long(a: u32) -> u32 {{\n{body}    a\n}}\n\
         fn short() {{}}\n\
         impl T for () {{\n    fn declared(&self) -> u32 {{\n{body}        1\n    }}\n}}\n"
    );
    let found = long_functions(&source, 5);
    assert_eq!(
        found,
        vec![("long".to_owned(), 4, 13), ("declared".to_owned(), 19, 13)]
    );
    assert!(long_functions(&source, 13).is_empty());
}
