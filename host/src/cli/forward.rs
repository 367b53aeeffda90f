//! `tidewater forward`: store-and-forward of an embedded-log topic to Kafka.

use super::out::errln;
use std::process::ExitCode;

use clap::Args;
use tidewater::streams::embedded::Log;
use tidewater::streams::kafka::KafkaConfig;

use super::{DeviceTimeArgs, non_empty, stop_signal};

#[derive(Debug, Args)]
pub(super) struct ForwardArgs {
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
    #[command(flatten)]
    device_time: DeviceTimeArgs,
}

pub(super) async fn forward(
    data_dir: &std::path::Path,
    a: ForwardArgs,
) -> anyhow::Result<ExitCode> {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;
    use tidewater::streams::forward::{ForwardConfig, Forwarder};
    let mut forwarder = Forwarder::new(ForwardConfig {
        from: a.from,
        topic: a.topic,
        batch: a.batch as usize,
        kafka: KafkaConfig::new(a.to_kafka),
    })?
    .with_device_time(a.device_time.policy()?);
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
    let dead_letter_topic = forwarder.config().dead_letter_topic();
    let result = tokio::task::spawn_blocking(move || {
        // The data dir is opened per batch and let go between, so `produce`
        // keeps storing events locally while this waits for the brokers.
        let mut open = || -> Result<Log, tidewater::streams::forward::ForwardError> {
            Ok(Log::new(
                tidewater::db::open_retrying(&data_dir, Duration::from_secs(30))?,
                1,
            ))
        };
        let shipped = forwarder.run(&mut open, &stop, a.until_idle);
        shipped.map(|n| (n, forwarder.dead_lettered()))
    })
    .await??;
    let (shipped, refused) = result;
    errln!("forwarded {shipped} records {summary}");
    if refused > 0 {
        errln!(
            "the broker refused {refused} records: they are in the embedded-log topic {dead_letter_topic}, with the reason and their offsets"
        );
        return Ok(ExitCode::from(2));
    }
    Ok(ExitCode::SUCCESS)
}
