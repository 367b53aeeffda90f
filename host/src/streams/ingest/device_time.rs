//! The device-time policy: which timestamp a record from a device gets, on
//! every way in (`produce`, `forward`, and the HTTP and MQTT ingest of
//! `run`).
//!
//! Device clocks drift, reset to 1970 after a power loss, or are set a year
//! ahead. A broker refuses a record stamped more than an hour ahead of its
//! own clock (Kafka 4's `log.message.timestamp.after.max.ms`), librdkafka
//! reads a timestamp of 0 as "now", and a record stamped decades back is
//! removed at once by a broker's time-based retention. So before a record is
//! stored, [`DeviceTimePolicy::stamp`] decides its timestamp:
//!
//! - the device's own time, when it lies within the window
//!   `[ingest − max_behind, ingest + max_ahead]` around the ingest clock and
//!   after 1970-01-01T00:00:00Z;
//! - else the ingest time, with the device's time kept, in ms since the Unix
//!   epoch, in the header [`DEVICE_TIME_HEADER`], and the substitution
//!   counted per topic ([`count_in`], shown by `tidewater topics`, `stats`
//!   and `/metrics`).
//!
//! The record's value is never changed: a CSV row's `ts` field still says
//! what the device wrote.
//!
//! ```toml
//! [device_time]          # the window; these are the defaults
//! max_ahead = "15m"      # a device up to 15 minutes fast keeps its time
//! max_behind = "20y"     # archives up to 20 years old keep theirs
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};

use crate::db::StorageError;
use crate::streams::Record;
use crate::streams::embedded::{Log, LogError, append_all_in, ensure_topic_in};

/// The header that keeps a device's own time, in ms since the Unix epoch
/// (decimal text, may be negative), on a record whose timestamp the policy
/// replaced with the ingest time.
pub const DEVICE_TIME_HEADER: &str = "tidewater-device-time";

/// One humantime year (365.25 days), in seconds.
const YEAR_S: u64 = 31_557_600;
/// The longest window either way: 1000 years (keeps the ms arithmetic far
/// from overflow).
const MAX_WINDOW: Duration = Duration::from_secs(1000 * YEAR_S);

/// `[device_time]`: the window around the ingest clock in which a device's
/// time is trusted.
///
/// The default `max_ahead` (15 minutes) keeps a device whose clock runs a
/// little fast, and stays well inside the hour Kafka brokers accept ahead of
/// their clock, so a record stored on the embedded log today can still be
/// forwarded to Kafka later. The default `max_behind` (20 years) keeps
/// archives and buffered readings, and catches the clock resets devices fall
/// back to: 1970-01-01 (Unix), 1980-01-06 (GPS), 2000-01-01 (RTC chips).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceTimePolicy {
    /// How far ahead of the ingest clock a device's time may be. Default 15 minutes.
    #[serde(with = "humantime_serde")]
    pub max_ahead: Duration,
    /// How far behind the ingest clock a device's time may be. Default 20 years.
    #[serde(with = "humantime_serde")]
    pub max_behind: Duration,
}

impl Default for DeviceTimePolicy {
    fn default() -> Self {
        DeviceTimePolicy {
            max_ahead: Duration::from_secs(15 * 60),
            max_behind: Duration::from_secs(20 * YEAR_S),
        }
    }
}

/// Which timestamp [`DeviceTimePolicy::stamp`] gave a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamp {
    /// The device's time, within the window.
    Device,
    /// The ingest time: the device's time was more than `max_ahead` ahead.
    Ahead,
    /// The ingest time: the device's time was more than `max_behind` behind,
    /// or at or before 1970-01-01T00:00:00Z (a reset clock; also what
    /// librdkafka cannot send: it reads 0 as "now").
    Behind,
}

/// Substitutions counted by reason, for one topic.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tally {
    /// Records whose device time was too far ahead.
    pub ahead: u64,
    /// Records whose device time was too far behind, or at/before the epoch.
    pub behind: u64,
}

impl Tally {
    /// Counts one stamp (a [`Stamp::Device`] counts nothing).
    pub fn add(&mut self, stamp: Stamp) {
        match stamp {
            Stamp::Device => {}
            Stamp::Ahead => self.ahead += 1,
            Stamp::Behind => self.behind += 1,
        }
    }

    /// All substitutions.
    pub fn total(&self) -> u64 {
        self.ahead + self.behind
    }
}

/// `d` for people: humantime's units with a space before each and minutes
/// as `min`: `20 years`, `15 min`, `1 h 30 min`, `1 s 500 ms`, `0 s`.
pub fn readable_duration(d: Duration) -> String {
    humantime::format_duration(d)
        .to_string()
        .split(' ')
        .map(|part| {
            let at = part
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(part.len());
            let unit = match &part[at..] {
                "m" => "min",
                "us" => "µs",
                u => u,
            };
            format!("{} {unit}", &part[..at])
        })
        .collect::<Vec<_>>()
        .join(" ")
}

impl DeviceTimePolicy {
    /// Checks the window.
    ///
    /// # Errors
    ///
    /// A message naming the key when a bound is over 1000 years.
    pub fn check(&self) -> Result<(), String> {
        for (key, d) in [
            ("max_ahead", self.max_ahead),
            ("max_behind", self.max_behind),
        ] {
            if d > MAX_WINDOW {
                return Err(format!(
                    "device_time.{key} is {}, the most is 1000 years",
                    readable_duration(d)
                ));
            }
        }
        Ok(())
    }

    /// Which timestamp a record stamped `device_ms` by its device gets when
    /// it arrives at `ingest_ms` (both in ms since the Unix epoch). Pure.
    pub fn judge(&self, device_ms: i64, ingest_ms: i64) -> Stamp {
        let ahead = self.max_ahead.as_millis() as i64;
        let behind = self.max_behind.as_millis() as i64;
        if device_ms <= 0 || device_ms < ingest_ms.saturating_sub(behind) {
            Stamp::Behind
        } else if device_ms > ingest_ms.saturating_add(ahead) {
            Stamp::Ahead
        } else {
            Stamp::Device
        }
    }

    /// **The entry point for every way in**: applies the policy to `record`
    /// arriving at `ingest_ms` (ms since the Unix epoch, the ingest clock),
    /// before it is appended. Its `timestamp_ms` is taken as the device's
    /// time; when [`judge`](Self::judge) rejects it, the timestamp becomes
    /// `ingest_ms` and the device's time is added as the header
    /// [`DEVICE_TIME_HEADER`] (unless the record has one already: the
    /// policy was applied before, and the first device time is kept).
    /// Returns the verdict, for the caller to count ([`Tally::add`], then
    /// [`count_in`]). Pure: the same input gives the same record.
    pub fn stamp(&self, record: &mut Record, ingest_ms: i64) -> Stamp {
        let verdict = self.judge(record.timestamp_ms, ingest_ms);
        if verdict != Stamp::Device {
            if record.header(DEVICE_TIME_HEADER).is_none() {
                record.headers.push((
                    DEVICE_TIME_HEADER.to_owned(),
                    record.timestamp_ms.to_string().into_bytes(),
                ));
            }
            record.timestamp_ms = ingest_ms;
        }
        verdict
    }

    /// [`stamp`](Self::stamp)s every record at `ingest_ms`; returns the tally.
    pub fn stamp_all<'a>(
        &self,
        records: impl IntoIterator<Item = &'a mut Record>,
        ingest_ms: i64,
    ) -> Tally {
        let mut tally = Tally::default();
        for r in records {
            tally.add(self.stamp(r, ingest_ms));
        }
        tally
    }
}

/// (topic, reason: `ahead` | `behind`) → records stamped with the ingest time
const COUNTS: TableDefinition<(&str, &str), u64> = TableDefinition::new("ingest.device_time");

/// Adds `tally` to `topic`'s substitution counts inside `txn` (the
/// transaction that stores the records, where there is one).
///
/// # Errors
///
/// Storage errors.
pub fn count_in(txn: &WriteTransaction, topic: &str, tally: &Tally) -> Result<(), StorageError> {
    if tally.total() == 0 {
        return Ok(());
    }
    let mut t = txn.open_table(COUNTS)?;
    for (reason, n) in [("ahead", tally.ahead), ("behind", tally.behind)] {
        if n > 0 {
            let old = t.get((topic, reason))?.map_or(0, |g| g.value());
            t.insert((topic, reason), old + n)?;
        }
    }
    Ok(())
}

/// Every topic's substitution counts, since the data dir was created.
///
/// # Errors
///
/// Storage errors.
pub fn counts(db: &redb::Database) -> Result<BTreeMap<String, Tally>, StorageError> {
    let txn = db.begin_read()?;
    let table = match txn.open_table(COUNTS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out: BTreeMap<String, Tally> = BTreeMap::new();
    for e in table.iter()? {
        let (k, v) = e?;
        let (topic, reason) = k.value();
        let t = out.entry(topic.to_owned()).or_default();
        match reason {
            "ahead" => t.ahead = v.value(),
            _ => t.behind = v.value(),
        }
    }
    Ok(out)
}

/// Appends `records` from devices to `topic` of the embedded log in one
/// durable transaction: each is [`stamp`](DeviceTimePolicy::stamp)ed with
/// the append time as the ingest clock (so a replaced timestamp equals the
/// record's append time), and the substitutions are counted in the same
/// transaction. Creates the topic with `partitions` partitions (else the
/// log's default) when missing. Returns each record's partition and offset,
/// and the tally.
///
/// # Errors
///
/// As [`Log::append_creating`]; on error nothing was appended or counted.
pub fn append_stamped(
    log: &Log,
    topic: &str,
    partitions: Option<u32>,
    records: impl IntoIterator<Item = Record>,
    policy: &DeviceTimePolicy,
) -> Result<(Vec<(u32, u64)>, Tally), LogError> {
    let txn = log.db().begin_write()?;
    ensure_topic_in(&txn, topic, partitions, log.default_partitions())?;
    let now = crate::db::now_ms();
    let mut tally = Tally::default();
    let records: Vec<Record> = records
        .into_iter()
        .map(|mut r| {
            tally.add(policy.stamp(&mut r, now as i64));
            r
        })
        .collect();
    let placed = append_all_in(&txn, topic, &records, now)?;
    count_in(&txn, topic, &tally)?;
    txn.commit()?;
    Ok((placed, tally))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_000_000_000; // 2026-11-29T…Z
    const DAY: i64 = 86_400_000;

    fn rec(ts: i64) -> Record {
        Record {
            timestamp_ms: ts,
            ..Record::default()
        }
    }

    #[test]
    fn the_window_decides() {
        let p = DeviceTimePolicy::default();
        assert_eq!(p.judge(NOW, NOW), Stamp::Device);
        assert_eq!(p.judge(NOW + 15 * 60_000, NOW), Stamp::Device);
        assert_eq!(p.judge(NOW + 15 * 60_000 + 1, NOW), Stamp::Ahead);
        assert_eq!(p.judge(NOW + DAY, NOW), Stamp::Ahead);
        // 2038-01-19T03:14:08Z, one second past i32 time.
        assert_eq!(p.judge(2_147_483_648_000, NOW), Stamp::Ahead);
        // 2010: an archive, kept.
        assert_eq!(p.judge(1_269_424_260_000, NOW), Stamp::Device);
        // Resets: the Unix epoch, the GPS epoch, 2000-01-01.
        assert_eq!(p.judge(0, NOW), Stamp::Behind);
        assert_eq!(p.judge(315_964_800_000, NOW), Stamp::Behind);
        assert_eq!(p.judge(946_684_800_000, NOW), Stamp::Behind);
        assert_eq!(p.judge(-1, NOW), Stamp::Behind);
        // 0 is never a device time, whatever the window.
        let wide = DeviceTimePolicy {
            max_ahead: MAX_WINDOW,
            max_behind: MAX_WINDOW,
        };
        assert_eq!(wide.judge(0, NOW), Stamp::Behind);
        assert_eq!(wide.judge(1, NOW), Stamp::Device);
        assert_eq!(wide.judge(i64::MAX, i64::MAX - 5), Stamp::Device);
    }

    #[test]
    fn a_replaced_time_is_kept_in_a_header_once() {
        let p = DeviceTimePolicy::default();
        let mut r = rec(NOW + DAY);
        assert_eq!(p.stamp(&mut r, NOW), Stamp::Ahead);
        assert_eq!(r.timestamp_ms, NOW);
        assert_eq!(
            r.headers,
            [(
                DEVICE_TIME_HEADER.to_owned(),
                (NOW + DAY).to_string().into()
            )]
        );
        // Applied again later (forward): the timestamp is in the window now.
        let again = r.clone();
        assert_eq!(p.stamp(&mut r, NOW + 1000), Stamp::Device);
        assert_eq!(r, again);
        // Applied again far later with a narrow window: the first device time stays.
        let narrow = DeviceTimePolicy {
            max_ahead: Duration::ZERO,
            max_behind: Duration::ZERO,
        };
        assert_eq!(narrow.stamp(&mut r, NOW + 5000), Stamp::Behind);
        assert_eq!(r.timestamp_ms, NOW + 5000);
        assert_eq!(r.headers, again.headers);
        let mut kept = rec(NOW - 5);
        assert_eq!(p.stamp(&mut kept, NOW), Stamp::Device);
        assert_eq!(kept, rec(NOW - 5));
    }

    #[test]
    fn tallies_and_counts() {
        let p = DeviceTimePolicy::default();
        let mut records = [
            rec(0),
            rec(NOW),
            rec(NOW + DAY),
            rec(-7),
            rec(NOW + 2 * DAY),
        ];
        let tally = p.stamp_all(records.iter_mut(), NOW);
        assert_eq!(
            tally,
            Tally {
                ahead: 2,
                behind: 2
            }
        );
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        assert!(counts(&db).unwrap().is_empty());
        for _ in 0..2 {
            let txn = db.begin_write().unwrap();
            count_in(&txn, "t", &tally).unwrap();
            count_in(&txn, "u", &Tally::default()).unwrap();
            txn.commit().unwrap();
        }
        let c = counts(&db).unwrap();
        assert_eq!(c.len(), 1);
        assert_eq!(
            c["t"],
            Tally {
                ahead: 4,
                behind: 4
            }
        );
    }

    #[test]
    fn config_parses_and_checks() {
        #[derive(Deserialize)]
        struct W {
            device_time: DeviceTimePolicy,
        }
        let w: W = toml::from_str("[device_time]\nmax_ahead = \"1h\"\n").unwrap();
        assert_eq!(w.device_time.max_ahead, Duration::from_secs(3600));
        assert_eq!(
            w.device_time.max_behind,
            DeviceTimePolicy::default().max_behind
        );
        assert_eq!(
            toml::from_str::<W>("[device_time]\nmax_behind = \"20y\"\n")
                .unwrap()
                .device_time,
            DeviceTimePolicy::default()
        );
        assert!(toml::from_str::<W>("[device_time]\nahead = \"1h\"\n").is_err());
        let too_far = DeviceTimePolicy {
            max_ahead: Duration::from_secs(1001 * YEAR_S),
            ..Default::default()
        };
        assert!(
            too_far
                .check()
                .unwrap_err()
                .starts_with("device_time.max_ahead is 1001 years, the most")
        );
    }

    #[test]
    fn durations_read_with_a_space_before_the_unit() {
        let d = DeviceTimePolicy::default();
        assert_eq!(readable_duration(d.max_behind), "20 years");
        assert_eq!(readable_duration(d.max_ahead), "15 min");
        assert_eq!(
            readable_duration(Duration::from_secs(YEAR_S + 90 * 60)),
            "1 year 1 h 30 min"
        );
        assert_eq!(readable_duration(Duration::from_millis(1500)), "1 s 500 ms");
        assert_eq!(readable_duration(Duration::from_micros(7)), "7 µs");
        assert_eq!(readable_duration(Duration::ZERO), "0 s");
    }
}
