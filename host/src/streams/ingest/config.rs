//! `[ingest]`, `[ingest.http]`, `[[ingest.http.token]]`, `[[ingest.topic]]`
//! and `[[ingest.mqtt]]`: how devices send to a running host, with the checks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::streams::topic::check_topic_name;

/// Default largest request body, in bytes (after gzip is undone): 16 MiB.
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 << 20;
/// Default most records in one request.
pub const DEFAULT_MAX_RECORDS: usize = 10_000;
/// Default largest record value, in bytes: 1 MiB.
pub const DEFAULT_MAX_RECORD_BYTES: usize = 1 << 20;
/// Default most records waiting for their durable append.
pub const DEFAULT_QUEUE_RECORDS: usize = 200_000;

/// `[ingest]`: devices sending to the running host over HTTP and MQTT.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Whether a record for a topic that does not exist creates it (with
    /// `[log] default_partitions`). Off: such a request is refused (HTTP
    /// 404 `no-such-topic`). Default on.
    pub create_topics: bool,
    /// Records accepted but not yet durably appended, at most. A request
    /// that would go over is refused with HTTP 503 and `Retry-After` (an
    /// MQTT message waits, unacknowledged). Default 200,000.
    pub queue_records: usize,
    /// Many requests (and MQTT messages) share one durable commit (group
    /// commit, default). `false`: one commit per request, for comparison.
    pub group_commit: bool,
    /// The HTTP endpoint; absent: none.
    pub http: Option<HttpIngestConfig>,
    /// The MQTT brokers to take records from; none by default.
    pub mqtt: Vec<MqttIngestConfig>,
    /// How records of a topic are keyed and stamped.
    #[serde(rename = "topic")]
    pub topics: Vec<IngestTopicConfig>,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            create_topics: true,
            queue_records: DEFAULT_QUEUE_RECORDS,
            group_commit: true,
            http: None,
            mqtt: Vec::new(),
            topics: Vec::new(),
        }
    }
}

/// `[ingest.http]`: `POST /v1/topics/{topic}/records` on a listener of its own.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpIngestConfig {
    /// The address, e.g. `127.0.0.1:8080` (port 0: any free port). A
    /// non-loopback address needs at least one `[[ingest.http.token]]`.
    pub listen: String,
    /// Largest request body, in bytes, after gzip is undone (413 above).
    /// Default 16 MiB.
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: usize,
    /// Most records in one request (413 above). Default 10,000.
    #[serde(default = "default_max_records")]
    pub max_records: usize,
    /// Largest record value, in bytes (413 above, naming the line). Default 1 MiB.
    #[serde(default = "default_max_record_bytes")]
    pub max_record_bytes: usize,
    /// A PEM certificate chain: with `tls_key`, the listener speaks HTTPS
    /// (rustls). Relative to the config file.
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Device tokens. None: any client may send (loopback only).
    #[serde(default, rename = "token")]
    pub tokens: Vec<TokenConfig>,
}

fn default_max_body_bytes() -> usize {
    DEFAULT_MAX_BODY_BYTES
}
fn default_max_records() -> usize {
    DEFAULT_MAX_RECORDS
}
fn default_max_record_bytes() -> usize {
    DEFAULT_MAX_RECORD_BYTES
}

/// `[[ingest.http.token]]`: one device's (or gateway's) bearer token.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs and metrics, e.g. the device id.
    pub name: String,
    /// The token's SHA-256, 64 hex digits (the token itself is never
    /// stored: `tidewater ingest-token` makes one and prints both).
    pub sha256: String,
    /// The topics it may write.
    pub topics: Vec<String>,
    /// When set, every record it sends must have a key starting with this
    /// (a device may write only its own key): 403 otherwise.
    pub key_prefix: Option<String>,
}

/// `[[ingest.topic]]`: how the records of one topic are keyed and stamped
/// when they arrive over HTTP.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestTopicConfig {
    /// The topic.
    pub name: String,
    /// A JSON pointer (RFC 6901) into each record's value whose string (or
    /// number, as written) becomes the record key, e.g. `/device`. A record
    /// without it is malformed.
    pub key_pointer: Option<String>,
    /// A JSON pointer to the record's time: RFC 3339 text or epoch ms.
    /// Absent: the time the host received it.
    pub timestamp_pointer: Option<String>,
}

/// `[[ingest.mqtt]]`: a broker to subscribe to, QoS 1, persistent session.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MqttIngestConfig {
    /// `mqtt://host:port` or `mqtts://host:port` (TLS).
    pub url: String,
    /// The client id; the broker keeps this session (subscriptions and
    /// unacknowledged messages) while the host is away. Default `tidewater`.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// The user name, if the broker wants one.
    pub username: Option<String>,
    /// The password (or set `TIDEWATER_MQTT_PASSWORD`).
    pub password: Option<String>,
    /// A PEM file of the CA certificates to trust (mqtts); default: the
    /// system's roots.
    pub ca_file: Option<PathBuf>,
    /// MQTT topic filter → log topic. The segment matched by the filter's
    /// first `+` becomes the record key; e.g. `"devices/+/readings" =
    /// "sensor-readings"`.
    pub topics: BTreeMap<String, String>,
    /// The keep-alive interval. Default 30 s.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// The longest wait between reconnect attempts (they back off from
    /// 100 ms, doubling). Default 10 s.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_reconnect_backoff: Duration,
}

fn default_client_id() -> String {
    "tidewater".into()
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(10)
}

impl MqttIngestConfig {
    /// (TLS?, host, port) of `url`.
    ///
    /// # Errors
    ///
    /// When it is not `mqtt://host:port` or `mqtts://host:port`.
    pub fn endpoint(&self) -> Result<(bool, String, u16), String> {
        let (tls, rest) = if let Some(r) = self.url.strip_prefix("mqtts://") {
            (true, r)
        } else if let Some(r) = self.url.strip_prefix("mqtt://") {
            (false, r)
        } else {
            return Err(format!(
                "url {:?} is not mqtt://host:port or mqtts://host:port",
                self.url
            ));
        };
        let (host, port) = rest
            .trim_end_matches('/')
            .rsplit_once(':')
            .map_or((rest, if tls { "8883" } else { "1883" }), |(h, p)| (h, p));
        let port = port
            .parse::<u16>()
            .map_err(|_| format!("url {:?}: the port {port:?} is not a number", self.url))?;
        if host.is_empty() {
            return Err(format!("url {:?} names no host", self.url));
        }
        Ok((tls, host.to_owned(), port))
    }
}

/// Checks `[ingest]` and its sections.
///
/// # Errors
///
/// The first problem found, naming the section and the key.
pub fn check_ingest_config(c: &IngestConfig) -> Result<(), String> {
    if c.queue_records == 0 {
        return Err("ingest.queue_records must be at least 1".into());
    }
    if let Some(h) = &c.http {
        check_http(h)?;
    }
    for m in &c.mqtt {
        let ctx = |e: String| format!("[[ingest.mqtt]] {}: {e}", m.url);
        m.endpoint().map_err(ctx)?;
        if m.topics.is_empty() {
            return Err(ctx(
                "topics is empty: map at least one MQTT topic filter to a log topic".into(),
            ));
        }
        for (filter, topic) in &m.topics {
            check_topic_name(topic).map_err(|e| ctx(e.to_string()))?;
            check_filter(filter).map_err(ctx)?;
        }
        if m.client_id.is_empty() {
            return Err(ctx("client_id is empty".into()));
        }
    }
    let mut names = std::collections::BTreeSet::new();
    for t in &c.topics {
        check_topic_name(&t.name).map_err(|e| format!("[[ingest.topic]] {e}"))?;
        if !names.insert(&t.name) {
            return Err(format!("[[ingest.topic]] {:?} is listed twice", t.name));
        }
        for p in [&t.key_pointer, &t.timestamp_pointer].into_iter().flatten() {
            if !p.is_empty() && !p.starts_with('/') {
                return Err(format!(
                    "[[ingest.topic]] {:?}: {p:?} is not a JSON pointer (it starts with /, e.g. /device)",
                    t.name
                ));
            }
        }
    }
    Ok(())
}

fn check_http(h: &HttpIngestConfig) -> Result<(), String> {
    let addr: SocketAddr = h.listen.parse().map_err(|e| {
        format!(
            "ingest.http.listen {:?} is not an address:port (e.g. 127.0.0.1:8080): {e}",
            h.listen
        )
    })?;
    if !addr.ip().is_loopback() && h.tokens.is_empty() {
        return Err(format!(
            "ingest.http would listen on {addr}, which is not a loopback address, without device tokens: add [[ingest.http.token]] sections (tidewater ingest-token makes one), or listen on 127.0.0.1"
        ));
    }
    for (key, v) in [
        ("max_body_bytes", h.max_body_bytes),
        ("max_records", h.max_records),
        ("max_record_bytes", h.max_record_bytes),
    ] {
        if v == 0 {
            return Err(format!("ingest.http.{key} must be at least 1"));
        }
    }
    if h.tls_cert.is_some() != h.tls_key.is_some() {
        return Err("ingest.http: tls_cert and tls_key go together (set both, or neither)".into());
    }
    let mut digests = std::collections::BTreeSet::new();
    for t in &h.tokens {
        let ctx = |e: String| format!("[[ingest.http.token]] {:?}: {e}", t.name);
        if t.sha256.len() != 64 || !t.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ctx(format!(
                "sha256 {:?} is not 64 hex digits (the SHA-256 of the token; tidewater ingest-token makes a token and prints it)",
                t.sha256
            )));
        }
        if !digests.insert(t.sha256.to_ascii_lowercase()) {
            return Err(ctx("the same sha256 is listed twice".into()));
        }
        if t.topics.is_empty() {
            return Err(ctx("topics is empty: list the topics it may write".into()));
        }
        for topic in &t.topics {
            check_topic_name(topic).map_err(|e| ctx(e.to_string()))?;
        }
    }
    Ok(())
}

/// An MQTT topic filter: `+` and `#` only as whole levels, `#` last.
fn check_filter(filter: &str) -> Result<(), String> {
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        let wild = l.contains('+') || l.contains('#');
        if wild && *l != "+" && *l != "#" {
            return Err(format!(
                "topic filter {filter:?}: + and # stand for whole levels (e.g. devices/+/readings)"
            ));
        }
        if *l == "#" && i + 1 != levels.len() {
            return Err(format!("topic filter {filter:?}: # must be the last level"));
        }
    }
    if filter.is_empty() {
        return Err("an MQTT topic filter is empty".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<IngestConfig, String> {
        toml::from_str::<IngestConfig>(text).map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_sections_parse() {
        let c = parse(
            r#"
[http]
listen = "127.0.0.1:0"
[[http.token]]
name = "b01"
sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
topics = ["sensor-readings"]
key_prefix = "buoy-b01"
[[mqtt]]
url = "mqtt://127.0.0.1:1883"
topics = { "devices/+/readings" = "sensor-readings" }
[[topic]]
name = "sensor-readings"
key_pointer = "/device"
"#,
        )
        .unwrap();
        check_ingest_config(&c).unwrap();
        let h = c.http.as_ref().unwrap();
        assert_eq!(
            (h.max_body_bytes, h.max_records, h.max_record_bytes),
            (16 << 20, 10_000, 1 << 20)
        );
        assert_eq!(
            (c.queue_records, c.create_topics, c.group_commit),
            (200_000, true, true)
        );
        assert_eq!(c.mqtt[0].client_id, "tidewater");
        assert_eq!(
            c.mqtt[0].endpoint().unwrap(),
            (false, "127.0.0.1".into(), 1883)
        );
    }

    #[test]
    fn bad_sections_are_refused_with_the_reason() {
        let refused = |text: &str| check_ingest_config(&parse(text).unwrap()).unwrap_err();
        assert!(
            refused("[http]\nlisten = \"0.0.0.0:8080\"\n")
                .contains("not a loopback address, without device tokens")
        );
        assert!(
            refused("[http]\nlisten = \"127.0.0.1:1\"\n[[http.token]]\nname = \"a\"\nsha256 = \"abc\"\ntopics = [\"t\"]\n")
                .contains("is not 64 hex digits")
        );
        assert!(
            refused("[[mqtt]]\nurl = \"tcp://x:1\"\ntopics = { \"a/+\" = \"t\" }\n")
                .contains("is not mqtt://host:port")
        );
        assert!(
            refused("[[mqtt]]\nurl = \"mqtt://x:1\"\ntopics = { \"a/b+\" = \"t\" }\n")
                .contains("stand for whole levels")
        );
        assert!(
            refused("[[mqtt]]\nurl = \"mqtt://x:1\"\ntopics = { \"a/#/b\" = \"t\" }\n")
                .contains("# must be the last level")
        );
        assert!(
            refused("[[topic]]\nname = \"t\"\nkey_pointer = \"device\"\n")
                .contains("is not a JSON pointer")
        );
        assert!(
            refused("[http]\nlisten = \"127.0.0.1:1\"\ntls_cert = \"c.pem\"\n")
                .contains("tls_cert and tls_key go together")
        );
        assert!(
            parse("[http]\nlisten = \"x\"\ncolour = 1\n")
                .unwrap_err()
                .contains("unknown field `colour`")
        );
    }
}
