//! Turning bytes that devices send into records: newline-delimited JSON, a
//! JSON array or object, raw lines, and the envelope form that carries a
//! record's key, timestamp and headers with its value. `tidewater produce`
//! and the HTTP endpoint read with the same code, so a line is good or bad
//! the same way on both.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;
use serde_json::value::RawValue;

use super::times::parse_time_ms;
use crate::streams::{Header, Record};

/// How a body (or a file) holds its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One JSON value per line (NDJSON / JSON Lines); blank lines are skipped.
    Ndjson,
    /// One JSON document: an array (each element a record) or any other
    /// value (one record).
    Json,
    /// One record per line, its bytes as given (a trailing `\r` is taken
    /// off); blank lines are skipped.
    Raw,
    /// The whole body is one record, its bytes as given.
    Bytes,
}

/// How each record's key, timestamp and headers are found.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    /// Each record is an envelope (see [`Envelope`]) rather than a bare value.
    pub envelope: bool,
    /// A JSON pointer (RFC 6901) to the key in each value, e.g. `/device`.
    pub key_pointer: Option<String>,
    /// A fixed key for every record (when no pointer or envelope gives one).
    pub key: Option<Vec<u8>>,
    /// A JSON pointer to the record's time (RFC 3339 text or epoch ms).
    pub timestamp_pointer: Option<String>,
    /// Headers every record gets, in order.
    pub headers: Vec<Header>,
    /// The largest value accepted, in bytes.
    pub max_record_bytes: usize,
}

/// A record that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// The 1-based line it starts on.
    pub line: u64,
    /// What is wrong.
    pub reason: String,
    /// Its bytes as sent.
    pub raw: Vec<u8>,
    /// Whether it is bad only for being over `max_record_bytes`.
    pub too_large: bool,
}

/// The envelope form of a record (`Shape::envelope`): a JSON object with
/// `value` (any JSON, stored as written) or `value_base64` (bytes), and
/// optional `key` (text), `timestamp` (epoch ms or RFC 3339 text) and
/// `headers` (an object of text values, or an array of `[name, value]`
/// pairs to keep order and repeats). Unknown fields are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope<'a> {
    /// The key.
    pub key: Option<String>,
    /// The value as JSON text, byte for byte.
    #[serde(borrow)]
    pub value: Option<&'a RawValue>,
    /// The value as base64 bytes.
    pub value_base64: Option<String>,
    /// Epoch ms or RFC 3339 text.
    pub timestamp: Option<Value>,
    /// The headers.
    pub headers: Option<EnvelopeHeaders>,
}

/// The headers of an [`Envelope`].
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum EnvelopeHeaders {
    /// `[["name", "value"], ...]`: order and repeats kept.
    Pairs(Vec<(String, String)>),
    /// `{"name": "value", ...}`.
    Map(std::collections::BTreeMap<String, String>),
}

/// Reads the records of `body` in `format`, shaped by `shape`, calling
/// `each` with every record or [`BadLine`] in order; records without a
/// time get `now_ms`.
pub fn parse(
    body: &[u8],
    format: Format,
    shape: &Shape,
    now_ms: i64,
    mut each: impl FnMut(Result<Record, BadLine>),
) {
    match format {
        Format::Ndjson | Format::Raw => {
            for (i, line) in body.split(|&b| b == b'\n').enumerate() {
                if let Some(r) = parse_line(line, i as u64 + 1, format, shape, now_ms) {
                    each(r);
                }
            }
        }
        Format::Bytes => each(raw_record(body, 1, shape, now_ms)),
        Format::Json => parse_json_document(body, shape, now_ms, each),
    }
}

/// One line (number `n`, its `\n` taken off) of an [`Format::Ndjson`] or
/// [`Format::Raw`] stream: `None` when it is blank.
pub fn parse_line(
    line: &[u8],
    n: u64,
    format: Format,
    shape: &Shape,
    now_ms: i64,
) -> Option<Result<Record, BadLine>> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(if format == Format::Raw {
        raw_record(line, n, shape, now_ms)
    } else {
        json_record(line, n, shape, now_ms)
    })
}

/// A JSON document: each element of an array is a record, any other value
/// is one record.
fn parse_json_document(
    body: &[u8],
    shape: &Shape,
    now_ms: i64,
    mut each: impl FnMut(Result<Record, BadLine>),
) {
    let bad = |line: u64, reason: String| BadLine {
        line,
        reason,
        raw: body.to_vec(),
        too_large: false,
    };
    let first = body.iter().position(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|i| body[i] == b'[') {
        match serde_json::from_slice::<Vec<&RawValue>>(body) {
            Ok(items) => {
                for item in items {
                    let text = item.get().as_bytes();
                    let offset = text.as_ptr() as usize - body.as_ptr() as usize;
                    let line = body[..offset].iter().filter(|&&b| b == b'\n').count() as u64 + 1;
                    each(json_record(text, line, shape, now_ms));
                }
            }
            Err(e) => each(Err(bad(e.line() as u64, format!("not JSON: {e}")))),
        }
        return;
    }
    let start_line = first.map_or(1, |i| body[..i].iter().filter(|&&b| b == b'\n').count() + 1);
    let trimmed = body.trim_ascii();
    each(json_record(trimmed, start_line as u64, shape, now_ms));
}

/// A raw line (or body): its bytes are the value.
fn raw_record(bytes: &[u8], line: u64, shape: &Shape, now_ms: i64) -> Result<Record, BadLine> {
    if bytes.len() > shape.max_record_bytes {
        return Err(too_large(bytes, line, shape));
    }
    Ok(Record {
        timestamp_ms: now_ms,
        key: shape.key.clone(),
        value: Some(bytes.to_vec()),
        headers: shape.headers.clone(),
    })
}

fn too_large(bytes: &[u8], line: u64, shape: &Shape) -> BadLine {
    BadLine {
        line,
        reason: format!(
            "the record is {} bytes, the limit is {} bytes",
            bytes.len(),
            shape.max_record_bytes
        ),
        raw: bytes[..bytes.len().min(1024)].to_vec(),
        too_large: true,
    }
}

/// One JSON value (a line, or an element of an array), as a record.
fn json_record(text: &[u8], line: u64, shape: &Shape, now_ms: i64) -> Result<Record, BadLine> {
    let text = text.trim_ascii();
    let bad = |reason: String| BadLine {
        line,
        reason,
        raw: text.to_vec(),
        too_large: false,
    };
    if shape.envelope {
        return envelope_record(text, shape, now_ms).map_err(bad);
    }
    if text.len() > shape.max_record_bytes {
        return Err(too_large(text, line, shape));
    }
    let mut record = Record {
        timestamp_ms: now_ms,
        key: shape.key.clone(),
        value: None,
        headers: shape.headers.clone(),
    };
    if shape.key_pointer.is_some() || shape.timestamp_pointer.is_some() {
        let v: Value = serde_json::from_slice(text).map_err(|e| bad(not_json(&e)))?;
        if let Some(p) = &shape.key_pointer {
            record.key = Some(key_at(&v, p).map_err(bad)?);
        }
        if let Some(p) = &shape.timestamp_pointer {
            record.timestamp_ms = time_at(&v, p).map_err(bad)?;
        }
    } else {
        serde_json::from_slice::<IgnoredAny>(text).map_err(|e| bad(not_json(&e)))?;
    }
    record.value = Some(text.to_vec());
    Ok(record)
}

fn not_json(e: &serde_json::Error) -> String {
    match e.classify() {
        serde_json::error::Category::Eof => format!("not JSON: the value ends early ({e})"),
        _ if e.to_string().starts_with("trailing characters") => format!(
            "not JSON: more than one value on the line, or text after the value (column {})",
            e.column()
        ),
        _ => format!("not JSON: {e}"),
    }
}

/// The key at `pointer`: a string's text, or a number or boolean as written.
fn key_at(v: &Value, pointer: &str) -> Result<Vec<u8>, String> {
    match v.pointer(pointer) {
        Some(Value::String(s)) => Ok(s.clone().into_bytes()),
        Some(n @ (Value::Number(_) | Value::Bool(_))) => Ok(n.to_string().into_bytes()),
        Some(other) => Err(format!(
            "the key at {pointer} is {}, not a string or number",
            kind(other)
        )),
        None => Err(format!("no key at {pointer}")),
    }
}

/// The time at `pointer`, in ms since the Unix epoch.
fn time_at(v: &Value, pointer: &str) -> Result<i64, String> {
    match v.pointer(pointer) {
        Some(t) => time_of(t).map_err(|e| format!("the time at {pointer}: {e}")),
        None => Err(format!("no time at {pointer}")),
    }
}

/// Epoch ms (a number) or RFC 3339 text.
fn time_of(t: &Value) -> Result<i64, String> {
    match t {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
            .ok_or_else(|| format!("{n} is not a time in ms")),
        Value::String(s) => parse_time_ms(s),
        other => Err(format!(
            "it is {}, not epoch ms or RFC 3339 text",
            kind(other)
        )),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An envelope as a record.
fn envelope_record(text: &[u8], shape: &Shape, now_ms: i64) -> Result<Record, String> {
    let env: Envelope<'_> = serde_json::from_slice(text).map_err(|e| {
        format!(
            "not an envelope ({{\"key\", \"value\" or \"value_base64\", \"timestamp\", \"headers\"}}): {e}"
        )
    })?;
    let value = match (env.value, &env.value_base64) {
        (Some(v), None) => Some(v.get().as_bytes().to_vec()),
        (None, Some(b)) => Some(
            base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b)
                .map_err(|e| format!("value_base64 is not base64: {e}"))?,
        ),
        (None, None) => None,
        (Some(_), Some(_)) => return Err("an envelope has value or value_base64, not both".into()),
    };
    if let Some(v) = &value
        && v.len() > shape.max_record_bytes
    {
        return Err(format!(
            "the record is {} bytes, the limit is {} bytes",
            v.len(),
            shape.max_record_bytes
        ));
    }
    let parsed = match (&shape.key_pointer, &shape.timestamp_pointer, &env.value) {
        (None, None, _) | (_, _, None) => None,
        (_, _, Some(v)) => serde_json::from_str::<Value>(v.get()).ok(),
    };
    let key = match (env.key, &shape.key_pointer, &parsed) {
        (Some(k), _, _) => Some(k.into_bytes()),
        (None, Some(p), Some(v)) => Some(key_at(v, p)?),
        _ => shape.key.clone(),
    };
    let timestamp_ms = match (&env.timestamp, &shape.timestamp_pointer, &parsed) {
        (Some(t), _, _) => time_of(t).map_err(|e| format!("timestamp: {e}"))?,
        (None, Some(p), Some(v)) => time_at(v, p)?,
        _ => now_ms,
    };
    let mut headers = shape.headers.clone();
    match env.headers {
        Some(EnvelopeHeaders::Pairs(p)) => {
            headers.extend(p.into_iter().map(|(n, v)| (n, v.into_bytes())))
        }
        Some(EnvelopeHeaders::Map(m)) => {
            headers.extend(m.into_iter().map(|(n, v)| (n, v.into_bytes())))
        }
        None => {}
    }
    Ok(Record {
        timestamp_ms,
        key,
        value,
        headers,
    })
}

/// `record` as an envelope line (no newline): what `tidewater produce`
/// sends to a running host, so that the host stores the same key, value,
/// headers and timestamp as a local append would. Headers that are not
/// UTF-8 are sent lossily (a `-H` header is text).
pub fn to_envelope(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + record.value.as_ref().map_or(0, Vec::len));
    out.extend_from_slice(b"{\"timestamp\":");
    out.extend_from_slice(record.timestamp_ms.to_string().as_bytes());
    if let Some(k) = &record.key {
        out.extend_from_slice(b",\"key\":");
        out.extend_from_slice(
            serde_json::Value::from(String::from_utf8_lossy(k))
                .to_string()
                .as_bytes(),
        );
    }
    if !record.headers.is_empty() {
        let pairs: Vec<(&str, String)> = record
            .headers
            .iter()
            .map(|(n, v)| (n.as_str(), String::from_utf8_lossy(v).into_owned()))
            .collect();
        out.extend_from_slice(b",\"headers\":");
        out.extend(serde_json::to_vec(&pairs).unwrap_or_default());
    }
    if let Some(v) = &record.value {
        let json = serde_json::from_slice::<IgnoredAny>(v).is_ok()
            && std::str::from_utf8(v).is_ok_and(|s| s.trim() == s);
        if json {
            out.extend_from_slice(b",\"value\":");
            out.extend_from_slice(v);
        } else {
            out.extend_from_slice(b",\"value_base64\":\"");
            out.extend(
                base64::Engine::encode(&base64::engine::general_purpose::STANDARD, v).into_bytes(),
            );
            out.push(b'"');
        }
    }
    out.push(b'}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape {
        Shape {
            max_record_bytes: 1 << 20,
            ..Shape::default()
        }
    }

    fn all(body: &[u8], format: Format, shape: &Shape) -> Vec<Result<Record, BadLine>> {
        let mut out = Vec::new();
        parse(body, format, shape, 7, |r| out.push(r));
        out
    }

    #[test]
    fn ndjson_lines_keep_their_bytes_and_bad_lines_their_numbers() {
        let s = Shape {
            key_pointer: Some("/device".into()),
            timestamp_pointer: Some("/ts".into()),
            ..shape()
        };
        let body = b"{\"device\":\"a\",\"ts\":\"2016-02-15T00:00:00Z\"}\r\n\n{\"a\":1}{\"a\":2}\n{\"device\":7,\"ts\":1000}\n{\"device\":\"b\"\n";
        let got = all(body, Format::Ndjson, &s);
        assert_eq!(got.len(), 4);
        let r = got[0].as_ref().unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"a"[..]));
        assert_eq!(r.timestamp_ms, 1_455_494_400_000);
        assert_eq!(
            r.value.as_deref(),
            Some(&b"{\"device\":\"a\",\"ts\":\"2016-02-15T00:00:00Z\"}"[..])
        );
        let bad = got[1].as_ref().unwrap_err();
        assert_eq!(bad.line, 3);
        assert!(bad.reason.contains("more than one value"), "{}", bad.reason);
        let r = got[2].as_ref().unwrap();
        assert_eq!((r.key.as_deref(), r.timestamp_ms), (Some(&b"7"[..]), 1000));
        let bad = got[3].as_ref().unwrap_err();
        assert_eq!(bad.line, 5);
        assert!(bad.reason.contains("ends early"), "{}", bad.reason);
        let got = all(b"{\"x\":1}\n", Format::Ndjson, &s);
        assert_eq!(got[0].as_ref().unwrap_err().reason, "no key at /device");
    }

    #[test]
    fn a_json_array_is_many_records_and_an_object_one() {
        let got = all(b"[\n {\"a\":1},\n {\"a\":2}\n]", Format::Json, &shape());
        let values: Vec<_> = got
            .iter()
            .map(|r| r.as_ref().unwrap().value.clone().unwrap())
            .collect();
        assert_eq!(values, [b"{\"a\":1}".to_vec(), b"{\"a\":2}".to_vec()]);
        let got = all(b"  {\"a\":1}\n", Format::Json, &shape());
        assert_eq!(
            got[0].as_ref().unwrap().value.as_deref(),
            Some(&b"{\"a\":1}"[..])
        );
        let s = Shape {
            key_pointer: Some("/d".into()),
            ..shape()
        };
        let got = all(b"[{\"d\":\"x\"},\n{\"e\":1}]", Format::Json, &s);
        assert_eq!(got[1].as_ref().unwrap_err().line, 2);
        let got = all(b"[{\"d\":\"x\"},", Format::Json, &s);
        assert!(got[0].as_ref().unwrap_err().reason.starts_with("not JSON"));
    }

    #[test]
    fn envelopes_carry_key_time_headers_and_bytes() {
        let s = Shape {
            envelope: true,
            ..shape()
        };
        let r = Record {
            timestamp_ms: -5,
            key: Some(b"k".to_vec()),
            value: Some(b"\xff\x00raw".to_vec()),
            headers: vec![("h".into(), b"1".to_vec()), ("h".into(), b"2".to_vec())],
        };
        let line = to_envelope(&r);
        let got = all(&line, Format::Ndjson, &s);
        assert_eq!(got[0].as_ref().unwrap(), &r);
        let json = Record {
            value: Some(b"{\"a\": [1, 2]}".to_vec()),
            ..r.clone()
        };
        let got = all(&to_envelope(&json), Format::Ndjson, &s);
        assert_eq!(got[0].as_ref().unwrap(), &json);
        let got = all(b"{\"value\":1,\"colour\":2}", Format::Ndjson, &s);
        assert!(
            got[0]
                .as_ref()
                .unwrap_err()
                .reason
                .contains("unknown field `colour`")
        );
    }

    #[test]
    fn raw_lines_and_limits() {
        let s = Shape {
            max_record_bytes: 3,
            key: Some(b"k".to_vec()),
            ..shape()
        };
        let got = all(b"abc\r\n\nabcd\n", Format::Raw, &s);
        assert_eq!(got[0].as_ref().unwrap().value.as_deref(), Some(&b"abc"[..]));
        let bad = got[1].as_ref().unwrap_err();
        assert_eq!((bad.line, bad.too_large), (3, true));
        assert_eq!(bad.reason, "the record is 4 bytes, the limit is 3 bytes");
    }
}
