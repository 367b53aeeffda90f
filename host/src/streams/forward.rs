//! Store-and-forward: shipping an embedded-log topic to Apache Kafka,
//! at-least-once, for `tidewater forward` and the `[[forward]]` section of
//! `tidewater run`.
//!
//! The records are produced byte for byte (key, value, headers, timestamp)
//! with an idempotent, `acks=all` producer whose queue never expires them;
//! only a timestamp outside the device-time window around the record's
//! append time ([`crate::streams::ingest::DeviceTimePolicy`]: a device
//! record not stamped on its way in, an output stamped with such an input's
//! time) becomes that append time, its own kept in the header
//! `tidewater-device-time`. A record the broker still refuses for what it
//! is (too large, a timestamp out of its window, invalid) is dead-lettered
//! in the embedded log, to `forward.<kafka topic>.dlq` with the reason and
//! its topic, partition and offset, and the records after it ship;
//! the position (consumer `forward.<kafka topic>` in the embedded log) moves
//! only after the broker acknowledged a batch. After a crash between the
//! acknowledgement and the position commit, that batch is sent again,
//! identical, so a downstream processor with a content key mode (`json:`,
//! `hash`, `record-key`, or the `idempotency-key` header every output
//! carries) drops the copy: effectively-once downstream, at-least-once on
//! the wire.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rdkafka::producer::BaseProducer;
use serde::Deserialize;

use crate::streams::embedded::{Log, LogError, append_in};
use crate::streams::ingest::device_time::{self, DeviceTimePolicy, Tally};
use crate::streams::kafka::{BrokerError, DeliveryContext, KafkaConfig, Refusal};
use crate::streams::topic::{BadTopicName, check_topic_name};
use crate::streams::{LogRecord, Record, dlq_headers, positions};

/// How long to wait before asking again, when there is nothing to ship.
const IDLE_POLL: Duration = Duration::from_millis(200);
/// How long to wait before asking an unreachable broker again for the topic.
const BROKER_RETRY: Duration = Duration::from_secs(2);
/// Most bytes read per partition and batch.
const MAX_BATCH_BYTES: usize = 8 << 20;

/// `[[forward]]`: one embedded-log topic shipped to Kafka while `run` runs.
///
/// ```toml
/// [[forward]]
/// from = "alerts"              # the embedded-log topic
/// topic = "site-7.alerts"      # the Kafka topic (default: the same name)
/// batch = 1000                 # records per batch and position commit
/// [forward.kafka]              # the remote cluster: the keys of [kafka]
/// brokers = "hq.example:9092"
/// [forward.kafka.properties]
/// "security.protocol" = "SSL"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardConfig {
    /// The embedded-log topic to ship.
    pub from: String,
    /// The Kafka topic to write. Default: the same name as `from`. Created
    /// when missing (if `kafka.create_topics`) with as many partitions as
    /// `from` has, so every key stays in its partition.
    pub topic: Option<String>,
    /// Records per batch and per position commit, 1 to 100,000. Default 1,000.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// The cluster to ship to: brokers, topic creation, librdkafka properties.
    pub kafka: KafkaConfig,
}

fn default_batch() -> usize {
    1000
}

/// The most records per forward batch.
pub const MAX_BATCH: usize = 100_000;

impl ForwardConfig {
    /// The Kafka topic: `topic`, else `from`.
    pub fn kafka_topic(&self) -> &str {
        self.topic.as_deref().unwrap_or(&self.from)
    }

    /// The consumer name the position is kept under in the embedded log:
    /// `forward.<kafka topic>`, the same for `tidewater forward` and `run`,
    /// so either can take over from the other.
    pub fn consumer(&self) -> String {
        format!("forward.{}", self.kafka_topic())
    }

    /// The embedded-log topic of the records the broker refused:
    /// `forward.<kafka topic>.dlq`.
    pub fn dead_letter_topic(&self) -> String {
        format!("{}.dlq", self.consumer())
    }

    /// Checks the topic names, the brokers and the batch size.
    ///
    /// # Errors
    ///
    /// What is wrong, naming the key (the caller names the forward).
    pub fn check(&self) -> Result<(), String> {
        check_topic_name(&self.from).map_err(|e| e.to_string())?;
        check_topic_name(self.kafka_topic()).map_err(|e| e.to_string())?;
        if self.kafka.brokers.trim().is_empty() {
            return Err("kafka.brokers is not set: name the cluster to ship to (host:port, comma-separated)".into());
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return Err(format!("batch must be 1 to {MAX_BATCH}"));
        }
        Ok(())
    }
}

/// Why forwarding stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The embedded log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Kafka refused the settings, or refused records for good.
    #[error(transparent)]
    Stream(#[from] BrokerError),
    /// A topic name breaks Kafka's rule.
    #[error(transparent)]
    TopicName(#[from] BadTopicName),
    /// The data dir could not be opened.
    #[error(transparent)]
    Open(#[from] crate::db::OpenError),
    /// The Kafka topic is missing and creating topics is off.
    #[error(
        "Kafka topic {topic:?} does not exist at {brokers} and create_topics is false for this forward: create it, or turn creation on"
    )]
    MissingTopic {
        /// The Kafka topic.
        topic: String,
        /// The bootstrap servers.
        brokers: String,
    },
}

/// Ships one topic; see the module docs.
pub struct Forwarder {
    config: ForwardConfig,
    policy: DeviceTimePolicy,
    /// Records the broker refused, dead-lettered since this forwarder started.
    dead_lettered: u64,
    consumer: String,
    producer: BaseProducer<DeliveryContext>,
    topic_ready: bool,
    /// Whether the missing `from` topic was reported already.
    said_missing: bool,
}

/// What one [`Forwarder::step`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// This many records were acknowledged and the position moved past them.
    Shipped(u64),
    /// Nothing to ship: every record stored so far was shipped (or the topic
    /// does not exist yet).
    Idle,
    /// The brokers did not answer (the topic could not be checked or
    /// created); nothing was read. Ask again later.
    BrokersAway,
    /// `stop` was set while waiting for acknowledgements; the position did
    /// not move for what was in flight.
    Stopped,
}

impl Forwarder {
    /// A forwarder with its own producer (idempotent, `acks=all`,
    /// `message.timeout.ms=0`: records wait in its queue for as long as the
    /// brokers are away).
    ///
    /// # Errors
    ///
    /// [`ForwardError::Stream`] when librdkafka refuses the settings;
    /// [`ForwardError::TopicName`] for a bad topic name.
    pub fn new(config: ForwardConfig) -> Result<Self, ForwardError> {
        check_topic_name(&config.from)?;
        check_topic_name(config.kafka_topic())?;
        let producer = crate::streams::kafka::patient_producer(&config.kafka)?;
        Ok(Forwarder {
            policy: DeviceTimePolicy::default(),
            dead_lettered: 0,
            consumer: config.consumer(),
            config,
            producer,
            topic_ready: false,
            said_missing: false,
        })
    }

    /// Applies `policy` (`[device_time]`) instead of the default window.
    pub fn with_device_time(mut self, policy: DeviceTimePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Records the broker refused, dead-lettered to
    /// [`ForwardConfig::dead_letter_topic`] since this forwarder started.
    pub fn dead_lettered(&self) -> u64 {
        self.dead_lettered
    }

    /// The settings.
    pub fn config(&self) -> &ForwardConfig {
        &self.config
    }

    /// Ships the next batch of every partition: reads it through `open_log`
    /// (and lets go of the log while it waits for the broker, so a
    /// short-lived caller can share the data dir with `produce`), produces
    /// it, waits for the acknowledgements, then commits the new position.
    ///
    /// Blocks while the brokers are unreachable once records are in flight
    /// (they stay queued; nothing is lost or reordered), until they return
    /// or `stop` is set.
    ///
    /// # Errors
    ///
    /// [`ForwardError::Stream`] when the broker refused records for good
    /// (e.g. not authorized, record too large); [`ForwardError::Log`] and
    /// [`ForwardError::Open`] for the embedded log.
    pub fn step(
        &mut self,
        open_log: &mut dyn FnMut() -> Result<Log, ForwardError>,
        stop: &AtomicBool,
    ) -> Result<Step, ForwardError> {
        let from = self.config.from.clone();
        let Some(partitions) = open_log()?.partitions(&from)? else {
            if !self.said_missing {
                self.said_missing = true;
                tracing::warn!(from = %from, "the topic does not exist yet (nothing was written to it); it is shipped once it appears");
            }
            return Ok(Step::Idle);
        };
        // The log is not held while the broker is asked (which can take its
        // 30 s metadata timeout), so `produce` can store events meanwhile.
        if !self.topic_ready {
            match self.ensure_topic(partitions, stop)? {
                Some(true) => self.topic_ready = true,
                Some(false) => return Ok(Step::BrokersAway),
                None => return Ok(Step::Stopped),
            }
        }
        let batches: Vec<(u32, Vec<LogRecord>)> = {
            let log = open_log()?;
            let mut out = Vec::new();
            for p in 0..partitions {
                let next = log.position(&self.consumer, &from, p)?.unwrap_or(0);
                let records = log.read(&from, p, next, self.config.batch, MAX_BATCH_BYTES)?;
                if !records.is_empty() {
                    out.push((p, records));
                }
            }
            out
        };
        if batches.is_empty() {
            return Ok(Step::Idle);
        }
        let mut shipped = 0;
        for (p, records) in batches {
            match self.ship_partition(open_log, p, records, stop)? {
                Some(n) => shipped += n,
                None => return Ok(Step::Stopped),
            }
        }
        Ok(Step::Shipped(shipped))
    }

    /// Ships one partition's batch: applies the device-time policy, produces
    /// it, waits for the broker, then, in one transaction, dead-letters what
    /// it refused, counts the replaced timestamps and moves the position.
    /// Returns how many records the broker stored, or `None` when `stop` was
    /// set first.
    fn ship_partition(
        &mut self,
        open_log: &mut dyn FnMut() -> Result<Log, ForwardError>,
        p: u32,
        records: Vec<LogRecord>,
        stop: &AtomicBool,
    ) -> Result<Option<u64>, ForwardError> {
        let from = &self.config.from;
        let next = records.last().map_or(0, |r| r.offset + 1);
        let mut tally = Tally::default();
        let plain: Vec<Record> = records
            .iter()
            .map(|r| {
                let mut record = r.record.clone();
                tally.add(self.policy.stamp(&mut record, r.append_ms as i64));
                record
            })
            .collect();
        let topic = self.config.kafka_topic();
        let Some(refused) =
            crate::streams::kafka::deliver_patiently(&self.producer, topic, &plain, stop)?
        else {
            return Ok(None);
        };
        let log = open_log()?;
        let txn = log.db().begin_write().map_err(LogError::from)?;
        let dlq = self.config.dead_letter_topic();
        for refusal in &refused {
            let input = &records[refusal.index];
            tracing::warn!(
                from = %from, partition = p, offset = input.offset, kafka_topic = %topic,
                dead_letter_topic = %dlq, error = %refusal.message,
                "the broker refused a record; it is dead-lettered and the records after it ship"
            );
            let letter = refused_letter(input, refusal, topic);
            append_in(&txn, &dlq, None, &letter, log.default_partitions())?;
        }
        device_time::count_in(&txn, topic, &tally).map_err(LogError::from)?;
        positions::set_position_in(&txn, &self.consumer, from, p, next).map_err(LogError::from)?;
        txn.commit().map_err(LogError::from)?;
        tracing::debug!(from = %from, partition = p, next, "forwarded");
        self.dead_lettered += refused.len() as u64;
        Ok(Some((plain.len() - refused.len()) as u64))
    }

    /// Makes sure the Kafka topic exists (creating it with `partitions` when
    /// allowed). Asking an unreachable broker blocks for up to its metadata
    /// timeout (30 s), so it is asked on a thread of its own, and a stop
    /// request does not wait for it. `Some(true)`: the topic is there;
    /// `Some(false)`: the brokers did not answer; `None`: asked to stop.
    fn ensure_topic(
        &mut self,
        partitions: u32,
        stop: &AtomicBool,
    ) -> Result<Option<bool>, ForwardError> {
        let topic = self.config.kafka_topic().to_owned();
        let topics = [(topic.clone(), Some(partitions))].into_iter().collect();
        let kafka = self.config.kafka.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("forward-metadata".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_time()
                    .build();
                let result = runtime
                    .map(|r| r.block_on(crate::streams::kafka::ensure_topics(&kafka, &topics)));
                let _ = tx.send(result);
            })
            .expect("spawning a thread");
        loop {
            if stop.load(Ordering::SeqCst) {
                return Ok(None);
            }
            match rx.recv_timeout(Duration::from_millis(50)) {
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("the topic check thread ended without an answer")
                }
                Ok(Err(e)) => panic!("cannot start a runtime for the topic check: {e}"),
                Ok(Ok(Ok(()))) => return Ok(Some(true)),
                Ok(Ok(Err(BrokerError::MissingTopic(_)))) => {
                    return Err(ForwardError::MissingTopic {
                        topic,
                        brokers: self.config.kafka.brokers.clone(),
                    });
                }
                Ok(Ok(Err(e))) => {
                    tracing::warn!(from = %self.config.from, error = %e, "cannot reach the brokers yet; events stay stored locally");
                    return Ok(Some(false));
                }
            }
        }
    }

    /// Runs [`step`](Self::step) until `stop` is set, or, with `until_idle`,
    /// until everything stored so far was shipped. Returns the number of
    /// records shipped.
    ///
    /// # Errors
    ///
    /// As [`step`](Self::step).
    pub fn run(
        &mut self,
        open_log: &mut dyn FnMut() -> Result<Log, ForwardError>,
        stop: &AtomicBool,
        until_idle: bool,
    ) -> Result<u64, ForwardError> {
        let mut shipped = 0;
        while !stop.load(Ordering::SeqCst) {
            match self.step(open_log, stop)? {
                Step::Shipped(n) => shipped += n,
                Step::Idle if until_idle => break,
                Step::Idle => std::thread::sleep(IDLE_POLL),
                Step::BrokersAway => std::thread::sleep(BROKER_RETRY),
                Step::Stopped => break,
            }
        }
        Ok(shipped)
    }
}

/// The dead letter of a record the broker refused: the record as stored in
/// the embedded log (key, value, headers, timestamp), with the reason
/// (`tidewater-error-kind: refused-by-broker`, the broker's message) and
/// where it was (`tidewater-source-topic`, `-partition`, `-offset`).
fn refused_letter(input: &LogRecord, refusal: &Refusal, kafka_topic: &str) -> Record {
    use dlq_headers as h;
    let mut record = input.record.clone();
    let extra = [
        (h::KIND, "refused-by-broker".to_owned()),
        (
            h::MESSAGE,
            format!("Kafka topic {kafka_topic:?}: {}", refusal.message),
        ),
        (h::TOPIC, input.topic.clone()),
        (h::PARTITION, input.partition.to_string()),
        (h::OFFSET, input.offset.to_string()),
    ];
    record
        .headers
        .extend(extra.map(|(n, v)| (n.to_owned(), v.into_bytes())));
    record
}
