//! The changelog of a processor's state and keys: a compacted topic with one
//! partition per input partition, and restoring a partition from it into
//! the local redb cache.
//!
//! # Record format
//!
//! Changes of input partition `topic`/`p` go to changelog partition `p`
//! (the inputs of a processor share it: the topic is in the key).
//!
//! - key: a kind byte (`K` idempotency key, `C` conflict, `S` state, `R`
//!   the partition's replay), the idempotency epoch (8 bytes big-endian; 0
//!   for state), the input topic's length (2 bytes big-endian) and name,
//!   then the change's own key (see [`crate::streams::ChangeKind`]);
//! - value: the change's value; a tombstone (no value) removes it, and
//!   compaction drops what it replaces;
//! - `R` (key without a change key): request id, epoch and end of the
//!   partition's latest replay, 3 × 8 bytes big-endian.
//!
//! # Checkpoints
//!
//! redb is the changelog's local cache: per input partition it keeps the
//! changelog offset up to which it holds every change of that partition
//! ([`CHECKPOINTS`]), written in the transaction that applies them. A
//! restore reads from there (from the start without one) to the end.

use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use redb::{Durability, ReadableDatabase, TableDefinition, WriteTransaction};

use super::stream::Inner;
use super::{BrokerError, kafka};
use crate::db::StorageError;
use crate::streams::{Change, ChangeKind, PartitionReplay, StreamError};

/// (processor, input topic, input partition) → the next changelog offset
/// to apply: everything below it is in the local cache.
pub(super) const CHECKPOINTS: TableDefinition<(&str, &str, u32), u64> =
    TableDefinition::new("kafka.changelog_checkpoints");

/// (processor, input topic, input partition) → (request id, epoch, end) of
/// the partition's latest replay, as its changelog says.
pub(super) const PARTITION_REPLAYS: TableDefinition<(&str, &str, u32), (u64, u64, u64)> =
    TableDefinition::new("kafka.partition_replays");

/// The kind byte of a partition's replay record.
pub(super) const REPLAY_KIND: u8 = b'R';

/// Records applied per redb transaction during a restore.
const RESTORE_CHUNK: u64 = 20_000;

/// A changelog record's key, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChangelogKey<'a> {
    /// The kind byte: `K`, `C`, `S` or `R`.
    pub kind: u8,
    /// The idempotency epoch (0 for state).
    pub epoch: u64,
    /// The input topic.
    pub topic: &'a str,
    /// The change's own key.
    pub key: &'a [u8],
}

/// The key of a changelog record (see the module docs).
pub fn encode_key(kind: u8, epoch: u64, topic: &str, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(11 + topic.len() + key.len());
    k.push(kind);
    k.extend_from_slice(&epoch.to_be_bytes());
    k.extend_from_slice(&(topic.len() as u16).to_be_bytes());
    k.extend_from_slice(topic.as_bytes());
    k.extend_from_slice(key);
    k
}

/// A changelog record's key; `None` when it is not one.
pub fn decode_key(k: &[u8]) -> Option<ChangelogKey<'_>> {
    let kind = *k.first()?;
    let epoch = u64::from_be_bytes(k.get(1..9)?.try_into().ok()?);
    let len = u16::from_be_bytes(k.get(9..11)?.try_into().ok()?) as usize;
    let topic = std::str::from_utf8(k.get(11..11 + len)?).ok()?;
    Some(ChangelogKey {
        kind,
        epoch,
        topic,
        key: &k[11 + len..],
    })
}

/// The value of a partition's replay record.
pub(super) fn encode_replay(id: u64, replay: PartitionReplay) -> Vec<u8> {
    [id, replay.epoch, replay.end]
        .iter()
        .flat_map(|x| x.to_be_bytes())
        .collect()
}

fn decode_replay(v: &[u8]) -> Option<(u64, u64, u64)> {
    let word = |i: usize| {
        Some(u64::from_be_bytes(
            v.get(i * 8..i * 8 + 8)?.try_into().ok()?,
        ))
    };
    Some((word(0)?, word(1)?, word(2)?))
}

/// The local checkpoint of `topic`/`partition`, if any.
pub(super) fn checkpoint(
    db: &redb::Database,
    processor: &str,
    topic: &str,
    partition: u32,
) -> Result<Option<u64>, StorageError> {
    let txn = db.begin_read()?;
    match txn.open_table(CHECKPOINTS) {
        Ok(t) => Ok(t.get((processor, topic, partition))?.map(|g| g.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The partition's replay as the local cache has it: (request id, replay).
pub(super) fn partition_replay(
    db: &redb::Database,
    processor: &str,
    topic: &str,
    partition: u32,
) -> Result<(u64, PartitionReplay), StorageError> {
    let txn = db.begin_read()?;
    let got = match txn.open_table(PARTITION_REPLAYS) {
        Ok(t) => t.get((processor, topic, partition))?.map(|g| g.value()),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e.into()),
    };
    Ok(
        got.map_or((0, PartitionReplay::default()), |(id, epoch, end)| {
            (id, PartitionReplay { epoch, end })
        }),
    )
}

/// Records, inside `txn`, the partition's replay.
pub(super) fn set_partition_replay_in(
    txn: &WriteTransaction,
    processor: &str,
    topic: &str,
    partition: u32,
    id: u64,
    replay: PartitionReplay,
) -> Result<(), StorageError> {
    txn.open_table(PARTITION_REPLAYS)?.insert(
        (processor, topic, partition),
        (id, replay.epoch, replay.end),
    )?;
    Ok(())
}

/// Sets, inside `txn`, the checkpoint of `topic`/`partition`.
pub(super) fn set_checkpoint_in(
    txn: &WriteTransaction,
    processor: &str,
    topic: &str,
    partition: u32,
    next: u64,
) -> Result<(), StorageError> {
    txn.open_table(CHECKPOINTS)?
        .insert((processor, topic, partition), next)?;
    Ok(())
}

/// What one restore did.
pub(super) struct RestoreRun {
    pub records: u64,
    pub elapsed: Duration,
}

impl Inner {
    /// Restores `topic`/`partition`'s keys and state from the changelog into
    /// redb: from the local checkpoint (from the start, after clearing the
    /// partition's cache, without one) up to the changelog's end as it is
    /// now. A transaction a dead host left open on the changelog holds the
    /// restore until the broker aborts it (`transaction_timeout`).
    ///
    /// # Errors
    ///
    /// Kafka and storage errors; [`BrokerError::Stalled`] when the
    /// changelog's end is not reached in time.
    pub(super) fn restore(
        &mut self,
        topic: &str,
        partition: u32,
    ) -> Result<RestoreRun, StreamError> {
        let started = Instant::now();
        let changelog = self.changelog_topic.clone();
        let p = partition as i32;
        let (low, high) = self
            .restorer
            .fetch_watermarks(&changelog, p, self.flush_timeout)
            .map_err(kafka(format!("reading the end of {changelog}/{partition}")))?;
        let (low, high) = (low.max(0) as u64, high.max(0) as u64);
        let mut txn = self.db.begin_write().map_err(StorageError::from)?;
        let _ = txn.set_durability(Durability::None);
        let start = match checkpoint(&self.db, &self.processor, topic, partition)? {
            Some(c) if c >= low && c <= high => c,
            _ => {
                self.store.clear(&txn, topic, partition)?;
                txn.open_table(PARTITION_REPLAYS)
                    .map_err(StorageError::from)?
                    .remove((&*self.processor, topic, partition))
                    .map_err(StorageError::from)?;
                low
            }
        };
        let mut records = 0u64;
        if start < high {
            (txn, records) = self.read_changelog(txn, topic, partition, start, high)?;
        }
        set_checkpoint_in(&txn, &self.processor, topic, partition, high)?;
        let _ = txn.set_durability(Durability::Immediate);
        txn.commit().map_err(StorageError::from)?;
        self.restore_lag
            .store(0, std::sync::atomic::Ordering::Relaxed);
        Ok(RestoreRun {
            records,
            elapsed: started.elapsed(),
        })
    }

    /// Applies changelog records of `topic`/`partition` from `start` until
    /// the restorer's position reaches `high`, committing every
    /// [`RESTORE_CHUNK`] records with their checkpoint (redb has one write
    /// transaction at a time: a chunk's is committed before the next one
    /// begins). Returns the open transaction and how many records were
    /// applied.
    fn read_changelog(
        &mut self,
        mut txn: WriteTransaction,
        topic: &str,
        partition: u32,
        start: u64,
        high: u64,
    ) -> Result<(WriteTransaction, u64), StreamError> {
        let changelog = self.changelog_topic.clone();
        let p = partition as i32;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&changelog, p, Offset::Offset(start as i64))
            .map_err(kafka("assigning the changelog"))?;
        self.restorer
            .assign(&tpl)
            .map_err(kafka("assigning the changelog"))?;
        drop(tpl);
        // A dead host's open transaction holds read_committed readers until
        // the broker aborts it: allow for that, and then some.
        let patience = self.transaction_timeout * 2 + Duration::from_secs(30);
        let mut last_progress = Instant::now();
        let mut position = start;
        let mut applied = 0u64;
        let mut in_txn = 0u64;
        while position < high {
            match self.restorer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    last_progress = Instant::now();
                    position = m.offset() as u64 + 1;
                    if self.apply_record(&txn, topic, partition, m.key(), m.payload())? {
                        applied += 1;
                        in_txn += 1;
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {}
                // The broker away for a while: librdkafka reconnects, and
                // the patience below bounds the wait.
                Some(Err(e)) => {
                    tracing::debug!(processor = %self.processor, error = %e, "reading the changelog");
                }
            }
            // Aborted records and transaction markers move the position
            // without a message.
            if let Some(pos) = self.restorer_position(&changelog, p) {
                if pos > position {
                    last_progress = Instant::now();
                }
                position = position.max(pos);
            }
            self.restore_lag.store(
                high.saturating_sub(position),
                std::sync::atomic::Ordering::Relaxed,
            );
            if in_txn >= RESTORE_CHUNK {
                set_checkpoint_in(&txn, &self.processor, topic, partition, position)?;
                txn.commit().map_err(StorageError::from)?;
                txn = self.db.begin_write().map_err(StorageError::from)?;
                let _ = txn.set_durability(Durability::None);
                in_txn = 0;
            }
            if last_progress.elapsed() > patience {
                self.restorer.unassign().ok();
                return Err(BrokerError::Stalled {
                    topic: changelog,
                    seconds: patience.as_secs(),
                }
                .into());
            }
        }
        self.restorer
            .unassign()
            .map_err(kafka("unassigning the changelog"))?;
        Ok((txn, applied))
    }

    fn restorer_position(&self, topic: &str, partition: i32) -> Option<u64> {
        let tpl = self.restorer.position().ok()?;
        let e = tpl.find_partition(topic, partition)?;
        match e.offset() {
            Offset::Offset(o) => Some(o as u64),
            _ => None,
        }
    }

    /// Applies one changelog record if it belongs to `topic` (the other
    /// inputs' partitions share the changelog partition). Returns whether
    /// it did.
    fn apply_record(
        &self,
        txn: &WriteTransaction,
        topic: &str,
        partition: u32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<bool, StreamError> {
        let Some(k) = key.and_then(decode_key) else {
            return Ok(false);
        };
        if k.topic != topic {
            return Ok(false);
        }
        if k.kind == REPLAY_KIND {
            if let Some((id, epoch, end)) = value.and_then(decode_replay) {
                let replay = PartitionReplay { epoch, end };
                set_partition_replay_in(txn, &self.processor, topic, partition, id, replay)?;
            }
            return Ok(true);
        }
        let Some(kind) = ChangeKind::from_byte(k.kind) else {
            return Ok(false);
        };
        let change = Change {
            kind,
            epoch: k.epoch,
            key: k.key.to_vec(),
            value: value.map(<[u8]>::to_vec),
        };
        self.store.apply(txn, topic, partition, &change)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_other_bytes_do_not_decode() {
        let k = encode_key(b'S', 3, "readings", b"cgm-3/glucose");
        assert_eq!(
            decode_key(&k),
            Some(ChangelogKey {
                kind: b'S',
                epoch: 3,
                topic: "readings",
                key: b"cgm-3/glucose",
            })
        );
        assert_eq!(decode_key(b"S"), None);
        assert_eq!(decode_key(&k[..12]), None, "a topic cut short");
        let r = encode_replay(7, PartitionReplay { epoch: 2, end: 90 });
        assert_eq!(decode_replay(&r), Some((7, 2, 90)));
    }
}
