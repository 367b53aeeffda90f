//! Turning outside data into records: files for `tidewater produce`, and
//! the live ways in of a running host, HTTP and MQTT.
//!
//! - [`csv`]: CSV files of sensor readings, one record per row, as devices
//!   write them (preambles, split date and time, sentinels).
//! - [`times`]: reading a device's time: ISO 8601, strftime, epoch, elapsed.
//! - [`device_time`]: the device-time policy every way in applies before a
//!   record is stored ([`DeviceTimePolicy::stamp`]), and its counts.
//! - [`parse`]: NDJSON, JSON, raw lines and envelopes, for `produce` and HTTP alike.
//! - [`appender`]: the group-commit append queue every live way in goes
//!   through; each record passes the device-time policy in the transaction
//!   that appends it.
//! - [`http`]: `POST /v1/topics/{topic}/records` (`[ingest.http]`).
//! - [`mqtt`]: a client of an MQTT broker (`[[ingest.mqtt]]`).
//! - [`client`]: a client of the HTTP endpoint, for `produce`, `simulate`,
//!   the tests and the benches.
//! - [`metrics`]: what ingest counts, for `/metrics`.
//! - `config`: `[ingest]` and its sections.

pub mod appender;
pub mod client;
mod config;
pub mod csv;
pub mod device_time;
pub mod http;
pub mod metrics;
pub mod mqtt;
pub mod parse;
pub mod times;

use std::path::Path;
use std::sync::Arc;

pub use appender::{AppendError, Appended, Appender, AppenderOptions};
pub use config::{
    DEFAULT_MAX_BODY_BYTES, DEFAULT_MAX_RECORD_BYTES, DEFAULT_MAX_RECORDS, DEFAULT_QUEUE_RECORDS,
    HttpIngestConfig, IngestConfig, IngestTopicConfig, MqttIngestConfig, TokenConfig,
    check_ingest_config,
};
pub use csv::{
    BadRow, CsvFormat, CsvOptions, IngestError, chosen_for_redelivery, maybe_gunzip, read_csv,
    read_csv_with,
};
pub use device_time::{DEVICE_TIME_HEADER, DeviceTimePolicy, Stamp, Tally, append_stamped};
pub use metrics::IngestMetrics;
pub use times::{EpochUnit, TimeFormat, parse_time_ms};

use crate::streams::embedded::Log;

/// The live ingest of a running host: the append queue, the HTTP listener
/// and the MQTT clients its config asks for.
pub struct Ingest {
    appender: Appender,
    http: Option<http::RunningHttp>,
    mqtt: Vec<mqtt::RunningMqtt>,
    metrics: Arc<IngestMetrics>,
}

impl Ingest {
    /// Starts what `config` asks for on `log`, with the disk quota
    /// `max_bytes` and the device-time policy `device_time` (applied to
    /// every record in the transaction that appends it); writes the HTTP URL and the host's own token into
    /// `data_dir` (`ingest.url`, `ingest.token`, mode 0600) for `tidewater
    /// produce` on the same machine. `None` when the config asks for no ingest.
    ///
    /// # Errors
    ///
    /// When the HTTP address cannot be bound, a TLS file cannot be read,
    /// or the discovery files cannot be written.
    pub async fn start(
        config: &IngestConfig,
        max_bytes: Option<u64>,
        device_time: DeviceTimePolicy,
        log: Log,
        data_dir: &Path,
    ) -> Result<Option<Ingest>, String> {
        if config.http.is_none() && config.mqtt.is_empty() {
            return Ok(None);
        }
        let metrics = Arc::new(IngestMetrics::default());
        let appender = Appender::start(
            log,
            AppenderOptions {
                queue_records: config.queue_records,
                create_topics: config.create_topics,
                group_commit: config.group_commit,
                max_bytes,
                device_time,
            },
            metrics.clone(),
        )
        .map_err(|e| format!("ingest: {e}"))?;
        let mut ingest = Ingest {
            appender: appender.clone(),
            http: None,
            mqtt: Vec::new(),
            metrics: metrics.clone(),
        };
        if let Some(h) = &config.http {
            let token = random_token().map_err(|e| format!("ingest: cannot make a token: {e}"))?;
            let running = http::start(
                h.clone(),
                &config.topics,
                appender.clone(),
                metrics.clone(),
                &token,
            )
            .await;
            let running = match running {
                Ok(r) => r,
                Err(e) => {
                    ingest.stop(data_dir).await;
                    return Err(e);
                }
            };
            write_discovery(data_dir, &running.url, &token, h.into()).map_err(|e| {
                format!(
                    "cannot write the ingest URL and token into {}: {e}",
                    data_dir.display()
                )
            })?;
            ingest.http = Some(running);
        }
        for m in &config.mqtt {
            match mqtt::start(m, appender.clone(), metrics.clone()) {
                Ok(r) => ingest.mqtt.push(r),
                Err(e) => {
                    ingest.stop(data_dir).await;
                    return Err(format!("[[ingest.mqtt]] {}: {e}", m.url));
                }
            }
        }
        Ok(Some(ingest))
    }

    /// The metrics, for `/metrics`.
    pub fn metrics(&self) -> Arc<IngestMetrics> {
        self.metrics.clone()
    }

    /// The HTTP listener's address, if any.
    pub fn http_addr(&self) -> Option<std::net::SocketAddr> {
        self.http.as_ref().map(|h| h.addr)
    }

    /// Stops the listener and the clients (requests in flight get their
    /// answer), appends what is queued, removes the discovery files.
    pub async fn stop(mut self, data_dir: &Path) {
        if let Some(h) = self.http.take() {
            h.stop().await;
            let _ = std::fs::remove_file(data_dir.join(http::INGEST_URL_FILE));
            let _ = std::fs::remove_file(data_dir.join(http::INGEST_TOKEN_FILE));
            let _ = std::fs::remove_file(data_dir.join(http::INGEST_LIMITS_FILE));
        }
        for m in self.mqtt.drain(..) {
            m.stop().await;
        }
        let appender = self.appender.clone();
        let _ = tokio::task::spawn_blocking(move || appender.stop()).await;
    }
}

/// 32 random bytes from the OS, hex.
fn random_token() -> std::io::Result<String> {
    use std::io::Read;
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut b)?;
    Ok(hex::encode(b))
}

/// Writes `ingest.limits`, `ingest.token` (mode 0600) and then
/// `ingest.url` into `data_dir`: a client that finds the URL finds the
/// others too.
fn write_discovery(
    data_dir: &Path,
    url: &str,
    token: &str,
    limits: http::RequestLimits,
) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::write(
        data_dir.join(http::INGEST_LIMITS_FILE),
        serde_json::to_vec(&limits).map_err(std::io::Error::other)?,
    )?;
    let path = data_dir.join(http::INGEST_TOKEN_FILE);
    let _ = std::fs::remove_file(&path);
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?
        .write_all(token.as_bytes())?;
    std::fs::write(data_dir.join(http::INGEST_URL_FILE), format!("{url}\n"))
}
