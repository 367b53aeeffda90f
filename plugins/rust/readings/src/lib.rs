//! The sensor-reading model shared by the example processors.
//!
//! An enriched reading, as `enrich` writes it and `threshold` reads it, is one
//! JSON object with the fields in this order:
//!
//! ```json
//! {"device":"buoy-b01","ts":"2016-02-15T00:00:00Z","kind":"thermometer",
//!  "measurements":{"temperature_c":4.929,"temperature_f":40.8722}}
//! ```
//!
//! - `measurements` is sorted by name (byte order of the UTF-8 names); a value
//!   is a number or `null`.
//! - Strings are written as `serde_json` writes them: `"` and `\\` escaped,
//!   `\b \f \n \r \t` for those controls, `\u00xx` (lowercase hex) for the
//!   other characters below U+0020, everything else as raw UTF-8.
//! - Numbers are IEEE-754 doubles written exactly as ECMAScript's
//!   `Number::toString` writes them (what `String(x)` gives in JavaScript):
//!   the shortest digits that read back to the same double, no fraction for
//!   an integral value (`40`, never `40.0`), plain notation from 1e-6 up to
//!   below 1e21, else `d.ddde+N` / `d.ddde-N` (`1e+21`, `1.5e-7`); `-0` is
//!   written `0`; NaN and infinities are `null`. Every port of these
//!   processors follows this rule: each has a shortest-digits primitive
//!   (Rust `{:e}`, Python `repr`, Go `FormatFloat(x, 'e', -1, 64)`, C a
//!   round-trip search with `%.*e`/`strtod`) and the same few lines that place
//!   the decimal point.
//!
//! Reading JSON input follows RFC 8259 strictly, as `serde_json` does with
//! `float_roundtrip` (numbers correctly rounded; a number too large for a
//! double, invalid UTF-8 or a lone surrogate escape makes the value not JSON;
//! of repeated object keys the last one wins).

use std::collections::BTreeMap;
use std::fmt::Write;

/// An enriched reading.
#[derive(Debug, Clone, PartialEq)]
pub struct Enriched {
    /// The device id.
    pub device: String,
    /// The reading's time, as the device wrote it.
    pub ts: String,
    /// The kind of device, e.g. `flowmeter`.
    pub kind: String,
    /// Measurement name to value; `None` where the device sent no usable value.
    pub measurements: BTreeMap<String, Option<f64>>,
}

impl Enriched {
    /// Parses an enriched reading.
    ///
    /// # Errors
    ///
    /// A message naming the missing or mistyped field.
    pub fn parse(value: &[u8]) -> Result<Enriched, String> {
        let v: serde_json::Value =
            serde_json::from_slice(value).map_err(|_| "value is not JSON".to_string())?;
        let field = |name: &str| {
            v.get(name)
                .and_then(|f| f.as_str())
                .map(str::to_owned)
                .ok_or_else(|| format!("field {name:?} is missing or not a string"))
        };
        let measurements = v
            .get("measurements")
            .and_then(|m| m.as_object())
            .ok_or("field \"measurements\" is missing or not an object")?
            .iter()
            .map(|(k, v)| (k.clone(), v.as_f64()))
            .collect();
        Ok(Enriched {
            device: field("device")?,
            ts: field("ts")?,
            kind: field("kind")?,
            measurements,
        })
    }

    /// Writes the reading in the canonical form described in the crate docs.
    pub fn to_json(&self) -> String {
        let mut out = String::with_capacity(128);
        out.push_str("{\"device\":");
        push_string(&mut out, &self.device);
        out.push_str(",\"ts\":");
        push_string(&mut out, &self.ts);
        out.push_str(",\"kind\":");
        push_string(&mut out, &self.kind);
        out.push_str(",\"measurements\":{");
        for (i, (name, value)) in self.measurements.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_string(&mut out, name);
            out.push(':');
            push_number(&mut out, *value);
        }
        out.push_str("}}");
        out
    }
}

/// Appends `s` as a JSON string.
pub fn push_string(out: &mut String, s: &str) {
    out.push_str(&serde_json::Value::from(s).to_string());
}

/// Appends `value` as a JSON number in the canonical form, or `null`.
pub fn push_number(out: &mut String, value: Option<f64>) {
    match value {
        Some(x) if x.is_finite() => {
            if x == 0.0 {
                // -0 is written as 0, as JavaScript does.
                out.push('0');
                return;
            }
            // `{:e}` gives the shortest round-trip digits: "-4.929e0", "1e-7".
            let sci = format!("{x:e}");
            let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
            let exp: i32 = exp.parse().unwrap_or(0);
            let (negative, mantissa) = match mantissa.strip_prefix('-') {
                Some(m) => (true, m),
                None => (false, mantissa),
            };
            let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
            if negative {
                out.push('-');
            }
            push_js_digits(out, &digits, exp + 1);
        }
        _ => out.push_str("null"),
    }
}

/// Places the decimal point as ECMAScript's `Number::toString` does: the value
/// is `0.digits × 10^n`, `digits` has no leading or trailing zeros.
fn push_js_digits(out: &mut String, digits: &str, n: i32) {
    let k = digits.len() as i32;
    if k <= n && n <= 21 {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', (n - k) as usize));
    } else if 0 < n && n <= 21 {
        out.push_str(&digits[..n as usize]);
        out.push('.');
        out.push_str(&digits[n as usize..]);
    } else if -6 < n && n <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', (-n) as usize));
        out.push_str(digits);
    } else {
        out.push_str(&digits[..1]);
        if k > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let _ = write!(out, "e{}{}", if n > 0 { '+' } else { '-' }, (n - 1).abs());
    }
}

/// Parses a number written as text the way every port does: after removing
/// leading and trailing ASCII whitespace (space, tab, LF, FF, CR), the text
/// must be `[+-]? (digits [. digits?] | . digits) ([eE] [+-]? digits)?` and
/// finite as a double (correctly rounded). Anything else is `None`.
pub fn parse_number_text(s: &str) -> Option<f64> {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    let b = t.as_bytes();
    let mut i = 0;
    if matches!(b.first(), Some(b'+' | b'-')) {
        i += 1;
    }
    let int = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    i += int;
    let mut frac = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        frac = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        i += frac;
    }
    if int + frac == 0 {
        return None;
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let exp = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp == 0 {
            return None;
        }
        i += exp;
    }
    if i != b.len() {
        return None;
    }
    t.parse::<f64>().ok().filter(|x| x.is_finite())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num(x: f64) -> String {
        let mut s = String::new();
        push_number(&mut s, Some(x));
        s
    }

    #[test]
    fn numbers_are_canonical() {
        assert_eq!(num(40.0), "40");
        assert_eq!(num(-0.0), "0");
        assert_eq!(num(4.929), "4.929");
        assert_eq!(num(4.929 * 9.0 / 5.0 + 32.0), "40.8722");
        assert_eq!(num(0.1 + 0.2), "0.30000000000000004");
        assert_eq!(num(1e-7), "1e-7");
        assert_eq!(num(1.5e-7), "1.5e-7");
        assert_eq!(num(1e-6), "0.000001");
        assert_eq!(num(-0.00012345), "-0.00012345");
        assert_eq!(num(426.0), "426");
        assert_eq!(num(1e21), "1e+21");
        assert_eq!(num(1e20), "100000000000000000000");
        assert_eq!(num(2f64.powi(60)), "1152921504606847000");
        assert_eq!(num(-1.7976931348623157e308), "-1.7976931348623157e+308");
        assert_eq!(num(5e-324), "5e-324");
        assert_eq!(num(123.456), "123.456");
        let mut s = String::new();
        push_number(&mut s, Some(f64::NAN));
        assert_eq!(s, "null");
    }

    #[test]
    fn number_text_grammar() {
        let p = parse_number_text;
        assert_eq!(p(" 4.5\t"), Some(4.5));
        assert_eq!(p("1."), Some(1.0));
        assert_eq!(p(".5"), Some(0.5));
        assert_eq!(p("+2e3"), Some(2000.0));
        assert_eq!(p("-1E-2"), Some(-0.01));
        for bad in [
            "", " ", ".", "e5", "1e", "1e+", "inf", "NaN", "infinity", "0x10", "1_0", "1,5",
            "\u{a0}1", "1e400", "--1", "1.2.3",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn round_trip() {
        let e = Enriched {
            device: "d\"1".into(),
            ts: "2016-02-15T00:00:00Z".into(),
            kind: "thermometer".into(),
            measurements: [("a".to_string(), Some(1.5)), ("b".to_string(), None)]
                .into_iter()
                .collect(),
        };
        let json = e.to_json();
        assert_eq!(
            json,
            r#"{"device":"d\"1","ts":"2016-02-15T00:00:00Z","kind":"thermometer","measurements":{"a":1.5,"b":null}}"#
        );
        assert_eq!(Enriched::parse(json.as_bytes()).unwrap(), e);
    }
}
