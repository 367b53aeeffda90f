//! `tidewater run`: the processors of a config, until Ctrl-C or idle.

use super::out::outln;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;
use tidewater::config::Config;
use tidewater::streams::kafka::KafkaConfig;

use super::{Format, KafkaArgs, print_counters, stop_signal};

#[derive(Debug, Args)]
pub(super) struct RunArgs {
    #[command(flatten)]
    kafka: KafkaArgs,
    /// The TOML config: [[processor]] sections, and optional [log], [[topic]],
    /// [kafka] (run on Kafka), [[forward]] (ship embedded-log topics to
    /// Kafka) and [[sink]] (deliver a topic to PostgreSQL or a webhook).
    /// Every key is documented in host/src/config.rs.
    #[arg(long, short, env = "TIDEWATER_CONFIG")]
    config: PathBuf,
    /// Stop once every input has been read and nothing is left to do, then
    /// print a summary (for batch jobs and demos).
    #[arg(long)]
    until_idle: bool,
    /// How to print the summary.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    /// Serve the admin HTTP API on this address (e.g. 127.0.0.1:7070; port
    /// 0 picks a free one); overrides [admin] listen.
    #[arg(long, env = "TIDEWATER_ADMIN_LISTEN")]
    admin: Option<String>,
    /// Watch this directory: a new or changed <processor>.wasm in it is
    /// deployed and activated; overrides [admin] watch_dir.
    #[arg(long)]
    watch: Option<PathBuf>,
    /// The PostgreSQL URL of every [[sink]] whose [sink.postgres] has no
    /// url (postgres://user[:password]@host:port/database), so the
    /// password need not be in the config file.
    #[arg(long, env = "TIDEWATER_POSTGRES_URL", hide_env_values = true)]
    postgres_url: Option<String>,
    /// Start every processor paused; `tidewater resume NAME` starts it (to
    /// set up a shadow or a canary before the first event).
    #[arg(long)]
    paused: bool,
    /// Kafka: this host's id in its consumer groups and transactions (one
    /// per host; a host restarted with the same id takes its partitions
    /// back at once); overrides [kafka] host_id. Default
    /// <hostname>-<hash of the data dir>.
    #[arg(long, env = "TIDEWATER_HOST_ID")]
    host_id: Option<String>,
}

pub(super) async fn run(data_dir: &std::path::Path, a: RunArgs) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(&a.config)?;
    if let Some(brokers) = a.kafka.brokers {
        match &mut config.kafka {
            Some(k) => k.brokers = brokers,
            None => config.kafka = Some(KafkaConfig::new(brokers)),
        }
    }
    if let Some(url) = &a.postgres_url {
        for pg in config.sinks.iter_mut().filter_map(|s| s.postgres.as_mut()) {
            if pg.url.is_empty() {
                pg.url = url.clone();
            }
        }
        config.check().map_err(anyhow::Error::msg)?;
    }
    if let Some(id) = a.host_id {
        match &mut config.kafka {
            Some(k) => k.host_id = Some(id),
            None => {
                anyhow::bail!("--host-id applies to Kafka only: add a [kafka] section or --brokers")
            }
        }
    }
    let options = tidewater::RunOptions {
        data_dir: data_dir.to_owned(),
        until_idle: a.until_idle,
    };
    let base = a
        .config
        .parent()
        .map(std::path::Path::to_path_buf)
        .unwrap_or_default();
    let mut admin = tidewater::admin::AdminOptions::from_config(
        config.admin.as_ref(),
        a.admin.as_deref(),
        std::env::var("TIDEWATER_ADMIN_TOKEN").ok(),
        &base,
    )
    .map_err(anyhow::Error::msg)?;
    if let Some(dir) = a.watch {
        let interval = config
            .admin
            .as_ref()
            .map_or(std::time::Duration::from_secs(1), |c| c.watch_interval);
        admin.watch = Some((dir, interval));
    }
    admin.start_paused = a.paused;
    // Registered now, before the components load, so that a signal arriving
    // while they do is not taken by the default handler.
    let shutdown = stop_signal()?;
    let summary = tidewater::run_with(config, options, admin, shutdown).await?;
    match a.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&summary)?)?,
        Format::Table => {
            if !summary.processors.is_empty() {
                print_counters(
                    "events/s",
                    summary.processors.iter().map(|p| {
                        (
                            p.name.as_str(),
                            &p.counters,
                            format!("{:.0}", p.events_per_s()),
                            p.status.as_str(),
                        )
                    }),
                )?;
            }
            for f in &summary.forwards {
                outln!(
                    "forward {} → Kafka {} at {}: {} records shipped, {}",
                    f.from,
                    f.topic,
                    f.brokers,
                    f.records,
                    f.status
                )?;
            }
            for s in &summary.sinks {
                let d = &s.delivered;
                outln!(
                    "sink {} ({}) from {}: {} records, {} changed, {} unchanged, {} dead-lettered, {}",
                    s.name,
                    s.kind,
                    s.topic,
                    d.records,
                    d.changed,
                    d.unchanged,
                    d.dead_lettered,
                    s.status
                )?;
            }
            outln!("elapsed: {:.1} s", summary.elapsed_ms as f64 / 1000.0)?;
        }
    }
    let failed = summary
        .processors
        .iter()
        .map(|p| &p.status)
        .chain(summary.forwards.iter().map(|f| &f.status))
        .chain(summary.sinks.iter().map(|s| &s.status))
        .any(|s| s.starts_with("failed") || s.starts_with("paused"));
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
