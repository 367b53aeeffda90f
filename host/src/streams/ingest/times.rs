//! Reading a device's time as it wrote it: ISO 8601 in its common shapes,
//! a strftime pattern, seconds/ms/µs since the Unix epoch, or a time
//! elapsed since a start. Every shape accepts the hour `24:00` (ISO 8601's
//! end of day) as the next day's `00:00`.

use chrono::{DateTime, NaiveDate, NaiveDateTime, TimeDelta};

/// The unit of a number of seconds/ms/µs since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochUnit {
    /// Seconds.
    Seconds,
    /// Milliseconds.
    Millis,
    /// Microseconds.
    Micros,
}

/// How a file writes its times; each parses to ms since the Unix epoch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TimeFormat {
    /// ISO 8601 / RFC 3339, with `T` or a space, with `Z`, an offset or
    /// none (UTC); seconds optional, with or without a fraction.
    #[default]
    Iso,
    /// A strftime pattern in chrono's syntax (e.g. `%d.%m.%Y %H:%M`); UTC
    /// unless it reads an offset (`%z`, `%:z`). A pattern with a date and
    /// no time reads midnight.
    Pattern(String),
    /// A number since the Unix epoch, integer or decimal, rounded to the
    /// nearest ms (a half ms away from zero: 1500 µs is 2 ms, -1500 µs is
    /// -2 ms).
    Epoch(EpochUnit),
    /// A time elapsed since `start_ms` (ms since the Unix epoch), written
    /// `N days HH:MM:SS[.f]` (pandas' Timedelta), `HH:MM:SS[.f]` (hours
    /// may pass 23), or a number of seconds.
    Elapsed {
        /// The instant elapsed times count from, in ms since the Unix epoch.
        start_ms: i64,
    },
}

impl TimeFormat {
    /// Reads `--time-format`: `iso`, `epoch-s`, `epoch-ms`, `epoch-us`, or
    /// a strftime pattern, which must read back the date-time it writes.
    ///
    /// # Errors
    ///
    /// A message naming the text when it is none of the words and has no
    /// `%` (such as `epoch-ns`), and naming the pattern when it has an
    /// unknown `%` item or does not hold a full date.
    pub fn from_flag(text: &str) -> Result<TimeFormat, String> {
        Ok(match text {
            "iso" => TimeFormat::Iso,
            "epoch-s" => TimeFormat::Epoch(EpochUnit::Seconds),
            "epoch-ms" => TimeFormat::Epoch(EpochUnit::Millis),
            "epoch-us" => TimeFormat::Epoch(EpochUnit::Micros),
            pattern if !pattern.contains('%') => {
                return Err(format!(
                    "--time-format {pattern:?} is not a strftime pattern (no %), nor iso, epoch-s, epoch-ms or epoch-us"
                ));
            }
            pattern => {
                check_pattern(pattern)?;
                TimeFormat::Pattern(pattern.to_owned())
            }
        })
    }

    /// The time `text` stands for, in ms since the Unix epoch.
    ///
    /// # Errors
    ///
    /// A message naming the text and the format expected.
    pub fn parse_ms(&self, text: &str) -> Result<i64, String> {
        let t = text.trim();
        match self {
            TimeFormat::Iso => with_hour_24(t, parse_iso).ok_or_else(|| {
                format!(
                    "time {text:?} is not a date-time (expected e.g. 2016-02-15T00:00:00Z, 2022-03-20T11:00:00+01:00 or 2010-03-24 09:51:00; --time-format reads other shapes)"
                )
            }),
            TimeFormat::Pattern(p) => with_hour_24(t, |t| parse_pattern(t, p))
                .ok_or_else(|| format!("time {text:?} does not match --time-format {p:?}")),
            TimeFormat::Epoch(unit) => parse_epoch(t, *unit).ok_or_else(|| {
                let unit = match unit {
                    EpochUnit::Seconds => "seconds",
                    EpochUnit::Millis => "milliseconds",
                    EpochUnit::Micros => "microseconds",
                };
                format!("time {text:?} is not a number of {unit} since the Unix epoch")
            }),
            TimeFormat::Elapsed { start_ms } => parse_elapsed_ms(t)
                .and_then(|ms| start_ms.checked_add(ms))
                .ok_or_else(|| {
                    format!(
                        "time {text:?} is not an elapsed time (expected e.g. \"0 days 00:00:01\", \"25:30:00\" or seconds)"
                    )
                }),
        }
    }
}

/// Parses a time as written in the shipped data sets (see
/// [`TimeFormat::Iso`]), `24:00` included. Returns ms since the Unix epoch.
///
/// # Errors
///
/// A message naming the text when it is none of these.
pub fn parse_time_ms(text: &str) -> Result<i64, String> {
    TimeFormat::Iso.parse_ms(text)
}

fn parse_iso(t: &str) -> Option<i64> {
    if let Ok(d) = DateTime::parse_from_rfc3339(t) {
        return Some(d.timestamp_millis());
    }
    for f in [
        "%Y-%m-%d %H:%M:%S%.f%:z",
        "%Y-%m-%dT%H:%M:%S%.f%z",
        "%Y-%m-%d %H:%M:%S%.f%z",
    ] {
        if let Ok(d) = DateTime::parse_from_str(t, f) {
            return Some(d.timestamp_millis());
        }
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(d) = NaiveDateTime::parse_from_str(t, f) {
            return Some(d.and_utc().timestamp_millis());
        }
    }
    None
}

fn parse_pattern(t: &str, pattern: &str) -> Option<i64> {
    if let Ok(d) = DateTime::parse_from_str(t, pattern) {
        return Some(d.timestamp_millis());
    }
    if let Ok(d) = NaiveDateTime::parse_from_str(t, pattern) {
        return Some(d.and_utc().timestamp_millis());
    }
    NaiveDate::parse_from_str(t, pattern)
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc().timestamp_millis())
}

/// Refuses a pattern chrono cannot use, or one that cannot read back what
/// it writes (it lacks the year, the month or the day).
fn check_pattern(pattern: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(pattern).any(|i| matches!(i, Item::Error)) {
        return Err(format!(
            "--time-format {pattern:?} is not a strftime pattern (see https://docs.rs/chrono/latest/chrono/format/strftime/), nor iso, epoch-s, epoch-ms or epoch-us"
        ));
    }
    let probe =
        DateTime::parse_from_rfc3339("2024-03-01T13:45:56+00:00").map_err(|e| e.to_string())?;
    let written = probe.format(pattern).to_string();
    if parse_pattern(&written, pattern).is_none() {
        return Err(format!(
            "--time-format {pattern:?} does not hold a full date (2024-03-01T13:45:56Z is written {written:?}, which it cannot read back)"
        ));
    }
    Ok(())
}

/// Parses `t` with `parse`; when that fails and `t` has the hour `24:00`
/// (then optionally `:00` and a zero fraction), parses it with `00:00`
/// and adds a day (ISO 8601's end of day).
fn with_hour_24(t: &str, parse: impl Fn(&str) -> Option<i64>) -> Option<i64> {
    if let Some(ms) = parse(t) {
        return Some(ms);
    }
    let at = hour_24_at(t)?;
    let midnight = format!("{}00:00{}", &t[..at], &t[at + 5..]);
    parse(&midnight).map(|ms| ms + TimeDelta::days(1).num_milliseconds())
}

/// Where `24:00` stands as an hour in `t`: at the start or after a space
/// or `T`, followed by nothing, an offset, or `:00` with an optional zero
/// fraction.
fn hour_24_at(t: &str) -> Option<usize> {
    let bytes = t.as_bytes();
    let at = (0..t.len().saturating_sub(4)).find(|&i| {
        bytes[i..].starts_with(b"24:00") && (i == 0 || matches!(bytes[i - 1], b' ' | b'T'))
    })?;
    let mut rest = &t[at + 5..];
    if let Some(r) = rest.strip_prefix(":00") {
        rest = r;
        if let Some(r) = rest.strip_prefix('.') {
            rest = r.trim_start_matches('0');
        }
    }
    let clean = rest.is_empty() || rest.starts_with([' ', 'Z', '+', '-']);
    clean.then_some(at)
}

/// `t`, a number of `unit`s since the Unix epoch (`[+-]digits[.digits]`),
/// in ms, rounded half away from zero. Exact: the digits are read as an
/// integer, never through a float.
fn parse_epoch(t: &str, unit: EpochUnit) -> Option<i64> {
    let (per_ms_num, per_ms_den): (i128, i128) = match unit {
        EpochUnit::Seconds => (1000, 1),
        EpochUnit::Millis => (1, 1),
        EpochUnit::Micros => (1, 1000),
    };
    let (negative, body) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let (int, frac) = body.split_once('.').unwrap_or((body, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    // Digits past the 18th of the fraction are below a femtosecond: they
    // cannot move a rounding that the first 18 leave undecided.
    let frac = &frac[..frac.len().min(18)];
    let scale = 10i128.pow(frac.len() as u32);
    let int: i128 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac: i128 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let num = int
        .checked_mul(scale)?
        .checked_add(frac)?
        .checked_mul(per_ms_num)?;
    let den = per_ms_den * scale;
    let (q, r) = (num / den, num % den);
    let ms = if 2 * r >= den { q + 1 } else { q };
    i64::try_from(if negative { -ms } else { ms }).ok()
}

/// An elapsed time in ms: `N days HH:MM:SS[.f]`, `HH:MM:SS[.f]` or seconds.
fn parse_elapsed_ms(t: &str) -> Option<i64> {
    let (days, clock) = match t.split_once(" day") {
        Some((d, rest)) => {
            let rest = rest.strip_prefix('s').unwrap_or(rest).trim_start();
            (d.trim().parse::<i64>().ok()?, rest)
        }
        None => (0, t),
    };
    let clock_ms = if clock.contains(':') {
        let mut parts = clock.splitn(3, ':');
        let h: i64 = parts.next()?.trim_start_matches('+').parse().ok()?;
        let m: i64 = parts.next()?.parse().ok()?;
        let s: f64 = parts.next().unwrap_or("0").parse().ok()?;
        if !(0..60).contains(&m) || !(0.0..60.0).contains(&s) || h < 0 {
            return None;
        }
        (h * 3600 + m * 60) * 1000 + (s * 1000.0).round() as i64
    } else if clock.is_empty() && t.contains(" day") {
        0
    } else {
        let s: f64 = clock.parse().ok()?;
        if !s.is_finite() || s.abs() > 1.0e15 {
            return None;
        }
        (s * 1000.0).round() as i64
    };
    days.checked_mul(86_400_000)?.checked_add(clock_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAR_2: i64 = 1_709_337_600_000; // 2024-03-02T00:00:00Z

    #[test]
    fn iso_times_in_the_data_sets_parse() {
        assert_eq!(
            parse_time_ms("2016-02-15T00:00:00Z").unwrap(),
            1_455_494_400_000
        );
        assert_eq!(
            parse_time_ms("2022-03-20T11:00:00+01:00").unwrap(),
            1_647_770_400_000
        );
        assert_eq!(
            parse_time_ms("2015-02-04 17:51:00").unwrap(),
            1_423_072_260_000
        );
        assert_eq!(
            parse_time_ms("2015-02-04 17:51:00.5").unwrap(),
            1_423_072_260_500
        );
        assert!(parse_time_ms("17:51").is_err());
    }

    #[test]
    fn hour_24_is_the_next_days_midnight() {
        for t in [
            "2024-03-01 24:00",
            "2024-03-01T24:00:00",
            "2024-03-01T24:00:00.000Z",
            "2024-03-01 24:00:00+00:00",
        ] {
            assert_eq!(parse_time_ms(t), Ok(MAR_2), "{t}");
        }
        // Only 24:00 exactly is the end of a day.
        for t in [
            "2024-03-01 24:01",
            "2024-03-01 24:00:01",
            "2024-03-01 25:00",
        ] {
            assert!(parse_time_ms(t).is_err(), "{t}");
        }
        // The last day of a month and of a year roll over.
        assert_eq!(
            parse_time_ms("2023-12-31 24:00"),
            parse_time_ms("2024-01-01 00:00")
        );
        let p = TimeFormat::from_flag("%d.%m.%Y %H:%M").unwrap();
        assert_eq!(p.parse_ms("01.03.2024 24:00"), Ok(MAR_2));
    }

    #[test]
    fn patterns() {
        let p = TimeFormat::from_flag("%d/%m/%Y %H:%M:%S").unwrap();
        assert_eq!(p.parse_ms("01/03/2024 13:45:56"), Ok(1_709_300_756_000));
        assert_eq!(
            p.parse_ms("2024-03-01 13:45:56"),
            Err(
                "time \"2024-03-01 13:45:56\" does not match --time-format \"%d/%m/%Y %H:%M:%S\""
                    .into()
            )
        );
        let z = TimeFormat::from_flag("%Y%m%d%H%M %z").unwrap();
        assert_eq!(z.parse_ms("202403011445 +0100"), Ok(1_709_300_700_000));
        let day = TimeFormat::from_flag("%Y%m%d").unwrap();
        assert_eq!(day.parse_ms("20240302"), Ok(MAR_2));
        assert!(
            TimeFormat::from_flag("%H:%M")
                .unwrap_err()
                .contains("does not hold a full date")
        );
        assert!(
            TimeFormat::from_flag("%Q")
                .unwrap_err()
                .contains("is not a strftime pattern")
        );
        for word in ["epoch-ns", "epoch", "ISO", "unix"] {
            assert_eq!(
                TimeFormat::from_flag(word),
                Err(format!(
                    "--time-format {word:?} is not a strftime pattern (no %), nor iso, epoch-s, epoch-ms or epoch-us"
                ))
            );
        }
    }

    #[test]
    fn epochs() {
        let s = TimeFormat::Epoch(EpochUnit::Seconds);
        let ms = TimeFormat::Epoch(EpochUnit::Millis);
        let us = TimeFormat::Epoch(EpochUnit::Micros);
        assert_eq!(s.parse_ms("1709337600"), Ok(MAR_2));
        assert_eq!(s.parse_ms("1709337600.25"), Ok(MAR_2 + 250));
        assert_eq!(s.parse_ms("0"), Ok(0));
        assert_eq!(ms.parse_ms("1709337600123"), Ok(MAR_2 + 123));
        assert_eq!(us.parse_ms("1709337600123456"), Ok(MAR_2 + 123));
        assert_eq!(us.parse_ms("-1500"), Ok(-2));
        // µs round to the nearest ms, half away from zero, as the decimals
        // of epoch-s and epoch-ms do.
        for (text, want) in [
            ("1499", 1),
            ("1500", 2),
            ("1501", 2),
            ("2500", 3),
            ("999", 1),
            ("499", 0),
            ("500", 1),
            ("-499", 0),
            ("-1499", -1),
            ("-1501", -2),
            ("1709337600123500", MAR_2 + 124),
            ("1709337600123499", MAR_2 + 123),
            ("1500.0", 2),
        ] {
            assert_eq!(us.parse_ms(text), Ok(want), "{text} µs");
        }
        assert_eq!(ms.parse_ms("1.5"), Ok(2));
        assert_eq!(ms.parse_ms("-1.5"), Ok(-2));
        assert_eq!(s.parse_ms("0.5005"), Ok(501));
        assert_eq!(s.parse_ms("-0.0015"), Ok(-2));
        assert_eq!(s.parse_ms(".25"), Ok(250));
        for bad in ["", "-", ".", "1.2.3", "1e3", "0x10", "- 1"] {
            assert!(s.parse_ms(bad).is_err(), "{bad:?}");
        }
        assert!(s.parse_ms("1e9").is_err());
        assert!(s.parse_ms("soon").is_err());
        assert!(s.parse_ms("99999999999999999999").is_err());
    }

    #[test]
    fn elapsed_times() {
        let e = TimeFormat::Elapsed { start_ms: MAR_2 };
        assert_eq!(e.parse_ms("0 days 00:00:01"), Ok(MAR_2 + 1000));
        assert_eq!(e.parse_ms("1 day 01:00:00.5"), Ok(MAR_2 + 90_000_500));
        assert_eq!(e.parse_ms("2 days"), Ok(MAR_2 + 172_800_000));
        assert_eq!(e.parse_ms("25:30:00"), Ok(MAR_2 + 91_800_000));
        assert_eq!(e.parse_ms("90.5"), Ok(MAR_2 + 90_500));
        assert!(e.parse_ms("00:61:00").is_err());
        assert!(e.parse_ms("later").is_err());
    }
}
