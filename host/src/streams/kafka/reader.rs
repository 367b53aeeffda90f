//! [`PartitionReader`]: one topic read partition by partition from offsets
//! the caller keeps (a sink keeps its positions in its destination), with
//! no consumer group and no offset commits.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::{Offset, TopicPartitionList};

use super::consumer::{GroupContext, to_log_record};
use super::{BrokerError, Client, KafkaConfig, kafka};
use crate::streams::LogRecord;

/// How long one read waits for records that are not there yet.
const POLL: Duration = Duration::from_millis(100);

/// One partition's fetched records: every offset in `start..next` that
/// holds a record is in `records` (offsets without one, such as
/// transaction markers, are simply absent).
#[derive(Default)]
struct Fetched {
    records: VecDeque<LogRecord>,
    start: u64,
    next: u64,
}

/// Reads one topic from caller-given offsets; see the module docs.
pub struct PartitionReader {
    consumer: BaseConsumer<GroupContext>,
    topic: String,
    brokers: String,
    partitions: Option<u32>,
    /// Per partition: the records fetched and not yet passed, the offset
    /// the buffer covers from, and the offset the consumer fetches next.
    buffered: BTreeMap<u32, Fetched>,
}

impl PartitionReader {
    /// A reader of `topic` for `owner` (named in the client id).
    ///
    /// # Errors
    ///
    /// [`BrokerError::Kafka`] when librdkafka refuses the settings.
    pub fn new(config: &KafkaConfig, owner: &str, topic: &str) -> Result<Self, BrokerError> {
        let mut c = config.config_for(Client::Consumer);
        c.set("group.id", format!("tidewater-sink-{owner}"))
            .set("client.id", format!("tidewater-sink-{owner}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("isolation.level", "read_committed");
        let consumer: BaseConsumer<GroupContext> =
            c.create_with_context(GroupContext::default())
                .map_err(kafka("creating the sink's consumer"))?;
        Ok(PartitionReader {
            consumer,
            topic: topic.to_owned(),
            brokers: config.brokers.clone(),
            partitions: None,
            buffered: BTreeMap::new(),
        })
    }

    /// The topic's partition count; `None` while it does not exist.
    ///
    /// # Errors
    ///
    /// [`BrokerError::Kafka`] when the brokers cannot be asked.
    pub fn partitions(&mut self) -> Result<Option<u32>, BrokerError> {
        if self.partitions.is_none() {
            let md = self
                .consumer
                .fetch_metadata(Some(&self.topic), Duration::from_secs(30))
                .map_err(kafka(format!("reading metadata from {}", self.brokers)))?;
            self.partitions = md
                .topics()
                .iter()
                .find(|t| t.name() == self.topic && t.error().is_none())
                .map(|t| t.partitions().len() as u32)
                .filter(|n| *n > 0);
            if self.partitions.is_some() {
                self.assign_all(&BTreeMap::new())?;
            }
        }
        Ok(self.partitions)
    }

    /// (Re)assigns every partition, each from `from` (else where it was).
    fn assign_all(&mut self, from: &BTreeMap<u32, u64>) -> Result<(), BrokerError> {
        let n = self.partitions.unwrap_or(0);
        let mut tpl = TopicPartitionList::new();
        for p in 0..n {
            let at = from
                .get(&p)
                .copied()
                .or_else(|| self.buffered.get(&p).map(|f| f.next))
                .unwrap_or(0);
            self.buffered.insert(
                p,
                Fetched {
                    records: VecDeque::new(),
                    start: at,
                    next: at,
                },
            );
            tpl.add_partition_offset(&self.topic, p as i32, Offset::Offset(at as i64))
                .map_err(kafka("assigning"))?;
        }
        self.consumer.assign(&tpl).map_err(kafka("assigning"))?;
        Ok(())
    }

    /// Up to `max` records of `partition` from offset `from` (fewer, or
    /// none, when the broker has no more within a short wait).
    ///
    /// # Errors
    ///
    /// [`BrokerError::Kafka`] when reading fails.
    pub fn read(
        &mut self,
        partition: u32,
        from: u64,
        max: usize,
    ) -> Result<Vec<LogRecord>, BrokerError> {
        let partitions = self.partitions.unwrap_or(0) as usize;
        let f = self
            .buffered
            .get_mut(&partition)
            .ok_or_else(|| BrokerError::NoSuchPartition {
                topic: self.topic.clone(),
                partition,
                partitions,
            })?;
        if (f.start..=f.next).contains(&from) {
            while f.records.front().is_some_and(|r| r.offset < from) {
                f.records.pop_front();
            }
            f.start = from;
        } else {
            // The caller went back (a replay) or elsewhere: fetch from there.
            let mut at = BTreeMap::new();
            at.insert(partition, from);
            self.assign_all(&at)?;
        }
        self.fill(partition, max)?;
        let f = &self.buffered[&partition];
        Ok(f.records.iter().take(max).cloned().collect())
    }

    /// Polls until `partition` has `max` records buffered or nothing more
    /// comes within [`POLL`]; other partitions' records are buffered too.
    fn fill(&mut self, partition: u32, max: usize) -> Result<(), BrokerError> {
        loop {
            if self.buffered[&partition].records.len() >= max {
                return Ok(());
            }
            match self.consumer.poll(POLL) {
                None => return Ok(()),
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => return Err(kafka(format!("reading {}", self.topic))(e)),
                Some(Ok(m)) => {
                    let r = to_log_record(&m);
                    if let Some(f) = self.buffered.get_mut(&r.partition) {
                        f.next = r.offset + 1;
                        f.records.push_back(r);
                    }
                }
            }
        }
    }

    /// The first offset of `partition` whose timestamp is at or after
    /// `time_ms` (the end offset when there is none).
    ///
    /// # Errors
    ///
    /// [`BrokerError::Kafka`] when the brokers cannot be asked.
    pub fn offset_for_time(&mut self, partition: u32, time_ms: i64) -> Result<u64, BrokerError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition as i32, Offset::Offset(time_ms))
            .map_err(kafka("asking offsets for a time"))?;
        let found = self
            .consumer
            .offsets_for_times(tpl, Duration::from_secs(30))
            .map_err(kafka("asking offsets for a time"))?;
        let offset = found.elements().first().map(|e| e.offset());
        match offset {
            Some(Offset::Offset(o)) if o >= 0 => Ok(o as u64),
            _ => {
                let (_, high) = self
                    .consumer
                    .fetch_watermarks(&self.topic, partition as i32, Duration::from_secs(30))
                    .map_err(kafka("reading watermarks"))?;
                Ok(high.max(0) as u64)
            }
        }
    }
}
