//! Committing a batch to Kafka: one transaction per batch holds its
//! changelog records and its input offset (and, with `exactly_once`, its
//! outputs); in at-least-once mode the outputs are produced and
//! acknowledged just before it.
//!
//! The offsets go through `send_offsets_to_transaction` with the consumer's
//! group metadata, so the broker refuses the commit of a host that is no
//! longer the partition's owner (a zombie: KIP-447 fencing by generation);
//! the transactional id is per host, so a host's next run fences its
//! previous one. A batch whose partition moved meanwhile is abandoned
//! (nothing of it committed) and its partition read again from the batch's
//! start if it is still ours.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::Consumer;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{Offset, TopicPartitionList};

use super::producer::{DeliveryContext, NOT_INDEXED, send_change, send_to, wait_for_acks};
use super::stream::Inner;
use super::{lock, produce_all};
use crate::streams::{Batch, StreamError};

/// How a transaction failed.
pub(super) enum Failure {
    /// The group moved on: this host is not (or no longer knows it is) the
    /// partition's owner in the current generation.
    Membership,
    /// Transient (the broker away, a timeout): try again.
    Retry,
    /// The producer cannot go on, but a new one can (its state broke, e.g.
    /// across a broker restart): make it again and do the batch again.
    Broken,
    /// Fenced by another producer with this host's transactional id: another
    /// run of this host took over, and this one must stop.
    Fenced,
}

const MEMBERSHIP: [RDKafkaErrorCode; 4] = [
    RDKafkaErrorCode::IllegalGeneration,
    RDKafkaErrorCode::UnknownMemberId,
    RDKafkaErrorCode::FencedInstanceId,
    RDKafkaErrorCode::RebalanceInProgress,
];

/// What kind of failure `e` is.
pub(super) fn failure(e: &KafkaError) -> Failure {
    if let KafkaError::Transaction(t) = e {
        if MEMBERSHIP.contains(&t.code()) {
            return Failure::Membership;
        }
        if matches!(
            t.code(),
            RDKafkaErrorCode::ProducerFenced | RDKafkaErrorCode::TransactionalIdAuthorizationFailed
        ) {
            return Failure::Fenced;
        }
        if t.is_fatal() {
            return Failure::Broken;
        }
        return Failure::Retry;
    }
    match e.rdkafka_error_code() {
        Some(c) if MEMBERSHIP.contains(&c) => Failure::Membership,
        _ => Failure::Retry,
    }
}

impl Inner {
    /// Commits `batch` to Kafka (see the module docs), trying again while
    /// the broker fails transiently, for up to `flush_timeout`.
    ///
    /// # Errors
    ///
    /// [`StreamError::Abandoned`] when the partition moved; a broker error
    /// when the transaction fails for good or for longer than `flush_timeout`.
    pub(super) fn commit_batch(&mut self, batch: &Batch) -> Result<(), StreamError> {
        let tp = (batch.topic.clone(), batch.partition as i32);
        let next = batch.next_offset();
        let first = batch.records.first().map_or(next, |r| r.offset);
        let abandon = |reason: String| StreamError::Abandoned {
            topic: batch.topic.clone(),
            partition: batch.partition,
            reason,
        };
        let Some(owned) = self.owned.get(&tp).copied() else {
            self.clear_batch();
            return Err(abandon("the partition was revoked".into()));
        };
        if next < owned.committed {
            // Records read before a replay moved the partition back.
            self.clear_batch();
            return Err(abandon(format!(
                "its end {next} is below the committed offset {}; offsets never go back",
                owned.committed
            )));
        }
        let deadline = Instant::now() + self.flush_timeout;
        let mut outputs_sent = false;
        loop {
            let attempt = self.try_commit(&tp, next, &mut outputs_sent, deadline);
            let Err((mut kind, message)) = attempt else {
                break;
            };
            if matches!(kind, Failure::Retry | Failure::Membership) && !self.abort(deadline) {
                kind = Failure::Broken;
            }
            match kind {
                Failure::Membership => {
                    self.clear_batch();
                    self.seek_back(&tp, first);
                    return Err(abandon(message));
                }
                Failure::Retry if Instant::now() < deadline => {
                    tracing::warn!(processor = %self.processor, topic = %tp.0, partition = tp.1, error = %message, "the batch's transaction failed; trying again");
                    std::thread::sleep(Duration::from_millis(500));
                }
                Failure::Broken if Instant::now() < deadline => {
                    tracing::warn!(processor = %self.processor, error = %message, "the transactional producer cannot go on; making it again");
                    self.clear_batch();
                    self.seek_back(&tp, first);
                    self.renew_producer()?;
                    return Err(abandon(message));
                }
                Failure::Fenced => {
                    self.clear_batch();
                    return Err(StreamError::Broker(format!(
                        "{message}: another run of this host (same host id) took over its transactions; this one stops"
                    )));
                }
                _ => {
                    self.clear_batch();
                    return Err(StreamError::Broker(message));
                }
            }
        }
        self.pending_checkpoint = self
            .producer
            .context()
            .acknowledged(&self.changelog_topic, tp.1)
            .map(|o| o as u64 + 1);
        self.clear_batch();
        Ok(())
    }

    /// Aborts the open transaction, trying again until `deadline` while the
    /// broker is away. Returns whether it is aborted.
    fn abort(&self, deadline: Instant) -> bool {
        loop {
            match self.producer.abort_transaction(self.transaction_timeout) {
                Ok(()) => return true,
                Err(KafkaError::Transaction(e))
                    if e.is_retriable() && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
                // Not in a transaction (it failed before one began): nothing to abort.
                Err(KafkaError::Transaction(e)) if e.code() == RDKafkaErrorCode::State => {
                    return true;
                }
                Err(e) => {
                    tracing::debug!(processor = %self.processor, error = %e, "aborting the transaction");
                    return false;
                }
            }
        }
    }

    /// Replaces the transactional producer by a new one with the same id
    /// (which fences the old one and aborts what it left open).
    pub(super) fn renew_producer(&mut self) -> Result<(), StreamError> {
        let id = self.transactional_id.clone();
        self.producer = Arc::new(super::producer(&self.kafka_config, Some(&id))?);
        Ok(())
    }

    fn clear_batch(&mut self) {
        self.pending.clear();
        self.changes.clear();
    }

    /// One attempt: the outputs (at-least-once: acknowledged first), then
    /// one transaction with the changelog records, (exactly-once: the
    /// outputs,) and the offset `tp` → `next`.
    fn try_commit(
        &mut self,
        tp: &(String, i32),
        next: u64,
        outputs_sent: &mut bool,
        deadline: Instant,
    ) -> Result<(), (Failure, String)> {
        let retry = |e: &dyn std::fmt::Display| (Failure::Retry, e.to_string());
        let txn_err = |what: &str, e: KafkaError| (failure(&e), format!("{what}: {e}"));
        let keep_trying = || Instant::now() < deadline;
        if let Some(out) = &self.out_producer
            && !*outputs_sent
        {
            let refs = self.pending.iter().map(|(t, r)| (t.as_str(), r));
            produce_all(out, refs, self.flush_timeout).map_err(|e| retry(&e))?;
            *outputs_sent = true;
            tracing::debug!(processor = %self.processor, records = self.pending.len(), "outputs acknowledged");
        }
        let producer = &self.producer;
        lock(&producer.context().errors).clear();
        producer.context().forget_offsets();
        producer
            .begin_transaction()
            .map_err(|e| txn_err("beginning a transaction", e))?;
        if self.exactly_once {
            for (t, r) in &self.pending {
                send_to(producer, t, None, r, NOT_INDEXED, keep_trying).map_err(|e| retry(&e))?;
            }
        }
        for (p, k, v) in &self.changes {
            send_change(
                producer,
                &self.changelog_topic,
                *p,
                k,
                v.as_deref(),
                keep_trying,
            )
            .map_err(|e| retry(&e))?;
        }
        wait_for_acks(producer, self.flush_timeout)
            .map_err(|e| txn_err("waiting for acknowledgements", e))?;
        if let Some(first) = lock(&producer.context().errors).first() {
            return Err(retry(&format!(
                "the broker did not acknowledge a record: {}",
                first.message
            )));
        }
        if self.exactly_once {
            tracing::debug!(processor = %self.processor, records = self.pending.len(), "outputs acknowledged");
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&tp.0, tp.1, Offset::Offset(next as i64))
            .map_err(|e| retry(&e))?;
        let metadata = self
            .consumer
            .group_metadata()
            .ok_or_else(|| (Failure::Membership, "no group metadata yet".to_owned()))?;
        let timeout = self.flush_timeout;
        bounded(producer, timeout, move |p| {
            p.send_offsets_to_transaction(&tpl, &metadata, timeout)
        })?
        .map_err(|e| txn_err("adding the offsets to the transaction", e))?;
        producer
            .commit_transaction(self.flush_timeout)
            .map_err(|e| txn_err("committing the transaction", e))?;
        tracing::debug!(processor = %self.processor, topic = %tp.0, partition = tp.1, next, "offsets committed");
        Ok(())
    }
}

/// Runs `call` on `producer` on a thread of its own and waits for it at
/// most `timeout` and 5 s more. librdkafka's `send_offsets_to_transaction`
/// (2.12) can wait forever when the broker goes away between the records'
/// acknowledgements and the offsets (seen in
/// `a_broker_that_stays_away_fails_the_processor_within_the_flush_timeout`:
/// the call blocked with no timeout in `rd_kafka_txn_op_req0`); the
/// processor must fail instead. The thread is left to librdkafka then.
///
/// # Errors
///
/// [`Failure::Broken`] when the call has not returned in time (the
/// producer is in a transaction it cannot finish: it is not aborted).
fn bounded<T: Send + 'static>(
    producer: &Arc<BaseProducer<DeliveryContext>>,
    timeout: Duration,
    call: impl FnOnce(&BaseProducer<DeliveryContext>) -> T + Send + 'static,
) -> Result<T, (Failure, String)> {
    let p = Arc::clone(producer);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("kafka-txn".into())
        .spawn(move || {
            let _ = tx.send(call(&p));
        })
        .map_err(|e| (Failure::Retry, format!("starting a thread: {e}")))?;
    let wait = timeout + Duration::from_secs(5);
    rx.recv_timeout(wait).map_err(|_| {
        (
            Failure::Broken,
            format!(
                "the broker did not answer adding the offsets to the transaction within {} s",
                wait.as_secs()
            ),
        )
    })
}
