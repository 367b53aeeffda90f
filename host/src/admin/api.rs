//! The API's routes and handlers: JSON in and out, the bearer token on
//! every mutating call.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Admin;
use super::ops::Then;
use crate::control::registry::UploadError;
use crate::control::{CanaryPlan, Replay, ReplayFrom};

/// An error of the API: an HTTP status, a stable code and a message.
///
/// Codes: `unauthorized`, `no-such-processor`, `no-such-sink`, `no-such-version`, `bad-version`,
/// `component-too-large`, `empty-component`, `not-webassembly`, `core-module`,
/// `world-mismatch`, `invalid-component`, `init-failed`, `bad-request`,
/// `no-previous-version`, `version-active`, `no-shadow`,
/// `replay-unsupported`, `no-such-topic`, `no-such-record`,
/// `processor-not-running`, `busy`, `replay-failed`, `no-compare-report`,
/// `bad-compare-report`, `storage`, `internal`; the console's own
/// `forbidden` (a change without the page's CSRF token or from another origin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// The stable code.
    pub code: &'static str,
    /// What went wrong, for people.
    pub message: String,
}

impl ApiError {
    /// An error whose message has what it quotes of the request clipped
    /// (see [`crate::text::clip_quoted`]).
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        let message = message.into();
        let message = match crate::text::clip_quoted(&message) {
            std::borrow::Cow::Borrowed(_) => message,
            std::borrow::Cow::Owned(clipped) => clipped,
        };
        ApiError {
            status,
            code,
            message,
        }
    }

    pub(super) fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "bad-request", message)
    }
}

impl From<UploadError> for ApiError {
    fn from(e: UploadError) -> Self {
        let status = match &e {
            UploadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::NoSuchVersion { .. } => StatusCode::NOT_FOUND,
            UploadError::BadVersion { .. } => StatusCode::BAD_REQUEST,
            UploadError::Storage(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNPROCESSABLE_ENTITY,
        };
        ApiError::new(status, e.code(), e.to_string())
    }
}

impl From<crate::streams::embedded::LogError> for ApiError {
    fn from(e: crate::streams::embedded::LogError) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
    }
}

impl From<crate::db::StorageError> for ApiError {
    fn from(e: crate::db::StorageError) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, axum::Json(body)).into_response()
    }
}

pub(super) type ApiResult = Result<axum::Json<Value>, ApiError>;

/// Serves the API on `listener` until `shutdown` completes.
///
/// # Errors
///
/// When the server fails.
pub async fn serve(
    admin: Arc<Admin>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(admin))
        .with_graceful_shutdown(shutdown)
        .await
}

/// The API's routes.
pub fn router(admin: Arc<Admin>) -> Router {
    Router::new()
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({"status": "ok"})) }),
        )
        .route("/openapi.json", get(openapi))
        .route("/metrics", get(super::metrics::metrics))
        .route("/v1/processors", get(list))
        .route("/v1/processors/{name}", get(one))
        .route("/v1/processors/{name}/versions", get(versions).post(upload))
        .route(
            "/v1/processors/{name}/versions/{version}",
            axum::routing::delete(delete_version),
        )
        .route("/v1/processors/{name}/activate", post(activate))
        .route("/v1/processors/{name}/rollback", post(rollback))
        .route(
            "/v1/processors/{name}/shadow",
            get(shadow_report).post(shadow).delete(unshadow),
        )
        .route("/v1/processors/{name}/pause", post(pause))
        .route("/v1/processors/{name}/resume", post(resume))
        .route("/v1/processors/{name}/replay", post(replay))
        .route("/v1/sinks", get(sinks))
        .route("/v1/sinks/{name}", get(sink))
        .route("/v1/sinks/{name}/pause", post(sink_pause))
        .route("/v1/sinks/{name}/resume", post(sink_resume))
        .route("/v1/sinks/{name}/replay", post(sink_replay))
        .route("/v1/processors/{name}/processed", get(processed))
        .route("/v1/processors/{name}/dead-letters", get(dead_letters))
        .route(
            "/v1/processors/{name}/dead-letters/replay",
            post(replay_dead_letters),
        )
        .route(
            "/v1/processors/{name}/dead-letters/{partition}/{offset}",
            get(dead_letter),
        )
        .route("/v1/topics", get(topics))
        .route("/v1/topics/{name}/records", get(tail))
        .route("/v1/rates", get(rates))
        .route("/v1/compare", get(compare))
        .layer(axum::middleware::from_fn_with_state(
            admin.clone(),
            authorize,
        ))
        // The console checks its own session and CSRF token on every change.
        .merge(super::console::router())
        .layer(DefaultBodyLimit::disable())
        .with_state(admin)
}

/// Refuses mutating calls without the bearer token, before anything runs.
async fn authorize(
    State(admin): State<Arc<Admin>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let mutating = !matches!(*request.method(), Method::GET | Method::HEAD);
    if mutating {
        let message = match bearer(request.headers()) {
            None => {
                "this call changes the host: send Authorization: Bearer <token> ([admin] token, TIDEWATER_ADMIN_TOKEN, or the data dir's admin.token)"
            }
            Some(given) if !same_token(given, &admin.token) => {
                "the bearer token is not this host's ([admin] token, TIDEWATER_ADMIN_TOKEN, or the data dir's admin.token)"
            }
            Some(_) => return next.run(request).await,
        };
        return ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message).into_response();
    }
    next.run(request).await
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is
/// case-insensitive, RFC 9110 §11.1).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Compares in constant time for tokens of the same length.
pub(super) fn same_token(given: &str, token: &str) -> bool {
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
fn authorized(headers: &HeaderMap, token: &str) -> bool {
    bearer(headers).is_some_and(|given| same_token(given, token))
}

pub(super) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.unwrap_or_else(|e| {
        Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("the request's task failed: {e}"),
        ))
    })
}

async fn list(State(admin): State<Arc<Admin>>) -> ApiResult {
    blocking(move || {
        Ok(axum::Json(json!({
            "processors": admin.processors_view()?,
            "live_instances": admin.registry.runtime().live_instances(),
        })))
    })
    .await
}

async fn one(State(admin): State<Arc<Admin>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    blocking(move || Ok(axum::Json(to_json(admin.one_processor_view(&name)?)))).await
}

async fn versions(State(admin): State<Arc<Admin>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    blocking(move || Ok(axum::Json(to_json(admin.versions_view(&name)?)))).await
}

pub(super) fn to_json(v: impl serde::Serialize) -> Value {
    serde_json::to_value(v).expect("views serialise")
}

async fn topics(State(admin): State<Arc<Admin>>) -> ApiResult {
    blocking(move || Ok(axum::Json(json!({"topics": admin.topics_view()?})))).await
}

#[derive(Debug, Deserialize)]
struct TailQuery {
    max: Option<usize>,
    partition: Option<u32>,
}

async fn tail(
    State(admin): State<Arc<Admin>>,
    UrlPath(topic): UrlPath<String>,
    Query(q): Query<TailQuery>,
) -> ApiResult {
    blocking(move || {
        let view = admin.tail_view(&topic, q.max.unwrap_or(20), q.partition)?;
        Ok(axum::Json(to_json(view)))
    })
    .await
}

#[derive(Debug, Deserialize)]
struct ProcessedQuery {
    topic: String,
    partition: u32,
    offset: u64,
}

async fn processed(
    State(admin): State<Arc<Admin>>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<ProcessedQuery>,
) -> ApiResult {
    blocking(move || {
        let view = admin.processed_by(&name, &q.topic, q.partition, q.offset)?;
        Ok(axum::Json(to_json(view)))
    })
    .await
}

#[derive(Debug, Deserialize)]
pub(super) struct DeadLettersQuery {
    pub(super) kind: Option<String>,
    pub(super) limit: Option<usize>,
}

async fn dead_letters(
    State(admin): State<Arc<Admin>>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<DeadLettersQuery>,
) -> ApiResult {
    blocking(move || {
        let kind = q.kind.filter(|k| !k.is_empty());
        let view = admin.dead_letters_view(&name, kind.as_deref(), q.limit.unwrap_or(100))?;
        Ok(axum::Json(to_json(view)))
    })
    .await
}

/// A path that does not parse, as an API error (its echo of the path clipped).
pub(super) fn path_error(r: PathRejection) -> ApiError {
    ApiError::new(r.status(), "bad-request", r.body_text())
}

async fn dead_letter(
    State(admin): State<Arc<Admin>>,
    path: Result<UrlPath<(String, u32, u64)>, PathRejection>,
) -> ApiResult {
    let UrlPath((name, partition, offset)) = path.map_err(path_error)?;
    blocking(move || {
        Ok(axum::Json(to_json(
            admin.dead_letter_view(&name, partition, offset)?,
        )))
    })
    .await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeadLetterReplayBody {
    /// (partition, offset) pairs in the dead-letter topic; absent: all.
    positions: Option<Vec<(u32, u64)>>,
    /// A kept version to replay through; absent: the active one.
    version: Option<String>,
}

async fn replay_dead_letters(
    State(admin): State<Arc<Admin>>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> ApiResult {
    let b: DeadLetterReplayBody = if body.is_empty() {
        DeadLetterReplayBody {
            positions: None,
            version: None,
        }
    } else {
        json_body(&body)?
    };
    let summary = admin
        .replay_dead_letters(&name, b.positions, b.version)
        .await?;
    Ok(axum::Json(to_json(summary)))
}

async fn rates(State(admin): State<Arc<Admin>>) -> ApiResult {
    Ok(axum::Json(json!({
        "interval_ms": super::rates::SAMPLE_INTERVAL.as_millis() as u64,
        "samples": admin.rates.samples(),
    })))
}

async fn compare(State(admin): State<Arc<Admin>>) -> ApiResult {
    blocking(move || Ok(axum::Json(to_json(admin.compare_view()?)))).await
}

#[derive(Debug, Deserialize)]
struct UploadQuery {
    #[serde(default)]
    activate: bool,
    #[serde(default)]
    shadow: bool,
    /// A JSON object of strings: the version's config instead of the processor's.
    config: Option<String>,
    canary_events: Option<u64>,
    canary_max_error_rate: Option<f64>,
}

pub(super) fn canary(
    events: Option<u64>,
    rate: Option<f64>,
) -> Result<Option<CanaryPlan>, ApiError> {
    match (events, rate) {
        (None, None) => Ok(None),
        (Some(events), Some(max_error_rate))
            if events > 0 && (0.0..=1.0).contains(&max_error_rate) =>
        {
            Ok(Some(CanaryPlan {
                events,
                max_error_rate,
            }))
        }
        _ => Err(ApiError::bad_request(
            "a canary needs both events (at least 1) and max_error_rate (0.0 to 1.0)",
        )),
    }
}

async fn upload(
    State(admin): State<Arc<Admin>>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<UploadQuery>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<(StatusCode, axum::Json<Value>), ApiError> {
    admin.processor(&name)?;
    let then = match (q.activate, q.shadow) {
        (true, true) => {
            return Err(ApiError::bad_request(
                "activate and shadow exclude each other",
            ));
        }
        (true, false) => Then::Activate(canary(q.canary_events, q.canary_max_error_rate)?),
        (false, true) => Then::Shadow,
        (false, false) => {
            canary(q.canary_events, q.canary_max_error_rate)?;
            Then::Keep
        }
    };
    let limit = admin.max_upload_bytes;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = |size_bytes: Option<u64>| -> ApiError {
        UploadError::TooLarge {
            size_bytes,
            limit_bytes: limit as u64,
        }
        .into()
    };
    if let Some(n) = declared
        && n > limit as u64
    {
        return Err(too_large(Some(n)));
    }
    // Without a Content-Length, reading stops at the limit: the body's
    // whole size is unknown then.
    let bytes: Bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(None))?;
    let config = q.config.as_deref().map(parse_config).transpose()?;
    let (activated, shadowed) = (q.activate, q.shadow);
    blocking(move || {
        let info = admin.deploy(&name, &bytes, config, then)?;
        Ok((
            StatusCode::CREATED,
            axum::Json(json!({
                "version": info,
                "activated": activated,
                "shadowed": shadowed,
            })),
        ))
    })
    .await
}

/// A version's config as the API and the console take it: a JSON object
/// of strings.
///
/// # Errors
///
/// `bad-request` naming what does not parse.
pub(super) fn parse_config(text: &str) -> Result<Vec<(String, String)>, ApiError> {
    let map: BTreeMap<String, String> = serde_json::from_str(text).map_err(|e| {
        ApiError::bad_request(format!(
            "config must be a JSON object of strings, e.g. {{\"limit\": \"3\"}}: {e}"
        ))
    })?;
    Ok(map.into_iter().collect())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionBody {
    version: Option<String>,
    canary: Option<CanaryPlan>,
}

async fn activate(
    State(admin): State<Arc<Admin>>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> ApiResult {
    let b: VersionBody = json_body(&body)?;
    let version = b
        .version
        .ok_or_else(|| ApiError::bad_request("name the version: {\"version\": \"<sha256>\"}"))?;
    if let Some(c) = b.canary {
        canary(Some(c.events), Some(c.max_error_rate))?;
    }
    blocking(move || {
        let sha = admin.activate(&name, &version, "activate", b.canary)?;
        Ok(axum::Json(
            json!({"processor": name, "version": sha, "pending": true}),
        ))
    })
    .await
}

async fn rollback(
    State(admin): State<Arc<Admin>>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> ApiResult {
    let b: VersionBody = if body.is_empty() {
        VersionBody {
            version: None,
            canary: None,
        }
    } else {
        json_body(&body)?
    };
    blocking(move || {
        let sha = admin.rollback(&name, b.version)?;
        Ok(axum::Json(
            json!({"processor": name, "version": sha, "pending": true}),
        ))
    })
    .await
}

async fn shadow(
    State(admin): State<Arc<Admin>>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> ApiResult {
    let b: VersionBody = json_body(&body)?;
    let version = b
        .version
        .ok_or_else(|| ApiError::bad_request("name the version: {\"version\": \"<sha256>\"}"))?;
    blocking(move || {
        let sha = admin.shadow(&name, &version)?;
        Ok(axum::Json(json!({"processor": name, "shadow": sha})))
    })
    .await
}

async fn unshadow(State(admin): State<Arc<Admin>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    admin.processor(&name)?.control.set_shadow(None);
    Ok(axum::Json(json!({"processor": name, "shadow": null})))
}

async fn shadow_report(
    State(admin): State<Arc<Admin>>,
    UrlPath(name): UrlPath<String>,
) -> ApiResult {
    let m = admin.processor(&name)?;
    match m.control.status().shadow {
        Some(r) => Ok(axum::Json(serde_json::to_value(r).expect("serialisable"))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no-shadow",
            format!("processor {name:?} has no shadow version"),
        )),
    }
}

async fn pause(State(admin): State<Arc<Admin>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    admin.processor(&name)?.control.set_paused(true);
    Ok(axum::Json(json!({"processor": name, "paused": true})))
}

async fn resume(State(admin): State<Arc<Admin>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    admin.processor(&name)?.control.set_paused(false);
    Ok(axum::Json(json!({"processor": name, "paused": false})))
}

async fn sinks(State(admin): State<Arc<Admin>>) -> ApiResult {
    blocking(move || {
        let stats = crate::processing::stats::read_all(&admin.log)?;
        let sinks: Vec<Value> = admin
            .sinks
            .values()
            .map(|s| admin.sink_json(s, stats.get(s.name())))
            .collect();
        Ok(axum::Json(json!({ "sinks": sinks })))
    })
    .await
}

async fn sink(State(admin): State<Arc<Admin>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    blocking(move || {
        let s = admin.sink(&name)?;
        let stats = crate::processing::stats::read_all(&admin.log)?;
        Ok(axum::Json(admin.sink_json(s, stats.get(&name))))
    })
    .await
}

async fn sink_pause(State(admin): State<Arc<Admin>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    admin.sink(&name)?.set_paused(true);
    Ok(axum::Json(json!({"sink": name, "paused": true})))
}

async fn sink_resume(State(admin): State<Arc<Admin>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    admin.sink(&name)?.set_paused(false);
    Ok(axum::Json(json!({"sink": name, "paused": false})))
}

/// A sink's replay: its positions go back; records are delivered again with
/// their idempotency keys (the destination decides: PostgreSQL's `ON
/// CONFLICT`, the endpoint's `Idempotency-Key`).
async fn sink_replay(
    State(admin): State<Arc<Admin>>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> ApiResult {
    let b: ReplayBody = json_body(&body)?;
    let s = admin.sink(&name)?;
    if b.reprocess {
        return Err(ApiError::bad_request(
            "a sink has no idempotency epoch to reprocess under: replay it without reprocess, and its records are delivered again with their idempotency keys",
        ));
    }
    let from = replay_from(&b)?;
    s.request_replay(from);
    Ok(axum::Json(json!({"sink": name, "from": from})))
}

fn replay_from(b: &ReplayBody) -> Result<ReplayFrom, ApiError> {
    match (b.from_offset, &b.from_time) {
        (Some(o), None) => Ok(ReplayFrom::Offset(o)),
        (None, Some(t)) => {
            let at = chrono::DateTime::parse_from_rfc3339(t).map_err(|e| {
                ApiError::bad_request(format!(
                    "from_time {t:?} is not an RFC 3339 time (e.g. 2026-11-30T12:00:00Z): {e}"
                ))
            })?;
            Ok(ReplayFrom::TimeMs(at.timestamp_millis()))
        }
        _ => Err(ApiError::bad_request(
            "give exactly one of from_offset and from_time",
        )),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplayBody {
    from_offset: Option<u64>,
    /// RFC 3339, e.g. `2026-11-30T12:00:00Z`.
    from_time: Option<String>,
    #[serde(default)]
    reprocess: bool,
}

async fn replay(
    State(admin): State<Arc<Admin>>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> ApiResult {
    let b: ReplayBody = json_body(&body)?;
    let from = replay_from(&b)?;
    blocking(move || {
        let m = admin.processor(&name)?;
        let epoch = if b.reprocess {
            admin.registry.bump_epoch(&name)?
        } else {
            admin.registry.epoch(&name)?
        };
        m.control.request_replay(Replay { from, epoch });
        Ok(axum::Json(json!({
            "processor": name,
            "from": from,
            "reprocess": b.reprocess,
            "epoch": epoch,
        })))
    })
    .await
}

async fn delete_version(
    State(admin): State<Arc<Admin>>,
    UrlPath((name, version)): UrlPath<(String, String)>,
) -> ApiResult {
    blocking(move || {
        let m = admin.processor(&name)?;
        let info = admin.registry.version(&name, &version)?;
        let st = m.control.status();
        if info.sha256 == st.active_version || st.pending_version.as_deref() == Some(&info.sha256) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "version-active",
                format!("version {} is active: activate another first", info.sha256),
            ));
        }
        let info = admin.registry.delete(&name, &version)?;
        Ok(axum::Json(
            json!({"processor": name, "deleted": info.sha256}),
        ))
    })
    .await
}

fn json_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the body is not the JSON expected: {e}")))
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_compared_whole() {
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "abc"));
        h.insert("authorization", "Bearer abc".parse().unwrap());
        assert!(authorized(&h, "abc"));
        assert!(!authorized(&h, "abcd"));
        assert!(!authorized(&h, "abd"));
        h.insert("authorization", "bearer abc".parse().unwrap());
        assert!(authorized(&h, "abc"), "the scheme is case-insensitive");
        h.insert("authorization", "Basic abc".parse().unwrap());
        assert!(!authorized(&h, "abc"));
    }

    #[test]
    fn the_openapi_document_is_json_and_names_every_route() {
        let doc: Value = serde_json::from_str(OPENAPI).unwrap();
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/healthz",
            "/metrics",
            "/v1/processors",
            "/v1/processors/{name}",
            "/v1/processors/{name}/versions",
            "/v1/processors/{name}/versions/{version}",
            "/v1/processors/{name}/activate",
            "/v1/processors/{name}/rollback",
            "/v1/processors/{name}/shadow",
            "/v1/processors/{name}/pause",
            "/v1/processors/{name}/resume",
            "/v1/processors/{name}/replay",
            "/v1/sinks",
            "/v1/sinks/{name}",
            "/v1/sinks/{name}/pause",
            "/v1/sinks/{name}/resume",
            "/v1/sinks/{name}/replay",
            "/v1/processors/{name}/processed",
            "/v1/processors/{name}/dead-letters",
            "/v1/processors/{name}/dead-letters/{partition}/{offset}",
            "/v1/processors/{name}/dead-letters/replay",
            "/v1/topics",
            "/v1/topics/{name}/records",
            "/v1/rates",
            "/v1/compare",
        ] {
            assert!(paths.contains_key(p), "{p} is not documented");
        }
    }
}
