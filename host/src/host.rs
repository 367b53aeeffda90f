//! Starting and stopping processors: `tidewater run` as a library call.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::db::{OpenError, StorageError, now_ms};
use crate::forward::{Forwarder, Step};
use crate::kafka::KafkaStream;
use crate::log::{Log, LogError};
use crate::pipeline::{
    EmbeddedSink, EmbeddedSource, Pipeline, PipelineError, Settings, Sink, Source, WasmHandler,
};
use crate::runtime::{CallError, LoadError, Runtime};
use crate::stats::{self, Counters};

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
    #[error("the config has no [[processor]] and no [[forward]] section: nothing to run")]
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
    Kafka(#[from] crate::kafka::StreamError),
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
    /// The admin API cannot listen where asked.
    #[error("admin API: {0}")]
    Admin(String),
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

/// What a run did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunSummary {
    /// Per processor, in config order.
    pub processors: Vec<ProcessorSummary>,
    /// Per `[[forward]]`, in config order.
    pub forwards: Vec<ForwardSummary>,
    /// Wall time from start to stop, in ms.
    pub elapsed_ms: u64,
    /// The host's peak resident memory, in bytes (Linux; `None` elsewhere).
    pub peak_rss_bytes: Option<u64>,
}

struct Shared {
    /// The value of the run's progress counter when this processor last
    /// found nothing to read and its source was caught up; `u64::MAX` when
    /// it has not yet or has found work since.
    idle_at: AtomicU64,
    busy_ns: AtomicU64,
    /// How the processor ended, set before its stream is closed (closing a
    /// Kafka consumer can wait on an unreachable broker).
    ended: std::sync::Mutex<Option<String>>,
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
    run_with(
        config,
        options,
        crate::admin::AdminOptions::default(),
        shutdown,
    )
    .await
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
    mut admin: crate::admin::AdminOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<RunSummary, RunError> {
    let started = Instant::now();
    if config.processors.is_empty() && config.forwards.is_empty() {
        return Err(RunError::NoProcessors);
    }
    if let Some(addr) = admin.listen {
        crate::admin::check_bind(addr, admin.token.is_some()).map_err(RunError::Admin)?;
    }
    if config.kafka.is_some() && !config.forwards.is_empty() {
        return Err(RunError::Forward(
            "the config has [[forward]] sections, which ship embedded-log topics to Kafka, but the processors are set to run on Kafka itself (a [kafka] section, --brokers or TIDEWATER_BROKERS): drop one of the two".into(),
        ));
    }
    let mut forwarders = Vec::new();
    for f in &config.forwards {
        let forwarder = Forwarder::new(f.clone())
            .map_err(|e| RunError::Forward(format!("[[forward]] from {:?}: {e}", f.from)))?;
        forwarders.push(forwarder);
    }
    let db = crate::db::open(&options.data_dir)?;
    let log = Log::new(db.clone(), config.log.default_partitions);
    let runtime = Arc::new(Runtime::new(Some(options.data_dir.join("cache"))).map_err(
        |error| RunError::Load {
            processor: "(engine)".into(),
            error,
        },
    )?);
    let registry = crate::registry::Registry::new(db.clone(), runtime.clone());
    let mut managed = BTreeMap::new();

    // Load and start every processor before any runs, so a bad config stops
    // the run before it touches a stream.
    let mut ready = Vec::new();
    let mut not_started: Vec<(String, String, CallError)> = Vec::new();
    let mut loaded_components: BTreeMap<PathBuf, Arc<crate::runtime::LoadedComponent>> =
        BTreeMap::new();
    if config
        .kafka
        .as_ref()
        .is_some_and(|k| k.brokers.trim().is_empty())
    {
        return Err(RunError::Config {
            processor: "(kafka)".into(),
            message: "[kafka] brokers is not set: set it, or pass --brokers".into(),
        });
    }
    for p in &config.processors {
        if config.kafka.is_none() && (p.exactly_once || p.group.is_some()) {
            return Err(RunError::Config {
                processor: p.name.clone(),
                message: "exactly_once and group apply to Kafka only: add a [kafka] section or --brokers (on the embedded log, processing is already exactly-once)".into(),
            });
        }
        let settings = Settings::from_config(p).map_err(|message| RunError::Config {
            processor: p.name.clone(),
            message,
        })?;
        let component = match loaded_components.get(&p.component) {
            Some(c) => c.clone(),
            None => {
                let c = Arc::new(runtime.load(&p.component).map_err(|error| RunError::Load {
                    processor: p.name.clone(),
                    error,
                })?);
                tracing::info!(
                    processor = %p.name, version = %c.sha256, cached = c.cached,
                    load_ms = c.load_time.as_millis() as u64, "component loaded"
                );
                loaded_components.insert(p.component.clone(), c.clone());
                c
            }
        };
        let limits = p.limits.runtime_limits();
        // The version the registry says is active (the last one activated
        // through the admin API), else the config's component.
        let (component, init_config) = registry
            .start_version(&p.name, &p.component, component, p.init_config())
            .map_err(|e| RunError::Config {
                processor: p.name.clone(),
                message: format!("registry: {e}"),
            })?;
        // On a thread of its own: WASI's blocking streams (a component
        // printing in `init`) must not run inside the async runtime.
        let start = || {
            WasmHandler::new(
                runtime.clone(),
                component.clone(),
                settings.name.clone(),
                limits,
                init_config.clone(),
            )
        };
        let started = std::thread::scope(|s| s.spawn(start).join())
            .unwrap_or_else(|_| Err(CallError::Trap("init panicked the host thread".into())));
        let handler = match started {
            Ok(h) => h,
            Err(error) => {
                tracing::error!(processor = %p.name, version = %component.sha256, code = error.code(), %error, "processor cannot start; pausing it, the others go on");
                not_started.push((p.name.clone(), component.sha256.clone(), error));
                continue;
            }
        };
        let control = crate::control::Control::new(
            settings.name.clone(),
            &component.sha256,
            Some(registry.clone()),
        );
        control.set_paused(admin.start_paused);
        managed.insert(
            p.name.clone(),
            crate::admin::Managed {
                control,
                limits,
                config: p.init_config(),
                can_replay: config.kafka.is_none(),
                canary: p.canary,
            },
        );
        for input in &p.inputs {
            let written_here = config
                .processors
                .iter()
                .any(|q| q.output == *input || q.dead_letter_topic() == *input);
            if config.kafka.is_none() && log.partitions(input)?.is_none() && !written_here {
                tracing::warn!(processor = %p.name, topic = %input, "input topic does not exist yet (nothing was produced to it); it is read once it appears");
            }
        }
        ready.push((p, settings, handler));
    }

    if ready.is_empty() && !not_started.is_empty() {
        let (processor, _, error) = not_started.swap_remove(0);
        return Err(RunError::Start { processor, error });
    }
    let mut paused = Vec::new();
    for (name, version, error) in not_started {
        let status = format!("paused: cannot start: {error}");
        stats::set_status(&db, &name, &status)?;
        stats::add_codes(&db, &name, &[(error.code(), 1)].into_iter().collect())?;
        paused.push((name, version, status, 0u64));
    }

    // Only now that every processor loaded and started: create the topics.
    match &config.kafka {
        None => {
            for t in &config.topics {
                log.create_topic(
                    &t.name,
                    t.partitions.unwrap_or(config.log.default_partitions),
                )?;
                log.set_retention(
                    &t.name,
                    t.retention.map(|d| d.as_millis() as u64),
                    t.retention_bytes,
                )?;
            }
            // Every processor, started or paused, gets a position in each
            // input partition that exists, so `stats` shows its lag even
            // before (or without) its first commit.
            let txn = db.begin_write().map_err(StorageError::from)?;
            for p in &config.processors {
                for input in &p.inputs {
                    for partition in 0..log.partitions(input)?.unwrap_or(0) {
                        if log.position(&p.name, input, partition)?.is_none() {
                            crate::log::set_position_in(&txn, &p.name, input, partition, 0)?;
                        }
                    }
                }
            }
            txn.commit().map_err(StorageError::from)?;
        }
        Some(k) => {
            let mut topics: BTreeMap<String, Option<u32>> = BTreeMap::new();
            for p in &config.processors {
                for t in p.inputs.iter().chain([&p.output, &p.dead_letter_topic()]) {
                    topics.entry(t.clone()).or_insert(None);
                }
            }
            for t in &config.topics {
                topics.insert(t.name.clone(), t.partitions);
            }
            crate::kafka::ensure_topics(k, &topics).await?;
        }
    }
    let mut pipelines = Vec::new();
    for (p, settings, handler) in ready {
        let (source, sink): (Box<dyn Source>, Box<dyn Sink>) = match &config.kafka {
            Some(k) => {
                let group = p.group.clone().unwrap_or_else(|| p.name.clone());
                let stream = KafkaStream::connect(
                    k,
                    settings.name.clone(),
                    &group,
                    &p.inputs,
                    p.exactly_once,
                    db.clone(),
                )?;
                (stream.source(), stream.sink())
            }
            None => (
                Box::new(EmbeddedSource::new(
                    log.clone(),
                    settings.name.clone(),
                    p.inputs.clone(),
                )),
                Box::new(EmbeddedSink::new(config.log.default_partitions)),
            ),
        };
        let mut pipeline = Pipeline::new(settings, db.clone(), source, sink, Box::new(handler));
        let control = managed[&p.name].control.clone();
        pipeline.attach(control, registry.epoch(&p.name)?);
        pipelines.push(pipeline);
    }
    let mut admin_server = crate::admin::start(
        &mut admin,
        &options.data_dir,
        registry,
        log.clone(),
        managed,
    )
    .await?;
    let before = stats::read_all(&log)?;
    let stop = Arc::new(AtomicBool::new(false));
    let progress = Arc::new(AtomicU64::new(0));
    let mut threads = Vec::new();
    for mut pipeline in pipelines {
        let name = pipeline.name().to_string();
        let control = admin_server.control(&name);
        let version = pipeline.version().to_owned();
        stats::set_status(&db, &name, "running")?;
        let shared = Arc::new(Shared {
            idle_at: AtomicU64::new(u64::MAX),
            ended: std::sync::Mutex::new(None),
            busy_ns: AtomicU64::new(0),
        });
        let (stop, progress, shared2, db2) =
            (stop.clone(), progress.clone(), shared.clone(), db.clone());
        let handle = std::thread::Builder::new()
            .name(format!("processor-{name}"))
            .spawn(move || {
                let mut failure_code = None;
                let status = loop {
                    if stop.load(Ordering::Relaxed) {
                        break "stopped".to_string();
                    }
                    let t = Instant::now();
                    match pipeline.step() {
                        Ok(Some(_)) => {
                            shared2.idle_at.store(u64::MAX, Ordering::SeqCst);
                            shared2.busy_ns.fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                            progress.fetch_add(1, Ordering::SeqCst);
                        }
                        Ok(None) => {
                            let seen = progress.load(Ordering::SeqCst);
                            let at = if pipeline.caught_up() { seen } else { u64::MAX };
                            shared2.idle_at.store(at, Ordering::SeqCst);
                            control.idle(IDLE_POLL);
                        }
                        Err(e) => {
                            let (code, word) = match &e {
                                PipelineError::Fatal { .. } => ("fatal", "paused"),
                                PipelineError::Start { error, .. } => (error.code(), "paused"),
                                _ => ("storage", "failed"),
                            };
                            failure_code = Some(code);
                            tracing::error!(processor = %pipeline.name(), code, error = %e, "processor stopped; the others go on");
                            break format!("{word}: {e}");
                        }
                    }
                };
                shared2.idle_at.store(u64::MAX - 1, Ordering::SeqCst);
                control.set_state(&status);
                if let Some(code) = failure_code.take() {
                    let codes = [(code, 1)].into_iter().collect();
                    if let Err(e) = stats::add_codes(&db2, pipeline.name(), &codes) {
                        tracing::error!(processor = %pipeline.name(), error = %e, "cannot count the processor's failure");
                    }
                }
                if let Err(e) = stats::set_status(&db2, pipeline.name(), &status) {
                    tracing::error!(processor = %pipeline.name(), error = %e, "cannot record the processor's status");
                }
                if let Ok(mut ended) = shared2.ended.lock() {
                    *ended = Some(status.clone());
                }
                drop(pipeline);
                status
            })
            .expect("spawning a thread");
        threads.push((name, version, shared, handle));
    }

    let forwards: Vec<_> = forwarders
        .into_iter()
        .map(|f| spawn_forward(f, log.clone(), stop.clone(), progress.clone()))
        .collect();

    tracing::info!(
        processors = threads.len(),
        forwards = forwards.len(),
        "processors running"
    );
    let maintenance = {
        let (log, db) = (log.clone(), db.clone());
        move || {
            let now = now_ms();
            match log.enforce_retention(now) {
                Ok(0) => {}
                Ok(n) => tracing::info!(records = n, "retention removed records"),
                Err(e) => tracing::error!(error = %e, "retention failed"),
            }
            match crate::idempotency::purge_expired(&db, now) {
                Ok(0) => {}
                Ok(n) => tracing::info!(keys = n, "expired idempotency keys purged"),
                Err(e) => tracing::error!(error = %e, "idempotency key purge failed"),
            }
        }
    };
    let _ = tokio::task::spawn_blocking(maintenance.clone()).await;

    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let mut last_maintenance = Instant::now();
    let mut quiet_ticks = 0;
    let quiet_needed = if config.kafka.is_some() { 20 } else { 3 };
    let mut last_progress = u64::MAX;
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        if last_maintenance.elapsed() >= config.log.maintenance_interval {
            last_maintenance = Instant::now();
            let _ = tokio::task::spawn_blocking(maintenance.clone()).await;
        }
        if threads.iter().all(|(_, _, _, h)| h.is_finished())
            && forwards.iter().all(|(_, _, h)| h.is_finished())
        {
            break;
        }
        // Idle: every processor found nothing to read after the last commit
        // of any of them (a commit is the only way new input appears), and
        // that stayed so for a while (longer on Kafka, whose consumers learn
        // of new records with a fetch delay).
        let p = progress.load(Ordering::SeqCst);
        let all_idle = threads
            .iter()
            .map(|(_, _, s, h)| (&s.idle_at, h))
            .chain(forwards.iter().map(|(_, s, h)| (&s.idle_at, h)))
            .all(|(idle_at, h)| h.is_finished() || idle_at.load(Ordering::SeqCst) == p);
        if options.until_idle && all_idle && p == last_progress {
            quiet_ticks += 1;
            if quiet_ticks >= quiet_needed {
                break;
            }
        } else {
            quiet_ticks = 0;
        }
        last_progress = p;
    }
    stop.store(true, Ordering::SeqCst);
    admin_server.stop(&options.data_dir).await;

    let mut results = Vec::new();
    for (name, version, shared, handle) in threads {
        let joined = tokio::time::timeout(
            STOP_GRACE,
            tokio::task::spawn_blocking(move || handle.join()),
        )
        .await;
        let status = match joined {
            Ok(Ok(Ok(status))) => status,
            Ok(_) => "failed: the processor thread panicked".into(),
            Err(_) => shared.ended.lock().ok().and_then(|e| e.clone()).unwrap_or_else(|| {
                format!(
                    "stopped without finishing: its batch in flight did not end within {} s of the stop (a long call into the component, or a stream that does not answer)",
                    STOP_GRACE.as_secs()
                )
            }),
        };
        let version = admin_server.active_version(&name).unwrap_or(version);
        results.push((
            name,
            version,
            status,
            shared.busy_ns.load(Ordering::Relaxed),
        ));
    }
    results.extend(paused);
    let order = |name: &str| config.processors.iter().position(|p| p.name == name);
    results.sort_by_key(|r| order(&r.0));
    let mut forward_summaries = Vec::new();
    for (mut summary, shared, handle) in forwards {
        let joined = tokio::time::timeout(
            STOP_GRACE,
            tokio::task::spawn_blocking(move || handle.join()),
        )
        .await;
        summary.records = shared.shipped.load(Ordering::SeqCst);
        summary.status = match joined {
            Ok(Ok(Ok(status))) => status,
            Ok(_) => "failed: the forward thread panicked".into(),
            Err(_) => format!(
                "stopped without finishing: still waiting on the brokers after {} s",
                STOP_GRACE.as_secs()
            ),
        };
        forward_summaries.push(summary);
    }
    let after = stats::read_all(&log)?;
    let processors = results
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
        elapsed_ms: started.elapsed().as_millis() as u64,
        peak_rss_bytes: stats::peak_rss_bytes(),
    })
}

/// What a `[[forward]]` thread shares with `run`.
struct ForwardShared {
    /// As [`Shared::idle_at`].
    idle_at: AtomicU64,
    /// Records acknowledged by the broker.
    shipped: AtomicU64,
}

/// Starts one `[[forward]]` on its own thread. It takes part in idle
/// detection like a processor: idle once everything stored so far was
/// shipped; never idle while records wait for the brokers.
fn spawn_forward(
    mut forwarder: Forwarder,
    log: Log,
    stop: Arc<AtomicBool>,
    progress: Arc<AtomicU64>,
) -> (
    ForwardSummary,
    Arc<ForwardShared>,
    std::thread::JoinHandle<String>,
) {
    let c = forwarder.config();
    let summary = ForwardSummary {
        from: c.from.clone(),
        topic: c.kafka_topic().to_owned(),
        brokers: c.kafka.brokers.clone(),
        records: 0,
        status: String::new(),
    };
    let shared = Arc::new(ForwardShared {
        idle_at: AtomicU64::new(u64::MAX),
        shipped: AtomicU64::new(0),
    });
    let shared2 = shared.clone();
    // Sleeps up to `d`, waking early when asked to stop.
    let nap = |d: Duration, stop: &AtomicBool| {
        let until = Instant::now() + d;
        while !stop.load(Ordering::SeqCst) && Instant::now() < until {
            std::thread::sleep(IDLE_POLL);
        }
    };
    let thread = std::thread::Builder::new()
        .name(format!("forward-{}", summary.from))
        .spawn(move || {
            let mut open = || Ok(log.clone());
            let status = loop {
                if stop.load(Ordering::SeqCst) {
                    break "stopped".to_owned();
                }
                // Read before looking, so that a commit landing meanwhile
                // makes this idle mark stale rather than wrong.
                let seen = progress.load(Ordering::SeqCst);
                match forwarder.step(&mut open, &stop) {
                    Ok(Step::Idle) => {
                        shared2.idle_at.store(seen, Ordering::SeqCst);
                        nap(Duration::from_millis(100), &stop);
                    }
                    Ok(Step::Shipped(n)) => {
                        shared2.idle_at.store(u64::MAX, Ordering::SeqCst);
                        shared2.shipped.fetch_add(n, Ordering::SeqCst);
                    }
                    Ok(Step::BrokersAway) => {
                        shared2.idle_at.store(u64::MAX, Ordering::SeqCst);
                        nap(Duration::from_secs(2), &stop);
                    }
                    Ok(Step::Stopped) => break "stopped".to_owned(),
                    Err(e) => {
                        tracing::error!(from = %forwarder.config().from, error = %e, "forward stopped; the processors go on");
                        break format!("failed: {e}");
                    }
                }
            };
            shared2.idle_at.store(u64::MAX - 1, Ordering::SeqCst);
            status
        })
        .expect("spawning a thread");
    (summary, shared, thread)
}
