//! Apache Kafka as a [`Source`] and a [`Sink`], through rdkafka (librdkafka).
//!
//! One consumer group per processor (default: the processor's name), with
//! cooperative-sticky assignment, manual offset commits and
//! `isolation.level=read_committed`; one idempotent producer per processor
//! (`enable.idempotence=true`, `acks=all`, Kafka's murmur2 partitioner).
//!
//! # How a batch commits
//!
//! 1. The redb transaction of the batch (idempotency keys, state, counters)
//!    also stores the processor's position (next offset per partition) and
//!    the batch's outputs in an **outbox**.
//! 2. The outbox is produced to Kafka and the producer waits for every
//!    acknowledgement (`acks=all`).
//! 3. The consumer offsets are committed (last processed offset + 1).
//! 4. The outbox is cleared.
//!
//! With `exactly_once = true`, steps 2 and 3 are one Kafka transaction
//! (consume-transform-produce with `send_offsets_to_transaction`): readers
//! with `isolation.level=read_committed` see each output exactly once.
//!
//! # When the host dies
//!
//! - **Before the redb commit**: nothing of the batch happened; Kafka
//!   redelivers it from the committed offset and it is processed once.
//! - **After the redb commit, before Kafka has the outputs** (or the offsets):
//!   on restart the outbox is still there and is produced first; records of
//!   the batch that Kafka redelivers are below the position stored in redb
//!   and are skipped. State and keys were committed once, so no state
//!   update is applied twice and no key is lost.
//! - At-least-once mode: if the outputs reached Kafka but the outbox was not
//!   cleared, they are produced again, with the same `idempotency-key`
//!   headers, so a downstream tidewater processor drops them: effectively-once.
//! - Exactly-once mode: on restart the committed offset of the batch's
//!   partition tells whether its transaction committed; if it did, the outbox
//!   is dropped, else it is produced again in a new transaction with the
//!   offsets. Committed outputs appear once.
//!
//! A partition revoked by a rebalance loses its buffered records (they are
//! redelivered to its new owner) and gets no offset commit from this host.
//! The redb state is local: one host instance per processor is assumed.
//!
//! - `stream`: [`KafkaStream`], a processor's consumer and producer as its
//!   [`crate::streams::Source`] and [`crate::streams::Sink`].
//! - `outbox`: the outputs of a committed batch, kept in redb until the
//!   broker acknowledged them, and recovery after a crash.
//! - `consumer`: reading topics ([`read_topic`]) and rebalance callbacks.
//! - `producer`: idempotent and transactional producers, acknowledgements.
//! - `topics`: creating topics and reading their end offsets.
//! - `reader`: [`PartitionReader`], a topic read from offsets the caller
//!   keeps (the sinks').

mod consumer;
mod outbox;
mod producer;
mod reader;
mod stream;
mod topics;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::error::KafkaError;
use serde::Deserialize;

pub use consumer::{GroupContext, read_topic};
pub use producer::{
    DeliveryContext, Refusal, deliver_patiently, patient_producer, produce_all, produce_each,
    producer,
};
pub use reader::PartitionReader;
pub use stream::{KafkaSink, KafkaStream};
pub use topics::{ensure_topics, high_watermark};

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

impl KafkaConfig {
    /// A config for `brokers` with every default.
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            create_topics: true,
            partitions: 1,
            replication_factor: 1,
            flush_timeout: two_minutes(),
            properties: BTreeMap::new(),
        }
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
    #[error("topic {topic:?} has {partitions} partitions, there is no partition {partition}")]
    NoSuchPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many it has.
        partitions: usize,
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
