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
//! - `measurements` is sorted by name; a value is a number or `null`.
//! - Numbers are IEEE-754 doubles written in the shortest form that reads back
//!   to the same double; an integral value below 2^53 is written without a
//!   fraction (`40`, never `40.0`), and exponents are never used for values
//!   between 1e-6 and 1e21 (the JavaScript `Number.prototype.toString` rule,
//!   which every port of these processors follows).

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
            serde_json::from_slice(value).map_err(|e| format!("value is not JSON: {e}"))?;
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
            if x.fract() == 0.0 && x.abs() < 9_007_199_254_740_992.0 {
                // -0.0 is written as 0, as JavaScript does.
                let _ = write!(out, "{}", x as i64);
            } else if (1e-6..1e21).contains(&x.abs()) {
                // Rust's Display gives the shortest round-trip digits without an exponent.
                let _ = write!(out, "{x}");
            } else {
                out.push_str(&serde_json::Value::from(x).to_string());
            }
        }
        _ => out.push_str("null"),
    }
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
        assert_eq!(num(426.0), "426");
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
