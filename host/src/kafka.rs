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

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::{ClientContext, DefaultClientContext};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{Offset, TopicPartitionList};
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::Deserialize;

use crate::db::StorageError;
use crate::log::{LogRecord, Record};
use crate::pipeline::{Batch, PipelineError, Sink, Source};

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
pub enum StreamError {
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

fn kafka(context: impl Into<String>) -> impl FnOnce(KafkaError) -> StreamError {
    let context = context.into();
    move |source| StreamError::Kafka { context, source }
}

impl From<StreamError> for PipelineError {
    fn from(e: StreamError) -> Self {
        PipelineError::Stream(e.to_string())
    }
}

/// Makes sure `topics` exist: creates the missing ones with `partitions`
/// (per topic, else the config's default) when `create_topics` is on.
///
/// # Errors
///
/// [`StreamError::MissingTopic`] when one is missing and creation is off;
/// [`StreamError::Kafka`] when the broker cannot be reached or refuses.
pub async fn ensure_topics(
    config: &KafkaConfig,
    topics: &BTreeMap<String, Option<u32>>,
) -> Result<(), StreamError> {
    let admin: AdminClient<DefaultClientContext> = config
        .client_config()
        .create()
        .map_err(kafka("admin client"))?;
    let metadata = admin
        .inner()
        .fetch_metadata(None, Duration::from_secs(30))
        .map_err(kafka(format!("reading metadata from {}", config.brokers)))?;
    let existing: BTreeSet<String> = metadata
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .collect();
    let missing: Vec<(&String, i32)> = topics
        .iter()
        .filter(|(t, _)| !existing.contains(*t))
        .map(|(t, p)| (t, p.unwrap_or(config.partitions) as i32))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !config.create_topics {
        return Err(StreamError::MissingTopic(missing[0].0.clone()));
    }
    let new: Vec<NewTopic<'_>> = missing
        .iter()
        .map(|(t, p)| {
            NewTopic::new(
                t,
                *p,
                TopicReplication::Fixed(config.replication_factor as i32),
            )
        })
        .collect();
    let results = admin
        .create_topics(
            &new,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .map_err(kafka("creating topics"))?;
    for r in results {
        match r {
            Ok(t) => tracing::info!(topic = %t, "created topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((t, code)) => {
                return Err(StreamError::Kafka {
                    context: format!("creating topic {t}"),
                    source: KafkaError::AdminOp(code),
                });
            }
        }
    }
    Ok(())
}

/// Collects the partitions a rebalance revokes, for the run loop to drop.
#[derive(Default)]
pub struct GroupContext {
    revoked: Mutex<Vec<(String, i32)>>,
}

impl ClientContext for GroupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(error, reason);
    }
}

/// librdkafka's client-level errors: the end of a partition is news, not an
/// error; a broker that went away is worth a warning (librdkafka reconnects).
fn log_client_error(error: KafkaError, reason: &str) {
    match error {
        KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {}
        e => tracing::warn!(error = %e, reason, "kafka client"),
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut revoked = lock(&self.revoked);
            for e in tpl.elements() {
                revoked.push((e.topic().to_owned(), e.partition()));
            }
        }
    }
}

/// Counts the records the broker did not acknowledge.
#[derive(Default)]
pub struct DeliveryContext {
    errors: Mutex<Vec<String>>,
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            lock(&self.errors).push(e.to_string());
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// (processor, sequence) → one encoded output waiting to be produced
const OUTBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("kafka.outbox");
/// processor → the batch the outbox belongs to: (topic, partition, next offset)
const OUTBOX_SOURCE: TableDefinition<&str, (&str, u32, u64)> =
    TableDefinition::new("kafka.outbox_source");

#[derive(serde::Serialize, serde::Deserialize)]
struct OutboxEntry {
    topic: String,
    timestamp_ms: i64,
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Vec<u8>)>,
}

/// Hands `r` to the producer for `topic` byte for byte (key, value, headers,
/// timestamp); while its queue is full, waits as long as `keep_trying` says.
fn send_one(
    producer: &BaseProducer<DeliveryContext>,
    topic: &str,
    r: &Record,
    keep_trying: impl Fn() -> bool,
) -> Result<(), StreamError> {
    let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
    for (name, value) in &r.headers {
        headers = headers.insert(Header {
            key: name,
            value: Some(value.as_slice()),
        });
    }
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
        .timestamp(r.timestamp_ms)
        .headers(headers);
    if let Some(k) = &r.key {
        record = record.key(k.as_slice());
    }
    if let Some(v) = &r.value {
        record = record.payload(v.as_slice());
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                if keep_trying() =>
            {
                record = back;
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => return Err(kafka(format!("producing to {topic}"))(e)),
        }
    }
}

/// Produces `records` and waits until the broker acknowledged each one.
///
/// # Errors
///
/// [`StreamError::NotAcknowledged`] or [`StreamError::Kafka`].
pub fn produce_all<'a>(
    producer: &BaseProducer<DeliveryContext>,
    records: impl IntoIterator<Item = (&'a str, &'a Record)>,
    timeout: Duration,
) -> Result<usize, StreamError> {
    lock(&producer.context().errors).clear();
    let mut total = 0;
    for (topic, r) in records {
        total += 1;
        let deadline = Instant::now() + timeout;
        send_one(producer, topic, r, || Instant::now() < deadline)?;
    }
    producer
        .flush(timeout)
        .map_err(kafka("waiting for acknowledgements"))?;
    let errors = lock(&producer.context().errors);
    if let Some(first) = errors.first() {
        return Err(StreamError::NotAcknowledged {
            failed: errors.len(),
            total,
            first_error: first.clone(),
        });
    }
    Ok(total)
}

/// An idempotent producer (`acks=all`, murmur2 partitioner); transactional
/// with `transactional_id`.
///
/// # Errors
///
/// [`StreamError::Kafka`] when librdkafka refuses the settings, or the
/// transactions cannot be initialised.
pub fn producer(
    config: &KafkaConfig,
    transactional_id: Option<&str>,
) -> Result<BaseProducer<DeliveryContext>, StreamError> {
    let mut c = config.config_for(Client::Producer);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        // Give up on a record no later than the run loop gives up on the
        // batch (its outbox keeps it for the next run).
        .set(
            "message.timeout.ms",
            config.flush_timeout.as_millis().max(1).to_string(),
        );
    if let Some(id) = transactional_id {
        // librdkafka requires message.timeout.ms <= transaction.timeout.ms.
        c.set("transactional.id", id).set(
            "transaction.timeout.ms",
            config.flush_timeout.as_millis().max(1000).to_string(),
        );
    }
    let p: BaseProducer<DeliveryContext> = c
        .create_with_context(DeliveryContext::default())
        .map_err(kafka("creating the producer"))?;
    if transactional_id.is_some() {
        p.init_transactions(config.flush_timeout)
            .map_err(kafka("initialising transactions"))?;
    }
    Ok(p)
}

/// The outbox of a batch: (topic, record) to produce, and the batch's
/// source (topic, partition, next offset).
type Outbox = (Vec<(String, Record)>, Option<(String, u32, u64)>);

struct Inner {
    processor: Arc<str>,
    db: Arc<Database>,
    exactly_once: bool,
    flush_timeout: Duration,
    // Field order matters: the producer and consumer are dropped after
    // everything that may hold their lists.
    buffers: BTreeMap<(String, i32), VecDeque<LogRecord>>,
    positions: HashMap<(String, i32), u64>,
    at_end: BTreeSet<(String, i32)>,
    pending: Vec<(String, Record)>,
    next_seq: u64,
    recovered: bool,
    producer: BaseProducer<DeliveryContext>,
    consumer: BaseConsumer<GroupContext>,
}

/// A processor's connection to Kafka: the [`Source`] and the [`Sink`] share it.
#[derive(Clone)]
pub struct KafkaStream {
    inner: Arc<Mutex<Inner>>,
}

impl KafkaStream {
    /// Joins consumer group `group` on `inputs` for `processor`, with its
    /// outbox and positions in `db`.
    ///
    /// # Errors
    ///
    /// [`StreamError::Kafka`] when a client cannot be created.
    pub fn connect(
        config: &KafkaConfig,
        processor: Arc<str>,
        group: &str,
        inputs: &[String],
        exactly_once: bool,
        db: Arc<Database>,
    ) -> Result<Self, StreamError> {
        let mut c = config.config_for(Client::Consumer);
        c.set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("isolation.level", "read_committed");
        let consumer: BaseConsumer<GroupContext> = c
            .create_with_context(GroupContext::default())
            .map_err(kafka("creating the consumer"))?;
        let topics: Vec<&str> = inputs.iter().map(String::as_str).collect();
        consumer.subscribe(&topics).map_err(kafka("subscribing"))?;
        let transactional_id = format!("tidewater-{processor}");
        let producer = producer(config, exactly_once.then_some(transactional_id.as_str()))?;
        let next_seq = {
            let txn = db.begin_read().map_err(StorageError::from)?;
            match txn.open_table(OUTBOX) {
                Ok(t) => t
                    .iter()
                    .map_err(StorageError::from)?
                    .next_back()
                    .transpose()
                    .map_err(StorageError::from)?
                    .map_or(0, |(k, _)| k.value().1 + 1),
                Err(redb::TableError::TableDoesNotExist(_)) => 0,
                Err(e) => return Err(StorageError::from(e).into()),
            }
        };
        Ok(KafkaStream {
            inner: Arc::new(Mutex::new(Inner {
                processor,
                db,
                exactly_once,
                flush_timeout: config.flush_timeout,
                buffers: BTreeMap::new(),
                positions: HashMap::new(),
                at_end: BTreeSet::new(),
                pending: Vec::new(),
                next_seq,
                recovered: false,
                producer,
                consumer,
            })),
        })
    }

    /// The source half.
    pub fn source(&self) -> Box<dyn Source> {
        Box::new(self.clone())
    }

    /// The sink half.
    pub fn sink(&self) -> Box<dyn Sink> {
        Box::new(KafkaSink(self.clone()))
    }
}

impl Inner {
    fn drop_revoked(&mut self) {
        let revoked: Vec<(String, i32)> =
            std::mem::take(&mut *lock(&self.consumer.context().revoked));
        for tp in revoked {
            if let Some(b) = self.buffers.remove(&tp) {
                tracing::info!(processor = %self.processor, topic = %tp.0, partition = tp.1, dropped = b.len(), "partition revoked; its buffered records go to its new owner");
            }
            self.positions.remove(&tp);
            self.at_end.remove(&tp);
        }
    }

    fn assigned(&self, topic: &str, partition: i32) -> bool {
        self.consumer
            .assignment()
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .any(|e| e.topic() == topic && e.partition() == partition)
            })
            .unwrap_or(false)
    }

    fn position(&mut self, topic: &str, partition: i32) -> Result<u64, PipelineError> {
        let key = (topic.to_owned(), partition);
        if let Some(p) = self.positions.get(&key) {
            return Ok(*p);
        }
        let log = crate::log::Log::new(self.db.clone(), 1);
        let p = log
            .position(&self.processor, topic, partition as u32)?
            .unwrap_or(0);
        self.positions.insert(key, p);
        Ok(p)
    }

    fn outbox(&self) -> Result<Outbox, StorageError> {
        let txn = self.db.begin_read()?;
        let mut out = Vec::new();
        match txn.open_table(OUTBOX) {
            Ok(t) => {
                for e in t.range((&*self.processor, 0)..=(&*self.processor, u64::MAX))? {
                    let (_, v) = e?;
                    if let Ok(o) = postcard::from_bytes::<OutboxEntry>(v.value()) {
                        out.push((
                            o.topic,
                            Record {
                                timestamp_ms: o.timestamp_ms,
                                key: o.key,
                                value: o.value,
                                headers: o.headers,
                            },
                        ));
                    }
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        let source = match txn.open_table(OUTBOX_SOURCE) {
            Ok(t) => t.get(&*self.processor)?.map(|g| {
                let (t, p, n) = g.value();
                (t.to_owned(), p, n)
            }),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        Ok((out, source))
    }

    fn clear_outbox(&mut self) -> Result<(), StorageError> {
        let mut txn = self.db.begin_write()?;
        // Not fsynced: if it is lost, the outbox is produced again on
        // restart (at-least-once), or found committed (exactly-once).
        let _ = txn.set_durability(Durability::None);
        {
            let mut t = txn.open_table(OUTBOX)?;
            let keys: Vec<u64> = t
                .range((&*self.processor, 0)..=(&*self.processor, u64::MAX))?
                .map(|e| e.map(|(k, _)| k.value().1))
                .collect::<Result<_, _>>()?;
            for k in keys {
                t.remove((&*self.processor, k))?;
            }
            txn.open_table(OUTBOX_SOURCE)?.remove(&*self.processor)?;
        }
        txn.commit()?;
        self.pending.clear();
        Ok(())
    }

    /// Produces `records` (and, in exactly-once mode, commits `offsets` in
    /// the same transaction), waiting for the broker.
    fn deliver(
        &self,
        records: &[(String, Record)],
        offsets: Option<(&str, i32, u64)>,
    ) -> Result<(), StreamError> {
        let refs = records.iter().map(|(t, r)| (t.as_str(), r));
        if !self.exactly_once {
            produce_all(&self.producer, refs, self.flush_timeout)?;
            return Ok(());
        }
        self.producer
            .begin_transaction()
            .map_err(kafka("beginning a transaction"))?;
        let result = (|| {
            produce_all(&self.producer, refs, self.flush_timeout)?;
            if let Some((topic, partition, next)) = offsets {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition_offset(topic, partition, Offset::Offset(next as i64))
                    .map_err(kafka("building the offsets"))?;
                let metadata = self
                    .consumer
                    .group_metadata()
                    .ok_or_else(|| kafka("reading the group metadata")(KafkaError::Canceled))?;
                self.producer
                    .send_offsets_to_transaction(&tpl, &metadata, self.flush_timeout)
                    .map_err(kafka("adding the offsets to the transaction"))?;
            }
            self.producer
                .commit_transaction(self.flush_timeout)
                .map_err(kafka("committing the transaction"))
        })();
        if result.is_err() {
            let _ = self.producer.abort_transaction(self.flush_timeout);
        }
        result
    }

    /// Finishes a previous run's batch whose outbox was not cleared.
    /// Returns false while that needs an assignment it does not have yet.
    fn recover(&mut self) -> Result<bool, PipelineError> {
        let (records, source) = self.outbox()?;
        if records.is_empty() && (source.is_none() || !self.exactly_once) {
            self.recovered = true;
            return Ok(true);
        }
        if !self.exactly_once {
            tracing::info!(processor = %self.processor, records = records.len(), "producing the outbox of the previous run");
            self.deliver(&records, None)?;
            self.clear_outbox()?;
            self.recovered = true;
            return Ok(true);
        }
        let Some((topic, partition, next)) = source else {
            self.clear_outbox()?;
            self.recovered = true;
            return Ok(true);
        };
        if !self.assigned(&topic, partition as i32) {
            return Ok(false);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&topic, partition as i32);
        let committed = self
            .consumer
            .committed_offsets(tpl, self.flush_timeout)
            .map_err(kafka("reading committed offsets"))?
            .elements()
            .first()
            .and_then(|e| match e.offset() {
                Offset::Offset(o) => Some(o as u64),
                _ => None,
            })
            .unwrap_or(0);
        if committed < next {
            tracing::info!(processor = %self.processor, records = records.len(), "the previous run's transaction did not commit; producing its outbox again");
            self.deliver(&records, Some((&topic, partition as i32, next)))?;
        }
        self.clear_outbox()?;
        self.recovered = true;
        Ok(true)
    }

    fn poll(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Option<Batch>, PipelineError> {
        self.drop_revoked();
        let started = Instant::now();
        let mut buffered_bytes = 0usize;
        loop {
            let wait = if self.buffers.values().any(|b| !b.is_empty())
                || started.elapsed() > Duration::from_millis(100)
            {
                Duration::ZERO
            } else {
                Duration::from_millis(50)
            };
            let Some(msg) = self.consumer.poll(wait) else {
                break;
            };
            match msg {
                Err(KafkaError::PartitionEOF(p)) => {
                    // The topic is not named in this error: mark every buffer of that partition number.
                    let topics: Vec<String> = self
                        .consumer
                        .assignment()
                        .map(|t| {
                            t.elements()
                                .iter()
                                .filter(|e| e.partition() == p)
                                .map(|e| e.topic().to_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    for t in topics {
                        self.at_end.insert((t, p));
                    }
                    if self.buffers.values().all(VecDeque::is_empty) {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(processor = %self.processor, error = %e, "kafka poll");
                    break;
                }
                Ok(m) => {
                    let record = to_log_record(&m);
                    drop(m);
                    let (topic, partition, offset) =
                        (record.topic.clone(), record.partition as i32, record.offset);
                    if offset < self.position(&topic, partition)? {
                        // Processed and committed in redb by an earlier run.
                        continue;
                    }
                    self.at_end.remove(&(topic.clone(), partition));
                    buffered_bytes += record.record.value.as_ref().map_or(0, Vec::len);
                    let buffer = self.buffers.entry((topic, partition)).or_default();
                    buffer.push_back(record);
                    if buffer.len() >= max_records || buffered_bytes >= max_bytes {
                        break;
                    }
                }
            }
        }
        self.drop_revoked();
        if !self.recovered && !self.recover()? {
            return Ok(None);
        }
        let Some((tp, _)) = self
            .buffers
            .iter()
            .filter(|(_, b)| !b.is_empty())
            .max_by_key(|(_, b)| b.len())
        else {
            return Ok(None);
        };
        let tp = tp.clone();
        let buffer = self.buffers.get_mut(&tp).expect("chosen above");
        let mut records = Vec::new();
        let mut bytes = 0;
        while let Some(r) = buffer.front() {
            let size = r.record.value.as_ref().map_or(0, Vec::len);
            if records.len() >= max_records || (bytes + size > max_bytes && !records.is_empty()) {
                break;
            }
            bytes += size;
            records.push(buffer.pop_front().expect("front exists"));
        }
        Ok(Some(Batch {
            topic: tp.0,
            partition: tp.1 as u32,
            records,
        }))
    }
}

impl Source for KafkaStream {
    fn poll(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Option<Batch>, PipelineError> {
        lock(&self.inner).poll(max_records, max_bytes)
    }

    fn commit_in(&mut self, txn: &WriteTransaction, batch: &Batch) -> Result<(), PipelineError> {
        let inner = lock(&self.inner);
        crate::log::set_position_in(
            txn,
            &inner.processor,
            &batch.topic,
            batch.partition,
            batch.next_offset(),
        )?;
        txn.open_table(OUTBOX_SOURCE)
            .map_err(StorageError::from)?
            .insert(
                &*inner.processor,
                (batch.topic.as_str(), batch.partition, batch.next_offset()),
            )
            .map_err(StorageError::from)?;
        Ok(())
    }

    fn committed(&mut self, batch: &Batch) -> Result<(), PipelineError> {
        let mut inner = lock(&self.inner);
        let tp = (batch.topic.clone(), batch.partition as i32);
        inner.positions.insert(tp.clone(), batch.next_offset());
        if inner.exactly_once {
            return Ok(());
        }
        if !inner.assigned(&tp.0, tp.1) {
            tracing::info!(processor = %inner.processor, topic = %tp.0, partition = tp.1, "partition was revoked; not committing its offset");
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(batch.next_offset() as i64))
            .map_err(|e| PipelineError::Stream(e.to_string()))?;
        // Asynchronous: a synchronous commit waits without a bound when the
        // broker is gone. The position in redb already decides what is
        // skipped after a restart, so a commit that is lost only means a few
        // records are redelivered and skipped.
        let result = inner.consumer.commit(&tpl, CommitMode::Async);
        drop(tpl);
        result.map_err(|e| PipelineError::Stream(format!("committing offsets: {e}")))?;
        tracing::debug!(processor = %inner.processor, topic = %tp.0, partition = tp.1, "offsets committed");
        inner.clear_outbox()?;
        Ok(())
    }

    fn caught_up(&self) -> bool {
        let inner = lock(&self.inner);
        let assignment: Vec<(String, i32)> = inner
            .consumer
            .assignment()
            .map(|t| {
                t.elements()
                    .iter()
                    .map(|e| (e.topic().to_owned(), e.partition()))
                    .collect()
            })
            .unwrap_or_default();
        inner.recovered
            && !assignment.is_empty()
            && assignment.iter().all(|tp| inner.at_end.contains(tp))
            && inner.buffers.values().all(VecDeque::is_empty)
    }
}

/// The sink half of a [`KafkaStream`].
pub struct KafkaSink(KafkaStream);

impl Sink for KafkaSink {
    fn publish_in(
        &mut self,
        txn: &WriteTransaction,
        topic: &str,
        record: &Record,
    ) -> Result<(), PipelineError> {
        let mut inner = lock(&self.0.inner);
        let entry = OutboxEntry {
            topic: topic.to_owned(),
            timestamp_ms: record.timestamp_ms,
            key: record.key.clone(),
            value: record.value.clone(),
            headers: record.headers.clone(),
        };
        let bytes =
            postcard::to_allocvec(&entry).map_err(|e| PipelineError::Stream(e.to_string()))?;
        let seq = inner.next_seq;
        inner.next_seq += 1;
        txn.open_table(OUTBOX)
            .map_err(StorageError::from)?
            .insert((&*inner.processor, seq), bytes.as_slice())
            .map_err(StorageError::from)?;
        inner.pending.push((topic.to_owned(), record.clone()));
        Ok(())
    }

    fn flush(&mut self, batch: &Batch) -> Result<(), PipelineError> {
        let mut inner = lock(&self.0.inner);
        let pending = std::mem::take(&mut inner.pending);
        let offsets = (
            batch.topic.as_str(),
            batch.partition as i32,
            batch.next_offset(),
        );
        inner.deliver(&pending, Some(offsets))?;
        tracing::debug!(processor = %inner.processor, records = pending.len(), "outputs acknowledged");
        if inner.exactly_once {
            tracing::debug!(processor = %inner.processor, "offsets committed");
            inner.clear_outbox()?;
        }
        Ok(())
    }
}

/// Reads `topic` (one partition, or all) from `from_offset` up to its end as
/// it is when the read starts, calling `each` per record until it returns
/// false. Only committed records are read (`read_committed`); no consumer
/// group offsets are committed.
///
/// # Errors
///
/// [`StreamError::MissingTopic`], [`StreamError::Kafka`], or `each`'s error.
pub fn read_topic(
    config: &KafkaConfig,
    topic: &str,
    partition: Option<u32>,
    from_offset: u64,
    mut each: impl FnMut(&LogRecord) -> bool,
) -> Result<(), StreamError> {
    let mut c = config.config_for(Client::Consumer);
    c.set("group.id", "tidewater-consume")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer<GroupContext> = c
        .create_with_context(GroupContext::default())
        .map_err(kafka("creating the consumer"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .map_err(kafka(format!("reading metadata from {}", config.brokers)))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(StreamError::NoSuchTopic(topic.to_owned()));
    }
    let chosen: Vec<i32> = match partition {
        Some(p) if partitions.contains(&(p as i32)) => vec![p as i32],
        Some(p) => {
            return Err(StreamError::NoSuchPartition {
                topic: topic.to_owned(),
                partition: p,
                partitions: partitions.len(),
            });
        }
        None => partitions,
    };
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in &chosen {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, Duration::from_secs(30))
            .map_err(kafka("reading watermarks"))?;
        if high > (from_offset as i64).max(low) {
            ends.insert(*p, high);
            tpl.add_partition_offset(topic, *p, Offset::Offset((from_offset as i64).max(low)))
                .map_err(kafka("assigning"))?;
        }
    }
    consumer.assign(&tpl).map_err(kafka("assigning"))?;
    drop(tpl);
    let mut done: BTreeSet<i32> = BTreeSet::new();
    let deadline_idle = Duration::from_secs(30);
    let mut last = Instant::now();
    while done.len() < ends.len() {
        match consumer.poll(Duration::from_millis(200)) {
            None => {
                if last.elapsed() > deadline_idle {
                    return Err(StreamError::Stalled {
                        topic: topic.to_owned(),
                        seconds: deadline_idle.as_secs(),
                    });
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                done.insert(p);
            }
            Some(Err(e)) => return Err(kafka(format!("reading {topic}"))(e)),
            Some(Ok(m)) => {
                last = Instant::now();
                let r = to_log_record(&m);
                if m.offset() + 1 >= ends[&m.partition()] {
                    done.insert(m.partition());
                }
                if !each(&r) {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// A Kafka message as a log record. A header whose value is null becomes
/// an empty value (the WIT world has no null header values).
fn to_log_record(m: &impl Message) -> LogRecord {
    LogRecord {
        topic: m.topic().to_owned(),
        partition: m.partition() as u32,
        offset: m.offset() as u64,
        append_ms: 0,
        record: Record {
            timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        },
    }
}

/// The end offset (high watermark) of `topic`/`partition`.
///
/// # Errors
///
/// [`StreamError::Kafka`].
pub fn high_watermark(
    config: &KafkaConfig,
    topic: &str,
    partition: u32,
) -> Result<u64, StreamError> {
    let consumer: BaseConsumer<GroupContext> = config
        .config_for(Client::Consumer)
        .create_with_context(GroupContext::default())
        .map_err(kafka("creating the consumer"))?;
    let (_, high) = consumer
        .fetch_watermarks(topic, partition as i32, Duration::from_secs(30))
        .map_err(kafka(format!("reading the end of {topic}/{partition}")))?;
    Ok(high.max(0) as u64)
}

/// A producer for store-and-forward: idempotent, `acks=all`, and records
/// never expire in its queue (`message.timeout.ms=0`), so that while the
/// brokers are unreachable nothing is dropped and nothing needs re-sending.
///
/// # Errors
///
/// [`StreamError::Kafka`] when librdkafka refuses the settings.
pub fn patient_producer(
    config: &KafkaConfig,
) -> Result<BaseProducer<DeliveryContext>, StreamError> {
    let mut c = config.config_for(Client::Producer);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "0");
    c.create_with_context(DeliveryContext::default())
        .map_err(kafka("creating the producer"))
}

/// Produces `records` to `topic` byte for byte (key, value, headers,
/// timestamp) and waits, as long as it takes, until the broker acknowledged
/// all of them, or `stop` is set. Returns whether all were acknowledged.
///
/// # Errors
///
/// [`StreamError::NotAcknowledged`] when the broker refused records for good.
pub fn deliver_patiently(
    producer: &BaseProducer<DeliveryContext>,
    topic: &str,
    records: &[Record],
    stop: &std::sync::atomic::AtomicBool,
) -> Result<bool, StreamError> {
    lock(&producer.context().errors).clear();
    for r in records {
        send_one(producer, topic, r, || true)?;
    }
    let mut warned = false;
    while producer.in_flight_count() > 0 {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(false);
        }
        if producer.flush(Duration::from_secs(5)).is_err() && !warned {
            warned = true;
            tracing::warn!(
                topic,
                waiting = producer.in_flight_count(),
                "the brokers do not acknowledge; records stay stored locally and are sent when they return"
            );
        }
    }
    if warned {
        tracing::info!(topic, "the brokers are back; records acknowledged");
    }
    let errors = lock(&producer.context().errors);
    if let Some(first) = errors.first() {
        return Err(StreamError::NotAcknowledged {
            failed: errors.len(),
            total: records.len(),
            first_error: first.clone(),
        });
    }
    Ok(true)
}
