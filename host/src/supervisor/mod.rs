//! Starting, supervising and stopping processors, forwards and sinks:
//! `tidewater run` as a library call ([`run`], [`run_with`]).
//!
//! - `start`: validate the config, open the data dir, load every component
//!   and start its instance, prepare the streams, build the run loops.
//! - `threads`: each processor, forward and sink on a thread of its own.
//! - `supervise`: maintenance, idle detection, stopping.

mod start;
mod supervise;
mod threads;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::admin::{AdminOptions, StartError};
use crate::config::Config;
use crate::db::{OpenError, StorageError};
use crate::processing::stats::{self, Counters};
use crate::runtime::{CallError, LoadError};
use crate::streams::embedded::LogError;
use crate::streams::kafka::BrokerError;

/// How long `run` waits for a processor to finish its batch in flight once
/// asked to stop; after that it gives up on it (its batch was not committed
/// and is processed again on the next run).
pub const STOP_GRACE: Duration = Duration::from_secs(20);

/// How long an idle processor waits before polling its inputs again.
pub const IDLE_POLL: Duration = Duration::from_millis(20);

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The data dir (database and compiled-component cache).
    pub data_dir: PathBuf,
    /// Stop once every processor has read everything in its inputs and no
    /// processor has committed anything for a few poll intervals.
    pub until_idle: bool,
}

/// Why `run` could not start or had to stop.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The config asks for nothing to run.
    #[error(
        "the config has no [[processor]], [[forward]], [[sink]], [ingest.http] or [[ingest.mqtt]] section: nothing to run"
    )]
    NoProcessors,
    /// The database could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// redb failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// Kafka could not be reached or refused.
    #[error(transparent)]
    Kafka(#[from] BrokerError),
    /// A component could not be loaded.
    #[error("processor {processor}: {error}")]
    Load {
        /// The processor.
        processor: String,
        /// Why.
        error: LoadError,
    },
    /// A component could not be instantiated, or its `init` refused the config.
    #[error("processor {processor}: {error}")]
    Start {
        /// The processor.
        processor: String,
        /// Why.
        error: CallError,
    },
    /// A `[[forward]]` cannot run.
    #[error("{0}")]
    Forward(String),
    /// A `[[sink]]` cannot run: its destination cannot be reached, or does
    /// not fit its config (a missing column, no unique index for its key).
    #[error("{0}")]
    Sink(String),
    /// The admin API cannot listen where asked.
    #[error("admin API: {0}")]
    Admin(#[from] StartError),
    /// Ingest (HTTP, MQTT) cannot start.
    #[error("{0}")]
    Ingest(String),
    /// The config is invalid (see [`Config::check`]).
    #[error("{0}")]
    Invalid(String),
    /// A setting is invalid.
    #[error("processor {processor}: {message}")]
    Config {
        /// The processor.
        processor: String,
        /// Why.
        message: String,
    },
}

/// What one processor did during a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ProcessorSummary {
    /// Its name.
    pub name: String,
    /// The component's SHA-256.
    pub version: String,
    /// `stopped`, `paused: <reason>` (a `fatal` error, or it could not
    /// start; the others went on), or `failed: <reason>`.
    pub status: String,
    /// What it counted during this run.
    pub counters: Counters,
    /// Time spent processing batches (reading, calling, committing), in ms.
    pub busy_ms: u64,
}

impl ProcessorSummary {
    /// Events read per second of busy time.
    pub fn events_per_s(&self) -> f64 {
        if self.busy_ms == 0 {
            0.0
        } else {
            self.counters.events_in as f64 * 1000.0 / self.busy_ms as f64
        }
    }
}

/// What one `[[forward]]` did during a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ForwardSummary {
    /// The embedded-log topic.
    pub from: String,
    /// The Kafka topic.
    pub topic: String,
    /// The bootstrap servers.
    pub brokers: String,
    /// Records acknowledged by the broker during this run.
    pub records: u64,
    /// `stopped`, or `failed: <reason>`.
    pub status: String,
}

/// What one `[[sink]]` did during a run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SinkSummary {
    /// Its name.
    pub name: String,
    /// `postgres` or `webhook`.
    pub kind: String,
    /// The topic it reads.
    pub topic: String,
    /// What it delivered during this run.
    pub delivered: crate::streams::sinks::Delivered,
    /// `stopped`, or `failed: <reason>`.
    pub status: String,
}

/// What a run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    /// Per processor, in config order.
    pub processors: Vec<ProcessorSummary>,
    /// Per `[[forward]]`, in config order.
    pub forwards: Vec<ForwardSummary>,
    /// Per `[[sink]]`, in config order.
    pub sinks: Vec<SinkSummary>,
    /// Wall time from start to stop, in ms.
    pub elapsed_ms: u64,
    /// The host's peak resident memory, in bytes (Linux; `None` elsewhere).
    pub peak_rss_bytes: Option<u64>,
}

/// Runs the processors of `config` until `shutdown` completes (or, with
/// `until_idle`, until all inputs are drained). Each processor runs on its
/// own thread; one failing (a `fatal` error) pauses only that one.
///
/// A processor whose `init` fails (refuses, traps, or runs past
/// `limits.init_deadline`) is paused and the others run; only when no
/// processor can start is that an error.
///
/// # Errors
///
/// [`RunError`] when the database cannot be opened, a component does not
/// load, a setting is invalid, or no processor can start.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let config = tidewater::config::Config::load("tidewater.toml".as_ref())?;
/// let options = tidewater::RunOptions { data_dir: ".tidewater".into(), until_idle: false };
/// let summary = tidewater::run(config, options, async {
///     let _ = tokio::signal::ctrl_c().await;
/// }).await?;
/// println!("{} processors ran", summary.processors.len());
/// # Ok(()) }
/// ```
pub async fn run(
    config: Config,
    options: RunOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<RunSummary, RunError> {
    run_with(config, options, AdminOptions::default(), shutdown).await
}

/// As [`run`], with the admin HTTP API served as `admin` says (see
/// [`crate::admin`]): versions can then be uploaded, activated, shadowed,
/// rolled back and replayed while the processors run.
///
/// # Errors
///
/// As [`run`]; [`RunError::Admin`] when the admin API cannot listen where
/// asked (or would listen on a non-loopback address without a token).
pub async fn run_with(
    config: Config,
    options: RunOptions,
    mut admin: AdminOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    start::validate(&config, &admin)?;
    let forwarders = start::forwarders(&config)?;
    let host = start::open(&config, &options.data_dir)?;
    let loaded = start::load_processors(&config, &host, admin.start_paused)?;
    // Only now that every processor loaded and started: create the topics.
    start::prepare_streams(&config, &host).await?;
    let sinks = start::sinks(&config, &host)?;
    let pipelines = start::build_pipelines(
        &config,
        &host,
        loaded.ready,
        &loaded.managed,
        &options.data_dir,
    )?;
    let ingest = crate::streams::ingest::Ingest::start(
        &config.ingest,
        config.log.max_bytes,
        config.device_time,
        host.log.clone(),
        &options.data_dir,
    )
    .await
    .map_err(RunError::Ingest)?;
    let admin_server = crate::admin::start(
        &mut admin,
        &options.data_dir,
        host.registry.clone(),
        host.log.clone(),
        loaded.managed,
        sinks.iter().map(|s| s.control().clone()).collect(),
        ingest.as_ref().map(|i| i.metrics()),
    )
    .await;
    let mut admin_server = match admin_server {
        Ok(a) => a,
        Err(e) => {
            if let Some(i) = ingest {
                i.stop(&options.data_dir).await;
            }
            return Err(e.into());
        }
    };
    let before = stats::read_all(&host.log)?;
    let flags = threads::Flags::default();
    let mut processors = Vec::new();
    for pipeline in pipelines {
        let control = admin_server.control(pipeline.name());
        stats::set_status(&host.db, pipeline.name(), "running")?;
        processors.push(threads::spawn_processor(
            pipeline,
            control,
            host.db.clone(),
            flags.clone(),
        ));
    }
    let forwards: Vec<_> = forwarders
        .into_iter()
        .map(|f| threads::spawn_forward(f, host.log.clone(), flags.clone()))
        .collect();
    let sinks: Vec<_> = sinks
        .into_iter()
        .map(|s| threads::spawn_sink(s, host.db.clone(), flags.clone()))
        .collect();
    tracing::info!(
        processors = processors.len(),
        forwards = forwards.len(),
        sinks = sinks.len(),
        "processors running"
    );
    supervise::maintain(&host.log).await;
    let watched = supervise::Watched {
        processors: &processors,
        forwards: &forwards,
        sinks: &sinks,
        flags: &flags,
        until_idle: options.until_idle,
        quiet_needed: if config.kafka.is_some() { 20 } else { 3 },
        maintenance_interval: config.log.maintenance_interval,
        ingest: ingest.is_some(),
    };
    supervise::supervise(watched, &host.log, shutdown).await;
    // Ingest first: the requests in flight get their commit and answer
    // while the processors still run.
    if let Some(i) = ingest {
        i.stop(&options.data_dir).await;
    }
    flags.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    admin_server.stop(&options.data_dir).await;

    let mut ended = Vec::new();
    for t in processors {
        let (name, version, status, busy_ns) = supervise::join_processor(t).await;
        let version = admin_server.active_version(&name).unwrap_or(version);
        ended.push((name, version, status, busy_ns));
    }
    ended.extend(loaded.paused.into_iter().map(|(n, v, s)| (n, v, s, 0)));
    let order = |name: &str| config.processors.iter().position(|p| p.name == name);
    ended.sort_by_key(|r| order(&r.0));
    let mut forward_summaries = Vec::new();
    for t in forwards {
        forward_summaries.push(supervise::join_forward(t).await);
    }
    let mut sink_summaries = Vec::new();
    for t in sinks {
        sink_summaries.push(supervise::join_sink(t).await);
    }
    let after = stats::read_all(&host.log)?;
    let processors = ended
        .into_iter()
        .map(|(name, version, status, busy_ns)| {
            let now = after.get(&name).map(|s| s.counters).unwrap_or_default();
            let then = before.get(&name).map(|s| s.counters).unwrap_or_default();
            ProcessorSummary {
                counters: now.since(&then),
                name,
                version,
                status,
                busy_ms: busy_ns / 1_000_000,
            }
        })
        .collect();
    Ok(RunSummary {
        processors,
        forwards: forward_summaries,
        sinks: sink_summaries,
        elapsed_ms: started.elapsed().as_millis() as u64,
        peak_rss_bytes: stats::peak_rss_bytes(),
    })
}
