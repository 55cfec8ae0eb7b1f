//! UTC dates for reports' times, without a calendar crate: days from the civil date and back
//! (the proleptic Gregorian calendar, as `date -u` shows it).

/// Days since 1970-01-01 of a civil date.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The civil date of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + (m <= 2) as i64;
    (y, m, d)
}

/// `2026-11-30T08:15:02Z` for nanoseconds since the epoch.
pub fn format_utc(unix_ns: u64) -> String {
    let secs = (unix_ns / 1_000_000_000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Parses `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM`, `YYYY-MM-DDTHH:MM:SS` (a space may stand for the
/// `T`, a trailing `Z` is allowed; always UTC) into nanoseconds since the epoch.
pub fn parse_utc(text: &str) -> Result<u64, String> {
    let bad = || format!("'{text}' is not a date (YYYY-MM-DD or YYYY-MM-DDTHH:MM[:SS], UTC)");
    let t = text.trim().trim_end_matches('Z');
    let (date, clock) = match t.split_once(['T', ' ']) {
        Some((d, c)) => (d, Some(c)),
        None => (t, None),
    };
    let num = |s: &str, digits: usize| -> Result<u32, String> {
        if s.len() != digits || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse().map_err(|_| bad())
    };
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    let (y, m, d) = (num(y, 4)?, num(m, 2)?, num(d, 2)?);
    let month_days = [
        31,
        28 + leap(y) as u32,
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if y < 1970 || !(1..=12).contains(&m) || d == 0 || d > month_days[m as usize - 1] {
        return Err(bad());
    }
    let mut secs = days_from_civil(y as i64, m, d) * 86_400;
    if let Some(c) = clock {
        let f: Vec<&str> = c.split(':').collect();
        if !(2..=3).contains(&f.len()) {
            return Err(bad());
        }
        let h = num(f[0], 2)?;
        let min = num(f[1], 2)?;
        let s = if f.len() == 3 { num(f[2], 2)? } else { 0 };
        if h > 23 || min > 59 || s > 59 {
            return Err(bad());
        }
        secs += (h * 3600 + min * 60 + s) as i64;
    }
    Ok(secs as u64 * 1_000_000_000)
}

fn leap(y: u32) -> bool {
    y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_round_trip_and_match_known_instants() {
        // `date -u -d @1764576000` is Mon Dec  1 08:00:00 UTC 2025.
        assert_eq!(
            format_utc(1_764_576_000_000_000_000),
            "2025-12-01T08:00:00Z"
        );
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_utc(951_782_400 * 1_000_000_000),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            parse_utc("2025-12-01T08:00").unwrap(),
            1_764_576_000_000_000_000
        );
        assert_eq!(
            parse_utc("2025-12-01 08:00:00Z").unwrap(),
            1_764_576_000_000_000_000
        );
        assert_eq!(
            parse_utc("2000-02-29").unwrap(),
            951_782_400 * 1_000_000_000
        );
        for d in [0u64, 86_399, 86_400, 1_700_000_000, 4_102_444_800] {
            let ns = d * 1_000_000_000;
            let text = format_utc(ns);
            assert_eq!(parse_utc(&text).unwrap(), ns, "{text}");
        }
        for bad in [
            "",
            "2025-13-01",
            "2025-02-29",
            "25-12-01",
            "2025-12-01T24:00",
            "yesterday",
        ] {
            assert!(parse_utc(bad).is_err(), "{bad}");
        }
    }
}
