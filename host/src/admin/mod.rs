//! The admin HTTP API of `tidewater run`: upload versions, list processors
//! and versions, activate, roll back, shadow, pause, resume, replay; list,
//! pause, resume and replay sinks (`/v1/sinks`);
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
//!
//! - `api`: the routes and their handlers, authorization.
//! - `metrics`: `/metrics`.
//! - `watch`: the plugins-dir watcher.
//! - [`client`]: the CLI's client of this API.

mod api;
pub mod client;
mod metrics;
mod watch;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

pub use api::{ApiError, OPENAPI, router, serve};

use crate::control::registry::{self, Registry};
use crate::control::{CanaryPlan, Control, Swap};
use crate::processing::stats::ProcessorStats;
use crate::processing::{Handler, WasmHandler};
use crate::runtime::{Limits, LoadedComponent};
use crate::streams::embedded::Log;
use crate::streams::ingest::IngestMetrics;
use crate::streams::sinks::SinkControl;

/// Why the admin API could not start: for people.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

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
    pub(super) registry: Registry,
    pub(super) log: Log,
    pub(super) processors: BTreeMap<String, Managed>,
    pub(super) sinks: BTreeMap<String, Arc<SinkControl>>,
    pub(super) token: String,
    pub(super) max_upload_bytes: usize,
    /// The live ingest's metrics, when the host runs ingest.
    pub(super) ingest: Option<Arc<IngestMetrics>>,
}

impl Admin {
    /// The admin side of a running host; `ingest` adds the live ingest's
    /// metrics to `/metrics`.
    pub fn new(
        registry: Registry,
        log: Log,
        processors: BTreeMap<String, Managed>,
        sinks: Vec<Arc<SinkControl>>,
        token: String,
        max_upload_bytes: usize,
        ingest: Option<Arc<IngestMetrics>>,
    ) -> Arc<Self> {
        Arc::new(Admin {
            registry,
            log,
            processors,
            sinks: sinks
                .into_iter()
                .map(|s| (s.name().to_owned(), s))
                .collect(),
            token,
            max_upload_bytes,
            ingest,
        })
    }

    pub(super) fn sink(&self, name: &str) -> Result<&Arc<SinkControl>, ApiError> {
        self.sinks.get(name).ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no-such-sink",
                format!(
                    "no sink {name:?} runs here (running: {})",
                    self.sinks.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            )
        })
    }

    pub(super) fn sink_json(&self, s: &SinkControl, stats: Option<&ProcessorStats>) -> Value {
        let st = s.status();
        let state = match (&st.unhealthy, s.paused()) {
            _ if st.state != "running" => st.state.clone(),
            (_, true) => "paused".to_owned(),
            (Some(_), false) => "unhealthy".to_owned(),
            (None, false) => "running".to_owned(),
        };
        json!({
            "name": s.name(),
            "kind": s.kind(),
            "topic": s.topic(),
            "state": state,
            "paused": s.paused(),
            "healthy": st.unhealthy.is_none(),
            "unhealthy": st.unhealthy,
            "lag": stats.map_or(0, |x| x.lag),
            "counters": stats.map(|x| x.counters).unwrap_or_default(),
            "error_codes": stats.map(|x| x.error_codes.clone()).unwrap_or_default(),
            "replays": st.replays,
            "last_replay_error": st.last_replay_error,
        })
    }

    pub(super) fn processor(&self, name: &str) -> Result<&Managed, ApiError> {
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
    ) -> Result<Box<dyn Handler>, ApiError> {
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

    pub(super) fn status_json(
        &self,
        name: &str,
        m: &Managed,
        stats: Option<&ProcessorStats>,
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
/// watcher (when `options.watch` is set) for the processors in `managed`
/// and the `sinks`; `/metrics` includes `ingest`'s when given.
///
/// # Errors
///
/// [`StartError`] when the address is refused (see [`check_bind`]) or
/// cannot be bound, or no token can be made.
pub async fn start(
    options: &mut AdminOptions,
    data_dir: &Path,
    registry: Registry,
    log: Log,
    managed: BTreeMap<String, Managed>,
    sinks: Vec<Arc<SinkControl>>,
    ingest: Option<Arc<IngestMetrics>>,
) -> Result<Running, StartError> {
    let fail = StartError;
    let token = match &options.token {
        Some(t) => t.clone(),
        None => random_token().map_err(|e| fail(format!("cannot make an admin token: {e}")))?,
    };
    let admin = Admin::new(
        registry,
        log,
        managed,
        sinks,
        token.clone(),
        options.max_upload_bytes,
        ingest,
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
        let task = tokio::spawn(api::serve(admin.clone(), listener, async move {
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
            tokio::spawn(watch::watch(admin.clone(), dir, interval, stop.clone())),
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
        let a: AdminConfig = toml::from_str(
            "listen = \"127.0.0.1:7070\"\nmax_upload_bytes = 1000\nwatch_dir = \"plugins\"\nwatch_interval = \"250ms\"\n",
        )
        .unwrap();
        let a = &a;
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
        let err = toml::from_str::<AdminConfig>("listen_on = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `listen_on`"), "{err}");
    }

    #[test]
    fn non_loopback_needs_a_token() {
        assert!(check_bind("127.0.0.1:0".parse().unwrap(), false).is_ok());
        assert!(check_bind("[::1]:0".parse().unwrap(), false).is_ok());
        let err = check_bind("0.0.0.0:7070".parse().unwrap(), false).unwrap_err();
        assert!(err.contains("0.0.0.0:7070"), "{err}");
        assert!(check_bind("0.0.0.0:7070".parse().unwrap(), true).is_ok());
    }
}
