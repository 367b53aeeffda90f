//! What the run loop hands the component and what it publishes: the WIT
//! event of a record, and each output as a record with its
//! `idempotency-key` header.

use super::idempotency;
use crate::runtime::{Event, Output};
use crate::streams::topic::check_topic_name;
use crate::streams::{LogRecord, Record};

/// Longest topic name, in bytes, quoted whole in a dead letter's message; a
/// longer one is cut there (Kafka's limit is 249).
const SHOWN_TOPIC_BYTES: usize = 256;

/// Why an event's `outputs` cannot be published as a whole: the first
/// output whose topic breaks Kafka's rule for topic names
/// ([`check_topic_name`]), e.g. `output 1 of 2: topic name "a b" is not
/// valid: use 1 to 249 of the characters a-z A-Z 0-9 . _ - (the Kafka rule)`.
/// `None` when every output may be published (an output without a topic goes
/// to the processor's `output`, checked with the config). The run loop
/// publishes all of an event's outputs or none: such an event is
/// dead-lettered as a `contract` breach.
pub fn unpublishable(outputs: &[Output]) -> Option<String> {
    outputs.iter().enumerate().find_map(|(i, o)| {
        let topic = o.topic.as_deref()?;
        let err = check_topic_name(topic).err()?;
        let mut message = format!("output {i} of {}: ", outputs.len());
        if topic.len() <= SHOWN_TOPIC_BYTES {
            message.push_str(&err.to_string());
        } else {
            let mut cut = SHOWN_TOPIC_BYTES;
            while !topic.is_char_boundary(cut) {
                cut -= 1;
            }
            let shown = crate::streams::topic::BadTopicName(format!("{}…", &topic[..cut]));
            message.push_str(&format!("{shown} ({} bytes)", topic.len()));
        }
        Some(message)
    })
}

/// The WIT event for a log record.
pub fn to_event(r: &LogRecord) -> Event {
    Event {
        topic: r.topic.clone(),
        partition: r.partition,
        offset: r.offset,
        timestamp_ms: r.record.timestamp_ms,
        key: r.record.key.clone(),
        value: r.record.value.clone(),
        headers: r.record.headers.clone(),
    }
}

/// The `idempotency-key` of output `index` of the event keyed `input_key`.
pub fn output_key(input_key: &[u8], processor: &str, index: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(input_key.len() + processor.len() + 8);
    k.extend_from_slice(input_key);
    k.push(b'/');
    k.extend_from_slice(processor.as_bytes());
    k.push(b'/');
    k.extend_from_slice(index.to_string().as_bytes());
    k
}

/// The record published for output `index` of `input`: its timestamp is
/// the input's, and its `idempotency-key` header is [`output_key`].
pub fn output_record(
    input: &LogRecord,
    out: Output,
    input_key: &[u8],
    processor: &str,
    index: usize,
) -> Record {
    let mut headers: Vec<(String, Vec<u8>)> = out
        .headers
        .into_iter()
        .filter(|(n, _)| n != idempotency::HEADER)
        .collect();
    headers.push((
        idempotency::HEADER.to_owned(),
        output_key(input_key, processor, index),
    ));
    Record {
        timestamp_ms: input.record.timestamp_ms,
        key: out.key,
        value: out.value,
        headers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn to(topic: Option<&str>) -> Output {
        Output {
            topic: topic.map(str::to_owned),
            key: None,
            value: None,
            headers: Vec::new(),
        }
    }

    #[test]
    fn an_output_to_a_topic_kafka_refuses_is_named() {
        assert_eq!(unpublishable(&[to(None), to(Some("ok.topic_1-x"))]), None);
        assert_eq!(
            unpublishable(&[to(Some("ok")), to(Some("out-site 7/room 2")), to(Some(""))])
                .as_deref(),
            Some(
                "output 1 of 3: topic name \"out-site 7/room 2\" is not valid: use 1 to 249 of the \
                 characters a-z A-Z 0-9 . _ - (the Kafka rule)"
            )
        );
        assert_eq!(
            unpublishable(&[to(Some(""))]).as_deref(),
            Some(
                "output 0 of 1: topic name \"\" is not valid: use 1 to 249 of the characters \
                 a-z A-Z 0-9 . _ - (the Kafka rule)"
            )
        );
        let long = "é".repeat(300);
        let message = unpublishable(&[to(Some(&long))]).unwrap();
        assert!(
            message.ends_with("(the Kafka rule) (600 bytes)"),
            "{message}"
        );
        assert!(
            message.contains(&format!("\"{}…\"", "é".repeat(128))),
            "{message}"
        );
    }
}
