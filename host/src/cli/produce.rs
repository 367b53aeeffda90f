//! `tidewater produce`: records into a topic, on the embedded log (directly,
//! or through the ingest endpoint of the host that runs on it) or Kafka.
//!
//! Every record from a device passes the device-time policy before it is
//! stored (`--max-ahead`, `--max-behind`; on a running host, its
//! `[device_time]`), and a record that cannot be read, or that the broker
//! refuses, is kept with its line and the reason in `<topic>.rejected`.

use super::out::errln;
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
use tidewater::streams::ingest::http::RequestLimits;
use tidewater::streams::ingest::parse::{self, BadLine, Shape};
use tidewater::streams::ingest::{
    self, CsvFormat, CsvOptions, DeviceTimePolicy, Tally, TimeFormat,
};
use tidewater::streams::kafka::{DeliveryContext, KafkaConfig};

use super::{DeviceTimeArgs, KafkaArgs, non_empty};

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
    /// CSV: lines before the header to skip (a logger's preamble); line
    /// numbers in reports still count them.
    #[arg(long, default_value_t = 0)]
    skip_lines: u64,
    /// CSV: the column holding the date, when the date and the time of day
    /// are in two columns (--time-column names the time); the time is read
    /// from "<date> <time>", and "ts" is that text.
    #[arg(long)]
    date_column: Option<String>,
    /// CSV: how times are written: iso (the default: 2024-03-01T13:45:56Z,
    /// 2024-03-01 13:45, with or without an offset), epoch-s, epoch-ms,
    /// epoch-us (numbers since 1970-01-01T00:00:00Z, rounded to the nearest
    /// ms, a half ms away from zero), or a strftime pattern such as
    /// "%d.%m.%Y %H:%M" (UTC unless it has %z). The hour 24:00 is
    /// read as the next day's 00:00 in every shape.
    #[arg(long)]
    time_format: Option<String>,
    /// CSV: the times are elapsed times from this instant (ISO 8601, e.g.
    /// 2024-03-01T00:00:00Z), written "0 days 00:00:01", "25:30:00" or as
    /// seconds.
    #[arg(long, conflicts_with = "time_format")]
    start: Option<String>,
    /// CSV: cells that mean "no value" and become JSON null, comma-separated
    /// (e.g. --null-values=-9900,-999); "-9900.0" matches -9900. Empty
    /// cells, nil, null and NaN are null anyway.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    null_values: Vec<String>,
    #[command(flatten)]
    device_time: DeviceTimeArgs,
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

impl ProduceArgs {
    /// The input's format: `--csv` means CSV.
    fn input_format(&self) -> InputFormat {
        if self.csv.is_some() {
            InputFormat::Csv
        } else {
            self.format
        }
    }

    /// How a CSV file is written, from the CSV flags.
    fn csv_format(&self) -> anyhow::Result<CsvFormat> {
        let time = match (&self.time_format, &self.start) {
            (Some(f), _) => TimeFormat::from_flag(f).map_err(anyhow::Error::msg)?,
            (None, Some(start)) => TimeFormat::Elapsed {
                start_ms: ingest::parse_time_ms(start)
                    .map_err(|e| anyhow::anyhow!("--start: {e}"))?,
            },
            (None, None) => TimeFormat::Iso,
        };
        Ok(CsvFormat {
            skip_lines: self.skip_lines,
            date_column: self.date_column.clone(),
            time,
            null_values: self.null_values.clone(),
        })
    }

    /// The key of rejected records and the seed of `--redeliver-percent`:
    /// the device, else the topic.
    fn seed(&self) -> String {
        self.device.clone().unwrap_or_else(|| self.topic.clone())
    }
}

/// What one [`Target::store`] did.
#[derive(Default)]
struct Stored {
    /// Records stored.
    records: usize,
    /// Timestamps the device-time policy replaced (counted here; a running
    /// host counts its own).
    tally: Tally,
    /// Records the broker refused for what they are: (index in the chunk,
    /// why, the record's value).
    refused: Vec<(usize, String, Vec<u8>)>,
    /// The window a running host applied (its `[device_time]`), when it
    /// replaced timestamps.
    window: Option<DeviceTimePolicy>,
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

    /// Stores records from a device durably (one redb commit, one request
    /// answered after the host's commit, or every record acknowledged by the
    /// broker), creating `topic` with `partitions` partitions if it does not
    /// exist. The device-time policy is applied at the ingest clock first:
    /// on the embedded log in the transaction that appends them, counting
    /// the replaced timestamps in it; on a running host by the host, with
    /// its own `[device_time]`. On Kafka, records the broker refuses for
    /// what they are (too large, invalid) are returned, the others stored.
    fn store(
        &mut self,
        topic: &str,
        partitions: Option<u32>,
        mut records: Vec<Record>,
        policy: &DeviceTimePolicy,
    ) -> anyhow::Result<Stored> {
        if records.is_empty() {
            return Ok(Stored::default());
        }
        match self {
            Target::Log(log) => {
                let (placed, tally) =
                    ingest::append_stamped(log, topic, partitions, records, policy)?;
                Ok(Stored {
                    records: placed.len(),
                    tally,
                    refused: Vec::new(),
                    window: None,
                })
            }
            Target::Host(client) => {
                let sent = block_on(send_to_host(client, topic, partitions, &records))?;
                Ok(Stored {
                    records: sent.records,
                    tally: sent.replaced,
                    window: sent.window,
                    refused: sent
                        .refused
                        .into_iter()
                        .map(|(i, why)| {
                            let value = records[i].value.clone().unwrap_or_default();
                            (i, format!("the host refused the record: {why}"), value)
                        })
                        .collect(),
                })
            }
            Target::Kafka { .. } => {
                let tally = policy.stamp_all(records.iter_mut(), now_ms() as i64);
                let mut stored = self.store_on_kafka(topic, partitions, &records)?;
                stored.tally = tally;
                Ok(stored)
            }
        }
    }

    /// Sends `records` to the Kafka topic, each on its own: those the broker
    /// refuses for what they are are returned with why.
    fn store_on_kafka(
        &mut self,
        topic: &str,
        partitions: Option<u32>,
        records: &[Record],
    ) -> anyhow::Result<Stored> {
        self.ensure_kafka_topic(topic, partitions)?;
        let Target::Kafka {
            config, producer, ..
        } = self
        else {
            unreachable!("store_on_kafka is called for Kafka only");
        };
        let refused = tidewater::streams::kafka::produce_each(
            producer,
            topic,
            records,
            config.flush_timeout,
        )?;
        Ok(Stored {
            records: records.len() - refused.len(),
            tally: Tally::default(),
            window: None,
            refused: refused
                .into_iter()
                .map(|r| {
                    let value = records[r.index].value.clone().unwrap_or_default();
                    let why = format!("the broker refused the record: {}", r.message);
                    (r.index, why, value)
                })
                .collect(),
        })
    }

    /// Appends `records` (not from a device: rejected lines) to `topic` as
    /// they are, durably, creating it with the default partition count.
    /// Returns how many were appended.
    fn append(&mut self, topic: &str, records: Vec<Record>) -> anyhow::Result<usize> {
        if records.is_empty() {
            return Ok(0);
        }
        match self {
            Target::Log(log) => Ok(log.append_creating(topic, None, records)?.len()),
            Target::Host(client) => {
                let sent = block_on(send_to_host(client, topic, None, &records))?;
                let keep = KEPT_BYTES.min(client.limits().max_record_bytes);
                let cut: Vec<Record> = sent
                    .refused
                    .iter()
                    .map(|(i, _)| truncated(&records[*i], keep))
                    .collect();
                let again = block_on(send_to_host(client, topic, None, &cut))?;
                if let Some((i, why)) = again.refused.first() {
                    bail!(
                        "the host refused to keep {} rejected lines in {topic}, even cut to {keep} bytes (the first: line {}: {why})",
                        again.refused.len(),
                        header_text(&cut[*i], "tidewater-source-line"),
                    );
                }
                Ok(sent.records + again.records)
            }
            Target::Kafka { .. } => {
                self.ensure_kafka_topic(topic, None)?;
                let Target::Kafka {
                    config, producer, ..
                } = self
                else {
                    unreachable!("matched above");
                };
                Ok(tidewater::streams::kafka::produce_all(
                    producer,
                    records.iter().map(|r| (topic, r)),
                    config.flush_timeout,
                )?)
            }
        }
    }

    /// Creates `topic` on Kafka with `partitions` the first time it is written.
    fn ensure_kafka_topic(&mut self, topic: &str, partitions: Option<u32>) -> anyhow::Result<()> {
        let Target::Kafka {
            config, created, ..
        } = self
        else {
            return Ok(());
        };
        if !created.contains(topic) {
            let topics = [(topic.to_owned(), partitions)].into_iter().collect();
            block_on(async {
                Ok(tidewater::streams::kafka::ensure_topics(config, &topics).await?)
            })?;
            created.insert(topic.to_owned());
        }
        Ok(())
    }

    /// Where records go, for messages: the data dir, the running host, or
    /// the brokers.
    fn place(&self, data_dir: &Path) -> String {
        match self {
            Target::Log(_) => format!("data dir {}", data_dir.display()),
            Target::Host(client) => format!(
                "the host running on data dir {} ({})",
                data_dir.display(),
                client.url()
            ),
            Target::Kafka { config, .. } => format!("Kafka at {}", config.brokers),
        }
    }
}

fn block_on<T>(f: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
}

/// What a running host did with records sent to it.
#[derive(Default)]
struct Sent {
    /// Records appended.
    records: usize,
    /// Timestamps its device-time policy replaced.
    replaced: Tally,
    /// Its `[device_time]` window, when it replaced some.
    window: Option<DeviceTimePolicy>,
    /// Records the host refused for what they are: (index in the records
    /// sent, why).
    refused: Vec<(usize, String)>,
}

/// Sends `records` as envelopes in requests within the host's limits
/// ([`IngestClient::limits`]), waiting and sending again while the host answers
/// 503 (nothing was appended then). A record the host refuses for what it
/// is (too large, malformed) is set aside in [`Sent::refused`] and the
/// others of its request are sent again, so one bad record stops nothing;
/// a record too large for any request is refused without being sent.
///
/// # Errors
///
/// When the host cannot be reached, or refuses a request for another
/// reason (a wrong token, a topic with another partition count).
async fn send_to_host(
    client: &mut IngestClient,
    topic: &str,
    partitions: Option<u32>,
    records: &[Record],
) -> anyhow::Result<Sent> {
    let query = match partitions {
        Some(p) => format!("envelope=true&partitions={p}"),
        None => "envelope=true".to_owned(),
    };
    let lines: Vec<Vec<u8>> = records.iter().map(parse::to_envelope).collect();
    let mut sent = Sent::default();
    let limits = client.limits();
    let mut queue = std::collections::VecDeque::from(requests(&lines, limits, &mut sent.refused));
    while let Some(request) = queue.pop_front() {
        let mut body = Vec::new();
        for &i in &request {
            body.extend_from_slice(&lines[i]);
            body.push(b'\n');
        }
        let a = client
            .post(topic, &query, body, "application/x-ndjson", false)
            .await?;
        match a.status {
            200 => {
                sent.records += request.len();
                count_replaced(&mut sent, &a.body["device_time_replaced"]);
            }
            503 => {
                let wait = a.retry_after.unwrap_or(Duration::from_secs(1));
                tracing::info!(wait_ms = wait.as_millis() as u64, reason = %a.body["error"]["message"], "the host pushes back; sending again shortly");
                tokio::time::sleep(wait).await;
                queue.push_front(request);
            }
            status => {
                let error = &a.body["error"];
                let message = error["message"]
                    .as_str()
                    .map_or_else(|| a.body.to_string(), str::to_owned);
                match refusal(status, error, &request) {
                    Some(Refusal::Records(bad)) => {
                        // Nothing of the request was appended: the rest goes again.
                        let rest: Vec<usize> = request
                            .iter()
                            .copied()
                            .filter(|i| !bad.iter().any(|(b, _)| b == i))
                            .collect();
                        sent.refused.extend(bad);
                        if !rest.is_empty() {
                            queue.push_front(rest);
                        }
                    }
                    Some(Refusal::Split) if request.len() > 1 => {
                        let (first, second) = request.split_at(request.len() / 2);
                        queue.push_front(second.to_vec());
                        queue.push_front(first.to_vec());
                    }
                    Some(Refusal::Split) => sent.refused.push((request[0], message)),
                    None => bail!("the host refused the records ({status}): {message}"),
                }
            }
        }
    }
    sent.refused.sort_unstable();
    Ok(sent)
}

/// The indices of `lines` in requests within `limits` (records, and
/// bytes with their newlines), in order; a line that fits no request goes
/// to `refused` instead.
fn requests(
    lines: &[Vec<u8>],
    limits: RequestLimits,
    refused: &mut Vec<(usize, String)>,
) -> Vec<Vec<usize>> {
    let max_bytes = limits.max_body_bytes;
    let mut requests: Vec<Vec<usize>> = Vec::new();
    let mut bytes = 0;
    for (i, line) in lines.iter().enumerate() {
        let size = line.len() + 1;
        if size > max_bytes {
            refused.push((
                i,
                format!(
                    "the record is {size} bytes as sent, more than a request to the running host holds ({max_bytes} bytes, its ingest.http.max_body_bytes): produce it with the host stopped"
                ),
            ));
            continue;
        }
        match requests.last_mut() {
            Some(last) if last.len() < limits.max_records && bytes + size <= max_bytes => {
                last.push(i);
                bytes += size;
            }
            _ => {
                requests.push(vec![i]);
                bytes = size;
            }
        }
    }
    requests
}

/// What a refused request says of its records.
enum Refusal {
    /// These records (index in the records sent, why) cannot be taken.
    Records(Vec<(usize, String)>),
    /// The request as a whole was too large: send it in halves.
    Split,
}

/// How to go on after the host refused `request` with `status` and
/// `error` (its JSON error); `None` when the refusal is not about records
/// (nothing to set aside: produce stops).
fn refusal(status: u16, error: &serde_json::Value, request: &[usize]) -> Option<Refusal> {
    if status == 413
        && matches!(
            error["code"].as_str(),
            Some("body-too-large" | "too-many-records")
        )
    {
        return Some(Refusal::Split);
    }
    let lines = error["lines"].as_array().filter(|l| !l.is_empty())?;
    let bad = lines
        .iter()
        .map(|l| {
            // The host numbers the request's lines from 1, one record a line.
            let line = l["line"].as_u64().and_then(|n| usize::try_from(n).ok())?;
            let index = *request.get(line.checked_sub(1)?)?;
            Some((index, l["reason"].as_str().unwrap_or("refused").to_owned()))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(Refusal::Records(bad))
}

/// Adds a host's answer's `device_time_replaced` to `sent`.
fn count_replaced(sent: &mut Sent, r: &serde_json::Value) {
    let n = |k: &str| r[k].as_u64().unwrap_or(0);
    sent.replaced.ahead += n("ahead");
    sent.replaced.behind += n("behind");
    if r.is_object() {
        sent.window = Some(DeviceTimePolicy {
            max_ahead: Duration::from_millis(n("max_ahead_ms")),
            max_behind: Duration::from_millis(n("max_behind_ms")),
        });
    }
}

pub(super) async fn produce(data_dir: &Path, a: ProduceArgs) -> anyhow::Result<ExitCode> {
    if !(0.0..=100.0).contains(&a.redeliver_percent) {
        bail!(
            "--redeliver-percent is {}, it must be between 0 and 100",
            a.redeliver_percent
        );
    }
    let format = a.input_format();
    check_flags(&a, format)?;
    let csv_format = a.csv_format()?;
    let policy = a.device_time.policy()?;
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
    let bar = progress_bar(size);
    bar.set_message(format!("{source} → {}", a.topic));
    let started = Instant::now();
    let mut p = Producing::new(&mut target, &a, source, policy);
    let read = p.read(format, &csv_format, bar.wrap_read(input), &bar);
    bar.finish_and_clear();
    p.finish(read, data_dir, started)
}

/// A bar over the input's bytes, hidden when the size is unknown (stdin).
fn progress_bar(size: u64) -> indicatif::ProgressBar {
    if size == 0 {
        return indicatif::ProgressBar::hidden();
    }
    indicatif::ProgressBar::new(size).with_style(
        indicatif::ProgressStyle::with_template("{msg} {wide_bar} {bytes}/{total_bytes} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    )
}

/// Refuses flags that do not fit `format` (the CSV ones elsewhere, the JSON
/// pointers on raw lines), and pointers that are not JSON pointers.
fn check_flags(a: &ProduceArgs, format: InputFormat) -> anyhow::Result<()> {
    let csv_only = a.device.is_some()
        || a.time_column.is_some()
        || a.skip_lines > 0
        || a.date_column.is_some()
        || a.time_format.is_some()
        || a.start.is_some()
        || !a.null_values.is_empty();
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
        _ if csv_only => bail!(
            "--device, --time-column, --skip-lines, --date-column, --time-format, --start and --null-values apply to --format csv only"
        ),
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

/// A `produce` in progress: the chunk being filled, what was stored.
struct Producing<'a> {
    target: &'a mut Target,
    args: &'a ProduceArgs,
    /// The input's name in messages: the file, or `stdin`.
    source: String,
    /// The key of rejected records and the seed of `--redeliver-percent`.
    seed: String,
    policy: DeviceTimePolicy,
    /// Records read and not yet stored.
    chunk: Vec<Record>,
    /// The line of each record in `chunk` (0 for a record sent again, or
    /// one of a JSON document).
    lines: Vec<u64>,
    /// Good records read.
    good: u64,
    /// Records to send again after the input (`--redeliver-percent`).
    again: Vec<Record>,
    /// Whether the records being stored are those sent again: one refused
    /// then was refused, reported and kept the first time.
    redelivering: bool,
    /// Records stored so far.
    stored: usize,
    /// The last line of the input stored so far.
    stored_through: u64,
    /// Timestamps the device-time policy replaced here.
    tally: Tally,
    /// Lines that could not become records, and records the broker refused.
    rejected: Vec<Record>,
    /// The first store that failed; reading stops taking records then.
    failed: Option<anyhow::Error>,
}

impl<'a> Producing<'a> {
    fn new(
        target: &'a mut Target,
        args: &'a ProduceArgs,
        source: String,
        policy: DeviceTimePolicy,
    ) -> Self {
        Producing {
            target,
            args,
            source,
            seed: args.seed(),
            policy,
            chunk: Vec::with_capacity((args.chunk as usize).min(10_000)),
            lines: Vec::new(),
            good: 0,
            again: Vec::new(),
            redelivering: false,
            stored: 0,
            stored_through: 0,
            tally: Tally::default(),
            rejected: Vec::new(),
            failed: None,
        }
    }

    /// Takes one record read at `line`, or a line that is not one (reported
    /// and kept for `<topic>.rejected`); stores the chunk when it is full.
    fn take(&mut self, line: u64, row: Result<Record, BadLine>, bar: &indicatif::ProgressBar) {
        if self.failed.is_some() {
            return;
        }
        match row {
            Ok(record) => {
                self.good += 1;
                let a = self.args;
                if a.redeliver_percent > 0.0
                    && ingest::chosen_for_redelivery(&self.seed, self.good, a.redeliver_percent)
                {
                    self.again.push(record.clone());
                }
                self.chunk.push(record);
                self.lines.push(line);
                if self.chunk.len() >= a.chunk as usize {
                    self.failed = self.flush().err();
                }
            }
            Err(bad) => {
                bar.suspend(|| errln!("{}:{}: {}", self.source, bad.line, bad.reason));
                let record = rejected_record(&self.source, &self.seed, bad);
                self.rejected.push(record);
            }
        }
    }

    /// Reads every record of `input` in `format`, storing in chunks. What
    /// was read before an error is taken (the caller stores it).
    ///
    /// # Errors
    ///
    /// When the input as a whole cannot be read (no CSV header, a gzip
    /// stream cut short, a read that fails part way).
    fn read(
        &mut self,
        format: InputFormat,
        csv_format: &CsvFormat,
        input: impl Read,
        bar: &indicatif::ProgressBar,
    ) -> anyhow::Result<()> {
        let a = self.args;
        let source = self.source.clone();
        match format {
            InputFormat::Csv => {
                let options = CsvOptions {
                    device: a.device.clone().unwrap_or_default(),
                    time_column: a.time_column.clone().unwrap_or_default(),
                };
                ingest::read_csv_with(input, &options, csv_format, |line, row| {
                    let row = row.map_err(|b| BadLine {
                        line: b.line,
                        reason: b.reason,
                        raw: b.raw,
                        too_large: false,
                    });
                    self.take(line, row, bar);
                })
                .map_err(anyhow::Error::from)
            }
            InputFormat::Json => {
                let mut body = Vec::new();
                ingest::maybe_gunzip(input)?
                    .read_to_end(&mut body)
                    .with_context(|| format!("cannot read {source}"))?;
                let shape = shape(a);
                parse::parse(&body, parse::Format::Json, &shape, now_ms() as i64, |r| {
                    self.take(0, r, bar)
                });
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
                for (i, line) in reader.split(b'\n').enumerate() {
                    let n = i as u64 + 1;
                    let line =
                        line.with_context(|| format!("cannot read {source} after line {}", n - 1))?;
                    if let Some(r) = parse::parse_line(&line, n, f, &shape, now_ms() as i64) {
                        self.take(n, r, bar);
                    }
                }
                Ok(())
            }
        }
    }

    /// Stores the chunk in one durable commit (or every record acknowledged
    /// by the broker); a record the broker refuses goes to the rejected
    /// ones with its line and the reason.
    fn flush(&mut self) -> anyhow::Result<()> {
        if self.chunk.is_empty() {
            return Ok(());
        }
        let a = self.args;
        let records = std::mem::take(&mut self.chunk);
        let lines = std::mem::take(&mut self.lines);
        let stored = self
            .target
            .store(&a.topic, a.partitions, records, &self.policy)?;
        self.stored += stored.records;
        self.stored_through = self
            .stored_through
            .max(lines.iter().copied().max().unwrap_or(0));
        self.tally.ahead += stored.tally.ahead;
        self.tally.behind += stored.tally.behind;
        if let Some(window) = stored.window {
            // A running host stamps with its own window: report that one.
            self.policy = window;
        }
        for (i, reason, raw) in stored.refused {
            if self.redelivering {
                continue;
            }
            let line = lines[i];
            errln!("{}:{line}: {reason}", self.source);
            let bad = BadLine {
                line,
                reason,
                raw,
                too_large: false,
            };
            self.rejected
                .push(rejected_record(&self.source, &self.seed, bad));
        }
        tracing::debug!(topic = %a.topic, records = self.stored, "chunk committed");
        Ok(())
    }

    /// Stores what is left after reading (`read`), sends the records chosen
    /// for redelivery again, keeps the rejected ones, and reports. Exit
    /// status 2 when lines were rejected.
    ///
    /// # Errors
    ///
    /// A store that failed, naming what was stored before it; a read that
    /// failed, after storing what was read before it.
    fn finish(
        mut self,
        read: anyhow::Result<()>,
        data_dir: &Path,
        started: Instant,
    ) -> anyhow::Result<ExitCode> {
        let a = self.args;
        if let Some(e) = self.failed.take() {
            return Err(self.storing(e, data_dir));
        }
        if let Err(e) = read {
            // Keep what was read before the damage, then report it.
            self.flush().map_err(|e| self.storing(e, data_dir))?;
            self.keep_rejected()?;
            return Err(e).with_context(|| {
                format!(
                    "{}: {} stored before the error",
                    self.source,
                    counted(self.stored, "record was", "records were")
                )
            });
        }
        self.flush().map_err(|e| self.storing(e, data_dir))?;
        let again = std::mem::take(&mut self.again);
        self.redelivering = true;
        for part in again.chunks(a.chunk as usize) {
            self.chunk.extend(part.iter().cloned());
            self.lines.extend(std::iter::repeat_n(0, part.len()));
            self.flush().map_err(|e| self.storing(e, data_dir))?;
        }
        let bad = self.keep_rejected()?;
        errln!(
            "{}: appended {} from {} ({} sent again){} in {:.2} s{}",
            a.topic,
            counted(self.stored, "event", "events"),
            self.source,
            again.len(),
            if matches!(self.target, Target::Host(_)) {
                " through the running host"
            } else {
                ""
            },
            started.elapsed().as_secs_f64(),
            if bad > 0 {
                let what = match (a.input_format() == InputFormat::Csv, bad == 1) {
                    (true, true) => "row",
                    (true, false) => "rows",
                    (false, true) => "line",
                    (false, false) => "lines",
                };
                format!("; {bad} bad {what} kept in topic {}.rejected", a.topic)
            } else {
                String::new()
            }
        );
        self.report_device_time(data_dir);
        Ok(if bad > 0 {
            ExitCode::from(2)
        } else {
            ExitCode::SUCCESS
        })
    }

    /// `e`, saying where storing failed and what was stored before it.
    fn storing(&self, e: anyhow::Error, data_dir: &Path) -> anyhow::Error {
        e.context(format!(
            "cannot store records of {} in {}; {} stored before it (the rows up to line {})",
            self.source,
            self.target.place(data_dir),
            counted(self.stored, "record was", "records were"),
            self.stored_through,
        ))
    }

    /// Appends the rejected lines to `<topic>.rejected`; returns how many.
    fn keep_rejected(&mut self) -> anyhow::Result<usize> {
        let rejected = std::mem::take(&mut self.rejected);
        let n = rejected.len();
        self.target
            .append(&format!("{}.rejected", self.args.topic), rejected)?;
        Ok(n)
    }

    /// Says how many timestamps the device-time policy replaced (here, or
    /// by the running host, which answers how many and its window); on
    /// Kafka, also counts them in the data dir (the embedded log counted
    /// them with the records, a running host counts its own).
    fn report_device_time(&self, data_dir: &Path) {
        let t = self.tally;
        if t.total() == 0 {
            return;
        }
        errln!(
            "{}: {} records stamped with the ingest time, their device clock out of the window ({} ahead by more than {}, {} behind by more than {} or at/before 1970); each keeps its device time in the header {}",
            self.args.topic,
            t.total(),
            t.ahead,
            ingest::device_time::readable_duration(self.policy.max_ahead),
            t.behind,
            ingest::device_time::readable_duration(self.policy.max_behind),
            ingest::DEVICE_TIME_HEADER,
        );
        if matches!(self.target, Target::Kafka { .. }) {
            let counted = tidewater::db::open_retrying(data_dir, Duration::from_secs(10))
                .map_err(anyhow::Error::from)
                .and_then(|db| {
                    let txn = db.begin_write()?;
                    ingest::device_time::count_in(&txn, &self.args.topic, &t)?;
                    txn.commit()?;
                    Ok(())
                });
            if let Err(e) = counted {
                tracing::warn!(error = %e, data_dir = %data_dir.display(), "the replaced timestamps are not counted in `stats`");
            }
        }
    }
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

/// How many bytes of a rejected line are kept when the whole one is more
/// than a running host takes (as for a line over the size limit).
const KEPT_BYTES: usize = 1024;

/// `rejected` with its value cut to its first `keep` bytes (fewer when
/// the cut would split a UTF-8 character of a text), saying so in its
/// error message.
fn truncated(rejected: &Record, keep: usize) -> Record {
    let mut r = rejected.clone();
    let value = r.value.take().unwrap_or_default();
    let length = value.len();
    let mut end = length.min(keep);
    if let Ok(text) = std::str::from_utf8(&value) {
        while !text.is_char_boundary(end) {
            end -= 1;
        }
    }
    r.value = Some(value[..end].to_vec());
    for (name, text) in &mut r.headers {
        if name == "tidewater-error-message" {
            text.extend_from_slice(
                format!(
                    " (kept: the first {end} of its {length} bytes, as the running host refused it whole)"
                )
                .as_bytes(),
            );
        }
    }
    r
}

/// The text of `record`'s header `name`, or "?".
fn header_text(record: &Record, name: &str) -> String {
    record.headers.iter().find(|(n, _)| n == name).map_or_else(
        || "?".to_owned(),
        |(_, v)| String::from_utf8_lossy(v).into_owned(),
    )
}

/// A line that could not become a record (or one the broker refused), as
/// kept in `<topic>.rejected`: its bytes, keyed by `key`, stamped with the
/// time it was read, with the reason, the source and the line in headers.
fn rejected_record(source: &str, key: &str, bad: BadLine) -> Record {
    Record {
        timestamp_ms: now_ms() as i64,
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

/// `n` and the words that go with it: `one` when `n` is 1, else `many`
/// ("1 event", "0 events").
fn counted(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}
