//! `tidewater dlq replay`: a processor's dead letters through a fixed component.

use super::out::outln;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use tidewater::config::Config;

use super::{Format, open_existing_log};

#[derive(Debug, Subcommand)]
pub(super) enum DlqCommand {
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
pub(super) struct DlqReplayArgs {
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

pub(super) async fn dlq_replay(
    data_dir: &std::path::Path,
    a: DlqReplayArgs,
) -> anyhow::Result<ExitCode> {
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
    let component = tidewater::processing::dlq::component_for(&processor, a.component.as_deref());
    let log = open_existing_log(data_dir)?;
    let runtime = std::sync::Arc::new(tidewater::runtime::Runtime::new(Some(
        data_dir.join("cache"),
    ))?);
    let summary = tokio::task::spawn_blocking(move || {
        tidewater::processing::dlq::replay(&log, runtime, &processor, &component)
    })
    .await??;
    match a.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&summary)?)?,
        Format::Table => outln!(
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
        )?,
    }
    Ok(ExitCode::SUCCESS)
}
