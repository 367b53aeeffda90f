//! How the console writes numbers, times, sizes, versions and record bytes.
//! Called from the templates (`crate::admin::console::fmt::...`).

use crate::streams::LogRecord;

/// The first 12 hex digits of a version's SHA-256.
pub fn short(sha: &str) -> &str {
    crate::admin::views::short(sha)
}

/// A time in ms since the Unix epoch, RFC 3339 UTC with milliseconds.
pub fn time(ms: &u64) -> String {
    crate::admin::views::time_text(*ms)
}

/// A count with thousands separators: `73,280`.
pub fn num(n: &u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A rate or a time in ms, to at most 2 decimals and no more than it needs:
/// `46951`, `0.3`, `12.35`.
pub fn dec(x: &f64) -> String {
    if !x.is_finite() {
        return "–".into();
    }
    if x.abs() >= 100.0 {
        return num(&(x.round() as u64));
    }
    let s = format!("{x:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A size in bytes, exact and in binary units: `231,559 bytes (226.1 KiB)`.
pub fn size(n: &u64) -> String {
    let units = ["KiB", "MiB", "GiB"];
    let mut v = *n as f64;
    let mut unit = None;
    for u in units {
        if v < 1024.0 {
            break;
        }
        v /= 1024.0;
        unit = Some(u);
    }
    match unit {
        None => format!("{} bytes", num(n)),
        Some(u) => format!("{} bytes ({v:.1} {u})", num(n)),
    }
}

/// Longest value the console shows of a record, in bytes.
pub const MAX_SHOWN_BYTES: usize = 64 * 1024;

/// Bytes for people: UTF-8 as text, anything else as `0x` and hex; cut at
/// [`MAX_SHOWN_BYTES`] with a note.
pub fn bytes_text(b: &[u8]) -> String {
    let (shown, cut) = if b.len() > MAX_SHOWN_BYTES {
        (&b[..MAX_SHOWN_BYTES], true)
    } else {
        (b, false)
    };
    let mut text = match std::str::from_utf8(shown) {
        Ok(s) => s.to_owned(),
        Err(e) if cut && e.error_len().is_none() => {
            String::from_utf8_lossy(&shown[..e.valid_up_to()]).into_owned()
        }
        Err(_) => format!("0x{}", hex::encode(shown)),
    };
    if cut {
        text.push_str(&format!("\n… ({} bytes in all)", num(&(b.len() as u64))));
    }
    text
}

/// A value for people: JSON pretty-printed, other text as it is, other
/// bytes as hex; a tombstone says so.
pub fn value_text(v: Option<&[u8]>) -> String {
    let Some(b) = v else {
        return "(tombstone: no value)".into();
    };
    if b.len() <= MAX_SHOWN_BYTES
        && let Ok(doc) = serde_json::from_slice::<serde_json::Value>(b)
        && (doc.is_object() || doc.is_array())
    {
        return serde_json::to_string_pretty(&doc).unwrap_or_else(|_| bytes_text(b));
    }
    bytes_text(b)
}

/// A record as the console shows it.
#[derive(Debug, Clone)]
pub struct Shown {
    /// Its key, or `(none)`.
    pub key: String,
    /// Its value, pretty.
    pub value: String,
    /// Its headers, in order.
    pub headers: Vec<(String, String)>,
    /// Its timestamp.
    pub time: String,
}

impl Shown {
    /// How the console shows `r`.
    pub fn of(r: &LogRecord) -> Shown {
        Shown {
            key: r
                .record
                .key
                .as_deref()
                .map_or_else(|| "(none)".into(), bytes_text),
            value: value_text(r.record.value.as_deref()),
            headers: r
                .record
                .headers
                .iter()
                .map(|(n, v)| (n.clone(), bytes_text(v)))
                .collect(),
            time: if r.record.timestamp_ms >= 0 {
                time(&(r.record.timestamp_ms as u64))
            } else {
                format!("{} ms before 1970", -r.record.timestamp_ms)
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_sizes_and_values_read_well() {
        assert_eq!(num(&0), "0");
        assert_eq!(num(&999), "999");
        assert_eq!(num(&73280), "73,280");
        assert_eq!(num(&1234567), "1,234,567");
        assert_eq!(dec(&46951.4), "46,951");
        assert_eq!(dec(&0.30), "0.3");
        assert_eq!(dec(&12.345), "12.35");
        assert_eq!(dec(&2.0), "2");
        assert_eq!(size(&100), "100 bytes");
        assert_eq!(size(&231559), "231,559 bytes (226.1 KiB)");
        assert_eq!(value_text(None), "(tombstone: no value)");
        assert_eq!(value_text(Some(b"{\"a\":1}")), "{\n  \"a\": 1\n}");
        assert_eq!(value_text(Some(b"plain")), "plain");
        assert_eq!(value_text(Some(b"42")), "42");
        assert_eq!(value_text(Some(&[0xff, 0x00])), "0xff00");
        let big = vec![b'x'; MAX_SHOWN_BYTES + 1];
        assert!(bytes_text(&big).ends_with(&format!(
            "({} bytes in all)",
            num(&(MAX_SHOWN_BYTES as u64 + 1))
        )));
    }
}
