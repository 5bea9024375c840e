//! How the operator tools print: aligned columns for people, JSON for scripts. Pure.

use serde::Serialize;

use super::Output;

/// Aligned columns: a header row, then the rows; `-` for an empty cell.
pub fn render(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count().max(1));
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (i, c) in cells.iter().enumerate() {
            let c = if c.is_empty() { "-" } else { c };
            if i + 1 == cells.len() {
                l.push_str(c);
            } else {
                l.push_str(&format!("{c:<w$}  ", w = widths[i]));
            }
        }
        l.trim_end().to_string() + "\n"
    };
    let mut out = line(headers.to_vec());
    for row in rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// The document for `-o json`, or the table.
pub fn print<T: Serialize>(
    output: Output,
    items: &T,
    table: impl FnOnce() -> String,
) -> Result<(), String> {
    match output {
        Output::Json => {
            let text = serde_json::to_string_pretty(items).map_err(|e| e.to_string())?;
            println!("{text}");
        }
        Output::Table => print!("{}", table()),
    }
    Ok(())
}

/// Bytes in the largest binary unit that keeps one decimal meaningful: `10.0 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[unit]) }
}

/// Seconds as the two largest units: `3d4h`, `2h5m`, `40s`; negative as `-…`.
pub fn age(secs: i64) -> String {
    if secs < 0 {
        return format!("-{}", age(-secs));
    }
    let (d, h, m, s) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m{s}s"),
        (0, _, _) => format!("{h}h{m}m"),
        _ => format!("{d}d{h}h"),
    }
}

pub fn opt(v: Option<impl ToString>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_align_and_empty_cells_show_a_dash() {
        let out = render(&["A", "LONGER"], &[vec!["wide cell".into(), "".into()]]);
        assert_eq!(out, "A          LONGER\nwide cell  -\n");
    }

    #[test]
    fn sizes_and_ages() {
        assert_eq!(size(512), "512 B");
        assert_eq!(size(10 << 30), "10.0 GiB");
        assert_eq!(size(1536 << 20), "1.5 GiB");
        assert_eq!(age(40), "40s");
        assert_eq!(age(125), "2m5s");
        assert_eq!(age(7260), "2h1m");
        assert_eq!(age(3 * 86_400 + 4 * 3600), "3d4h");
        assert_eq!(age(-90), "-1m30s");
    }
}
