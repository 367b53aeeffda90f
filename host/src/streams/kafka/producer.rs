//! Writing to Kafka: idempotent (and transactional) producers that report
//! every record the broker did not acknowledge.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::client::ClientContext;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use super::consumer::log_client_error;
use super::{BrokerError, Client, KafkaConfig, kafka, lock};
use crate::streams::Record;

/// Counts the records the broker did not acknowledge.
#[derive(Default)]
pub struct DeliveryContext {
    pub(super) errors: Mutex<Vec<String>>,
}

impl ClientContext for DeliveryContext {
    fn error(&self, error: KafkaError, reason: &str) {
        log_client_error(error, reason);
    }
}

impl ProducerContext for DeliveryContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            lock(&self.errors).push(e.to_string());
        }
    }
}

/// Hands `r` to the producer for `topic` byte for byte (key, value, headers,
/// timestamp); while its queue is full, waits as long as `keep_trying` says.
fn send_one(
    producer: &BaseProducer<DeliveryContext>,
    topic: &str,
    r: &Record,
    keep_trying: impl Fn() -> bool,
) -> Result<(), BrokerError> {
    let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
    for (name, value) in &r.headers {
        headers = headers.insert(Header {
            key: name,
            value: Some(value.as_slice()),
        });
    }
    let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic)
        .timestamp(r.timestamp_ms)
        .headers(headers);
    if let Some(k) = &r.key {
        record = record.key(k.as_slice());
    }
    if let Some(v) = &r.value {
        record = record.payload(v.as_slice());
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
    for (topic, r) in records {
        total += 1;
        let deadline = Instant::now() + timeout;
        send_one(producer, topic, r, || Instant::now() < deadline)?;
    }
    producer
        .flush(timeout)
        .map_err(kafka("waiting for acknowledgements"))?;
    let errors = lock(&producer.context().errors);
    if let Some(first) = errors.first() {
        return Err(BrokerError::NotAcknowledged {
            failed: errors.len(),
            total,
            first_error: first.clone(),
        });
    }
    Ok(total)
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
    let mut c = config.config_for(Client::Producer);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "5")
        // Give up on a record no later than the run loop gives up on the
        // batch (its outbox keeps it for the next run).
        .set(
            "message.timeout.ms",
            config.flush_timeout.as_millis().max(1).to_string(),
        );
    if let Some(id) = transactional_id {
        // librdkafka requires message.timeout.ms <= transaction.timeout.ms.
        c.set("transactional.id", id).set(
            "transaction.timeout.ms",
            config.flush_timeout.as_millis().max(1000).to_string(),
        );
    }
    let p: BaseProducer<DeliveryContext> = c
        .create_with_context(DeliveryContext::default())
        .map_err(kafka("creating the producer"))?;
    if transactional_id.is_some() {
        p.init_transactions(config.flush_timeout)
            .map_err(kafka("initialising transactions"))?;
    }
    Ok(p)
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
/// all of them, or `stop` is set. Returns whether all were acknowledged.
///
/// # Errors
///
/// [`BrokerError::NotAcknowledged`] when the broker refused records for good.
pub fn deliver_patiently(
    producer: &BaseProducer<DeliveryContext>,
    topic: &str,
    records: &[Record],
    stop: &std::sync::atomic::AtomicBool,
) -> Result<bool, BrokerError> {
    lock(&producer.context().errors).clear();
    for r in records {
        send_one(producer, topic, r, || true)?;
    }
    let mut warned = false;
    while producer.in_flight_count() > 0 {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(false);
        }
        if producer.flush(Duration::from_secs(5)).is_err() && !warned {
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
    let errors = lock(&producer.context().errors);
    if let Some(first) = errors.first() {
        return Err(BrokerError::NotAcknowledged {
            failed: errors.len(),
            total: records.len(),
            first_error: first.clone(),
        });
    }
    Ok(true)
}
