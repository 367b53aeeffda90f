//! The admin HTTP API of `tidewater run`: upload versions, list processors
//! and versions, activate, roll back, shadow, pause, resume, replay;
//! `/metrics` (Prometheus text format), `/healthz`, and the OpenAPI document
//! at `/openapi.json`.
//!
//! - JSON in and out; a version is uploaded as the raw `.wasm` body.
//! - Served only when asked (`[admin] listen` or `run --admin ADDR`), on
//!   a loopback address such as 127.0.0.1:7070; a non-loopback address needs
//!   a configured token, else `run` refuses to start.
//! - Every mutating call (POST, DELETE) needs `Authorization: Bearer
//!   <token>`; without it the answer is 401 and nothing changes. The token
//!   is `[admin] token`, else `TIDEWATER_ADMIN_TOKEN`, else one made up at
//!   start and written, with the address, to the data dir (`admin.token`,
//!   `admin.url`), where the CLI on the same machine finds them.
//! - Errors are `{"error": {"code": "...", "message": "..."}}` with a stable
//!   code (see [`ApiError`]).

pub mod client;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::control::{CanaryPlan, Control, Replay, ReplayFrom, Swap};
use crate::log::Log;
use crate::pipeline::WasmHandler;
use crate::registry::{self, Registry, UploadError};
use crate::runtime::{Limits, LoadedComponent};

/// The file in the data dir that holds the running host's admin URL.
pub const URL_FILE: &str = "admin.url";
/// The file in the data dir that holds the running host's admin token.
pub const TOKEN_FILE: &str = "admin.token";

/// `[admin]`: the admin HTTP API of `tidewater run`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The address to listen on, e.g. `127.0.0.1:7070` (port 0: any free
    /// port). Absent: no admin API (unless `run --admin` gives one).
    pub listen: Option<String>,
    /// The bearer token of mutating calls. Absent: `TIDEWATER_ADMIN_TOKEN`,
    /// else a random one written to the data dir.
    pub token: Option<String>,
    /// Largest component accepted by an upload, in bytes. Default 64 MiB.
    pub max_upload_bytes: usize,
    /// A directory to watch: a new or changed `<processor>.wasm` in it is
    /// uploaded and activated. Relative to the config file.
    pub watch_dir: Option<PathBuf>,
    /// How often the watched directory is polled. Default 1 s.
    #[serde(with = "humantime_serde")]
    pub watch_interval: Duration,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: None,
            token: None,
            max_upload_bytes: registry::DEFAULT_MAX_UPLOAD_BYTES,
            watch_dir: None,
            watch_interval: Duration::from_secs(1),
        }
    }
}

/// How `run` serves the admin API.
#[derive(Debug, Default)]
pub struct AdminOptions {
    /// Where to listen; `None`: no API.
    pub listen: Option<SocketAddr>,
    /// The bearer token; `None`: a random one (see the module docs).
    pub token: Option<String>,
    /// Largest upload, in bytes.
    pub max_upload_bytes: usize,
    /// Told the bound address once the API listens.
    pub bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
    /// A plugins directory to watch, and how often.
    pub watch: Option<(PathBuf, Duration)>,
    /// Start every processor paused (resume it through the API), e.g. to
    /// set up a shadow or a canary before the first event.
    pub start_paused: bool,
}

impl AdminOptions {
    /// The options of `config`'s `[admin]` section, with `listen` (e.g.
    /// from `run --admin`) and `env_token` (`TIDEWATER_ADMIN_TOKEN`) taking
    /// precedence where given. `base` is the config file's directory.
    ///
    /// # Errors
    ///
    /// When the address does not parse.
    pub fn from_config(
        config: Option<&AdminConfig>,
        listen: Option<&str>,
        env_token: Option<String>,
        base: &Path,
    ) -> Result<Self, String> {
        let c = config.cloned().unwrap_or_default();
        let listen = listen.map(str::to_owned).or(c.listen);
        let listen = match listen {
            None => None,
            Some(a) => Some(a.parse::<SocketAddr>().map_err(|e| {
                format!("admin address {a:?} is not an address:port (e.g. 127.0.0.1:7070): {e}")
            })?),
        };
        Ok(AdminOptions {
            listen,
            token: c.token.or(env_token).filter(|t| !t.is_empty()),
            max_upload_bytes: c.max_upload_bytes,
            bound: None,
            watch: c.watch_dir.map(|d| (base.join(d), c.watch_interval)),
            start_paused: false,
        })
    }
}

/// An error of the API: an HTTP status, a stable code and a message.
///
/// Codes: `unauthorized`, `no-such-processor`, `no-such-version`, `bad-version`,
/// `component-too-large`, `not-webassembly`, `core-module`,
/// `world-mismatch`, `invalid-component`, `init-failed`, `bad-request`,
/// `no-previous-version`, `version-active`, `no-shadow`,
/// `replay-unsupported`, `storage`, `internal`.
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
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
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

type ApiResult = Result<axum::Json<Value>, ApiError>;

/// One processor as the admin side sees it.
pub struct Managed {
    /// Its control.
    pub control: Arc<Control>,
    /// Its limits (for instantiating new versions).
    pub limits: Limits,
    /// Its config from the TOML file (`init`'s pairs), the default config of a new version.
    pub config: Vec<(String, String)>,
    /// Whether its source can replay (the embedded log can; Kafka not yet).
    pub can_replay: bool,
    /// The canary every activation of a new version gets unless it asks for
    /// its own (`canary` in the processor's config).
    pub canary: Option<CanaryPlan>,
}

/// What the API works on.
pub struct Admin {
    registry: Registry,
    log: Log,
    processors: BTreeMap<String, Managed>,
    token: String,
    max_upload_bytes: usize,
}

impl Admin {
    /// The admin side of a running host.
    pub fn new(
        registry: Registry,
        log: Log,
        processors: BTreeMap<String, Managed>,
        token: String,
        max_upload_bytes: usize,
    ) -> Arc<Self> {
        Arc::new(Admin {
            registry,
            log,
            processors,
            token,
            max_upload_bytes,
        })
    }

    fn processor(&self, name: &str) -> Result<&Managed, ApiError> {
        self.processors.get(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no-such-processor",
                format!(
                    "no processor {name:?} runs here (running: {})",
                    self.processors
                        .keys()
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
        })
    }

    /// Validates and keeps `bytes` as a version of `name` (see
    /// [`Registry::upload`]), with `config` or, when `None`, the processor's.
    ///
    /// # Errors
    ///
    /// [`ApiError`] with the [`UploadError`]'s code; nothing changed then.
    pub fn upload(
        &self,
        name: &str,
        bytes: &[u8],
        config: Option<Vec<(String, String)>>,
    ) -> Result<(registry::VersionInfo, Arc<LoadedComponent>), ApiError> {
        let m = self.processor(name)?;
        let config = config.unwrap_or_else(|| m.config.clone());
        Ok(self
            .registry
            .upload(name, bytes, self.max_upload_bytes, config, m.limits)?)
    }

    /// Instantiates version `version` of `name` (`init` with the version's
    /// config) and hands it to the processor for its next batch boundary.
    ///
    /// # Errors
    ///
    /// [`ApiError`]: no such processor or version, `init` failed.
    pub fn activate(
        &self,
        name: &str,
        version: &str,
        reason: &str,
        canary: Option<CanaryPlan>,
    ) -> Result<String, ApiError> {
        let m = self.processor(name)?;
        let (info, loaded) = self.registry.load(name, version)?;
        let handler = self.handler(name, m, loaded, info.config)?;
        // Going back to a known version is no trial; anything else gets the
        // processor's canary unless the call asked for its own.
        let canary = if reason == "rollback" {
            canary
        } else {
            canary.or(m.canary)
        };
        m.control.request_swap(Swap {
            handler,
            reason: reason.to_owned(),
            canary,
        });
        Ok(info.sha256)
    }

    fn handler(
        &self,
        name: &str,
        m: &Managed,
        loaded: Arc<LoadedComponent>,
        config: Vec<(String, String)>,
    ) -> Result<Box<dyn crate::pipeline::Handler>, ApiError> {
        let handler = WasmHandler::new(
            self.registry.runtime().clone(),
            loaded,
            name.into(),
            m.limits,
            config,
        )
        .map_err(|e| {
            ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "init-failed",
                format!("init failed with the processor's config: {e}"),
            )
        })?;
        Ok(Box::new(handler))
    }

    fn status_json(
        &self,
        name: &str,
        m: &Managed,
        stats: Option<&crate::stats::ProcessorStats>,
    ) -> Value {
        let st = m.control.status();
        // A running processor paused through the API is "paused".
        let state = if st.paused && st.state == "running" {
            "paused"
        } else {
            st.state.as_str()
        };
        json!({
            "name": name,
            "state": state,
            "active_version": st.active_version,
            "pending_version": st.pending_version,
            "paused": st.paused,
            "lag": stats.map_or(0, |s| s.lag),
            "counters": stats.map(|s| s.counters).unwrap_or_default(),
            "swaps": st.swaps,
            "epoch": st.epoch,
            "replays": st.replays,
            "shadow": st.shadow,
            "canary": st.canary,
            "last_rollback": st.last_rollback,
            "last_replay_error": st.last_replay_error,
            "last_swap_pause_us": st.last_swap_pause_us,
            "max_swap_pause_us": st.max_swap_pause_us,
        })
    }
}

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
        .route("/metrics", get(metrics))
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

async fn blocking<T: Send + 'static>(
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
        let stats = crate::stats::read_all(&admin.log).map_err(|e| {
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
        let stats = crate::stats::read_all(&admin.log).map_err(|e| {
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
        if !m.can_replay {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "replay-unsupported",
                format!("processor {name:?} reads Kafka, and replay works on the embedded log only (for now)"),
            ));
        }
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

async fn metrics(State(admin): State<Arc<Admin>>) -> Result<Response, ApiError> {
    let text = blocking(move || render_metrics(&admin)).await?;
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
        .into_response())
}

fn render_metrics(admin: &Admin) -> Result<String, ApiError> {
    use prometheus_client::metrics::counter::Counter;
    use prometheus_client::metrics::family::Family;
    use prometheus_client::metrics::gauge::Gauge;
    type Labels = Vec<(String, String)>;
    let stats = crate::stats::read_all(&admin.log)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string()))?;
    let mut reg = prometheus_client::registry::Registry::with_prefix("tidewater");
    type Get = fn(&crate::stats::Counters) -> u64;
    let counters: [(&str, &str, Get); 6] = [
        ("events_in", "Events read from the inputs", |c| c.events_in),
        ("duplicates", "Events skipped as duplicates", |c| {
            c.duplicates
        }),
        (
            "conflicts",
            "Events whose key came with a different payload",
            |c| c.conflicts,
        ),
        ("outputs", "Records published", |c| c.outputs),
        (
            "dead_lettered",
            "Events sent to the dead-letter topic",
            |c| c.dead_lettered,
        ),
        ("errors", "Events the component failed on", |c| c.errors),
    ];
    for (name, help, get) in counters {
        let fam = Family::<Labels, Counter>::default();
        for (p, s) in &stats {
            fam.get_or_create(&vec![("processor".into(), p.clone())])
                .inc_by(get(&s.counters));
        }
        reg.register(name, help, fam);
    }
    let lag = Family::<Labels, Gauge>::default();
    let swaps = Family::<Labels, Counter>::default();
    let active = Family::<Labels, Gauge>::default();
    let shadow_diff = Family::<Labels, Counter>::default();
    let shadow_compared = Family::<Labels, Counter>::default();
    for (p, m) in &admin.processors {
        let st = m.control.status();
        let l = vec![("processor".to_owned(), p.clone())];
        lag.get_or_create(&l)
            .set(stats.get(p).map_or(0, |s| s.lag) as i64);
        swaps.get_or_create(&l).inc_by(st.swaps);
        active
            .get_or_create(&vec![
                ("processor".to_owned(), p.clone()),
                ("version".to_owned(), st.active_version.clone()),
            ])
            .set(1);
        if let Some(s) = &st.shadow {
            shadow_compared.get_or_create(&l).inc_by(s.compared);
            shadow_diff.get_or_create(&l).inc_by(s.different);
        }
    }
    reg.register("lag", "Records in the inputs not yet read", lag);
    reg.register("swaps", "Versions swapped in since the host started", swaps);
    reg.register(
        "active_version",
        "1 for the version each processor runs",
        active,
    );
    reg.register(
        "shadow_compared",
        "Events compared with the shadow version",
        shadow_compared,
    );
    reg.register(
        "shadow_different",
        "Events on which the shadow differed",
        shadow_diff,
    );
    let live = Gauge::<i64>::default();
    live.set(admin.registry.runtime().live_instances() as i64);
    reg.register("live_instances", "Component instances alive", live);
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &reg)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    Ok(out)
}

async fn openapi() -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

/// The OpenAPI 3.1 document of this API.
pub const OPENAPI: &str = include_str!("admin/openapi.json");

/// A random token: 32 bytes of the OS's randomness, hex.
///
/// # Errors
///
/// When the OS's randomness cannot be read.
pub fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(hex::encode(b))
}

/// Writes the admin URL and token into `data_dir` for the CLI, the token
/// readable by its owner only.
///
/// # Errors
///
/// I/O errors.
pub fn write_discovery(data_dir: &Path, addr: SocketAddr, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::write(data_dir.join(URL_FILE), format!("http://{addr}\n"))?;
    let path = data_dir.join(TOKEN_FILE);
    let _ = std::fs::remove_file(&path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(token.as_bytes())?;
    Ok(())
}

/// Removes what [`write_discovery`] wrote.
pub fn remove_discovery(data_dir: &Path) {
    let _ = std::fs::remove_file(data_dir.join(URL_FILE));
    let _ = std::fs::remove_file(data_dir.join(TOKEN_FILE));
}

/// Polls `dir` every `interval` until `stop` is set: a new or changed
/// `<processor>.wasm` (by size and modification time) whose SHA-256 is not
/// the processor's active version is uploaded and activated. Files named
/// after no processor are ignored; a refused upload is logged.
pub async fn watch(
    admin: Arc<Admin>,
    dir: PathBuf,
    interval: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut seen: BTreeMap<PathBuf, (u64, std::time::SystemTime)> = BTreeMap::new();
    let mut first = true;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let a = admin.clone();
        let d = dir.clone();
        let mut s = std::mem::take(&mut seen);
        let f = first;
        seen = tokio::task::spawn_blocking(move || {
            watch_once(&a, &d, &mut s, f);
            s
        })
        .await
        .unwrap_or_default();
        first = false;
        tokio::time::sleep(interval).await;
    }
}

fn watch_once(
    admin: &Admin,
    dir: &Path,
    seen: &mut BTreeMap<PathBuf, (u64, std::time::SystemTime)>,
    first: bool,
) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        if first {
            tracing::warn!(dir = %dir.display(), "the plugins directory to watch cannot be read");
        }
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Some(name) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".wasm"))
        else {
            continue;
        };
        let Ok(meta) = e.metadata() else { continue };
        let stamp = (meta.len(), meta.modified().unwrap_or(std::time::UNIX_EPOCH));
        if seen.get(&path) == Some(&stamp) {
            continue;
        }
        seen.insert(path.clone(), stamp);
        let Some(m) = admin.processors.get(name) else {
            // Said once per change of the file, so a misnamed one is noticed.
            tracing::warn!(
                file = %path.display(),
                processors = ?admin.processors.keys().collect::<Vec<_>>(),
                "the watched file names no running processor (NAME.wasm deploys to processor NAME); left alone"
            );
            continue;
        };
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let sha = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&bytes))
        };
        let st = m.control.status();
        if st.active_version == sha || st.pending_version.as_deref() == Some(sha.as_str()) {
            continue;
        }
        match admin
            .upload(name, &bytes, None)
            .and_then(|(info, _)| admin.activate(name, &info.sha256, "watch", None))
        {
            Ok(v) => {
                tracing::info!(processor = %name, version = %v, file = %path.display(), "deployed from the watched directory")
            }
            Err(e) => {
                tracing::warn!(processor = %name, file = %path.display(), code = e.code, error = %e.message, "the watched file was not deployed")
            }
        }
    }
}

/// The admin side of a running host: the API server and the watcher, if
/// any, and every processor's control.
pub struct Running {
    admin: Arc<Admin>,
    server: Option<(
        tokio::task::JoinHandle<std::io::Result<()>>,
        tokio::sync::oneshot::Sender<()>,
    )>,
    watcher: Option<(
        tokio::task::JoinHandle<()>,
        Arc<std::sync::atomic::AtomicBool>,
    )>,
}

impl Running {
    /// The control of processor `name`.
    ///
    /// # Panics
    ///
    /// When no such processor was started.
    pub fn control(&self, name: &str) -> Arc<Control> {
        self.admin.processors[name].control.clone()
    }

    /// The version processor `name` runs now.
    pub fn active_version(&self, name: &str) -> Option<String> {
        self.admin
            .processors
            .get(name)
            .map(|m| m.control.status().active_version)
    }

    /// Stops the server and the watcher and removes the discovery files
    /// from `data_dir`.
    pub async fn stop(&mut self, data_dir: &Path) {
        if let Some((task, stop)) = self.watcher.take() {
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            task.abort();
            let _ = task.await;
        }
        if let Some((task, tx)) = self.server.take() {
            let _ = tx.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            remove_discovery(data_dir);
        }
    }
}

/// Starts the admin API (when `options.listen` is set) and the plugins-dir
/// watcher (when `options.watch` is set) for the processors in `managed`.
///
/// # Errors
///
/// [`crate::host::RunError::Admin`] when the address is refused (see
/// [`check_bind`]) or cannot be bound, or no token can be made.
pub async fn start(
    options: &mut AdminOptions,
    data_dir: &Path,
    registry: Registry,
    log: Log,
    managed: BTreeMap<String, Managed>,
) -> Result<Running, crate::host::RunError> {
    let fail = crate::host::RunError::Admin;
    let token = match &options.token {
        Some(t) => t.clone(),
        None => random_token().map_err(|e| fail(format!("cannot make an admin token: {e}")))?,
    };
    let admin = Admin::new(
        registry,
        log,
        managed,
        token.clone(),
        options.max_upload_bytes,
    );
    let mut server = None;
    if let Some(addr) = options.listen {
        check_bind(addr, options.token.is_some()).map_err(fail)?;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| fail(format!("cannot listen on {addr}: {e}")))?;
        let bound = listener
            .local_addr()
            .map_err(|e| fail(format!("cannot listen on {addr}: {e}")))?;
        write_discovery(data_dir, bound, &token).map_err(|e| {
            fail(format!(
                "cannot write the admin URL and token into {}: {e}",
                data_dir.display()
            ))
        })?;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve(admin.clone(), listener, async move {
            let _ = rx.await;
        }));
        tracing::info!(url = %format!("http://{bound}"), "admin API listening");
        if let Some(b) = options.bound.take() {
            let _ = b.send(bound);
        }
        server = Some((task, tx));
    }
    let watcher = options.watch.clone().map(|(dir, interval)| {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        tracing::info!(dir = %dir.display(), "watching for new versions");
        (
            tokio::spawn(watch(admin.clone(), dir, interval, stop.clone())),
            stop,
        )
    });
    Ok(Running {
        admin,
        server,
        watcher,
    })
}

/// Whether the API may listen on `addr`: loopback always; any other
/// address only with a configured token.
///
/// # Errors
///
/// The reason, for people.
pub fn check_bind(addr: SocketAddr, configured_token: bool) -> Result<(), String> {
    if addr.ip().is_loopback() || configured_token {
        Ok(())
    } else {
        Err(format!(
            "the admin API would listen on {addr}, which is not a loopback address, without a token: set [admin] token or TIDEWATER_ADMIN_TOKEN, or listen on 127.0.0.1"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_admin_section_parses_and_the_flag_and_env_win() {
        let c = crate::config::Config::parse(
            "[admin]\nlisten = \"127.0.0.1:7070\"\nmax_upload_bytes = 1000\nwatch_dir = \"plugins\"\nwatch_interval = \"250ms\"\n",
        )
        .unwrap();
        let a = c.admin.as_ref().unwrap();
        let o = AdminOptions::from_config(Some(a), None, Some("env".into()), Path::new("/etc/tw"))
            .unwrap();
        assert_eq!(o.listen, Some("127.0.0.1:7070".parse().unwrap()));
        assert_eq!(o.token.as_deref(), Some("env"));
        assert_eq!(o.max_upload_bytes, 1000);
        assert_eq!(
            o.watch,
            Some((PathBuf::from("/etc/tw/plugins"), Duration::from_millis(250)))
        );
        let o =
            AdminOptions::from_config(Some(a), Some("127.0.0.1:0"), None, Path::new(".")).unwrap();
        assert_eq!(o.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(o.token, None);
        let o = AdminOptions::from_config(None, None, None, Path::new(".")).unwrap();
        assert_eq!((o.listen, o.max_upload_bytes), (None, 64 << 20));
        let err =
            AdminOptions::from_config(None, Some("localhost"), None, Path::new(".")).unwrap_err();
        assert!(
            err.contains("\"localhost\" is not an address:port"),
            "{err}"
        );
        let err = crate::config::Config::parse("[admin]\nlisten_on = \"x\"\n").unwrap_err();
        assert!(err.contains("unknown field `listen_on`"), "{err}");
    }

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
    fn non_loopback_needs_a_token() {
        assert!(check_bind("127.0.0.1:0".parse().unwrap(), false).is_ok());
        assert!(check_bind("[::1]:0".parse().unwrap(), false).is_ok());
        let err = check_bind("0.0.0.0:7070".parse().unwrap(), false).unwrap_err();
        assert!(err.contains("0.0.0.0:7070"), "{err}");
        assert!(check_bind("0.0.0.0:7070".parse().unwrap(), true).is_ok());
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
