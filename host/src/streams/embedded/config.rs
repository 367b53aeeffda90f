//! `[log]` and `[[topic]]`: the embedded log's settings and the topics to
//! create up front, with their checks.

use std::time::Duration;

use serde::Deserialize;

use crate::streams::topic::{MAX_PARTITIONS, check_topic_name};

/// `[log]`: the embedded log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Partitions of a topic created implicitly (by an output or a produce). Default 1.
    pub default_partitions: u32,
    /// How often retention and idempotency-key expiry run. Default 1 minute.
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
    /// The disk quota of the log, in bytes of stored records (all topics,
    /// all partitions, as `tidewater topics` counts them). While the log
    /// holds this much, ingest (HTTP, MQTT) is refused with backpressure
    /// (HTTP 503 and `Retry-After`; MQTT messages stay unacknowledged at
    /// the broker) until retention frees room; processors' outputs are
    /// still written. Absent: no quota.
    pub max_bytes: Option<u64>,
    /// redb's page cache for the data dir's database, in bytes (at least
    /// 1 MiB). Default [`crate::db::DEFAULT_CACHE_BYTES`] (32 MiB), which
    /// fits small edge boxes; a larger one saves copies from the OS's page
    /// cache when many keys and much state are read back.
    pub cache_bytes: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            default_partitions: 1,
            maintenance_interval: Duration::from_secs(60),
            max_bytes: None,
            cache_bytes: crate::db::DEFAULT_CACHE_BYTES,
        }
    }
}

/// `[[topic]]`: a topic to create, with its retention.
///
/// ```toml
/// [[topic]]
/// name = "sensor-readings"
/// retention = "7d"             # or, to say what happens to unread records:
/// # retention.time = "7d"
/// # retention.unread = "keep"  # default: records some consumer has not read stay;
/// #                            # "delete": they go too (Kafka's behaviour), counted
/// retention_bytes = 1073741824
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// The topic name (Kafka's rule: a-z A-Z 0-9 . _ -).
    pub name: String,
    /// Partition count; default `log.default_partitions`.
    pub partitions: Option<u32>,
    /// How long records stay after they are appended (by append time, not
    /// their own device time), and what happens to records some consumer
    /// has not read when their time is up.
    #[serde(default)]
    pub retention: Retention,
    /// Trim each partition to at most this many bytes. Absent: no limit.
    /// Records some consumer has not read are kept unless
    /// `retention.unread = "delete"`.
    pub retention_bytes: Option<u64>,
}

/// What retention does with records past their time (or beyond the size
/// limit) that some consumer (a processor, a forward) has not read yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Unread {
    /// Keep them, and the records after them, until every consumer has
    /// read them (the default).
    #[default]
    Keep,
    /// Delete them anyway, as Kafka does; each consumer's count of records
    /// deleted unread shows in `stats` and `/metrics`, and a WARN is logged.
    Delete,
}

/// `retention` of a `[[topic]]`: a duration (`retention = "7d"`) or a table
/// (`retention.time = "7d"`, `retention.unread = "delete"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Remove records appended longer ago than this. `None`: keep forever.
    pub time: Option<Duration>,
    /// What to do with records some consumer has not read.
    pub unread: Unread,
}

impl<'de> Deserialize<'de> for Retention {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Table {
            #[serde(default, with = "humantime_serde")]
            time: Option<Duration>,
            #[serde(default)]
            unread: Unread,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = Retention;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(r#"a duration such as "7d", or a table with time and unread"#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Retention, E> {
                let time = humantime::parse_duration(v)
                    .map_err(|e| E::custom(format!("retention {v:?}: {e}")))?;
                Ok(Retention {
                    time: Some(time),
                    unread: Unread::Keep,
                })
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<Retention, A::Error> {
                let t = Table::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(Retention {
                    time: t.time,
                    unread: t.unread,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// The smallest `[log] cache_bytes`: 1 MiB.
pub const MIN_CACHE_BYTES: usize = 1 << 20;

/// Checks `[log]` and the `[[topic]]` list: partition counts in range, a
/// cache of at least [`MIN_CACHE_BYTES`],
/// valid names, no topic listed twice.
///
/// # Errors
///
/// The first problem found, naming the section and the topic.
pub fn check_log_config(log: &LogConfig, topics: &[TopicConfig]) -> Result<(), String> {
    let max = MAX_PARTITIONS;
    if !(1..=max).contains(&log.default_partitions) {
        return Err(format!("log.default_partitions must be 1 to {max}"));
    }
    if log.cache_bytes < MIN_CACHE_BYTES {
        return Err(format!(
            "log.cache_bytes is {} bytes; at least {MIN_CACHE_BYTES} (1 MiB) is needed",
            log.cache_bytes
        ));
    }
    let mut topic_names = std::collections::BTreeSet::new();
    for t in topics {
        check_topic_name(&t.name).map_err(|e| format!("[[topic]] {e}"))?;
        if t.partitions.is_some_and(|p| !(1..=max).contains(&p)) {
            return Err(format!(
                "[[topic]] {:?}: partitions must be 1 to {max}",
                t.name
            ));
        }
        if !topic_names.insert(t.name.as_str()) {
            return Err(format!("[[topic]] {:?} is listed twice", t.name));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct W {
        topic: Vec<TopicConfig>,
    }

    fn parse(text: &str) -> Result<Retention, String> {
        toml::from_str::<W>(&format!("[[topic]]\nname = \"t\"\n{text}"))
            .map(|w| w.topic[0].retention)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn retention_is_a_duration_or_a_table() {
        let week = Some(Duration::from_secs(7 * 86_400));
        assert_eq!(parse(""), Ok(Retention::default()));
        assert_eq!(
            parse("retention = \"7d\""),
            Ok(Retention {
                time: week,
                unread: Unread::Keep
            })
        );
        assert_eq!(
            parse("retention.time = \"7d\"\nretention.unread = \"delete\""),
            Ok(Retention {
                time: week,
                unread: Unread::Delete
            })
        );
        assert_eq!(
            parse("retention = { unread = \"keep\" }"),
            Ok(Retention::default())
        );
        let e = parse("retention.unread = \"drop\"").unwrap_err();
        assert!(e.contains("unknown variant `drop`"), "{e}");
        let e = parse("retention.tme = \"1d\"").unwrap_err();
        assert!(e.contains("unknown field `tme`"), "{e}");
        let e = parse("retention = \"soon\"").unwrap_err();
        assert!(e.contains("retention \"soon\""), "{e}");
    }

    #[test]
    fn the_page_cache_is_32_mib_unless_set_and_at_least_1_mib() {
        let log = |text: &str| toml::from_str::<LogConfig>(text).unwrap();
        assert_eq!(log("").cache_bytes, 33_554_432);
        assert_eq!(log("cache_bytes = 8388608").cache_bytes, 8_388_608);
        assert_eq!(check_log_config(&log("cache_bytes = 1048576"), &[]), Ok(()));
        assert_eq!(
            check_log_config(&log("cache_bytes = 1048575"), &[]),
            Err("log.cache_bytes is 1048575 bytes; at least 1048576 (1 MiB) is needed".into())
        );
    }
}
