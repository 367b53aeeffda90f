//! The pure types a processor works with. They compile on every target.

use std::str::FromStr;

/// A record header: a name and an opaque value (not necessarily UTF-8).
pub type Header = (String, Vec<u8>);

/// One record read from an input topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The topic the record was read from.
    pub topic: String,
    /// The partition of that topic.
    pub partition: u32,
    /// The record's offset in its partition.
    pub offset: u64,
    /// The record's timestamp in milliseconds since the Unix epoch (UTC).
    pub timestamp_ms: i64,
    /// The record key, if any.
    pub key: Option<Vec<u8>>,
    /// The value; `None` is a tombstone, distinct from an empty value.
    pub value: Option<Vec<u8>>,
    /// Headers in the order they were written; names may repeat.
    pub headers: Vec<Header>,
}

impl Event {
    /// An event on `topic` with `value`, partition 0, offset 0, timestamp 0,
    /// no key and no headers. Meant for unit tests.
    pub fn new(topic: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        Event {
            topic: topic.into(),
            partition: 0,
            offset: 0,
            timestamp_ms: 0,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
        }
    }

    /// The value as UTF-8 text; `None` for a tombstone or a value that is not UTF-8.
    pub fn value_str(&self) -> Option<&str> {
        std::str::from_utf8(self.value.as_deref()?).ok()
    }

    /// The value of the first header called `name`, if any.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// One record to publish.
///
/// The host stamps it with the timestamp of the event it was produced for and
/// with an `idempotency-key` header derived from that event's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// The destination topic; `None` sends it to the processor's configured output.
    pub topic: Option<String>,
    /// The record key, if any.
    pub key: Option<Vec<u8>>,
    /// The value; `None` publishes a tombstone.
    pub value: Option<Vec<u8>>,
    /// Headers, published in this order.
    pub headers: Vec<Header>,
}

impl Output {
    /// An output with `value`, to the default topic, with no key and no headers.
    pub fn new(value: impl Into<Vec<u8>>) -> Self {
        Output {
            topic: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
        }
    }

    /// A tombstone for `key`, to the default topic.
    pub fn tombstone(key: impl Into<Vec<u8>>) -> Self {
        Output {
            topic: None,
            key: Some(key.into()),
            value: None,
            headers: Vec::new(),
        }
    }

    /// Sets the record key.
    pub fn with_key(mut self, key: impl Into<Vec<u8>>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Uses the key of `event` as this output's key.
    pub fn with_key_from(mut self, event: &Event) -> Self {
        self.key = event.key.clone();
        self
    }

    /// Sends this output to `topic` instead of the default output topic.
    pub fn to_topic(mut self, topic: impl Into<String>) -> Self {
        self.topic = Some(topic.into());
        self
    }

    /// Appends a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Why an event could not be processed, and what the host does about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProcessError {
    /// A passing failure (a dependency was busy): the host retries the event with backoff.
    Transient(String),
    /// The event is bad (unparseable, out of range): the host dead-letters it.
    Invalid(String),
    /// The processor cannot continue: the host stops this processor, others go on.
    Fatal(String),
}

impl std::fmt::Display for ProcessError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProcessError::Transient(m) => write!(f, "transient: {m}"),
            ProcessError::Invalid(m) => write!(f, "invalid: {m}"),
            ProcessError::Fatal(m) => write!(f, "fatal: {m}"),
        }
    }
}

impl std::error::Error for ProcessError {}

/// The processor's config: the `config` table of its section in the host's
/// TOML file, every value as a string, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Config {
    entries: Vec<(String, String)>,
}

impl Config {
    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `key` parsed as `T`; `Ok(None)` when the key is not set.
    ///
    /// # Errors
    ///
    /// A message naming the key and the value when the value does not parse.
    pub fn parse<T: FromStr>(&self, key: &str) -> Result<Option<T>, String>
    where
        T::Err: std::fmt::Display,
    {
        self.get(key)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|e| format!("config {key} = {v:?} does not parse: {e}"))
            })
            .transpose()
    }

    /// Every entry, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

impl From<Vec<(String, String)>> for Config {
    fn from(entries: Vec<(String, String)>) -> Self {
        Config { entries }
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for Config {
    fn from_iter<I: IntoIterator<Item = (&'a str, &'a str)>>(iter: I) -> Self {
        Config {
            entries: iter
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
        }
    }
}
