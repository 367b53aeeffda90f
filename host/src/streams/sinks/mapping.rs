//! From a JSON record to a table row: each column takes its value from a
//! JSON pointer into the record's value (or from the record itself: its
//! key, a header, its timestamp, topic, partition, offset or idempotency
//! key) and converts it to the column's SQL type.
//!
//! Conversion happens here, before anything is sent to PostgreSQL, so a
//! record that does not fit the mapping is dead-lettered with the column
//! and the reason, and never costs a round trip.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::Value as Json;

use crate::streams::LogRecord;

/// The SQL type of a column, as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqlType {
    /// `text`: a JSON string as is; any other JSON value as its JSON text.
    Text,
    /// `bigint`: a JSON integer, or a string holding one.
    Bigint,
    /// `integer`: a JSON integer within 32 bits, or a string holding one.
    Integer,
    /// `double precision` (write `double`): a JSON number, or a string holding one.
    Double,
    /// `boolean`: `true`/`false`, or the strings `"true"`/`"false"`.
    Boolean,
    /// `timestamptz`: an RFC 3339 string (`2016-02-15T00:00:00Z`), a date
    /// and time without an offset (`2010-03-24 09:51:00`, taken as UTC), or
    /// a JSON integer of milliseconds since the Unix epoch.
    Timestamptz,
    /// `jsonb`: any JSON value, stored as it is.
    Jsonb,
    /// `numeric`: a JSON number or a string holding one, exactly as written.
    Numeric,
}

impl SqlType {
    /// The type's name in SQL (for `CREATE TABLE` and the array casts).
    pub fn sql(self) -> &'static str {
        match self {
            SqlType::Text => "text",
            SqlType::Bigint => "bigint",
            SqlType::Integer => "integer",
            SqlType::Double => "double precision",
            SqlType::Boolean => "boolean",
            SqlType::Timestamptz => "timestamptz",
            SqlType::Jsonb => "jsonb",
            SqlType::Numeric => "numeric",
        }
    }

    /// The names `information_schema.columns.data_type` gives for columns
    /// this type can be written to.
    pub fn accepts(self, data_type: &str) -> bool {
        let ok: &[&str] = match self {
            SqlType::Text => &["text", "character varying", "character"],
            SqlType::Bigint => &["bigint"],
            SqlType::Integer => &["integer"],
            SqlType::Double => &["double precision"],
            SqlType::Boolean => &["boolean"],
            SqlType::Timestamptz => &["timestamp with time zone"],
            SqlType::Jsonb => &["jsonb"],
            SqlType::Numeric => &["numeric"],
        };
        ok.contains(&data_type)
    }
}

/// Where a column's value comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnSource {
    /// A JSON pointer (RFC 6901) into the record's value, e.g. `/device`.
    Pointer(String),
    /// The record's key, as UTF-8 text.
    Key,
    /// The first header of this name, as UTF-8 text.
    Header(String),
    /// The record's timestamp (ms since the Unix epoch).
    Timestamp,
    /// The topic it was read from.
    Topic,
    /// Its partition.
    Partition,
    /// Its offset.
    Offset,
    /// Its idempotency key: the `idempotency-key` header, else
    /// `<topic>/<partition>/<offset>`.
    IdempotencyKey,
}

/// One column of the mapping, as written in the config:
/// `{ name = "device", type = "text", pointer = "/device" }` or
/// `{ name = "seen_at", type = "timestamptz", source = "timestamp" }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// The column's name in the table.
    pub name: String,
    /// Its SQL type.
    #[serde(rename = "type")]
    pub sql_type: SqlType,
    /// A JSON pointer into the record's value. Give this or `source`.
    pub pointer: Option<String>,
    /// `key`, `header:<name>`, `timestamp`, `topic`, `partition`, `offset`
    /// or `idempotency-key`. Give this or `pointer`.
    pub source: Option<String>,
    /// A record without a value for it (absent, or JSON `null`) is
    /// dead-lettered. Key and version columns are always required.
    #[serde(default)]
    pub required: bool,
}

impl ColumnConfig {
    /// Where the value comes from.
    ///
    /// # Errors
    ///
    /// When neither or both of `pointer` and `source` are given, the pointer
    /// does not start with `/`, or the source is unknown.
    pub fn source(&self) -> Result<ColumnSource, String> {
        let ctx = |m: &str| format!("column {:?}: {m}", self.name);
        match (&self.pointer, &self.source) {
            (Some(p), None) if p.starts_with('/') => Ok(ColumnSource::Pointer(p.clone())),
            (Some(p), None) => Err(ctx(&format!(
                "pointer {p:?} is not a JSON pointer: it starts with / (e.g. \"/device\")"
            ))),
            (None, Some(s)) => match s.as_str() {
                "key" => Ok(ColumnSource::Key),
                "timestamp" => Ok(ColumnSource::Timestamp),
                "topic" => Ok(ColumnSource::Topic),
                "partition" => Ok(ColumnSource::Partition),
                "offset" => Ok(ColumnSource::Offset),
                "idempotency-key" => Ok(ColumnSource::IdempotencyKey),
                h if h.starts_with("header:") && h.len() > 7 => {
                    Ok(ColumnSource::Header(h[7..].to_owned()))
                }
                other => Err(ctx(&format!(
                    "source {other:?} is unknown: use key, header:<name>, timestamp, topic, partition, offset or idempotency-key"
                ))),
            },
            _ => Err(ctx("give exactly one of pointer and source")),
        }
    }
}

/// One value of a row, converted to its column's type.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    /// SQL `NULL`.
    Null,
    /// `text`.
    Text(String),
    /// `bigint`.
    Bigint(i64),
    /// `integer`.
    Integer(i32),
    /// `double precision`.
    Double(f64),
    /// `boolean`.
    Boolean(bool),
    /// `timestamptz`.
    Timestamptz(DateTime<Utc>),
    /// `jsonb`.
    Jsonb(Json),
    /// `numeric`, as its decimal text.
    Numeric(String),
}

impl SqlValue {
    /// Orders two values of one column (for the version column). `None`
    /// when they cannot be compared (a `NULL`, or `jsonb`).
    pub fn compare(&self, other: &SqlValue) -> Option<std::cmp::Ordering> {
        use SqlValue as V;
        match (self, other) {
            (V::Text(a), V::Text(b)) => Some(a.cmp(b)),
            (V::Bigint(a), V::Bigint(b)) => Some(a.cmp(b)),
            (V::Integer(a), V::Integer(b)) => Some(a.cmp(b)),
            (V::Double(a), V::Double(b)) => a.partial_cmp(b),
            (V::Boolean(a), V::Boolean(b)) => Some(a.cmp(b)),
            (V::Timestamptz(a), V::Timestamptz(b)) => Some(a.cmp(b)),
            (V::Numeric(a), V::Numeric(b)) => {
                a.parse::<f64>().ok()?.partial_cmp(&b.parse::<f64>().ok()?)
            }
            _ => None,
        }
    }

    /// Appends bytes that are equal for equal values (for grouping rows by
    /// key): a tag, then a fixed-size number or a length-prefixed text, so
    /// that no two sequences of values give the same bytes.
    fn identity(&self, out: &mut Vec<u8>) {
        let text = |out: &mut Vec<u8>, tag: u8, s: &[u8]| {
            out.push(tag);
            out.extend_from_slice(&(s.len() as u64).to_le_bytes());
            out.extend_from_slice(s);
        };
        let number = |out: &mut Vec<u8>, tag: u8, n: i64| {
            out.push(tag);
            out.extend_from_slice(&n.to_le_bytes());
        };
        match self {
            SqlValue::Null => out.push(b'n'),
            SqlValue::Text(s) | SqlValue::Numeric(s) => text(out, b's', s.as_bytes()),
            SqlValue::Bigint(i) => number(out, b'i', *i),
            SqlValue::Integer(i) => number(out, b'i', i64::from(*i)),
            SqlValue::Double(f) => number(out, b'f', f.to_bits() as i64),
            SqlValue::Boolean(b) => number(out, b'b', i64::from(*b)),
            SqlValue::Timestamptz(t) => number(out, b't', t.timestamp_micros()),
            SqlValue::Jsonb(j) => text(out, b'j', j.to_string().as_bytes()),
        }
    }
}

/// Why a record does not fit the mapping.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MappingError(pub String);

/// A row: one value per column of the mapping, in its order.
pub type Row = Vec<SqlValue>;

/// The columns of a table and how each is filled; see the module docs.
#[derive(Debug, Clone)]
pub struct Mapping {
    columns: Vec<(ColumnConfig, ColumnSource)>,
    /// The reference tokens of each column's pointer (unescaped), split
    /// once here rather than at every record; empty for other sources.
    tokens: Vec<Vec<String>>,
    /// Indexes of the columns that must have a value.
    required: Vec<usize>,
    /// Indexes of the key columns: all a tombstone has.
    key: Vec<usize>,
}

impl Mapping {
    /// The mapping of `columns`; `required` names the columns (version,
    /// idempotency) that must have a value besides those marked so and the
    /// `key` columns (which identify a row, also for a tombstone).
    ///
    /// # Errors
    ///
    /// A column without a valid source, or a name given twice.
    pub fn new(
        columns: &[ColumnConfig],
        required: &[&str],
        key: &[&str],
    ) -> Result<Mapping, String> {
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        let mut req = Vec::new();
        let mut keys = Vec::new();
        let mut tokens = Vec::new();
        for (i, c) in columns.iter().enumerate() {
            if !seen.insert(c.name.as_str()) {
                return Err(format!("column {:?} is mapped twice", c.name));
            }
            let is_key = key.contains(&c.name.as_str());
            if c.required || is_key || required.contains(&c.name.as_str()) {
                req.push(i);
            }
            if is_key {
                keys.push(i);
            }
            let source = c.source()?;
            tokens.push(match &source {
                ColumnSource::Pointer(p) => pointer_tokens(p),
                _ => Vec::new(),
            });
            out.push((c.clone(), source));
        }
        Ok(Mapping {
            columns: out,
            tokens,
            required: req,
            key: keys,
        })
    }

    /// The columns, in order.
    pub fn columns(&self) -> impl Iterator<Item = &ColumnConfig> {
        self.columns.iter().map(|(c, _)| c)
    }

    /// The index of column `name`.
    pub fn index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|(c, _)| c.name == name)
    }

    /// `record` as a row. For a tombstone (`value` absent) only the key
    /// columns are filled (the others are `NULL`), and their pointers read
    /// the record's key as JSON, so a tombstone keyed `{"device":"A"}`
    /// names the row of device A.
    ///
    /// # Errors
    ///
    /// [`MappingError`] naming the column: the value is not JSON, a required
    /// value is missing, or a value does not convert to the column's type.
    pub fn row(&self, record: &LogRecord) -> Result<Row, MappingError> {
        let doc: Option<Json> = match (&record.record.value, &record.record.key) {
            (Some(v), _) => Some(
                serde_json::from_slice(v)
                    .map_err(|e| MappingError(format!("the value is not JSON: {e}")))?,
            ),
            (None, Some(k)) => serde_json::from_slice(k).ok(),
            (None, None) => None,
        };
        let tombstone = record.record.value.is_none();
        let required = if tombstone { &self.key } else { &self.required };
        let mut row = Vec::with_capacity(self.columns.len());
        for (i, (c, source)) in self.columns.iter().enumerate() {
            if tombstone && !self.key.contains(&i) {
                row.push(SqlValue::Null);
                continue;
            }
            let raw = raw_value(source, &self.tokens[i], record, doc.as_ref());
            let v = convert(raw, c.sql_type).map_err(|e| {
                MappingError(format!("column {:?} ({}): {e}", c.name, describe(source)))
            })?;
            if v == SqlValue::Null && required.contains(&i) {
                return Err(MappingError(format!(
                    "column {:?} needs a value and {} has none",
                    c.name,
                    describe(source)
                )));
            }
            row.push(v);
        }
        Ok(row)
    }

    /// The identity of `row`'s values in the columns `indexes` (equal for
    /// equal values), for grouping rows by key.
    pub fn identity(row: &Row, indexes: &[usize]) -> Vec<u8> {
        let mut out = Vec::new();
        for &i in indexes {
            row[i].identity(&mut out);
        }
        out
    }
}

/// The idempotency key of `record`: its `idempotency-key` header, else
/// `<topic>/<partition>/<offset>`.
pub fn idempotency_key(record: &LogRecord) -> String {
    match record.record.header("idempotency-key") {
        Some(k) => String::from_utf8_lossy(k).into_owned(),
        None => format!("{}/{}/{}", record.topic, record.partition, record.offset),
    }
}

/// A source as people read it, for messages.
fn describe(source: &ColumnSource) -> String {
    match source {
        ColumnSource::Pointer(p) => format!("pointer {p}"),
        ColumnSource::Header(h) => format!("header {h}"),
        ColumnSource::Key => "the record key".into(),
        ColumnSource::Timestamp => "the timestamp".into(),
        ColumnSource::Topic => "the topic".into(),
        ColumnSource::Partition => "the partition".into(),
        ColumnSource::Offset => "the offset".into(),
        ColumnSource::IdempotencyKey => "the idempotency key".into(),
    }
}

/// A raw value before conversion: JSON from the value, or text/numbers
/// from the record itself.
enum Raw<'a> {
    Missing,
    Json(&'a Json),
    Text(String),
    Int(i64),
}

/// The reference tokens of the JSON pointer `pointer` (which starts with
/// `/`), unescaped (`~1` is `/`, `~0` is `~`).
fn pointer_tokens(pointer: &str) -> Vec<String> {
    pointer
        .split('/')
        .skip(1)
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// The value at `tokens` in `doc`: what [`Json::pointer`] finds for the
/// pointer they were split from.
fn lookup<'a>(doc: &'a Json, tokens: &[String]) -> Option<&'a Json> {
    tokens.iter().try_fold(doc, |at, token| match at {
        Json::Object(map) => map.get(token),
        Json::Array(list) => array_index(token).and_then(|i| list.get(i)),
        _ => None,
    })
}

/// `token` as an array index: decimal digits, without a leading zero.
fn array_index(token: &str) -> Option<usize> {
    if token.starts_with('+') || (token.starts_with('0') && token.len() != 1) {
        return None;
    }
    token.parse().ok()
}

/// `tokens`: those of the source's pointer (see [`pointer_tokens`]).
fn raw_value<'a>(
    source: &ColumnSource,
    tokens: &[String],
    record: &'a LogRecord,
    doc: Option<&'a Json>,
) -> Raw<'a> {
    let text = |b: Option<&[u8]>| {
        b.map_or(Raw::Missing, |b| {
            Raw::Text(String::from_utf8_lossy(b).into_owned())
        })
    };
    match source {
        ColumnSource::Pointer(_) => match doc.and_then(|d| lookup(d, tokens)) {
            Some(v) => Raw::Json(v),
            None => Raw::Missing,
        },
        ColumnSource::Key => text(record.record.key.as_deref()),
        ColumnSource::Header(h) => text(record.record.header(h)),
        ColumnSource::Timestamp => Raw::Int(record.record.timestamp_ms),
        ColumnSource::Topic => Raw::Text(record.topic.clone()),
        ColumnSource::Partition => Raw::Int(i64::from(record.partition)),
        ColumnSource::Offset => Raw::Int(record.offset as i64),
        ColumnSource::IdempotencyKey => Raw::Text(idempotency_key(record)),
    }
}

/// Converts `raw` to `t`; see [`SqlType`] for what each accepts.
fn convert(raw: Raw<'_>, t: SqlType) -> Result<SqlValue, String> {
    let json = match raw {
        Raw::Missing | Raw::Json(Json::Null) => return Ok(SqlValue::Null),
        Raw::Json(j) => j,
        Raw::Int(i) => return convert_int(i, t),
        Raw::Text(s) => return convert_text(&s, t),
    };
    match (t, json) {
        (SqlType::Jsonb, j) => Ok(SqlValue::Jsonb(j.clone())),
        (SqlType::Text, Json::String(s)) => Ok(SqlValue::Text(s.clone())),
        (SqlType::Text, j) => Ok(SqlValue::Text(j.to_string())),
        (_, Json::String(s)) => convert_text(s, t),
        (_, Json::Number(n)) => match n.as_i64() {
            Some(i) => convert_int(i, t),
            None if matches!(t, SqlType::Double) => {
                Ok(SqlValue::Double(n.as_f64().unwrap_or(f64::NAN)))
            }
            None if matches!(t, SqlType::Numeric) => Ok(SqlValue::Numeric(n.to_string())),
            None => Err(format!(
                "{n} is not a whole number of the range of {}",
                t.sql()
            )),
        },
        (SqlType::Boolean, Json::Bool(b)) => Ok(SqlValue::Boolean(*b)),
        (_, j) => Err(format!("{} does not convert to {}", kind(j), t.sql())),
    }
}

fn kind(j: &Json) -> &'static str {
    match j {
        Json::Null => "null",
        Json::Bool(_) => "a boolean",
        Json::Number(_) => "a number",
        Json::String(_) => "a string",
        Json::Array(_) => "an array",
        Json::Object(_) => "an object",
    }
}

fn convert_int(i: i64, t: SqlType) -> Result<SqlValue, String> {
    Ok(match t {
        SqlType::Text => SqlValue::Text(i.to_string()),
        SqlType::Bigint => SqlValue::Bigint(i),
        SqlType::Integer => SqlValue::Integer(
            i32::try_from(i).map_err(|_| format!("{i} is out of the range of integer"))?,
        ),
        SqlType::Double => SqlValue::Double(i as f64),
        SqlType::Numeric => SqlValue::Numeric(i.to_string()),
        SqlType::Jsonb => SqlValue::Jsonb(Json::from(i)),
        SqlType::Timestamptz => SqlValue::Timestamptz(
            DateTime::from_timestamp_millis(i)
                .ok_or_else(|| format!("{i} ms is out of the range of timestamptz"))?,
        ),
        SqlType::Boolean => return Err(format!("{i} is not a boolean")),
    })
}

fn convert_text(s: &str, t: SqlType) -> Result<SqlValue, String> {
    let bad = || format!("{s:?} does not convert to {}", t.sql());
    Ok(match t {
        SqlType::Text => SqlValue::Text(s.to_owned()),
        SqlType::Bigint => SqlValue::Bigint(s.trim().parse().map_err(|_| bad())?),
        SqlType::Integer => SqlValue::Integer(s.trim().parse().map_err(|_| bad())?),
        SqlType::Double => SqlValue::Double(s.trim().parse().map_err(|_| bad())?),
        SqlType::Boolean => match s.trim() {
            "true" => SqlValue::Boolean(true),
            "false" => SqlValue::Boolean(false),
            _ => return Err(bad()),
        },
        SqlType::Numeric => {
            let s = s.trim();
            s.parse::<f64>().map_err(|_| bad())?;
            SqlValue::Numeric(s.to_owned())
        }
        SqlType::Timestamptz => SqlValue::Timestamptz(parse_time(s.trim()).ok_or_else(|| {
            format!("{s:?} is not a time (RFC 3339, or YYYY-MM-DD HH:MM:SS[.fff] taken as UTC)")
        })?),
        SqlType::Jsonb => SqlValue::Jsonb(serde_json::from_str(s).map_err(|_| bad())?),
    })
}

/// An RFC 3339 time, or a date and time without an offset (`T` or a space
/// between them, optional fractions of a second), taken as UTC, as devices
/// and CSV files often write it.
fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| chrono::NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc())
}

/// Groups `items` by their key and keeps one per key, as `wins(old, new)`
/// says (it gets the kept item and the next one, in order). Returns the
/// kept items in the order of their first appearance, and how many were
/// dropped.
pub fn compact<K: Eq + std::hash::Hash, T>(
    items: Vec<(K, T)>,
    wins: impl Fn(&T, &T) -> bool,
) -> (Vec<T>, usize) {
    let mut at: HashMap<K, usize> = HashMap::with_capacity(items.len());
    let mut kept: Vec<T> = Vec::with_capacity(items.len());
    let mut dropped = 0;
    for (key, item) in items {
        match at.get(&key) {
            Some(&i) => {
                if wins(&kept[i], &item) {
                    kept[i] = item;
                }
                dropped += 1;
            }
            None => {
                at.insert(key, kept.len());
                kept.push(item);
            }
        }
    }
    (kept, dropped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::Record;

    fn rec(value: &str) -> LogRecord {
        LogRecord {
            topic: "t".into(),
            partition: 1,
            offset: 7,
            append_ms: 0,
            record: Record {
                timestamp_ms: 1_455_494_400_000,
                key: Some(b"k1".to_vec()),
                value: Some(value.as_bytes().to_vec()),
                headers: vec![("idempotency-key".into(), b"abc/enrich/0".to_vec())],
            },
        }
    }

    fn col(name: &str, t: &str, pointer: Option<&str>, source: Option<&str>) -> ColumnConfig {
        ColumnConfig {
            name: name.into(),
            sql_type: serde_json::from_value(Json::String(t.into())).unwrap(),
            pointer: pointer.map(str::to_owned),
            source: source.map(str::to_owned),
            required: false,
        }
    }

    #[test]
    fn a_reading_maps_to_typed_values() {
        let m = Mapping::new(
            &[
                col("device", "text", Some("/device"), None),
                col("ts", "timestamptz", Some("/ts"), None),
                col("t", "double", Some("/m/temperature_c"), None),
                col("n", "bigint", Some("/n"), None),
                col("m", "jsonb", Some("/m"), None),
                col("ok", "boolean", Some("/ok"), None),
                col("price", "numeric", Some("/price"), None),
                col("missing", "text", Some("/nope"), None),
                col("k", "text", None, Some("key")),
                col("at", "timestamptz", None, Some("timestamp")),
                col("ik", "text", None, Some("idempotency-key")),
                col("off", "bigint", None, Some("offset")),
            ],
            &[],
            &["device"],
        )
        .unwrap();
        let row = m
            .row(&rec(r#"{"device":"A","ts":"2016-02-15T00:00:00Z","m":{"temperature_c":4.5},"n":"12","ok":true,"price":1.10}"#))
            .unwrap();
        let ts = DateTime::parse_from_rfc3339("2016-02-15T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            row,
            vec![
                SqlValue::Text("A".into()),
                SqlValue::Timestamptz(ts),
                SqlValue::Double(4.5),
                SqlValue::Bigint(12),
                SqlValue::Jsonb(serde_json::json!({"temperature_c": 4.5})),
                SqlValue::Boolean(true),
                // A JSON number passes through f64: its shortest text, not its digits.
                SqlValue::Numeric("1.1".into()),
                SqlValue::Null,
                SqlValue::Text("k1".into()),
                SqlValue::Timestamptz(ts),
                SqlValue::Text("abc/enrich/0".into()),
                SqlValue::Bigint(7),
            ]
        );
    }

    #[test]
    fn what_does_not_fit_names_the_column() {
        let m = Mapping::new(
            &[
                col("device", "text", Some("/device"), None),
                col("n", "integer", Some("/n"), None),
            ],
            &[],
            &["device"],
        )
        .unwrap();
        let err = |v: &str| m.row(&rec(v)).unwrap_err().0;
        assert_eq!(
            err(r#"{"n":1}"#),
            "column \"device\" needs a value and pointer /device has none"
        );
        assert_eq!(
            err(r#"{"device":"A","n":"x"}"#),
            "column \"n\" (pointer /n): \"x\" does not convert to integer"
        );
        assert_eq!(
            err(r#"{"device":"A","n":5000000000}"#),
            "column \"n\" (pointer /n): 5000000000 is out of the range of integer"
        );
        assert_eq!(
            err(r#"{"device":"A","n":[1]}"#),
            "column \"n\" (pointer /n): an array does not convert to integer"
        );
        assert!(err("not json").starts_with("the value is not JSON"));
    }

    #[test]
    fn times_without_an_offset_are_utc() {
        let utc = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        assert_eq!(
            parse_time("2010-03-24 09:51:00"),
            Some(utc("2010-03-24T09:51:00Z"))
        );
        assert_eq!(
            parse_time("2010-03-24T09:51:00.250"),
            Some(utc("2010-03-24T09:51:00.25Z"))
        );
        assert_eq!(
            parse_time("2016-02-15T01:00:00+01:00"),
            Some(utc("2016-02-15T00:00:00Z"))
        );
        assert_eq!(parse_time("24/03/2010"), None);
    }

    #[test]
    fn a_tombstone_reads_pointers_from_its_key() {
        let m = Mapping::new(
            &[
                col("device", "text", Some("/device"), None),
                col("v", "bigint", Some("/v"), None),
            ],
            &["v"],
            &["device"],
        )
        .unwrap();
        let mut r = rec("{}");
        r.record.value = None;
        r.record.key = Some(br#"{"device":"A"}"#.to_vec());
        assert_eq!(
            m.row(&r).unwrap(),
            vec![SqlValue::Text("A".into()), SqlValue::Null]
        );
        r.record.key = Some(b"A".to_vec());
        assert_eq!(
            m.row(&r).unwrap_err().0,
            "column \"device\" needs a value and pointer /device has none"
        );
    }

    #[test]
    fn sources_are_checked() {
        let bad = |p: Option<&str>, s: Option<&str>| col("c", "text", p, s).source().unwrap_err();
        assert!(bad(Some("device"), None).contains("starts with /"));
        assert!(bad(None, Some("value")).contains("source \"value\" is unknown"));
        assert!(bad(None, None).contains("exactly one of pointer and source"));
        assert_eq!(
            col("c", "text", None, Some("header:trace"))
                .source()
                .unwrap(),
            ColumnSource::Header("trace".into())
        );
    }

    proptest::proptest! {
        /// A pointer split once finds what `serde_json` finds for it.
        #[test]
        fn pointers_split_once_find_what_serde_json_finds(
            tokens in proptest::collection::vec("[ab/~01+]{0,3}", 0..4)
        ) {
            let doc = serde_json::json!({
                "a": {"b": [10, {"~": 11, "/": 12, "": 13}], "0": 14},
                "a/b": 15, "~1": 16, "": [17, 18],
                "b": [[19], [20, 21]],
            });
            let pointer: String = tokens
                .iter()
                .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
                .collect();
            let raw: String = tokens.iter().map(|t| format!("/{t}")).collect();
            for p in [pointer, raw] {
                proptest::prop_assert_eq!(lookup(&doc, &pointer_tokens(&p)), doc.pointer(&p), "{}", p);
            }
        }
    }

    #[test]
    fn identities_are_equal_exactly_for_equal_values() {
        let id = |values: Vec<SqlValue>| {
            let indexes: Vec<usize> = (0..values.len()).collect();
            Mapping::identity(&values, &indexes)
        };
        let text = |s: &str| SqlValue::Text(s.into());
        assert_eq!(
            id(vec![text("a"), SqlValue::Bigint(7)]),
            id(vec![text("a"), SqlValue::Integer(7)])
        );
        assert_ne!(
            id(vec![text("a"), text("b")]),
            id(vec![text("ab"), text("")])
        );
        assert_ne!(id(vec![text("")]), id(vec![SqlValue::Null]));
        assert_ne!(
            id(vec![SqlValue::Bigint(1)]),
            id(vec![SqlValue::Boolean(true)])
        );
    }

    #[test]
    fn compaction_keeps_the_winner_in_first_place() {
        let items = vec![
            ("a".to_string(), (1, 10)),
            ("b".to_string(), (2, 5)),
            ("a".to_string(), (3, 20)),
            ("a".to_string(), (4, 15)),
        ];
        // The higher second field wins.
        let (kept, dropped) = compact(items, |old, new| new.1 > old.1);
        assert_eq!(kept, vec![(3, 20), (2, 5)]);
        assert_eq!(dropped, 2);
    }
}
