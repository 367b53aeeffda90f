//! `tidewater produce`: records into a topic, on the embedded log (directly,
//! or through the ingest endpoint of the host that runs on it) or Kafka.

use std::io::{BufRead, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use rdkafka::producer::BaseProducer;
use tidewater::db::now_ms;
use tidewater::streams::Record;
use tidewater::streams::embedded::Log;
use tidewater::streams::ingest::client::IngestClient;
use tidewater::streams::ingest::parse::{self, BadLine, Shape};
use tidewater::streams::ingest::{self, CsvOptions, admit};
use tidewater::streams::kafka::{DeliveryContext, KafkaConfig};

use super::{KafkaArgs, non_empty};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(super) enum InputFormat {
    /// One JSON value per line (blank lines skipped).
    Ndjson,
    /// One JSON document: an array (one record per element) or one value.
    Json,
    /// One record per line, its bytes as given.
    Raw,
    /// CSV sensor readings: needs --device and --time-column.
    Csv,
}

#[derive(Debug, Args)]
pub(super) struct ProduceArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The topic to append to (created if missing).
    topic: String,
    /// Read from this file (plain or gzip) instead of stdin.
    #[arg(long, short)]
    file: Option<PathBuf>,
    /// How the input holds records.
    #[arg(long, value_enum, default_value_t = InputFormat::Ndjson)]
    format: InputFormat,
    /// The key of each record: the string (or number) at this JSON pointer
    /// in its value, e.g. /device. A record without it is malformed.
    #[arg(long, conflicts_with = "key")]
    key_pointer: Option<String>,
    /// The same key for every record.
    #[arg(long)]
    key: Option<String>,
    /// Each record's time: RFC 3339 text or epoch ms at this JSON pointer
    /// (e.g. /ts); without it, the time the record was read.
    #[arg(long)]
    timestamp_pointer: Option<String>,
    /// A header for every record, as name=value (repeatable, kept in order).
    #[arg(short = 'H', long = "header", value_parser = header_arg)]
    headers: Vec<(String, String)>,
    /// A CSV file of sensor readings (plain or gzip) whose header names the
    /// columns; each row becomes one JSON event keyed by --device. Same as
    /// --format csv --file FILE.
    #[arg(long, conflicts_with = "file")]
    csv: Option<PathBuf>,
    /// CSV: the device id, the record key and the "device" field of each event.
    #[arg(long, value_parser = non_empty)]
    device: Option<String>,
    /// CSV: the column that holds each row's time; it becomes the "ts" field
    /// (as written) and the record timestamp (UTC when it names no offset).
    #[arg(long)]
    time_column: Option<String>,
    /// Partitions to create the topic with, if it does not exist (1 to 10000).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    partitions: Option<u32>,
    /// After the input, send this percentage of its records again, chosen
    /// by a fixed hash of device (or topic) and line (what devices retrying
    /// over a flaky link do). 0 to 100.
    #[arg(long, default_value_t = 0.0)]
    redeliver_percent: f64,
    /// Records per durable commit (1 to 1000000; at most 10000 a request
    /// through a running host).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    chunk: u64,
    /// The CA certificates (PEM) that the running host's HTTPS ingest
    /// certificate is checked against (default: the system's roots).
    #[arg(long, env = "TIDEWATER_INGEST_CA")]
    ingest_ca: Option<PathBuf>,
}

fn header_arg(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .filter(|(n, _)| !n.is_empty())
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{s:?} is not name=value"))
}

/// Where `produce` appends: the embedded log, the ingest endpoint of the
/// host running on it, or a Kafka producer.
pub(super) enum Target {
    Log(Log),
    Host(Box<IngestClient>),
    Kafka {
        config: KafkaConfig,
        producer: Box<BaseProducer<DeliveryContext>>,
        created: std::collections::BTreeSet<String>,
    },
}

impl Target {
    /// The embedded log of `data_dir`; while a `run` holds it, that host's
    /// HTTP ingest endpoint (found through the data dir); while a `forward`
    /// holds it, the log once it is free; or a producer for `brokers`.
    fn open(data_dir: &Path, brokers: Option<&str>, ca: Option<&Path>) -> anyhow::Result<Self> {
        if let Some(brokers) = brokers {
            let config = KafkaConfig::new(brokers);
            let producer = tidewater::streams::kafka::producer(&config, None)?;
            return Ok(Target::Kafka {
                config,
                producer: Box::new(producer),
                created: Default::default(),
            });
        }
        match tidewater::db::open(data_dir) {
            Ok(db) => return Ok(Target::Log(Log::new(db, 1))),
            Err(tidewater::db::OpenError::InUse { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        if let Some(client) = IngestClient::discover(data_dir, ca)? {
            tracing::info!(
                url = client.url(),
                "the data dir is in use by a running host: sending through its ingest endpoint"
            );
            return Ok(Target::Host(Box::new(client)));
        }
        match tidewater::db::open_retrying(data_dir, Duration::from_secs(10)) {
            Ok(db) => Ok(Target::Log(Log::new(db, 1))),
            Err(tidewater::db::OpenError::InUse { path }) => bail!(
                "{} is in use by a running host that serves no HTTP ingest: add [ingest.http] listen = \"127.0.0.1:0\" to its config (then produce sends through it), or stop it",
                path.display()
            ),
            Err(e) => Err(e.into()),
        }
    }

    /// Appends `records` to `topic` durably (one redb commit, one request
    /// answered after the host's commit, or every record acknowledged by
    /// the broker), creating the topic with `partitions` partitions if it
    /// does not exist. Every record passes [`admit`] first (on a host, the
    /// host applies it). Returns how many were appended.
    fn append(
        &mut self,
        topic: &str,
        partitions: Option<u32>,
        mut records: Vec<Record>,
    ) -> anyhow::Result<usize> {
        if records.is_empty() {
            return Ok(0);
        }
        if !matches!(self, Target::Host(_)) {
            let now = now_ms();
            for r in &mut records {
                admit(r, now);
            }
        }
        match self {
            Target::Log(log) => Ok(log.append_creating(topic, partitions, records)?.len()),
            Target::Host(client) => block_on(send_to_host(client, topic, partitions, &records)),
            Target::Kafka {
                config,
                producer,
                created,
            } => {
                if !created.contains(topic) {
                    let topics = [(topic.to_owned(), partitions)].into_iter().collect();
                    block_on(async {
                        Ok(tidewater::streams::kafka::ensure_topics(config, &topics).await?)
                    })?;
                    created.insert(topic.to_owned());
                }
                Ok(tidewater::streams::kafka::produce_all(
                    producer,
                    records.iter().map(|r| (topic, r)),
                    config.flush_timeout,
                )?)
            }
        }
    }
}

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// Sends `records` as envelopes in requests of at most 10,000, waiting and
/// sending again while the host answers 503 (nothing was appended then).
async fn send_to_host(
    client: &mut IngestClient,
    topic: &str,
    partitions: Option<u32>,
    records: &[Record],
) -> anyhow::Result<usize> {
    let query = match partitions {
        Some(p) => format!("envelope=true&partitions={p}"),
        None => "envelope=true".to_owned(),
    };
    for part in records.chunks(10_000) {
        let mut body = Vec::new();
        for r in part {
            body.extend(parse::to_envelope(r));
            body.push(b'\n');
        }
        loop {
            let a = client
                .post(topic, &query, body.clone(), "application/x-ndjson", false)
                .await?;
            match a.status {
                200 => break,
                503 => {
                    let wait = a.retry_after.unwrap_or(Duration::from_secs(1));
                    tracing::info!(wait_ms = wait.as_millis() as u64, reason = %a.body["error"]["message"], "the host pushes back; sending again shortly");
                    tokio::time::sleep(wait).await;
                }
                s => bail!(
                    "the host refused the records ({s}): {}",
                    a.body["error"]["message"]
                        .as_str()
                        .unwrap_or(&a.body.to_string())
                ),
            }
        }
    }
    Ok(records.len())
}

/// What was read and where it went.
struct Tally {
    good: u64,
    again: Vec<Record>,
    rejected: Vec<Record>,
}

pub(super) async fn produce(data_dir: &Path, a: ProduceArgs) -> anyhow::Result<ExitCode> {
    if !(0.0..=100.0).contains(&a.redeliver_percent) {
        bail!(
            "--redeliver-percent is {}, it must be between 0 and 100",
            a.redeliver_percent
        );
    }
    let format = if a.csv.is_some() {
        InputFormat::Csv
    } else {
        a.format
    };
    check_flags(&a, format)?;
    tidewater::streams::topic::check_topic_name(&a.topic)?;
    let path = a.csv.clone().or_else(|| a.file.clone());
    let source = path
        .as_ref()
        .map_or_else(|| "stdin".to_owned(), |p| p.display().to_string());
    let (input, size): (Box<dyn Read>, u64) = match &path {
        Some(p) => {
            let f =
                std::fs::File::open(p).with_context(|| format!("cannot open {}", p.display()))?;
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            (Box::new(f), size)
        }
        None => (Box::new(std::io::stdin()), 0),
    };
    let mut target = Target::open(data_dir, a.kafka.brokers.as_deref(), a.ingest_ca.as_deref())?;
    let bar = if size > 0 {
        indicatif::ProgressBar::new(size).with_style(
            indicatif::ProgressStyle::with_template(
                "{msg} {wide_bar} {bytes}/{total_bytes} {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_message(format!("{source} → {}", a.topic));
    let started = Instant::now();
    let mut tally = Tally {
        good: 0,
        again: Vec::new(),
        rejected: Vec::new(),
    };
    let read = read_into(
        &a,
        format,
        bar.wrap_read(input),
        &source,
        &mut target,
        &mut tally,
        &bar,
    );
    bar.finish_and_clear();
    let rejected_topic = format!("{}.rejected", a.topic);
    let bad = tally.rejected.len();
    if let Err(e) = read {
        // Keep the bad lines read before the damage, then report it.
        target.append(&rejected_topic, None, std::mem::take(&mut tally.rejected))?;
        return Err(e).with_context(|| {
            format!(
                "{source}: {} records were appended before the error",
                tally.good
            )
        });
    }
    let redelivered = tally.again.len();
    for part in tally.again.chunks(a.chunk as usize) {
        target.append(&a.topic, None, part.to_vec())?;
    }
    target.append(&rejected_topic, None, tally.rejected)?;
    eprintln!(
        "{}: appended {} events from {source} ({redelivered} sent again){} in {:.2} s{}",
        a.topic,
        tally.good as usize + redelivered,
        if matches!(target, Target::Host(_)) {
            " through the running host"
        } else {
            ""
        },
        started.elapsed().as_secs_f64(),
        if bad > 0 {
            format!("; {bad} bad lines kept in topic {rejected_topic}")
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

fn check_flags(a: &ProduceArgs, format: InputFormat) -> anyhow::Result<()> {
    let csv_only = a.device.is_some() || a.time_column.is_some();
    match format {
        InputFormat::Csv => {
            if a.device.is_none() || a.time_column.is_none() {
                bail!("--format csv needs --device (the record key) and --time-column");
            }
            if a.key.is_some() || a.key_pointer.is_some() || a.timestamp_pointer.is_some() {
                bail!(
                    "--format csv takes the key from --device and the time from --time-column; --key, --key-pointer and --timestamp-pointer do not apply"
                );
            }
        }
        _ if csv_only => bail!("--device and --time-column apply to --format csv only"),
        InputFormat::Raw if a.key_pointer.is_some() || a.timestamp_pointer.is_some() => {
            bail!(
                "--format raw records are not JSON: --key-pointer and --timestamp-pointer do not apply (use --key)"
            )
        }
        _ => {}
    }
    for p in [&a.key_pointer, &a.timestamp_pointer].into_iter().flatten() {
        if !p.starts_with('/') {
            bail!("{p:?} is not a JSON pointer: it starts with / (e.g. /device)");
        }
    }
    Ok(())
}

/// Reads every record of `input` in `format`, appending in chunks to
/// `target`; bad lines are reported and kept in `tally.rejected`.
fn read_into(
    a: &ProduceArgs,
    format: InputFormat,
    input: impl Read,
    source: &str,
    target: &mut Target,
    tally: &mut Tally,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<()> {
    let chunk_size = a.chunk as usize;
    let seed = a.device.clone().unwrap_or_else(|| a.topic.clone());
    let mut chunk: Vec<Record> = Vec::with_capacity(chunk_size.min(10_000));
    let mut failed: Option<anyhow::Error> = None;
    let mut take = |row: Result<Record, BadLine>, chunk: &mut Vec<Record>| {
        if failed.is_some() {
            return;
        }
        match row {
            Ok(record) => {
                tally.good += 1;
                if a.redeliver_percent > 0.0
                    && ingest::chosen_for_redelivery(&seed, tally.good, a.redeliver_percent)
                {
                    tally.again.push(record.clone());
                }
                chunk.push(record);
                if chunk.len() >= chunk_size {
                    let records = std::mem::take(chunk);
                    if let Err(e) = target.append(&a.topic, a.partitions, records) {
                        failed = Some(e.context(format!("appending to {}", a.topic)));
                    }
                }
            }
            Err(bad) => {
                bar.suspend(|| eprintln!("{source}:{}: {}", bad.line, bad.reason));
                tally.rejected.push(rejected_record(source, &seed, bad));
            }
        }
    };
    let read: anyhow::Result<()> = match format {
        InputFormat::Csv => {
            let options = CsvOptions {
                device: a.device.clone().unwrap_or_default(),
                time_column: a.time_column.clone().unwrap_or_default(),
            };
            ingest::read_csv(input, &options, |row| {
                let row = row.map_err(|b| BadLine {
                    line: b.line,
                    reason: b.reason,
                    raw: b.raw,
                    too_large: false,
                });
                take(row, &mut chunk);
            })
            .map_err(anyhow::Error::from)
        }
        InputFormat::Json => {
            let mut body = Vec::new();
            ingest::maybe_gunzip(input)?
                .read_to_end(&mut body)
                .with_context(|| format!("cannot read {source}"))?;
            parse::parse(
                &body,
                parse::Format::Json,
                &shape(a),
                now_ms() as i64,
                |r| take(r, &mut chunk),
            );
            Ok(())
        }
        InputFormat::Ndjson | InputFormat::Raw => {
            let f = if format == InputFormat::Raw {
                parse::Format::Raw
            } else {
                parse::Format::Ndjson
            };
            let shape = shape(a);
            let reader = std::io::BufReader::new(ingest::maybe_gunzip(input)?);
            let mut n = 0;
            let mut result = Ok(());
            for line in reader.split(b'\n') {
                n += 1;
                let line = match line {
                    Ok(l) => l,
                    Err(e) => {
                        result = Err(anyhow::anyhow!(
                            "cannot read {source} after line {}: {e}",
                            n - 1
                        ));
                        break;
                    }
                };
                if let Some(r) = parse::parse_line(&line, n, f, &shape, now_ms() as i64) {
                    take(r, &mut chunk);
                }
            }
            result
        }
    };
    if let Some(e) = failed {
        return Err(e);
    }
    // What was read before any damage is kept.
    target.append(&a.topic, a.partitions, chunk)?;
    read
}

/// How `produce` reads each record's key, time and headers.
fn shape(a: &ProduceArgs) -> Shape {
    Shape {
        envelope: false,
        key_pointer: a.key_pointer.clone(),
        key: a.key.clone().map(String::into_bytes),
        timestamp_pointer: a.timestamp_pointer.clone(),
        headers: a
            .headers
            .iter()
            .map(|(n, v)| (n.clone(), v.clone().into_bytes()))
            .collect(),
        max_record_bytes: usize::MAX,
    }
}

/// A line that could not become a record, as kept in `<topic>.rejected`:
/// its bytes, the reason, the source and the line.
fn rejected_record(source: &str, key: &str, bad: BadLine) -> Record {
    Record {
        timestamp_ms: 0,
        key: Some(key.as_bytes().to_vec()),
        value: Some(bad.raw),
        headers: vec![
            ("tidewater-error-message".into(), bad.reason.into_bytes()),
            ("tidewater-source-file".into(), source.as_bytes().to_vec()),
            (
                "tidewater-source-line".into(),
                bad.line.to_string().into_bytes(),
            ),
        ],
    }
}
