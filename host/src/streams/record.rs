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
