//! The API's routes and handlers: JSON in and out, the bearer token on
//! every mutating call.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::Admin;
use crate::control::registry::UploadError;
use crate::control::{CanaryPlan, Replay, ReplayFrom, Swap};

/// An error of the API: an HTTP status, a stable code and a message.
///
/// Codes: `unauthorized`, `no-such-processor`, `no-such-version`, `bad-version`,
/// `component-too-large`, `not-webassembly`, `core-module`,
/// `world-mismatch`, `invalid-component`, `init-failed`, `bad-request`,
/// `no-previous-version`, `version-active`, `no-shadow`,
/// `storage`, `internal`.
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
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
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
        .layer(axum::middleware::from_fn_with_state(
            admin.clone(),
            authorize,
        ))
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
fn same_token(given: &str, token: &str) -> bool {
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
        let stats = crate::processing::stats::read_all(&admin.log).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
        })?;
        let processors: Vec<Value> = admin
            .processors
            .iter()
            .map(|(n, m)| admin.status_json(n, m, stats.get(n)))
            .collect();
        Ok(axum::Json(json!({
            "processors": processors,
            "live_instances": admin.registry.runtime().live_instances(),
        })))
    })
    .await
}

async fn one(State(admin): State<Arc<Admin>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    blocking(move || {
        let m = admin.processor(&name)?;
        let stats = crate::processing::stats::read_all(&admin.log).map_err(|e| {
            ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
        })?;
        Ok(axum::Json(admin.status_json(&name, m, stats.get(&name))))
    })
    .await
}

async fn versions(State(admin): State<Arc<Admin>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    blocking(move || {
        let m = admin.processor(&name)?;
        let active = m.control.status().active_version;
        let versions: Vec<Value> = admin
            .registry
            .versions(&name)?
            .into_iter()
            .map(|v| {
                let mut j = serde_json::to_value(&v).expect("serialisable");
                j["active"] = Value::Bool(v.sha256 == active);
                j
            })
            .collect();
        Ok(axum::Json(json!({
            "processor": name,
            "active_version": active,
            "versions": versions,
            "history": admin.registry.history(&name)?,
        })))
    })
    .await
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

fn canary(events: Option<u64>, rate: Option<f64>) -> Result<Option<CanaryPlan>, ApiError> {
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
    if q.activate && q.shadow {
        return Err(ApiError::bad_request(
            "activate and shadow exclude each other",
        ));
    }
    let limit = admin.max_upload_bytes;
    let declared = headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let too_large = |size: u64| -> ApiError {
        UploadError::TooLarge {
            size_bytes: size,
            limit_bytes: limit as u64,
        }
        .into()
    };
    if let Some(n) = declared
        && n > limit as u64
    {
        return Err(too_large(n));
    }
    let bytes: Bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|_| too_large(declared.unwrap_or(limit as u64 + 1)))?;
    let config = match &q.config {
        None => None,
        Some(text) => {
            let map: BTreeMap<String, String> = serde_json::from_str(text).map_err(|e| {
                ApiError::bad_request(format!("config must be a JSON object of strings: {e}"))
            })?;
            Some(map.into_iter().collect())
        }
    };
    let plan = canary(q.canary_events, q.canary_max_error_rate)?;
    blocking(move || {
        let (info, loaded) = admin.upload(&name, &bytes, config)?;
        tracing::info!(processor = %name, version = %info.sha256, size_bytes = info.size_bytes, "version uploaded");
        let m = admin.processor(&name)?;
        if q.activate {
            let handler = admin.handler(&name, m, loaded, info.config.clone())?;
            m.control.request_swap(Swap {
                handler,
                reason: "activate".into(),
                canary: plan.or(m.canary),
            });
        } else if q.shadow {
            let handler = admin.handler(&name, m, loaded, info.config.clone())?;
            m.control.set_shadow(Some(handler));
        }
        Ok((
            StatusCode::CREATED,
            axum::Json(json!({
                "version": info,
                "activated": q.activate,
                "shadowed": q.shadow,
            })),
        ))
    })
    .await
}

#[derive(Debug, Deserialize)]
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
        admin.processor(&name)?;
        let target = match b.version {
            Some(v) => v,
            None => admin.registry.previous(&name)?.ok_or_else(|| {
                ApiError::new(
                    StatusCode::CONFLICT,
                    "no-previous-version",
                    format!("processor {name:?} has no earlier version to go back to (only ones a canary rolled back, or deleted ones): name the version"),
                )
            })?,
        };
        let sha = admin.activate(&name, &target, "rollback", None)?;
        Ok(axum::Json(json!({"processor": name, "version": sha, "pending": true})))
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
        let m = admin.processor(&name)?;
        let (info, loaded) = admin.registry.load(&name, &version)?;
        let handler = admin.handler(&name, m, loaded, info.config)?;
        m.control.set_shadow(Some(handler));
        Ok(axum::Json(
            json!({"processor": name, "shadow": info.sha256}),
        ))
    })
    .await
}

async fn unshadow(State(admin): State<Arc<Admin>>, UrlPath(name): UrlPath<String>) -> ApiResult {
    let m = admin.processor(&name)?;
    m.control.set_shadow(None);
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

#[derive(Debug, Deserialize)]
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
    let from = match (b.from_offset, &b.from_time) {
        (Some(o), None) => ReplayFrom::Offset(o),
        (None, Some(t)) => {
            let at = chrono::DateTime::parse_from_rfc3339(t).map_err(|e| {
                ApiError::bad_request(format!(
                    "from_time {t:?} is not an RFC 3339 time (e.g. 2026-11-30T12:00:00Z): {e}"
                ))
            })?;
            ReplayFrom::TimeMs(at.timestamp_millis())
        }
        _ => {
            return Err(ApiError::bad_request(
                "give exactly one of from_offset and from_time",
            ));
        }
    };
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
        ] {
            assert!(paths.contains_key(p), "{p} is not documented");
        }
    }
}
