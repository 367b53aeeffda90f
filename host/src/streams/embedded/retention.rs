//! Retention on the embedded log: which records go, and when.
//!
//! A topic's retention (`[[topic]] retention`, `retention_bytes`) removes
//! its oldest records, by append time or by size per partition. By default
//! ([`Unread::Keep`]) it never removes a record some consumer has not read
//! yet: a consumer is anything that keeps a position on the partition (a
//! processor, configured or paused, or a forward). It stops at the slowest
//! consumer's position and says so at INFO; what that consumer reads next
//! is removed at a later pass. With [`Unread::Delete`] (Kafka's behaviour)
//! such records are removed too, a WARN names each consumer and how many it
//! lost, and its count of records deleted unread ([`Log::deleted_unread`])
//! shows in `stats` and `/metrics`. A topic no one reads is trimmed as
//! configured.
//!
//! [`Log::free_room`] is the call for a disk quota: it removes, oldest
//! first, records that every consumer has read, whatever their retention.

use std::collections::BTreeMap;

use redb::{ReadTransaction, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;

use super::Unread;
use super::log::{Log, LogError, PARTITIONS, RECORDS, TOPICS, decode};
use crate::streams::positions::POSITIONS;

/// topic → 1 when records a consumer has not read are deleted too
const UNREAD: TableDefinition<&str, u8> = TableDefinition::new("log.retention_unread");
/// (consumer, topic, partition) → records retention deleted before the
/// consumer read them, counted when the consumer passed the gap
const SKIPPED: TableDefinition<(&str, &str, u32), u64> = TableDefinition::new("log.deleted_unread");

/// Records of one partition that one consumer had not read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UnreadRecords {
    /// The consumer (a processor's name, `forward.<kafka topic>`).
    pub consumer: String,
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The first of them.
    pub first_offset: u64,
    /// How many.
    pub records: u64,
}

/// What one pass of retention did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionReport {
    /// Records removed.
    pub removed: u64,
    /// Bytes of encoded records removed.
    pub bytes_freed: u64,
    /// Records removed that a consumer had not read (`retention.unread =
    /// "delete"` only): per consumer and partition.
    pub deleted_unread: Vec<UnreadRecords>,
    /// Partitions where retention stopped at a consumer's position
    /// (`retention.unread = "keep"`): the slowest consumer and the records
    /// it has not read (from its position to the end).
    pub kept_unread: Vec<UnreadRecords>,
}

/// A partition's bounds: (start offset, end offset, bytes).
type Bounds = (u64, u64, u64);
/// Per (topic, partition), each consumer and its position (next offset).
type Readers = BTreeMap<(String, u32), Vec<(String, u64)>>;

/// A topic's retention settings, as stored.
struct TopicRetention {
    name: String,
    partitions: u32,
    retention_ms: Option<u64>,
    retention_bytes: Option<u64>,
    unread: Unread,
}

/// What retention does with unread records of `topic`, as set by
/// [`Log::set_unread`].
///
/// # Errors
///
/// Storage errors.
pub(super) fn unread_policy(txn: &ReadTransaction, topic: &str) -> Result<Unread, LogError> {
    let table = match txn.open_table(UNREAD) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Unread::Keep),
        Err(e) => return Err(e.into()),
    };
    Ok(match table.get(topic)?.map(|g| g.value()) {
        Some(1) => Unread::Delete,
        _ => Unread::Keep,
    })
}

/// Counts, inside `txn`, `records` that retention deleted before `consumer`
/// read them from `topic`/`partition` (a reader that finds a gap between
/// its position and the next stored record calls this as it commits past it).
///
/// # Errors
///
/// Storage errors.
pub fn count_skipped_in(
    txn: &WriteTransaction,
    consumer: &str,
    topic: &str,
    partition: u32,
    records: u64,
) -> Result<(), LogError> {
    if records == 0 {
        return Ok(());
    }
    let mut t = txn.open_table(SKIPPED)?;
    let old = t
        .get((consumer, topic, partition))?
        .map_or(0, |g| g.value());
    t.insert((consumer, topic, partition), old + records)?;
    Ok(())
}

/// Every consumer's position per (topic, partition), inside `txn`.
fn readers(txn: &WriteTransaction) -> Result<Readers, LogError> {
    let mut out = Readers::new();
    let table = txn.open_table(POSITIONS)?;
    for e in table.iter()? {
        let (k, v) = e?;
        let (consumer, topic, partition) = k.value();
        out.entry((topic.to_owned(), partition))
            .or_default()
            .push((consumer.to_owned(), v.value()));
    }
    Ok(out)
}

/// Every topic with its partition count, retention by age and by size, and
/// unread policy, inside `txn`.
fn topic_settings(txn: &WriteTransaction) -> Result<Vec<TopicRetention>, LogError> {
    let topics = match txn.open_table(TOPICS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let unread = txn.open_table(UNREAD)?;
    let mut out = Vec::new();
    for e in topics.iter()? {
        let (k, v) = e?;
        let (n, ms, bytes) = v.value();
        let name = k.value().to_owned();
        let policy = match unread.get(name.as_str())?.map(|g| g.value()) {
            Some(1) => Unread::Delete,
            _ => Unread::Keep,
        };
        out.push(TopicRetention {
            name,
            partitions: n,
            retention_ms: ms,
            retention_bytes: bytes,
            unread: policy,
        });
    }
    Ok(out)
}

/// Removes records of `topic`/`p` from its start while `remove(append_ms,
/// bytes stored)` says so, never at or past `floor`. Returns the bounds
/// before and after (the bytes freed are the difference), and whether the
/// floor held back a record `remove` wanted gone.
fn trim_partition(
    parts: &mut redb::Table<'_, (&str, u32), Bounds>,
    records: &mut redb::Table<'_, (&str, u32, u64), &[u8]>,
    topic: &str,
    p: u32,
    floor: Option<u64>,
    mut remove: impl FnMut(u64, u64) -> bool,
) -> Result<(Bounds, Bounds, bool), LogError> {
    let before = parts.get((topic, p))?.map_or((0, 0, 0), |g| g.value());
    let (mut start, end, mut size) = before;
    while start < end && floor.is_none_or(|f| start < f) {
        let Some((len, append_ms)) = records.get((topic, p, start))?.map(|g| {
            let raw = g.value();
            (raw.len() as u64, decode(raw).map(|(ms, _)| ms))
        }) else {
            start += 1;
            continue;
        };
        let append_ms = append_ms.map_err(|reason| LogError::Corrupt {
            topic: topic.to_owned(),
            partition: p,
            offset: start,
            reason,
        })?;
        if !remove(append_ms, size) {
            break;
        }
        records.remove((topic, p, start))?;
        size -= len;
        start += 1;
    }
    let mut held = false;
    if start < end && floor == Some(start) {
        let first = records.range((topic, p, start)..(topic, p, end))?.next();
        if let Some(e) = first {
            let (k, v) = e?;
            let append_ms = decode(v.value()).map_err(|reason| LogError::Corrupt {
                topic: topic.to_owned(),
                partition: p,
                offset: k.value().2,
                reason,
            })?;
            held = remove(append_ms.0, size);
        }
    }
    parts.insert((topic, p), (start, end, size))?;
    Ok((before, (start, end, size), held))
}

impl Log {
    /// Sets what retention does with `topic`'s records that some consumer
    /// has not read.
    ///
    /// # Errors
    ///
    /// [`LogError::NoSuchTopic`]; storage errors.
    pub fn set_unread(&self, topic: &str, unread: Unread) -> Result<(), LogError> {
        if self.partitions(topic)?.is_none() {
            return Err(LogError::NoSuchTopic(topic.to_owned()));
        }
        let txn = self.db().begin_write()?;
        {
            let mut t = txn.open_table(UNREAD)?;
            match unread {
                Unread::Keep => {
                    t.remove(topic)?;
                }
                Unread::Delete => {
                    t.insert(topic, 1)?;
                }
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// The first offset still stored in `topic`/`partition` (0 when the
    /// partition does not exist): where a new consumer starts reading.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn start_offset(&self, topic: &str, partition: u32) -> Result<u64, LogError> {
        let txn = self.db().begin_read()?;
        match txn.open_table(PARTITIONS) {
            Ok(t) => Ok(t.get((topic, partition))?.map_or(0, |g| g.value().0)),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }

    /// Removes the records that fall outside their topic's retention: older
    /// than `retention_ms` by append time (measured against `now_ms`, ms
    /// since the Unix epoch), or beyond `retention_bytes` per partition,
    /// oldest first, in one transaction. Records some consumer has not read
    /// stay unless the topic has `retention.unread = "delete"` (see the
    /// module docs). The end offsets do not change. Logs what it did: INFO
    /// for records removed or kept for a consumer, WARN per consumer for
    /// records it had not read.
    ///
    /// # Errors
    ///
    /// [`LogError::Corrupt`], storage errors.
    pub fn enforce_retention(&self, now_ms: u64) -> Result<RetentionReport, LogError> {
        let txn = self.db().begin_write()?;
        let mut report = RetentionReport::default();
        {
            let topics = topic_settings(&txn)?;
            let readers = readers(&txn)?;
            let mut parts = txn.open_table(PARTITIONS)?;
            let mut records = txn.open_table(RECORDS)?;
            for TopicRetention {
                name: topic,
                partitions: n,
                retention_ms,
                retention_bytes,
                unread,
            } in topics
            {
                if retention_ms.is_none() && retention_bytes.is_none() {
                    continue;
                }
                let cutoff = retention_ms.map(|ms| now_ms.saturating_sub(ms));
                for p in 0..n {
                    let consumers = readers
                        .get(&(topic.clone(), p))
                        .map_or(&[][..], Vec::as_slice);
                    let slowest = consumers.iter().min_by_key(|(_, next)| *next);
                    let floor = match unread {
                        Unread::Keep => slowest.map(|(_, next)| *next),
                        Unread::Delete => None,
                    };
                    let (before, after, held) =
                        trim_partition(&mut parts, &mut records, &topic, p, floor, |ms, size| {
                            cutoff.is_some_and(|c| ms < c)
                                || retention_bytes.is_some_and(|b| size > b)
                        })?;
                    report.removed += after.0 - before.0;
                    report.bytes_freed += before.2 - after.2;
                    let unread_from = |next: u64| UnreadRecords {
                        consumer: String::new(),
                        topic: topic.clone(),
                        partition: p,
                        first_offset: next,
                        records: 0,
                    };
                    for (consumer, next) in consumers {
                        let lost = after.0.saturating_sub((*next).max(before.0));
                        if lost > 0 {
                            report.deleted_unread.push(UnreadRecords {
                                consumer: consumer.clone(),
                                first_offset: (*next).max(before.0),
                                records: lost,
                                ..unread_from(*next)
                            });
                        }
                    }
                    // Only when a record past its time (or over the size)
                    // is kept for the slowest consumer.
                    if let (true, Some((consumer, next))) = (held, slowest) {
                        report.kept_unread.push(UnreadRecords {
                            consumer: consumer.clone(),
                            records: after.1 - next,
                            ..unread_from(*next)
                        });
                    }
                }
            }
        }
        txn.commit()?;
        log_report(&report);
        Ok(report)
    }

    /// Removes up to `bytes` of records (at least that much when there is
    /// enough) that every consumer of their partition has read, whatever
    /// their topic's retention, oldest partition heads first, in one
    /// transaction: the call a disk quota makes before refusing new
    /// records. A partition no consumer reads is left alone (its records
    /// were read by no one), and so is every record some consumer has not
    /// read, whatever `retention.unread` says. Returns what it removed
    /// (`bytes_freed` may fall short of `bytes`: then there is no more room
    /// to make).
    ///
    /// # Errors
    ///
    /// [`LogError::Corrupt`], storage errors.
    pub fn free_room(&self, bytes: u64) -> Result<RetentionReport, LogError> {
        let txn = self.db().begin_write()?;
        let mut report = RetentionReport::default();
        {
            let readers = readers(&txn)?;
            let mut parts = txn.open_table(PARTITIONS)?;
            let mut records = txn.open_table(RECORDS)?;
            // Partitions with something every consumer read, oldest head first.
            let mut heads = Vec::new();
            for ((topic, p), consumers) in &readers {
                let floor = consumers.iter().map(|(_, next)| *next).min().unwrap_or(0);
                let Some((start, _, _)) = parts.get((topic.as_str(), *p))?.map(|g| g.value())
                else {
                    continue;
                };
                if start >= floor {
                    continue;
                }
                let head = records
                    .get((topic.as_str(), *p, start))?
                    .and_then(|g| decode(g.value()).ok().map(|(ms, _)| ms))
                    .unwrap_or(0);
                heads.push((head, topic.clone(), *p, floor));
            }
            heads.sort();
            for (_, topic, p, floor) in heads {
                if report.bytes_freed >= bytes {
                    break;
                }
                let freed = report.bytes_freed;
                let size_before = parts.get((topic.as_str(), p))?.map_or(0, |g| g.value().2);
                let (before, after, _) = trim_partition(
                    &mut parts,
                    &mut records,
                    &topic,
                    p,
                    Some(floor),
                    |_, size| freed + (size_before - size) < bytes,
                )?;
                report.removed += after.0 - before.0;
                report.bytes_freed += before.2 - after.2;
            }
        }
        txn.commit()?;
        log_report(&report);
        Ok(report)
    }

    /// Per consumer, the records retention deleted before it read them:
    /// those it passed (counted as it read past the gap) plus those below
    /// its position now (it has not reached the gap yet).
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn deleted_unread(&self) -> Result<BTreeMap<String, u64>, LogError> {
        let txn = self.db().begin_read()?;
        let mut out: BTreeMap<String, u64> = BTreeMap::new();
        match txn.open_table(SKIPPED) {
            Ok(t) => {
                for e in t.iter()? {
                    let (k, v) = e?;
                    *out.entry(k.value().0.to_owned()).or_default() += v.value();
                }
            }
            Err(redb::TableError::TableDoesNotExist(_)) => {}
            Err(e) => return Err(e.into()),
        }
        drop(txn);
        for pos in self.positions()? {
            let start = self.start_offset(&pos.topic, pos.partition)?;
            if pos.next_offset < start {
                *out.entry(pos.consumer).or_default() += start - pos.next_offset;
            }
        }
        Ok(out)
    }
}

/// Logs a pass of retention: INFO for what it removed and what it kept for
/// a consumer, WARN per consumer for records it had not read.
fn log_report(report: &RetentionReport) {
    if report.removed > 0 {
        tracing::info!(
            records = report.removed,
            bytes = report.bytes_freed,
            "retention removed records"
        );
    }
    for u in &report.deleted_unread {
        tracing::warn!(
            consumer = %u.consumer, topic = %u.topic, partition = u.partition,
            first_offset = u.first_offset, records = u.records,
            "retention deleted records this consumer had not read (retention.unread = \"delete\")"
        );
    }
    for u in &report.kept_unread {
        tracing::info!(
            consumer = %u.consumer, topic = %u.topic, partition = u.partition,
            from_offset = u.first_offset, unread = u.records,
            "retention keeps records past their time until this consumer has read them (retention.unread = \"keep\")"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::now_ms;
    use crate::streams::embedded::EmbeddedSource;
    use crate::streams::{Record, Source};

    /// A log with topic `t` (1 partition) of 10 records, every one past a
    /// 1 ms retention, and consumers at the given positions.
    fn log_with(positions: &[(&str, u64)], unread: Unread) -> (tempfile::TempDir, Log) {
        let dir = tempfile::tempdir().unwrap();
        let log = Log::new(crate::db::open(dir.path()).unwrap(), 1);
        log.append(
            "t",
            (0..10u8).map(|i| Record {
                value: Some(vec![i; 10]),
                ..Record::default()
            }),
        )
        .unwrap();
        log.set_retention("t", Some(1), None).unwrap();
        log.set_unread("t", unread).unwrap();
        let txn = log.db().begin_write().unwrap();
        for (c, next) in positions {
            crate::streams::positions::set_position_in(&txn, c, "t", 0, *next).unwrap();
        }
        txn.commit().unwrap();
        (dir, log)
    }

    fn start(log: &Log) -> u64 {
        log.topics().unwrap()[0].partitions[0].start
    }

    #[test]
    fn by_default_unread_records_stay_until_read() {
        let (_d, log) = log_with(&[("slow", 0), ("fast", 10)], Unread::Keep);
        let r = log.enforce_retention(now_ms() + 10).unwrap();
        assert_eq!((r.removed, start(&log)), (0, 0));
        assert!(r.deleted_unread.is_empty());
        assert_eq!(
            r.kept_unread,
            [UnreadRecords {
                consumer: "slow".into(),
                topic: "t".into(),
                partition: 0,
                first_offset: 0,
                records: 10,
            }]
        );
        // Once the slow one has read 4, those 4 go.
        let txn = log.db().begin_write().unwrap();
        crate::streams::positions::set_position_in(&txn, "slow", "t", 0, 4).unwrap();
        txn.commit().unwrap();
        let r = log.enforce_retention(now_ms() + 10).unwrap();
        assert_eq!((r.removed, start(&log)), (4, 4));
        assert_eq!(r.kept_unread[0].records, 6);
        assert!(log.deleted_unread().unwrap().is_empty());
        assert_eq!(log.topics().unwrap()[0].retention_unread, Unread::Keep);
    }

    #[test]
    fn nothing_is_reported_kept_when_nothing_is_past_its_time() {
        // Retention of a day: the 10 records, appended just now, stay
        // anyway; the slow consumer holds nothing back.
        let (_d, log) = log_with(&[("slow", 0), ("fast", 10)], Unread::Keep);
        log.set_retention("t", Some(86_400_000), None).unwrap();
        let r = log.enforce_retention(now_ms()).unwrap();
        assert_eq!((r.removed, start(&log)), (0, 0));
        assert_eq!(r.kept_unread, []);
        // A day later they are past it: kept for "slow", and said so.
        let r = log.enforce_retention(now_ms() + 86_400_001).unwrap();
        assert_eq!(r.removed, 0);
        assert_eq!(
            r.kept_unread,
            [UnreadRecords {
                consumer: "slow".into(),
                topic: "t".into(),
                partition: 0,
                first_offset: 0,
                records: 10,
            }]
        );
        // By size: 5 records' bytes allowed; "slow" at 2 holds back the 3 over it.
        let one = log.topics().unwrap()[0].partitions[0].bytes / 10;
        log.set_retention("t", None, Some(5 * one)).unwrap();
        let txn = log.db().begin_write().unwrap();
        crate::streams::positions::set_position_in(&txn, "slow", "t", 0, 2).unwrap();
        txn.commit().unwrap();
        let r = log.enforce_retention(now_ms()).unwrap();
        assert_eq!((r.removed, start(&log)), (2, 2));
        assert_eq!(r.kept_unread[0].records, 8);
        // Within the size once it has read on: nothing kept, nothing said.
        let txn = log.db().begin_write().unwrap();
        crate::streams::positions::set_position_in(&txn, "slow", "t", 0, 5).unwrap();
        txn.commit().unwrap();
        let r = log.enforce_retention(now_ms()).unwrap();
        assert_eq!((r.removed, start(&log), r.kept_unread.len()), (3, 5, 0));
    }

    #[test]
    fn a_topic_no_one_reads_is_trimmed_as_configured() {
        let (_d, log) = log_with(&[], Unread::Keep);
        let r = log.enforce_retention(now_ms() + 10).unwrap();
        assert_eq!((r.removed, start(&log)), (10, 10));
        assert!(r.kept_unread.is_empty() && r.deleted_unread.is_empty());
    }

    #[test]
    fn delete_counts_what_each_consumer_had_not_read_exactly() {
        let (_d, log) = log_with(&[("slow", 3), ("fast", 10)], Unread::Delete);
        let r = log.enforce_retention(now_ms() + 10).unwrap();
        assert_eq!((r.removed, start(&log)), (10, 10));
        assert_eq!(
            r.deleted_unread,
            [UnreadRecords {
                consumer: "slow".into(),
                topic: "t".into(),
                partition: 0,
                first_offset: 3,
                records: 7,
            }]
        );
        assert_eq!(log.deleted_unread().unwrap(), [("slow".into(), 7)].into());
        // The slow one reads on past the gap: the count stays, now recorded.
        log.append("t", [Record::default()]).unwrap();
        let mut source = EmbeddedSource::new(log.clone(), "slow".into(), vec!["t".into()]);
        let batch = source.poll(100, usize::MAX).unwrap().unwrap();
        assert_eq!(batch.records[0].offset, 10);
        let txn = log.db().begin_write().unwrap();
        source.commit_in(&txn, &batch).unwrap();
        txn.commit().unwrap();
        assert_eq!(log.deleted_unread().unwrap(), [("slow".into(), 7)].into());
        assert_eq!(log.topics().unwrap()[0].retention_unread, Unread::Delete);
    }

    #[test]
    fn free_room_removes_only_what_every_consumer_read_oldest_first() {
        let (_d, log) = log_with(&[("a", 6), ("b", 8)], Unread::Delete);
        let one = log.topics().unwrap()[0].partitions[0].bytes / 10;
        // Room for two records: two go.
        let r = log.free_room(2 * one).unwrap();
        assert_eq!((r.removed, r.bytes_freed, start(&log)), (2, 2 * one, 2));
        // Asked for far more: only up to what both read.
        let r = log.free_room(u64::MAX).unwrap();
        assert_eq!((r.removed, start(&log)), (4, 6));
        assert_eq!(log.free_room(u64::MAX).unwrap().removed, 0);
        assert!(log.deleted_unread().unwrap().is_empty());
    }

    #[test]
    fn a_new_consumer_starts_at_the_first_stored_record() {
        let (_d, log) = log_with(&[], Unread::Keep);
        log.enforce_retention(now_ms() + 10).unwrap();
        let mut source = EmbeddedSource::new(log.clone(), "late".into(), vec!["t".into()]);
        assert!(source.poll(10, usize::MAX).unwrap().is_none());
        assert_eq!(log.position("late", "t", 0).unwrap(), Some(10));
        assert!(log.deleted_unread().unwrap().is_empty());
    }
}
