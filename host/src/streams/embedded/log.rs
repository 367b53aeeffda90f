//! The embedded durable log: topics of N partitions, append-only, in redb.
//!
//! Offsets start at 0 in every partition and grow by one per record; they are
//! never reused, even after retention removed the records before them. A
//! record is durable once the transaction that appended it commits
//! (`Durability::Immediate`, an fsync): a SIGKILL or power loss afterwards
//! loses nothing, one before it loses the whole transaction and nothing else.
//!
//! Records with a key go to partition `murmur2(key) mod partitions`, as Kafka's
//! default partitioner does, so a key keeps its partition on both. Records
//! without a key go by a hash of their value, so the choice is deterministic.
//!
//! Consumer positions (the next offset a processor reads, per topic and
//! partition) live beside the records, so a processor commits its position
//! in the same transaction as its outputs.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::{Deserialize, Serialize};
use serde_bytes::Bytes;

use crate::db::{StorageError, now_ms};
use crate::streams::positions::{self, Position};
use crate::streams::topic::{BadTopicName, MAX_PARTITIONS, check_topic_name, partition_for};
use crate::streams::{LogRecord, Record};

/// A topic and its partitions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopicInfo {
    /// The topic name.
    pub name: String,
    /// Per partition, in order: the first offset still stored, the next offset
    /// to be written (the end), and the stored size in bytes.
    pub partitions: Vec<PartitionInfo>,
    /// Records older than this (by append time, in ms) are removed; `None` keeps them.
    pub retention_ms: Option<u64>,
    /// Each partition is trimmed to at most this many bytes; `None` keeps all.
    pub retention_bytes: Option<u64>,
    /// What retention does with records some consumer has not read.
    pub retention_unread: super::Unread,
}

/// One partition's bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PartitionInfo {
    /// The first offset still stored (the log start offset).
    pub start: u64,
    /// The offset the next record will get (the log end offset).
    pub end: u64,
    /// Bytes stored in this partition (encoded records).
    pub bytes: u64,
}

/// Why a log operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LogError {
    /// The topic does not exist.
    #[error("topic {0:?} does not exist")]
    NoSuchTopic(String),
    /// The partition does not exist.
    #[error("topic {topic:?} has no partition {partition}: {}", crate::streams::topic::partitions_text(*.partitions))]
    NoSuchPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: u32,
        /// How many it has.
        partitions: u32,
    },
    /// A topic exists with another partition count.
    #[error(
        "topic {topic:?} has partition count {existing}, not {requested} (a topic's partition count cannot change: ask for {existing}, or use another topic)"
    )]
    PartitionCount {
        /// The topic.
        topic: String,
        /// Its partition count.
        existing: u32,
        /// The count asked for.
        requested: u32,
    },
    /// A partition count out of range.
    #[error("topic {topic:?} cannot have {requested} partitions: use 1 to {MAX_PARTITIONS}")]
    BadPartitionCount {
        /// The topic.
        topic: String,
        /// The count asked for.
        requested: u32,
    },
    /// The topic name is not allowed.
    #[error(transparent)]
    BadTopicName(#[from] BadTopicName),
    /// A stored record could not be decoded.
    #[error("record {topic}/{partition}@{offset} is corrupt: {reason}")]
    Corrupt {
        /// The topic.
        topic: String,
        /// The partition.
        partition: u32,
        /// The offset.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// redb failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

macro_rules! log_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for LogError {
            fn from(e: $t) -> Self {
                LogError::Storage(e.into())
            }
        }
    )*};
}
log_from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// topic → (partitions, retention in ms, retention in bytes)
pub(super) const TOPICS: TableDefinition<&str, (u32, Option<u64>, Option<u64>)> =
    TableDefinition::new("log.topics");
/// (topic, partition) → (start offset, end offset, bytes)
pub(super) const PARTITIONS: TableDefinition<(&str, u32), (u64, u64, u64)> =
    TableDefinition::new("log.partitions");
/// (topic, partition, offset) → encoded record
pub(super) const RECORDS: TableDefinition<(&str, u32, u64), &[u8]> =
    TableDefinition::new("log.records");

const FORMAT_V1: u8 = 1;

#[derive(Serialize, Deserialize)]
struct Stored<'a> {
    append_ms: u64,
    timestamp_ms: i64,
    #[serde(borrow)]
    key: Option<&'a Bytes>,
    #[serde(borrow)]
    value: Option<&'a Bytes>,
    #[serde(borrow)]
    headers: Vec<(&'a str, &'a Bytes)>,
}

fn encode(record: &Record, append_ms: u64) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(record, append_ms, &mut out);
    out
}

/// [`encode`] into `out`, replacing what it held (a buffer reused across
/// records).
fn encode_into(record: &Record, append_ms: u64, out: &mut Vec<u8>) {
    let stored = Stored {
        append_ms,
        timestamp_ms: record.timestamp_ms,
        key: record.key.as_deref().map(Bytes::new),
        value: record.value.as_deref().map(Bytes::new),
        headers: record
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), Bytes::new(v)))
            .collect(),
    };
    out.clear();
    out.push(FORMAT_V1);
    // Serializing into a Vec cannot fail for this type.
    if let Ok(full) = postcard::to_extend(&stored, std::mem::take(out)) {
        *out = full;
    } else {
        out.push(FORMAT_V1);
    }
}

pub(super) fn decode(bytes: &[u8]) -> Result<(u64, Record), String> {
    let Some((&FORMAT_V1, rest)) = bytes.split_first() else {
        return Err(format!("unknown format byte {:?}", bytes.first()));
    };
    let s: Stored<'_> = postcard::from_bytes(rest).map_err(|e| e.to_string())?;
    Ok((
        s.append_ms,
        Record {
            timestamp_ms: s.timestamp_ms,
            key: s.key.map(|k| k.to_vec()),
            value: s.value.map(|v| v.to_vec()),
            headers: s
                .headers
                .into_iter()
                .map(|(n, v)| (n.to_owned(), v.to_vec()))
                .collect(),
        },
    ))
}

/// Creates `topic` with `partitions` partitions inside `txn` if it does not
/// exist; returns its partition count.
///
/// # Errors
///
/// [`LogError::PartitionCount`] when it exists with another count (unless
/// `partitions` is `None`), [`LogError::BadTopicName`], storage errors.
pub fn ensure_topic_in(
    txn: &WriteTransaction,
    topic: &str,
    partitions: Option<u32>,
    default_partitions: u32,
) -> Result<u32, LogError> {
    let mut topics = txn.open_table(TOPICS)?;
    if let Some(existing) = topics.get(topic)? {
        let existing = existing.value().0;
        return match partitions {
            Some(requested) if requested != existing => Err(LogError::PartitionCount {
                topic: topic.to_owned(),
                existing,
                requested,
            }),
            _ => Ok(existing),
        };
    }
    check_topic_name(topic)?;
    let n = partitions.unwrap_or(default_partitions);
    if !(1..=MAX_PARTITIONS).contains(&n) {
        return Err(LogError::BadPartitionCount {
            topic: topic.to_owned(),
            requested: n,
        });
    }
    topics.insert(topic, (n, None, None))?;
    let mut parts = txn.open_table(PARTITIONS)?;
    for p in 0..n {
        parts.insert((topic, p), (0, 0, 0))?;
    }
    Ok(n)
}

/// Appends `record` to `topic` inside `txn`, creating the topic with
/// `default_partitions` partitions if needed. `partition` overrides the
/// partitioner. Returns the partition and offset it got.
///
/// # Errors
///
/// [`LogError::NoSuchPartition`], [`LogError::BadTopicName`], storage errors.
pub fn append_in(
    txn: &WriteTransaction,
    topic: &str,
    partition: Option<u32>,
    record: &Record,
    default_partitions: u32,
) -> Result<(u32, u64), LogError> {
    append_at_in(txn, topic, partition, record, default_partitions, now_ms())
}

/// As [`append_in`], with the append time given (`append_ms`, ms since the
/// Unix epoch) rather than read from the wall clock: an ingest that stamps
/// records with its clock stores the same instant as their append time.
///
/// # Errors
///
/// As [`append_in`].
pub fn append_at_in(
    txn: &WriteTransaction,
    topic: &str,
    partition: Option<u32>,
    record: &Record,
    default_partitions: u32,
    append_ms: u64,
) -> Result<(u32, u64), LogError> {
    let partitions = ensure_topic_in(txn, topic, None, default_partitions)?;
    let p = match partition {
        Some(p) if p >= partitions => {
            return Err(LogError::NoSuchPartition {
                topic: topic.to_owned(),
                partition: p,
                partitions,
            });
        }
        Some(p) => p,
        None => partition_for(record, partitions),
    };
    let bytes = encode(record, append_ms);
    let mut parts = txn.open_table(PARTITIONS)?;
    let (start, end, size) = parts.get((topic, p))?.map_or((0, 0, 0), |g| g.value());
    txn.open_table(RECORDS)?
        .insert((topic, p, end), bytes.as_slice())?;
    parts.insert((topic, p), (start, end + 1, size + bytes.len() as u64))?;
    Ok((p, end))
}

/// Appends `records` to `topic` inside `txn`, which must exist already
/// (see [`ensure_topic_in`]), each to the partition the partitioner picks,
/// stamped with `append_ms`. Opens each table once and writes each touched
/// partition's bounds once, so it is the fast path for many records (an
/// ingest group commit). Returns each record's partition and offset, in order.
///
/// # Errors
///
/// [`LogError::NoSuchTopic`]; storage errors (the transaction should then be
/// dropped: some records may be in it).
pub fn append_all_in<'r>(
    txn: &WriteTransaction,
    topic: &str,
    records: impl IntoIterator<Item = &'r Record>,
    append_ms: u64,
) -> Result<Vec<(u32, u64)>, LogError> {
    let partitions = txn
        .open_table(TOPICS)?
        .get(topic)?
        .map(|g| g.value().0)
        .ok_or_else(|| LogError::NoSuchTopic(topic.to_owned()))?;
    let records: Vec<&Record> = records.into_iter().collect();
    let mut runs: BTreeMap<u32, Vec<&Record>> = BTreeMap::new();
    let placed: Vec<(u32, usize)> = records
        .iter()
        .map(|record| {
            let p = partition_for(record, partitions);
            let run = runs.entry(p).or_default();
            run.push(record);
            (p, run.len() - 1)
        })
        .collect();
    let mut parts = txn.open_table(PARTITIONS)?;
    let mut table = txn.open_table(RECORDS)?;
    let mut buf = Vec::new();
    let mut firsts = BTreeMap::new();
    for (p, run) in runs {
        let end = append_run(
            &mut parts,
            &mut table,
            (topic, p),
            &run,
            append_ms,
            &mut buf,
        )?;
        firsts.insert(p, end - run.len() as u64);
    }
    Ok(placed
        .into_iter()
        .map(|(p, i)| (p, firsts[&p] + i as u64))
        .collect())
}

/// Appends `run`, in order, at the end of partition `(topic, p)` in
/// `table`, stamped with `append_ms`, and writes the partition's new bounds
/// to `parts`; returns its new end offset. `buf` is reused across records.
///
/// Through a cursor at the partition's end rather than record by record:
/// redb buffers a cursor's run of ascending inserts and packs it into full
/// leaves, where one insert at a time splits each full leaf in half and
/// leaves an append-only table's pages about half empty (log.records held
/// 108 MB of records in 200 MB of pages before).
///
/// # Errors
///
/// Storage errors.
fn append_run(
    parts: &mut redb::Table<(&'static str, u32), (u64, u64, u64)>,
    table: &mut redb::Table<(&'static str, u32, u64), &'static [u8]>,
    (topic, p): (&str, u32),
    run: &[&Record],
    append_ms: u64,
    buf: &mut Vec<u8>,
) -> Result<u64, LogError> {
    let (start, mut end, mut size) = parts.get((topic, p))?.map_or((0, 0, 0), |g| g.value());
    let mut cursor = table.upper_bound_mut(Bound::Included((topic, p, u64::MAX)))?;
    for record in run {
        encode_into(record, append_ms, buf);
        cursor
            .insert_before((topic, p, end), buf.as_slice())
            .map_err(|e| LogError::Storage(redb::Error::from(e).into()))?;
        end += 1;
        size += buf.len() as u64;
    }
    cursor.close()?;
    parts.insert((topic, p), (start, end, size))?;
    Ok(end)
}

/// Appends each `(topic, record)` of `records`, in order, inside `txn`,
/// creating missing topics with `default_partitions` partitions, each record
/// to the partition the partitioner picks, stamped with `append_ms` (ms since
/// the Unix epoch). What [`append_at_in`] does record by record, with each
/// table opened once and each touched partition's bounds read and written
/// once: a processor's batch of outputs and dead letters.
///
/// # Errors
///
/// [`LogError::BadTopicName`], [`LogError::BadPartitionCount`], storage
/// errors (the transaction should then be dropped: some records may be in it).
pub fn append_many_in(
    txn: &WriteTransaction,
    records: &[(Arc<str>, Record)],
    default_partitions: u32,
    append_ms: u64,
) -> Result<(), LogError> {
    let mut partitions: HashMap<&str, u32> = HashMap::new();
    for (topic, _) in records {
        if !partitions.contains_key(&**topic) {
            partitions.insert(
                topic,
                ensure_topic_in(txn, topic, None, default_partitions)?,
            );
        }
    }
    let mut runs: BTreeMap<(&str, u32), Vec<&Record>> = BTreeMap::new();
    for (topic, record) in records {
        let p = partition_for(record, partitions[&**topic]);
        runs.entry((topic, p)).or_default().push(record);
    }
    let mut parts = txn.open_table(PARTITIONS)?;
    let mut table = txn.open_table(RECORDS)?;
    let mut buf = Vec::new();
    for (partition, run) in runs {
        append_run(&mut parts, &mut table, partition, &run, append_ms, &mut buf)?;
    }
    Ok(())
}

/// A transaction (read or write) in which the log's stored bytes can be summed.
pub trait StoredBytes {
    /// The bytes stored in every partition of every topic (encoded records,
    /// as [`PartitionInfo::bytes`] counts them): what the ingest disk quota
    /// (`[log] max_bytes`) is measured against.
    ///
    /// # Errors
    ///
    /// Storage errors.
    fn stored_bytes(&self) -> Result<u64, LogError>;
}

impl StoredBytes for WriteTransaction {
    fn stored_bytes(&self) -> Result<u64, LogError> {
        let parts = self.open_table(PARTITIONS)?;
        let mut total = 0;
        for entry in parts.iter()? {
            total += entry?.1.value().2;
        }
        Ok(total)
    }
}

impl StoredBytes for redb::ReadTransaction {
    fn stored_bytes(&self) -> Result<u64, LogError> {
        let parts = match self.open_table(PARTITIONS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut total = 0;
        for entry in parts.iter()? {
            total += entry?.1.value().2;
        }
        Ok(total)
    }
}

/// The embedded log: a handle on the database that reads and appends
/// records in transactions of its own.
#[derive(Clone)]
pub struct Log {
    db: Arc<Database>,
    default_partitions: u32,
}

impl Log {
    /// A log in `db`; topics created implicitly get `default_partitions` partitions.
    pub fn new(db: Arc<Database>, default_partitions: u32) -> Self {
        Log {
            db,
            default_partitions: default_partitions.max(1),
        }
    }

    /// The database the log lives in.
    pub fn db(&self) -> &Arc<Database> {
        &self.db
    }

    /// How many partitions an implicitly created topic gets.
    pub fn default_partitions(&self) -> u32 {
        self.default_partitions
    }

    /// Creates `topic` with `partitions` partitions, or checks that it has them.
    ///
    /// # Errors
    ///
    /// [`LogError::PartitionCount`] when it exists with another count;
    /// [`LogError::BadTopicName`]; storage errors.
    pub fn create_topic(&self, topic: &str, partitions: u32) -> Result<u32, LogError> {
        let txn = self.db.begin_write()?;
        let n = ensure_topic_in(&txn, topic, Some(partitions), self.default_partitions)?;
        txn.commit()?;
        Ok(n)
    }

    /// Sets a topic's retention: by age (append time, ms) and by size per
    /// partition (bytes). `None` removes that limit.
    ///
    /// # Errors
    ///
    /// [`LogError::NoSuchTopic`]; storage errors.
    pub fn set_retention(
        &self,
        topic: &str,
        retention_ms: Option<u64>,
        retention_bytes: Option<u64>,
    ) -> Result<(), LogError> {
        let txn = self.db.begin_write()?;
        {
            let mut topics = txn.open_table(TOPICS)?;
            let n = topics
                .get(topic)?
                .map(|g| g.value().0)
                .ok_or_else(|| LogError::NoSuchTopic(topic.to_owned()))?;
            topics.insert(topic, (n, retention_ms, retention_bytes))?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Appends `records` to `topic` in one durable transaction, creating the
    /// topic if needed. Returns each record's partition and offset, in order.
    ///
    /// # Errors
    ///
    /// As [`append_in`]; on error nothing was appended.
    pub fn append(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<Vec<(u32, u64)>, LogError> {
        self.append_creating(topic, None, records)
    }

    /// As [`Log::append`], creating the topic with `partitions` partitions
    /// (else the default) if it does not exist, in the same transaction.
    ///
    /// # Errors
    ///
    /// [`LogError::PartitionCount`] when it exists with another count; as
    /// [`append_in`].
    pub fn append_creating(
        &self,
        topic: &str,
        partitions: Option<u32>,
        records: impl IntoIterator<Item = Record>,
    ) -> Result<Vec<(u32, u64)>, LogError> {
        let txn = self.db.begin_write()?;
        ensure_topic_in(&txn, topic, partitions, self.default_partitions)?;
        let placed = records
            .into_iter()
            .map(|r| append_in(&txn, topic, None, &r, self.default_partitions))
            .collect::<Result<Vec<_>, _>>()?;
        txn.commit()?;
        Ok(placed)
    }

    /// The bytes stored in all partitions of all topics (see [`StoredBytes`]).
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn stored_bytes(&self) -> Result<u64, LogError> {
        self.db.begin_read()?.stored_bytes()
    }

    /// The topic's partition count, or `None` if it does not exist.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn partitions(&self, topic: &str) -> Result<Option<u32>, LogError> {
        let txn = self.db.begin_read()?;
        let topics = match txn.open_table(TOPICS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(topics.get(topic)?.map(|g| g.value().0))
    }

    /// The topic's partition count as `txn` sees it, or `None` if it does not exist.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn partitions_in(
        &self,
        txn: &WriteTransaction,
        topic: &str,
    ) -> Result<Option<u32>, LogError> {
        Ok(txn.open_table(TOPICS)?.get(topic)?.map(|g| g.value().0))
    }

    /// Every topic, sorted by name.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn topics(&self) -> Result<Vec<TopicInfo>, LogError> {
        let txn = self.db.begin_read()?;
        let (topics, parts) = match (txn.open_table(TOPICS), txn.open_table(PARTITIONS)) {
            (Ok(t), Ok(p)) => (t, p),
            (Err(redb::TableError::TableDoesNotExist(_)), _)
            | (_, Err(redb::TableError::TableDoesNotExist(_))) => return Ok(Vec::new()),
            (Err(e), _) | (_, Err(e)) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in topics.iter()? {
            let (name, meta) = entry?;
            let (n, retention_ms, retention_bytes) = meta.value();
            let name = name.value().to_owned();
            let mut partitions = Vec::with_capacity(n as usize);
            for p in 0..n {
                let (start, end, bytes) = parts
                    .get((name.as_str(), p))?
                    .map_or((0, 0, 0), |g| g.value());
                partitions.push(PartitionInfo { start, end, bytes });
            }
            out.push(TopicInfo {
                retention_unread: super::retention::unread_policy(&txn, &name)?,
                name,
                partitions,
                retention_ms,
                retention_bytes,
            });
        }
        Ok(out)
    }

    /// Up to `max_records` records of `topic`/`partition` from `from_offset`
    /// on, stopping early once `max_bytes` of encoded records were read (at
    /// least one record is returned if any is available). An offset below
    /// the log start reads from the start.
    ///
    /// # Errors
    ///
    /// [`LogError::NoSuchTopic`], [`LogError::NoSuchPartition`],
    /// [`LogError::Corrupt`], storage errors.
    pub fn read(
        &self,
        topic: &str,
        partition: u32,
        from_offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<LogRecord>, LogError> {
        let txn = self.db.begin_read()?;
        let n = match txn.open_table(TOPICS) {
            Ok(t) => t.get(topic)?.map(|g| g.value().0),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        }
        .ok_or_else(|| LogError::NoSuchTopic(topic.to_owned()))?;
        if partition >= n {
            return Err(LogError::NoSuchPartition {
                topic: topic.to_owned(),
                partition,
                partitions: n,
            });
        }
        // A topic created before any record was appended anywhere has no
        // records table yet: it is empty (found by the model fuzz test).
        let records = match txn.open_table(RECORDS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        let mut bytes = 0usize;
        for entry in records.range((topic, partition, from_offset)..(topic, partition, u64::MAX))? {
            if out.len() >= max_records || (bytes >= max_bytes && !out.is_empty()) {
                break;
            }
            let (k, v) = entry?;
            let offset = k.value().2;
            let raw = v.value();
            bytes += raw.len();
            let (append_ms, record) = decode(raw).map_err(|reason| LogError::Corrupt {
                topic: topic.to_owned(),
                partition,
                offset,
                reason,
            })?;
            out.push(LogRecord {
                topic: topic.to_owned(),
                partition,
                offset,
                append_ms,
                record,
            });
        }
        Ok(out)
    }

    /// The next offset `consumer` reads from `topic`/`partition`; `None` if it
    /// never committed one.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn position(
        &self,
        consumer: &str,
        topic: &str,
        partition: u32,
    ) -> Result<Option<u64>, LogError> {
        Ok(positions::position(&self.db, consumer, topic, partition)?)
    }

    /// Every committed consumer position, with the partition end offsets.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn positions(&self) -> Result<Vec<Position>, LogError> {
        let txn = self.db.begin_read()?;
        let (positions, parts) = match (
            txn.open_table(positions::POSITIONS),
            txn.open_table(PARTITIONS),
        ) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(redb::TableError::TableDoesNotExist(_)), _)
            | (_, Err(redb::TableError::TableDoesNotExist(_))) => return Ok(Vec::new()),
            (Err(e), _) | (_, Err(e)) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for entry in positions.iter()? {
            let (k, v) = entry?;
            let (consumer, topic, partition) = k.value();
            let end = parts.get((topic, partition))?.map_or(0, |g| g.value().1);
            out.push(Position {
                consumer: consumer.to_owned(),
                topic: topic.to_owned(),
                partition,
                next_offset: v.value(),
                end,
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encoding_keeps_every_byte() {
        let r = Record {
            timestamp_ms: -5,
            key: Some(vec![]),
            value: None,
            headers: vec![
                ("h".into(), vec![0xff, 0x00]),
                ("h".into(), vec![]),
                ("ü".into(), b"x".to_vec()),
            ],
        };
        assert_eq!(decode(&encode(&r, 42)).unwrap(), (42, r));
    }

    fn temp_log() -> (tempfile::TempDir, Log) {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        (dir, Log::new(db, 1))
    }

    #[test]
    fn append_read_and_offsets() {
        let (_dir, log) = temp_log();
        log.create_topic("t", 3).unwrap();
        let recs: Vec<Record> = (0..10)
            .map(|i| Record {
                timestamp_ms: i,
                key: Some(format!("k{}", i % 4).into_bytes()),
                value: Some(vec![i as u8]),
                headers: vec![],
            })
            .collect();
        let placed = log.append("t", recs.clone()).unwrap();
        // The same key always lands in the same partition.
        for (i, &(p, _)) in placed.iter().enumerate() {
            assert_eq!(p, partition_for(&recs[i], 3));
        }
        let mut total = 0;
        for p in 0..3 {
            let got = log.read("t", p, 0, 100, usize::MAX).unwrap();
            for (i, r) in got.iter().enumerate() {
                assert_eq!(r.offset, i as u64);
            }
            total += got.len();
        }
        assert_eq!(total, 10);
        assert!(matches!(
            log.read("t", 3, 0, 1, 1),
            Err(LogError::NoSuchPartition { partition: 3, .. })
        ));
        assert!(matches!(
            log.read("nope", 0, 0, 1, 1),
            Err(LogError::NoSuchTopic(_))
        ));
        assert!(matches!(
            log.create_topic("t", 2),
            Err(LogError::PartitionCount {
                existing: 3,
                requested: 2,
                ..
            })
        ));
        assert!(matches!(
            log.create_topic("a/b", 1),
            Err(LogError::BadTopicName(_))
        ));
    }

    /// Batches appended to the ends of interleaved partitions (two topics
    /// of four, as a processor's inputs and outputs are) read back in order,
    /// in leaves packed full: one insert at a time left them half empty.
    #[test]
    fn appended_batches_read_back_in_order_from_full_pages() {
        let (_dir, log) = temp_log();
        log.create_topic("a", 4).unwrap();
        log.create_topic("b", 4).unwrap();
        let rec = |i: u64| Record {
            timestamp_ms: i as i64,
            key: Some(format!("device-{}", i % 37).into_bytes()),
            value: Some(format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(120)).into_bytes()),
            headers: vec![],
        };
        let mut sent: BTreeMap<(&str, u32), Vec<u64>> = BTreeMap::new();
        let mut n = 0;
        for batch in 0..40 {
            let txn = log.db().begin_write().unwrap();
            if batch % 2 == 0 {
                let records: Vec<Record> = (n..n + 500).map(rec).collect();
                let placed = append_all_in(&txn, "a", &records, 7).unwrap();
                for (i, (p, offset)) in (n..).zip(placed) {
                    let run = sent.entry(("a", p)).or_default();
                    assert_eq!(offset, run.len() as u64, "record {i}'s offset");
                    run.push(i);
                }
            } else {
                let records: Vec<(Arc<str>, Record)> = (n..n + 500)
                    .map(|i| (Arc::from(if i % 3 == 0 { "a" } else { "b" }), rec(i)))
                    .collect();
                append_many_in(&txn, &records, 1, 7).unwrap();
                for (topic, r) in &records {
                    let topic = if &**topic == "a" { "a" } else { "b" };
                    let i = r.timestamp_ms as u64;
                    sent.entry((topic, partition_for(r, 4)))
                        .or_default()
                        .push(i);
                }
            }
            txn.commit().unwrap();
            n += 500;
        }
        for ((topic, p), want) in &sent {
            let got = log.read(topic, *p, 0, usize::MAX, usize::MAX).unwrap();
            let got: Vec<(u64, u64)> = got
                .iter()
                .map(|r| (r.offset, r.record.timestamp_ms as u64))
                .collect();
            let want: Vec<(u64, u64)> = (0..).zip(want.iter().copied()).collect();
            assert_eq!(got, want, "{topic}/{p}");
        }
        let txn = log.db().begin_read().unwrap();
        let stats = redb::ReadableTableMetadata::stats(&txn.open_table(RECORDS).unwrap()).unwrap();
        let pages = stats.leaf_pages() * 4096;
        assert!(
            pages * 10 <= stats.stored_bytes() * 12,
            "{pages} bytes of leaves for {} bytes of records",
            stats.stored_bytes()
        );
    }

    #[test]
    fn retention_by_size_keeps_offsets() {
        let (_dir, log) = temp_log();
        log.create_topic("t", 1).unwrap();
        let rec = |i: u8| Record {
            value: Some(vec![i; 100]),
            ..Record::default()
        };
        log.append("t", (0..10).map(rec)).unwrap();
        let one = log.topics().unwrap()[0].partitions[0].bytes / 10;
        log.set_retention("t", None, Some(one * 3)).unwrap();
        assert_eq!(log.enforce_retention(now_ms()).unwrap().removed, 7);
        let info = log.topics().unwrap()[0].partitions[0];
        assert_eq!((info.start, info.end, info.bytes), (7, 10, one * 3));
        let got = log.read("t", 0, 0, 100, usize::MAX).unwrap();
        assert_eq!(got.iter().map(|r| r.offset).collect::<Vec<_>>(), [7, 8, 9]);
        // New records continue the offsets.
        assert_eq!(log.append("t", [rec(10)]).unwrap(), [(0, 10)]);
    }

    #[test]
    fn retention_by_age() {
        let (_dir, log) = temp_log();
        log.append("t", [Record::default(), Record::default()])
            .unwrap();
        log.set_retention("t", Some(60_000), None).unwrap();
        assert_eq!(log.enforce_retention(now_ms()).unwrap().removed, 0);
        assert_eq!(log.enforce_retention(now_ms() + 61_000).unwrap().removed, 2);
        assert_eq!(log.topics().unwrap()[0].partitions[0].start, 2);
    }
}
