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

/// Bytes as JSON: a string when they are UTF-8, else `{"base64": "..."}`
/// (standard alphabet, padded).
pub fn bytes_json(b: &[u8]) -> serde_json::Value {
    use base64::Engine as _;
    match std::str::from_utf8(b) {
        Ok(s) => serde_json::Value::from(s),
        Err(_) => {
            serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) })
        }
    }
}

/// A record as JSON, fields in this order: topic, partition, offset,
/// timestamp_ms, key, headers (`[name, value]` pairs, in order), value;
/// bytes as [`bytes_json`] writes them, a tombstone's value `null`. What
/// `tidewater consume` prints and the admin API returns.
#[derive(Debug, serde::Serialize)]
pub struct JsonRecord<'a> {
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: u32,
    /// The offset.
    pub offset: u64,
    /// The record's timestamp, ms since the Unix epoch.
    pub timestamp_ms: i64,
    /// The key.
    pub key: Option<serde_json::Value>,
    /// The headers, in order.
    pub headers: Vec<(&'a str, serde_json::Value)>,
    /// The value; `None` for a tombstone.
    pub value: Option<serde_json::Value>,
}

impl LogRecord {
    /// This record as [`JsonRecord`].
    pub fn as_json(&self) -> JsonRecord<'_> {
        JsonRecord {
            topic: &self.topic,
            partition: self.partition,
            offset: self.offset,
            timestamp_ms: self.record.timestamp_ms,
            key: self.record.key.as_deref().map(bytes_json),
            headers: self
                .record
                .headers
                .iter()
                .map(|(n, v)| (n.as_str(), bytes_json(v)))
                .collect(),
            value: self.record.value.as_deref().map(bytes_json),
        }
    }
}
