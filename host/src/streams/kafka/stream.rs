//! A processor's connection to Kafka: one consumer (its group) and one
//! producer, shared by its [`Source`] and its [`Sink`].

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};
use redb::{Database, ReadableDatabase, ReadableTable, WriteTransaction};

use super::consumer::to_log_record;
use super::outbox::{OUTBOX, OUTBOX_SOURCE, OutboxEntry};
use super::{
    BrokerError, Client, DeliveryContext, GroupContext, KafkaConfig, kafka, lock, produce_all,
    producer,
};
use crate::db::StorageError;
use crate::streams::{Batch, LogRecord, Record, Sink, Source, StreamError, positions};

pub(super) struct Inner {
    pub(super) processor: Arc<str>,
    pub(super) db: Arc<Database>,
    pub(super) exactly_once: bool,
    pub(super) flush_timeout: Duration,
    // Field order matters: the producer and consumer are dropped after
    // everything that may hold their lists.
    pub(super) buffers: BTreeMap<(String, i32), VecDeque<LogRecord>>,
    pub(super) positions: HashMap<(String, i32), u64>,
    pub(super) at_end: BTreeSet<(String, i32)>,
    pub(super) pending: Vec<(String, Record)>,
    pub(super) next_seq: u64,
    pub(super) recovered: bool,
    pub(super) producer: BaseProducer<DeliveryContext>,
    pub(super) consumer: BaseConsumer<GroupContext>,
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
    /// [`BrokerError::Kafka`] when a client cannot be created.
    pub fn connect(
        config: &KafkaConfig,
        processor: Arc<str>,
        group: &str,
        inputs: &[String],
        exactly_once: bool,
        db: Arc<Database>,
    ) -> Result<Self, BrokerError> {
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

    pub(super) fn assigned(&self, topic: &str, partition: i32) -> bool {
        self.consumer
            .assignment()
            .map(|tpl| {
                tpl.elements()
                    .iter()
                    .any(|e| e.topic() == topic && e.partition() == partition)
            })
            .unwrap_or(false)
    }

    fn position(&mut self, topic: &str, partition: i32) -> Result<u64, StreamError> {
        let key = (topic.to_owned(), partition);
        if let Some(p) = self.positions.get(&key) {
            return Ok(*p);
        }
        let p =
            positions::position(&self.db, &self.processor, topic, partition as u32)?.unwrap_or(0);
        self.positions.insert(key, p);
        Ok(p)
    }

    /// Produces `records` (and, in exactly-once mode, commits `offsets` in
    /// the same transaction), waiting for the broker.
    pub(super) fn deliver(
        &self,
        records: &[(String, Record)],
        offsets: Option<(&str, i32, u64)>,
    ) -> Result<(), BrokerError> {
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

    fn poll(&mut self, max_records: usize, max_bytes: usize) -> Result<Option<Batch>, StreamError> {
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
    fn poll(&mut self, max_records: usize, max_bytes: usize) -> Result<Option<Batch>, StreamError> {
        lock(&self.inner).poll(max_records, max_bytes)
    }

    fn commit_in(&mut self, txn: &WriteTransaction, batch: &Batch) -> Result<(), StreamError> {
        let inner = lock(&self.inner);
        positions::set_position_in(
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

    fn committed(&mut self, batch: &Batch) -> Result<(), StreamError> {
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
            .map_err(|e| StreamError::Broker(e.to_string()))?;
        // Asynchronous: a synchronous commit waits without a bound when the
        // broker is gone. The position in redb already decides what is
        // skipped after a restart, so a commit that is lost only means a few
        // records are redelivered and skipped.
        let result = inner.consumer.commit(&tpl, CommitMode::Async);
        drop(tpl);
        result.map_err(|e| StreamError::Broker(format!("committing offsets: {e}")))?;
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
    ) -> Result<(), StreamError> {
        let mut inner = lock(&self.0.inner);
        let entry = OutboxEntry {
            topic: topic.to_owned(),
            timestamp_ms: record.timestamp_ms,
            key: record.key.clone(),
            value: record.value.clone(),
            headers: record.headers.clone(),
        };
        let bytes =
            postcard::to_allocvec(&entry).map_err(|e| StreamError::Broker(e.to_string()))?;
        let seq = inner.next_seq;
        inner.next_seq += 1;
        txn.open_table(OUTBOX)
            .map_err(StorageError::from)?
            .insert((&*inner.processor, seq), bytes.as_slice())
            .map_err(StorageError::from)?;
        inner.pending.push((topic.to_owned(), record.clone()));
        Ok(())
    }

    fn flush(&mut self, batch: &Batch) -> Result<(), StreamError> {
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
