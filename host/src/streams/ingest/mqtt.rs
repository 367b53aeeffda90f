//! MQTT ingest (`[[ingest.mqtt]]`): tidewater as a client of a broker.
//!
//! - QoS 1 subscriptions on a persistent session (a fixed client id, clean
//!   session off), so the broker keeps the messages that arrive while the
//!   host is away, and redelivers those it sent but never got a PUBACK for.
//! - Each message becomes one record of the log topic its filter maps to:
//!   the payload is the value, the segment matched by the filter's first
//!   `+` the key, the MQTT topic the header `mqtt-topic`, the arrival time
//!   the timestamp.
//! - **PUBACK only after the durable append**, in the order the messages
//!   arrived (manual acks). A message redelivered after a crash is appended
//!   again: a processor whose idempotency key comes from the payload
//!   (`json:` keys) drops the copy. MQTT packet ids are reused by the
//!   broker and are never used as keys.
//! - Backpressure by not acknowledging: while the append queue is full or
//!   the log over its quota the client waits, and the broker's in-flight
//!   window stops the flow; nothing is dropped.
//! - Reconnects with exponential backoff (100 ms, doubling, up to
//!   `max_reconnect_backoff`); the session and its subscriptions survive.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, Publish, QoS};
use tokio::sync::{mpsc, watch};

use super::appender::{AppendError, Appender, Pending};
use super::config::MqttIngestConfig;
use super::metrics::IngestMetrics;
use crate::db::now_ms;
use crate::streams::Record;

/// The largest MQTT packet accepted, in bytes.
pub const MAX_PACKET_BYTES: usize = (1 << 20) + (64 << 10);

/// A running MQTT client.
pub struct RunningMqtt {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl RunningMqtt {
    /// Disconnects: messages appended but not yet acknowledged are
    /// redelivered by the broker next time (and dropped downstream as
    /// duplicates).
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Where the messages of one filter go.
#[derive(Debug, Clone)]
struct Route {
    filter: Vec<String>,
    topic: String,
}

impl Route {
    /// The key (the first `+` segment, if any) when `name` matches.
    fn matches(&self, name: &str) -> Option<Option<String>> {
        let levels: Vec<&str> = name.split('/').collect();
        let mut key = None;
        for (i, f) in self.filter.iter().enumerate() {
            match f.as_str() {
                "#" => return Some(key),
                "+" => {
                    let l = levels.get(i)?;
                    key.get_or_insert_with(|| (*l).to_owned());
                }
                lit => {
                    if levels.get(i) != Some(&lit) {
                        return None;
                    }
                }
            }
        }
        (levels.len() == self.filter.len()).then_some(key)
    }
}

/// Starts the client of `config`, appending through `appender`.
///
/// # Errors
///
/// When the TLS settings cannot be read.
pub fn start(
    config: &MqttIngestConfig,
    appender: Appender,
    metrics: Arc<IngestMetrics>,
) -> Result<RunningMqtt, String> {
    let options = options(config)?;
    let routes: Vec<Route> = config
        .topics
        .iter()
        .map(|(f, t)| Route {
            filter: f.split('/').map(str::to_owned).collect(),
            topic: t.clone(),
        })
        .collect();
    let (stop, stopped) = watch::channel(false);
    let task = tokio::spawn(run(
        options,
        config.clone(),
        routes,
        appender,
        metrics,
        stopped,
    ));
    tracing::info!(broker = %config.url, client_id = %config.client_id, "MQTT ingest starting");
    Ok(RunningMqtt { stop, task })
}

fn options(config: &MqttIngestConfig) -> Result<MqttOptions, String> {
    let (tls, host, port) = config.endpoint()?;
    let mut o = MqttOptions::new(config.client_id.clone(), host, port);
    o.set_keep_alive(config.keep_alive)
        .set_clean_session(false)
        .set_manual_acks(true)
        .set_max_packet_size(MAX_PACKET_BYTES, MAX_PACKET_BYTES);
    let password = config
        .password
        .clone()
        .or_else(|| std::env::var("TIDEWATER_MQTT_PASSWORD").ok());
    if let Some(user) = &config.username {
        o.set_credentials(user.clone(), password.unwrap_or_default());
    }
    if tls {
        o.set_transport(rumqttc::Transport::tls_with_config(
            rumqttc::TlsConfiguration::Rustls(Arc::new(super::client::client_tls(
                config.ca_file.as_deref(),
            )?)),
        ));
    }
    Ok(o)
}

/// The client's loop: poll the connection, append what arrives, back off
/// when it breaks, until `stop`.
async fn run(
    options: MqttOptions,
    config: MqttIngestConfig,
    routes: Vec<Route>,
    appender: Appender,
    metrics: Arc<IngestMetrics>,
    mut stop: watch::Receiver<bool>,
) {
    let (client, mut events) = AsyncClient::new(options, 4096);
    // Acks go out in arrival order, each once its append is durable.
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<(Publish, Pending, Instant, String, u64)>();
    let acker = tokio::spawn(ack_in_order(client.clone(), ack_rx, metrics.clone()));
    let broker = config.url.clone();
    let mut backoff = Duration::from_millis(100);
    loop {
        let event = tokio::select! {
            _ = stop.changed() => break,
            e = events.poll() => e,
        };
        match event {
            Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                metrics.set_mqtt_connected(&broker, true);
                backoff = Duration::from_millis(100);
                tracing::info!(%broker, session_present = ack.session_present, "MQTT connected");
                for filter in config.topics.keys() {
                    if let Err(e) = client.try_subscribe(filter.clone(), QoS::AtLeastOnce) {
                        tracing::error!(%broker, %filter, error = %e, "MQTT subscribe failed");
                    }
                }
            }
            Ok(Event::Incoming(Packet::SubAck(ack))) => {
                tracing::info!(%broker, pkid = ack.pkid, "MQTT subscribed");
            }
            Ok(Event::Incoming(Packet::Publish(p))) => {
                let Some((topic, record)) = to_record(&routes, &p) else {
                    tracing::warn!(%broker, mqtt_topic = %p.topic, "a message matches no filter; acknowledged and dropped");
                    let _ = client.ack(&p).await;
                    continue;
                };
                let arrived = Instant::now();
                let bytes = p.payload.len() as u64;
                let Some(pending) =
                    submit_waiting(&appender, &topic, record, &metrics, &mut stop).await
                else {
                    break;
                };
                let _ = ack_tx.send((p, pending, arrived, topic, bytes));
            }
            Ok(_) => {}
            Err(e) => {
                metrics.set_mqtt_connected(&broker, false);
                if let rumqttc::ConnectionError::ConnectionRefused(code) = &e {
                    tracing::warn!(%broker, client_id = %config.client_id, ?code, retry_in_ms = backoff.as_millis() as u64, "MQTT broker refused the connection (check username, password or TIDEWATER_MQTT_PASSWORD, and client_id); retrying");
                } else {
                    tracing::warn!(%broker, error = %e, retry_in_ms = backoff.as_millis() as u64, "MQTT connection lost; reconnecting");
                }
                tokio::select! {
                    _ = stop.changed() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(config.max_reconnect_backoff);
            }
        }
    }
    metrics.set_mqtt_connected(&broker, false);
    drop(ack_tx);
    // Acks for appends already durable still go out, then disconnect.
    let _ = tokio::time::timeout(Duration::from_secs(5), acker).await;
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while events.poll().await.is_ok() {}
    })
    .await;
}

/// The record of message `p`, and its log topic.
fn to_record(routes: &[Route], p: &Publish) -> Option<(String, Record)> {
    routes.iter().find_map(|r| {
        let key = r.matches(&p.topic)?;
        Some((
            r.topic.clone(),
            Record {
                timestamp_ms: now_ms() as i64,
                key: key.map(String::into_bytes),
                value: Some(p.payload.to_vec()),
                headers: vec![("mqtt-topic".into(), p.topic.clone().into_bytes())],
            },
        ))
    })
}

/// Submits `record`, waiting while the queue is full or the log over its
/// quota (the message stays unacknowledged meanwhile); `None` once asked
/// to stop.
async fn submit_waiting(
    appender: &Appender,
    topic: &str,
    record: Record,
    metrics: &IngestMetrics,
    stop: &mut watch::Receiver<bool>,
) -> Option<Pending> {
    let mut wait = Duration::from_millis(10);
    loop {
        match appender.submit(topic, None, vec![record.clone()]) {
            Ok(p) => return Some(p),
            Err(AppendError::Stopping) => return None,
            Err(e) if !e.is_backpressure() => {
                // Answered at once: the message stays unacknowledged and the others go on.
                let (tx, rx) = tokio::sync::oneshot::channel();
                let _ = tx.send(Err(e));
                return Some(rx);
            }
            Err(e) => {
                metrics.refused("mqtt", e.code());
                tokio::select! {
                    _ = stop.changed() => return None,
                    () = tokio::time::sleep(wait) => {}
                }
                wait = (wait * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// Acknowledges each message once its append is durable, in arrival order.
async fn ack_in_order(
    client: AsyncClient,
    mut rx: mpsc::UnboundedReceiver<(Publish, Pending, Instant, String, u64)>,
    metrics: Arc<IngestMetrics>,
) {
    while let Some((p, pending, arrived, topic, bytes)) = rx.recv().await {
        match pending.await {
            Ok(Ok(_)) => {
                if client.ack(&p).await.is_err() {
                    return;
                }
                metrics.appended("mqtt", &topic, 1, bytes, arrived.elapsed());
            }
            Ok(Err(e)) => {
                metrics.refused("mqtt", e.code());
                tracing::warn!(%topic, error = %e, "MQTT message not appended; left unacknowledged for the broker to redeliver");
            }
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(f: &str) -> Route {
        Route {
            filter: f.split('/').map(str::to_owned).collect(),
            topic: "t".into(),
        }
    }

    #[test]
    fn filters_match_and_the_plus_segment_is_the_key() {
        let r = route("devices/+/readings");
        assert_eq!(r.matches("devices/b01/readings"), Some(Some("b01".into())));
        assert_eq!(r.matches("devices/b01/status"), None);
        assert_eq!(r.matches("devices/b01/readings/x"), None);
        assert_eq!(route("devices/#").matches("devices/a/b"), Some(None));
        assert_eq!(route("+/x/+").matches("a/x/b"), Some(Some("a".into())));
        assert_eq!(route("a/b").matches("a/b"), Some(None));
    }
}
