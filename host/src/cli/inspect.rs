//! `tidewater stats` and `tidewater topics`: what the data dir holds.

use super::out::outln;
use std::process::ExitCode;

use clap::Args;
use tidewater::streams::kafka::KafkaConfig;

use super::{Format, FormatArgs, KafkaArgs, open_existing_log, print_counters};

#[derive(Debug, Args)]
pub(super) struct StatsArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    format: FormatArgs,
}

pub(super) fn stats(data_dir: &std::path::Path, a: StatsArgs) -> anyhow::Result<ExitCode> {
    let format = a.format.format;
    let log = open_existing_log(data_dir)?;
    let mut all = tidewater::processing::stats::read_all(&log)?;
    if let Some(brokers) = &a.kafka.brokers {
        // Positions are kept in redb for Kafka too; the ends come from the broker.
        let config = KafkaConfig::new(brokers.clone());
        for s in all.values_mut() {
            s.lag = 0;
        }
        for pos in log.positions()? {
            let end =
                tidewater::streams::kafka::high_watermark(&config, &pos.topic, pos.partition)?;
            if let Some(s) = all.get_mut(&pos.consumer) {
                s.lag += end.saturating_sub(pos.next_offset);
            }
        }
    }
    match format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&all)?)?,
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
            )?;
            print_recycled(&all)?;
            print_device_time(&log)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints, per processor, the component instances discarded after a failed
/// call (nothing when none was).
fn print_recycled(
    all: &std::collections::BTreeMap<String, tidewater::processing::stats::ProcessorStats>,
) -> anyhow::Result<()> {
    if all.values().all(|s| s.counters.recycled == 0) {
        return Ok(());
    }
    outln!(
        "
component instances recycled after a failed call:"
    )?;
    outln!("{:<28} {:>9} {:>12}", "processor", "recycled", "memory cap")?;
    for (name, s) in all.iter().filter(|(_, s)| s.counters.recycled > 0) {
        outln!(
            "{:<28} {:>9} {:>12}",
            name,
            s.counters.recycled,
            s.counters.recycled_memory_limit
        )?;
    }
    Ok(())
}

/// Prints, per topic, how many records were stamped with the ingest time
/// because their device time was out of the window (nothing when none was).
fn print_device_time(log: &tidewater::streams::embedded::Log) -> anyhow::Result<()> {
    let counts = tidewater::streams::ingest::device_time::counts(log.db())?;
    if counts.is_empty() {
        return Ok(());
    }
    outln!(
        "\nrecords stamped with the ingest time (device clock out of the window; device time in header {}):",
        tidewater::streams::ingest::DEVICE_TIME_HEADER
    )?;
    outln!("{:<28} {:>9} {:>9}", "topic", "ahead", "behind")?;
    for (topic, t) in counts {
        outln!("{:<28} {:>9} {:>9}", topic, t.ahead, t.behind)?;
    }
    Ok(())
}

pub(super) fn topics(data_dir: &std::path::Path, a: FormatArgs) -> anyhow::Result<ExitCode> {
    let log = open_existing_log(data_dir)?;
    let topics = log.topics()?;
    match a.format {
        Format::Json => {
            /// A topic with its count of replaced device times.
            #[derive(serde::Serialize)]
            struct WithDeviceTime {
                #[serde(flatten)]
                topic: tidewater::streams::embedded::TopicInfo,
                device_time_replaced: tidewater::streams::ingest::Tally,
            }
            let mut counts = tidewater::streams::ingest::device_time::counts(log.db())?;
            let topics: Vec<WithDeviceTime> = topics
                .into_iter()
                .map(|topic| WithDeviceTime {
                    device_time_replaced: counts.remove(&topic.name).unwrap_or_default(),
                    topic,
                })
                .collect();
            outln!("{}", serde_json::to_string_pretty(&topics)?)?
        }
        Format::Table => {
            outln!(
                "{:<28} {:>9} {:>10} {:>12}",
                "topic",
                "partition",
                "start",
                "end"
            )?;
            for t in &topics {
                for (p, info) in t.partitions.iter().enumerate() {
                    outln!(
                        "{:<28} {:>9} {:>10} {:>12}",
                        t.name,
                        p,
                        info.start,
                        info.end
                    )?;
                }
            }
            print_device_time(&log)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
