//! `enrich`: turns a raw sensor reading into an enriched one.
//!
//! Input: a JSON object `{"device": ID, "ts": TIME, <column>: <value>, ...}` as
//! `tidewater produce --csv` writes it. Output, to the default topic, keyed by
//! the device id: the canonical enriched reading of the `readings` crate.
//!
//! - Columns are renamed to measurement names: the built-in names below, or
//!   `field.<column> = "<measurement>"` in the config; other columns keep their name.
//! - A value is a number, or a string that parses as one
//!   ([`readings::parse_number_text`]); anything else
//!   (`nil`, empty, `null`, text) becomes `null` and the reading goes on.
//! - Unit conversions: `temperature_c` adds `temperature_f` (`c * 9 / 5 + 32`),
//!   `flow_l_s` adds `flow_m3_h` (`l_s * 3.6`), in IEEE doubles, in that order.
//! - The kind is `kind.<device> = "<kind>"` from the config, or derived from the
//!   measurements (see [`kind_of`]).
//! - A value that is not a JSON object, lacks `device` or `ts`, or has no
//!   measurement that parses is `invalid` (dead-lettered by the host).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use readings::Enriched;
use tidewater_sdk::{Config, Event, Output, ProcessError};

/// Column names of the shipped data sets, and the measurement each one is.
const BUILT_IN_FIELDS: &[(&str, &str)] = &[
    ("temperature (celsius)", "temperature_c"),
    ("Water flow [l/s]", "flow_l_s"),
    ("glucose", "glucose_mg_dl"),
    ("isig", "isig_na"),
];

#[derive(Debug, Default)]
struct Settings {
    fields: BTreeMap<String, String>,
    kinds: BTreeMap<String, String>,
}

static SETTINGS: OnceLock<Settings> = OnceLock::new();

fn settings() -> &'static Settings {
    SETTINGS.get_or_init(Settings::default)
}

/// Reads `field.<column>` and `kind.<device>` entries; refuses any other key.
///
/// # Errors
///
/// A message naming the first unknown or empty config key.
pub fn init(config: &Config) -> Result<(), String> {
    let mut s = Settings::default();
    for (key, value) in config.iter() {
        let (map, name) = if let Some(column) = key.strip_prefix("field.") {
            (&mut s.fields, column)
        } else if let Some(device) = key.strip_prefix("kind.") {
            (&mut s.kinds, device)
        } else {
            return Err(format!(
                "unknown config key {key:?} (expected field.<column> or kind.<device>)"
            ));
        };
        if name.is_empty() || value.is_empty() {
            return Err(format!("config key {key:?} needs a name and a value"));
        }
        map.insert(name.to_owned(), value.to_owned());
    }
    SETTINGS.set(s).map_err(|_| "init called twice".to_string())
}

/// The kind of device that reports `measurements`: `flowmeter` (flow),
/// `glucose-monitor` (glucose), `room-sensor` (CO2, humidity or light),
/// `thermometer` (temperature only), else `unknown`. The first rule that
/// matches wins.
pub fn kind_of(measurements: &BTreeMap<String, Option<f64>>) -> &'static str {
    let has = |m: &str| measurements.contains_key(m);
    if has("flow_l_s") {
        "flowmeter"
    } else if has("glucose_mg_dl") {
        "glucose-monitor"
    } else if has("co2_ppm") || has("humidity_pct") || has("light_lux") {
        "room-sensor"
    } else if has("temperature_c") {
        "thermometer"
    } else {
        "unknown"
    }
}

fn measurement_name<'a>(column: &'a str, s: &'a Settings) -> &'a str {
    if let Some(m) = s.fields.get(column) {
        return m;
    }
    BUILT_IN_FIELDS
        .iter()
        .find(|(c, _)| *c == column)
        .map_or(column, |(_, m)| m)
}

fn number(v: &serde_json::Value) -> Option<f64> {
    let x = match v {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => readings::parse_number_text(s),
        _ => None,
    }?;
    x.is_finite().then_some(x)
}

/// Enriches one reading; see the crate docs.
///
/// # Errors
///
/// [`ProcessError::Invalid`] for a value that is not a reading.
pub fn process(event: Event) -> Result<Vec<Output>, ProcessError> {
    let invalid = |m: String| ProcessError::Invalid(m);
    let value = event
        .value
        .as_deref()
        .ok_or_else(|| invalid("tombstone: a reading needs a value".into()))?;
    let serde_json::Value::Object(fields) =
        serde_json::from_slice(value).map_err(|_| invalid("value is not JSON".into()))?
    else {
        return Err(invalid("value is not a JSON object".into()));
    };
    let text = |name: &str| match fields.get(name) {
        Some(serde_json::Value::String(s)) => Ok(s.clone()),
        _ => Err(invalid(format!(
            "field {name:?} is missing or not a string"
        ))),
    };
    let device = text("device")?;
    let ts = text("ts")?;

    let s = settings();
    let mut measurements = BTreeMap::new();
    for (column, v) in &fields {
        if column == "device" || column == "ts" {
            continue;
        }
        measurements.insert(measurement_name(column, s).to_owned(), number(v));
    }
    if measurements.values().all(Option::is_none) {
        return Err(invalid(format!(
            "reading from {device} at {ts} has no measurement that parses"
        )));
    }
    if let Some(c) = measurements.get("temperature_c").copied() {
        measurements.insert("temperature_f".into(), c.map(|c| c * 9.0 / 5.0 + 32.0));
    }
    if let Some(l_s) = measurements.get("flow_l_s").copied() {
        measurements.insert("flow_m3_h".into(), l_s.map(|l| l * 3.6));
    }
    let kind = s
        .kinds
        .get(&device)
        .cloned()
        .unwrap_or_else(|| kind_of(&measurements).to_owned());
    let enriched = Enriched {
        device,
        ts,
        kind,
        measurements,
    };
    Ok(vec![
        Output::new(enriched.to_json()).with_key(enriched.device.into_bytes()),
    ])
}

tidewater_sdk::export_processor!(process, init);

#[cfg(test)]
mod tests {
    use super::*;

    fn run(value: &str) -> Result<String, ProcessError> {
        let out = process(Event::new("sensor-readings", value))?;
        assert_eq!(out.len(), 1);
        Ok(String::from_utf8(out[0].value.clone().unwrap()).unwrap())
    }

    #[test]
    fn converts_celsius() {
        assert_eq!(
            run(r#"{"device":"buoy","ts":"2016-02-15T00:00:00Z","temperature (celsius)":4.929}"#)
                .unwrap(),
            r#"{"device":"buoy","ts":"2016-02-15T00:00:00Z","kind":"thermometer","measurements":{"temperature_c":4.929,"temperature_f":40.8722}}"#
        );
    }

    #[test]
    fn converts_flow_and_keys_by_device() {
        let out = process(Event::new(
            "t",
            r#"{"device":"pipe","ts":"x","Water flow [l/s]":100.59}"#,
        ))
        .unwrap();
        assert_eq!(out[0].key.as_deref(), Some(&b"pipe"[..]));
        assert_eq!(
            out[0].value.as_deref().unwrap(),
            br#"{"device":"pipe","ts":"x","kind":"flowmeter","measurements":{"flow_l_s":100.59,"flow_m3_h":362.124}}"#
        );
    }

    #[test]
    fn nil_cell_becomes_null_and_the_reading_goes_on() {
        assert_eq!(
            run(r#"{"device":"cgm","ts":"2010-03-24 09:51:00","isig":null,"glucose":258}"#)
                .unwrap(),
            r#"{"device":"cgm","ts":"2010-03-24 09:51:00","kind":"glucose-monitor","measurements":{"glucose_mg_dl":258,"isig_na":null}}"#
        );
        assert_eq!(
            run(r#"{"device":"cgm","ts":"t","isig":"nil","glucose":"258"}"#).unwrap(),
            r#"{"device":"cgm","ts":"t","kind":"glucose-monitor","measurements":{"glucose_mg_dl":258,"isig_na":null}}"#
        );
    }

    #[test]
    fn no_measurement_is_invalid() {
        assert_eq!(
            run(r#"{"device":"cgm","ts":"t","isig":"nil"}"#),
            Err(ProcessError::Invalid(
                "reading from cgm at t has no measurement that parses".into()
            ))
        );
        assert!(matches!(run("not json"), Err(ProcessError::Invalid(_))));
        assert!(matches!(run("[1]"), Err(ProcessError::Invalid(_))));
        assert!(matches!(
            process(Event {
                value: None,
                ..Event::new("t", "")
            }),
            Err(ProcessError::Invalid(_))
        ));
    }

    #[test]
    fn unknown_config_key_is_refused() {
        let config: Config = [("colour", "red")].into_iter().collect();
        assert!(init(&config).unwrap_err().contains("colour"));
    }
}
