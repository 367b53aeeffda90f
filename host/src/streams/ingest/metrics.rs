//! What ingest counts: requests, records and bytes per topic, refusals by
//! reason, the ack latency, the append queue's depth, MQTT connections.
//! Served by the admin API's `/metrics`.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

type Labels = Vec<(String, String)>;

/// The ingest side's metrics; cheap to update from any thread.
pub struct IngestMetrics {
    /// Requests (HTTP) or messages (MQTT) answered, by transport and topic.
    pub requests: Family<Labels, Counter>,
    /// Records durably appended, by transport and topic.
    pub records: Family<Labels, Counter>,
    /// Value bytes durably appended, by transport and topic.
    pub bytes: Family<Labels, Counter>,
    /// Requests refused, by transport and reason (the error code).
    pub refused: Family<Labels, Counter>,
    /// Seconds from a request's arrival to its acknowledgement, by transport.
    pub ack_latency: Family<Labels, Histogram>,
    /// 1 while connected to the broker, by broker URL.
    pub mqtt_connected: Family<Labels, Gauge>,
    /// Records accepted but not yet durably appended.
    pub queue_records: AtomicI64,
    /// Durable commits of the append queue.
    pub commits: AtomicU64,
}

impl Default for IngestMetrics {
    fn default() -> Self {
        IngestMetrics {
            requests: Family::default(),
            records: Family::default(),
            bytes: Family::default(),
            refused: Family::default(),
            ack_latency: Family::new_with_constructor(|| {
                Histogram::new([
                    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
                ])
            }),
            mqtt_connected: Family::default(),
            queue_records: AtomicI64::new(0),
            commits: AtomicU64::new(0),
        }
    }
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

impl IngestMetrics {
    /// Counts `records` records of `bytes` value bytes appended to `topic`
    /// through `transport` (`http`, `mqtt`), acknowledged `latency` after arrival.
    pub fn appended(
        &self,
        transport: &str,
        topic: &str,
        records: u64,
        bytes: u64,
        latency: std::time::Duration,
    ) {
        let l = labels(&[("transport", transport), ("topic", topic)]);
        self.requests.get_or_create(&l).inc();
        self.records.get_or_create(&l).inc_by(records);
        self.bytes.get_or_create(&l).inc_by(bytes);
        self.ack_latency
            .get_or_create(&labels(&[("transport", transport)]))
            .observe(latency.as_secs_f64());
    }

    /// Counts a refusal through `transport` for `reason` (a stable code).
    pub fn refused(&self, transport: &str, reason: &str) {
        self.refused
            .get_or_create(&labels(&[("transport", transport), ("reason", reason)]))
            .inc();
    }

    /// Records whether the client of `broker` is connected.
    pub fn set_mqtt_connected(&self, broker: &str, connected: bool) {
        self.mqtt_connected
            .get_or_create(&labels(&[("broker", broker)]))
            .set(i64::from(connected));
    }

    /// Registers every metric in `reg` (prefix `ingest_`).
    pub fn register(&self, reg: &mut prometheus_client::registry::Registry) {
        reg.register(
            "ingest_requests",
            "Ingest requests (HTTP) and messages (MQTT) acknowledged",
            self.requests.clone(),
        );
        reg.register(
            "ingest_records",
            "Records durably appended by ingest",
            self.records.clone(),
        );
        reg.register(
            "ingest_bytes",
            "Value bytes durably appended by ingest",
            self.bytes.clone(),
        );
        reg.register(
            "ingest_refused",
            "Ingest requests refused, by reason",
            self.refused.clone(),
        );
        reg.register(
            "ingest_ack_latency_seconds",
            "Time from a request's arrival to its acknowledgement",
            self.ack_latency.clone(),
        );
        reg.register(
            "ingest_mqtt_connected",
            "1 while connected to the MQTT broker",
            self.mqtt_connected.clone(),
        );
        let q = Gauge::<i64>::default();
        q.set(self.queue_records.load(Ordering::Relaxed));
        reg.register(
            "ingest_queue_records",
            "Records accepted and waiting for their durable append",
            q,
        );
        let c = Counter::<u64>::default();
        c.inc_by(self.commits.load(Ordering::Relaxed));
        reg.register(
            "ingest_commits",
            "Durable commits of the ingest append queue",
            c,
        );
    }
}
