//! Writing to Kafka: idempotent (and transactional) producers that report
//! every record the broker did not acknowledge.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use rdkafka::bindings as rdsys;
use rdkafka::client::Client as NativeClient;
use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use super::consumer::log_client_error;
use super::{BrokerError, Client, KafkaConfig, kafka, lock};
use crate::streams::Record;

/// Collects the records the broker did not acknowledge, by their index in
/// what was sent (the delivery opaque), and remembers the highest offset
/// acknowledged per topic and partition (a changelog's checkpoint comes
/// from it).
#[derive(Default)]
pub struct DeliveryContext {
    pub(super) errors: Mutex<Vec<Refusal>>,
    pub(super) offsets: Mutex<HashMap<String, HashMap<i32, i64>>>,
    /// Set by librdkafka when an event (a delivery report) arrives on the
    /// producer's queue; [`wait_for_acks`] sleeps on it.
    wakeup: Wakeup,
}

/// A flag librdkafka raises (from its own threads) when the producer's
/// event queue goes from empty to not empty, and a condition variable to
/// sleep on until it does.
#[derive(Default)]
struct Wakeup {
    /// Whether the callback is installed on the producer's queue.
    listening: AtomicBool,
    raised: Mutex<bool>,
    cond: Condvar,
}

impl Wakeup {
    /// Waits until the flag is raised, at most `timeout`, and lowers it.
    fn wait(&self, timeout: Duration) {
        let raised = lock(&self.raised);
        let (mut raised, _) = self
            .cond
            .wait_timeout_while(raised, timeout, |r| !*r)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *raised = false;
    }
}

/// librdkafka's queue event callback: called under the queue's lock on a
/// librdkafka thread, so it only raises the flag.
///
/// # Safety
///
/// `opaque` is the address of the [`Wakeup`] in the producer's
/// [`DeliveryContext`], which rdkafka drops only after the native client
/// (its `Client` holds the native handle before the context).
unsafe extern "C" fn raise(_rk: *mut rdsys::rd_kafka_t, opaque: *mut std::ffi::c_void) {
    // SAFETY: see above; the Wakeup is alive while librdkafka can call this.
    let w = unsafe { &*(opaque as *const Wakeup) };
    *lock(&w.raised) = true;
    w.cond.notify_all();
}

/// The producer's main (event) queue, where librdkafka puts delivery
/// reports; destroyed (the handle, not the queue) on drop.
struct MainQueue(*mut rdsys::rd_kafka_queue_t);

impl MainQueue {
    fn of(client: &NativeClient<DeliveryContext>) -> Self {
        // SAFETY: the client's handle is valid while `client` is borrowed;
        // the queue handle holds a reference of its own.
        MainQueue(unsafe { rdsys::rd_kafka_queue_get_main(client.native_ptr()) })
    }

    fn len(&self) -> usize {
        // SAFETY: a live queue handle.
        unsafe { rdsys::rd_kafka_queue_length(self.0) }
    }
}

impl Drop for MainQueue {
    fn drop(&mut self) {
        // SAFETY: the handle came from rd_kafka_queue_get_main and is
        // destroyed once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.0) }
    }
}

impl DeliveryContext {
    /// The highest offset acknowledged in `topic`/`partition` since the
    /// last [`DeliveryContext::forget_offsets`].
    pub(super) fn acknowledged(&self, topic: &str, partition: i32) -> Option<i64> {
        lock(&self.offsets).get(topic)?.get(&partition).copied()
    }

    /// Forgets the acknowledged offsets.
    pub(super) fn forget_offsets(&self) {
        lock(&self.offsets).clear();
    }
}

/// The delivery opaque of a record sent outside an indexed batch (a
/// changelog record, one record of a transaction).
pub(super) const NOT_INDEXED: usize = usize::MAX;

/// A record that was not acknowledged: its index in the records sent, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The index of the record in the slice that was sent.
    pub index: usize,
    /// librdkafka's error code, when there is one.
    pub code: Option<RDKafkaErrorCode>,
    /// The error, as librdkafka words it.
    pub message: String,
}

impl Refusal {
    fn new(index: usize, e: &KafkaError) -> Self {
        Refusal {
            index,
            code: e.rdkafka_error_code(),
            message: e.to_string(),
        }
    }

    /// Whether the broker (or librdkafka's own check) refused this record
    /// for what it is, so sending it again cannot succeed: too large, a
    /// timestamp outside the broker's window, corrupt or invalid. Other
    /// failures (timeouts, authorization, a broker away) are not about the
    /// record.
    pub fn is_about_the_record(&self) -> bool {
        use RDKafkaErrorCode as C;
        matches!(
            self.code,
            Some(
                C::InvalidMessage
                    | C::InvalidMessageSize
                    | C::MessageSizeTooLarge
                    | C::MessageBatchTooLarge
                    | C::InvalidTimestamp
                    | C::InvalidRecord
            )
        )
    }
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, index: usize) {
        match result {
            Err((e, _)) => lock(&self.errors).push(Refusal::new(index, e)),
            Ok(m) => {
                let mut offsets = lock(&self.offsets);
                let per_topic = match offsets.get_mut(m.topic()) {
                    Some(t) => t,
                    None => offsets.entry(m.topic().to_owned()).or_default(),
                };
                let o = per_topic.entry(m.partition()).or_insert(-1);
                *o = (*o).max(m.offset());
            }
        }
    }
}

/// Hands `r` to the producer for `topic` byte for byte (key, value, headers,
/// timestamp), as record `index` of what is being sent; while its queue is
/// full, waits as long as `keep_trying` says.
///
/// A timestamp of 0 or below is sent as the current time by librdkafka
/// (it reads 0 as "now"); the device-time policy
/// ([`crate::streams::ingest::DeviceTimePolicy`]) keeps such timestamps
/// from device records.
fn send_one(
    producer: &BaseProducer<DeliveryContext>,
    topic: &str,
    r: &Record,
    index: usize,
    keep_trying: impl Fn() -> bool,
) -> Result<(), KafkaError> {
    send_to(producer, topic, None, r, index, keep_trying)
}

/// As [`send_one`], to partition `partition` when given (else by key).
pub(super) fn send_to(
    producer: &BaseProducer<DeliveryContext>,
    topic: &str,
    partition: Option<i32>,
    r: &Record,
    index: usize,
    keep_trying: impl Fn() -> bool,
) -> Result<(), KafkaError> {
    let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
    for (name, value) in &r.headers {
        headers = headers.insert(Header {
            key: name,
            value: Some(value.as_slice()),
        });
    }
    let mut record: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(topic, index)
        .timestamp(r.timestamp_ms)
        .headers(headers);
    if let Some(k) = &r.key {
        record = record.key(k.as_slice());
    }
    if let Some(v) = &r.value {
        record = record.payload(v.as_slice());
    }
    if let Some(p) = partition {
        record = record.partition(p);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                if keep_trying() =>
            {
                record = back;
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => return Err(e),
        }
    }
}

/// Hands a changelog record (`key`, `value`; `None` is a tombstone) for
/// `topic`/`partition` to the producer, stamped with the wall clock; while
/// its queue is full, waits as long as `keep_trying` says.
pub(super) fn send_change(
    producer: &BaseProducer<DeliveryContext>,
    topic: &str,
    partition: i32,
    key: &[u8],
    value: Option<&[u8]>,
    keep_trying: impl Fn() -> bool,
) -> Result<(), BrokerError> {
    let mut record: BaseRecord<'_, [u8], [u8], usize> =
        BaseRecord::with_opaque_to(topic, NOT_INDEXED)
            .partition(partition)
            .key(key)
            .timestamp(crate::db::now_ms() as i64);
    if let Some(v) = value {
        record = record.payload(v);
    }
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back))
                if keep_trying() =>
            {
                record = back;
                producer.poll(Duration::from_millis(50));
            }
            Err((e, _)) => return Err(kafka(format!("producing to {topic}"))(e)),
        }
    }
}

/// Produces `records` and waits until the broker acknowledged each one.
///
/// # Errors
///
/// [`BrokerError::NotAcknowledged`] or [`BrokerError::Kafka`].
pub fn produce_all<'a>(
    producer: &BaseProducer<DeliveryContext>,
    records: impl IntoIterator<Item = (&'a str, &'a Record)>,
    timeout: Duration,
) -> Result<usize, BrokerError> {
    lock(&producer.context().errors).clear();
    let mut total = 0;
    for (i, (topic, r)) in records.into_iter().enumerate() {
        total += 1;
        let deadline = Instant::now() + timeout;
        send_one(producer, topic, r, i, || Instant::now() < deadline)
            .map_err(kafka(format!("producing to {topic}")))?;
    }
    wait_for_acks(producer, timeout).map_err(kafka("waiting for acknowledgements"))?;
    let errors = lock(&producer.context().errors);
    if let Some(first) = errors.first() {
        return Err(BrokerError::NotAcknowledged {
            failed: errors.len(),
            total,
            first_error: first.message.clone(),
        });
    }
    Ok(total)
}

/// Produces `records` to `topic` and waits up to `timeout` for every
/// acknowledgement; returns the records the broker refused for what they
/// are ([`Refusal::is_about_the_record`]), each confirmed by sending it
/// again alone (a refused record can take the others of its broker batch
/// down with it; those are stored on the second try, in order). The other
/// records are stored.
///
/// # Errors
///
/// [`BrokerError::NotAcknowledged`] when records failed for another reason
/// (a timeout, authorization, a broker away); [`BrokerError::Kafka`].
pub fn produce_each(
    producer: &BaseProducer<DeliveryContext>,
    topic: &str,
    records: &[Record],
    timeout: Duration,
) -> Result<Vec<Refusal>, BrokerError> {
    let deadline = Instant::now() + timeout;
    let mut wait = |p: &BaseProducer<DeliveryContext>| {
        wait_for_acks(p, deadline.saturating_duration_since(Instant::now()))
            .map(|()| true)
            .map_err(kafka("waiting for acknowledgements"))
    };
    let refused = send_and_sort(
        producer,
        topic,
        records,
        || Instant::now() < deadline,
        &mut wait,
    )?
    .unwrap_or_default();
    if let Some(other) = refused.iter().find(|r| !r.is_about_the_record()) {
        return Err(BrokerError::NotAcknowledged {
            failed: refused.len(),
            total: records.len(),
            first_error: other.message.clone(),
        });
    }
    Ok(refused)
}

/// Sends `records` (each tagged with its index), waits with `wait` (false:
/// stop asked, give up), then sends every refused record again alone, in
/// order, waiting for each. Returns the refusals that remain (`None` when
/// `wait` gave up).
fn send_and_sort(
    producer: &BaseProducer<DeliveryContext>,
    topic: &str,
    records: &[Record],
    keep_trying: impl Fn() -> bool + Copy,
    wait: &mut dyn FnMut(&BaseProducer<DeliveryContext>) -> Result<bool, BrokerError>,
) -> Result<Option<Vec<Refusal>>, BrokerError> {
    lock(&producer.context().errors).clear();
    let mut refused = Vec::new();
    for (i, r) in records.iter().enumerate() {
        if let Err(e) = send_one(producer, topic, r, i, keep_trying) {
            refused.push(Refusal::new(i, &e));
        }
    }
    if !wait(producer)? {
        return Ok(None);
    }
    refused.append(&mut lock(&producer.context().errors));
    if refused.is_empty() {
        return Ok(Some(refused));
    }
    refused.sort_by_key(|r| r.index);
    let mut remain = Vec::new();
    for first in refused {
        if !first.is_about_the_record() {
            remain.push(first);
            continue;
        }
        let i = first.index;
        lock(&producer.context().errors).clear();
        if let Err(e) = send_one(producer, topic, &records[i], i, keep_trying) {
            remain.push(Refusal::new(i, &e));
            continue;
        }
        if !wait(producer)? {
            return Ok(None);
        }
        remain.extend(lock(&producer.context().errors).drain(..));
    }
    Ok(Some(remain))
}

/// Waits until every record handed to `producer` is acknowledged (or
/// failed), up to `timeout`, serving the delivery reports as they arrive
/// and sleeping in between.
///
/// Neither rdkafka's `flush` nor its `poll` fits: `flush` polls in steps
/// of up to 100 ms and waits out the whole step after the last
/// acknowledgement (100 ms more per batch), and `poll(d)` always runs
/// until `d` has passed, spinning the last sub-millisecond of it
/// (librdkafka takes whole milliseconds, so `poll(1 ms)` never sleeps:
/// a core busy for the whole wait, taken from the broker on a small
/// machine). This sleeps on a callback librdkafka calls when a report
/// arrives on the producer's queue.
///
/// # Errors
///
/// [`KafkaError::Flush`] when records are still in flight at `timeout`.
pub(super) fn wait_for_acks(
    producer: &BaseProducer<DeliveryContext>,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let deadline = Instant::now() + timeout;
    let queue = MainQueue::of(producer.client());
    let wakeup = &producer.context().wakeup;
    if !wakeup.listening.swap(true, Ordering::SeqCst) {
        let opaque = std::ptr::from_ref(wakeup).cast_mut().cast();
        // SAFETY: a live queue handle; `raise` and `opaque` as documented
        // on `raise`.
        unsafe { rdsys::rd_kafka_queue_cb_event_enable(queue.0, Some(raise), opaque) };
    }
    loop {
        while queue.len() > 0 {
            producer.poll(Duration::ZERO);
        }
        if producer.in_flight_count() == 0 {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
        }
        // A report that arrived since the queue was seen empty raised the
        // flag; the 100 ms bound is a safety net, not a step.
        wakeup.wait((deadline - now).min(Duration::from_millis(100)));
    }
}

/// An idempotent producer (`acks=all`, murmur2 partitioner); transactional
/// with `transactional_id`.
///
/// # Errors
///
/// [`BrokerError::Kafka`] when librdkafka refuses the settings, or the
/// transactions cannot be initialised.
pub fn producer(
    config: &KafkaConfig,
    transactional_id: Option<&str>,
) -> Result<BaseProducer<DeliveryContext>, BrokerError> {
    let c = producer_config(config, transactional_id);
    let p: BaseProducer<DeliveryContext> = c
        .create_with_context(DeliveryContext::default())
        .map_err(kafka("creating the producer"))?;
    if let Some(id) = transactional_id {
        // Fences a previous producer with this id (this host's previous
        // run) and aborts what it left open.
        p.init_transactions(config.flush_timeout)
            .map_err(kafka(format!("initialising transactions of {id}")))?;
    }
    Ok(p)
}

/// The settings of [`producer`]: `[kafka.properties]` that apply to
/// producers, then what effect-once needs (idempotence, `acks=all`,
/// murmur2 as Kafka's Java clients partition, the timeouts), then
/// `linger.ms = 0` unless the user set it.
fn producer_config(config: &KafkaConfig, transactional_id: Option<&str>) -> ClientConfig {
    let mut c = config.config_for(Client::Producer);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        // Give up on a record no later than the run loop gives up on the
        // batch (its outbox keeps it for the next run).
        .set(
            "message.timeout.ms",
            config.flush_timeout.as_millis().max(1).to_string(),
        );
    if !config.properties.contains_key("linger.ms") {
        // Every caller waits for the acknowledgements right after it sent
        // a batch, so lingering is pure delay (5 ms was 10 ms a batch: the
        // outputs, then the changelog); records sent while a request is in
        // flight still go out together in the next one. A user who set it
        // in `[kafka.properties]` keeps theirs.
        c.set("linger.ms", "0");
    }
    if let Some(id) = transactional_id {
        // librdkafka requires message.timeout.ms <= transaction.timeout.ms;
        // a batch that cannot be acknowledged in time is tried again in a
        // new transaction (until flush_timeout).
        let t = config.transaction_timeout.as_millis().max(1000).to_string();
        c.set("transactional.id", id)
            .set("transaction.timeout.ms", &t)
            .set("message.timeout.ms", &t);
    }
    c
}

/// A producer for store-and-forward: idempotent, `acks=all`, and records
/// never expire in its queue (`message.timeout.ms=0`), so that while the
/// brokers are unreachable nothing is dropped and nothing needs re-sending.
///
/// # Errors
///
/// [`BrokerError::Kafka`] when librdkafka refuses the settings.
pub fn patient_producer(
    config: &KafkaConfig,
) -> Result<BaseProducer<DeliveryContext>, BrokerError> {
    let mut c = config.config_for(Client::Producer);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("message.timeout.ms", "0");
    c.create_with_context(DeliveryContext::default())
        .map_err(kafka("creating the producer"))
}

/// Produces `records` to `topic` byte for byte (key, value, headers,
/// timestamp) and waits, as long as it takes, until the broker acknowledged
/// or refused each of them, or `stop` is set. Returns `None` when stopped,
/// else the records the broker refused for what they are
/// ([`Refusal::is_about_the_record`], each confirmed by sending it again
/// alone); every other record is stored.
///
/// # Errors
///
/// [`BrokerError::NotAcknowledged`] when records failed for another reason
/// (e.g. not authorized).
pub fn deliver_patiently(
    producer: &BaseProducer<DeliveryContext>,
    topic: &str,
    records: &[Record],
    stop: &std::sync::atomic::AtomicBool,
) -> Result<Option<Vec<Refusal>>, BrokerError> {
    let mut wait = |p: &BaseProducer<DeliveryContext>| Ok(wait_patiently(p, topic, stop));
    let Some(refused) = send_and_sort(producer, topic, records, || true, &mut wait)? else {
        return Ok(None);
    };
    if let Some(other) = refused.iter().find(|r| !r.is_about_the_record()) {
        return Err(BrokerError::NotAcknowledged {
            failed: refused.len(),
            total: records.len(),
            first_error: other.message.clone(),
        });
    }
    Ok(Some(refused))
}

/// Waits until nothing is in flight (true) or `stop` is set (false),
/// warning once while the brokers do not answer.
fn wait_patiently(
    producer: &BaseProducer<DeliveryContext>,
    topic: &str,
    stop: &std::sync::atomic::AtomicBool,
) -> bool {
    let mut warned = false;
    while producer.in_flight_count() > 0 {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return false;
        }
        if wait_for_acks(producer, Duration::from_secs(5)).is_err() && !warned {
            warned = true;
            tracing::warn!(
                topic,
                waiting = producer.in_flight_count(),
                "the brokers do not acknowledge; records stay stored locally and are sent when they return"
            );
        }
    }
    if warned {
        tracing::info!(topic, "the brokers are back; records acknowledged");
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn producers_do_not_linger_unless_the_user_says_so() {
        let mut config = KafkaConfig::new("127.0.0.1:9092");
        let c = producer_config(&config, None);
        assert_eq!(c.get("linger.ms"), Some("0"));
        assert_eq!(c.get("acks"), Some("all"));
        config.properties.insert("linger.ms".into(), "20".into());
        config.properties.insert("acks".into(), "1".into());
        let c = producer_config(&config, Some("t-1"));
        assert_eq!(c.get("linger.ms"), Some("20"));
        // Effect-once needs every in-sync replica's acknowledgement.
        assert_eq!(c.get("acks"), Some("all"));
        assert_eq!(c.get("transactional.id"), Some("t-1"));
    }
}
