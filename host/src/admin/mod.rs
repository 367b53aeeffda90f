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
//! - [`views`]: what the API and the console show, one function per view.
//! - [`ops`]: what they change, one function per action.
//! - [`rates`]: events/s and lag over the last minutes, sampled in memory.
//! - [`console`]: the web console at `/`, on the same listener and token.
//! - `metrics`: `/metrics`.
//! - `watch`: the plugins-dir watcher.
//! - [`client`]: the CLI's client of this API.

mod api;
pub mod client;
pub mod console;
mod metrics;
pub mod ops;
pub mod rates;
pub mod views;
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
use crate::processing::{Handler, Settings, WasmHandler};
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
    /// Whether the console's read-only pages open without logging in.
    /// Default `false`: every page asks for the token. Changes always need it.
    pub console_public: bool,
    /// The report `make compare` writes (`target/compare.json`), shown on
    /// the console's languages page. Relative to the config file.
    pub compare_report: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            listen: None,
            token: None,
            max_upload_bytes: registry::DEFAULT_MAX_UPLOAD_BYTES,
            watch_dir: None,
            watch_interval: Duration::from_secs(1),
            console_public: false,
            compare_report: None,
        }
    }
}

/// How the console is served.
#[derive(Debug, Clone, Default)]
pub struct ConsoleOptions {
    /// Read-only pages open without logging in (`[admin] console_public`).
    pub public: bool,
    /// `make compare`'s report, for the languages page (`[admin] compare_report`).
    pub compare_report: Option<PathBuf>,
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
    /// The console's options.
    pub console: ConsoleOptions,
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
            console: ConsoleOptions {
                public: c.console_public,
                compare_report: c.compare_report.map(|p| base.join(p)),
            },
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
    /// The changelog records a restore in progress still has to read (Kafka;
    /// 0 when none runs).
    pub restore_lag: Arc<std::sync::atomic::AtomicU64>,
    /// Whether its dead letters are in the embedded log, where the admin
    /// API can replay them (on Kafka they are in a Kafka topic: not yet).
    pub dead_letters_local: bool,
    /// The canary every activation of a new version gets unless it asks for
    /// its own (`canary` in the processor's config).
    pub canary: Option<CanaryPlan>,
    /// Its run-loop settings: key mode, output and dead-letter topics, batch sizes.
    pub settings: Settings,
    /// Its input topics.
    pub inputs: Vec<String>,
}

/// What the API works on.
pub struct Admin {
    pub(super) registry: Registry,
    pub(super) log: Log,
    pub(super) processors: BTreeMap<String, Managed>,
    pub(super) sinks: BTreeMap<String, Arc<SinkControl>>,
    pub(super) token: String,
    pub(super) max_upload_bytes: usize,
    pub(super) console: ConsoleOptions,
    pub(super) sessions: console::Sessions,
    pub(super) rates: rates::Rates,
    /// Set when the host stops: long-lived responses (the console's
    /// server-sent events) end then.
    pub(super) closing: tokio::sync::watch::Sender<bool>,
    /// The live ingest's metrics, when the host runs ingest.
    pub(super) ingest: Option<Arc<IngestMetrics>>,
}

/// What a running host runs, as the admin side sees it.
pub struct Served {
    /// The processors, by name.
    pub processors: BTreeMap<String, Managed>,
    /// The sinks.
    pub sinks: Vec<Arc<SinkControl>>,
    /// The live ingest's metrics, when the host runs ingest (added to `/metrics`).
    pub ingest: Option<Arc<IngestMetrics>>,
}

impl Admin {
    /// The admin side of a running host serving `served`.
    pub fn new(
        registry: Registry,
        log: Log,
        served: Served,
        token: String,
        max_upload_bytes: usize,
        console: ConsoleOptions,
    ) -> Arc<Self> {
        let Served {
            processors,
            sinks,
            ingest,
        } = served;
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
            console,
            sessions: console::Sessions::default(),
            rates: rates::Rates::default(),
            closing: tokio::sync::watch::Sender::new(false),
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

    /// Replays dead letters of processor `name` on its own thread, between
    /// two batches: those at `positions` (partition, offset) of its
    /// dead-letter topic, or all; through `version` (a kept version, its
    /// `init` run with its config) or the active one. See
    /// [`crate::processing::dlq`] for what is recorded.
    ///
    /// # Errors
    ///
    /// `no-such-processor`, `no-such-version`, `init-failed`;
    /// `no-such-record` when a position holds no dead letter (nothing is
    /// replayed); `replay-unsupported` when its dead letters are on Kafka; `processor-not-running` when its
    /// thread has ended, `busy` while another replay of it waits;
    /// `replay-failed` when the replay stopped (a `fatal` error, storage).
    pub async fn replay_dead_letters(
        self: &Arc<Self>,
        name: &str,
        positions: Option<Vec<(u32, u64)>>,
        version: Option<String>,
    ) -> Result<crate::processing::dlq::ReplaySummary, ApiError> {
        use crate::processing::dlq::Selection;
        let m = self.processor(name)?;
        if !m.dead_letters_local {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "replay-unsupported",
                format!(
                    "processor {name:?} reads Kafka; dead letters are replayed from the embedded log only (for now)"
                ),
            ));
        }
        let state = m.control.status().state;
        if state != "running" {
            return Err(not_running(name, &state));
        }
        let selection = match positions {
            None => Selection::All,
            Some(p) if p.is_empty() => {
                return Err(ApiError::bad_request("select at least one dead letter"));
            }
            Some(p) => {
                self.check_dead_letters(name, &p).await?;
                Selection::Positions(p.into_iter().collect())
            }
        };
        let handler = match version {
            None => None,
            Some(v) => {
                let (admin, name) = (self.clone(), name.to_owned());
                Some(
                    api::blocking(move || {
                        let m = admin.processor(&name)?;
                        let (info, loaded) = admin.registry.load(&name, &v)?;
                        admin.handler(&name, m, loaded, info.config)
                    })
                    .await?,
                )
            }
        };
        let (reply, answer) = tokio::sync::oneshot::channel();
        let request = crate::control::DeadLetterReplay {
            handler,
            selection,
            reply,
        };
        if m.control.request_dead_letter_replay(request).is_err() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "busy",
                format!(
                    "a replay of {name:?}'s dead letters is waiting to run: try again when it is done"
                ),
            ));
        }
        match answer.await {
            Ok(Ok(summary)) => Ok(summary),
            Ok(Err(message)) => Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "replay-failed",
                message,
            )),
            Err(_) => Err(not_running(name, &m.control.status().state)),
        }
    }
}

impl Admin {
    /// Refuses a replay naming a position that holds no dead letter of
    /// `name`, before anything is replayed: a selection is replayed whole
    /// or not at all.
    async fn check_dead_letters(
        self: &Arc<Self>,
        name: &str,
        positions: &[(u32, u64)],
    ) -> Result<(), ApiError> {
        let (admin, name, positions) = (self.clone(), name.to_owned(), positions.to_vec());
        api::blocking(move || {
            for (partition, offset) in positions {
                admin
                    .dead_letter_view(&name, partition, offset)
                    .map_err(|e| ApiError {
                        message: format!("{}; nothing was replayed", e.message),
                        ..e
                    })?;
            }
            Ok(())
        })
        .await
    }
}

fn not_running(name: &str, state: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "processor-not-running",
        format!(
            "processor {name:?} is not running ({state}); its dead letters are replayed on its own thread: start it again, or use `tidewater dlq replay` while no host runs"
        ),
    )
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
    sampler: Option<tokio::task::JoinHandle<()>>,
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
        if let Some(task) = self.sampler.take() {
            task.abort();
            let _ = task.await;
        }
        if let Some((task, tx)) = self.server.take() {
            self.admin.closing.send_replace(true);
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
    let served = Served {
        processors: managed,
        sinks,
        ingest,
    };
    let admin = Admin::new(
        registry,
        log,
        served,
        token.clone(),
        options.max_upload_bytes,
        options.console.clone(),
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
        tracing::info!(
            url = %format!("http://{bound}/"),
            token_file = %data_dir.join(TOKEN_FILE).display(),
            "admin API and web console listening (log in with the admin token)"
        );
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
    let sampler = server
        .is_some()
        .then(|| tokio::spawn(rates::sample_forever(admin.clone())));
    Ok(Running {
        admin,
        server,
        watcher,
        sampler,
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
            "listen = \"127.0.0.1:7070\"\nmax_upload_bytes = 1000\nwatch_dir = \"plugins\"\nwatch_interval = \"250ms\"\nconsole_public = true\ncompare_report = \"../target/compare.json\"\n",
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
        assert!(o.console.public);
        assert_eq!(
            o.console.compare_report,
            Some(PathBuf::from("/etc/tw/../target/compare.json"))
        );
        let o =
            AdminOptions::from_config(Some(a), Some("127.0.0.1:0"), None, Path::new(".")).unwrap();
        assert_eq!(o.listen, Some("127.0.0.1:0".parse().unwrap()));
        assert_eq!(o.token, None);
        let o = AdminOptions::from_config(None, None, None, Path::new(".")).unwrap();
        assert_eq!((o.listen, o.max_upload_bytes), (None, 64 << 20));
        assert!(
            !o.console.public,
            "the console asks for the token by default"
        );
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
