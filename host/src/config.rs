//! The TOML config of `tidewater run`.
//!
//! ```toml
//! [log]
//! default_partitions = 1          # partitions of a topic created implicitly
//! maintenance_interval = "1m"     # how often retention and key expiry run
//!
//! [[topic]]                       # optional: topics to create, with retention
//! name = "sensor-readings"
//! partitions = 4
//! retention = "7d"                # by append time; absent = keep forever
//! retention_bytes = 1073741824    # per partition; absent = no size limit
//!
//! [[processor]]
//! name = "enrich"                 # also its consumer name and state scope
//! component = "enrich.wasm"       # relative to this file
//! inputs = ["sensor-readings"]
//! output = "readings-enriched"    # where outputs without a topic go
//! dead_letter_topic = "enrich.dlq" # default: <name>.dlq
//! batch.max_records = 1024
//! idempotency.key = "json:/device,/ts"  # record-key | hash | offset | json:/ptr,...
//! idempotency.ttl = "7d"
//! idempotency.unkeyed = "dead-letter"   # or "process"
//! on_error = "dead-letter"        # or "halt-partition", "skip"
//! limits.call_deadline = "1s"
//! limits.init_deadline = "5s"
//! limits.memory_bytes = 67108864
//! limits.transient_retries = 3
//! limits.retry_backoff = "100ms"
//! limits.log_lines_per_s = 100
//! limits.max_outputs_per_event = 10000
//! limits.max_output_bytes_per_batch = 67108864
//! limits.max_state_key_bytes = 4096
//! limits.max_state_value_bytes = 1048576
//! limits.max_state_bytes_per_batch = 16777216
//! group = "enrich"               # Kafka: the consumer group (default: the name)
//! exactly_once = false            # Kafka: outputs and offsets in one transaction
//! canary = { events = 1000, max_error_rate = 0.01 }  # new versions roll back if more fail
//! [processor.config]              # handed to the component's init, as strings
//! "field.V1" = "temperature_c"
//!
//! [[forward]]                     # optional: ship an embedded-log topic to Kafka (store-and-forward)
//! from = "alerts"
//! topic = "site-7.alerts"         # the Kafka topic (default: the same as from)
//! batch = 1000                    # records per batch and position commit
//! kafka.brokers = "hq.example:9092"  # the cluster; the other keys of [kafka] too
//!
//! [kafka]                         # optional: use Apache Kafka instead of the embedded log
//! brokers = "127.0.0.1:9092"
//! create_topics = true            # create missing topics at start
//! partitions = 1                  # of the topics it creates
//! replication_factor = 1
//! flush_timeout = "2m"            # longest wait for the broker's acknowledgements
//! [kafka.properties]              # passed to librdkafka as is (TLS, SASL, timeouts)
//! "security.protocol" = "SASL_SSL"
//!
//! [admin]                         # optional: the admin HTTP API of `run` (see crate::admin)
//! listen = "127.0.0.1:7070"       # or `run --admin ADDR`; absent: no API
//! token = "..."                   # else TIDEWATER_ADMIN_TOKEN, else a random one in the data dir
//! max_upload_bytes = 67108864     # largest component accepted
//! watch_dir = "plugins"           # a new or changed <processor>.wasm here is deployed and activated
//! watch_interval = "1s"
//! ```
//!
//! Unknown keys are refused, with the line they are on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::idempotency::KeyMode;
use crate::log::check_topic_name;

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped keys.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where (line and column).
        message: String,
    },
    /// The values do not make sense together.
    #[error("config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The largest `limits.memory_bytes`: 4 GiB, all a 32-bit WebAssembly
/// instance can address.
pub const MAX_MEMORY_BYTES: usize = 4 << 30;
/// The longest `limits.call_deadline` and `limits.init_deadline`: 10 minutes.
pub const MAX_DEADLINE: Duration = Duration::from_secs(600);
/// The longest `limits.retry_backoff`: 30 s, where each wait is capped.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);
/// The most `limits.transient_retries`.
pub const MAX_TRANSIENT_RETRIES: u32 = 100;

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The embedded log.
    #[serde(default)]
    pub log: LogConfig,
    /// Topics to create up front.
    #[serde(default, rename = "topic")]
    pub topics: Vec<TopicConfig>,
    /// The processors to run.
    #[serde(default, rename = "processor")]
    pub processors: Vec<ProcessorConfig>,
    /// Apache Kafka: when present, every processor reads and writes Kafka
    /// topics instead of the embedded log.
    pub kafka: Option<crate::kafka::KafkaConfig>,
    /// The admin HTTP API (and the plugins-dir watcher) of `tidewater run`.
    pub admin: Option<crate::admin::AdminConfig>,
    /// Embedded-log topics shipped to a Kafka cluster while the processors
    /// run (store-and-forward from the edge).
    #[serde(default, rename = "forward")]
    pub forwards: Vec<crate::forward::ForwardConfig>,
}

/// `[log]`: the embedded log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Partitions of a topic created implicitly (by an output or a produce). Default 1.
    pub default_partitions: u32,
    /// How often retention and idempotency-key expiry run. Default 1 minute.
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            default_partitions: 1,
            maintenance_interval: Duration::from_secs(60),
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

/// `[[processor]]`: one named job.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessorConfig {
    /// The processor's name: its consumer name, state scope and key scope.
    pub name: String,
    /// The component file, relative to the config file.
    pub component: PathBuf,
    /// Topics to read.
    pub inputs: Vec<String>,
    /// The topic outputs go to unless they name another.
    pub output: String,
    /// Where failed events go. Default `<name>.dlq`.
    pub dead_letter_topic: Option<String>,
    /// Batching.
    #[serde(default)]
    pub batch: BatchConfig,
    /// Idempotency keys.
    #[serde(default)]
    pub idempotency: IdempotencyConfig,
    /// Limits per instance and call.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// What to do with an event the component fails on. Default `dead-letter`.
    #[serde(default)]
    pub on_error: OnError,
    /// Handed to the component's `init` as (key, value) strings, sorted by key.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
    /// Kafka only: the consumer group. Default: the processor's name.
    pub group: Option<String>,
    /// Kafka only: publish outputs and commit offsets in one Kafka
    /// transaction, so `read_committed` readers see each output once. Default false.
    #[serde(default)]
    pub exactly_once: bool,
    /// Every activation of a new version (through the admin API or the
    /// watched directory) is a canary: `{ events = N, max_error_rate = R }`.
    /// Absent: only when the activation asks for one.
    pub canary: Option<crate::control::CanaryPlan>,
}

/// `batch`: how many events go into one call and one commit.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchConfig {
    /// Most events per batch. Default 1024. Each batch is one durable commit
    /// (about 5–10 ms on a disk), so small batches cost throughput.
    pub max_records: usize,
    /// Most bytes of records per batch. Default 16 MiB.
    pub max_bytes: usize,
}

impl Default for BatchConfig {
    fn default() -> Self {
        BatchConfig {
            max_records: 1024,
            max_bytes: 16 << 20,
        }
    }
}

/// What to do with an event whose idempotency key cannot be derived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unkeyed {
    /// Send it to the dead-letter topic with the reason (default).
    #[default]
    DeadLetter,
    /// Process it without deduplication.
    Process,
}

/// What a processor does with an event its component fails on: `invalid`,
/// `transient` after its retries, a trap, a timeout, a memory or other
/// limit breach. (Conflicts and events without a key always go to the
/// dead-letter topic; `fatal` always pauses the processor.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnError {
    /// Send it to the dead-letter topic with the reason, go on (default).
    #[default]
    DeadLetter,
    /// Stop reading its partition: the batch holding it is not committed,
    /// the partition's position stays before it until the processor is
    /// started again; other partitions go on. `stats` shows where and why.
    HaltPartition,
    /// Drop it, go on: counted (`skipped`) and logged, never published.
    Skip,
}

/// `idempotency`: how keys are derived and how long they are kept.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdempotencyConfig {
    /// `record-key`, `hash`, `offset` (default) or `json:/ptr[,/ptr...]`; an
    /// `idempotency-key` header always wins.
    pub key: String,
    /// How long a key is remembered, from when it was first recorded. Default 7 days.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// What to do when the key cannot be derived.
    pub unkeyed: Unkeyed,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            key: "offset".into(),
            ttl: Duration::from_secs(7 * 24 * 3600),
            unkeyed: Unkeyed::DeadLetter,
        }
    }
}

/// `limits`: what one instance may use, and how failures are retried.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Longest one call of `process` may run. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub call_deadline: Duration,
    /// Longest instantiation plus `init` may run. Default 5 s.
    #[serde(with = "humantime_serde")]
    pub init_deadline: Duration,
    /// Most linear memory per instance, in bytes. Default 64 MiB.
    pub memory_bytes: usize,
    /// Retries of an event that returned `transient`. Default 3.
    pub transient_retries: u32,
    /// Wait before the first retry; doubles each time (at most 30 s), with
    /// jitter: the wait is drawn between half of it and all of it. Default 100 ms.
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// Most log lines per second from the component: calls of the `log`
    /// interface, and each of stdout and stderr (one line, one entry). The
    /// rest are dropped and counted. Default 100.
    pub log_lines_per_s: u32,
    /// Most outputs one event may produce. Default 10,000.
    pub max_outputs_per_event: usize,
    /// Most bytes of outputs (topic, key, value, headers) one call may
    /// return, in bytes. Default 64 MiB.
    pub max_output_bytes_per_batch: usize,
    /// Longest state key, in bytes. Default 4096.
    pub max_state_key_bytes: usize,
    /// Longest state value, in bytes. Default 1 MiB.
    pub max_state_value_bytes: usize,
    /// Most state one call may write, in bytes (keys and values, plus 64
    /// bytes per write). Default 16 MiB.
    pub max_state_bytes_per_batch: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            call_deadline: Duration::from_secs(1),
            init_deadline: Duration::from_secs(5),
            memory_bytes: 64 << 20,
            transient_retries: 3,
            retry_backoff: Duration::from_millis(100),
            log_lines_per_s: 100,
            max_outputs_per_event: 10_000,
            max_output_bytes_per_batch: 64 << 20,
            max_state_key_bytes: 4096,
            max_state_value_bytes: 1 << 20,
            max_state_bytes_per_batch: 16 << 20,
        }
    }
}

impl LimitsConfig {
    /// The limits the runtime enforces on each instance.
    pub fn runtime_limits(&self) -> crate::runtime::Limits {
        crate::runtime::Limits {
            call_deadline: self.call_deadline,
            init_deadline: self.init_deadline,
            memory_bytes: self.memory_bytes,
            log_lines_per_s: self.log_lines_per_s,
            max_outputs_per_event: self.max_outputs_per_event,
            max_output_bytes_per_batch: self.max_output_bytes_per_batch,
            max_state_key_bytes: self.max_state_key_bytes,
            max_state_value_bytes: self.max_state_value_bytes,
            max_state_bytes_per_batch: self.max_state_bytes_per_batch,
        }
    }
}

impl ProcessorConfig {
    /// The dead-letter topic: the configured one or `<name>.dlq`.
    pub fn dead_letter_topic(&self) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.name))
    }

    /// The parsed key mode.
    ///
    /// # Errors
    ///
    /// The message of [`crate::idempotency::BadKeyMode`].
    pub fn key_mode(&self) -> Result<KeyMode, String> {
        self.idempotency.key.parse().map_err(|e| format!("{e}"))
    }

    /// The `config` table as strings: strings as they are, other values as TOML.
    pub fn init_config(&self) -> Vec<(String, String)> {
        self.config
            .iter()
            .map(|(k, v)| {
                let s = match v {
                    toml::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (k.clone(), s)
            })
            .collect()
    }
}

impl Config {
    /// Reads, parses and checks `path`; component paths become relative to
    /// the current directory.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the file and what is wrong in it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in &mut config.processors {
            if p.component.is_relative() {
                p.component = base.join(&p.component);
            }
        }
        config.check().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    /// Parses TOML text (no checks beyond the types).
    ///
    /// # Errors
    ///
    /// toml's message, with line and column.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Checks names, topics, modes and limits.
    ///
    /// # Errors
    ///
    /// The first problem found, naming the processor and key.
    pub fn check(&self) -> Result<(), String> {
        let max = crate::log::MAX_PARTITIONS;
        if !(1..=max).contains(&self.log.default_partitions) {
            return Err(format!("log.default_partitions must be 1 to {max}"));
        }
        let mut topic_names = std::collections::BTreeSet::new();
        for t in &self.topics {
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
        let mut names = std::collections::BTreeSet::new();
        for p in &self.processors {
            let ctx = |m: String| format!("processor {:?}: {m}", p.name);
            let name_ok = !p.name.is_empty()
                && p.name.len() <= 200
                && p.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
            if !name_ok {
                return Err(ctx(
                    "a name is 1 to 200 of the characters a-z A-Z 0-9 . _ -".into(),
                ));
            }
            if !names.insert(p.name.as_str()) {
                return Err(ctx("the name is used twice".into()));
            }
            if p.inputs.is_empty() {
                return Err(ctx("inputs is empty: name at least one topic".into()));
            }
            for t in p.inputs.iter().chain([&p.output, &p.dead_letter_topic()]) {
                check_topic_name(t).map_err(|e| ctx(e.to_string()))?;
            }
            for (what, t) in [
                ("output", &p.output),
                ("dead_letter_topic", &p.dead_letter_topic()),
            ] {
                if p.inputs.contains(t) {
                    return Err(ctx(format!(
                        "{what} {t:?} is also an input: the processor would read what it writes"
                    )));
                }
            }
            p.key_mode().map_err(ctx)?;
            if p.batch.max_records == 0 || p.batch.max_bytes == 0 {
                return Err(ctx(
                    "batch.max_records and batch.max_bytes must be at least 1".into(),
                ));
            }
            if p.limits.memory_bytes < 1 << 20 {
                return Err(ctx(format!(
                    "limits.memory_bytes is {} bytes; at least 1048576 (1 MiB) is needed",
                    p.limits.memory_bytes
                )));
            }
            if p.limits.memory_bytes > MAX_MEMORY_BYTES {
                return Err(ctx(format!(
                    "limits.memory_bytes is {} bytes; a 32-bit WebAssembly instance cannot use more than 4294967296 (4 GiB)",
                    p.limits.memory_bytes
                )));
            }
            for (what, d) in [
                ("call_deadline", p.limits.call_deadline),
                ("init_deadline", p.limits.init_deadline),
            ] {
                if d < crate::runtime::EPOCH_TICK || d > MAX_DEADLINE {
                    return Err(ctx(format!(
                        "limits.{what} is {}; it must be {} ms to {}",
                        humantime::format_duration(d),
                        crate::runtime::EPOCH_TICK.as_millis(),
                        humantime::format_duration(MAX_DEADLINE)
                    )));
                }
            }
            if p.limits.retry_backoff > MAX_RETRY_BACKOFF {
                return Err(ctx(format!(
                    "limits.retry_backoff is {}; the first wait can be at most {} (each wait is capped there too)",
                    humantime::format_duration(p.limits.retry_backoff),
                    humantime::format_duration(MAX_RETRY_BACKOFF)
                )));
            }
            if p.limits.transient_retries > MAX_TRANSIENT_RETRIES {
                return Err(ctx(format!(
                    "limits.transient_retries is {}; at most {MAX_TRANSIENT_RETRIES}",
                    p.limits.transient_retries
                )));
            }
            if p.limits.max_outputs_per_event == 0
                || p.limits.max_output_bytes_per_batch == 0
                || p.limits.max_state_key_bytes == 0
                || p.limits.max_state_bytes_per_batch == 0
            {
                return Err(ctx(
                    "limits.max_outputs_per_event, max_output_bytes_per_batch, max_state_key_bytes and max_state_bytes_per_batch must be at least 1".into(),
                ));
            }
            if p.idempotency.ttl.is_zero() {
                return Err(ctx("idempotency.ttl must be above 0".into()));
            }
            if let Some(c) = &p.canary
                && (c.events == 0 || !(0.0..=1.0).contains(&c.max_error_rate))
            {
                return Err(ctx(
                    "canary.events must be at least 1 and canary.max_error_rate 0.0 to 1.0".into(),
                ));
            }
        }
        let mut shipped_to = std::collections::BTreeSet::new();
        for f in &self.forwards {
            let ctx = |m: String| format!("[[forward]] from {:?}: {m}", f.from);
            if self.kafka.is_some() {
                return Err(ctx("this ships an embedded-log topic to Kafka, but the [kafka] section makes the processors read and write Kafka itself: drop one of the two".into()));
            }
            check_topic_name(&f.from).map_err(|e| ctx(e.to_string()))?;
            check_topic_name(f.kafka_topic()).map_err(|e| ctx(e.to_string()))?;
            if f.kafka.brokers.trim().is_empty() {
                return Err(ctx("kafka.brokers is not set: name the cluster to ship to (host:port, comma-separated)".into()));
            }
            if !(1..=crate::forward::MAX_BATCH).contains(&f.batch) {
                return Err(ctx(format!(
                    "batch must be 1 to {}",
                    crate::forward::MAX_BATCH
                )));
            }
            // The position is kept per Kafka topic name (as `tidewater forward` does).
            if !shipped_to.insert(f.kafka_topic()) {
                return Err(ctx(format!(
                    "another [[forward]] also writes the Kafka topic {:?}; each needs its own",
                    f.kafka_topic()
                )));
            }
        }
        if let Some(cycle) = self.cycle() {
            return Err(format!(
                "the processors form a cycle ({}): each would read what the next writes, for ever",
                cycle.join(" → ")
            ));
        }
        Ok(())
    }

    /// A cycle of processors, each writing (output or dead letters) to an
    /// input of the next, if there is one: the names, first one repeated at the end.
    fn cycle(&self) -> Option<Vec<String>> {
        let writes = |p: &ProcessorConfig, q: &ProcessorConfig| {
            q.inputs.contains(&p.output) || q.inputs.contains(&p.dead_letter_topic())
        };
        let n = self.processors.len();
        // Depth-first search from each processor; n is small.
        fn visit(
            at: usize,
            path: &mut Vec<usize>,
            edges: &dyn Fn(usize, usize) -> bool,
            n: usize,
        ) -> Option<Vec<usize>> {
            for next in 0..n {
                if !edges(at, next) {
                    continue;
                }
                if let Some(i) = path.iter().position(|&p| p == next) {
                    let mut c = path[i..].to_vec();
                    c.push(next);
                    return Some(c);
                }
                path.push(next);
                if let Some(c) = visit(next, path, edges, n) {
                    return Some(c);
                }
                path.pop();
            }
            None
        }
        let edges = |a: usize, b: usize| writes(&self.processors[a], &self.processors[b]);
        (0..n).find_map(|start| {
            visit(start, &mut vec![start], &edges, n).map(|c| {
                c.into_iter()
                    .map(|i| self.processors[i].name.clone())
                    .collect()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[[processor]]
name = "p"
component = "p.wasm"
inputs = ["in"]
output = "out"
"#;

    #[test]
    fn defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        c.check().unwrap();
        let p = &c.processors[0];
        assert_eq!(p.dead_letter_topic(), "p.dlq");
        assert_eq!(p.key_mode().unwrap(), KeyMode::Offset);
        assert_eq!(p.idempotency.ttl, Duration::from_secs(604_800));
        assert_eq!(p.batch.max_records, 1024);
        assert_eq!(p.limits.memory_bytes, 67_108_864);
        assert_eq!(p.on_error, OnError::DeadLetter);
        assert_eq!(
            p.limits.runtime_limits(),
            crate::runtime::Limits::default(),
            "the config's defaults are the runtime's"
        );
        assert_eq!(c.log.default_partitions, 1);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let err = Config::parse(&format!("{MINIMAL}colour = \"red\"\n")).unwrap_err();
        assert!(err.contains("unknown field `colour`"), "{err}");
        assert!(err.contains("line 7"), "{err}");
        let err = Config::parse(&format!("{MINIMAL}idempotency.kee = \"hash\"\n")).unwrap_err();
        assert!(err.contains("unknown field `kee`"), "{err}");
    }

    #[test]
    fn bad_values_name_the_processor() {
        let c = Config::parse(&format!("{MINIMAL}idempotency.key = \"md5\"\n")).unwrap();
        assert!(
            c.check()
                .unwrap_err()
                .starts_with("processor \"p\": idempotency key mode \"md5\"")
        );
        let c = Config::parse(&MINIMAL.replace("\"out\"", "\"in\"")).unwrap();
        assert!(c.check().unwrap_err().contains("also an input"));
        let c = Config::parse(&format!("{MINIMAL}{}", MINIMAL)).unwrap();
        assert!(c.check().unwrap_err().contains("used twice"));
        let c = Config::parse(&MINIMAL.replace("\"out\"", "\"a/b\"")).unwrap();
        assert!(c.check().unwrap_err().contains("\"a/b\" is not valid"));
    }

    #[test]
    fn loops_are_refused() {
        let c = Config::parse(&format!("{MINIMAL}dead_letter_topic = \"in\"\n")).unwrap();
        assert!(
            c.check()
                .unwrap_err()
                .contains("dead_letter_topic \"in\" is also an input")
        );
        let two = r#"
[[processor]]
name = "a"
component = "p.wasm"
inputs = ["x"]
output = "y"
[[processor]]
name = "b"
component = "p.wasm"
inputs = ["y"]
output = "x"
"#;
        let err = Config::parse(two).unwrap().check().unwrap_err();
        assert!(err.contains("cycle (a → b → a)"), "{err}");
        let chain = two.replace("output = \"x\"", "output = \"z\"");
        Config::parse(&chain).unwrap().check().unwrap();
    }

    #[test]
    fn topics_are_checked() {
        let t = "[[topic]]\nname = \"t\"\npartitions = 4\n";
        let err = Config::parse(&format!("{t}{t}"))
            .unwrap()
            .check()
            .unwrap_err();
        assert_eq!(err, "[[topic]] \"t\" is listed twice");
        let err = Config::parse("[[topic]]\nname = \"t\"\npartitions = 4000000000\n")
            .unwrap()
            .check()
            .unwrap_err();
        assert!(err.contains("partitions must be 1 to 10000"), "{err}");
    }

    #[test]
    fn forwards_are_checked() {
        let f = "[[forward]]\nfrom = \"out\"\nkafka.brokers = \"127.0.0.1:9092\"\n";
        let c = Config::parse(&format!("{MINIMAL}{f}")).unwrap();
        c.check().unwrap();
        let fwd = &c.forwards[0];
        assert_eq!(
            (fwd.kafka_topic(), fwd.consumer().as_str(), fwd.batch),
            ("out", "forward.out", 1000)
        );
        let err = Config::parse(&format!("{MINIMAL}{f}{f}"))
            .unwrap()
            .check()
            .unwrap_err();
        assert_eq!(
            err,
            "[[forward]] from \"out\": another [[forward]] also writes the Kafka topic \"out\"; each needs its own"
        );
        let err = Config::parse(&format!("{MINIMAL}{}", f.replace("127.0.0.1:9092", " ")))
            .unwrap()
            .check()
            .unwrap_err();
        assert!(err.contains("kafka.brokers is not set"), "{err}");
        let err = Config::parse(&format!("{MINIMAL}{f}batch = 0\n"))
            .unwrap()
            .check()
            .unwrap_err();
        assert!(err.ends_with("batch must be 1 to 100000"), "{err}");
        let err = Config::parse(&format!("{MINIMAL}{f}topic = \"a b\"\n"))
            .unwrap()
            .check()
            .unwrap_err();
        assert!(err.contains("\"a b\" is not valid"), "{err}");
        let err = Config::parse(&format!(
            "{MINIMAL}{f}[kafka]\nbrokers = \"127.0.0.1:9092\"\n"
        ))
        .unwrap()
        .check()
        .unwrap_err();
        assert!(
            err.contains(
                "but the [kafka] section makes the processors read and write Kafka itself"
            ),
            "{err}"
        );
        let err = Config::parse(&format!("{MINIMAL}{f}kafka.colour = 1\n")).unwrap_err();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn on_error_and_limits_parse() {
        let c = Config::parse(&format!(
            "{MINIMAL}on_error = \"halt-partition\"\nlimits.max_outputs_per_event = 5\nlimits.init_deadline = \"250ms\"\n"
        ))
        .unwrap();
        c.check().unwrap();
        let p = &c.processors[0];
        assert_eq!(p.on_error, OnError::HaltPartition);
        assert_eq!(p.limits.runtime_limits().max_outputs_per_event, 5);
        assert_eq!(p.limits.init_deadline, Duration::from_millis(250));
        let err = Config::parse(&format!("{MINIMAL}on_error = \"retry\"\n")).unwrap_err();
        assert!(err.contains("unknown variant `retry`"), "{err}");
        let c = Config::parse(&format!("{MINIMAL}limits.max_outputs_per_event = 0\n")).unwrap();
        assert!(c.check().unwrap_err().contains("must be at least 1"));
        let refused = |extra: &str| {
            Config::parse(&format!("{MINIMAL}{extra}\n"))
                .unwrap()
                .check()
                .unwrap_err()
        };
        assert_eq!(
            refused("limits.call_deadline = \"11m\""),
            "processor \"p\": limits.call_deadline is 11m; it must be 10 ms to 10m"
        );
        assert!(
            refused("limits.memory_bytes = 4294967297")
                .contains("cannot use more than 4294967296 (4 GiB)")
        );
        assert!(refused("limits.retry_backoff = \"1000y\"").contains("at most 30s"));
        assert!(refused("limits.transient_retries = 1000000").ends_with("at most 100"));
    }

    #[test]
    fn init_config_is_strings() {
        let c = Config::parse(&format!(
            "{MINIMAL}[processor.config]\nb = 2.5\na = \"x\"\nc = true\n"
        ))
        .unwrap();
        assert_eq!(
            c.processors[0].init_config(),
            [
                ("a".into(), "x".into()),
                ("b".into(), "2.5".into()),
                ("c".into(), "true".into())
            ]
        );
    }

    #[test]
    fn every_example_config_in_the_repo_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut seen = 0;
        for dir in ["demo", "examples"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in entries {
                let path = e.unwrap().path();
                if path.extension().is_some_and(|x| x == "toml") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let c =
                        Config::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    c.check()
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    seen += 1;
                }
            }
        }
        assert!(seen >= 1, "no example config found");
    }
}
