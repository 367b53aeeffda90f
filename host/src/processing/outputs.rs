//! What the run loop hands the component and what it publishes: the WIT
//! event of a record, and each output as a record with its
//! `idempotency-key` header.

use super::idempotency;
use crate::runtime::{Event, Output};
use crate::streams::{LogRecord, Record};

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
