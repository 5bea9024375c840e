//! How RouterOS writes values, both ways. Pure: no I/O. Facts from `spec/routeros.md` §1.5:
//! integers of five digits or more grouped in thousands with spaces (`size=1 099 511 627 776`,
//! but `nvme-tcp-server-port=4420`), `file-size` lossy with
//! one decimal in the largest binary unit that keeps the number ≥ 10 (`1024.0GiB`), booleans
//! `yes`/`no`, and `file-size` arguments in binary units (`1G` = 1 GiB) or plain bytes.

/// `1099511627776` → `1 099 511 627 776`. Numbers below 10 000 are not grouped: the real
/// capture prints `nvme-tcp-server-port=4420` next to `size=1 099 511 627 776` (INFERRED rule:
/// five digits or more are grouped).
pub fn group_digits(n: u64) -> String {
    let digits = n.to_string();
    if n < 10_000 {
        return digits;
    }
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// Inverse of [`group_digits`]; also accepts ungrouped digits. `None` for anything else.
pub fn parse_grouped(s: &str) -> Option<u64> {
    let groups: Vec<&str> = s.split(' ').collect();
    let well_formed = groups.iter().enumerate().all(|(i, g)| {
        !g.is_empty()
            && g.chars().all(|c| c.is_ascii_digit())
            && (groups.len() == 1 || if i == 0 { g.len() <= 3 } else { g.len() == 3 })
    });
    if !well_formed {
        return None;
    }
    groups.concat().parse().ok()
}

const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/// The lossy human form of a byte count, as RouterOS prints `file-size`: one decimal, in the
/// largest binary unit in which the number is at least 10 (so it lies in [10, 10240)).
/// Below 10 KiB the value is printed in bytes without decimals (INFERRED: no capture shows it).
pub fn human_size(bytes: u64) -> String {
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes as f64 / 1024f64.powi(unit as i32 + 1) >= 10.0 {
        unit += 1;
    }
    if unit == 0 {
        return format!("{bytes}B");
    }
    format!("{:.1}{}", bytes as f64 / 1024f64.powi(unit as i32), UNITS[unit])
}

/// Parses a `file-size` argument: plain bytes (`10737418240`) or a number with a binary unit
/// suffix (`10G`, `10GiB`, `512M`, `1T`, `4k`); `G` means GiB for `file-size` (VERIFIED).
pub fn parse_size_arg(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {s:?}: use bytes or a number with K, M, G, T or P");
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let number: u64 = number.parse().map_err(|_| bad())?;
    let shift = match unit.trim_end_matches("iB").trim_end_matches('B') {
        "" => 0,
        "k" | "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        _ => return Err(bad()),
    };
    number.checked_mul(1u64 << shift).ok_or_else(bad)
}

pub fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// `yes`/`no`/`true`/`false` as RouterOS accepts them for boolean arguments.
pub fn parse_bool(s: &str) -> Option<bool> {
    match s {
        "yes" | "true" => Some(true),
        "no" | "false" => Some(false),
        _ => None,
    }
}

/// `2025-11-11 16:47:07` (7.16+) or `nov/11/2025 16:47:07` (older) as seconds since the
/// epoch, read as UTC.
pub fn file_time(s: &str) -> Option<i64> {
    let (date, time) = s.trim().split_once(' ')?;
    let (y, m, d): (i64, i64, i64) = if let Some((mon, rest)) = date.split_once('/') {
        const MONTHS: [&str; 12] =
            ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
        let m = MONTHS.iter().position(|x| x.eq_ignore_ascii_case(mon))? as i64 + 1;
        let (d, y) = rest.split_once('/')?;
        (y.parse().ok()?, m, d.parse().ok()?)
    } else {
        let mut p = date.split('-');
        (p.next()?.parse().ok()?, p.next()?.parse().ok()?, p.next()?.parse().ok()?)
    };
    let mut t = time.split(':');
    let (hh, mm, ss): (i64, i64, i64) =
        (t.next()?.parse().ok()?, t.next()?.parse().ok()?, t.next()?.parse().ok()?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn grouping_as_captured() {
        assert_eq!(group_digits(1_099_511_627_776), "1 099 511 627 776");
        assert_eq!(group_digits(16_003_143_565_312), "16 003 143 565 312");
        assert_eq!(group_digits(512), "512");
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(4420), "4420");
        assert_eq!(group_digits(12_345), "12 345");
        assert_eq!(parse_grouped("1 099 511 627 776"), Some(1_099_511_627_776));
        assert_eq!(parse_grouped("12"), Some(12));
        for bad in ["1 0", "1  000", "", "1 0000", "12a", " 100"] {
            assert_eq!(parse_grouped(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn human_sizes_as_captured() {
        // Samples from real output (spec §1.5): the number lies in [10, 10240).
        assert_eq!(human_size(1_099_511_627_776), "1024.0GiB");
        assert_eq!(human_size(50 * (1 << 30)), "50.0GiB");
        assert_eq!(human_size(1_970_278), "1924.1KiB");
        assert_eq!(human_size(11_639_194), "11.1MiB");
        assert_eq!(human_size(10 * (1 << 40)), "10.0TiB");
        assert_eq!(human_size(9 * (1 << 30)), "9216.0MiB");
        assert_eq!(human_size(4096), "4096B");
    }

    #[test]
    fn size_arguments() {
        assert_eq!(parse_size_arg("1T"), Ok(1 << 40));
        assert_eq!(parse_size_arg("10G"), Ok(10 << 30));
        assert_eq!(parse_size_arg("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size_arg("4k"), Ok(4096));
        assert_eq!(parse_size_arg("10737418240"), Ok(10 << 30));
        for bad in ["", "G", "1X", "1.5G", "-1", "99999999999P"] {
            assert!(parse_size_arg(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn grouping_round_trips(n: u64) {
            prop_assert_eq!(parse_grouped(&group_digits(n)), Some(n));
        }

        #[test]
        fn human_size_is_within_half_a_tenth_of_the_unit(n in 10_240u64..u64::MAX / 2) {
            let h = human_size(n);
            let split = h.find(|c: char| c.is_ascii_alphabetic()).unwrap();
            let (num, unit) = h.split_at(split);
            let num: f64 = num.parse().unwrap();
            prop_assert!((10.0..10240.0).contains(&num), "{}", h);
            let scale = 1024f64.powi(UNITS.iter().position(|u| *u == unit).unwrap() as i32);
            prop_assert!((num * scale - n as f64).abs() <= 0.05 * scale + 1.0, "{} vs {}", h, n);
        }
    }
}
