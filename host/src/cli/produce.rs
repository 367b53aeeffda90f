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
use tidewater::streams::ingest::{
    self, CsvFormat, CsvOptions, DeviceTimePolicy, Tally, TimeFormat,
};
use tidewater::streams::kafka::{DeliveryContext, KafkaConfig};

use super::{DeviceTimeArgs, KafkaArgs, non_empty};

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
    /// Lines before the header to skip (a logger's preamble); line numbers
    /// in reports still count them.
    #[arg(long, default_value_t = 0)]
    skip_lines: u64,
    /// The column holding the date, when the date and the time of day are
    /// in two columns (--time-column names the time); the time is read
    /// from "<date> <time>", and "ts" is that text.
    #[arg(long)]
    date_column: Option<String>,
    /// How times are written: iso (the default: 2024-03-01T13:45:56Z,
    /// 2024-03-01 13:45, with or without an offset), epoch-s, epoch-ms,
    /// epoch-us (numbers since 1970-01-01T00:00:00Z), or a strftime pattern
    /// such as "%d.%m.%Y %H:%M" (UTC unless it has %z). The hour 24:00 is
    /// read as the next day's 00:00 in every shape.
    #[arg(long)]
    time_format: Option<String>,
    /// The times are elapsed times from this instant (ISO 8601, e.g.
    /// 2024-03-01T00:00:00Z), written "0 days 00:00:01", "25:30:00" or as
    /// seconds.
    #[arg(long, conflicts_with = "time_format")]
    start: Option<String>,
    /// Cells that mean "no value" and become JSON null, comma-separated
    /// (e.g. --null-values=-9900,-999); "-9900.0" matches -9900. Empty
    /// cells, nil, null and NaN are null anyway.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    null_values: Vec<String>,
    #[command(flatten)]
    device_time: DeviceTimeArgs,
}

impl ProduceArgs {
    /// How the file is written, from the CSV flags.
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
}

/// What one [`Target::store`] did.
#[derive(Default)]
struct Stored {
    /// Records stored.
    records: usize,
    /// Timestamps the device-time policy replaced.
    tally: Tally,
    /// Records the broker refused for what they are: (index in the chunk,
    /// why, the record's value).
    refused: Vec<(usize, String, Vec<u8>)>,
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
                config, producer, ..
            } => {
                self.ensure_kafka_topic(topic, partitions)?;
                let records: Vec<Record> = records.into_iter().collect();
                Ok(tidewater::streams::kafka::produce_all(
                    producer,
                    records.iter().map(|r| (topic, r)),
                    config.flush_timeout,
                )?)
            }
        }
    }

    /// Stores records from a device: applies the device-time policy at the
    /// ingest clock, then appends them as [`Target::append_creating`] does,
    /// counting the replaced timestamps in the same transaction (embedded
    /// log). On Kafka, records the broker refuses for what they are (too
    /// large, invalid) are returned, the others stored.
    fn store(
        &self,
        topic: &str,
        partitions: Option<u32>,
        mut records: Vec<Record>,
        policy: &DeviceTimePolicy,
    ) -> anyhow::Result<Stored> {
        match self {
            Target::Log(log) => {
                let (placed, tally) =
                    ingest::append_stamped(log, topic, partitions, records, policy)?;
                Ok(Stored {
                    records: placed.len(),
                    tally,
                    refused: Vec::new(),
                })
            }
            Target::Kafka {
                config, producer, ..
            } => {
                let now = tidewater::db::now_ms() as i64;
                let tally = policy.stamp_all(records.iter_mut(), now);
                self.ensure_kafka_topic(topic, partitions)?;
                let refused = tidewater::streams::kafka::produce_each(
                    producer,
                    topic,
                    &records,
                    config.flush_timeout,
                )?;
                Ok(Stored {
                    records: records.len() - refused.len(),
                    tally,
                    refused: refused
                        .into_iter()
                        .map(|r| {
                            let value = records[r.index].value.clone().unwrap_or_default();
                            (r.index, r.message, value)
                        })
                        .collect(),
                })
            }
        }
    }

    /// Creates `topic` on Kafka with `partitions` the first time it is written.
    fn ensure_kafka_topic(&self, topic: &str, partitions: Option<u32>) -> anyhow::Result<()> {
        let Target::Kafka {
            config, created, ..
        } = self
        else {
            return Ok(());
        };
        if !created.borrow().contains(topic) {
            let topics = [(topic.to_owned(), partitions)].into_iter().collect();
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current()
                    .block_on(tidewater::streams::kafka::ensure_topics(config, &topics))
            })?;
            created.borrow_mut().insert(topic.to_owned());
        }
        Ok(())
    }

    /// Where records go, for messages: the data dir, or the brokers.
    fn place(&self, data_dir: &std::path::Path) -> String {
        match self {
            Target::Log(_) => format!("data dir {}", data_dir.display()),
            Target::Kafka { config, .. } => format!("Kafka at {}", config.brokers),
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
    let format = a.csv_format()?;
    let policy = a.device_time.policy()?;
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
    let mut ingest = Ingest {
        target: &log,
        args: &a,
        policy,
        chunk: Vec::with_capacity((a.chunk as usize).min(10_000)),
        lines: Vec::new(),
        stored: 0,
        stored_through: 0,
        tally: Tally::default(),
        rejected: Vec::new(),
    };
    let mut again: Vec<Record> = Vec::new();
    let mut good = 0u64;
    let mut append_error = None;
    let result = ingest::read_csv_with(bar.wrap_read(file), &options, &format, |line, row| {
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
                ingest.chunk.push(record);
                ingest.lines.push(line);
                if ingest.chunk.len() >= a.chunk as usize {
                    append_error = ingest.flush().err();
                }
            }
            Err(bad) => {
                bar.suspend(|| errln!("{}:{}: {}", a.csv.display(), bad.line, bad.reason));
                ingest.rejected.push(rejected_record(&a, bad));
            }
        }
    });
    bar.finish_and_clear();
    let place = log.place(data_dir);
    let storing = |e: anyhow::Error, ingest: &Ingest<'_>| {
        e.context(format!(
            "cannot store records of {} in {place}; {} records were stored before it (the rows up to line {})",
            a.csv.display(),
            ingest.stored,
            ingest.stored_through,
        ))
    };
    if let Some(e) = append_error {
        return Err(storing(e, &ingest));
    }
    if let Err(e) = result {
        // Keep what was read before the damage, then report it.
        ingest.flush().map_err(|e| storing(e, &ingest))?;
        ingest.keep_rejected()?;
        return Err(e).with_context(|| {
            format!(
                "{}: {} rows were stored before the error",
                a.csv.display(),
                ingest.stored
            )
        });
    }
    ingest.flush().map_err(|e| storing(e, &ingest))?;
    let redelivered = again.len();
    for part in again.chunks(a.chunk as usize) {
        ingest.chunk.extend(part.iter().cloned());
        ingest.lines.extend(std::iter::repeat_n(0, part.len()));
        ingest.flush().map_err(|e| storing(e, &ingest))?;
    }
    let bad = ingest.keep_rejected()?;
    errln!(
        "{}: appended {} events from {} ({} sent again) in {:.2} s{}",
        a.topic,
        ingest.stored,
        a.csv.display(),
        redelivered,
        started.elapsed().as_secs_f64(),
        if bad > 0 {
            format!("; {bad} bad rows kept in topic {}.rejected", a.topic)
        } else {
            String::new()
        }
    );
    ingest.report_device_time(data_dir);
    Ok(if bad > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// A `produce` in progress: the chunk being filled, what was stored.
struct Ingest<'a> {
    target: &'a Target,
    args: &'a ProduceArgs,
    policy: DeviceTimePolicy,
    /// Records read and not yet stored.
    chunk: Vec<Record>,
    /// The line of each record in `chunk` (0 for a row sent again).
    lines: Vec<u64>,
    /// Records stored so far.
    stored: usize,
    /// The last line of the file stored so far.
    stored_through: u64,
    /// Timestamps the device-time policy replaced.
    tally: Tally,
    /// Rows that could not become events, and records the broker refused.
    rejected: Vec<Record>,
}

impl Ingest<'_> {
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
        for (i, reason, raw) in stored.refused {
            let line = lines[i];
            errln!(
                "{}:{line}: the broker refused the record: {reason}",
                a.csv.display()
            );
            let bad = ingest::BadRow {
                line,
                reason: format!("refused by the broker: {reason}"),
                raw,
            };
            self.rejected.push(rejected_record(a, bad));
        }
        tracing::debug!(topic = %a.topic, records = self.stored, "chunk committed");
        Ok(())
    }

    /// Appends the rejected rows to `<topic>.rejected`; returns how many.
    fn keep_rejected(&mut self) -> anyhow::Result<usize> {
        let rejected = std::mem::take(&mut self.rejected);
        let n = rejected.len();
        if n > 0 {
            self.target
                .append(&format!("{}.rejected", self.args.topic), rejected)?;
        }
        Ok(n)
    }

    /// Says how many timestamps the device-time policy replaced; on Kafka,
    /// also counts them in the data dir (the embedded log counted them with
    /// the records).
    fn report_device_time(&self, data_dir: &std::path::Path) {
        let t = self.tally;
        if t.total() == 0 {
            return;
        }
        errln!(
            "{}: {} records stamped with the ingest time, their device clock out of the window ({} ahead by more than {}, {} behind by more than {} or at/before 1970); each keeps its device time in the header {}",
            self.args.topic,
            t.total(),
            t.ahead,
            humantime::format_duration(self.policy.max_ahead),
            t.behind,
            humantime::format_duration(self.policy.max_behind),
            ingest::DEVICE_TIME_HEADER,
        );
        if matches!(self.target, Target::Kafka { .. }) {
            let counted =
                tidewater::db::open_retrying(data_dir, std::time::Duration::from_secs(10))
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

/// A row that could not become an event, as kept in `<topic>.rejected`:
/// its bytes, the reason, the file and the line.
fn rejected_record(a: &ProduceArgs, bad: ingest::BadRow) -> Record {
    Record {
        timestamp_ms: tidewater::db::now_ms() as i64,
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
