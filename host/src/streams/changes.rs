//! Changes to a processor's keyed state and idempotency keys, as a stream
//! that scopes them per input partition (Kafka) writes them to a changelog
//! and restores them from it.
//!
//! The run loop reports each change of a batch to its [`crate::streams::Sink`]
//! ([`crate::streams::Sink::record_change`]); a sink that keeps a changelog
//! writes them with the batch. A source that restores a partition's state
//! hands each change read back to a [`ChangeStore`], which the data path
//! implements on its own redb tables (the stream never names them).

use redb::WriteTransaction;

use crate::db::StorageError;

/// What a change is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ChangeKind {
    /// An idempotency key: its value is the key's record (fingerprint,
    /// times, outcome) and the version that processed its event.
    Key = b'K',
    /// A conflict already dead-lettered: the key is the idempotency key
    /// followed by the 16-byte payload fingerprint, the value the expiry
    /// time (ms since the Unix epoch, 8 bytes big-endian).
    Conflict = b'C',
    /// A state entry: the component's key and value.
    State = b'S',
}

impl ChangeKind {
    /// The kind a byte stands for.
    pub fn from_byte(b: u8) -> Option<ChangeKind> {
        match b {
            b'K' => Some(ChangeKind::Key),
            b'C' => Some(ChangeKind::Conflict),
            b'S' => Some(ChangeKind::State),
            _ => None,
        }
    }
}

/// One change of one input partition's state or keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// What it is about.
    pub kind: ChangeKind,
    /// The idempotency epoch of a key or conflict (0 for state).
    pub epoch: u64,
    /// The key (see [`ChangeKind`] for each kind's layout).
    pub key: Vec<u8>,
    /// The new value; `None` removes it (expired, or deleted by the component).
    pub value: Option<Vec<u8>>,
}

/// Where a partition's restored changes go: the local cache of its state
/// and keys (implemented by the data path on its redb tables).
///
/// Call order per restore: [`ChangeStore::clear`] when the cache has no
/// checkpoint for the partition, then [`ChangeStore::apply`] for each
/// change in changelog order; all inside transactions the caller commits
/// together with its checkpoint.
pub trait ChangeStore: Send + Sync {
    /// Drops every cached key and state entry of `topic`/`partition`.
    ///
    /// # Errors
    ///
    /// Storage errors.
    fn clear(
        &self,
        txn: &WriteTransaction,
        topic: &str,
        partition: u32,
    ) -> Result<(), StorageError>;

    /// Applies one change of `topic`/`partition`.
    ///
    /// # Errors
    ///
    /// Storage errors.
    fn apply(
        &self,
        txn: &WriteTransaction,
        topic: &str,
        partition: u32,
        change: &Change,
    ) -> Result<(), StorageError>;
}

/// The reprocessing replay a partition is in, as a stream that scopes keys
/// per partition knows it: records below `end` are processed in `epoch`'s
/// key scope, the rest in epoch 0's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PartitionReplay {
    /// The idempotency epoch (0: no reprocessing replay).
    pub epoch: u64,
    /// The first offset the replay does not cover.
    pub end: u64,
}

/// Restores done by a source since it was last asked: counted into the
/// processor's stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Restored {
    /// Partitions restored.
    pub partitions: u64,
    /// Changelog records read and applied.
    pub records: u64,
    /// Time spent restoring, in ms.
    pub ms: u64,
}
