//! `tidewater consume`: print a topic's records.

use std::io::Write;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, ValueEnum};
use tidewater::streams::kafka::KafkaConfig;
use tidewater::streams::record::bytes_json;

use super::{KafkaArgs, open_existing_log, out};

#[derive(Debug, Args)]
pub(super) struct ConsumeArgs {
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

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(super) enum ConsumeFormat {
    Jsonl,
    Value,
}

pub(super) fn consume(data_dir: &std::path::Path, a: ConsumeArgs) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut left = a.max.unwrap_or(u64::MAX);
    let mut write_error = None;
    let mut print = |r: &tidewater::streams::LogRecord| -> bool {
        if left == 0 || write_error.is_some() {
            return false;
        }
        left -= 1;
        let line = match a.format {
            ConsumeFormat::Jsonl => serde_json::to_string(&r.as_json()).unwrap_or_default(),
            ConsumeFormat::Value => match r.record.value.as_deref().map(bytes_json) {
                Some(serde_json::Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => "null".into(),
            },
        };
        // A reader that went away (e.g. `| head`) stops the output: the
        // command ends quietly with the status of a broken pipe.
        if let Err(e) = writeln!(out, "{line}") {
            write_error = Some(e);
            return false;
        }
        left > 0
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
                    "topic {:?} has no partition {p}: {}",
                    a.topic,
                    tidewater::streams::topic::partitions_text(n)
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
            tidewater::streams::kafka::read_topic(
                &config,
                &a.topic,
                a.partition,
                a.from_offset,
                &mut print,
            )?;
        }
    }
    let flushed = match write_error {
        Some(e) => Err(e),
        None => out.flush(),
    };
    out::written(flushed)?;
    Ok(ExitCode::SUCCESS)
}
