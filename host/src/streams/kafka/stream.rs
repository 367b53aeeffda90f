//! A processor's connection to Kafka: its group consumer, its transactional
//! producer, and the consumers that restore partitions and read replay
//! requests; the [`Source`] and the [`Sink`] share it.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::BaseProducer;
use rdkafka::{Offset, TopicPartitionList};
use redb::{Database, WriteTransaction};

use super::changelog::{self, encode_key};
use super::consumer::to_log_record;
use super::replays::ReplayRequest;
use super::{
    BrokerError, Client, DeliveryContext, GroupContext, KafkaConfig, kafka, lock, producer,
};
use crate::streams::{
    Batch, Change, ChangeStore, LogRecord, PartitionReplay, Record, ReplayFrom, Restored, Rewound,
    Sink, Source, StreamError, positions,
};

/// What a processor's Kafka stream is made of.
pub struct StreamSetup<'a> {
    /// The processor.
    pub processor: Arc<str>,
    /// Its consumer group.
    pub group: &'a str,
    /// Its input topics.
    pub inputs: &'a [String],
    /// Whether its outputs go in the batch's transaction.
    pub exactly_once: bool,
    /// Its changelog topic.
    pub changelog_topic: String,
    /// The topic its hosts hand each other replay requests through.
    pub replays_topic: String,
    /// This host's id ([`KafkaConfig::host_id`]).
    pub host_id: &'a str,
    /// The data dir's database (positions, checkpoints, the local cache).
    pub db: Arc<Database>,
    /// Where restored changes go.
    pub store: Arc<dyn ChangeStore>,
    /// Set to the records a restore in progress still has to read.
    pub restore_lag: Arc<AtomicU64>,
}

/// A partition this host owns, restored.
#[derive(Debug, Clone, Copy)]
pub(super) struct Owned {
    /// The next offset to process: the committed offset, then each
    /// committed batch's end. Replays never move it forward.
    pub next: u64,
    /// The highest offset this host committed for it (never lowered by a
    /// batch; a replay resets it).
    pub committed: u64,
    /// Its reprocessing replay.
    pub replay: PartitionReplay,
    /// The id of the last replay request applied to it.
    pub replay_id: u64,
}

pub(super) struct Inner {
    pub(super) processor: Arc<str>,
    pub(super) db: Arc<Database>,
    pub(super) exactly_once: bool,
    pub(super) flush_timeout: Duration,
    pub(super) transaction_timeout: Duration,
    pub(super) leave_on_stop: bool,
    pub(super) changelog_topic: String,
    pub(super) replays_topic: String,
    pub(super) store: Arc<dyn ChangeStore>,
    pub(super) restore_lag: Arc<AtomicU64>,
    // Field order matters: the producers and consumers are dropped after
    // everything that may hold their lists.
    pub(super) buffers: BTreeMap<(String, i32), VecDeque<LogRecord>>,
    pub(super) at_end: BTreeSet<(String, i32)>,
    pub(super) owned: HashMap<(String, i32), Owned>,
    /// Outputs of the batch being committed: (topic, record).
    pub(super) pending: Vec<(String, Record)>,
    /// Changelog records of the batch: (changelog partition, key, value).
    pub(super) changes: Vec<(i32, Vec<u8>, Option<Vec<u8>>)>,
    /// The checkpoint the batch's changelog records reached, for `commit_in`.
    pub(super) pending_checkpoint: Option<u64>,
    pub(super) restored: Restored,
    /// The group consumer's settings and topics, to make it again after a
    /// fatal error.
    pub(super) consumer_config: rdkafka::config::ClientConfig,
    pub(super) inputs: Vec<String>,
    /// To make the transactional producer again.
    pub(super) kafka_config: KafkaConfig,
    pub(super) transactional_id: String,
    pub(super) latest_replay: Option<ReplayRequest>,
    /// Whether the group has assigned this host anything (or nothing) yet.
    pub(super) joined: bool,
    pub(super) out_producer: Option<BaseProducer<DeliveryContext>>,
    /// Shared so that a call librdkafka may never return from can run on a
    /// thread of its own (see `commit::bounded`).
    pub(super) producer: Arc<BaseProducer<DeliveryContext>>,
    pub(super) replays_consumer: BaseConsumer<GroupContext>,
    pub(super) restorer: BaseConsumer<GroupContext>,
    pub(super) consumer: BaseConsumer<GroupContext>,
}

/// A processor's connection to Kafka: the [`Source`] and the [`Sink`] share it.
#[derive(Clone)]
pub struct KafkaStream {
    inner: Arc<Mutex<Inner>>,
}

/// librdkafka's setting for how often a client refreshes its metadata (ms).
const METADATA_REFRESH: &str = "topic.metadata.refresh.interval.ms";

/// A consumer outside any group's assignment: it reads what it is assigned,
/// committed records only, and commits nothing.
fn assigning_consumer(
    config: &KafkaConfig,
    group: &str,
) -> Result<BaseConsumer<GroupContext>, BrokerError> {
    let mut c = config.config_for(Client::Consumer);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed");
    c.create_with_context(GroupContext::default())
        .map_err(kafka("creating a consumer"))
}

/// A group consumer with settings `c`, subscribed to `inputs`.
fn group_consumer(
    c: &rdkafka::config::ClientConfig,
    inputs: &[String],
) -> Result<BaseConsumer<GroupContext>, BrokerError> {
    let consumer: BaseConsumer<GroupContext> = c
        .create_with_context(GroupContext::default())
        .map_err(kafka("creating the consumer"))?;
    let topics: Vec<&str> = inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&topics).map_err(kafka("subscribing"))?;
    Ok(consumer)
}

impl KafkaStream {
    /// Joins consumer group `setup.group` on `setup.inputs` as a static
    /// member (`group.instance.id` = the host id), with a transactional
    /// producer (`transactional.id` = `tidewater-<group>-<host id>`, which
    /// fences this host's previous run), and reads the group's replay
    /// requests.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Kafka`] when a client cannot be created or the
    /// transactions cannot be initialised.
    pub fn connect(config: &KafkaConfig, setup: StreamSetup<'_>) -> Result<Self, BrokerError> {
        let mut c = config.config_for(Client::Consumer);
        c.set("group.id", setup.group)
            .set("group.instance.id", setup.host_id)
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "true")
            .set("partition.assignment.strategy", "cooperative-sticky")
            .set("isolation.level", "read_committed");
        if !config.properties.contains_key(METADATA_REFRESH) {
            // librdkafka joins the group only once its metadata shows a
            // subscribed topic, and refreshes it every 5 minutes by default:
            // an input that appears later (or that a broker's metadata had
            // not shown yet) would wait that long to be read.
            c.set(METADATA_REFRESH, "10000");
        }
        let consumer = group_consumer(&c, setup.inputs)?;
        let transactional_id = format!("tidewater-{}-{}", setup.group, setup.host_id);
        let producer = producer(config, Some(transactional_id.as_str()))?;
        let out_producer = (!setup.exactly_once)
            .then(|| super::producer(config, None))
            .transpose()?;
        let restorer = assigning_consumer(config, &format!("{}-restore", setup.group))?;
        let replays_consumer = assigning_consumer(config, &format!("{}-replays", setup.group))?;
        let mut inner = Inner {
            processor: setup.processor,
            db: setup.db,
            exactly_once: setup.exactly_once,
            flush_timeout: config.flush_timeout,
            transaction_timeout: config.transaction_timeout,
            leave_on_stop: config.leave_group_on_stop,
            changelog_topic: setup.changelog_topic,
            replays_topic: setup.replays_topic,
            store: setup.store,
            restore_lag: setup.restore_lag,
            buffers: BTreeMap::new(),
            at_end: BTreeSet::new(),
            owned: HashMap::new(),
            pending: Vec::new(),
            changes: Vec::new(),
            pending_checkpoint: None,
            restored: Restored::default(),
            consumer_config: c,
            inputs: setup.inputs.to_vec(),
            kafka_config: config.clone(),
            transactional_id,
            latest_replay: None,
            joined: false,
            out_producer,
            producer: Arc::new(producer),
            replays_consumer,
            restorer,
            consumer,
        };
        inner.start_reading_replays()?;
        Ok(KafkaStream {
            inner: Arc::new(Mutex::new(inner)),
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
    /// Applies the rebalances librdkafka reported, in order: a revoked
    /// partition is dropped (its buffered records go to its new owner); an
    /// assigned one is restored from the changelog before any of its
    /// records is processed, then caught up with the group's replays.
    fn follow_rebalances(&mut self) -> Result<(), StreamError> {
        let fatal = lock(&self.consumer.context().fatal).take();
        if let Some(error) = fatal {
            self.rejoin(&error)?;
        }
        let changes: Vec<(bool, String, i32)> =
            std::mem::take(&mut *lock(&self.consumer.context().changes));
        if changes.is_empty() {
            return Ok(());
        }
        self.joined = true;
        let mut assigned = Vec::new();
        for (is_assigned, topic, partition) in changes {
            let tp = (topic, partition);
            if is_assigned {
                assigned.push(tp);
                continue;
            }
            assigned.retain(|a| *a != tp);
            if let Some(b) = self.buffers.remove(&tp) {
                tracing::info!(processor = %self.processor, topic = %tp.0, partition = tp.1, dropped = b.len(), "partition revoked; its buffered records go to its new owner");
            }
            self.owned.remove(&tp);
            self.at_end.remove(&tp);
        }
        if assigned.is_empty() {
            return Ok(());
        }
        let committed = self.committed_offsets(&assigned)?;
        for tp in assigned {
            self.take_partition(&tp, committed.get(&tp).copied().unwrap_or(0))?;
        }
        self.apply_replays()
    }

    /// Makes the group consumer again after a fatal error (its partitions
    /// are gone; the new one joins as the same static member).
    fn rejoin(&mut self, error: &str) -> Result<(), StreamError> {
        tracing::warn!(processor = %self.processor, %error, "the consumer cannot go on; joining the group again");
        self.owned.clear();
        self.buffers.clear();
        self.at_end.clear();
        self.consumer = group_consumer(&self.consumer_config, &self.inputs)?;
        Ok(())
    }

    /// The group's committed offsets of `tps` (0 where none is committed).
    fn committed_offsets(
        &self,
        tps: &[(String, i32)],
    ) -> Result<HashMap<(String, i32), u64>, StreamError> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in tps {
            tpl.add_partition(t, *p);
        }
        let got = self
            .consumer
            .committed_offsets(tpl, self.flush_timeout)
            .map_err(kafka("reading committed offsets"))?;
        Ok(got
            .elements()
            .iter()
            .map(|e| {
                let o = match e.offset() {
                    Offset::Offset(o) => o.max(0) as u64,
                    _ => 0,
                };
                ((e.topic().to_owned(), e.partition()), o)
            })
            .collect())
    }

    /// Restores a newly assigned partition and starts owning it.
    fn take_partition(&mut self, tp: &(String, i32), committed: u64) -> Result<(), StreamError> {
        let partition = tp.1 as u32;
        let run = self.restore(&tp.0, partition)?;
        tracing::info!(
            processor = %self.processor, topic = %tp.0, partition, records = run.records,
            ms = run.elapsed.as_millis() as u64, "partition assigned; state and keys restored from the changelog"
        );
        self.restored.partitions += 1;
        self.restored.records += run.records;
        self.restored.ms += run.elapsed.as_millis() as u64;
        let (replay_id, replay) =
            changelog::partition_replay(&self.db, &self.processor, &tp.0, partition)?;
        self.owned.insert(
            tp.clone(),
            Owned {
                next: committed,
                committed,
                replay,
                replay_id,
            },
        );
        Ok(())
    }

    /// Polls the group for records, buffering them per partition, and
    /// returns the next batch: from the partition with the most buffered.
    fn poll(&mut self, max_records: usize, max_bytes: usize) -> Result<Option<Batch>, StreamError> {
        self.follow_rebalances()?;
        self.read_replays(Duration::ZERO)?;
        self.apply_replays()?;
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
            let polled = self
                .consumer
                .poll(wait)
                .map(|r| r.map(|m| to_log_record(&m)));
            self.follow_rebalances()?;
            let Some(msg) = polled else {
                break;
            };
            match msg {
                Err(KafkaError::PartitionEOF(p)) => {
                    self.mark_at_end(p);
                    if self.buffers.values().all(VecDeque::is_empty) {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(processor = %self.processor, error = %e, "kafka poll");
                    break;
                }
                Ok(record) => {
                    let tp = (record.topic.clone(), record.partition as i32);
                    if !self.owned.contains_key(&tp) {
                        continue;
                    }
                    self.at_end.remove(&tp);
                    buffered_bytes += record.record.value.as_ref().map_or(0, Vec::len);
                    let buffer = self.buffers.entry(tp).or_default();
                    buffer.push_back(record);
                    if buffer.len() >= max_records || buffered_bytes >= max_bytes {
                        break;
                    }
                }
            }
        }
        Ok(self.next_batch(max_records, max_bytes))
    }

    /// Marks every owned partition numbered `p` at its end (the EOF event
    /// does not name the topic).
    fn mark_at_end(&mut self, p: i32) {
        let topics: Vec<String> = self
            .owned
            .keys()
            .filter(|(_, q)| *q == p)
            .map(|(t, _)| t.clone())
            .collect();
        for t in topics {
            self.at_end.insert((t, p));
        }
    }

    /// Takes a batch from the partition with the most buffered records.
    fn next_batch(&mut self, max_records: usize, max_bytes: usize) -> Option<Batch> {
        let (tp, _) = self
            .buffers
            .iter()
            .filter(|(_, b)| !b.is_empty())
            .max_by_key(|(_, b)| b.len())?;
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
        Some(Batch {
            topic: tp.0,
            partition: tp.1 as u32,
            records,
        })
    }

    /// Puts `tp` back at `offset`: its buffered records are dropped and
    /// read again from there (after an abandoned batch, or a replay).
    pub(super) fn seek_back(&mut self, tp: &(String, i32), offset: u64) {
        self.buffers.remove(tp);
        self.at_end.remove(tp);
        if let Err(e) = self.consumer.seek(
            &tp.0,
            tp.1,
            Offset::Offset(offset as i64),
            Duration::from_secs(10),
        ) {
            tracing::debug!(processor = %self.processor, topic = %tp.0, partition = tp.1, error = %e, "seek (the partition may be leaving)");
        }
    }
}

impl Drop for Inner {
    /// A host that stops leaves its groups (unless `leave_group_on_stop`
    /// is off): a static member does not on close, so it unsubscribes first
    /// and waits (up to 5 s) until its partitions are revoked.
    fn drop(&mut self) {
        if !self.leave_on_stop || !self.joined {
            return;
        }
        self.consumer.unsubscribe();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            let _ = self.consumer.poll(Duration::from_millis(50));
            let empty = self
                .consumer
                .assignment()
                .map(|a| a.count() == 0)
                .unwrap_or(true);
            if empty && lock(&self.consumer.context().changes).iter().all(|c| !c.0) {
                break;
            }
        }
        tracing::info!(processor = %self.processor, "left the consumer group");
    }
}

impl Source for KafkaStream {
    fn poll(&mut self, max_records: usize, max_bytes: usize) -> Result<Option<Batch>, StreamError> {
        lock(&self.inner).poll(max_records, max_bytes)
    }

    fn commit_in(&mut self, txn: &WriteTransaction, batch: &Batch) -> Result<(), StreamError> {
        let mut inner = lock(&self.inner);
        positions::set_position_in(
            txn,
            &inner.processor,
            &batch.topic,
            batch.partition,
            batch.next_offset(),
        )?;
        if let Some(next) = inner.pending_checkpoint.take() {
            changelog::set_checkpoint_in(
                txn,
                &inner.processor,
                &batch.topic,
                batch.partition,
                next,
            )?;
        }
        Ok(())
    }

    fn committed(&mut self, batch: &Batch) -> Result<(), StreamError> {
        let mut inner = lock(&self.inner);
        let tp = (batch.topic.clone(), batch.partition as i32);
        if let Some(o) = inner.owned.get_mut(&tp) {
            o.next = batch.next_offset();
            o.committed = o.committed.max(o.next);
        }
        Ok(())
    }

    /// Caught up when this host owns partitions and has read each to its
    /// end. A host that owns none (between a rebalance's revoke and assign,
    /// or with more hosts than partitions) is not: `--until-idle` is for a
    /// group's only host.
    fn caught_up(&self) -> bool {
        self.behind().is_none()
    }

    fn behind(&self) -> Option<String> {
        let inner = lock(&self.inner);
        if inner.owned.is_empty() {
            return Some(
                "owns no partition: the group assigned it none (another host may hold them all; \
                 --until-idle is for a group's only host)"
                    .into(),
            );
        }
        let mut not_at_end: Vec<String> = inner
            .owned
            .keys()
            .filter(|tp| !inner.at_end.contains(*tp))
            .map(|(t, p)| format!("{t}/{p}"))
            .collect();
        not_at_end.sort();
        let buffered: usize = inner.buffers.values().map(VecDeque::len).sum();
        match (not_at_end.is_empty(), buffered) {
            (true, 0) => None,
            (true, n) => Some(format!("has {n} records read and not yet processed")),
            (false, _) => Some(format!(
                "has not read to the end of {}",
                not_at_end.join(", ")
            )),
        }
    }

    fn rewind(&mut self, from: ReplayFrom, epoch: u64) -> Result<Rewound, StreamError> {
        let mut inner = lock(&self.inner);
        inner.request_replay(from, epoch)?;
        Ok(Rewound::default())
    }

    fn partition_scope(&self, topic: &str, partition: u32) -> Option<PartitionReplay> {
        let inner = lock(&self.inner);
        let replay = inner
            .owned
            .get(&(topic.to_owned(), partition as i32))
            .map(|o| o.replay)
            .unwrap_or_default();
        Some(replay)
    }

    fn group_epoch(&self) -> Option<u64> {
        lock(&self.inner).latest_replay.as_ref().map(|r| r.epoch)
    }

    fn take_restored(&mut self) -> Option<Restored> {
        let mut inner = lock(&self.inner);
        (inner.restored.partitions > 0).then(|| std::mem::take(&mut inner.restored))
    }
}

/// The sink half of a [`KafkaStream`].
pub struct KafkaSink(KafkaStream);

impl Sink for KafkaSink {
    fn publish_in(
        &mut self,
        _txn: &WriteTransaction,
        topic: &str,
        record: &Record,
    ) -> Result<(), StreamError> {
        lock(&self.0.inner)
            .pending
            .push((topic.to_owned(), record.clone()));
        Ok(())
    }

    fn flush(&mut self, batch: &Batch) -> Result<(), StreamError> {
        lock(&self.0.inner).commit_batch(batch)
    }

    fn keeps_changelog(&self) -> bool {
        true
    }

    fn record_change(&mut self, topic: &str, partition: u32, change: Change) {
        let key = encode_key(change.kind as u8, change.epoch, topic, &change.key);
        lock(&self.0.inner)
            .changes
            .push((partition as i32, key, change.value));
    }
}
