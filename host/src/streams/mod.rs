//! Where events come from and where they go: the [`Source`] and [`Sink`]
//! traits the run loop talks to, the record types, and their implementations.
//!
//! - [`record`]: [`Record`] (what a producer writes) and [`LogRecord`] (a
//!   record read back, with its topic, partition and offset).
//! - [`topic`]: topic names and the partitioner, by Kafka's rules.
//! - [`positions`]: consumer positions, kept in redb.
//! - [`changes`]: changes to state and keys, for streams that keep them in a
//!   changelog per input partition (Kafka), and where restores put them.
//! - [`embedded`]: the embedded durable log in redb, its source and sink.
//! - [`kafka`]: Apache Kafka through rdkafka: consumer, producer, outbox and
//!   transactions, topic admin.
//! - [`forward`]: store-and-forward of embedded-log topics to Kafka.
//! - [`sinks`]: `[[sink]]`s delivering a topic to PostgreSQL or a webhook.
//! - [`dead_letter`]: the dead-letter record format (processors and sinks).
//! - [`ingest`]: turning outside data (CSV files) into records.
//!
//! `embedded` and `kafka` never name each other; what both need lives here.

pub mod changes;
pub mod dead_letter;
pub mod embedded;
pub mod forward;
pub mod ingest;
pub mod kafka;
pub mod positions;
pub mod record;
pub mod sinks;
pub mod topic;

use std::sync::Arc;

use redb::WriteTransaction;
use serde::Serialize;

pub use changes::{Change, ChangeKind, ChangeStore, PartitionReplay, Restored};
pub use dead_letter::dlq_headers;
pub use record::{Header, LogRecord, Record};

use crate::db::StorageError;

/// Why a [`Source`] or a [`Sink`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The embedded log failed.
    #[error(transparent)]
    Log(#[from] embedded::LogError),
    /// redb failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The broker (or another remote stream) failed or refused.
    #[error("stream: {0}")]
    Broker(String),
    /// The batch was given up because its partition moved to another host
    /// (or this host's membership ended) while it was in flight: nothing of
    /// it committed, and its events go to the partition's owner.
    #[error("stream: the batch of {topic}/{partition} was abandoned: {reason}")]
    Abandoned {
        /// The batch's topic.
        topic: String,
        /// Its partition.
        partition: u32,
        /// Why.
        reason: String,
    },
}

macro_rules! stream_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for StreamError {
            fn from(e: $t) -> Self {
                StreamError::Storage(e.into())
            }
        }
    )*};
}
stream_from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayFrom {
    /// This offset in every partition of every input (the log start when below it).
    Offset(u64),
    /// The first record whose timestamp is at or after this, in ms since the
    /// Unix epoch, in every partition.
    TimeMs(i64),
}

/// What a replay did to a source's positions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rewound {
    /// Per partition whose position this host moved: (topic, partition,
    /// the position before the rewind); the replay covers the records below
    /// it. Empty for a source that replays for a group and keeps each
    /// partition's range with the partition ([`Source::partition_scope`]).
    pub ranges: Vec<(String, u32, u64)>,
}

/// The first offset in `records` (sorted by offset) whose timestamp is at
/// least `time_ms`; used by sources that replay by time. Records are taken
/// in offset order even where their timestamps are not monotonic: this is
/// the rule of Kafka's time index (`ListOffsets` by timestamp), and the
/// embedded log follows it.
pub fn first_at_or_after(records: &[LogRecord], time_ms: i64) -> Option<u64> {
    records
        .iter()
        .find(|r| r.record.timestamp_ms >= time_ms)
        .map(|r| r.offset)
}

/// A batch of events from one partition.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The events, in offset order.
    pub records: Vec<LogRecord>,
}

impl Batch {
    /// The offset to read next once this batch is done.
    pub fn next_offset(&self) -> u64 {
        self.records.last().map_or(0, |r| r.offset + 1)
    }
}

/// Where a processor's events come from.
///
/// Call order per batch: [`Source::poll`]; the batch's effects go into a
/// redb transaction and to the [`Sink`], which flushes them
/// ([`Sink::flush`]); then [`Source::commit_in`] with that transaction, which
/// then commits; then [`Source::committed`]. A batch whose transaction did
/// not commit is delivered again (at-least-once delivery; the idempotency
/// keys make its effect happen once).
pub trait Source: Send {
    /// The next batch of at most `max_records` events and about `max_bytes`
    /// bytes, from one partition, or `None` when nothing is waiting.
    ///
    /// # Errors
    ///
    /// When the source cannot be read.
    fn poll(&mut self, max_records: usize, max_bytes: usize) -> Result<Option<Batch>, StreamError>;

    /// Records, inside `txn`, that `batch` is done.
    ///
    /// # Errors
    ///
    /// Storage errors.
    fn commit_in(&mut self, txn: &WriteTransaction, batch: &Batch) -> Result<(), StreamError>;

    /// Told that the transaction holding `batch`'s effects is durable and
    /// its outputs are published (Kafka commits the offsets here).
    ///
    /// # Errors
    ///
    /// When the source cannot record the commit.
    fn committed(&mut self, batch: &Batch) -> Result<(), StreamError>;

    /// Whether everything available has been read (for `run --until-idle`).
    fn caught_up(&self) -> bool {
        true
    }

    /// While not [`caught_up`](Source::caught_up): what is left to read, in
    /// words, e.g. `"has not read to the end of readings/2"` (for the log
    /// of a `run --until-idle` that goes on). `None` when there is nothing
    /// to say.
    fn behind(&self) -> Option<String> {
        None
    }

    /// Moves every partition's position back to `from`, durably, so the
    /// next [`Source::poll`] reads from there (a replay); never past the
    /// current position. `epoch` is the idempotency epoch the replay runs in
    /// (a new one when it reprocesses). A source read by a group of hosts
    /// (Kafka) asks the whole group: each partition's owner moves it.
    ///
    /// # Errors
    ///
    /// When the source cannot seek; by default, it cannot.
    fn rewind(&mut self, from: ReplayFrom, epoch: u64) -> Result<Rewound, StreamError> {
        let _ = (from, epoch);
        Err(StreamError::Broker("this source cannot replay".into()))
    }

    /// How keys and state of `topic`/`partition` are scoped: `None` per
    /// processor (the embedded log, one host); `Some` per input partition
    /// (Kafka, where partitions move between hosts), with the partition's
    /// reprocessing replay if it is in one.
    fn partition_scope(&self, topic: &str, partition: u32) -> Option<PartitionReplay> {
        let _ = (topic, partition);
        None
    }

    /// The newest idempotency epoch the source learnt of from elsewhere (a
    /// replay asked of another host of the group), if any.
    fn group_epoch(&self) -> Option<u64> {
        None
    }

    /// Restores of partition state done since the last call.
    fn take_restored(&mut self) -> Option<Restored> {
        None
    }
}

/// Where a processor's outputs and dead letters go.
///
/// [`Sink::publish_in`] (and [`Sink::record_change`]) are called while the
/// batch's transaction is built; [`Sink::flush`] before that transaction
/// commits: a sink that writes elsewhere (Kafka) makes the batch durable
/// there first, and the local transaction then follows it.
pub trait Sink: Send {
    /// Publishes `record` to `topic` as part of `txn`.
    ///
    /// # Errors
    ///
    /// When the record cannot be placed.
    fn publish_in(
        &mut self,
        txn: &WriteTransaction,
        topic: &str,
        record: &Record,
    ) -> Result<(), StreamError>;

    /// Publishes each `(topic, record)` of `records`, in order, as part of
    /// `txn`: a batch's outputs and dead letters at once. The default calls
    /// [`Sink::publish_in`] for each; a sink that writes into `txn` itself
    /// does it with each table opened once.
    ///
    /// # Errors
    ///
    /// When a record cannot be placed (the transaction should then be
    /// dropped: some records may be in it).
    fn publish_all_in(
        &mut self,
        txn: &WriteTransaction,
        records: &[(Arc<str>, Record)],
    ) -> Result<(), StreamError> {
        for (topic, record) in records {
            self.publish_in(txn, topic, record)?;
        }
        Ok(())
    }

    /// Makes what was published for `batch` durable downstream.
    ///
    /// # Errors
    ///
    /// When the destination refuses; [`StreamError::Abandoned`] when the
    /// batch's partition moved away meanwhile (nothing of it committed).
    fn flush(&mut self, batch: &Batch) -> Result<(), StreamError>;

    /// Whether this sink keeps a changelog of state and keys
    /// ([`Sink::record_change`]); the run loop builds changes only then.
    fn keeps_changelog(&self) -> bool {
        false
    }

    /// Records `change` of `topic`/`partition` to be written with the batch
    /// at [`Sink::flush`].
    fn record_change(&mut self, topic: &str, partition: u32, change: Change) {
        let _ = (topic, partition, change);
    }
}
