//! Consumer positions: the next offset each consumer (a processor, a sink,
//! a forward) reads, per topic and partition, kept in redb.
//!
//! Both logs keep their consumers' positions here: the embedded log commits
//! a position in the same transaction as the batch's effects; Kafka keeps it
//! here too (beside the broker's committed offset), so a record Kafka
//! redelivers after a crash is known to be done.

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;

use crate::db::StorageError;

/// (consumer, topic, partition) → next offset to read
pub(crate) const POSITIONS: TableDefinition<(&str, &str, u32), u64> =
    TableDefinition::new("log.positions");

/// The next offset `consumer` reads from `topic`/`partition`, inside `txn`;
/// `None` if it never committed one.
///
/// # Errors
///
/// Storage errors.
pub fn position_in(
    txn: &WriteTransaction,
    consumer: &str,
    topic: &str,
    partition: u32,
) -> Result<Option<u64>, StorageError> {
    Ok(txn
        .open_table(POSITIONS)?
        .get((consumer, topic, partition))?
        .map(|g| g.value()))
}

/// The next offset `consumer` reads from `topic`/`partition`, as last
/// committed; `None` if it never committed one.
///
/// # Errors
///
/// Storage errors.
pub fn position(
    db: &Database,
    consumer: &str,
    topic: &str,
    partition: u32,
) -> Result<Option<u64>, StorageError> {
    let txn = db.begin_read()?;
    match txn.open_table(POSITIONS) {
        Ok(t) => Ok(t.get((consumer, topic, partition))?.map(|g| g.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Sets the next offset `consumer` reads from `topic`/`partition`, inside `txn`.
///
/// # Errors
///
/// Storage errors.
pub fn set_position_in(
    txn: &WriteTransaction,
    consumer: &str,
    topic: &str,
    partition: u32,
    next_offset: u64,
) -> Result<(), StorageError> {
    txn.open_table(POSITIONS)?
        .insert((consumer, topic, partition), next_offset)?;
    Ok(())
}

/// A consumer's position on one partition, with the partition's bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Position {
    /// The consumer (a processor name).
    pub consumer: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The next offset the consumer reads.
    pub next_offset: u64,
    /// The partition's end offset; `end - next_offset` is the lag.
    pub end: u64,
}
