//! Reading (and writing) the JSON-lines traces of `daxfsd --dax-trace`: the `setup` and
//! `remove` events a replay needs; every other event (`vmm_map`, `vmm_unmap`, `repair`,
//! `reset`, ...) is counted and skipped. Only flat objects of numbers, strings, booleans
//! and nulls occur in a trace, so a small parser does (the workspace has no JSON crate).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Why a trace could not be read.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// The file could not be read.
    #[error("cannot read the trace {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// A line is not a flat JSON object.
    #[error("trace line {line}: {message}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A field the event needs is missing or has the wrong type.
    #[error("trace line {line}: {ev} event without a valid \"{field}\"")]
    Field {
        /// 1-based line number.
        line: usize,
        /// The event's kind.
        ev: String,
        /// The field.
        field: &'static str,
    },
}

/// One FUSE_SETUPMAPPING as traced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SetupEvent {
    /// 1-based line of the trace (0: not read from a file).
    pub line: usize,
    /// The request's unique id, if traced.
    pub unique: Option<u64>,
    /// The guest's nodeid.
    pub nodeid: u64,
    /// File offset.
    pub foffset: u64,
    /// Length.
    pub len: u64,
    /// `SETUPMAPPING_FLAG_*`.
    pub flags: u64,
    /// Window offset.
    pub moffset: u64,
    /// Path of the file relative to the shared directory, if the daemon found it.
    pub path: Option<String>,
    /// Size of the file at map time, if known.
    pub size: Option<u64>,
    /// `"ok"` or an errno name.
    pub result: String,
}

/// One range of a FUSE_REMOVEMAPPING as traced; consecutive ranges with the same `unique`
/// were one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoveEvent {
    /// 1-based line of the trace (0: not read from a file).
    pub line: usize,
    /// The request's unique id, if traced.
    pub unique: Option<u64>,
    /// Window offset.
    pub moffset: u64,
    /// Length.
    pub len: u64,
    /// `"ok"`, an errno name, or `"skipped"` (after the range that ended the request).
    pub result: String,
}

/// An event a replay acts on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TraceEvent {
    /// SETUPMAPPING.
    Setup(SetupEvent),
    /// One REMOVEMAPPING range.
    Remove(RemoveEvent),
}

impl TraceEvent {
    /// The trace line it came from.
    pub fn line(&self) -> usize {
        match self {
            TraceEvent::Setup(e) => e.line,
            TraceEvent::Remove(e) => e.line,
        }
    }
}

/// The replayable part of a trace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// Setup and remove events, in trace order.
    pub events: Vec<TraceEvent>,
    /// Lines of other events (`vmm_map`, `repair`, ...), by kind, in first-seen order.
    pub other: Vec<(String, usize)>,
}

impl Trace {
    /// Reads a trace file.
    pub fn load(path: &Path) -> Result<Trace, TraceError> {
        let text = std::fs::read_to_string(path).map_err(|source| TraceError::Io {
            path: path.to_owned(),
            source,
        })?;
        Trace::parse(&text)
    }

    /// Parses JSON lines; blank lines are skipped.
    pub fn parse(text: &str) -> Result<Trace, TraceError> {
        let mut trace = Trace::default();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            if raw.trim().is_empty() {
                continue;
            }
            let fields =
                parse_object(raw).map_err(|message| TraceError::Syntax { line, message })?;
            let object = Object { line, fields };
            let ev = object.string("ev", "?")?;
            match ev.as_str() {
                "setup" => trace.events.push(TraceEvent::Setup(SetupEvent {
                    line,
                    unique: object.opt_u64("unique", &ev)?,
                    nodeid: object.u64("nodeid", &ev)?,
                    foffset: object.u64("foffset", &ev)?,
                    len: object.u64("len", &ev)?,
                    flags: object.u64("flags", &ev)?,
                    moffset: object.u64("moffset", &ev)?,
                    path: object.opt_string("path", &ev)?,
                    size: object.opt_u64("size", &ev)?,
                    result: object.string("result", &ev)?,
                })),
                "remove" => trace.events.push(TraceEvent::Remove(RemoveEvent {
                    line,
                    unique: object.opt_u64("unique", &ev)?,
                    moffset: object.u64("moffset", &ev)?,
                    len: object.u64("len", &ev)?,
                    result: object.string("result", &ev)?,
                })),
                _ => match trace.other.iter_mut().find(|(kind, _)| *kind == ev) {
                    Some((_, n)) => *n += 1,
                    None => trace.other.push((ev, 1)),
                },
            }
        }
        Ok(trace)
    }

    /// How many lines of event kind `ev` (not setup/remove) the trace held.
    pub fn other_count(&self, ev: &str) -> usize {
        self.other
            .iter()
            .find(|(kind, _)| kind == ev)
            .map_or(0, |(_, n)| *n)
    }

    /// The events as JSON lines, in the daemon's format (fields it would write that a
    /// replay does not need are left out).
    pub fn to_jsonl(&self) -> String {
        let mut out = String::new();
        for event in &self.events {
            match event {
                TraceEvent::Setup(e) => {
                    let _ = write!(
                        out,
                        "{{\"ev\":\"setup\",\"unique\":{},\"nodeid\":{},\"fh\":{},\"foffset\":{},\
                         \"len\":{},\"flags\":{},\"moffset\":{},\"path\":{},\"size\":{},\
                         \"result\":{}}}",
                        opt(e.unique),
                        e.nodeid,
                        u64::MAX,
                        e.foffset,
                        e.len,
                        e.flags,
                        e.moffset,
                        e.path.as_deref().map_or("null".to_string(), quote),
                        opt(e.size),
                        quote(&e.result)
                    );
                }
                TraceEvent::Remove(e) => {
                    let _ = write!(
                        out,
                        "{{\"ev\":\"remove\",\"unique\":{},\"moffset\":{},\"len\":{},\"result\":{}}}",
                        opt(e.unique),
                        e.moffset,
                        e.len,
                        quote(&e.result)
                    );
                }
            }
            out.push('\n');
        }
        out
    }

    /// The window size the events need: the end of the highest range, rounded up to 2 MiB
    /// (at least 2 MiB).
    pub fn window_needed(&self) -> u64 {
        const SLOT: u64 = 2 << 20;
        let end = self
            .events
            .iter()
            .map(|e| match e {
                TraceEvent::Setup(s) => s.moffset.saturating_add(s.len),
                TraceEvent::Remove(r) => r.moffset.saturating_add(r.len),
            })
            .max()
            .unwrap_or(0);
        end.max(1).div_ceil(SLOT).saturating_mul(SLOT)
    }
}

fn opt(v: Option<u64>) -> String {
    v.map_or("null".to_string(), |v| v.to_string())
}

/// `s` as a JSON string literal.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A field's value.
#[derive(Debug, Clone, PartialEq)]
enum Json {
    /// A non-negative integer.
    U64(u64),
    /// Any other number (kept as text; no event field needs one).
    OtherNumber(String),
    Str(String),
    Bool(bool),
    Null,
}

/// One parsed line.
struct Object {
    line: usize,
    fields: Vec<(String, Json)>,
}

impl Object {
    fn get(&self, field: &str) -> Option<&Json> {
        self.fields.iter().find(|(k, _)| k == field).map(|(_, v)| v)
    }

    fn bad(&self, ev: &str, field: &'static str) -> TraceError {
        TraceError::Field {
            line: self.line,
            ev: ev.to_string(),
            field,
        }
    }

    fn u64(&self, field: &'static str, ev: &str) -> Result<u64, TraceError> {
        match self.get(field) {
            Some(Json::U64(v)) => Ok(*v),
            _ => Err(self.bad(ev, field)),
        }
    }

    fn opt_u64(&self, field: &'static str, ev: &str) -> Result<Option<u64>, TraceError> {
        match self.get(field) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::U64(v)) => Ok(Some(*v)),
            Some(_) => Err(self.bad(ev, field)),
        }
    }

    fn string(&self, field: &'static str, ev: &str) -> Result<String, TraceError> {
        match self.get(field) {
            Some(Json::Str(s)) => Ok(s.clone()),
            _ => Err(self.bad(ev, field)),
        }
    }

    fn opt_string(&self, field: &'static str, ev: &str) -> Result<Option<String>, TraceError> {
        match self.get(field) {
            None | Some(Json::Null) => Ok(None),
            Some(Json::Str(s)) => Ok(Some(s.clone())),
            Some(_) => Err(self.bad(ev, field)),
        }
    }
}

/// Parses one flat JSON object.
fn parse_object(text: &str) -> Result<Vec<(String, Json)>, String> {
    let mut p = Parser {
        s: text.as_bytes(),
        at: 0,
    };
    p.skip_ws();
    p.expect(b'{')?;
    let mut fields = Vec::new();
    p.skip_ws();
    if p.peek() == Some(b'}') {
        p.at += 1;
    } else {
        loop {
            p.skip_ws();
            let key = p.string()?;
            p.skip_ws();
            p.expect(b':')?;
            p.skip_ws();
            let value = p.value()?;
            fields.push((key, value));
            p.skip_ws();
            match p.next() {
                Some(b',') => continue,
                Some(b'}') => break,
                _ => return Err(format!("expected ',' or '}}' at byte {}", p.at)),
            }
        }
    }
    p.skip_ws();
    if p.at != p.s.len() {
        return Err(format!("trailing characters at byte {}", p.at));
    }
    Ok(fields)
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek();
        self.at += 1;
        c
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\r' | b'\n')) {
            self.at += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Result<(), String> {
        if self.next() == Some(c) {
            Ok(())
        } else {
            Err(format!("expected '{}' at byte {}", c as char, self.at - 1))
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, String> {
        if self.s[self.at..].starts_with(word.as_bytes()) {
            self.at += word.len();
            Ok(value)
        } else {
            Err(format!("unexpected value at byte {}", self.at))
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        match self.peek() {
            Some(b'"') => self.string().map(Json::Str),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => {
                let start = self.at;
                while matches!(
                    self.peek(),
                    Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                ) {
                    self.at += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.at]).unwrap_or_default();
                Ok(text
                    .parse::<u64>()
                    .map_or_else(|_| Json::OtherNumber(text.to_string()), Json::U64))
            }
            _ => Err(format!(
                "unsupported value at byte {} (only numbers, strings, booleans and null)",
                self.at
            )),
        }
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .s
            .get(self.at..self.at + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| format!("bad \\u escape at byte {}", self.at))?;
        self.at += 4;
        Ok(digits)
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            match self.next() {
                None => return Err("unterminated string".to_string()),
                Some(b'"') => break,
                Some(b'\\') => {
                    let c = match self.next() {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            let mut code = self.hex4()?;
                            if (0xd800..0xdc00).contains(&code)
                                && self.s[self.at..].starts_with(b"\\u")
                            {
                                self.at += 2;
                                let low = self.hex4()?;
                                code = 0x10000
                                    + ((code - 0xd800) << 10)
                                    + (low.wrapping_sub(0xdc00) & 0x3ff);
                            }
                            char::from_u32(code).unwrap_or('\u{fffd}')
                        }
                        _ => return Err(format!("bad escape at byte {}", self.at - 1)),
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                }
                Some(c) => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|_| "string is not UTF-8".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn daemon_lines_parse_and_other_events_are_counted() {
        let text = concat!(
            "{\"ev\":\"setup\",\"unique\":5,\"nodeid\":2,\"fh\":18446744073709551615,",
            "\"foffset\":2097152,\"len\":2097152,\"flags\":3,\"moffset\":0,",
            "\"path\":\"dir/a \\\"b\\\" \\u00e9\\ud83d\\ude00\",\"size\":5000,",
            "\"result\":\"ok\",\"outcome\":\"mapped\"}\n",
            "\n",
            "{\"ev\":\"vmm_map\",\"moffset\":0,\"len\":4096,\"foffset\":0,\"writable\":true,",
            "\"placeholder\":false,\"dev\":1,\"ino\":2,\"result\":\"ok\"}\n",
            "{\"ev\":\"remove\",\"unique\":6,\"moffset\":0,\"len\":2097152,\"result\":\"ok\"}\n",
            "{\"ev\":\"setup\",\"nodeid\":3,\"foffset\":0,\"len\":4096,\"flags\":2,",
            "\"moffset\":4096,\"path\":null,\"size\":null,\"result\":\"EINVAL\",\"outcome\":null}\n",
        );
        let trace = Trace::parse(text).unwrap();
        assert_eq!(trace.events.len(), 3);
        let TraceEvent::Setup(first) = &trace.events[0] else {
            panic!("{trace:?}");
        };
        assert_eq!(first.line, 1);
        assert_eq!(first.path.as_deref(), Some("dir/a \"b\" é😀"));
        assert_eq!(
            (first.foffset, first.flags, first.size),
            (2 << 20, 3, Some(5000))
        );
        assert_eq!(trace.events[1].line(), 4);
        let TraceEvent::Setup(last) = &trace.events[2] else {
            panic!("{trace:?}");
        };
        assert_eq!(
            (last.unique, last.path.as_deref(), last.size),
            (None, None, None)
        );
        assert_eq!(last.result, "EINVAL");
        assert_eq!(trace.other_count("vmm_map"), 1);
        assert_eq!(trace.window_needed(), 2 << 20);
        // Written back and read again, the events are the same.
        let again = Trace::parse(&trace.to_jsonl()).unwrap();
        let strip = |t: &Trace| -> Vec<TraceEvent> {
            t.events
                .iter()
                .cloned()
                .map(|mut e| {
                    match &mut e {
                        TraceEvent::Setup(s) => s.line = 0,
                        TraceEvent::Remove(r) => r.line = 0,
                    }
                    e
                })
                .collect()
        };
        assert_eq!(strip(&again), strip(&trace));
    }

    #[test]
    fn bad_lines_name_their_line() {
        for (text, want) in [
            (
                "{\"ev\":\"remove\",\"moffset\":1}",
                "line 1: remove event without a valid \"len\"",
            ),
            ("\n{\"ev\":\"setup\"", "line 2: expected ',' or '}'"),
            ("{\"ev\":[1]}", "line 1: unsupported value"),
            (
                "{\"ev\":\"remove\",\"moffset\":-1,\"len\":1,\"result\":\"ok\"}",
                "\"moffset\"",
            ),
            ("{} x", "trailing characters"),
        ] {
            let err = Trace::parse(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }
}
