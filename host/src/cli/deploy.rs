//! The commands that talk to a running host's admin API: `deploy`,
//! `versions`, `activate`, `rollback`, `pause`, `resume`, `replay`,
//! `processed-by`.

use super::out::outln;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use tidewater::admin::client::Client;

/// A processor name as the config allows it (1 to 200 of a-z A-Z 0-9 . _ -),
/// so it can go into a URL path as it is.
fn processor_name(s: &str) -> Result<String, String> {
    let ok = !s.is_empty()
        && s.len() <= 200
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok && s != "." && s != ".." {
        Ok(s.to_owned())
    } else {
        Err("a processor name is 1 to 200 of the characters a-z A-Z 0-9 . _ -".into())
    }
}

/// Where the admin API is.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The admin API of the running host (http://host:port). Default: the
    /// one the host running on --data-dir wrote there.
    #[arg(long = "admin", env = "TIDEWATER_ADMIN_URL", global = true)]
    url: Option<String>,
    /// The bearer token of mutating calls. Default: the one the host
    /// running on --data-dir wrote there.
    #[arg(
        long,
        env = "TIDEWATER_ADMIN_TOKEN",
        hide_env_values = true,
        global = true
    )]
    token: Option<String>,
}

impl AdminArgs {
    fn client(&self, data_dir: &Path) -> anyhow::Result<Client> {
        Ok(Client::discover(
            data_dir,
            self.url.clone(),
            self.token.clone(),
        )?)
    }
}

/// `deploy`.
#[derive(Debug, Args)]
pub struct DeployArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The processor.
    #[arg(value_parser = processor_name)]
    name: String,
    /// The component (.wasm).
    file: PathBuf,
    /// Activate it at the next batch boundary.
    #[arg(long, conflicts_with = "shadow")]
    activate: bool,
    /// Run it as a shadow: same batches, outputs compared, never published.
    #[arg(long)]
    shadow: bool,
    /// With --activate: roll back to the previous version if more than
    /// --canary-max-error-rate of its first N processed events fail.
    #[arg(long, requires = "activate")]
    canary_events: Option<u64>,
    /// The canary's largest allowed error rate, 0.0 to 1.0.
    #[arg(long, requires = "canary_events")]
    canary_max_error_rate: Option<f64>,
}

/// `versions`.
#[derive(Debug, Args)]
pub struct VersionsArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The processor.
    #[arg(value_parser = processor_name)]
    name: String,
    /// table for people, json for scripts.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    format: String,
}

/// `activate`.
#[derive(Debug, Args)]
pub struct ActivateArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The processor.
    #[arg(value_parser = processor_name)]
    name: String,
    /// The version: its SHA-256, or a unique prefix of at least 8 hex digits.
    version: String,
}

/// `rollback`.
#[derive(Debug, Args)]
pub struct RollbackArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The processor.
    #[arg(value_parser = processor_name)]
    name: String,
    /// The version to go back to: its SHA-256, or a unique prefix of at
    /// least 8 hex digits. Default: the one active before the current one.
    version: Option<String>,
}

/// `pause` and `resume`.
#[derive(Debug, Args)]
pub struct NameArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The processor or sink.
    #[arg(value_parser = processor_name)]
    name: String,
}

/// `replay`: exactly one of --from-offset and --from-time.
#[derive(Debug, Args)]
#[group(id = "from", required = true, multiple = false)]
pub struct ReplayArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The processor or sink (a sink delivers the records again, with
    /// their idempotency keys).
    #[arg(value_parser = processor_name)]
    name: String,
    /// Read again from this offset of every partition of its inputs.
    #[arg(long, group = "from")]
    from_offset: Option<u64>,
    /// Read again from the first record at or after this time (RFC 3339,
    /// e.g. 2026-11-30T12:00:00Z) in every partition.
    #[arg(long, group = "from")]
    from_time: Option<String>,
    /// Process the range again under a new idempotency epoch (outputs carry
    /// tidewater-upsert-key). Without it, events already processed are duplicates.
    #[arg(long)]
    reprocess: bool,
}

/// `processed-by`.
#[derive(Debug, Args)]
pub struct ProcessedByArgs {
    #[command(flatten)]
    admin: AdminArgs,
    /// The processor.
    #[arg(value_parser = processor_name)]
    name: String,
    /// The input topic of the record.
    #[arg(long)]
    topic: String,
    /// Its partition.
    #[arg(long)]
    partition: u32,
    /// Its offset.
    #[arg(long)]
    offset: u64,
    /// table for people, json for scripts.
    #[arg(long, default_value = "table", value_parser = ["table", "json"])]
    format: String,
}

fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// `tidewater deploy`: prints the version's SHA-256.
pub async fn deploy(data_dir: &Path, a: DeployArgs) -> anyhow::Result<ExitCode> {
    let wasm =
        std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let mut query = Vec::new();
    if a.activate {
        query.push("activate=true".to_owned());
    }
    if a.shadow {
        query.push("shadow=true".to_owned());
    }
    if let Some(n) = a.canary_events {
        let Some(r) = a.canary_max_error_rate else {
            bail!("--canary-events needs --canary-max-error-rate");
        };
        query.push(format!("canary_events={n}&canary_max_error_rate={r}"));
    }
    let v = a
        .admin
        .client(data_dir)?
        .upload(&a.name, wasm, &query.join("&"))
        .await?;
    outln!("{}", v["version"]["sha256"].as_str().unwrap_or_default())?;
    Ok(ExitCode::SUCCESS)
}

/// `tidewater versions`.
pub async fn versions(data_dir: &Path, a: VersionsArgs) -> anyhow::Result<ExitCode> {
    let v = a
        .admin
        .client(data_dir)?
        .get(&format!("/v1/processors/{}/versions", a.name))
        .await?;
    if a.format == "json" {
        outln!("{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(ExitCode::SUCCESS);
    }
    outln!(
        "{:<2} {:<12} {:<20} {:>10} {:<10}  note",
        "",
        "version",
        "uploaded (UTC)",
        "bytes",
        "language"
    )?;
    for ver in v["versions"].as_array().into_iter().flatten() {
        let uploaded = ver["uploaded_ms"]
            .as_i64()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
            .unwrap_or_default();
        outln!(
            "{:<2} {:<12} {:<20} {:>10} {:<10}  {}",
            if ver["active"] == Value::Bool(true) {
                "*"
            } else {
                ""
            },
            short(ver["sha256"].as_str().unwrap_or_default()),
            uploaded,
            ver["size_bytes"],
            ver["language"].as_str().unwrap_or("-"),
            ver["rolled_back"].as_str().unwrap_or("")
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `tidewater activate`.
pub async fn activate(data_dir: &Path, a: ActivateArgs) -> anyhow::Result<ExitCode> {
    let version = a.version;
    let v = a
        .admin
        .client(data_dir)?
        .post(
            &format!("/v1/processors/{}/activate", a.name),
            &json!({ "version": version }),
        )
        .await?;
    outln!("{}", v["version"].as_str().unwrap_or_default())?;
    Ok(ExitCode::SUCCESS)
}

/// `tidewater rollback`.
pub async fn rollback(data_dir: &Path, a: RollbackArgs) -> anyhow::Result<ExitCode> {
    let body = match a.version {
        Some(v) => json!({ "version": v }),
        None => json!({}),
    };
    let v = a
        .admin
        .client(data_dir)?
        .post(&format!("/v1/processors/{}/rollback", a.name), &body)
        .await?;
    outln!("{}", v["version"].as_str().unwrap_or_default())?;
    Ok(ExitCode::SUCCESS)
}

/// POSTs `body` to the processor's `action` route, or the sink's when no
/// processor has that name.
async fn post_to_processor_or_sink(
    client: &Client,
    name: &str,
    action: &str,
    body: &Value,
) -> anyhow::Result<Value> {
    match client
        .post(&format!("/v1/processors/{name}/{action}"), body)
        .await
    {
        Err(tidewater::admin::client::ClientError::Api { code, .. })
            if code == "no-such-processor" =>
        {
            match client
                .post(&format!("/v1/sinks/{name}/{action}"), body)
                .await
            {
                Err(tidewater::admin::client::ClientError::Api { code, .. })
                    if code == "no-such-sink" =>
                {
                    bail!("no processor or sink {name:?} runs there")
                }
                other => Ok(other?),
            }
        }
        other => Ok(other?),
    }
}

/// `tidewater pause` (`pause = true`) and `tidewater resume`: a processor or a sink.
pub async fn pause(data_dir: &Path, a: NameArgs, pause: bool) -> anyhow::Result<ExitCode> {
    let what = if pause { "pause" } else { "resume" };
    let client = a.admin.client(data_dir)?;
    post_to_processor_or_sink(&client, &a.name, what, &json!({})).await?;
    outln!("{}: {}", a.name, if pause { "paused" } else { "resumed" })?;
    Ok(ExitCode::SUCCESS)
}

/// `tidewater processed-by`: which version processed an input record, and when.
pub async fn processed_by(data_dir: &Path, a: ProcessedByArgs) -> anyhow::Result<ExitCode> {
    let topic: String = form_urlencoded::byte_serialize(a.topic.as_bytes()).collect();
    let v = a
        .admin
        .client(data_dir)?
        .get(&format!(
            "/v1/processors/{}/processed?topic={topic}&partition={}&offset={}",
            a.name, a.partition, a.offset
        ))
        .await?;
    if a.format == "json" {
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!(
            "{}/{}@{}: {}",
            a.topic,
            a.partition,
            a.offset,
            v["summary"].as_str().unwrap_or_default()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `tidewater replay`.
pub async fn replay(data_dir: &Path, a: ReplayArgs) -> anyhow::Result<ExitCode> {
    let mut body = json!({ "reprocess": a.reprocess });
    match (a.from_offset, a.from_time) {
        (Some(o), None) => body["from_offset"] = json!(o),
        (None, Some(t)) => body["from_time"] = json!(t),
        _ => bail!("give exactly one of --from-offset and --from-time"),
    }
    let client = a.admin.client(data_dir)?;
    let v = post_to_processor_or_sink(&client, &a.name, "replay", &body).await?;
    match v["epoch"].as_u64() {
        Some(epoch) => outln!("{}: replaying, idempotency epoch {epoch}", a.name)?,
        None => outln!("{}: replaying (sink)", a.name)?,
    }
    Ok(ExitCode::SUCCESS)
}
