//! Reading from Kafka: the rebalance callbacks of a processor's consumer,
//! and [`read_topic`] for `consume` and the tests.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

use super::{BrokerError, Client, KafkaConfig, kafka, lock};
use crate::streams::{LogRecord, Record};

/// Collects, in order, the partitions rebalances revoke (or lose) and
/// assign, for the run loop to drop and to restore.
#[derive(Default)]
pub struct GroupContext {
    /// (assigned: true, revoked: false; topic; partition), oldest first.
    pub(super) changes: Mutex<Vec<(bool, String, i32)>>,
    /// A fatal error of the consumer (it cannot go on and must be made
    /// again), e.g. a static member fenced after its session timed out
    /// while the broker was away.
    pub(super) fatal: Mutex<Option<String>>,
}

impl ClientContext for GroupContext {
    fn error(&self, error: KafkaError, reason: &str) {
        if reason.starts_with("Fatal")
            || error.rdkafka_error_code() == Some(RDKafkaErrorCode::FencedInstanceId)
        {
            *lock(&self.fatal) = Some(format!("{error}: {reason}"));
        }
        log_client_error(error, reason);
    }
}

/// librdkafka's client-level errors: the end of a partition is news, not an
/// error; a broker that went away is worth a warning (librdkafka reconnects).
pub(super) fn log_client_error(error: KafkaError, reason: &str) {
    match error {
        KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF) => {}
        e => tracing::warn!(error = %e, reason, "kafka client"),
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let mut changes = lock(&self.changes);
            for e in tpl.elements() {
                changes.push((false, e.topic().to_owned(), e.partition()));
            }
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Assign(tpl) = rebalance {
            let mut changes = lock(&self.changes);
            for e in tpl.elements() {
                changes.push((true, e.topic().to_owned(), e.partition()));
            }
        }
    }
}

/// Reads `topic` (one partition, or all) from `from_offset` up to its end as
/// it is when the read starts, calling `each` per record until it returns
/// false. Only committed records are read (`read_committed`); no consumer
/// group offsets are committed.
///
/// # Errors
///
/// [`BrokerError::MissingTopic`], [`BrokerError::Kafka`], or `each`'s error.
pub fn read_topic(
    config: &KafkaConfig,
    topic: &str,
    partition: Option<u32>,
    from_offset: u64,
    mut each: impl FnMut(&LogRecord) -> bool,
) -> Result<(), BrokerError> {
    let mut c = config.config_for(Client::Consumer);
    c.set("group.id", "tidewater-consume")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("isolation.level", "read_committed");
    let consumer: BaseConsumer<GroupContext> = c
        .create_with_context(GroupContext::default())
        .map_err(kafka("creating the consumer"))?;
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(30))
        .map_err(kafka(format!("reading metadata from {}", config.brokers)))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    if partitions.is_empty() {
        return Err(BrokerError::NoSuchTopic(topic.to_owned()));
    }
    let chosen: Vec<i32> = match partition {
        Some(p) if partitions.contains(&(p as i32)) => vec![p as i32],
        Some(p) => {
            return Err(BrokerError::NoSuchPartition {
                topic: topic.to_owned(),
                partition: p,
                partitions: partitions.len(),
            });
        }
        None => partitions,
    };
    let mut ends = BTreeMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in &chosen {
        let (low, high) = consumer
            .fetch_watermarks(topic, *p, Duration::from_secs(30))
            .map_err(kafka("reading watermarks"))?;
        if high > (from_offset as i64).max(low) {
            ends.insert(*p, high);
            tpl.add_partition_offset(topic, *p, Offset::Offset((from_offset as i64).max(low)))
                .map_err(kafka("assigning"))?;
        }
    }
    consumer.assign(&tpl).map_err(kafka("assigning"))?;
    drop(tpl);
    let mut done: BTreeSet<i32> = BTreeSet::new();
    let deadline_idle = Duration::from_secs(30);
    let mut last = Instant::now();
    while done.len() < ends.len() {
        match consumer.poll(Duration::from_millis(200)) {
            None => {
                if last.elapsed() > deadline_idle {
                    return Err(BrokerError::Stalled {
                        topic: topic.to_owned(),
                        seconds: deadline_idle.as_secs(),
                    });
                }
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                done.insert(p);
            }
            Some(Err(e)) => return Err(kafka(format!("reading {topic}"))(e)),
            Some(Ok(m)) => {
                last = Instant::now();
                let r = to_log_record(&m);
                if m.offset() + 1 >= ends[&m.partition()] {
                    done.insert(m.partition());
                }
                if !each(&r) {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// A Kafka message as a log record. A header whose value is null becomes
/// an empty value (the WIT world has no null header values).
pub(super) fn to_log_record(m: &impl Message) -> LogRecord {
    LogRecord {
        topic: m.topic().to_owned(),
        partition: m.partition() as u32,
        offset: m.offset() as u64,
        append_ms: 0,
        record: Record {
            timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
            key: m.key().map(<[u8]>::to_vec),
            value: m.payload().map(<[u8]>::to_vec),
            headers: m
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| {
                            (
                                h.key.to_owned(),
                                h.value.map(<[u8]>::to_vec).unwrap_or_default(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
        },
    }
}
