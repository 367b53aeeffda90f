//! The webhook sink: each record POSTed to an HTTP endpoint,
//! **at-least-once**, with its idempotency key in the `Idempotency-Key`
//! header so the endpoint can drop a repeat.
//!
//! ```toml
//! [sink.webhook]
//! url = "http://127.0.0.1:8080/readings"
//! format = "record"               # one POST per record; "array": one JSON array per batch
//! timeout = "30s"                 # per request
//! max_retry_after = "10m"         # the longest Retry-After honoured
//! headers = { "Authorization" = "Bearer ..." }
//! ```
//!
//! A request carries the record's value as its body (`Content-Type:
//! application/json`; a tombstone has an empty body and `Tidewater-Tombstone:
//! true`), `Idempotency-Key` (the record's `idempotency-key` header, else
//! `<topic>/<partition>/<offset>`), and `Tidewater-Topic`,
//! `Tidewater-Partition`, `Tidewater-Offset`.
//!
//! What the endpoint answers decides what happens to the record:
//!
//! | answer | the sink |
//! |---|---|
//! | 2xx | moves on |
//! | 429, 5xx, 408, no answer, a broken connection | retries it with backoff, waiting at least what `Retry-After` says (seconds or an HTTP date) |
//! | 401, 403, 3xx | holds its position and is unhealthy (`sinks` shows why), retrying with backoff until the endpoint accepts it; nothing is skipped |
//! | any other 4xx | dead-letters it with `tidewater-http-status` and the body (first 4 KiB) as the message, and moves on |
//!
//! So a record is always either accepted by the endpoint or in the
//! dead-letter topic before the position moves past it. The position is
//! kept in redb and committed after each batch (dead letters first); a
//! crash in a batch sends its records again, with the same keys.
//!
//! With `format = "array"` a batch is one POST of a JSON array of the
//! values (`null` for a tombstone) with `Idempotency-Key: batch-<sha256 of
//! the records' keys>`. A value that is not JSON is dead-lettered first.
//! When the endpoint refuses an array with a 4xx that is not retried, its
//! records are sent one by one, so only those it refuses are dead-lettered.

use std::collections::BTreeMap;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::client::conn::http1::SendRequest;
use redb::ReadableDatabase;
use serde::Deserialize;
use sha2::Digest;

use super::mapping::idempotency_key;
use super::{Backoff, Context, Delivered, Outcome, SinkError, nap};
use crate::db::StorageError;
use crate::streams::dead_letter::{dead_letter, dlq_headers};
use crate::streams::embedded::LogError;
use crate::streams::positions::{self, POSITIONS};
use crate::streams::{LogRecord, Record};

/// How records are sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// One POST per record.
    #[default]
    Record,
    /// One POST per batch: a JSON array of the values.
    Array,
}

/// `[sink.webhook]`; see the module docs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `http://host[:port]/path`. Plain HTTP: TLS is not supported yet.
    pub url: String,
    /// `record` (default) or `array`.
    #[serde(default)]
    pub format: Format,
    /// The longest wait for one answer. Default 30 s.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// The longest `Retry-After` honoured (a longer one is cut to this). Default 10 min.
    #[serde(default = "default_max_retry_after", with = "humantime_serde")]
    pub max_retry_after: Duration,
    /// Extra request headers (e.g. `Authorization`).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_max_retry_after() -> Duration {
    Duration::from_secs(600)
}

/// The parts of a webhook URL.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Endpoint {
    authority: String,
    path: String,
}

impl WebhookConfig {
    fn endpoint(&self) -> Result<Endpoint, String> {
        let uri: hyper::Uri = self
            .url
            .parse()
            .map_err(|e| format!("url {:?} is not a URL: {e}", self.url))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "url {:?}: https is not supported yet; reach the endpoint over http (e.g. through a local TLS proxy)",
                    self.url
                ));
            }
            _ => return Err(format!("url {:?} must start with http://", self.url)),
        }
        let host = uri
            .host()
            .ok_or_else(|| format!("url {:?} has no host", self.url))?;
        let authority = format!("{host}:{}", uri.port_u16().unwrap_or(80));
        let path = uri
            .path_and_query()
            .map_or("/".into(), |p| p.as_str().to_owned());
        Ok(Endpoint { authority, path })
    }

    /// Checks the settings (the caller prefixes `webhook.`).
    ///
    /// # Errors
    ///
    /// What is wrong, naming the key.
    pub fn check(&self) -> Result<(), String> {
        self.endpoint()?;
        if self.timeout < Duration::from_millis(10) {
            return Err("timeout must be at least 10ms".into());
        }
        for (k, v) in &self.headers {
            hyper::header::HeaderName::try_from(k.as_str())
                .map_err(|_| format!("headers: {k:?} is not a header name"))?;
            hyper::header::HeaderValue::try_from(v.as_str())
                .map_err(|_| format!("headers: the value of {k:?} is not a header value"))?;
        }
        Ok(())
    }
}

/// What the endpoint's answer means for the record; see the module docs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    Accepted,
    Retry {
        code: &'static str,
        after: Option<Duration>,
        why: String,
    },
    Hold {
        code: &'static str,
        why: String,
    },
    Refused {
        status: u16,
        body: String,
    },
}

/// The most bytes of an answer's body kept for a dead letter's message.
const BODY_EXCERPT: usize = 4096;

/// Judges an answer with `status`, `Retry-After` header value `retry_after`
/// and `body`.
fn judge(status: u16, retry_after: Option<&str>, body: &str, max_after: Duration) -> Answer {
    let after = retry_after
        .and_then(parse_retry_after)
        .map(|d| d.min(max_after));
    let excerpt = || body.chars().take(500).collect::<String>();
    match status {
        200..=299 => Answer::Accepted,
        429 => Answer::Retry {
            code: "http-429",
            after,
            why: format!("429 Too Many Requests {}", excerpt()),
        },
        408 | 500..=599 => Answer::Retry {
            code: "http-5xx",
            after,
            why: format!("{status} {}", excerpt()),
        },
        401 | 403 => Answer::Hold {
            code: "unauthorized",
            why: format!(
                "the endpoint answered {status}: {}; fix the credentials (webhook.headers), nothing is skipped meanwhile",
                excerpt()
            ),
        },
        300..=399 => Answer::Hold {
            code: "http-redirect",
            why: format!(
                "the endpoint answered {status} (a redirect, not followed): set webhook.url to where it points"
            ),
        },
        _ => Answer::Refused {
            status,
            body: body.chars().take(BODY_EXCERPT).collect(),
        },
    }
}

/// `Retry-After`: delay-seconds, or an HTTP date (RFC 9110 §10.2.3).
fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let ms = at.timestamp_millis() - chrono::Utc::now().timestamp_millis();
    Some(Duration::from_millis(ms.max(0) as u64))
}

/// What became of one request after its retries.
enum Sent {
    Accepted,
    Refused { status: u16, body: String },
    Stopped,
}

/// Posts records to one endpoint; see the module docs.
pub struct WebhookWriter {
    config: WebhookConfig,
    endpoint: Endpoint,
    db: std::sync::Arc<redb::Database>,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl WebhookWriter {
    /// A writer of `config`, keeping its positions in `db`.
    ///
    /// # Errors
    ///
    /// When the config does not check.
    pub fn new(config: WebhookConfig, db: std::sync::Arc<redb::Database>) -> Result<Self, String> {
        config.check()?;
        let endpoint = config.endpoint()?;
        Ok(WebhookWriter {
            config,
            endpoint,
            db,
            sender: None,
        })
    }

    /// The sink `sink`'s positions in `topic`, from redb.
    pub(crate) fn positions(
        &self,
        sink: &str,
        topic: &str,
    ) -> Result<BTreeMap<u32, u64>, SinkError> {
        let txn = self.db.begin_read().map_err(StorageError::from)?;
        let table = match txn.open_table(POSITIONS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
            Err(e) => return Err(StorageError::from(e).into()),
        };
        let mut out = BTreeMap::new();
        for e in table
            .range((sink, topic, 0)..=(sink, topic, u32::MAX))
            .map_err(StorageError::from)?
        {
            let (k, v) = e.map_err(StorageError::from)?;
            out.insert(k.value().2, v.value());
        }
        Ok(out)
    }

    /// Moves positions back to `targets`, durably.
    pub(crate) fn rewind(
        &self,
        sink: &str,
        topic: &str,
        targets: &BTreeMap<u32, u64>,
    ) -> Result<(), SinkError> {
        let current = self.positions(sink, topic)?;
        let txn = self.db.begin_write().map_err(LogError::from)?;
        for (p, at) in targets {
            let now = current.get(p).copied().unwrap_or(0);
            positions::set_position_in(&txn, sink, topic, *p, (*at).min(now))?;
        }
        txn.commit().map_err(LogError::from)?;
        Ok(())
    }

    /// Delivers `records` as the module docs say, then commits dead letters
    /// and the position. On a stop, what was handled is committed.
    ///
    /// # Errors
    ///
    /// Storage and Kafka errors writing dead letters or the position.
    pub(crate) async fn deliver(
        &mut self,
        ctx: &Context<'_>,
        records: &[LogRecord],
        backoff: &mut Backoff,
    ) -> Result<Outcome, SinkError> {
        let mut d = Delivered {
            records: records.len() as u64,
            ..Delivered::default()
        };
        let mut letters: Vec<(u64, Record)> = Vec::new();
        let handled = match self.config.format {
            Format::Record => self.each(ctx, records, backoff, &mut d, &mut letters).await,
            Format::Array => {
                self.array(ctx, records, backoff, &mut d, &mut letters)
                    .await
            }
        };
        let next = records.get(handled).map_or_else(
            || records.last().map_or(ctx.from, |r| r.offset + 1),
            |r| r.offset,
        );
        d.dead_lettered = letters.len() as u64;
        if !ctx
            .dead_letters
            .write(ctx.sink, ctx.topic, ctx.partition, letters, ctx.stop)?
        {
            return Ok(Outcome::Stopped(d));
        }
        if next > ctx.from {
            let txn = self.db.begin_write().map_err(LogError::from)?;
            positions::set_position_in(&txn, ctx.sink, ctx.topic, ctx.partition, next)?;
            txn.commit().map_err(LogError::from)?;
        }
        if handled < records.len() {
            return Ok(Outcome::Stopped(d));
        }
        Ok(Outcome::Done(d))
    }

    /// One POST per record; returns how many records were handled
    /// (accepted or dead-lettered) before a stop.
    async fn each(
        &mut self,
        ctx: &Context<'_>,
        records: &[LogRecord],
        backoff: &mut Backoff,
        d: &mut Delivered,
        letters: &mut Vec<(u64, Record)>,
    ) -> usize {
        for (i, r) in records.iter().enumerate() {
            let body = r.record.value.clone().unwrap_or_default();
            let key = idempotency_key(r);
            match self.send(ctx, &key, Some(r), body, backoff, d).await {
                Sent::Accepted => d.changed += 1,
                Sent::Refused { status, body } => {
                    d.count("http-4xx");
                    letters.push((r.offset, refused_letter(ctx.sink, r, status, &body)));
                }
                Sent::Stopped => return i,
            }
        }
        records.len()
    }

    /// One POST of a JSON array for the batch; record by record when the
    /// endpoint refuses the array.
    async fn array(
        &mut self,
        ctx: &Context<'_>,
        records: &[LogRecord],
        backoff: &mut Backoff,
        d: &mut Delivered,
        letters: &mut Vec<(u64, Record)>,
    ) -> usize {
        let mut values = Vec::with_capacity(records.len());
        let mut keys = sha2::Sha256::new();
        for r in records {
            let v = match &r.record.value {
                None => Ok(serde_json::Value::Null),
                Some(b) => serde_json::from_slice::<serde_json::Value>(b),
            };
            match v {
                Ok(v) => {
                    values.push(v);
                    keys.update(idempotency_key(r).as_bytes());
                    keys.update(b"\n");
                }
                Err(e) => {
                    d.count("mapping");
                    let msg =
                        format!("the value is not JSON, and format = \"array\" sends JSON: {e}");
                    letters.push((
                        r.offset,
                        dead_letter(r, "mapping", &msg, ctx.sink, "webhook", 0),
                    ));
                }
            }
        }
        if values.is_empty() {
            return records.len();
        }
        let key = format!("batch-{}", hex::encode(keys.finalize()));
        let body = serde_json::to_vec(&values).unwrap_or_default();
        match self.send(ctx, &key, None, body, backoff, d).await {
            Sent::Accepted => {
                d.changed += values.len() as u64;
                records.len()
            }
            Sent::Stopped => 0,
            Sent::Refused { status, .. } => {
                tracing::info!(sink = %ctx.sink, status, "the endpoint refused the array; sending its records one by one");
                let good: Vec<LogRecord> = records
                    .iter()
                    .filter(|r| !letters.iter().any(|(o, _)| *o == r.offset))
                    .cloned()
                    .collect();
                let done = self.each(ctx, &good, backoff, d, letters).await;
                letters.sort_by_key(|(o, _)| *o);
                if done < good.len() {
                    records
                        .iter()
                        .position(|r| r.offset == good[done].offset)
                        .unwrap_or(0)
                } else {
                    records.len()
                }
            }
        }
    }

    /// POSTs `body` until the endpoint accepts or refuses it for good, or
    /// `ctx.stop`; retries and holds as the module docs say.
    async fn send(
        &mut self,
        ctx: &Context<'_>,
        key: &str,
        record: Option<&LogRecord>,
        body: Vec<u8>,
        backoff: &mut Backoff,
        d: &mut Delivered,
    ) -> Sent {
        loop {
            if ctx.stop.load(std::sync::atomic::Ordering::SeqCst) {
                return Sent::Stopped;
            }
            let answer = match self.post(key, record, body.clone()).await {
                Ok((status, retry_after, text)) => judge(
                    status,
                    retry_after.as_deref(),
                    &text,
                    self.config.max_retry_after,
                ),
                Err(why) => {
                    self.sender = None;
                    Answer::Retry {
                        code: "http-connection",
                        after: None,
                        why,
                    }
                }
            };
            let wait = match answer {
                Answer::Accepted => {
                    backoff.reset();
                    ctx.control.set_unhealthy(None);
                    return Sent::Accepted;
                }
                Answer::Refused { status, body } => return Sent::Refused { status, body },
                Answer::Retry { code, after, why } => {
                    d.count(code);
                    tracing::debug!(sink = %ctx.sink, code, %why, "webhook retry");
                    backoff.next(after)
                }
                Answer::Hold { code, why } => {
                    d.count(code);
                    ctx.control.set_unhealthy(Some(why));
                    backoff.next(None)
                }
            };
            if !nap(wait, ctx.stop).await {
                return Sent::Stopped;
            }
        }
    }

    /// One POST; (status, `Retry-After`, body) or why there was no answer.
    async fn post(
        &mut self,
        key: &str,
        record: Option<&LogRecord>,
        body: Vec<u8>,
    ) -> Result<(u16, Option<String>, String), String> {
        let timeout = self.config.timeout;
        let request = self.request(key, record, body)?;
        let exchange = async {
            let sender = self.sender().await?;
            let resp = sender
                .send_request(request)
                .await
                .map_err(|e| e.to_string())?;
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(hyper::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((
                status,
                retry_after,
                String::from_utf8_lossy(&bytes).into_owned(),
            ))
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(r) => r,
            Err(_) => Err(format!(
                "no answer from {} within {timeout:?}",
                self.endpoint.authority
            )),
        }
    }

    fn request(
        &self,
        key: &str,
        record: Option<&LogRecord>,
        body: Vec<u8>,
    ) -> Result<hyper::Request<Full<Bytes>>, String> {
        let mut req = hyper::Request::builder()
            .method("POST")
            .uri(&self.endpoint.path)
            .header(hyper::header::HOST, &self.endpoint.authority)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", key);
        if let Some(r) = record {
            req = req
                .header("tidewater-topic", &r.topic)
                .header("tidewater-partition", r.partition.to_string())
                .header("tidewater-offset", r.offset.to_string());
            if r.record.value.is_none() {
                req = req.header("tidewater-tombstone", "true");
            }
        }
        for (k, v) in &self.config.headers {
            req = req.header(k, v);
        }
        req.body(Full::new(Bytes::from(body)))
            .map_err(|e| e.to_string())
    }

    /// The kept-alive connection, or a new one.
    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        if self.sender.as_ref().is_some_and(|s| s.is_closed()) {
            self.sender = None;
        }
        if self.sender.is_none() {
            let at = &self.endpoint.authority;
            let stream = tokio::net::TcpStream::connect(at)
                .await
                .map_err(|e| format!("cannot connect to {at}: {e}"))?;
            let _ = stream.set_nodelay(true);
            let (sender, conn) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .map_err(|e| format!("{at}: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        let sender = self.sender.as_mut().expect("connected above");
        sender.ready().await.map_err(|e| e.to_string())?;
        Ok(sender)
    }
}

/// The dead letter of a record the endpoint refused with `status` and `body`.
fn refused_letter(sink: &str, r: &LogRecord, status: u16, body: &str) -> Record {
    let mut letter = dead_letter(
        r,
        "http-4xx",
        &format!("{status}: {body}"),
        sink,
        "webhook",
        1,
    );
    letter.headers.push((
        dlq_headers::HTTP_STATUS.to_owned(),
        status.to_string().into_bytes(),
    ));
    letter
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_secs(600);

    #[test]
    fn answers_are_judged_as_the_docs_say() {
        assert_eq!(judge(204, None, "", MAX), Answer::Accepted);
        assert!(matches!(
            judge(429, Some("1"), "slow down", MAX),
            Answer::Retry { code: "http-429", after: Some(d), .. } if d == Duration::from_secs(1)
        ));
        assert!(matches!(
            judge(503, None, "", MAX),
            Answer::Retry {
                code: "http-5xx",
                after: None,
                ..
            }
        ));
        assert!(matches!(
            judge(401, None, "no", MAX),
            Answer::Hold {
                code: "unauthorized",
                ..
            }
        ));
        assert!(matches!(
            judge(403, None, "no", MAX),
            Answer::Hold {
                code: "unauthorized",
                ..
            }
        ));
        assert!(matches!(
            judge(301, None, "", MAX),
            Answer::Hold {
                code: "http-redirect",
                ..
            }
        ));
        assert_eq!(
            judge(400, None, "bad field", MAX),
            Answer::Refused {
                status: 400,
                body: "bad field".into()
            }
        );
        assert!(matches!(
            judge(503, Some("7200"), "", MAX),
            Answer::Retry { after: Some(d), .. } if d == MAX
        ));
    }

    #[test]
    fn retry_after_takes_seconds_and_dates() {
        assert_eq!(parse_retry_after(" 3 "), Some(Duration::from_secs(3)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO),
            "a date in the past means now"
        );
        let later = (chrono::Utc::now() + chrono::Duration::seconds(120)).to_rfc2822();
        let d = parse_retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(100) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn urls_are_checked() {
        let c = |url: &str| WebhookConfig {
            url: url.into(),
            format: Format::Record,
            timeout: default_timeout(),
            max_retry_after: MAX,
            headers: BTreeMap::new(),
        };
        assert_eq!(
            c("http://127.0.0.1:9000/hook?x=1").endpoint().unwrap(),
            Endpoint {
                authority: "127.0.0.1:9000".into(),
                path: "/hook?x=1".into()
            }
        );
        assert_eq!(
            c("http://example.com").endpoint().unwrap().authority,
            "example.com:80"
        );
        assert!(
            c("https://example.com/")
                .check()
                .unwrap_err()
                .contains("https is not supported yet")
        );
        assert!(
            c("ftp://example.com/")
                .check()
                .unwrap_err()
                .contains("must start with http://")
        );
    }
}
