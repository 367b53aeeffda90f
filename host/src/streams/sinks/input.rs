//! A sink's two ends inside tidewater: the topic it reads ([`Input`]) and
//! the dead-letter topic it writes ([`DeadLetters`]).

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use rdkafka::producer::BaseProducer;
use redb::{Database, Durability, ReadableDatabase, TableDefinition};

use super::SinkError;
use crate::streams::embedded::{Log, LogError, append_in};
use crate::streams::kafka::{DeliveryContext, KafkaConfig, PartitionReader, deliver_patiently};
use crate::streams::{LogRecord, Record, first_at_or_after, positions};

/// Most bytes read per partition and batch.
const MAX_BATCH_BYTES: usize = 16 << 20;

/// Where a sink reads its topic.
pub enum Input {
    /// The embedded log.
    Embedded {
        /// The log.
        log: Log,
        /// Whether the last look found every partition read to its end.
        caught_up: bool,
    },
    /// A Kafka topic, read partition by partition from the sink's own
    /// positions (no consumer group: the sink keeps its positions itself).
    Kafka {
        /// The reader.
        reader: Box<PartitionReader>,
        /// As for the embedded log.
        caught_up: bool,
    },
}

impl Input {
    /// The embedded log's topic.
    pub fn embedded(log: Log) -> Self {
        Input::Embedded {
            log,
            caught_up: false,
        }
    }

    /// A Kafka topic, read by a consumer of its own.
    ///
    /// # Errors
    ///
    /// When librdkafka refuses the settings.
    pub fn kafka(config: &KafkaConfig, sink: &str, topic: &str) -> Result<Self, SinkError> {
        Ok(Input::Kafka {
            reader: Box::new(PartitionReader::new(config, sink, topic)?),
            caught_up: false,
        })
    }

    pub(super) fn caught_up(&self) -> bool {
        match self {
            Input::Embedded { caught_up, .. } | Input::Kafka { caught_up, .. } => *caught_up,
        }
    }

    pub(super) fn set_caught_up(&mut self, value: bool) {
        match self {
            Input::Embedded { caught_up, .. } | Input::Kafka { caught_up, .. } => {
                *caught_up = value
            }
        }
    }

    /// The topic's partition count; `None` while it does not exist.
    pub(super) fn partitions(&mut self, topic: &str) -> Result<Option<u32>, SinkError> {
        match self {
            Input::Embedded { log, .. } => Ok(log.partitions(topic)?),
            Input::Kafka { reader, .. } => Ok(reader.partitions()?),
        }
    }

    /// Up to `max` records of `partition` from offset `from`.
    pub(super) fn read(
        &mut self,
        topic: &str,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<LogRecord>, SinkError> {
        match self {
            Input::Embedded { log, .. } => {
                Ok(log.read(topic, partition, from, max, MAX_BATCH_BYTES)?)
            }
            Input::Kafka { reader, .. } => Ok(reader.read(partition, from, max)?),
        }
    }

    /// The first offset of `partition` whose record's timestamp is at or
    /// after `time_ms` (the end when there is none).
    pub(super) fn offset_for_time(
        &mut self,
        topic: &str,
        partition: u32,
        time_ms: i64,
    ) -> Result<u64, SinkError> {
        match self {
            Input::Embedded { log, .. } => {
                let mut at = 0;
                loop {
                    let chunk = log.read(topic, partition, at, 4096, usize::MAX)?;
                    let Some(last) = chunk.last() else {
                        return Ok(at);
                    };
                    if let Some(o) = first_at_or_after(&chunk, time_ms) {
                        return Ok(o);
                    }
                    at = last.offset + 1;
                }
            }
            Input::Kafka { reader, .. } => Ok(reader.offset_for_time(partition, time_ms)?),
        }
    }
}

/// (sink, topic, partition) → the offset after the last record dead-lettered
/// from it: a batch delivered again (after a crash, or a lost COMMIT) does
/// not dead-letter its records twice.
const MARKS: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("sinks.dead_lettered");

/// Where a sink's dead letters go: the embedded log (appended with the
/// mark in one redb transaction: each once) or Kafka (produced, then
/// marked: at least once).
pub struct DeadLetters {
    db: Arc<Database>,
    topic: String,
    out: DeadLetterOut,
}

enum DeadLetterOut {
    Embedded(u32),
    Kafka(Box<BaseProducer<DeliveryContext>>),
}

impl DeadLetters {
    /// Dead letters into the embedded log's `topic` (created with
    /// `default_partitions` when missing).
    pub fn embedded(db: Arc<Database>, topic: String, default_partitions: u32) -> Self {
        DeadLetters {
            db,
            topic,
            out: DeadLetterOut::Embedded(default_partitions),
        }
    }

    /// Dead letters into the Kafka topic `topic`.
    ///
    /// # Errors
    ///
    /// When librdkafka refuses the settings.
    pub fn kafka(
        db: Arc<Database>,
        topic: String,
        config: &KafkaConfig,
    ) -> Result<Self, SinkError> {
        let producer = crate::streams::kafka::patient_producer(config)?;
        Ok(DeadLetters {
            db,
            topic,
            out: DeadLetterOut::Kafka(Box::new(producer)),
        })
    }

    /// The dead-letter topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Writes `letters` (source offset, dead-letter record; in offset
    /// order) from `topic`/`partition` of sink `sink`, durably, skipping
    /// those written before. Returns whether all are written (`false`:
    /// asked to stop while Kafka was away).
    ///
    /// # Errors
    ///
    /// Storage and Kafka errors.
    pub fn write(
        &self,
        sink: &str,
        topic: &str,
        partition: u32,
        mut letters: Vec<(u64, Record)>,
        stop: &AtomicBool,
    ) -> Result<bool, SinkError> {
        let mark = {
            let txn = self.db.begin_read().map_err(LogError::from)?;
            match txn.open_table(MARKS) {
                Ok(t) => t
                    .get((sink, topic, partition))
                    .map_err(LogError::from)?
                    .map_or(0, |g| g.value()),
                Err(redb::TableError::TableDoesNotExist(_)) => 0,
                Err(e) => return Err(LogError::from(e).into()),
            }
        };
        letters.retain(|(offset, _)| *offset >= mark);
        let Some(last) = letters.last().map(|(o, _)| *o) else {
            return Ok(true);
        };
        if let DeadLetterOut::Kafka(producer) = &self.out {
            let records: Vec<Record> = letters.iter().map(|(_, r)| r.clone()).collect();
            let Some(refused) = deliver_patiently(producer, &self.topic, &records, stop)? else {
                return Ok(false);
            };
            // A dead letter the broker refuses (e.g. larger than the topic's
            // max.message.bytes) has nowhere else to go: stop the sink with
            // the reason rather than skip it; its record stays in the source.
            if let Some(first) = refused.first() {
                return Err(crate::streams::kafka::BrokerError::NotAcknowledged {
                    failed: refused.len(),
                    total: records.len(),
                    first_error: format!("dead-letter topic {}: {}", self.topic, first.message),
                }
                .into());
            }
        }
        let txn = self.db.begin_write().map_err(LogError::from)?;
        if let DeadLetterOut::Embedded(default_partitions) = self.out {
            for (_, r) in &letters {
                append_in(&txn, &self.topic, None, r, default_partitions)?;
            }
        }
        txn.open_table(MARKS)
            .map_err(LogError::from)?
            .insert((sink, topic, partition), last + 1)
            .map_err(LogError::from)?;
        txn.commit().map_err(LogError::from)?;
        Ok(true)
    }

    /// Copies a position kept elsewhere (in PostgreSQL) into redb, without
    /// an fsync, so `stats` and `/metrics` show the sink's lag.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn mirror_position(
        &self,
        sink: &str,
        topic: &str,
        partition: u32,
        next: u64,
    ) -> Result<(), SinkError> {
        let mut txn = self.db.begin_write().map_err(LogError::from)?;
        let _ = txn.set_durability(Durability::None);
        positions::set_position_in(&txn, sink, topic, partition, next)?;
        txn.commit().map_err(LogError::from)?;
        Ok(())
    }

    /// The database (where the webhook sink keeps its positions).
    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }
}
