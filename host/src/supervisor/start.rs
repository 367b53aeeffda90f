//! Starting a run: validate the config, open the data dir, load and start
//! every processor's component, prepare the streams, build the run loops.
//! Everything that can refuse the config happens before any stream is
//! touched.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::RunError;
use crate::admin::{AdminOptions, Managed};
use crate::config::{Config, ProcessorConfig};
use crate::control::{Attached, Control, Registry};
use crate::db::StorageError;
use crate::processing::changes::PartitionStore;
use crate::processing::stats;
use crate::processing::{Pipeline, Settings, WasmHandler};
use crate::runtime::{CallError, LoadedComponent, Runtime};
use crate::streams::embedded::{EmbeddedSink, EmbeddedSource, Log, LogError};
use crate::streams::forward::Forwarder;
use crate::streams::kafka::{KafkaConfig, KafkaStream, StreamSetup};
use crate::streams::sinks::postgres::PostgresWriter;
use crate::streams::sinks::webhook::WebhookWriter;
use crate::streams::sinks::{DeadLetters, Destination, Input, SinkControl, SinkTask};
use crate::streams::{Sink, Source, positions};

/// What every part of a run shares: the data dir's database, the embedded
/// log on it, the WebAssembly runtime and the version registry.
pub(super) struct Host {
    pub db: Arc<redb::Database>,
    pub log: Log,
    pub runtime: Arc<Runtime>,
    pub registry: Registry,
}

/// A processor whose component loaded and whose `init` succeeded.
pub(super) struct Ready<'c> {
    pub config: &'c ProcessorConfig,
    pub settings: Settings,
    pub handler: WasmHandler,
}

/// The processors of a run after [`load_processors`].
pub(super) struct Loaded<'c> {
    /// Ready to run, in config order.
    pub ready: Vec<Ready<'c>>,
    /// Those whose `init` failed: (name, version, status), paused.
    pub paused: Vec<(String, String, String)>,
    /// Every ready processor's control, for the admin side.
    pub managed: BTreeMap<String, Managed>,
}

/// Checks what must hold before anything is opened: the config itself, that
/// it asks for something to run, and where the admin API may listen.
///
/// # Errors
///
/// [`RunError::NoProcessors`], [`RunError::Invalid`], [`RunError::Admin`].
pub(super) fn validate(config: &Config, admin: &AdminOptions) -> Result<(), RunError> {
    let ingest = config.ingest.http.is_some() || !config.ingest.mqtt.is_empty();
    if config.processors.is_empty()
        && config.forwards.is_empty()
        && config.sinks.is_empty()
        && !ingest
    {
        return Err(RunError::NoProcessors);
    }
    config.check().map_err(RunError::Invalid)?;
    if let Some(addr) = admin.listen {
        crate::admin::check_bind(addr, admin.token.is_some())
            .map_err(|e| RunError::Admin(crate::admin::StartError(e)))?;
    }
    Ok(())
}

/// One [`Forwarder`] per `[[forward]]` section.
///
/// # Errors
///
/// [`RunError::Forward`] naming the forward whose producer cannot be made.
pub(super) fn forwarders(config: &Config) -> Result<Vec<Forwarder>, RunError> {
    config
        .forwards
        .iter()
        .map(|f| {
            Forwarder::new(f.clone())
                .map(|f| f.with_device_time(config.device_time))
                .map_err(|e| RunError::Forward(format!("[[forward]] from {:?}: {e}", f.from)))
        })
        .collect()
}

/// One [`SinkTask`] per `[[sink]]`, its destination connected and checked
/// (a PostgreSQL table created, or checked against the mapping), reading
/// Kafka when the config has `[kafka]`, else the embedded log.
///
/// # Errors
///
/// [`RunError::Sink`] naming the sink and what does not fit.
pub(super) fn sinks(config: &Config, host: &Host) -> Result<Vec<SinkTask>, RunError> {
    let mut tasks = Vec::new();
    for s in &config.sinks {
        let fail = |m: String| RunError::Sink(format!("[[sink]] {:?}: {m}", s.name));
        let control = SinkControl::new(&s.name, s.kind(), &s.topic);
        let (input, dead_letters) = match &config.kafka {
            Some(k) => (
                Input::kafka(k, &s.name, &s.topic).map_err(|e| fail(e.to_string()))?,
                DeadLetters::kafka(host.db.clone(), s.dead_letter_topic(), k)
                    .map_err(|e| fail(e.to_string()))?,
            ),
            None => (
                Input::embedded(host.log.clone()),
                DeadLetters::embedded(
                    host.db.clone(),
                    s.dead_letter_topic(),
                    config.log.default_partitions,
                ),
            ),
        };
        let destination = match (&s.postgres, &s.webhook) {
            (Some(pg), _) => Destination::Postgres(Box::new(
                PostgresWriter::new(&s.name, &s.topic, pg.clone()).map_err(fail)?,
            )),
            (None, Some(w)) => {
                Destination::Webhook(WebhookWriter::new(w.clone(), host.db.clone()).map_err(fail)?)
            }
            (None, None) => return Err(fail("no destination".into())),
        };
        let mut task = SinkTask::new(s.clone(), input, dead_letters, destination, control);
        // On a thread of its own: the sink's calls run on a runtime of their own.
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| RunError::Sink(format!("a runtime for the sink: {e}")))?;
                    task.prepare(&rt).map_err(|e| RunError::Sink(e.to_string()))
                })
                .join()
                .unwrap_or_else(|_| Err(RunError::Sink("the sink's check panicked".into())))
        })?;
        stats::set_status(&host.db, &s.name, "running")?;
        tasks.push(task);
    }
    Ok(tasks)
}

/// Opens the data dir: the database, the log, the runtime (with the
/// compiled-component cache in `cache/`) and the registry.
///
/// # Errors
///
/// [`RunError::Open`] when the database cannot be opened (e.g. in use),
/// [`RunError::Load`] when the engine cannot be set up.
pub(super) fn open(config: &Config, data_dir: &std::path::Path) -> Result<Host, RunError> {
    let db = crate::db::open_with_cache(data_dir, config.log.cache_bytes)?;
    let log = Log::new(db.clone(), config.log.default_partitions);
    let runtime =
        Arc::new(
            Runtime::new(Some(data_dir.join("cache"))).map_err(|error| RunError::Load {
                processor: "(engine)".into(),
                error,
            })?,
        );
    let registry = Registry::new(db.clone(), runtime.clone());
    Ok(Host {
        db,
        log,
        runtime,
        registry,
    })
}

/// Loads and starts every processor before any runs, so a bad component
/// stops the run before it touches a stream. A processor whose `init`
/// fails is paused (recorded in `stats`) and the others go on; when none
/// can start, that is the error.
///
/// # Errors
///
/// [`RunError::Load`] when a component does not load, [`RunError::Config`]
/// when the registry cannot be read, [`RunError::Start`] when no processor
/// can start, storage errors.
pub(super) fn load_processors<'c>(
    config: &'c Config,
    host: &Host,
    start_paused: bool,
) -> Result<Loaded<'c>, RunError> {
    let mut loaded = Loaded {
        ready: Vec::new(),
        paused: Vec::new(),
        managed: BTreeMap::new(),
    };
    let mut not_started: Vec<(String, String, CallError)> = Vec::new();
    let mut components: BTreeMap<PathBuf, Arc<LoadedComponent>> = BTreeMap::new();
    for p in &config.processors {
        let settings = Settings::from_config(p).map_err(RunError::Invalid)?;
        let file = load_component(host, p, &mut components)?;
        // The version the registry says is active (the last one activated
        // through the admin API), else the config's component.
        let (component, init_config) = host
            .registry
            .start_version(&p.name, &p.component, file.clone(), p.init_config())
            .map_err(|e| RunError::Config {
                processor: p.name.clone(),
                message: format!("registry: {e}"),
            })?;
        log_loaded(p, &component, &file);
        let limits = p.limits.runtime_limits();
        // On a thread of its own: WASI's blocking streams (a component
        // printing in `init`) must not run inside the async runtime.
        let start = || {
            WasmHandler::new(
                host.runtime.clone(),
                component.clone(),
                settings.name.clone(),
                limits,
                init_config.clone(),
            )
        };
        let handler = match std::thread::scope(|s| s.spawn(start).join())
            .unwrap_or_else(|_| Err(CallError::Trap("init panicked the host thread".into())))
        {
            Ok(h) => h,
            Err(error) => {
                tracing::error!(processor = %p.name, version = %component.sha256, code = error.code(), %error, "processor cannot start; pausing it, the others go on");
                not_started.push((p.name.clone(), component.sha256.clone(), error));
                continue;
            }
        };
        let control = Control::new(
            settings.name.clone(),
            &component.sha256,
            Some(host.registry.clone()),
        );
        control.set_paused(start_paused);
        loaded.managed.insert(
            p.name.clone(),
            Managed {
                control,
                limits,
                config: p.init_config(),
                restore_lag: Arc::default(),
                dead_letters_local: config.kafka.is_none(),
                canary: p.canary,
                settings: settings.clone(),
                inputs: p.inputs.clone(),
            },
        );
        warn_missing_inputs(config, host, p)?;
        loaded.ready.push(Ready {
            config: p,
            settings,
            handler,
        });
    }
    if loaded.ready.is_empty() && !not_started.is_empty() {
        let (processor, _, error) = not_started.swap_remove(0);
        return Err(RunError::Start { processor, error });
    }
    for (name, version, error) in not_started {
        let status = format!("paused: cannot start: {error}");
        stats::set_status(&host.db, &name, &status)?;
        stats::add_codes(&host.db, &name, &[(error.code(), 1)].into_iter().collect())?;
        loaded.paused.push((name, version, status));
    }
    Ok(loaded)
}

/// `p`'s component, compiled (or read from the cache) once per file.
fn load_component(
    host: &Host,
    p: &ProcessorConfig,
    components: &mut BTreeMap<PathBuf, Arc<LoadedComponent>>,
) -> Result<Arc<LoadedComponent>, RunError> {
    if let Some(c) = components.get(&p.component) {
        return Ok(c.clone());
    }
    let c = Arc::new(
        host.runtime
            .load(&p.component)
            .map_err(|error| RunError::Load {
                processor: p.name.clone(),
                error,
            })?,
    );
    components.insert(p.component.clone(), c.clone());
    Ok(c)
}

/// Logs the version of `p` that runs (`component`): the config's file
/// (`file`), or the one the registry has active (deployed or rolled back
/// to through the API or the console), naming the file's version then.
fn log_loaded(p: &ProcessorConfig, component: &LoadedComponent, file: &LoadedComponent) {
    let load_ms = component.load_time.as_millis() as u64;
    if component.sha256 == file.sha256 {
        tracing::info!(
            processor = %p.name, version = %component.sha256, from = "config",
            cached = component.cached, load_ms, "component loaded"
        );
    } else {
        tracing::info!(
            processor = %p.name, version = %component.sha256, from = "registry",
            config_version = %file.sha256, cached = component.cached, load_ms,
            "component loaded"
        );
    }
}

/// Warns about an embedded-log input that nothing has written to yet and
/// no processor of this config writes (it is read once it appears).
fn warn_missing_inputs(config: &Config, host: &Host, p: &ProcessorConfig) -> Result<(), RunError> {
    if config.kafka.is_some() {
        return Ok(());
    }
    for input in &p.inputs {
        let written_here = config
            .processors
            .iter()
            .any(|q| q.output == *input || q.dead_letter_topic() == *input);
        if host.log.partitions(input)?.is_none() && !written_here {
            tracing::warn!(processor = %p.name, topic = %input, "input topic does not exist yet (nothing was produced to it); it is read once it appears");
        }
    }
    Ok(())
}

/// Creates the topics: on the embedded log the `[[topic]]` list with its
/// retention, and a position for every processor in each input partition
/// (so `stats` shows its lag before its first commit); on Kafka every
/// input, output and dead-letter topic that is missing.
///
/// # Errors
///
/// Log, storage and Kafka errors; a topic missing on Kafka with creation off.
pub(super) async fn prepare_streams(config: &Config, host: &Host) -> Result<(), RunError> {
    if let Some(k) = &config.kafka {
        let mut topics: BTreeMap<String, Option<u32>> = BTreeMap::new();
        for p in &config.processors {
            for t in p.inputs.iter().chain([&p.output, &p.dead_letter_topic()]) {
                topics.entry(t.clone()).or_insert(None);
            }
        }
        for t in &config.topics {
            topics.insert(t.name.clone(), t.partitions);
        }
        crate::streams::kafka::ensure_topics(k, &topics).await?;
        return prepare_changelogs(config, k).await;
    }
    let log = &host.log;
    for t in &config.topics {
        let partitions = t.partitions.unwrap_or(config.log.default_partitions);
        log.create_topic(&t.name, partitions).map_err(|e| match e {
            LogError::PartitionCount { existing, .. } => RunError::Invalid(format!(
                "[[topic]] {:?}: partitions = {partitions}, but the topic exists with partition count {existing}, which cannot change: say partitions = {existing}, or use another topic",
                t.name
            )),
            e => e.into(),
        })?;
        log.set_retention(
            &t.name,
            t.retention.time.map(|d| d.as_millis() as u64),
            t.retention_bytes,
        )?;
        log.set_unread(&t.name, t.retention.unread)?;
    }
    // Every processor, started or paused, gets a position in each input
    // partition that exists, so `stats` shows its lag even before (or
    // without) its first commit.
    let txn = host.db.begin_write().map_err(StorageError::from)?;
    for p in &config.processors {
        for input in &p.inputs {
            for partition in 0..log.partitions(input)?.unwrap_or(0) {
                if log.position(&p.name, input, partition)?.is_none() {
                    // From the first record still stored: what retention
                    // removed before this processor existed is not lag.
                    let start = log.start_offset(input, partition)?;
                    positions::set_position_in(&txn, &p.name, input, partition, start)?;
                }
            }
        }
    }
    txn.commit().map_err(StorageError::from)?;
    Ok(())
}

/// How long a run waits for its input topics to show in the broker's
/// metadata before it sizes their changelogs.
const INPUTS_SETTLE: std::time::Duration = std::time::Duration::from_secs(30);

/// Creates each processor's changelog (compacted, one partition per input
/// partition: as many as its widest input has) and replays topic.
///
/// # Errors
///
/// Kafka errors; a changelog with too few partitions.
async fn prepare_changelogs(config: &Config, k: &KafkaConfig) -> Result<(), RunError> {
    for p in &config.processors {
        // The inputs were just made sure of (maybe created, maybe by another
        // host starting now): wait until the metadata shows them all.
        let counts =
            crate::streams::kafka::settled_partition_counts(k, &p.inputs, INPUTS_SETTLE).await?;
        let widest = counts.values().copied().max().unwrap_or(1).max(1);
        crate::streams::kafka::ensure_compacted(k, &p.changelog_topic(), widest).await?;
        crate::streams::kafka::ensure_compacted(k, &p.replays_topic(), 1).await?;
    }
    Ok(())
}

/// A run loop per ready processor, on Kafka or on the embedded log, under
/// its control (in the idempotency epoch the registry has).
///
/// # Errors
///
/// Kafka errors connecting; storage errors reading the epoch.
pub(super) fn build_pipelines(
    config: &Config,
    host: &Host,
    ready: Vec<Ready<'_>>,
    managed: &BTreeMap<String, Managed>,
    data_dir: &std::path::Path,
) -> Result<Vec<Pipeline>, RunError> {
    let mut pipelines = Vec::new();
    for Ready {
        config: p,
        settings,
        handler,
    } in ready
    {
        let (source, sink): (Box<dyn Source>, Box<dyn Sink>) = match &config.kafka {
            Some(k) => {
                let group = p.group();
                let host_id = k.host_id(data_dir);
                let setup = StreamSetup {
                    processor: settings.name.clone(),
                    group: &group,
                    inputs: &p.inputs,
                    exactly_once: p.exactly_once,
                    changelog_topic: p.changelog_topic(),
                    replays_topic: p.replays_topic(),
                    host_id: &host_id,
                    db: host.db.clone(),
                    store: PartitionStore::new(settings.name.clone()),
                    restore_lag: managed[&p.name].restore_lag.clone(),
                };
                tracing::info!(processor = %p.name, %group, %host_id, "joining the consumer group");
                let stream = KafkaStream::connect(k, setup)?;
                (stream.source(), stream.sink())
            }
            None => (
                Box::new(EmbeddedSource::new(
                    host.log.clone(),
                    settings.name.clone(),
                    p.inputs.clone(),
                )),
                Box::new(EmbeddedSink::new(config.log.default_partitions)),
            ),
        };
        let epoch = host.registry.epoch(&p.name)?;
        let control = managed[&p.name].control.clone();
        let mut attached = Attached::new(control, epoch);
        if config.kafka.is_none() {
            attached = attached.with_dead_letters(host.log.clone(), settings.clone());
        }
        let mut pipeline =
            Pipeline::new(settings, host.db.clone(), source, sink, Box::new(handler));
        pipeline.attach(Box::new(attached));
        pipelines.push(pipeline);
    }
    Ok(pipelines)
}
