//! The command line: one subcommand per job, all on one data dir.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use base64::Engine as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use tidewater::config::Config;
use tidewater::ingest::{self, CsvOptions};
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
    Produce(ProduceArgs),
    /// Print the records of a topic.
    Consume(ConsumeArgs),
    /// Show each processor's counters, status and lag.
    Stats(StatsArgs),
    /// List topics with their partitions and offsets.
    Topics(FormatArgs),
    /// Write a new processor project (rust, python, js, c or cpp) that builds
    /// with `make` and tests with `make test`.
    New(NewArgs),
}

#[derive(Debug, Args)]
struct NewArgs {
    /// The processor's name (lowercase letters, digits, '-'); also the directory.
    name: String,
    /// The language: rust, python, js, c or cpp.
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
struct RunArgs {
    /// The TOML config: [[processor]] sections and optional [log] and [[topic]].
    #[arg(long, short, env = "TIDEWATER_CONFIG")]
    config: PathBuf,
    /// Stop once every input has been read and nothing is left to do, then
    /// print a summary (for batch jobs and demos).
    #[arg(long)]
    until_idle: bool,
    /// How to print the summary.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Args)]
struct ProduceArgs {
    /// The topic to append to (created if missing).
    topic: String,
    /// A CSV file (plain or gzip) whose header names the columns; each row
    /// becomes one JSON event keyed by --device.
    #[arg(long)]
    csv: PathBuf,
    /// The device id: the record key and the "device" field of each event.
    #[arg(long)]
    device: String,
    /// The column that holds each row's time; it becomes the "ts" field
    /// (as written) and the record timestamp (UTC when it names no offset).
    #[arg(long)]
    time_column: String,
    /// Partitions to create the topic with, if it does not exist.
    #[arg(long)]
    partitions: Option<u32>,
    /// After the file, send this percentage of its rows again, chosen by a
    /// fixed hash of device and line (what devices retrying over a flaky
    /// link do). 0 to 100.
    #[arg(long, default_value_t = 0.0)]
    redeliver_percent: f64,
    /// Records per durable commit.
    #[arg(long, default_value_t = 10_000)]
    chunk: usize,
}

#[derive(Debug, Args)]
struct ConsumeArgs {
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
struct StatsArgs {
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

/// Runs the command.
pub async fn execute(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(a) => run(&cli.data_dir, a).await,
        Command::Produce(a) => produce(&cli.data_dir, a),
        Command::Consume(a) => consume(&cli.data_dir, a),
        Command::Stats(a) => stats(&cli.data_dir, a.format.format),
        Command::Topics(a) => topics(&cli.data_dir, a),
        Command::New(a) => new_processor(a),
    }
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

async fn run(data_dir: &std::path::Path, a: RunArgs) -> anyhow::Result<ExitCode> {
    let config = Config::load(&a.config)?;
    let options = tidewater::RunOptions {
        data_dir: data_dir.to_owned(),
        until_idle: a.until_idle,
    };
    let shutdown = async {
        if tokio::signal::ctrl_c().await.is_ok() {
            tracing::info!("interrupted; finishing the batches in flight");
        }
    };
    let summary = tidewater::run(config, options, shutdown).await?;
    match a.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
        Format::Table => {
            println!(
                "{:<12} {:>11} {:>10} {:>9} {:>8} {:>13} {:>6} {:>9}  status",
                "processor",
                "events read",
                "duplicates",
                "conflicts",
                "outputs",
                "dead-lettered",
                "errors",
                "events/s"
            );
            for p in &summary.processors {
                let c = &p.counters;
                println!(
                    "{:<12} {:>11} {:>10} {:>9} {:>8} {:>13} {:>6} {:>9.0}  {}",
                    p.name,
                    c.events_in,
                    c.duplicates,
                    c.conflicts,
                    c.outputs,
                    c.dead_lettered,
                    c.errors,
                    p.events_per_s(),
                    p.status
                );
            }
            println!("elapsed: {:.1} s", summary.elapsed_ms as f64 / 1000.0);
        }
    }
    let failed = summary
        .processors
        .iter()
        .any(|p| p.status.starts_with("failed"));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn produce(data_dir: &std::path::Path, a: ProduceArgs) -> anyhow::Result<ExitCode> {
    if !(0.0..=100.0).contains(&a.redeliver_percent) {
        bail!(
            "--redeliver-percent is {}, it must be between 0 and 100",
            a.redeliver_percent
        );
    }
    if a.chunk == 0 {
        bail!("--chunk must be at least 1");
    }
    let file =
        std::fs::File::open(&a.csv).with_context(|| format!("cannot open {}", a.csv.display()))?;
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let log = open_log(data_dir)?;
    tidewater::log::check_topic_name(&a.topic)?;
    if let Some(n) = a.partitions {
        log.create_topic(&a.topic, n)?;
    }
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
    let mut chunk: Vec<Record> = Vec::with_capacity(a.chunk);
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
                if chunk.len() >= a.chunk {
                    match log.append(&a.topic, chunk.drain(..)) {
                        Ok(placed) => {
                            tracing::debug!(topic = %a.topic, records = placed.len(), "chunk committed")
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
                    value: Some(
                        serde_json::json!({
                            "file": a.csv.display().to_string(),
                            "line": bad.line,
                            "error": bad.reason,
                            "cells": bad.cells,
                        })
                        .to_string()
                        .into_bytes(),
                    ),
                    headers: vec![],
                });
            }
        }
    });
    bar.finish_and_clear();
    if let Some(e) = append_error {
        return Err(e).context(format!("appending to {}", a.topic));
    }
    result.with_context(|| format!("reading {}", a.csv.display()))?;
    log.append(&a.topic, chunk.drain(..))?;
    let redelivered = again.len();
    for part in again.chunks(a.chunk) {
        log.append(&a.topic, part.iter().cloned())?;
    }
    let rejected_topic = format!("{}.rejected", a.topic);
    let bad = rejected.len();
    if bad > 0 {
        log.append(&rejected_topic, rejected)?;
    }
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
    let log = open_log(data_dir)?;
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
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut left = a.max.unwrap_or(u64::MAX);
    for p in partitions {
        let mut next = a.from_offset;
        while left > 0 {
            let batch = log.read(&a.topic, p, next, 4096.min(left as usize), 8 << 20)?;
            let Some(last) = batch.last() else { break };
            next = last.offset + 1;
            for r in batch {
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
                    })?,
                    ConsumeFormat::Value => match r.record.value.as_deref().map(bytes_json) {
                        Some(serde_json::Value::String(s)) => s,
                        Some(other) => other.to_string(),
                        None => "null".into(),
                    },
                };
                if writeln!(out, "{line}").is_err() {
                    // The reader went away (e.g. `| head`): stop quietly.
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    }
    let _ = out.flush();
    Ok(ExitCode::SUCCESS)
}

fn stats(data_dir: &std::path::Path, format: Format) -> anyhow::Result<ExitCode> {
    let log = open_log(data_dir)?;
    let all = tidewater::stats::read_all(&log)?;
    match format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&all)?),
        Format::Table => {
            println!(
                "{:<12} {:>11} {:>10} {:>9} {:>8} {:>13} {:>6} {:>7}  status",
                "processor",
                "events read",
                "duplicates",
                "conflicts",
                "outputs",
                "dead-lettered",
                "errors",
                "lag"
            );
            for (name, s) in &all {
                let c = &s.counters;
                println!(
                    "{:<12} {:>11} {:>10} {:>9} {:>8} {:>13} {:>6} {:>7}  {}",
                    name,
                    c.events_in,
                    c.duplicates,
                    c.conflicts,
                    c.outputs,
                    c.dead_lettered,
                    c.errors,
                    s.lag,
                    s.status
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn topics(data_dir: &std::path::Path, a: FormatArgs) -> anyhow::Result<ExitCode> {
    let log = open_log(data_dir)?;
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
