//! How `print` writes a table, following the captures in spec §1.4–1.6. Pure: no I/O.
//!
//! - `print detail`: a `Flags:` header listing only the flags present (groups joined by `; `,
//!   flags of one group by `, `), then per item the index (its position in the whole table,
//!   right-aligned), one column per header group, the `;;; comment` line when there is one,
//!   and `key=value` tokens wrapped at the exec width with continuation lines indented under
//!   the first property; a token longer than a whole line is split mid-token. Items are
//!   separated by a line holding one space.
//! - `print terse`: one line per item, raw values, no quoting or grouping (INFERRED).
//! - `print` (table): `Columns:` header; columns that do not fit the width are dropped.
//! - as-value rows serialise to JSON with typed values (`:serialize to=json`).

use crate::model::{FLAG_GROUPS, Flag, PropValue};

/// One item of a print.
#[derive(Debug, Clone)]
pub struct Row {
    /// Position of the item in the whole table (what RouterOS prints as its number).
    pub index: usize,
    pub flags: Vec<char>,
    pub comment: String,
    pub props: Vec<(String, PropValue)>,
}

/// Layout knobs.
#[derive(Debug, Clone, Copy)]
pub struct Layout {
    /// Wrap width; 0 = never wrap.
    pub width: usize,
    /// Print the `Flags:` legend of every flag when nothing matched (INFERRED default).
    pub header_on_empty: bool,
}

fn groups_present(rows: &[Row]) -> Vec<Vec<Flag>> {
    FLAG_GROUPS
        .iter()
        .map(|g| {
            g.iter().copied().filter(|f| rows.iter().any(|r| r.flags.contains(&f.letter))).collect()
        })
        .filter(|g: &Vec<Flag>| !g.is_empty())
        .collect()
}

/// `Flags: B - BLOCK-DEVICE; M - MOUNTED, S - SWAP-ENABLED`, wrapped between groups onto lines
/// indented under the first flag.
fn flags_header(groups: &[Vec<Flag>], width: usize) -> Vec<String> {
    const LEAD: &str = "Flags: ";
    let texts: Vec<String> = groups
        .iter()
        .map(|g| {
            g.iter().map(|f| format!("{} - {}", f.letter, f.header)).collect::<Vec<_>>().join(", ")
        })
        .collect();
    let mut lines = vec![LEAD.to_string()];
    for (i, text) in texts.iter().enumerate() {
        let line = lines.last_mut().expect("one line at least");
        let sep = if i == 0 { "" } else { "; " };
        if i > 0 && width > 0 && line.len() + sep.len() + text.len() > width {
            lines.push(format!("{}{}", " ".repeat(LEAD.len()), text));
        } else {
            line.push_str(sep);
            line.push_str(text);
        }
    }
    lines
}

/// Greedy word wrap; a token longer than a whole line starts on the current line and is cut
/// at the width (the mid-token split seen on real hardware in exec mode).
fn wrap(prefix: String, indent: usize, tokens: &[String], width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = prefix;
    let mut empty = true; // no token on the current line yet
    let pad = " ".repeat(indent);
    for token in tokens {
        let sep = usize::from(!empty);
        if width == 0 || line.chars().count() + sep + token.chars().count() <= width {
            if !empty {
                line.push(' ');
            }
            line.push_str(token);
            empty = false;
            continue;
        }
        if indent + token.chars().count() <= width {
            lines.push(std::mem::replace(&mut line, format!("{pad}{token}")));
            empty = false;
            continue;
        }
        // Longer than a line: fill the current line, continue on fresh lines. A line with no
        // room left after the separator is ended first (never a trailing space past the width).
        if !empty {
            if line.chars().count() + 1 >= width {
                lines.push(std::mem::replace(&mut line, pad.clone()));
            } else {
                line.push(' ');
            }
        }
        for c in token.chars() {
            if line.chars().count() >= width {
                lines.push(std::mem::replace(&mut line, pad.clone()));
            }
            line.push(c);
        }
        empty = false;
    }
    lines.push(line);
    lines
}

fn flag_columns(groups: &[Vec<Flag>], flags: &[char]) -> String {
    groups
        .iter()
        .map(|g| g.iter().find(|f| flags.contains(&f.letter)).map_or(' ', |f| f.letter))
        .collect()
}

/// `print detail`.
pub fn detail(rows: &[Row], layout: Layout) -> String {
    let mut out = Vec::new();
    let groups = if rows.is_empty() && layout.header_on_empty {
        FLAG_GROUPS.iter().map(|g| g.to_vec()).collect()
    } else {
        groups_present(rows)
    };
    if !groups.is_empty() {
        out.extend(flags_header(&groups, layout.width));
    }
    let number_width = rows.iter().map(|r| r.index.to_string().len()).max().unwrap_or(1);
    for (i, row) in rows.iter().enumerate() {
        if i > 0 {
            out.push(" ".to_string());
        }
        let mut lead = format!("{:>number_width$} ", row.index);
        if !groups.is_empty() {
            lead.push_str(&flag_columns(&groups, &row.flags));
            lead.push(' ');
        }
        let indent = lead.len();
        let tokens: Vec<String> =
            row.props.iter().map(|(k, v)| format!("{k}={}", v.display())).collect();
        if row.comment.is_empty() {
            out.extend(wrap(lead, indent, &tokens, layout.width));
        } else {
            out.push(format!("{lead};;; {}", row.comment));
            out.extend(wrap(" ".repeat(indent), indent, &tokens, layout.width));
        }
    }
    join(out)
}

/// `print terse`: `N FLAGS key=raw ...` on one line per item.
pub fn terse(rows: &[Row]) -> String {
    let groups = groups_present(rows);
    let lines = rows.iter().map(|row| {
        let mut line = format!("{:>2} {}", row.index, flag_columns(&groups, &row.flags));
        for (k, v) in &row.props {
            line.push(' ');
            line.push_str(&format!("{k}={}", v.raw()));
        }
        if !row.comment.is_empty() {
            line.push_str(&format!(" comment={}", row.comment));
        }
        line
    });
    join(lines.collect())
}

/// Plain `print`: a table of `columns` (property names), dropping trailing columns that do
/// not fit the width (as RouterOS does in exec mode).
pub fn table(rows: &[Row], columns: &[&str], width: usize) -> String {
    let groups = groups_present(rows);
    let cell = |row: &Row, col: &str| {
        row.props
            .iter()
            .find(|(k, _)| k == col)
            .map(|(_, v)| v.display().trim_matches('"').to_string())
    };
    let mut kept: Vec<(&str, usize)> = Vec::new();
    let lead = rows.iter().map(|r| r.index.to_string().len()).max().unwrap_or(1) + 1 + groups.len();
    let mut used = lead;
    for col in columns {
        let w = rows.iter().filter_map(|r| cell(r, col)).map(|c| c.len()).chain([col.len()]).max();
        let w = w.unwrap_or(col.len());
        if width > 0 && used + 1 + w > width {
            break;
        }
        used += 1 + w;
        kept.push((col, w));
    }
    let mut out = Vec::new();
    if !groups.is_empty() {
        out.extend(flags_header(&groups, width));
    }
    let names: Vec<String> = kept.iter().map(|(c, _)| c.to_uppercase()).collect();
    out.push(format!("Columns: {}", names.join(", ")));
    let mut head = format!("{:<lead$}", "#");
    for (c, w) in &kept {
        head.push_str(&format!(" {:<w$}", c.to_uppercase()));
    }
    out.push(head.trim_end().to_string());
    let number_width = lead - 1 - groups.len();
    for row in rows {
        let mut line =
            format!("{:>number_width$} {}", row.index, flag_columns(&groups, &row.flags));
        for (c, w) in &kept {
            line.push_str(&format!(" {:<w$}", cell(row, c).unwrap_or_default()));
        }
        out.push(line.trim_end().to_string());
    }
    join(out)
}

/// An as-value row as a JSON object, values typed (numbers, booleans, strings).
pub fn json_row(props: &[(String, PropValue)]) -> serde_json::Value {
    let map = props
        .iter()
        .map(|(k, v)| {
            let value = match v {
                PropValue::Bool(b) => serde_json::Value::Bool(*b),
                PropValue::Int(n) | PropValue::Size(n) | PropValue::Percent(n) => (*n).into(),
                PropValue::Str(s) | PropValue::Bare(s) => s.clone().into(),
            };
            (k.clone(), value)
        })
        .collect();
    serde_json::Value::Object(map)
}

fn join(lines: Vec<String>) -> String {
    let mut s = lines.join("\n");
    if !s.is_empty() {
        s.push('\n');
    }
    s
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
