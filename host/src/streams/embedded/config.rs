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
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            default_partitions: 1,
            maintenance_interval: Duration::from_secs(60),
            max_bytes: None,
        }
    }
}

/// `[[topic]]`: a topic to create, with its retention.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    /// The topic name (Kafka's rule: a-z A-Z 0-9 . _ -).
    pub name: String,
    /// Partition count; default `log.default_partitions`.
    pub partitions: Option<u32>,
    /// Remove records appended longer ago than this. Absent: keep forever.
    #[serde(default, with = "humantime_serde")]
    pub retention: Option<Duration>,
    /// Trim each partition to at most this many bytes. Absent: no limit.
    pub retention_bytes: Option<u64>,
}

/// Checks `[log]` and the `[[topic]]` list: partition counts in range,
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
