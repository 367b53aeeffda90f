//! The dead-letter record format, shared by processors (see
//! `processing::dlq`) and sinks: the original record byte for byte, then
//! `tidewater-*` headers saying why, who and from where.

use crate::streams::{LogRecord, Record};

/// Header names on dead-lettered records, a processor's, a forward's or a
/// sink's (the original headers come first, unchanged).
pub mod dlq_headers {
    /// Why: `invalid`, `trap`, `timeout`, `memory-limit`, `transient`,
    /// `contract`, `output-count-limit`, `output-bytes-limit`,
    /// `state-key-limit`, `state-value-limit`, `state-bytes-limit`,
    /// `duplicate-key-different-payload`, `no-idempotency-key` (a
    /// processor's dead-letter topic); `refused-by-broker` (a forward's).
    pub const KIND: &str = "tidewater-error-kind";
    /// The error message or trap text.
    pub const MESSAGE: &str = "tidewater-error-message";
    /// The processor's name.
    pub const PROCESSOR: &str = "tidewater-processor";
    /// The SHA-256 of the component version that failed.
    pub const VERSION: &str = "tidewater-version";
    /// How many calls were made for the event.
    pub const ATTEMPTS: &str = "tidewater-attempts";
    /// The input topic.
    pub const TOPIC: &str = "tidewater-source-topic";
    /// The input partition.
    pub const PARTITION: &str = "tidewater-source-partition";
    /// The input offset.
    pub const OFFSET: &str = "tidewater-source-offset";
    /// A sink's dead letters: the PostgreSQL error code (SQLSTATE, e.g.
    /// `23514`) of the statement that refused the record.
    pub const SQLSTATE: &str = "tidewater-sqlstate";
    /// A sink's dead letters: the HTTP status the webhook answered.
    pub const HTTP_STATUS: &str = "tidewater-http-status";
}

/// The dead-letter record for `input`: its key, value and headers byte for
/// byte, then the `tidewater-*` headers of [`dlq_headers`].
pub fn dead_letter(
    input: &LogRecord,
    kind: &str,
    message: &str,
    processor: &str,
    version: &str,
    attempts: u32,
) -> Record {
    use dlq_headers as h;
    let mut record = input.record.clone();
    let extra: [(&str, String); 8] = [
        (h::KIND, kind.to_owned()),
        (h::MESSAGE, message.to_owned()),
        (h::PROCESSOR, processor.to_owned()),
        (h::VERSION, version.to_owned()),
        (h::ATTEMPTS, attempts.to_string()),
        (h::TOPIC, input.topic.clone()),
        (h::PARTITION, input.partition.to_string()),
        (h::OFFSET, input.offset.to_string()),
    ];
    record.headers.extend(
        extra
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.into_bytes())),
    );
    record
}
