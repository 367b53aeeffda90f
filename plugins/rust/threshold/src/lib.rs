//! `threshold`: watches enriched readings and raises alerts.
//!
//! Config (every entry optional, values are numbers in the measurement's unit):
//! `<measurement>.min`, `<measurement>.max` (bounds) and `<measurement>.delta`
//! (largest allowed change between two readings of one device).
//!
//! State, per device and measurement (state key `<device>/<measurement>`):
//! the last value, the count of readings, the min and the max seen, and
//! whether the last value was below, within or above the bounds.
//!
//! Alerts go to the default output topic, keyed by device, one JSON object each:
//! `{"device":..,"ts":..,"measurement":..,"alert":..,"value":..,"limit":..,"previous":..}`
//! where `alert` is `below-min` or `above-max` (the value left the bounds),
//! `back-in-range` (it came back; `limit` is the bound it crossed back over)
//! or `jump` (it changed by more than `delta`; `limit` is the delta).
//! A value that stays outside the bounds raises no further bound alerts.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use readings::{Enriched, push_number, push_string};
use tidewater_sdk::{Config, Event, Output, ProcessError, state};

#[derive(Debug, Default, Clone, Copy, PartialEq)]
struct Rule {
    min: Option<f64>,
    max: Option<f64>,
    delta: Option<f64>,
}

static RULES: OnceLock<BTreeMap<String, Rule>> = OnceLock::new();

/// Reads the rules; refuses unknown keys, values that are not numbers and a
/// `min` above its `max`.
///
/// # Errors
///
/// A message naming the offending key.
pub fn init(config: &Config) -> Result<(), String> {
    let mut rules: BTreeMap<String, Rule> = BTreeMap::new();
    for (key, value) in config.iter() {
        let Some((measurement, what)) = key.rsplit_once('.') else {
            return Err(format!(
                "unknown config key {key:?} (expected <measurement>.min, .max or .delta)"
            ));
        };
        let x: f64 = value
            .parse()
            .ok()
            .filter(|x: &f64| x.is_finite())
            .ok_or_else(|| format!("config {key} = {value:?} is not a number"))?;
        let rule = rules.entry(measurement.to_owned()).or_default();
        match what {
            "min" => rule.min = Some(x),
            "max" => rule.max = Some(x),
            "delta" if x > 0.0 => rule.delta = Some(x),
            "delta" => return Err(format!("config {key} = {value:?} must be above 0")),
            _ => {
                return Err(format!(
                    "unknown config key {key:?} (expected <measurement>.min, .max or .delta)"
                ));
            }
        }
    }
    for (m, r) in &rules {
        if let (Some(min), Some(max)) = (r.min, r.max)
            && min > max
        {
            return Err(format!("{m}.min ({min}) is above {m}.max ({max})"));
        }
    }
    RULES
        .set(rules)
        .map_err(|_| "init called twice".to_string())
}

/// Where a value stands against its bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Zone {
    Below,
    Within,
    Above,
}

/// What is kept per device and measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Track {
    count: u64,
    last: f64,
    min: f64,
    max: f64,
    zone: Zone,
}

impl Track {
    /// 8 + 4 * 8 + 1 bytes: count, last, min, max (little-endian), zone.
    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(33);
        b.extend_from_slice(&self.count.to_le_bytes());
        for x in [self.last, self.min, self.max] {
            b.extend_from_slice(&x.to_le_bytes());
        }
        b.push(self.zone as u8);
        b
    }

    fn decode(b: &[u8]) -> Option<Track> {
        let word = |i: usize| b.get(i * 8..i * 8 + 8)?.try_into().ok();
        Some(Track {
            count: u64::from_le_bytes(word(0)?),
            last: f64::from_le_bytes(word(1)?),
            min: f64::from_le_bytes(word(2)?),
            max: f64::from_le_bytes(word(3)?),
            zone: match b.get(32)? {
                0 => Zone::Below,
                1 => Zone::Within,
                2 => Zone::Above,
                _ => return None,
            },
        })
    }
}

fn zone(rule: &Rule, x: f64) -> Zone {
    match (rule.min, rule.max) {
        (Some(min), _) if x < min => Zone::Below,
        (_, Some(max)) if x > max => Zone::Above,
        _ => Zone::Within,
    }
}

fn alert(
    r: &Enriched,
    measurement: &str,
    kind: &str,
    value: f64,
    limit: f64,
    previous: Option<f64>,
) -> Output {
    let mut s = String::with_capacity(160);
    s.push_str("{\"device\":");
    push_string(&mut s, &r.device);
    s.push_str(",\"ts\":");
    push_string(&mut s, &r.ts);
    s.push_str(",\"measurement\":");
    push_string(&mut s, measurement);
    s.push_str(",\"alert\":");
    push_string(&mut s, kind);
    s.push_str(",\"value\":");
    push_number(&mut s, Some(value));
    s.push_str(",\"limit\":");
    push_number(&mut s, Some(limit));
    s.push_str(",\"previous\":");
    push_number(&mut s, previous);
    s.push('}');
    Output::new(s).with_key(r.device.as_bytes())
}

/// Updates the device's state and returns its alerts; see the crate docs.
///
/// # Errors
///
/// [`ProcessError::Invalid`] for a value that is not an enriched reading.
pub fn process(event: Event) -> Result<Vec<Output>, ProcessError> {
    let value = event
        .value
        .as_deref()
        .ok_or_else(|| ProcessError::Invalid("tombstone: a reading needs a value".into()))?;
    let reading = Enriched::parse(value).map_err(ProcessError::Invalid)?;
    let rules = RULES.get_or_init(BTreeMap::new);
    let mut alerts = Vec::new();
    for (measurement, value) in &reading.measurements {
        let Some(x) = *value else { continue };
        let rule = rules.get(measurement).copied().unwrap_or_default();
        let key = format!("{}/{}", reading.device, measurement);
        let before = state::get(key.as_bytes()).and_then(|b| Track::decode(&b));
        let now = zone(&rule, x);
        let was = before.map_or(Zone::Within, |t| t.zone);
        let previous = before.map(|t| t.last);
        if now != was {
            let (kind, limit) = match (now, was) {
                (Zone::Below, _) => ("below-min", rule.min),
                (Zone::Above, _) => ("above-max", rule.max),
                (Zone::Within, Zone::Below) => ("back-in-range", rule.min),
                (Zone::Within, _) => ("back-in-range", rule.max),
            };
            if let Some(limit) = limit {
                alerts.push(alert(&reading, measurement, kind, x, limit, previous));
            }
        }
        if let (Some(delta), Some(prev)) = (rule.delta, previous)
            && (x - prev).abs() > delta
        {
            alerts.push(alert(&reading, measurement, "jump", x, delta, previous));
        }
        let track = match before {
            Some(t) => Track {
                count: t.count + 1,
                last: x,
                min: t.min.min(x),
                max: t.max.max(x),
                zone: now,
            },
            None => Track {
                count: 1,
                last: x,
                min: x,
                max: x,
                zone: now,
            },
        };
        state::set(key.as_bytes(), &track.encode());
    }
    Ok(alerts)
}

tidewater_sdk::export_processor!(process, init);

#[cfg(test)]
mod tests {
    use super::*;

    fn reading(flow: f64) -> Event {
        Event::new(
            "readings-enriched",
            format!(
                r#"{{"device":"pipe","ts":"t","kind":"flowmeter","measurements":{{"flow_l_s":{flow}}}}}"#
            ),
        )
    }

    fn texts(out: Vec<Output>) -> Vec<String> {
        out.into_iter()
            .map(|o| String::from_utf8(o.value.unwrap()).unwrap())
            .collect()
    }

    #[test]
    fn alerts_on_crossing_and_jump_and_keeps_state() {
        state::clear();
        let config: Config = [("flow_l_s.min", "50"), ("flow_l_s.delta", "30")]
            .into_iter()
            .collect();
        init(&config).unwrap();
        assert!(process(reading(100.0)).unwrap().is_empty());
        assert_eq!(
            texts(process(reading(24.5)).unwrap()),
            [
                r#"{"device":"pipe","ts":"t","measurement":"flow_l_s","alert":"below-min","value":24.5,"limit":50,"previous":100}"#,
                r#"{"device":"pipe","ts":"t","measurement":"flow_l_s","alert":"jump","value":24.5,"limit":30,"previous":100}"#,
            ]
        );
        // Still below: no second bound alert.
        assert!(process(reading(25.0)).unwrap().is_empty());
        assert_eq!(
            texts(process(reading(60.0)).unwrap()),
            [
                r#"{"device":"pipe","ts":"t","measurement":"flow_l_s","alert":"back-in-range","value":60,"limit":50,"previous":25}"#,
                r#"{"device":"pipe","ts":"t","measurement":"flow_l_s","alert":"jump","value":60,"limit":30,"previous":25}"#,
            ]
        );
        let t = Track::decode(&state::get(b"pipe/flow_l_s").unwrap()).unwrap();
        assert_eq!(
            t,
            Track {
                count: 4,
                last: 60.0,
                min: 24.5,
                max: 100.0,
                zone: Zone::Within
            }
        );
    }

    #[test]
    fn track_encoding_round_trips() {
        let t = Track {
            count: 7,
            last: -1.5,
            min: -3.0,
            max: 9.25,
            zone: Zone::Above,
        };
        assert_eq!(Track::decode(&t.encode()), Some(t));
        assert_eq!(Track::decode(&[1, 2, 3]), None);
    }
}
