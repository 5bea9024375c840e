//! Parser of the human `print detail` format (spec §1.4–1.5), for firmware without
//! `:serialize`. Pure: no I/O; never panics on any input (property-tested).
//!
//! - The `Flags:` header (and its indented continuation lines) is skipped; flags are read
//!   from each entry's flag columns: the letters between the item number and the first
//!   property.
//! - An entry starts with its number; a `;;; comment` follows the flag columns. A line
//!   indented as deep as the entry's first property is a continuation, even if it starts with
//!   digits (the tail of a split token).
//! - Continuation lines are rejoined. A line filled to the wrap width ended inside a token
//!   (RouterOS splits tokens longer than a line) unless the next line starts with a known
//!   property name; any shorter line ended at a token boundary.
//! - Values: `"quoted"` with `\"` and `\\` escapes, or bare up to the next ` name=`, so
//!   grouped integers (`1 099 511 627 776`) and dates (`2024-11-25 13:14:28`) stay whole.

use serde_json::{Map, Value};

use crate::{
    error::{RosError, classify},
    ops::{Answer, Op, answer_from_rows},
};

/// The exec-mode wrap width assumed when no line is longer (spec §1.5: about 80).
pub const DEFAULT_WIDTH: usize = 80;

/// Property names of `/disk` and `/file` (spec §1.2, §1.3), used to tell a new token from the
/// tail of a split one.
const KNOWN: &[&str] = &[
    "type",
    "slot",
    "slot-default",
    "parent",
    "fs-label",
    "fs-uuid",
    "fs",
    "model",
    "serial",
    "fw-version",
    "size",
    "free",
    "total-inodes",
    "free-inodes",
    "use",
    "mount-point",
    "mount-filesystem",
    "mount-read-only",
    "compress",
    "sector-size",
    "interface",
    "interface-speed",
    "raid-type",
    "raid-device-count",
    "raid-max-component-size",
    "raid-chunk-size",
    "raid-master",
    "raid-role",
    "raid-member-failed",
    "raid-member-state",
    "state",
    "raid-uuid",
    "nvme-tcp-export",
    "nvme-tcp-server-port",
    "nvme-tcp-server-nqn",
    "nvme-tcp-server-allow-host-name",
    "nvme-tcp-server-secret",
    "iscsi-export",
    "nfs-sharing",
    "smb-sharing",
    "media-sharing",
    "media-interface",
    "swap",
    "file-path",
    "file-size",
    "file-offset",
    "comment",
    "disabled",
    "partition-number",
    "partition-offset",
    "partition-size",
    "last-seen",
    "name",
    "last-modified",
    "creation-time",
];

/// Flag letters as as-value boolean properties.
const FLAGS: &[(char, &str)] = &[
    ('X', "disabled"),
    ('A', "acquired"),
    ('E', "empty"),
    ('B', "block-device"),
    ('M', "mounted"),
    ('F', "formatting"),
    ('S', "swap-enabled"),
    ('f', "raid-member-failed"),
    ('r', "raid-member"),
    ('c', "encrypted"),
    ('g', "guid-partition-table"),
    ('p', "partition"),
    ('t', "nvme-tcp-export"),
    ('i', "iscsi-export"),
    ('s', "smb-sharing"),
    ('n', "nfs-sharing"),
    ('m', "media-sharing"),
];

/// `name=` at the start of `s` (a property-name shape), returning the name.
fn key_at(s: &str) -> Option<&str> {
    let end = s.find('=')?;
    let name = &s[..end];
    let ok = name.len() >= 2
        && name.starts_with(|c: char| c.is_ascii_lowercase() || c == '.')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    ok.then_some(name)
}

fn known_key_at(s: &str) -> bool {
    key_at(s).is_some_and(|k| KNOWN.contains(&k))
}

/// Whether `text` ends inside an unterminated double-quoted string.
fn inside_quote(text: &str) -> bool {
    let mut inside = false;
    let mut escaped = false;
    for c in text.chars() {
        match (escaped, c) {
            (true, _) => escaped = false,
            (false, '\\') if inside => escaped = true,
            (false, '"') => inside = !inside,
            _ => {}
        }
    }
    inside
}

/// An entry's first line: `N FLAGS rest` → (flags, rest). Up to four leading spaces (numbers
/// are right-aligned), flags are letters and spaces, rest starts with a property or `;;;`.
fn entry_start(line: &str) -> Option<(Vec<char>, &str)> {
    let trimmed = line.trim_start_matches(' ');
    if line.len() - trimmed.len() > 4 {
        return None;
    }
    let digits = trimmed.find(|c: char| !c.is_ascii_digit())?;
    if digits == 0 || !trimmed[digits..].starts_with(' ') {
        return None;
    }
    let after = &trimmed[digits + 1..];
    let start = (0..=after.len()).filter(|&i| after.is_char_boundary(i)).find(|&i| {
        let s = &after[i..];
        (i == 0 || after.as_bytes()[i - 1] == b' ') && (s.starts_with(";;;") || key_at(s).is_some())
    })?;
    let flags = &after[..start];
    if !flags.chars().all(|c| c == ' ' || c.is_ascii_alphabetic()) {
        return None;
    }
    Some((flags.chars().filter(|c| c.is_ascii_alphabetic()).collect(), &after[start..]))
}

/// Splits `name=value name="value" ...` into pairs.
fn tokens(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while let Some(name) = key_at(rest) {
        let name = name.to_string();
        rest = &rest[name.len() + 1..];
        let value;
        if let Some(body) = rest.strip_prefix('"') {
            let mut v = String::new();
            let mut chars = body.char_indices();
            let mut end = body.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, n)) = chars.next() {
                            v.push(n);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    _ => v.push(c),
                }
            }
            value = v;
            rest = body.get(end..).unwrap_or("");
        } else {
            // Bare: up to the next " name=".
            let mut end = rest.len();
            for (i, _) in rest.match_indices(' ') {
                if key_at(&rest[i + 1..]).is_some() {
                    end = i;
                    break;
                }
            }
            value = rest[..end].to_string();
            rest = &rest[end..];
        }
        out.push((name, value));
        rest = rest.trim_start();
    }
    out
}

/// One parsed entry: flags, comment, and properties as strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub flags: Vec<char>,
    pub comment: String,
    pub props: Vec<(String, String)>,
}

/// Parses `print detail` output into entries.
pub fn parse(output: &str) -> Vec<Entry> {
    let lines: Vec<&str> = output.lines().map(|l| l.trim_end_matches('\r')).collect();
    let width = lines.iter().map(|l| l.chars().count()).max().unwrap_or(0).max(DEFAULT_WIDTH);
    let mut entries = Vec::new();
    // (flags, comment, accumulated text, length of the last physical line)
    let mut current: Option<(Vec<char>, String, String, usize)> = None;
    // Where the current entry's properties start: continuation lines are indented this far,
    // and an entry's number is always left of it, so deeper lines never start an entry.
    let mut indent = usize::MAX;
    let mut in_header = false;
    for line in lines {
        if line.starts_with("Flags:") {
            in_header = true;
            continue;
        }
        if line.trim().is_empty() {
            in_header = false;
            continue;
        }
        let leading = line.len() - line.trim_start_matches(' ').len();
        if let Some((flags, rest)) = entry_start(line).filter(|_| leading < indent) {
            in_header = false;
            indent = line.len() - rest.len();
            if let Some((f, c, text, _)) = current.take() {
                entries.push(Entry { flags: f, comment: c, props: tokens(&text) });
            }
            let (comment, text) = match rest.strip_prefix(";;;") {
                Some(c) => (c.trim().to_string(), String::new()),
                None => (String::new(), rest.to_string()),
            };
            current = Some((flags, comment, text, line.chars().count()));
            continue;
        }
        if in_header {
            continue;
        }
        let Some((_, _, text, last_len)) = current.as_mut() else { continue };
        let piece = line.trim_start();
        let filled = *last_len >= width;
        let new_token = if inside_quote(text) { !filled } else { !filled || known_key_at(piece) };
        if new_token && !text.is_empty() {
            text.push(' ');
        }
        text.push_str(piece);
        *last_len = line.chars().count();
    }
    if let Some((f, c, text, _)) = current {
        entries.push(Entry { flags: f, comment: c, props: tokens(&text) });
    }
    entries
}

/// An entry as an as-value object (string values, flags as booleans).
pub fn to_object(entry: &Entry) -> Map<String, Value> {
    let mut map = Map::new();
    for (letter, name) in FLAGS {
        map.insert((*name).to_string(), Value::String(entry.flags.contains(letter).to_string()));
    }
    for (k, v) in &entry.props {
        map.insert(k.clone(), Value::String(v.clone()));
    }
    map.insert("comment".into(), Value::String(entry.comment.clone()));
    map
}

/// `name: value` lines of a singleton print (`/system resource print`).
fn singleton(output: &str) -> Map<String, Value> {
    output
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.trim().to_string(), Value::String(v.trim().to_string())))
        .collect()
}

/// Parses the detail-format output of an op's SSH line.
pub fn answer(op: &Op, output: &str) -> Result<Answer, RosError> {
    let first = output.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("");
    if let Op::System = op {
        let map = singleton(output);
        if !map.contains_key("version") {
            return Err(classify(output));
        }
        return answer_from_rows(op, vec![map.clone()], Some(map));
    }
    if let Op::Clock = op {
        let map = singleton(output);
        if !map.contains_key("time") {
            return Err(classify(output));
        }
        return answer_from_rows(op, vec![map], None);
    }
    let is_print = first.is_empty() || first.starts_with("Flags:") || entry_start(first).is_some();
    if !is_print {
        return Err(classify(output));
    }
    let rows = parse(output).iter().map(to_object).collect();
    answer_from_rows(op, rows, None)
}

#[cfg(test)]
#[path = "detail_tests.rs"]
mod tests;
