//! Apache Kafka as a [`Source`] and a [`Sink`], through rdkafka (librdkafka),
//! for any number of hosts sharing a processor.
//!
//! One consumer group per processor (default: the processor's name), with
//! cooperative-sticky assignment, static membership (`group.instance.id` =
//! the host id), manual offset commits and `isolation.level=read_committed`;
//! one transactional producer per processor and host
//! (`transactional.id = tidewater-<group>-<host id>`).
//!
//! # State and keys follow their partitions
//!
//! A processor's keys and state are scoped per input partition. Each change
//! is also written to the processor's changelog (`<group>-changelog`,
//! compacted, one partition per input partition; format in `changelog`),
//! and redb is its local cache, with a checkpoint per partition. When a
//! partition is assigned, the host restores its keys and state from the
//! changelog (from its checkpoint, else from the start) before it
//! processes any of its events; when it is revoked, its buffered events are
//! dropped and nothing more of it is committed.
//!
//! # How a batch commits
//!
//! 1. The run loop decides the batch's effects (keys, state, outputs).
//! 2. At-least-once mode: the outputs are produced and acknowledged.
//! 3. One Kafka transaction: the changelog records (exactly-once mode: and
//!    the outputs), and the input offset (last processed + 1) through
//!    `send_offsets_to_transaction` with the group metadata, so only the
//!    partition's current owner can commit (a zombie's commit is refused).
//! 4. The redb transaction: the same keys and state into the local cache,
//!    the checkpoint, positions and counters.
//!
//! # When a host dies
//!
//! - Before the Kafka transaction commits: nothing of the batch is visible;
//!   the partition's next owner (this host restarted, or another) restores
//!   the state as it was and processes the batch once. Its open transaction
//!   is aborted when the host restarts (same transactional id) or after
//!   `transaction_timeout`. In at-least-once mode its outputs may already
//!   be out: produced again, they carry the same `idempotency-key` headers,
//!   so downstream processors drop them (effectively-once); in
//!   exactly-once mode they were part of the aborted transaction.
//! - After it, before redb: the changelog is ahead of the local checkpoint,
//!   and the next restore applies the batch to the cache.
//!
//! A restarted host (same host id) rejoins as the same static member: it
//! gets its partitions back with no rebalance, and its previous run's
//! transaction is fenced. A host that stops leaves its groups
//! (`leave_group_on_stop`), handing its partitions over at once.
//!
//! - `stream`: [`KafkaStream`], a processor's consumers and producers as its
//!   [`crate::streams::Source`] and [`crate::streams::Sink`]; rebalances.
//! - `commit`: a batch's Kafka transaction, zombie fencing.
//! - `changelog`: the changelog's format, checkpoints, restores.
//! - `replays`: replay for the whole group, offsets by time.
//! - `consumer`: reading topics ([`read_topic`]) and rebalance callbacks.
//! - `producer`: idempotent and transactional producers, acknowledgements.
//! - `topics`: creating topics and reading their end offsets.
//! - `reader`: [`PartitionReader`], a topic read from offsets the caller
//!   keeps (the sinks').

mod changelog;
mod commit;
mod consumer;
mod producer;
mod reader;
mod replays;
mod stream;
mod topics;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use serde::Deserialize;

pub use changelog::{ChangelogKey, decode_key as decode_changelog_key};
pub use consumer::{GroupContext, read_topic};
pub use producer::{
    DeliveryContext, Refusal, deliver_patiently, patient_producer, produce_all, produce_each,
    producer,
};
pub use reader::PartitionReader;
pub use replays::offset_for_time;
pub use stream::{KafkaSink, KafkaStream, StreamSetup};
pub use topics::{
    ensure_compacted, ensure_topics, high_watermark, partition_counts, settled_partition_counts,
};

use crate::db::StorageError;
use crate::streams::StreamError;

/// `[kafka]`: how to reach the brokers.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated `host:port`. May be left out when
    /// `run --brokers` gives them.
    #[serde(default)]
    pub brokers: String,
    /// Create missing topics (inputs, outputs, dead-letter topics) at start. Default true.
    #[serde(default = "yes")]
    pub create_topics: bool,
    /// Partitions of a topic this host creates. Default 1.
    #[serde(default = "one_u32")]
    pub partitions: u32,
    /// Replication factor of a topic this host creates. Default 1.
    #[serde(default = "one_i16")]
    pub replication_factor: i16,
    /// Longest wait for the broker to acknowledge a batch's outputs before
    /// the processor stops (it resumes from the outbox on restart). Default 2 minutes.
    #[serde(default = "two_minutes", with = "humantime_serde")]
    pub flush_timeout: Duration,
    /// How long the broker lets a transaction stay open before it aborts it
    /// (`transaction.timeout.ms`): after a host dies mid-batch, its
    /// partitions' new owners (and read_committed readers of its outputs)
    /// wait at most this long for its open transaction to go. A host that
    /// restarts with the same host id aborts it at once. Default 10 s.
    #[serde(default = "ten_seconds", with = "humantime_serde")]
    pub transaction_timeout: Duration,
    /// This host's identity in its consumer groups (`group.instance.id`,
    /// static membership) and in its transactional ids: a host restarted
    /// with the same id takes its partitions back at once and fences what
    /// its previous run left open. Unique per host; `run --host-id` sets it
    /// too. Default `<hostname>-<first 8 hex digits of the SHA-256 of the
    /// data dir's absolute path>`.
    #[serde(default)]
    pub host_id: Option<String>,
    /// Whether a host that stops (Ctrl-C, SIGTERM, `--until-idle`) leaves
    /// its consumer groups, so its partitions move to the other hosts at
    /// once. With false it keeps them for `session.timeout.ms` (default
    /// 45 s) and takes them back when it returns in time, with no
    /// rebalance: for rolling restarts. A host that is killed always keeps
    /// them for that long. Default true.
    #[serde(default = "yes")]
    pub leave_group_on_stop: bool,
    /// Any librdkafka property, passed as is to consumers, producers and the
    /// admin client: `security.protocol`, `sasl.mechanism`, `sasl.username`,
    /// `sasl.password`, `ssl.ca.location`, `session.timeout.ms`, ...
    #[serde(default)]
    pub properties: BTreeMap<String, String>,
}

fn yes() -> bool {
    true
}
fn one_u32() -> u32 {
    1
}
fn one_i16() -> i16 {
    1
}
fn two_minutes() -> Duration {
    Duration::from_secs(120)
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}

impl KafkaConfig {
    /// A config for `brokers` with every default.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            create_topics: true,
            partitions: 1,
            replication_factor: 1,
            flush_timeout: two_minutes(),
            transaction_timeout: ten_seconds(),
            host_id: None,
            leave_group_on_stop: true,
            properties: BTreeMap::new(),
        }
    }

    /// This host's id: `host_id`, else `<hostname>-<8 hex digits of the
    /// SHA-256 of the absolute data dir>` (stable across restarts, distinct
    /// for two data dirs on one machine).
    pub fn host_id(&self, data_dir: &std::path::Path) -> String {
        if let Some(id) = &self.host_id {
            return id.clone();
        }
        use sha2::{Digest, Sha256};
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .ok()
            .map(|h| h.trim().to_owned())
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "host".into());
        let dir = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_owned());
        let digest = Sha256::digest(dir.to_string_lossy().as_bytes());
        format!("{host}-{}", hex::encode(&digest[..4]))
    }

    /// Checks the settings that do not need the broker.
    ///
    /// # Errors
    ///
    /// What is wrong, naming the key.
    pub fn check(&self) -> Result<(), String> {
        if self.brokers.trim().is_empty() {
            return Err("[kafka] brokers is not set: set it, or pass --brokers".into());
        }
        if let Some(id) = &self.host_id {
            let ok = !id.is_empty()
                && id.len() <= 200
                && id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
            if !ok {
                return Err(format!(
                    "[kafka] host_id {id:?}: a host id is 1 to 200 of the characters a-z A-Z 0-9 . _ -"
                ));
            }
        }
        let t = self.transaction_timeout;
        if t < Duration::from_secs(1) || t > Duration::from_secs(900) {
            return Err(format!(
                "[kafka] transaction_timeout is {}; it must be between 1s and 15m (the broker's default transaction.max.timeout.ms)",
                humantime::format_duration(t)
            ));
        }
        Ok(())
    }

    /// The librdkafka settings of every client: brokers and properties.
    pub fn client_config(&self) -> ClientConfig {
        self.config_for(Client::Admin)
    }

    /// The librdkafka settings of one kind of client: the brokers, and the
    /// properties that apply to it (consumer-only properties are left out of
    /// producers and the other way round, so librdkafka does not warn).
    pub fn config_for(&self, client: Client) -> ClientConfig {
        const CONSUMER: [&str; 9] = [
            "session.timeout.ms",
            "heartbeat.interval.ms",
            "max.poll.interval.ms",
            "fetch.",
            "group.",
            "auto.offset.reset",
            "isolation.level",
            "enable.auto.",
            "partition.assignment.strategy",
        ];
        const PRODUCER: [&str; 9] = [
            "linger.ms",
            "acks",
            "batch.",
            "compression.",
            "message.timeout.ms",
            "queue.buffering.",
            "enable.idempotence",
            "transaction",
            "delivery.timeout.ms",
        ];
        let skip: &[&str] = match client {
            Client::Consumer => &PRODUCER,
            Client::Producer => &CONSUMER,
            Client::Admin => &[],
        };
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers);
        for (k, v) in &self.properties {
            if !skip.iter().any(|p| k.starts_with(p)) {
                c.set(k, v);
            }
        }
        c
    }
}

/// The kinds of librdkafka client, for [`KafkaConfig::config_for`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Client {
    /// A consumer.
    Consumer,
    /// A producer.
    Producer,
    /// An admin client (gets every property).
    Admin,
}

/// Why a Kafka operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// librdkafka refused or failed.
    #[error("kafka ({context}): {source}")]
    Kafka {
        /// What was being done.
        context: String,
        /// librdkafka's error.
        source: KafkaError,
    },
    /// A topic is missing and creating it is off.
    #[error(
        "topic {0:?} does not exist on the broker and [kafka] create_topics is false: create it, or turn creation on"
    )]
    MissingTopic(String),
    /// The topic does not exist (when reading).
    #[error("topic {0:?} does not exist on the broker")]
    NoSuchTopic(String),
    /// The partition does not exist.
    #[error("topic {topic:?} has no partition {partition}: {}", crate::streams::topic::partitions_text(u32::try_from(*.partitions).unwrap_or(u32::MAX)))]
    NoSuchPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many it has.
        partitions: usize,
    },
    /// A compacted topic the processor needs has too few partitions.
    #[error(
        "topic {topic:?} has {partitions} partitions and needs {needed} (one per input partition): add partitions, or delete it so it is created again"
    )]
    TooFewPartitions {
        /// The topic.
        topic: String,
        /// How many it has.
        partitions: u32,
        /// How many it needs.
        needed: u32,
    },
    /// Reading stopped getting records before the end.
    #[error("no record from topic {topic:?} for {seconds} s before its end offset")]
    Stalled {
        /// The topic.
        topic: String,
        /// How long it waited, in s.
        seconds: u64,
    },
    /// Records were not acknowledged.
    #[error("the broker did not acknowledge {failed} of {total} records: {first_error}")]
    NotAcknowledged {
        /// Records not acknowledged.
        failed: usize,
        /// Records sent.
        total: usize,
        /// The first error.
        first_error: String,
    },
    /// redb failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

pub(super) fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> BrokerError {
    let context = context.into();
    move |source| BrokerError::Kafka { context, source }
}

impl From<BrokerError> for StreamError {
    fn from(e: BrokerError) -> Self {
        StreamError::Broker(e.to_string())
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
