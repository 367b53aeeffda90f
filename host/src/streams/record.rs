//! The record types every stream shares: what a producer writes
//! ([`Record`]) and a record as read back from a partition ([`LogRecord`]).
//! Both logs (embedded and Kafka) carry the same fields byte for byte.

/// A record header: a name and an opaque value. Order and repeats are kept.
pub type Header = (String, Vec<u8>);

/// The content of one record, as written by a producer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    /// Event time, in milliseconds since the Unix epoch (UTC).
    pub timestamp_ms: i64,
    /// The key; it chooses the partition.
    pub key: Option<Vec<u8>>,
    /// The value; `None` is a tombstone.
    pub value: Option<Vec<u8>>,
    /// The headers, in order.
    pub headers: Vec<Header>,
}

impl Record {
    /// The first header called `name`, if any.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// A record as stored in a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The offset in the partition.
    pub offset: u64,
    /// When it was appended, in milliseconds since the Unix epoch (wall clock).
    pub append_ms: u64,
    /// What the producer wrote.
    pub record: Record,
}

/// Header names on dead-lettered records, a processor's or a forward's
/// (the original headers come first, unchanged).
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
}
