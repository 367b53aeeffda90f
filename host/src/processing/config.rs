//! `[[processor]]`: one processor's settings (batching, idempotency keys,
//! error handling, limits, canary), with their defaults and checks. The
//! full config reference is in [`crate::config`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::idempotency::KeyMode;

/// The largest `limits.memory_bytes`: 4 GiB, all a 32-bit WebAssembly
/// instance can address.
pub const MAX_MEMORY_BYTES: usize = 4 << 30;
/// The longest `limits.call_deadline` and `limits.init_deadline`: 10 minutes.
pub const MAX_DEADLINE: Duration = Duration::from_secs(600);
/// The longest `limits.retry_backoff`: 30 s, where each wait is capped.
pub const MAX_RETRY_BACKOFF: Duration = Duration::from_secs(30);
/// The most `limits.transient_retries`.
pub const MAX_TRANSIENT_RETRIES: u32 = 100;

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
    /// Kafka only: publish the outputs in the Kafka transaction that writes
    /// the batch's changelog and commits its offsets, so `read_committed`
    /// readers see each output once. Without it the outputs are produced
    /// (and acknowledged) just before that transaction: after a crash in
    /// between they may appear twice, with the same `idempotency-key`.
    /// Default false.
    #[serde(default)]
    pub exactly_once: bool,
    /// Kafka only: the compacted topic that holds the processor's state and
    /// idempotency keys, one partition per input partition. Default
    /// `<group>-changelog` (so `<name>-changelog` when `group` is not set).
    pub changelog_topic: Option<String>,
    /// Every activation of a new version (through the admin API or the
    /// watched directory) is a canary: `{ events = N, max_error_rate = R }`.
    /// Absent: only when the activation asks for one.
    pub canary: Option<CanaryPlan>,
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

    /// The consumer group on Kafka: `group`, or the name.
    pub fn group(&self) -> String {
        self.group.clone().unwrap_or_else(|| self.name.clone())
    }

    /// The changelog topic on Kafka: `changelog_topic`, or `<group>-changelog`.
    pub fn changelog_topic(&self) -> String {
        self.changelog_topic
            .clone()
            .unwrap_or_else(|| format!("{}-changelog", self.group()))
    }

    /// The topic through which the hosts of the group hand each other
    /// replay requests on Kafka: `<group>-replays`.
    pub fn replays_topic(&self) -> String {
        format!("{}-replays", self.group())
    }

    /// The parsed key mode.
    ///
    /// # Errors
    ///
    /// The message of [`super::idempotency::BadKeyMode`].
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

    /// Checks this processor's own settings: its name, topics, key mode,
    /// batch, limits and canary.
    ///
    /// # Errors
    ///
    /// The first problem found, as `processor "NAME": what is wrong`.
    pub fn check(&self) -> Result<(), String> {
        let ctx = |m: String| format!("processor {:?}: {m}", self.name);
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 200
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if !name_ok {
            return Err(ctx(
                "a name is 1 to 200 of the characters a-z A-Z 0-9 . _ -".into(),
            ));
        }
        if self.inputs.is_empty() {
            return Err(ctx("inputs is empty: name at least one topic".into()));
        }
        for t in self
            .inputs
            .iter()
            .chain([&self.output, &self.dead_letter_topic()])
        {
            crate::streams::topic::check_topic_name(t).map_err(|e| ctx(e.to_string()))?;
        }
        if let Some(t) = &self.changelog_topic {
            crate::streams::topic::check_topic_name(t).map_err(|e| ctx(e.to_string()))?;
        }
        for (what, t) in [
            ("output", &self.output),
            ("dead_letter_topic", &self.dead_letter_topic()),
            ("changelog_topic", &self.changelog_topic()),
        ] {
            if self.inputs.contains(t) {
                return Err(ctx(format!(
                    "{what} {t:?} is also an input: the processor would read what it writes"
                )));
            }
        }
        self.key_mode().map_err(ctx)?;
        if self.batch.max_records == 0 || self.batch.max_bytes == 0 {
            return Err(ctx(
                "batch.max_records and batch.max_bytes must be at least 1".into(),
            ));
        }
        if self.limits.memory_bytes < 1 << 20 {
            return Err(ctx(format!(
                "limits.memory_bytes is {} bytes; at least 1048576 (1 MiB) is needed",
                self.limits.memory_bytes
            )));
        }
        if self.limits.memory_bytes > MAX_MEMORY_BYTES {
            return Err(ctx(format!(
                "limits.memory_bytes is {} bytes; a 32-bit WebAssembly instance cannot use more than 4294967296 (4 GiB)",
                self.limits.memory_bytes
            )));
        }
        for (what, d) in [
            ("call_deadline", self.limits.call_deadline),
            ("init_deadline", self.limits.init_deadline),
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
        if self.limits.retry_backoff > MAX_RETRY_BACKOFF {
            return Err(ctx(format!(
                "limits.retry_backoff is {}; the first wait can be at most {} (each wait is capped there too)",
                humantime::format_duration(self.limits.retry_backoff),
                humantime::format_duration(MAX_RETRY_BACKOFF)
            )));
        }
        if self.limits.transient_retries > MAX_TRANSIENT_RETRIES {
            return Err(ctx(format!(
                "limits.transient_retries is {}; at most {MAX_TRANSIENT_RETRIES}",
                self.limits.transient_retries
            )));
        }
        if self.limits.max_outputs_per_event == 0
            || self.limits.max_output_bytes_per_batch == 0
            || self.limits.max_state_key_bytes == 0
            || self.limits.max_state_bytes_per_batch == 0
        {
            return Err(ctx(
                "limits.max_outputs_per_event, max_output_bytes_per_batch, max_state_key_bytes and max_state_bytes_per_batch must be at least 1".into(),
            ));
        }
        if self.idempotency.ttl.is_zero() {
            return Err(ctx("idempotency.ttl must be above 0".into()));
        }
        if let Some(c) = &self.canary
            && (c.events == 0 || !(0.0..=1.0).contains(&c.max_error_rate))
        {
            return Err(ctx(
                "canary.events must be at least 1 and canary.max_error_rate 0.0 to 1.0".into(),
            ));
        }
        Ok(())
    }
}

/// When a canary rolls back (`canary = { events, max_error_rate }`).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryPlan {
    /// How many processed events (not duplicates) the new version is judged on.
    pub events: u64,
    /// Largest allowed share of those events that fail (invalid, trap,
    /// timeout, memory, retries exhausted), 0.0 to 1.0.
    pub max_error_rate: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_processor_canary_parses_and_is_checked() {
        let base = "name = \"p\"\ncomponent = \"p.wasm\"\ninputs = [\"in\"]\noutput = \"out\"\n";
        let parse = |text: &str| toml::from_str::<ProcessorConfig>(text).map_err(|e| e.to_string());
        let p = parse(&format!(
            "{base}canary = {{ events = 100, max_error_rate = 0.05 }}\n"
        ))
        .unwrap();
        p.check().unwrap();
        assert_eq!(
            p.canary,
            Some(CanaryPlan {
                events: 100,
                max_error_rate: 0.05
            })
        );
        let p = parse(&format!(
            "{base}canary = {{ events = 0, max_error_rate = 0.05 }}\n"
        ))
        .unwrap();
        assert!(
            p.check()
                .unwrap_err()
                .contains("canary.events must be at least 1")
        );
        let err = parse(&format!(
            "{base}canary = {{ events = 1, max_errors = 0.05 }}\n"
        ))
        .unwrap_err();
        assert!(err.contains("unknown field `max_errors`"), "{err}");
    }
}
