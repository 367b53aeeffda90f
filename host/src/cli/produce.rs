//! `tidewater produce`: records into a topic, on the embedded log or Kafka.

use super::out::errln;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Args;
use rdkafka::producer::BaseProducer;
use tidewater::streams::Record;
use tidewater::streams::embedded::Log;
use tidewater::streams::ingest::{self, CsvOptions};
use tidewater::streams::kafka::{DeliveryContext, KafkaConfig};

use super::{KafkaArgs, non_empty};

#[derive(Debug, Args)]
pub(super) struct ProduceArgs {
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

/// Where `produce` appends: the embedded log or a Kafka producer.
pub(super) enum Target {
    Log(Log),
    Kafka {
        config: KafkaConfig,
        producer: Box<BaseProducer<DeliveryContext>>,
        created: std::cell::RefCell<std::collections::BTreeSet<String>>,
    },
}

impl Target {
    /// The embedded log of `data_dir` (waiting its turn while a `forward`
    /// reads it), or a producer for `brokers`.
    fn open(data_dir: &std::path::Path, brokers: Option<&str>) -> anyhow::Result<Self> {
        Ok(match brokers {
            None => Target::Log(Log::new(
                tidewater::db::open_retrying(data_dir, std::time::Duration::from_secs(10))?,
                1,
            )),
            Some(brokers) => {
                let config = KafkaConfig::new(brokers);
                let producer = tidewater::streams::kafka::producer(&config, None)?;
                Target::Kafka {
                    config,
                    producer: Box::new(producer),
                    created: std::cell::RefCell::new(std::collections::BTreeSet::new()),
                }
            }
        })
    }

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
                            .block_on(tidewater::streams::kafka::ensure_topics(config, &topics))
                    })?;
                    created.borrow_mut().insert(topic.to_owned());
                }
                let records: Vec<Record> = records.into_iter().collect();
                Ok(tidewater::streams::kafka::produce_all(
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

pub(super) async fn produce(
    data_dir: &std::path::Path,
    a: ProduceArgs,
) -> anyhow::Result<ExitCode> {
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
    tidewater::streams::topic::check_topic_name(&a.topic)?;
    let log = Target::open(data_dir, a.kafka.brokers.as_deref())?;
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
                bar.suspend(|| errln!("{}:{}: {}", a.csv.display(), bad.line, bad.reason));
                rejected.push(rejected_record(&a, bad));
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
    errln!(
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

/// A row that could not become an event, as kept in `<topic>.rejected`:
/// its bytes, the reason, the file and the line.
fn rejected_record(a: &ProduceArgs, bad: ingest::BadRow) -> Record {
    Record {
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
    }
}
