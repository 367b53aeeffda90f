//! HTTP ingest (`[ingest.http]`): `POST /v1/topics/{topic}/records` on a
//! listener of its own, answered only once the records are durable.
//!
//! - Body: `application/x-ndjson` (one JSON value per line; also the
//!   default without a `Content-Type`), `application/json` (an array of
//!   records, or one), or `application/octet-stream` (one record, its bytes
//!   as sent; key from `Tidewater-Key`, time from `Tidewater-Timestamp`,
//!   headers from `Tidewater-Header-<name>`). `Content-Encoding: gzip` is
//!   undone first. `?envelope=true`: each record is an envelope
//!   (`{"key", "value" | "value_base64", "timestamp", "headers"}`).
//!   `?partitions=N`: the partition count a missing topic is created with.
//! - Keys: the envelope's `key`, else the topic's `key_pointer`
//!   (`[[ingest.topic]]`), else none. Timestamps likewise, else the time
//!   the host received the request.
//! - 200 `{"accepted": N, "first_offsets": {"<partition>": offset}}` once
//!   the records are durably appended (fsync'd), in one commit shared with
//!   the other requests in flight (group commit). When the device-time
//!   policy stamped some of them with the ingest time, also
//!   `"device_time_replaced": {"ahead": N, "behind": N, "max_ahead_ms": ms,
//!   "max_behind_ms": ms}` (the counts, and the host's `[device_time]`
//!   window).
//! - Refusals append nothing (a retry is then safe), as
//!   `{"error": {"code", "message", "lines"?}}`: 400 `malformed` listing
//!   every bad line's number and reason; 413 `body-too-large`,
//!   `too-many-records`, `record-too-large`; 415 `unsupported-media-type`;
//!   401 `unauthorized`; 403 `forbidden-topic`, `forbidden-key`; 404
//!   `no-such-topic`; 409 `partition-count`; 503 `queue-full`, `over-quota`
//!   and `stopping` with `Retry-After` (seconds).
//! - Device tokens (`Authorization: Bearer <token>`): the config keeps only
//!   their SHA-256; each may write its topics, and with a `key_prefix` only
//!   keys starting with it. The host's own token (written to the data dir's
//!   `ingest.token`, for `tidewater produce` on the same machine) may write
//!   any topic. Without configured tokens, any client may send, and the
//!   host listens on loopback only.
//! - TLS (rustls) when `tls_cert` and `tls_key` are set.

#![allow(
    clippy::result_large_err,
    reason = "the request's steps answer a refusal as the axum Response the handler returns; refusals are the rare path"
)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::appender::{AppendError, Appender};
use super::config::{HttpIngestConfig, IngestTopicConfig};
use super::metrics::IngestMetrics;
use super::parse::{BadLine, Format, Shape, parse};
use crate::db::now_ms;
use crate::streams::Record;
use crate::streams::topic::check_topic_name;

/// The file in the data dir that holds the running host's ingest URL.
pub const INGEST_URL_FILE: &str = "ingest.url";
/// The file in the data dir that holds the running host's own ingest token.
pub const INGEST_TOKEN_FILE: &str = "ingest.token";
/// The file in the data dir that holds the running host's request limits
/// ([`RequestLimits`] as JSON), so that `produce` sends what it takes.
pub const INGEST_LIMITS_FILE: &str = "ingest.limits";

/// What one request to the ingest endpoint may hold (`[ingest.http]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestLimits {
    /// Largest body, in bytes, after gzip is undone.
    pub max_body_bytes: usize,
    /// Most records.
    pub max_records: usize,
    /// Largest record value, in bytes.
    pub max_record_bytes: usize,
}

impl Default for RequestLimits {
    /// The defaults of `[ingest.http]`.
    fn default() -> Self {
        RequestLimits {
            max_body_bytes: super::DEFAULT_MAX_BODY_BYTES,
            max_records: super::DEFAULT_MAX_RECORDS,
            max_record_bytes: super::DEFAULT_MAX_RECORD_BYTES,
        }
    }
}

impl From<&HttpIngestConfig> for RequestLimits {
    fn from(h: &HttpIngestConfig) -> Self {
        RequestLimits {
            max_body_bytes: h.max_body_bytes,
            max_records: h.max_records,
            max_record_bytes: h.max_record_bytes,
        }
    }
}
/// Seconds a refused-for-backpressure client is told to wait.
pub const RETRY_AFTER_S: u64 = 1;

/// What one configured token may do.
#[derive(Debug, Clone)]
struct Grant {
    name: String,
    /// `None`: any topic (the host's own token).
    topics: Option<BTreeSet<String>>,
    key_prefix: Option<Vec<u8>>,
}

struct HttpState {
    appender: Appender,
    metrics: Arc<IngestMetrics>,
    config: HttpIngestConfig,
    /// SHA-256 of a token → what it may do. Empty: no auth.
    grants: HashMap<[u8; 32], Grant>,
    topics: BTreeMap<String, IngestTopicConfig>,
}

/// A running HTTP ingest listener.
pub struct RunningHttp {
    /// The address it listens on.
    pub addr: SocketAddr,
    /// `http://…` or `https://…`.
    pub url: String,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningHttp {
    /// Stops taking connections, lets the requests in flight finish (they
    /// wait for their commit), and returns.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(30), self.task).await;
    }
}

/// The `code` of an error answer, kept with the response for the
/// `ingest_refused` metric.
#[derive(Debug, Clone, Copy)]
struct RefusalCode(&'static str);

/// An error answer: `{"error": {"code", "message"}}`, with `Retry-After`
/// on a 503.
fn refuse(status: StatusCode, code: &'static str, message: impl Into<String>) -> Response {
    refuse_with(
        status,
        code,
        json!({"code": code, "message": message.into()}),
    )
}

/// An error answer whose `error` object is `error`.
fn refuse_with(status: StatusCode, code: &'static str, error: Value) -> Response {
    let mut r = (status, axum::Json(json!({ "error": error }))).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        r.headers_mut()
            .insert(header::RETRY_AFTER, RETRY_AFTER_S.into());
    }
    r.extensions_mut().insert(RefusalCode(code));
    r
}

/// The SHA-256 of a token, as stored in `[[ingest.http.token]] sha256`.
pub fn token_digest(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Starts the listener of `config` (paths already resolved), appending
/// through `appender`, with `local_token` allowed every topic.
///
/// # Errors
///
/// When the address cannot be bound or the TLS files cannot be read.
pub async fn start(
    config: HttpIngestConfig,
    topics: &[IngestTopicConfig],
    appender: Appender,
    metrics: Arc<IngestMetrics>,
    local_token: &str,
) -> Result<RunningHttp, String> {
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(c), Some(k)) => Some(tls_acceptor(c, k)?),
        _ => None,
    };
    let mut grants = HashMap::new();
    for t in &config.tokens {
        let mut d = [0u8; 32];
        hex::decode_to_slice(t.sha256.to_ascii_lowercase(), &mut d)
            .map_err(|e| format!("[[ingest.http.token]] {:?}: sha256: {e}", t.name))?;
        grants.insert(
            d,
            Grant {
                name: t.name.clone(),
                topics: Some(t.topics.iter().cloned().collect()),
                key_prefix: t.key_prefix.clone().map(String::into_bytes),
            },
        );
    }
    if !grants.is_empty() {
        grants.insert(
            Sha256::digest(local_token.as_bytes()).into(),
            Grant {
                name: "(host)".into(),
                topics: None,
                key_prefix: None,
            },
        );
    }
    let listen = config.listen.clone();
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("ingest.http: cannot listen on {listen}: {e}"))?;
    let addr = listener
        .local_addr()
        .map_err(|e| format!("ingest.http: cannot listen on {listen}: {e}"))?;
    let state = Arc::new(HttpState {
        appender,
        metrics,
        config,
        grants,
        topics: topics.iter().map(|t| (t.name.clone(), t.clone())).collect(),
    });
    let router = router(state);
    let (stop, stopped) = watch::channel(false);
    let url = format!("{}://{addr}", if tls.is_some() { "https" } else { "http" });
    let task = tokio::spawn(serve(listener, router, tls, stopped));
    tracing::info!(%url, "HTTP ingest listening");
    Ok(RunningHttp {
        addr,
        url,
        stop,
        task,
    })
}

/// A TLS acceptor for the PEM chain in `cert` and key in `key` (ring
/// provider; HTTP/1.1 by ALPN).
fn tls_acceptor(cert: &Path, key: &Path) -> Result<tokio_rustls::TlsAcceptor, String> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("ingest.http.tls_cert {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "ingest.http.tls_cert {} holds no certificate",
            cert.display()
        ));
    }
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| format!("ingest.http.tls_key {}: {e}", key.display()))?;
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("TLS: {e}"))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| format!("ingest.http TLS certificate and key: {e}"))?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(server)))
}

/// Accepts connections until `stop`, then lets each finish its request in
/// flight.
async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            accepted = listener.accept() => {
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!(error = %e, "ingest: accept failed");
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let (router, tls, stop) = (router.clone(), tls.clone(), stop.clone());
                conns.spawn(async move {
                    match tls {
                        None => serve_connection(tcp, router, stop).await,
                        Some(acceptor) => match acceptor.accept(tcp).await {
                            Ok(s) => serve_connection(s, router, stop).await,
                            Err(e) => tracing::debug!(%peer, error = %e, "ingest: TLS handshake failed"),
                        },
                    }
                });
            }
        }
        while conns.try_join_next().is_some() {}
    }
    while conns.join_next().await.is_some() {}
}

async fn serve_connection<IO>(io: IO, router: Router, mut stop: watch::Receiver<bool>)
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper_util::service::TowerToHyperService::new(router);
    let conn = hyper::server::conn::http1::Builder::new()
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/v1/topics/{topic}/records", post(post_records))
        .fallback(|| async {
            refuse(
                StatusCode::NOT_FOUND,
                "not-found",
                "no such endpoint: send records with POST /v1/topics/{topic}/records",
            )
        })
        .method_not_allowed_fallback(|| async {
            refuse(
                StatusCode::METHOD_NOT_ALLOWED,
                "method-not-allowed",
                "send records with POST /v1/topics/{topic}/records",
            )
        })
        .with_state(state)
}

#[derive(Debug, Deserialize)]
struct RecordsQuery {
    #[serde(default)]
    envelope: bool,
    partitions: Option<u32>,
}

/// The token of an `Authorization: Bearer <token>` header.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl HttpState {
    /// The grant of the request's token for `topic`: `None` when no tokens
    /// are configured; an error answer without a valid token (401) or for a
    /// topic it may not write (403).
    fn authorize(&self, headers: &HeaderMap, topic: &str) -> Result<Option<&Grant>, Response> {
        if self.grants.is_empty() {
            return Ok(None);
        }
        let Some(token) = bearer(headers) else {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send Authorization: Bearer <device token>",
            ));
        };
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let Some(grant) = self.grants.get(&digest) else {
            return Err(refuse(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the bearer token is not one of this host's device tokens",
            ));
        };
        if grant.topics.as_ref().is_some_and(|t| !t.contains(topic)) {
            return Err(refuse(
                StatusCode::FORBIDDEN,
                "forbidden-topic",
                format!("token {:?} may not write topic {topic:?}", grant.name),
            ));
        }
        Ok(Some(grant))
    }

    /// How the records of `topic` are read from a request, and the time
    /// of records that carry none (`Tidewater-Timestamp`, else now).
    fn shape(
        &self,
        topic: &str,
        envelope: bool,
        headers: &HeaderMap,
    ) -> Result<(Shape, i64), Response> {
        let t = self.topics.get(topic);
        let mut shape = Shape {
            envelope,
            key_pointer: t.and_then(|t| t.key_pointer.clone()),
            timestamp_pointer: t.and_then(|t| t.timestamp_pointer.clone()),
            max_record_bytes: self.config.max_record_bytes,
            ..Shape::default()
        };
        if let Some(k) = headers.get("tidewater-key") {
            shape.key = Some(k.as_bytes().to_vec());
        }
        for (name, value) in headers {
            if let Some(h) = name.as_str().strip_prefix("tidewater-header-") {
                shape
                    .headers
                    .push((h.to_owned(), value.as_bytes().to_vec()));
            }
        }
        let mut time = now_ms() as i64;
        if let Some(t) = headers.get("tidewater-timestamp") {
            let t = t.to_str().unwrap_or("");
            time = t
                .trim()
                .parse::<i64>()
                .or_else(|_| super::times::parse_time_ms(t))
                .map_err(|e| {
                    refuse(
                        StatusCode::BAD_REQUEST,
                        "malformed",
                        format!("Tidewater-Timestamp: {e}"),
                    )
                })?;
        }
        Ok((shape, time))
    }
}

/// The format a `Content-Type` names.
fn format_of(headers: &HeaderMap) -> Result<Format, Response> {
    let Some(ct) = headers.get(header::CONTENT_TYPE) else {
        return Ok(Format::Ndjson);
    };
    let ct = ct.to_str().unwrap_or("");
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines"
        | "application/json-lines" => Ok(Format::Ndjson),
        "application/json" => Ok(Format::Json),
        "application/octet-stream" => Ok(Format::Bytes),
        other => Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!(
                "Content-Type {ct:?} is not one of application/x-ndjson, application/json, application/octet-stream{}",
                if other == "text/csv" {
                    " (CSV is read by `tidewater produce TOPIC --csv FILE`, which sends its rows here and reports each bad row's line)"
                } else {
                    ""
                }
            ),
        )),
    }
}

/// Reads the body (at most `max` bytes after gzip is undone).
async fn read_body(body: Body, headers: &HeaderMap, max: usize) -> Result<Vec<u8>, Response> {
    let too_large = |size: String| {
        refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body-too-large",
            format!("the body is {size}, the limit is {max} bytes (ingest.http.max_body_bytes)"),
        )
    };
    if let Some(len) = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        && len > max as u64
    {
        return Err(too_large(format!("{len} bytes")));
    }
    let bytes = axum::body::to_bytes(body, max).await.map_err(|e| {
        let limit = std::iter::successors(Some(&e as &dyn std::error::Error), |e| e.source())
            .any(|e| e.is::<http_body_util::LengthLimitError>());
        if limit {
            too_large(format!("more than {max} bytes"))
        } else {
            refuse(
                StatusCode::BAD_REQUEST,
                "bad-request",
                format!("cannot read the body: {e}"),
            )
        }
    })?;
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_ascii_lowercase());
    match gzip.as_deref() {
        None | Some("identity") => Ok(bytes.to_vec()),
        Some("gzip") | Some("x-gzip") => {
            use std::io::Read;
            let mut out = Vec::new();
            let mut d = flate2::read::MultiGzDecoder::new(&bytes[..]).take(max as u64 + 1);
            d.read_to_end(&mut out).map_err(|e| {
                refuse(
                    StatusCode::BAD_REQUEST,
                    "bad-request",
                    format!("the gzip body cannot be read: {e}"),
                )
            })?;
            if out.len() > max {
                return Err(too_large(format!("more than {max} bytes unzipped")));
            }
            Ok(out)
        }
        Some(other) => Err(refuse(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported-media-type",
            format!("Content-Encoding {other:?} is not gzip"),
        )),
    }
}

/// The records of a body, or the answer that refuses it whole.
fn records_of(
    body: &[u8],
    format: Format,
    (shape, time): &(Shape, i64),
    max_records: usize,
) -> Result<Vec<Record>, Response> {
    let mut records = Vec::new();
    let mut bad: Vec<BadLine> = Vec::new();
    parse(body, format, shape, *time, |r| match r {
        Ok(r) => records.push(r),
        Err(b) => bad.push(b),
    });
    if !bad.is_empty() {
        let all_size = bad.iter().all(|b| b.too_large);
        let (status, code) = if all_size {
            (StatusCode::PAYLOAD_TOO_LARGE, "record-too-large")
        } else {
            (StatusCode::BAD_REQUEST, "malformed")
        };
        let lines: Vec<Value> = bad
            .iter()
            .map(|b| json!({"line": b.line, "reason": b.reason}))
            .collect();
        let message = format!(
            "{} of {} records cannot be taken (first: line {}: {}); nothing was appended",
            bad.len(),
            bad.len() + records.len(),
            bad[0].line,
            bad[0].reason
        );
        return Err(refuse_with(
            status,
            code,
            json!({"code": code, "message": message, "lines": lines}),
        ));
    }
    if records.len() > max_records {
        return Err(refuse(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too-many-records",
            format!(
                "the request holds {} records, the limit is {max_records} (ingest.http.max_records)",
                records.len()
            ),
        ));
    }
    if records.is_empty() {
        return Err(refuse(
            StatusCode::BAD_REQUEST,
            "malformed",
            "the request holds no record",
        ));
    }
    Ok(records)
}

/// `POST /v1/topics/{topic}/records`.
async fn post_records(
    State(s): State<Arc<HttpState>>,
    UrlPath(topic): UrlPath<String>,
    query: Result<Query<RecordsQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let arrived = Instant::now();
    let answer = match query {
        Ok(Query(q)) => take_records(&s, &topic, q, &headers, body, arrived).await,
        Err(e) => Err(fail(refuse(
            StatusCode::BAD_REQUEST,
            "bad-request",
            format!(
                "the query string: {} (known: envelope=true|false, partitions=N)",
                e.body_text()
            ),
        ))),
    };
    if let Err(code) = &answer {
        s.metrics.refused("http", code.0);
    }
    answer.unwrap_or_else(|(_, r)| r)
}

type Refusal = (&'static str, Response);

/// A refusal with its code, for the metrics.
fn fail(r: Response) -> Refusal {
    let code = r
        .extensions()
        .get::<RefusalCode>()
        .map_or("internal", |c| c.0);
    (code, r)
}

async fn take_records(
    s: &Arc<HttpState>,
    topic: &str,
    q: RecordsQuery,
    headers: &HeaderMap,
    body: Body,
    arrived: Instant,
) -> Result<Response, Refusal> {
    let grant = s.authorize(headers, topic).map_err(fail)?.cloned();
    check_topic_name(topic)
        .map_err(|e| fail(refuse(StatusCode::BAD_REQUEST, "bad-topic", e.to_string())))?;
    let format = format_of(headers).map_err(fail)?;
    let shape = s.shape(topic, q.envelope, headers).map_err(fail)?;
    let body = read_body(body, headers, s.config.max_body_bytes)
        .await
        .map_err(fail)?;
    let max_records = s.config.max_records;
    let records = if body.len() > 1 << 20 {
        tokio::task::spawn_blocking(move || records_of(&body, format, &shape, max_records))
            .await
            .unwrap_or_else(|e| {
                Err(refuse(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    e.to_string(),
                ))
            })
    } else {
        records_of(&body, format, &shape, max_records)
    }
    .map_err(fail)?;
    if let Some(prefix) = grant.as_ref().and_then(|g| g.key_prefix.as_ref())
        && let Some((i, _)) = records
            .iter()
            .enumerate()
            .find(|(_, r)| !r.key.as_ref().is_some_and(|k| k.starts_with(prefix)))
    {
        let g = grant.as_ref().map_or("", |g| g.name.as_str());
        return Err(fail(refuse(
            StatusCode::FORBIDDEN,
            "forbidden-key",
            format!(
                "record {} has {}: token {g:?} may write only keys starting with {:?}",
                i + 1,
                records[i]
                    .key
                    .as_deref()
                    .map_or("no key".to_owned(), |k| format!(
                        "key {:?}",
                        String::from_utf8_lossy(k)
                    )),
                String::from_utf8_lossy(prefix)
            ),
        )));
    }
    let n = records.len();
    let bytes: u64 = records
        .iter()
        .map(|r| r.value.as_ref().map_or(0, Vec::len) as u64)
        .sum();
    let appended = match s.appender.submit(topic, q.partitions, records) {
        Ok(pending) => pending.await.unwrap_or(Err(AppendError::Stopping)),
        Err(e) => Err(e),
    };
    match appended {
        Ok(a) => {
            s.metrics
                .appended("http", topic, n as u64, bytes, arrived.elapsed());
            let first: BTreeMap<String, u64> = a
                .first_offsets()
                .into_iter()
                .map(|(p, o)| (p.to_string(), o))
                .collect();
            let mut answer = json!({"accepted": n, "first_offsets": first});
            if a.replaced.total() > 0 {
                let policy = s.appender.device_time();
                answer["device_time_replaced"] = json!({
                    "ahead": a.replaced.ahead,
                    "behind": a.replaced.behind,
                    "max_ahead_ms": policy.max_ahead.as_millis() as u64,
                    "max_behind_ms": policy.max_behind.as_millis() as u64,
                });
            }
            Ok(axum::Json(answer).into_response())
        }
        Err(e) => {
            let status = match &e {
                e if e.is_backpressure() => StatusCode::SERVICE_UNAVAILABLE,
                AppendError::NoSuchTopic(_) => StatusCode::NOT_FOUND,
                AppendError::PartitionCount { .. } => StatusCode::CONFLICT,
                AppendError::BadTopic(_) => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            Err(fail(refuse(status, e.code(), e.to_string())))
        }
    }
}
