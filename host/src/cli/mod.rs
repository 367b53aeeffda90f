//! The command line: one subcommand per job, all on one data dir.

mod consume;
mod deploy;
mod dlq;
mod forward;
mod inspect;
mod new;
pub(crate) mod out;
mod produce;
mod run;
mod simulate;

pub(crate) use out::{BROKEN_PIPE_STATUS, StdoutClosed, errln, outln};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use tidewater::streams::embedded::Log;

use consume::ConsumeArgs;
use deploy::{
    ActivateArgs, DeployArgs, NameArgs, ProcessedByArgs, ReplayArgs, RollbackArgs, VersionsArgs,
};
use dlq::DlqCommand;
use forward::ForwardArgs;
use inspect::StatsArgs;
use new::NewArgs;
use produce::ProduceArgs;
use run::RunArgs;
use simulate::SimulateArgs;

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

/// `produce --help`'s examples, one command a line.
const PRODUCE_EXAMPLES: &str = "\
Examples:
  tidewater produce readings --file r.ndjson --key-pointer /device --timestamp-pointer /ts
  echo '{\"device\":\"a\",\"t\":1}' | tidewater produce readings --key-pointer /device
  tidewater produce logs --format raw --key gw-1 -H site=7 < app.log
  tidewater produce sensor-readings --csv data/water-flow.csv --device p7 --time-column Time";

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the processors of a config file until Ctrl-C (or until idle).
    Run(RunArgs),
    /// Append records to a topic: NDJSON (default), JSON, raw lines or CSV,
    /// from stdin or --file (plain or gzip).
    ///
    /// On the embedded log it appends directly; while a `run` holds the data
    /// dir, it sends through that host's HTTP ingest endpoint (found through
    /// the data dir) with the same result. Lines that cannot become records
    /// are reported with their line number and kept, with the reason, in the
    /// topic <TOPIC>.rejected; the exit status is then 2. An input that cannot
    /// be read to its end (e.g. a truncated gzip file) is an error (exit 1)
    /// after the records before the damage were appended.
    #[command(after_long_help = PRODUCE_EXAMPLES)]
    Produce(ProduceArgs),
    /// Virtual devices replaying the real data sets (data/) to a running
    /// host over HTTP or MQTT, with jitter, bursts, out-of-order sends and
    /// retries; prints sent, acknowledged, retried, failed and the ack
    /// latency (p50, p99).
    Simulate(SimulateArgs),
    /// Make a device token for [[ingest.http.token]]: prints the token (give
    /// it to the device) and the config section, which keeps only its SHA-256.
    IngestToken(IngestTokenArgs),
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
    ///
    /// A timestamp outside the device-time window around the record's append
    /// time becomes that append time (--max-ahead, --max-behind). A record
    /// the broker refuses (too large, invalid) goes to the embedded-log topic
    /// forward.<TOPIC>.dlq with the reason and its offset, and the records
    /// after it ship; the exit status is then 2.
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
    Deploy(DeployArgs),
    /// List a processor's versions (* marks the active one).
    Versions(VersionsArgs),
    /// Make a version active at the next batch boundary.
    Activate(ActivateArgs),
    /// Go back to the previous version, or to the one named.
    Rollback(RollbackArgs),
    /// Pause a processor or a sink at the next batch boundary.
    Pause(NameArgs),
    /// Resume a paused processor or sink.
    Resume(NameArgs),
    /// Read a processor's inputs (or a sink's topic) again from an offset or a time.
    Replay(ReplayArgs),
    /// Tell which version of a processor processed an input record, and when.
    ///
    /// Derives the record's idempotency key as the processor does and reads
    /// what was recorded under it: the version, the time and the outcome
    /// (processed, dead-lettered, skipped); a duplicate or a conflict says
    /// so; a record not read yet, too. Through the admin API of `run --admin`.
    ProcessedBy(ProcessedByArgs),
    /// Work with a processor's dead-letter topic.
    #[command(subcommand)]
    Dlq(DlqCommand),
}

#[derive(Debug, Args)]
pub(crate) struct IngestTokenArgs {
    /// A name for logs and metrics, e.g. the device id.
    name: String,
    /// The topics it may write (repeatable).
    #[arg(long = "topic", required = true)]
    topics: Vec<String>,
    /// It may write only keys starting with this (e.g. its device id).
    #[arg(long)]
    key_prefix: Option<String>,
}

fn ingest_token(a: IngestTokenArgs) -> anyhow::Result<ExitCode> {
    use std::io::Read;
    for t in &a.topics {
        tidewater::streams::topic::check_topic_name(t)?;
    }
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .context("reading /dev/urandom")?;
    let token = hex::encode(b);
    let topics: Vec<String> = a.topics.iter().map(|t| format!("{t:?}")).collect();
    outln!("token (give it to the device; it is not stored): {token}")?;
    outln!("")?;
    outln!("[[ingest.http.token]]")?;
    outln!("name = {:?}", a.name)?;
    outln!(
        "sha256 = {:?}",
        tidewater::streams::ingest::http::token_digest(&token)
    )?;
    outln!("topics = [{}]", topics.join(", "))?;
    if let Some(p) = a.key_prefix {
        outln!("key_prefix = {p:?}")?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub(crate) struct KafkaArgs {
    /// Use Apache Kafka at these bootstrap servers (host:port, comma-separated)
    /// instead of the embedded log. For `run`, this overrides [kafka] brokers.
    #[arg(long, env = "TIDEWATER_BROKERS", value_parser = non_empty)]
    brokers: Option<String>,
}

/// The device-time window of `produce` and `forward` (`[device_time]` of
/// `run`): see docs/device-data.md.
#[derive(Debug, Args)]
pub(crate) struct DeviceTimeArgs {
    /// A record whose device time is more than this far ahead of the ingest
    /// clock is stamped with the ingest time instead; its device time is
    /// kept in the header tidewater-device-time (e.g. 15m, 1h). Default 15m.
    #[arg(long, env = "TIDEWATER_MAX_AHEAD", value_parser = humantime::parse_duration)]
    max_ahead: Option<std::time::Duration>,
    /// The same, for a device time more than this far behind (a clock
    /// reset to 1970 or 2000; e.g. 30d, 20y). Times at or before
    /// 1970-01-01T00:00:00Z are always replaced. Default 20y.
    #[arg(long, env = "TIDEWATER_MAX_BEHIND", value_parser = humantime::parse_duration)]
    max_behind: Option<std::time::Duration>,
}

impl DeviceTimeArgs {
    /// The policy these flags give (the defaults where a flag is missing).
    pub(crate) fn policy(&self) -> anyhow::Result<tidewater::streams::ingest::DeviceTimePolicy> {
        let mut p = tidewater::streams::ingest::DeviceTimePolicy::default();
        p.max_ahead = self.max_ahead.unwrap_or(p.max_ahead);
        p.max_behind = self.max_behind.unwrap_or(p.max_behind);
        p.check()
            .map_err(|e| anyhow::anyhow!(e.replace("device_time.max_", "--max-")))?;
        Ok(p)
    }
}

pub(crate) fn non_empty(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        Err("must not be empty".into())
    } else {
        Ok(s.to_owned())
    }
}

#[derive(Debug, Args)]
pub(crate) struct FormatArgs {
    /// table for people, json for scripts.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum Format {
    Table,
    Json,
}

/// Prints one row of counters per processor, with `last` (e.g. events/s or
/// lag) as the column before the status.
///
/// # Errors
///
/// [`out::StdoutClosed`] or another write error.
pub(crate) fn print_counters<'a>(
    last: &str,
    rows: impl Iterator<
        Item = (
            &'a str,
            &'a tidewater::processing::stats::Counters,
            String,
            &'a str,
        ),
    >,
) -> anyhow::Result<()> {
    outln!(
        "{:<12} {:>11} {:>10} {:>9} {:>8} {:>13} {:>6} {:>9}  status",
        "processor",
        "events read",
        "duplicates",
        "conflicts",
        "outputs",
        "dead-lettered",
        "errors",
        last
    )?;
    for (name, c, extra, status) in rows {
        outln!(
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
        )?;
    }
    Ok(())
}

/// A future that completes on SIGTERM or SIGINT (Ctrl-C). The handlers are
/// installed when this is called, not when the future is first polled.
pub(crate) fn stop_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
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
        Command::Run(a) => run::run(&cli.data_dir, a).await,
        Command::Produce(a) => produce::produce(&cli.data_dir, a).await,
        Command::Simulate(a) => simulate::simulate(&cli.data_dir, a).await,
        Command::IngestToken(a) => ingest_token(a),
        Command::Consume(a) => consume::consume(&cli.data_dir, a),
        Command::Forward(a) => forward::forward(&cli.data_dir, a).await,
        Command::Stats(a) => inspect::stats(&cli.data_dir, a),
        Command::Topics(a) => inspect::topics(&cli.data_dir, a),
        Command::New(a) => new::new_processor(a),
        Command::Deploy(a) => deploy::deploy(&cli.data_dir, a).await,
        Command::Versions(a) => deploy::versions(&cli.data_dir, a).await,
        Command::Activate(a) => deploy::activate(&cli.data_dir, a).await,
        Command::Rollback(a) => deploy::rollback(&cli.data_dir, a).await,
        Command::Pause(a) => deploy::pause(&cli.data_dir, a, true).await,
        Command::Resume(a) => deploy::pause(&cli.data_dir, a, false).await,
        Command::Replay(a) => deploy::replay(&cli.data_dir, a).await,
        Command::ProcessedBy(a) => deploy::processed_by(&cli.data_dir, a).await,
        Command::Dlq(DlqCommand::Replay(a)) => dlq::dlq_replay(&cli.data_dir, a).await,
    }
}

pub(crate) fn open_log(data_dir: &std::path::Path) -> anyhow::Result<Log> {
    let db = tidewater::db::open(data_dir)?;
    Ok(Log::new(db, 1))
}

/// Opens the log of a data dir that must exist already (for commands that only read).
pub(crate) fn open_existing_log(data_dir: &std::path::Path) -> anyhow::Result<Log> {
    if !data_dir.join(tidewater::db::DB_FILE).exists() {
        bail!(
            "there is no tidewater data in {} (nothing was produced or run there; --data-dir or TIDEWATER_DATA_DIR choose another)",
            data_dir.display()
        );
    }
    open_log(data_dir)
}
