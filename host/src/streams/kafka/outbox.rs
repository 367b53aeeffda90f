//! The outbox: a committed batch's outputs, kept in redb (in the batch's own
//! transaction) until the broker acknowledged them; and the recovery of a
//! previous run's outbox after a crash.

use rdkafka::consumer::Consumer;
use rdkafka::{Offset, TopicPartitionList};
use redb::{Durability, ReadableDatabase, ReadableTable, TableDefinition};

use super::kafka;
use super::stream::Inner;
use crate::db::StorageError;
use crate::streams::{Record, StreamError};

/// (processor, sequence) → one encoded output waiting to be produced
pub(super) const OUTBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("kafka.outbox");
/// processor → the batch the outbox belongs to: (topic, partition, next offset)
pub(super) const OUTBOX_SOURCE: TableDefinition<&str, (&str, u32, u64)> =
    TableDefinition::new("kafka.outbox_source");

#[derive(serde::Serialize, serde::Deserialize)]
pub(super) struct OutboxEntry {
    pub(super) topic: String,
    pub(super) timestamp_ms: i64,
    pub(super) key: Option<Vec<u8>>,
    pub(super) value: Option<Vec<u8>>,
    pub(super) headers: Vec<(String, Vec<u8>)>,
}

/// The outbox of a batch: (topic, record) to produce, and the batch's
/// source (topic, partition, next offset).
type Outbox = (Vec<(String, Record)>, Option<(String, u32, u64)>);

impl Inner {
    pub(super) fn outbox(&self) -> Result<Outbox, StorageError> {
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

    pub(super) fn clear_outbox(&mut self) -> Result<(), StorageError> {
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

    /// Finishes a previous run's batch whose outbox was not cleared.
    /// Returns false while that needs an assignment it does not have yet.
    pub(super) fn recover(&mut self) -> Result<bool, StreamError> {
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
}
