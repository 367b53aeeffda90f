//! `tidewater simulate`: virtual devices replaying the real data sets to a
//! running host over HTTP or MQTT, the way a fleet sends: jitter, bursts,
//! out-of-order sends, retries of what was not acknowledged (same payload),
//! and a share of retries whose payload changed.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;

use super::out::outln;
use tidewater::streams::Record;
use tidewater::streams::ingest::client::IngestClient;
use tidewater::streams::ingest::{self, CsvOptions, parse};

/// The data sets a device replays: (file, device id, time column).
const DATA: [(&str, &str, &str); 4] = [
    (
        "data/sea_surface_temperature.csv.gz",
        "buoy-b01",
        "time (UTC)",
    ),
    ("data/water-flow.csv", "pipeline-7", "Time"),
    ("data/occupancy.csv", "office-12", "time"),
    ("data/CGM.csv.gz", "cgm-3", "datetime"),
];

#[derive(Debug, Args)]
pub(super) struct SimulateArgs {
    /// Send over HTTP to this ingest URL (default: the running host's, found
    /// through the data dir).
    #[arg(long, conflicts_with = "mqtt")]
    http: Option<String>,
    /// Publish over MQTT (QoS 1) to this broker, mqtt://host:port.
    #[arg(long)]
    mqtt: Option<String>,
    /// The log topic (HTTP).
    #[arg(long, default_value = "sensor-readings")]
    topic: String,
    /// The MQTT topic of a device's readings; {device} is replaced by its id.
    #[arg(long, default_value = "devices/{device}/readings")]
    mqtt_topic: String,
    /// Virtual devices. Device i replays data set i mod 4 (buoy, flowmeter,
    /// office, glucose monitor), its rows split among the devices of that set.
    #[arg(long, default_value_t = 4)]
    devices: usize,
    /// Stop after this many readings in all (default: every row of the data).
    #[arg(long)]
    records: Option<u64>,
    /// Readings a second over all devices (0: as fast as acknowledgements come).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Readings per HTTP request (a device that buffers).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Up to this much random delay before each send.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
    jitter: Duration,
    /// Percent of sends that are bursts: the device then sends 10 batches back to back.
    #[arg(long, default_value_t = 0.0)]
    burst_percent: f64,
    /// Percent of batches sent after the next one (out of order).
    #[arg(long, default_value_t = 0.0)]
    out_of_order_percent: f64,
    /// Percent of acknowledged batches sent again, as if the ack was lost.
    #[arg(long, default_value_t = 0.0)]
    retry_percent: f64,
    /// Percent of those retries whose readings changed (a device that
    /// re-measured): downstream these are conflicts, not duplicates.
    #[arg(long, default_value_t = 0.0)]
    changed_percent: f64,
    /// Give up on a batch after this many failed attempts (connection
    /// errors, 503); it counts as failed.
    #[arg(long, default_value_t = 20)]
    attempts: u32,
    /// The bearer token (HTTP).
    #[arg(long, env = "TIDEWATER_INGEST_TOKEN")]
    token: Option<String>,
    /// CA certificates (PEM) for an https URL.
    #[arg(long, env = "TIDEWATER_INGEST_CA")]
    ca: Option<PathBuf>,
    /// The directory of the data sets.
    #[arg(long, default_value = "data")]
    data: PathBuf,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// What the devices did.
#[derive(Default)]
struct Counts {
    sent: AtomicU64,
    acknowledged: AtomicU64,
    retried: AtomicU64,
    changed: AtomicU64,
    failed: AtomicU64,
    latencies_us: std::sync::Mutex<Vec<u64>>,
}

/// A small, seeded random source (xorshift), so runs repeat.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    /// True with probability `percent`%.
    fn chance(&mut self, percent: f64) -> bool {
        percent > 0.0 && ((self.next_u64() % 10_000) as f64) < percent * 100.0
    }
}

/// The readings of device `i` of `n`: its share of its data set's rows, its id.
fn readings(dir: &std::path::Path, i: usize, n: usize) -> anyhow::Result<(String, Vec<Record>)> {
    let (file, device, column) = DATA[i % DATA.len()];
    let file = dir.join(file.trim_start_matches("data/"));
    let sharing = (0..n)
        .filter(|j| j % DATA.len() == i % DATA.len())
        .count()
        .max(1);
    let slot = i / DATA.len();
    let id = if sharing > 1 {
        format!("{device}-{slot}")
    } else {
        device.to_owned()
    };
    let f =
        std::fs::File::open(&file).with_context(|| format!("cannot open {}", file.display()))?;
    let mut rows = Vec::new();
    let mut k = 0usize;
    ingest::read_csv(
        f,
        &CsvOptions {
            device: id.clone(),
            time_column: column.into(),
        },
        |r| {
            if let Ok(r) = r {
                if k % sharing == slot {
                    rows.push(r);
                }
                k += 1;
            }
        },
    )?;
    Ok((id, rows))
}

pub(super) async fn simulate(
    data_dir: &std::path::Path,
    a: SimulateArgs,
) -> anyhow::Result<ExitCode> {
    if a.devices == 0 || a.batch == 0 {
        bail!("--devices and --batch must be at least 1");
    }
    let http_url = match (&a.http, &a.mqtt) {
        (Some(u), _) => Some(u.clone()),
        (None, Some(_)) => None,
        (None, None) => Some(
            IngestClient::discover(data_dir, a.ca.as_deref())?
                .map(|c| c.url().to_owned())
                .with_context(|| {
                    format!(
                        "no --http or --mqtt given and no running host's ingest.url in {}",
                        data_dir.display()
                    )
                })?,
        ),
    };
    let local_token = if a.http.is_none() && a.token.is_none() {
        std::fs::read_to_string(data_dir.join(ingest::http::INGEST_TOKEN_FILE))
            .ok()
            .map(|t| t.trim().to_owned())
    } else {
        a.token.clone()
    };
    let mut devices = Vec::new();
    for i in 0..a.devices {
        devices.push(readings(&a.data, i, a.devices)?);
    }
    let total: u64 = devices.iter().map(|(_, r)| r.len() as u64).sum();
    let limit = a.records.unwrap_or(total).min(total);
    // Each device's share of the limit, in proportion to its rows.
    for (_, rows) in &mut devices {
        let keep = (rows.len() as u128 * limit as u128).div_ceil(total.max(1) as u128) as usize;
        rows.truncate(keep);
    }
    let counts = Arc::new(Counts::default());
    let bar = indicatif::ProgressBar::new(devices.iter().map(|(_, r)| r.len() as u64).sum());
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg} {wide_bar} {pos}/{len} acknowledged {per_sec} {elapsed}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_message(format!("{} devices", a.devices));
    let a = Arc::new(a);
    let started = Instant::now();
    let per_device_rate = a.rate / a.devices as f64;
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (id, rows)) in devices.into_iter().enumerate() {
        let (a, counts, bar) = (a.clone(), counts.clone(), bar.clone());
        let sender = match &http_url {
            Some(u) => Sender::Http(Box::new(IngestClient::new(
                u,
                local_token.clone(),
                a.ca.as_deref(),
            )?)),
            None => Sender::mqtt(a.mqtt.as_deref().unwrap_or_default(), &id, a.ca.as_deref())?,
        };
        tasks.spawn(device(
            a,
            i as u64,
            id,
            rows,
            sender,
            per_device_rate,
            counts,
            bar,
        ));
    }
    while let Some(r) = tasks.join_next().await {
        r.context("a device task failed")?;
    }
    bar.finish_and_clear();
    report(&a, &counts, started.elapsed())?;
    Ok(if counts.failed.load(Ordering::Relaxed) > 0 {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

/// How a device sends.
enum Sender {
    Http(Box<IngestClient>),
    Mqtt {
        client: rumqttc::AsyncClient,
        acks: tokio::sync::mpsc::UnboundedReceiver<()>,
    },
}

impl Sender {
    /// An MQTT client of its own for device `id` (QoS 1 publishes; an ack
    /// is the broker's PUBACK).
    fn mqtt(url: &str, id: &str, ca: Option<&std::path::Path>) -> anyhow::Result<Self> {
        let cfg = ingest::MqttIngestConfig {
            url: url.to_owned(),
            client_id: format!("tidewater-simulate-{id}-{}", std::process::id()),
            username: None,
            password: None,
            ca_file: ca.map(std::path::Path::to_path_buf),
            topics: Default::default(),
            keep_alive: Duration::from_secs(30),
            max_reconnect_backoff: Duration::from_secs(1),
        };
        let (tls, host, port) = cfg.endpoint().map_err(anyhow::Error::msg)?;
        let mut o = rumqttc::MqttOptions::new(cfg.client_id.clone(), host, port);
        o.set_max_packet_size(
            ingest::mqtt::MAX_PACKET_BYTES,
            ingest::mqtt::MAX_PACKET_BYTES,
        )
        .set_inflight(100);
        if tls {
            o.set_transport(rumqttc::Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(Arc::new(
                    ingest::client::client_tls(ca).map_err(anyhow::Error::msg)?,
                )),
            ));
        }
        let (client, mut events) = rumqttc::AsyncClient::new(o, 1024);
        let (tx, acks) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match events.poll().await {
                    Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) => {
                        if tx.send(()).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => {
                        if tx.is_closed() {
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                }
            }
        });
        Ok(Sender::Mqtt { client, acks })
    }

    /// Sends `batch`; `true` once acknowledged.
    async fn send(&mut self, a: &SimulateArgs, id: &str, batch: &[Record]) -> bool {
        match self {
            Sender::Http(client) => {
                let mut body = Vec::new();
                for r in batch {
                    body.extend(parse::to_envelope(r));
                    body.push(b'\n');
                }
                matches!(
                    client.post(&a.topic, "envelope=true", body, "application/x-ndjson", false).await,
                    Ok(ans) if ans.status == 200
                )
            }
            Sender::Mqtt { client, acks } => {
                let topic = a.mqtt_topic.replace("{device}", id);
                for r in batch {
                    let payload = r.value.clone().unwrap_or_default();
                    if client
                        .publish(topic.clone(), rumqttc::QoS::AtLeastOnce, false, payload)
                        .await
                        .is_err()
                    {
                        return false;
                    }
                }
                for _ in batch {
                    let got = tokio::time::timeout(Duration::from_secs(30), acks.recv()).await;
                    if !matches!(got, Ok(Some(()))) {
                        return false;
                    }
                }
                true
            }
        }
    }
}

/// `r` with one number changed (a device that re-measured).
fn changed(r: &Record) -> Record {
    let mut r = r.clone();
    if let Some(v) = &r.value
        && let Ok(mut json) = serde_json::from_slice::<serde_json::Value>(v)
        && let Some(obj) = json.as_object_mut()
    {
        obj.insert("resent".into(), serde_json::Value::Bool(true));
        r.value = Some(json.to_string().into_bytes());
    }
    r
}

/// One device: its readings in batches, paced, with the faults asked for.
#[expect(
    clippy::too_many_arguments,
    reason = "one device's whole setup, spawned once"
)]
async fn device(
    a: Arc<SimulateArgs>,
    seed: u64,
    id: String,
    rows: Vec<Record>,
    mut sender: Sender,
    rate: f64,
    counts: Arc<Counts>,
    bar: indicatif::ProgressBar,
) {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (seed + 1).wrapping_mul(0x2545_f491_4f6c_dd1d));
    let mut batches: Vec<Vec<Record>> = rows.chunks(a.batch).map(<[Record]>::to_vec).collect();
    // Out of order: a batch swapped with the next one.
    for i in 0..batches.len().saturating_sub(1) {
        if rng.chance(a.out_of_order_percent) {
            batches.swap(i, i + 1);
        }
    }
    let started = Instant::now();
    let mut sent_rows = 0u64;
    let mut burst_left = 0u32;
    for batch in batches {
        if burst_left == 0 {
            if rate > 0.0 {
                let due = started + Duration::from_secs_f64(sent_rows as f64 / rate);
                tokio::time::sleep_until(due.into()).await;
            }
            if !a.jitter.is_zero() {
                let j = rng.next_u64() % (a.jitter.as_micros() as u64 + 1);
                tokio::time::sleep(Duration::from_micros(j)).await;
            }
            if rng.chance(a.burst_percent) {
                burst_left = 9;
            }
        } else {
            burst_left -= 1;
        }
        sent_rows += batch.len() as u64;
        if send_until_acked(&a, &id, &batch, &mut sender, &counts, &mut rng).await {
            bar.inc(batch.len() as u64);
            if rng.chance(a.retry_percent) {
                let again: Vec<Record> = if rng.chance(a.changed_percent) {
                    counts
                        .changed
                        .fetch_add(batch.len() as u64, Ordering::Relaxed);
                    batch.iter().map(changed).collect()
                } else {
                    batch.clone()
                };
                counts
                    .retried
                    .fetch_add(again.len() as u64, Ordering::Relaxed);
                send_until_acked(&a, &id, &again, &mut sender, &counts, &mut rng).await;
            }
        }
    }
}

/// Sends `batch` until it is acknowledged (the same payload each time),
/// backing off between attempts; `false` after `--attempts` failures.
async fn send_until_acked(
    a: &SimulateArgs,
    id: &str,
    batch: &[Record],
    sender: &mut Sender,
    counts: &Counts,
    rng: &mut Rng,
) -> bool {
    let n = batch.len() as u64;
    let mut backoff = Duration::from_millis(50);
    for attempt in 0..a.attempts {
        if attempt > 0 {
            counts.retried.fetch_add(n, Ordering::Relaxed);
            let wait = backoff.mul_f64(0.5 + (rng.next_u64() % 1000) as f64 / 2000.0);
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
        counts.sent.fetch_add(n, Ordering::Relaxed);
        let t = Instant::now();
        if sender.send(a, id, batch).await {
            counts.acknowledged.fetch_add(n, Ordering::Relaxed);
            if let Ok(mut l) = counts.latencies_us.lock() {
                l.push(t.elapsed().as_micros() as u64);
            }
            return true;
        }
    }
    counts.failed.fetch_add(n, Ordering::Relaxed);
    false
}

/// Prints what was sent and acknowledged, with the ack latency (`--json`: one object).
///
/// # Errors
///
/// [`super::StdoutClosed`] or another write error.
fn report(a: &SimulateArgs, c: &Counts, elapsed: Duration) -> anyhow::Result<()> {
    let mut l = c.latencies_us.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort_unstable();
    let q = |p: f64| {
        if l.is_empty() {
            0.0
        } else {
            l[((l.len() - 1) as f64 * p).round() as usize] as f64 / 1000.0
        }
    };
    let get = |x: &AtomicU64| x.load(Ordering::Relaxed);
    let acked = get(&c.acknowledged);
    let per_s = acked as f64 / elapsed.as_secs_f64().max(1e-9);
    if a.json {
        outln!(
            "{}",
            serde_json::json!({
                "sent": get(&c.sent), "acknowledged": acked, "retried": get(&c.retried),
                "changed": get(&c.changed), "failed": get(&c.failed),
                "ack_ms_p50": q(0.5), "ack_ms_p99": q(0.99),
                "elapsed_s": elapsed.as_secs_f64(), "acknowledged_per_s": per_s,
            })
        )
    } else {
        outln!(
            "sent {}  acknowledged {}  retried {} (changed {})  failed {}  ack p50 {:.1} ms  p99 {:.1} ms  {:.0} readings/s acknowledged in {:.1} s",
            get(&c.sent),
            acked,
            get(&c.retried),
            get(&c.changed),
            get(&c.failed),
            q(0.5),
            q(0.99),
            per_s,
            elapsed.as_secs_f64()
        )
    }
}
