//! The embedded log as a processor's [`Source`]: its input topics, read
//! partition by partition, with its positions kept in the same database.

use std::collections::HashMap;
use std::sync::Arc;

use redb::WriteTransaction;

use super::Log;
use crate::streams::{
    Batch, ReplayFrom, Rewound, Source, StreamError, first_at_or_after, positions,
};

/// Reads the processor's input topics from the embedded log, keeping its
/// positions in the same database.
pub struct EmbeddedSource {
    log: Log,
    consumer: Arc<str>,
    inputs: Vec<String>,
    /// (topic, partition, next offset)
    partitions: Vec<(String, u32, u64)>,
    cursor: usize,
}

impl EmbeddedSource {
    /// A source for `consumer` over `inputs`; topics that do not exist yet
    /// are picked up when they appear.
    pub fn new(log: Log, consumer: Arc<str>, inputs: Vec<String>) -> Self {
        EmbeddedSource {
            log,
            consumer,
            inputs,
            partitions: Vec::new(),
            cursor: 0,
        }
    }

    fn refresh(&mut self) -> Result<(), StreamError> {
        for topic in &self.inputs {
            let Some(n) = self.log.partitions(topic)? else {
                continue;
            };
            for p in 0..n {
                if !self
                    .partitions
                    .iter()
                    .any(|(t, q, _)| t == topic && *q == p)
                {
                    let next = match self.log.position(&self.consumer, topic, p)? {
                        Some(next) => next,
                        None => {
                            // Record the start (the first record still
                            // stored) so that lag counts from it.
                            let start = self.log.start_offset(topic, p)?;
                            let txn = self.log.db().begin_write()?;
                            positions::set_position_in(&txn, &self.consumer, topic, p, start)?;
                            txn.commit()?;
                            start
                        }
                    };
                    self.partitions.push((topic.clone(), p, next));
                }
            }
        }
        Ok(())
    }
}

impl Source for EmbeddedSource {
    fn poll(&mut self, max_records: usize, max_bytes: usize) -> Result<Option<Batch>, StreamError> {
        self.refresh()?;
        let n = self.partitions.len();
        for i in 0..n {
            let idx = (self.cursor + i) % n;
            let (topic, partition, next) = &self.partitions[idx];
            let records = self
                .log
                .read(topic, *partition, *next, max_records, max_bytes)?;
            if let Some(first) = records.first() {
                if first.offset > *next {
                    tracing::warn!(
                        processor = %self.consumer, topic = %topic, partition,
                        skipped = first.offset - *next,
                        "records were removed by retention before this processor read them"
                    );
                }
                self.cursor = (idx + 1) % n;
                return Ok(Some(Batch {
                    topic: topic.clone(),
                    partition: *partition,
                    records,
                }));
            }
        }
        Ok(None)
    }

    fn commit_in(&mut self, txn: &WriteTransaction, batch: &Batch) -> Result<(), StreamError> {
        // Records between the position and the batch were deleted by
        // retention before this consumer read them: count them as it passes.
        let before = positions::position_in(txn, &self.consumer, &batch.topic, batch.partition)?;
        if let (Some(before), Some(first)) = (before, batch.records.first())
            && first.offset > before
        {
            super::retention::count_skipped_in(
                txn,
                &self.consumer,
                &batch.topic,
                batch.partition,
                first.offset - before,
            )?;
        }
        positions::set_position_in(
            txn,
            &self.consumer,
            &batch.topic,
            batch.partition,
            batch.next_offset(),
        )?;
        Ok(())
    }

    fn committed(&mut self, batch: &Batch) -> Result<(), StreamError> {
        let next = batch.next_offset();
        if let Some(p) = self
            .partitions
            .iter_mut()
            .find(|(t, p, _)| *t == batch.topic && *p == batch.partition)
        {
            p.2 = next;
        }
        Ok(())
    }

    fn rewind(&mut self, from: ReplayFrom, _epoch: u64) -> Result<Rewound, StreamError> {
        self.refresh()?;
        let bounds: HashMap<(String, u32), (u64, u64)> = self
            .log
            .topics()?
            .into_iter()
            .flat_map(|t| {
                let name = t.name;
                (0u32..)
                    .zip(t.partitions)
                    .map(move |(p, info)| ((name.clone(), p), (info.start, info.end)))
            })
            .collect();
        let txn = self.log.db().begin_write()?;
        let mut range = Vec::new();
        for (topic, partition, next) in &mut self.partitions {
            let (start, end) = bounds
                .get(&(topic.clone(), *partition))
                .copied()
                .unwrap_or((0, 0));
            // The replay covers what had been read: records from the current
            // position on are new to the processor, whatever the epoch.
            range.push((topic.clone(), *partition, (*next).min(end)));
            let target = match from {
                ReplayFrom::Offset(o) => o,
                ReplayFrom::TimeMs(t) => offset_for_time(&self.log, topic, *partition, t)?,
            };
            // A replay only goes back: a start past the current position
            // (a time in the future, an offset past the end) leaves the
            // position where it is, so no unread event is skipped.
            // Nor before the first record still stored: what retention
            // removed was read once, it is not "deleted unread".
            let target = target.min(*next).max(start.min(*next));
            positions::set_position_in(&txn, &self.consumer, topic, *partition, target)?;
            *next = target;
        }
        txn.commit()?;
        Ok(Rewound { ranges: range })
    }
}

/// The first offset of `topic`/`partition` whose timestamp is at or after
/// `time_ms` (see [`first_at_or_after`]), or the partition's end when there
/// is none: where a replay from that time starts. Timestamps 2, 4, 6, 8 at
/// offsets 0–3 give 1 for 3, 2 for 5, 3 for 8 and 4 (the end) for 9.
///
/// # Errors
///
/// Log errors reading the partition.
pub fn offset_for_time(
    log: &Log,
    topic: &str,
    partition: u32,
    time_ms: i64,
) -> Result<u64, StreamError> {
    // Scan from the start in chunks for the first record at or after t.
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
