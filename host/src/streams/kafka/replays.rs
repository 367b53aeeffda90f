//! Replay for a whole consumer group, whichever host is asked.
//!
//! The host asked writes a request (an id, where from, the idempotency
//! epoch) to the group's replays topic (`<group>-replays`: one partition,
//! compacted, one key). Every host of the group reads it; each partition's
//! owner applies it once: it finds the partition's target (the offset, or
//! for a time the earliest offset whose timestamp is at or after it, from
//! the broker's time index), never past the partition's position, and in
//! one Kafka transaction commits that offset and records the request in the
//! partition's changelog (`R`, with the partition's reprocessing range), so
//! a host that takes the partition over later knows it was applied. A
//! partition nobody owns gets it from its next owner.

use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::Producer;
use rdkafka::{Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};

use super::changelog::{self, REPLAY_KIND, encode_key, encode_replay};
use super::commit::{Failure, failure};
use super::producer::send_change;
use super::stream::Inner;
use super::{BrokerError, Client, GroupContext, KafkaConfig, kafka};
use crate::db::{StorageError, now_ms};
use crate::streams::{PartitionReplay, ReplayFrom, StreamError, positions};

/// The key of every request on the replays topic (compaction keeps the latest).
const REQUEST_KEY: &[u8] = b"replay";

/// A replay asked of the group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ReplayRequest {
    /// Increasing: a partition applies each request once.
    pub id: u64,
    /// From this offset in every partition...
    #[serde(default)]
    pub from_offset: Option<u64>,
    /// ...or from this time, ms since the Unix epoch.
    #[serde(default)]
    pub from_time_ms: Option<i64>,
    /// The idempotency epoch it runs in.
    pub epoch: u64,
}

impl ReplayRequest {
    fn from(&self) -> ReplayFrom {
        match (self.from_offset, self.from_time_ms) {
            (_, Some(t)) => ReplayFrom::TimeMs(t),
            (o, None) => ReplayFrom::Offset(o.unwrap_or(u64::MAX)),
        }
    }
}

/// The earliest offset of `topic`/`partition` whose timestamp is at or
/// after `time_ms`, by the broker's time index; the partition's end when
/// there is none. Timestamps 2, 4, 6, 8 at offsets 0–3 give 1 for 3, 2 for
/// 5, 3 for 8 and 4 (the end) for 9: the rule of the embedded log too.
///
/// # Errors
///
/// [`BrokerError::Kafka`].
pub fn offset_for_time(
    config: &KafkaConfig,
    topic: &str,
    partition: u32,
    time_ms: i64,
) -> Result<u64, BrokerError> {
    let consumer: BaseConsumer<GroupContext> = config
        .config_for(Client::Consumer)
        .create_with_context(GroupContext::default())
        .map_err(kafka("creating the consumer"))?;
    offset_for_time_with(
        &consumer,
        topic,
        partition as i32,
        time_ms,
        config.flush_timeout,
    )
}

fn offset_for_time_with(
    consumer: &BaseConsumer<GroupContext>,
    topic: &str,
    partition: i32,
    time_ms: i64,
    timeout: Duration,
) -> Result<u64, BrokerError> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(time_ms))
        .map_err(kafka("building the lookup"))?;
    let found = consumer
        .offsets_for_times(tpl, timeout)
        .map_err(kafka(format!("looking up {topic}/{partition} by time")))?;
    let offset = found
        .find_partition(topic, partition)
        .and_then(|e| match e.offset() {
            Offset::Offset(o) if o >= 0 => Some(o as u64),
            _ => None,
        });
    match offset {
        Some(o) => Ok(o),
        None => {
            let (_, high) = consumer
                .fetch_watermarks(topic, partition, timeout)
                .map_err(kafka(format!("reading the end of {topic}/{partition}")))?;
            Ok(high.max(0) as u64)
        }
    }
}

impl Inner {
    /// Starts reading the replays topic from its start, and reads what it
    /// holds now (the latest request).
    pub(super) fn start_reading_replays(&mut self) -> Result<(), BrokerError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.replays_topic, 0, Offset::Beginning)
            .map_err(kafka("assigning the replays topic"))?;
        self.replays_consumer
            .assign(&tpl)
            .map_err(kafka("assigning the replays topic"))?;
        self.read_replays(Duration::from_secs(10))
    }

    /// Reads the replay requests that arrived, waiting up to `wait` for the
    /// first event.
    pub(super) fn read_replays(&mut self, mut wait: Duration) -> Result<(), BrokerError> {
        loop {
            match self.replays_consumer.poll(wait) {
                Some(Ok(m)) => {
                    let request = m
                        .payload()
                        .and_then(|v| serde_json::from_slice::<ReplayRequest>(v).ok());
                    if let Some(r) = request
                        && self.latest_replay.as_ref().is_none_or(|l| r.id > l.id)
                    {
                        self.latest_replay = Some(r);
                    }
                    wait = Duration::ZERO;
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => return Ok(()),
                Some(Err(e)) => {
                    tracing::debug!(processor = %self.processor, error = %e, "reading replay requests");
                    return Ok(());
                }
            }
        }
    }

    /// Asks the group to replay from `from` in idempotency `epoch`, then
    /// applies it to this host's own partitions.
    ///
    /// # Errors
    ///
    /// Kafka errors writing the request.
    pub(super) fn request_replay(
        &mut self,
        from: ReplayFrom,
        epoch: u64,
    ) -> Result<(), StreamError> {
        let latest = self.latest_replay.as_ref().map_or(0, |r| r.id);
        let request = ReplayRequest {
            id: (now_ms() * 1000).max(latest + 1),
            from_offset: match from {
                ReplayFrom::Offset(o) => Some(o),
                ReplayFrom::TimeMs(_) => None,
            },
            from_time_ms: match from {
                ReplayFrom::TimeMs(t) => Some(t),
                ReplayFrom::Offset(_) => None,
            },
            epoch,
        };
        let value = serde_json::to_vec(&request).expect("a request serializes");
        let timeout = self.flush_timeout;
        let result = (|| {
            self.producer.begin_transaction()?;
            send_change(
                &self.producer,
                &self.replays_topic,
                0,
                REQUEST_KEY,
                Some(&value),
                || true,
            )
            .map_err(|_| KafkaError::Canceled)?;
            self.producer.commit_transaction(timeout)
        })();
        if let Err(e) = result {
            let _ = self.producer.abort_transaction(timeout);
            return Err(kafka("writing the replay request")(e).into());
        }
        tracing::info!(processor = %self.processor, id = request.id, ?from, epoch, "replay asked of the group");
        let deadline = Instant::now() + Duration::from_secs(10);
        while self
            .latest_replay
            .as_ref()
            .is_none_or(|l| l.id < request.id)
            && Instant::now() < deadline
        {
            self.read_replays(Duration::from_millis(100))?;
        }
        self.apply_replays()
    }

    /// Applies the latest replay request to every owned partition that has
    /// not had it yet.
    pub(super) fn apply_replays(&mut self) -> Result<(), StreamError> {
        let Some(request) = self.latest_replay.clone() else {
            return Ok(());
        };
        let due: Vec<(String, i32)> = self
            .owned
            .iter()
            .filter(|(_, o)| o.replay_id < request.id)
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in due {
            self.apply_replay(&tp, &request)?;
        }
        Ok(())
    }

    /// Moves `tp` back as `request` says (see the module docs).
    fn apply_replay(
        &mut self,
        tp: &(String, i32),
        request: &ReplayRequest,
    ) -> Result<(), StreamError> {
        let owned = self.owned[tp];
        let target = match request.from() {
            ReplayFrom::Offset(o) => o,
            ReplayFrom::TimeMs(t) => {
                offset_for_time_with(&self.consumer, &tp.0, tp.1, t, self.flush_timeout)?
            }
        };
        // A replay only goes back: no unread event is skipped.
        let target = target.min(owned.next);
        let replay = if request.epoch > owned.replay.epoch {
            PartitionReplay {
                epoch: request.epoch,
                end: owned.next,
            }
        } else {
            owned.replay
        };
        match self.commit_replay(tp, target, request.id, replay) {
            Ok(()) => {}
            Err((Failure::Membership, message)) => {
                tracing::info!(processor = %self.processor, topic = %tp.0, partition = tp.1, %message, "the partition is moving; its next owner applies the replay");
                return Ok(());
            }
            Err((_, message)) => return Err(StreamError::Broker(message)),
        }
        let partition = tp.1 as u32;
        let checkpoint = self
            .producer
            .context()
            .acknowledged(&self.changelog_topic, tp.1)
            .map(|o| o as u64 + 1);
        let txn = self.db.begin_write().map_err(StorageError::from)?;
        changelog::set_partition_replay_in(
            &txn,
            &self.processor,
            &tp.0,
            partition,
            request.id,
            replay,
        )?;
        if let Some(c) = checkpoint {
            changelog::set_checkpoint_in(&txn, &self.processor, &tp.0, partition, c)?;
        }
        positions::set_position_in(&txn, &self.processor, &tp.0, partition, target)?;
        txn.commit().map_err(StorageError::from)?;
        self.owned.insert(
            tp.clone(),
            super::stream::Owned {
                next: target,
                committed: target,
                replay,
                replay_id: request.id,
            },
        );
        self.seek_back(tp, target);
        tracing::info!(processor = %self.processor, topic = %tp.0, partition, from = target, epoch = replay.epoch, "replaying");
        Ok(())
    }

    /// One transaction: the partition's replay record in its changelog and
    /// its offset moved to `target`.
    fn commit_replay(
        &mut self,
        tp: &(String, i32),
        target: u64,
        id: u64,
        replay: PartitionReplay,
    ) -> Result<(), (Failure, String)> {
        let err = |what: &str, e: KafkaError| (failure(&e), format!("{what}: {e}"));
        let producer = &self.producer;
        let timeout = self.flush_timeout;
        producer.context().forget_offsets();
        let result = (|| {
            producer
                .begin_transaction()
                .map_err(|e| err("beginning a transaction", e))?;
            let key = encode_key(REPLAY_KIND, 0, &tp.0, &[]);
            let value = encode_replay(id, replay);
            send_change(
                producer,
                &self.changelog_topic,
                tp.1,
                &key,
                Some(&value),
                || true,
            )
            .map_err(|e| (Failure::Retry, e.to_string()))?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(target as i64))
                .map_err(|e| (Failure::Retry, e.to_string()))?;
            let metadata = self
                .consumer
                .group_metadata()
                .ok_or_else(|| (Failure::Membership, "no group metadata yet".to_owned()))?;
            producer
                .send_offsets_to_transaction(&tpl, &metadata, timeout)
                .map_err(|e| err("moving the offset back", e))?;
            producer
                .commit_transaction(timeout)
                .map_err(|e| err("committing the replay", e))
        })();
        if result.is_err() {
            let _ = producer.abort_transaction(timeout);
        }
        result
    }
}
