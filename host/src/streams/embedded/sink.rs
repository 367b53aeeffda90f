//! The embedded log as a processor's [`Sink`]: outputs and dead letters are
//! appended inside the transaction that commits the batch.

use std::sync::Arc;

use redb::WriteTransaction;

use crate::streams::{Batch, Record, Sink, StreamError};

/// Appends to the embedded log inside the batch's transaction.
pub struct EmbeddedSink {
    default_partitions: u32,
}

impl EmbeddedSink {
    /// A sink that creates missing topics with `default_partitions` partitions.
    pub fn new(default_partitions: u32) -> Self {
        EmbeddedSink { default_partitions }
    }
}

impl Sink for EmbeddedSink {
    fn publish_in(
        &mut self,
        txn: &WriteTransaction,
        topic: &str,
        record: &Record,
    ) -> Result<(), StreamError> {
        super::append_in(txn, topic, None, record, self.default_partitions)?;
        Ok(())
    }

    fn publish_all_in(
        &mut self,
        txn: &WriteTransaction,
        records: &[(Arc<str>, Record)],
    ) -> Result<(), StreamError> {
        super::append_many_in(txn, records, self.default_partitions, crate::db::now_ms())?;
        Ok(())
    }

    fn flush(&mut self, _batch: &Batch) -> Result<(), StreamError> {
        Ok(())
    }
}
