//! The command line: one subcommand per job, all on one data dir.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use rdkafka::producer::BaseProducer;
use tidewater::config::Config;
use tidewater::ingest::{self, CsvOptions};
use tidewater::kafka::{DeliveryContext, KafkaConfig};
use tidewater::log::{Log, Record};

/// Runs sandboxed WebAssembly processors on every event of durable streams.
///
/// Events live in topics of the embedded log (a redb file in the data dir).
/// Processors are WebAssembly components built against the WIT world
/// tidewater:processor@0.1.0; each reads input topics, deduplicates by
/// idempotency key, and publishes its outputs to other topics, committing
/// outputs, state and position in one transaction.
#[derive(Debug, Parser)]
#[command(name = "tidewater", version, max_term_width = 100)]
pub struct Cli {
    /// Where the database and the compiled-component cache live.
    #[arg(
        long,
        global = true,
        env = "TIDEWATER_DATA_DIR",
        default_value = ".tidewater"
    )]
    pub data_dir: PathBuf,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the processors of a config file until Ctrl-C (or until idle).
    Run(RunArgs),
    /// Append events to a topic, from a CSV file of sensor readings.
    ///
    /// Rows that cannot become events are reported with their line number and
    /// kept, with the reason, in the topic <TOPIC>.rejected; the exit status is
    /// then 2. A file that cannot be read to its end (e.g. a truncated gzip
    /// file) is an error (exit 1) after the rows before the damage were appended.
    Produce(ProduceArgs),
    /// Print the records of a topic.
    Consume(ConsumeArgs),
    /// Ship an embedded-log topic to Kafka (store-and-forward, at-least-once).
    ///
    /// Reads --from in the embedded log from where the last forward of it
    /// stopped and produces every record byte for byte (key, value, headers,
    /// timestamp) to --topic on the brokers, then records how far it got.
    /// While the brokers are unreachable it waits and retries, and between
    /// batches it leaves the data dir free, so `produce` keeps storing events
    /// locally; they are sent when the brokers return. A record may be sent
    /// twice after a crash, identical both times, so a downstream processor
    /// with a content key mode (json:, hash, record-key) drops the copy.
    Forward(ForwardArgs),
    /// Show each processor's counters, status and lag.
    Stats(StatsArgs),
    /// List topics with their partitions and offsets.
    Topics(FormatArgs),
    /// Write a new processor project (rust, python, js, ts, c, cpp or zig) that builds
    /// with `make` and tests with `make test`.
    New(NewArgs),
    /// Upload a component as a new version of a running processor (through
    /// the admin API of `run --admin`); prints its SHA-256.
    ///
    /// The upload is validated (WebAssembly, a component, the world
    /// tidewater:processor@0.1.0, `init` accepts the processor's config) and
    /// kept; with --activate it runs from the next batch boundary, with
    /// --shadow it gets the same batches and its outputs are compared.
    Deploy(crate::deploy_cli::DeployArgs),
    /// List a processor's versions (* marks the active one).
    Versions(crate::deploy_cli::VersionsArgs),
    /// Make a version active at the next batch boundary.
    Activate(crate::deploy_cli::ActivateArgs),
    /// Go back to the previous version, or to the one named.
    Rollback(crate::deploy_cli::RollbackArgs),
    /// Pause a processor at the next batch boundary.
    Pause(crate::deploy_cli::NameArgs),
    /// Resume a paused processor.
    Resume(crate::deploy_cli::NameArgs),
    /// Read a processor's inputs again from an offset or a time.
    Replay(crate::deploy_cli::ReplayArgs),
    /// Work with a processor's dead-letter topic.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Debug, Subcommand)]
enum DlqCommand {
    /// Feed a processor's dead letters through a (fixed) component, exactly once.
    ///
    /// Each dead letter's original event (key, value and headers byte for
    /// byte, its topic, partition and offset) goes to the component, with the
    /// processor's config and limits; the outputs go where the processor's
    /// would, with the same idempotency-key headers, and its state writes
    /// apply. What became of each dead letter is recorded by its position in
    /// the dead-letter topic in the same transaction: one that was replayed is
    /// never replayed again; one that failed again is tried again only by
    /// another version. Conflicts and events without a key are left alone.
    Replay(DlqReplayArgs),
}

#[derive(Debug, Args)]
struct DlqReplayArgs {
    /// The processor whose dead letters to replay (a [[processor]] name in the config).
    name: String,
    /// The config that defines the processor (its dead-letter and output
    /// topics, config, limits, key mode).
    #[arg(long, short, env = "TIDEWATER_CONFIG")]
    config: PathBuf,
    /// The fixed component to replay with (default: the processor's `component`).
    #[arg(long)]
    component: Option<PathBuf>,
    /// How to print the summary.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Args)]
struct NewArgs {
    /// The processor's name (lowercase letters, digits, '-'); also the directory.
    name: String,
    /// The language: rust, python, js, ts, c, cpp or zig.
    #[arg(long)]
    lang: String,
    /// Where to write it (default: ./NAME).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// The tidewater checkout whose SDK and build tools the project uses.
    #[arg(long, env = "TIDEWATER_ROOT")]
    root: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct KafkaArgs {
    /// Use Apache Kafka at these bootstrap servers (host:port, comma-separated)
    /// instead of the embedded log. For `run`, this overrides [kafka] brokers.
    #[arg(long, env = "TIDEWATER_BROKERS", value_parser = non_empty)]
    brokers: Option<String>,
}

#[derive(Debug, Args)]
struct RunArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The TOML config: [[processor]] sections, and optional [log], [[topic]],
    /// [kafka] (run on Kafka) and [[forward]] (ship embedded-log topics to
    /// Kafka). Every key is documented in host/src/config.rs.
    #[arg(long, short, env = "TIDEWATER_CONFIG")]
    config: PathBuf,
    /// Stop once every input has been read and nothing is left to do, then
    /// print a summary (for batch jobs and demos).
    #[arg(long)]
    until_idle: bool,
    /// How to print the summary.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Serve the admin HTTP API on this address (e.g. 127.0.0.1:7070; port
    /// 0 picks a free one); overrides [admin] listen.
    #[arg(long, env = "TIDEWATER_ADMIN_LISTEN")]
    admin: Option<String>,
    /// Watch this directory: a new or changed <processor>.wasm in it is
    /// deployed and activated; overrides [admin] watch_dir.
    #[arg(long)]
    watch: Option<PathBuf>,
    /// Start every processor paused; `tidewater resume NAME` starts it (to
    /// set up a shadow or a canary before the first event).
    #[arg(long)]
    paused: bool,
}

#[derive(Debug, Args)]
struct ProduceArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The topic to append to (created if missing).
    topic: String,
    /// A CSV file (plain or gzip) whose header names the columns; each row
    /// becomes one JSON event keyed by --device.
    #[arg(long)]
    csv: PathBuf,
    /// The device id: the record key and the "device" field of each event.
    #[arg(long, value_parser = non_empty)]
    device: String,
    /// The column that holds each row's time; it becomes the "ts" field
    /// (as written) and the record timestamp (UTC when it names no offset).
    #[arg(long)]
    time_column: String,
    /// Partitions to create the topic with, if it does not exist (1 to 10000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    partitions: Option<u32>,
    /// After the file, send this percentage of its rows again, chosen by a
    /// fixed hash of device and line (what devices retrying over a flaky
    /// link do). 0 to 100.
    #[arg(long, default_value_t = 0.0)]
    redeliver_percent: f64,
    /// Records per durable commit (1 to 1000000).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    chunk: u64,
}

fn non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_owned())
    }
}

#[derive(Debug, Args)]
struct ConsumeArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The topic to read.
    topic: String,
    /// Only this partition (default: all, one after the other).
    #[arg(long)]
    partition: Option<u32>,
    /// Start at this offset in each partition (default: the log start).
    #[arg(long, default_value_t = 0)]
    from_offset: u64,
    /// Stop after this many records.
    #[arg(long)]
    max: Option<u64>,
    /// jsonl: one JSON object per record (topic, partition, offset,
    /// timestamp_ms, key, headers, value); bytes that are not UTF-8 are
    /// written as {"base64": "..."}. value: just each value, one per line.
    #[arg(long, value_enum, default_value_t = ConsumeFormat::Jsonl)]
    format: ConsumeFormat,
}

#[derive(Debug, Args)]
struct ForwardArgs {
    /// The embedded-log topic to ship.
    #[arg(long)]
    from: String,
    /// The Kafka bootstrap servers (host:port, comma-separated).
    #[arg(long, env = "TIDEWATER_BROKERS", value_parser = non_empty)]
    to_kafka: String,
    /// The Kafka topic to write (default: the same name as --from). Created
    /// if missing, with as many partitions as --from has, so keys keep their
    /// partition.
    #[arg(long)]
    topic: Option<String>,
    /// Records per batch and per position commit (1 to 100000).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..=100_000))]
    batch: u64,
    /// Stop once everything stored so far has been shipped.
    #[arg(long)]
    until_idle: bool,
}

#[derive(Debug, Args)]
struct StatsArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    format: FormatArgs,
}

#[derive(Debug, Args)]
struct FormatArgs {
    /// table for people, json for scripts.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Json,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ConsumeFormat {
    Jsonl,
    Value,
}

/// Prints one row of counters per processor, with `last` (e.g. events/s or
/// lag) as the column before the status.
fn print_counters<'a>(
    last: &str,
    rows: impl Iterator<Item = (&'a str, &'a tidewater::stats::Counters, String, &'a str)>,
) {
    println!(
        "{:<12} {:>11} {:>10} {:>9} {:>8} {:>13} {:>6} {:>9}  status",
        "processor",
        "events read",
        "duplicates",
        "conflicts",
        "outputs",
        "dead-lettered",
        "errors",
        last
    );
    for (name, c, extra, status) in rows {
        println!(
            "{:<12} {:>11} {:>10} {:>9} {:>8} {:>13} {:>6} {:>9}  {}",
            name,
            c.events_in,
            c.duplicates,
            c.conflicts,
            c.outputs,
            c.dead_lettered,
            c.errors,
            extra,
            status
        );
    }
}

/// A future that completes on SIGTERM or SIGINT (Ctrl-C). The handlers are
/// installed when this is called, not when the future is first polled.
fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::info!("asked to stop; finishing the work in flight");
    })
}

/// Runs the command.
pub async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(a) => run(&cli.data_dir, a).await,
        Command::Produce(a) => produce(&cli.data_dir, a).await,
        Command::Consume(a) => consume(&cli.data_dir, a),
        Command::Forward(a) => forward(&cli.data_dir, a).await,
        Command::Stats(a) => stats(&cli.data_dir, a),
        Command::Topics(a) => topics(&cli.data_dir, a),
        Command::New(a) => new_processor(a),
        Command::Deploy(a) => crate::deploy_cli::deploy(&cli.data_dir, a).await,
        Command::Versions(a) => crate::deploy_cli::versions(&cli.data_dir, a).await,
        Command::Activate(a) => crate::deploy_cli::activate(&cli.data_dir, a).await,
        Command::Rollback(a) => crate::deploy_cli::rollback(&cli.data_dir, a).await,
        Command::Pause(a) => crate::deploy_cli::pause(&cli.data_dir, a, true).await,
        Command::Resume(a) => crate::deploy_cli::pause(&cli.data_dir, a, false).await,
        Command::Replay(a) => crate::deploy_cli::replay(&cli.data_dir, a).await,
        Command::Dlq(DlqCommand::Replay(a)) => dlq_replay(&cli.data_dir, a).await,
    }
}

async fn dlq_replay(data_dir: &std::path::Path, a: DlqReplayArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&a.config)?;
    if config.kafka.is_some() {
        bail!(
            "dlq replay reads dead letters from the embedded log; this config uses Kafka (not supported yet)"
        );
    }
    let Some(processor) = config.processors.into_iter().find(|p| p.name == a.name) else {
        bail!(
            "there is no processor {:?} in {}",
            a.name,
            a.config.display()
        );
    };
    let component = tidewater::dlq::component_for(&processor, a.component.as_deref());
    let log = open_existing_log(data_dir)?;
    let runtime = std::sync::Arc::new(tidewater::runtime::Runtime::new(Some(
        data_dir.join("cache"),
    ))?);
    let summary = tokio::task::spawn_blocking(move || {
        tidewater::dlq::replay(&log, runtime, &processor, &component)
    })
    .await??;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
        Format::Table => println!(
            "{}: {} dead letters in {} through version {}: {} replayed ({} outputs), {} failed again, {} transient, {} settled before (replayed, or failed with this version), {} not replayable",
            summary.processor,
            summary.dead_letters,
            summary.topic,
            summary.version,
            summary.replayed,
            summary.outputs,
            summary.failed,
            summary.transient,
            summary.already_done,
            summary.not_replayable
        ),
    }
    Ok(ExitCode::SUCCESS)
}

fn new_processor(a: NewArgs) -> anyhow::Result<ExitCode> {
    use tidewater::scaffold;
    let language: scaffold::Language = a.lang.parse()?;
    let dir = a.dir.unwrap_or_else(|| PathBuf::from(&a.name));
    let root = a.root.unwrap_or_else(scaffold::default_root);
    let files = scaffold::new_processor(language, &a.name, &dir, &root)?;
    for f in &files {
        println!("wrote {}", f.display());
    }
    println!(
        "build it: cd {} && make        test it: make test",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn open_log(data_dir: &std::path::Path) -> anyhow::Result<Log> {
    let db = tidewater::db::open(data_dir)?;
    Ok(Log::new(db, 1))
}

/// Opens the log of a data dir that must exist already (for commands that only read).
fn open_existing_log(data_dir: &std::path::Path) -> anyhow::Result<Log> {
    if !data_dir.join(tidewater::db::DB_FILE).exists() {
        bail!(
            "there is no tidewater data in {} (nothing was produced or run there; --data-dir or TIDEWATER_DATA_DIR choose another)",
            data_dir.display()
        );
    }
    open_log(data_dir)
}

async fn run(data_dir: &std::path::Path, a: RunArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(&a.config)?;
    if let Some(brokers) = a.kafka.brokers {
        match &mut config.kafka {
            Some(k) => k.brokers = brokers,
            None => config.kafka = Some(KafkaConfig::new(brokers)),
        }
    }
    let options = tidewater::RunOptions {
        data_dir: data_dir.to_owned(),
        until_idle: a.until_idle,
    };
    let base = a
        .config
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let mut admin = tidewater::admin::AdminOptions::from_config(
        config.admin.as_ref(),
        a.admin.as_deref(),
        std::env::var("TIDEWATER_ADMIN_TOKEN").ok(),
        &base,
    )
    .map_err(anyhow::Error::msg)?;
    if let Some(dir) = a.watch {
        let interval = config
            .admin
            .as_ref()
            .map_or(std::time::Duration::from_secs(1), |c| c.watch_interval);
        admin.watch = Some((dir, interval));
    }
    admin.start_paused = a.paused;
    // Registered now, before the components load, so that a signal arriving
    // while they do is not taken by the default handler.
    let shutdown = stop_signal()?;
    let summary = tidewater::run_with(config, options, admin, shutdown).await?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
        Format::Table => {
            if !summary.processors.is_empty() {
                print_counters(
                    "events/s",
                    summary.processors.iter().map(|p| {
                        (
                            p.name.as_str(),
                            &p.counters,
                            format!("{:.0}", p.events_per_s()),
                            p.status.as_str(),
                        )
                    }),
                );
            }
            for f in &summary.forwards {
                println!(
                    "forward {} → Kafka {} at {}: {} records shipped, {}",
                    f.from, f.topic, f.brokers, f.records, f.status
                );
            }
            println!("elapsed: {:.1} s", summary.elapsed_ms as f64 / 1000.0);
        }
    }
    let failed = summary
        .processors
        .iter()
        .map(|p| &p.status)
        .chain(summary.forwards.iter().map(|f| &f.status))
        .any(|s| s.starts_with("failed") || s.starts_with("paused"));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Where `produce` appends: the embedded log or a Kafka producer.
enum Target {
    Log(Log),
    Kafka {
        config: KafkaConfig,
        producer: Box<BaseProducer<DeliveryContext>>,
        created: std::cell::RefCell<std::collections::BTreeSet<String>>,
    },
}

impl Target {
    /// Appends `records` to `topic` durably (one redb commit, or every record
    /// acknowledged by the broker), creating the topic with `partitions`
    /// partitions if it does not exist. Returns how many were appended.
    fn append_creating(
        &self,
        topic: &str,
        partitions: Option<u32>,
        records: impl IntoIterator<Item = Record>,
    ) -> anyhow::Result<usize> {
        match self {
            Target::Log(log) => Ok(log.append_creating(topic, partitions, records)?.len()),
            Target::Kafka {
                config,
                producer,
                created,
            } => {
                if !created.borrow().contains(topic) {
                    let topics = [(topic.to_owned(), partitions)].into_iter().collect();
                    tokio::task::block_in_place(|| {
                        tokio::runtime::Handle::current()
                            .block_on(tidewater::kafka::ensure_topics(config, &topics))
                    })?;
                    created.borrow_mut().insert(topic.to_owned());
                }
                let records: Vec<Record> = records.into_iter().collect();
                Ok(tidewater::kafka::produce_all(
                    producer,
                    records.iter().map(|r| (topic, r)),
                    config.flush_timeout,
                )?)
            }
        }
    }

    /// As [`Target::append_creating`] with the default partition count.
    fn append(
        &self,
        topic: &str,
        records: impl IntoIterator<Item = Record>,
    ) -> anyhow::Result<usize> {
        self.append_creating(topic, None, records)
    }
}

async fn produce(data_dir: &std::path::Path, a: ProduceArgs) -> anyhow::Result<ExitCode> {
    if !(0.0..=100.0).contains(&a.redeliver_percent) {
        bail!(
            "--redeliver-percent is {}, it must be between 0 and 100",
            a.redeliver_percent
        );
    }
    let chunk_size = a.chunk as usize;
    let file =
        std::fs::File::open(&a.csv).with_context(|| format!("cannot open {}", a.csv.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    tidewater::log::check_topic_name(&a.topic)?;
    let log = match &a.kafka.brokers {
        // Waits its turn while a `forward` reads the same data dir.
        None => Target::Log(Log::new(
            tidewater::db::open_retrying(data_dir, std::time::Duration::from_secs(10))?,
            1,
        )),
        Some(brokers) => {
            let config = KafkaConfig::new(brokers.clone());
            let producer = tidewater::kafka::producer(&config, None)?;
            Target::Kafka {
                config,
                producer: Box::new(producer),
                created: std::cell::RefCell::new(std::collections::BTreeSet::new()),
            }
        }
    };
    let bar = indicatif::ProgressBar::new(size).with_style(
        indicatif::ProgressStyle::with_template("{msg} {wide_bar} {bytes}/{total_bytes} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("{} → {}", a.csv.display(), a.topic));
    let started = Instant::now();
    let options = CsvOptions {
        device: a.device.clone(),
        time_column: a.time_column.clone(),
    };
    let mut chunk: Vec<Record> = Vec::with_capacity(chunk_size.min(10_000));
    let mut again: Vec<Record> = Vec::new();
    let mut rejected: Vec<Record> = Vec::new();
    let mut good = 0u64;
    let mut append_error = None;
    let result = ingest::read_csv(bar.wrap_read(file), &options, |row| {
        if append_error.is_some() {
            return;
        }
        match row {
            Ok(record) => {
                good += 1;
                if a.redeliver_percent > 0.0
                    && ingest::chosen_for_redelivery(&a.device, good, a.redeliver_percent)
                {
                    again.push(record.clone());
                }
                chunk.push(record);
                if chunk.len() >= chunk_size {
                    match log.append_creating(&a.topic, a.partitions, chunk.drain(..)) {
                        Ok(n) => {
                            tracing::debug!(topic = %a.topic, records = n, "chunk committed")
                        }
                        Err(e) => append_error = Some(e),
                    }
                }
            }
            Err(bad) => {
                bar.suspend(|| eprintln!("{}:{}: {}", a.csv.display(), bad.line, bad.reason));
                rejected.push(Record {
                    timestamp_ms: 0,
                    key: Some(a.device.clone().into_bytes()),
                    value: Some(bad.raw),
                    headers: vec![
                        ("tidewater-error-message".into(), bad.reason.into_bytes()),
                        (
                            "tidewater-source-file".into(),
                            a.csv.display().to_string().into_bytes(),
                        ),
                        (
                            "tidewater-source-line".into(),
                            bad.line.to_string().into_bytes(),
                        ),
                    ],
                });
            }
        }
    });
    bar.finish_and_clear();
    if let Some(e) = append_error {
        return Err(e).context(format!("appending to {}", a.topic));
    }
    let rejected_topic = format!("{}.rejected", a.topic);
    let keep_rejected = |rejected: Vec<Record>| -> anyhow::Result<()> {
        if !rejected.is_empty() {
            log.append(&rejected_topic, rejected)?;
        }
        Ok(())
    };
    if let Err(e) = result {
        // Keep what was read before the damage, then report it.
        if !chunk.is_empty() {
            log.append_creating(&a.topic, a.partitions, chunk.drain(..))?;
        }
        keep_rejected(std::mem::take(&mut rejected))?;
        return Err(e).with_context(|| {
            format!(
                "{}: {good} rows were appended before the error",
                a.csv.display()
            )
        });
    }
    if !chunk.is_empty() {
        log.append_creating(&a.topic, a.partitions, chunk.drain(..))?;
    }
    let redelivered = again.len();
    for part in again.chunks(chunk_size) {
        log.append(&a.topic, part.iter().cloned())?;
    }
    let bad = rejected.len();
    keep_rejected(rejected)?;
    eprintln!(
        "{}: appended {} events from {} ({} sent again) in {:.2} s{}",
        a.topic,
        good as usize + redelivered,
        a.csv.display(),
        redelivered,
        started.elapsed().as_secs_f64(),
        if bad > 0 {
            format!("; {bad} bad rows kept in topic {rejected_topic}")
        } else {
            String::new()
        }
    );
    Ok(if bad > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

async fn forward(data_dir: &std::path::Path, a: ForwardArgs) -> anyhow::Result<ExitCode> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    use tidewater::forward::{ForwardConfig, Forwarder};
    let mut forwarder = Forwarder::new(ForwardConfig {
        from: a.from,
        topic: a.topic,
        batch: a.batch as usize,
        kafka: KafkaConfig::new(a.to_kafka),
    })?;
    let summary = format!(
        "from {} to Kafka topic {}",
        forwarder.config().from,
        forwarder.config().kafka_topic()
    );
    let stop = Arc::new(AtomicBool::new(false));
    {
        let signal = stop_signal()?;
        let stop = stop.clone();
        tokio::spawn(async move {
            signal.await;
            stop.store(true, Ordering::SeqCst);
        });
    }
    let data_dir = data_dir.to_owned();
    let result = tokio::task::spawn_blocking(move || {
        // The data dir is opened per batch and let go between, so `produce`
        // keeps storing events locally while this waits for the brokers.
        let mut open = || -> Result<Log, tidewater::forward::ForwardError> {
            Ok(Log::new(
                tidewater::db::open_retrying(&data_dir, Duration::from_secs(30))?,
                1,
            ))
        };
        forwarder.run(&mut open, &stop, a.until_idle)
    })
    .await??;
    eprintln!("forwarded {result} records {summary}");
    Ok(ExitCode::SUCCESS)
}

fn bytes_json(b: &[u8]) -> serde_json::Value {
    match std::str::from_utf8(b) {
        Ok(s) => serde_json::Value::from(s),
        Err(_) => {
            serde_json::json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) })
        }
    }
}

/// One line of `consume --format jsonl`, fields in this order.
#[derive(serde::Serialize)]
struct JsonRecord<'a> {
    topic: &'a str,
    partition: u32,
    offset: u64,
    timestamp_ms: i64,
    key: Option<serde_json::Value>,
    headers: Vec<(&'a str, serde_json::Value)>,
    value: Option<serde_json::Value>,
}

fn consume(data_dir: &std::path::Path, a: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut left = a.max.unwrap_or(u64::MAX);
    let mut print = |r: &tidewater::log::LogRecord| -> bool {
        if left == 0 {
            return false;
        }
        left -= 1;
        let line = match a.format {
            ConsumeFormat::Jsonl => serde_json::to_string(&JsonRecord {
                topic: &r.topic,
                partition: r.partition,
                offset: r.offset,
                timestamp_ms: r.record.timestamp_ms,
                key: r.record.key.as_deref().map(bytes_json),
                headers: r
                    .record
                    .headers
                    .iter()
                    .map(|(n, v)| (n.as_str(), bytes_json(v)))
                    .collect(),
                value: r.record.value.as_deref().map(bytes_json),
            })
            .unwrap_or_default(),
            ConsumeFormat::Value => match r.record.value.as_deref().map(bytes_json) {
                Some(serde_json::Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => "null".into(),
            },
        };
        // A reader that went away (e.g. `| head`) stops the output quietly.
        writeln!(out, "{line}").is_ok() && left > 0
    };
    match &a.kafka.brokers {
        None => {
            let log = open_existing_log(data_dir)?;
            let Some(n) = log.partitions(&a.topic)? else {
                bail!(
                    "topic {:?} does not exist (see `tidewater topics`)",
                    a.topic
                );
            };
            let partitions: Vec<u32> = match a.partition {
                Some(p) if p >= n => bail!(
                    "topic {:?} has {n} partitions, there is no partition {p}",
                    a.topic
                ),
                Some(p) => vec![p],
                None => (0..n).collect(),
            };
            'partitions: for p in partitions {
                let mut next = a.from_offset;
                loop {
                    let batch = log.read(&a.topic, p, next, 4096, 8 << 20)?;
                    let Some(last) = batch.last() else { break };
                    next = last.offset + 1;
                    for r in &batch {
                        if !print(r) {
                            break 'partitions;
                        }
                    }
                }
            }
        }
        Some(brokers) => {
            let config = KafkaConfig::new(brokers.clone());
            tidewater::kafka::read_topic(
                &config,
                &a.topic,
                a.partition,
                a.from_offset,
                &mut print,
            )?;
        }
    }
    let _ = out.flush();
    Ok(ExitCode::SUCCESS)
}

fn stats(data_dir: &std::path::Path, a: StatsArgs) -> anyhow::Result<ExitCode> {
    let format = a.format.format;
    let log = open_existing_log(data_dir)?;
    let mut all = tidewater::stats::read_all(&log)?;
    if let Some(brokers) = &a.kafka.brokers {
        // Positions are kept in redb for Kafka too; the ends come from the broker.
        let config = KafkaConfig::new(brokers.clone());
        for s in all.values_mut() {
            s.lag = 0;
        }
        for pos in log.positions()? {
            let end = tidewater::kafka::high_watermark(&config, &pos.topic, pos.partition)?;
            if let Some(s) = all.get_mut(&pos.consumer) {
                s.lag += end.saturating_sub(pos.next_offset);
            }
        }
    }
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&all)?),
        Format::Table => {
            print_counters(
                "lag",
                all.iter().map(|(name, s)| {
                    (
                        name.as_str(),
                        &s.counters,
                        s.lag.to_string(),
                        s.status.as_str(),
                    )
                }),
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn topics(data_dir: &std::path::Path, a: FormatArgs) -> anyhow::Result<ExitCode> {
    let log = open_existing_log(data_dir)?;
    let topics = log.topics()?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&topics)?),
        Format::Table => {
            println!(
                "{:<28} {:>9} {:>10} {:>12}",
                "topic", "partition", "start", "end"
            );
            for t in &topics {
                for (p, info) in t.partitions.iter().enumerate() {
                    println!(
                        "{:<28} {:>9} {:>10} {:>12}",
                        t.name, p, info.start, info.end
                    );
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
