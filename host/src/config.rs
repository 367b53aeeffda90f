//! The TOML config of `tidewater run`.
//!
//! ```toml
//! [log]
//! default_partitions = 1          # partitions of a topic created implicitly
//! maintenance_interval = "1m"     # how often retention and key expiry run
//! max_bytes = 10737418240         # disk quota of stored records; ingest gets 503 above it
//! cache_bytes = 33554432          # redb's page cache (default 32 MiB; redb alone would take 1 GiB)
//!
//! [[topic]]                       # optional: topics to create, with retention
//! name = "sensor-readings"
//! partitions = 4
//! retention = "7d"                # by append time; absent = keep forever
//! retention_bytes = 1073741824    # per partition; absent = no size limit
//! # retention.time = "7d"         # the same as retention = "7d", and then:
//! # retention.unread = "delete"   # also delete records a processor has not read
//! #                               # (default "keep": they stay until read)
//!
//! [[processor]]
//! name = "enrich"                 # also its consumer name and state scope
//! component = "enrich.wasm"       # relative to this file
//! inputs = ["sensor-readings"]
//! output = "readings-enriched"    # where outputs without a topic go
//! dead_letter_topic = "enrich.dlq" # default: <name>.dlq
//! batch.max_records = 1024
//! idempotency.key = "json:/device,/ts"  # record-key | hash | offset | json:/ptr,...
//! idempotency.ttl = "7d"
//! idempotency.unkeyed = "dead-letter"   # or "process"
//! on_error = "dead-letter"        # or "halt-partition", "skip"
//! limits.call_deadline = "1s"
//! limits.init_deadline = "5s"
//! limits.memory_bytes = 67108864
//! limits.transient_retries = 3
//! limits.retry_backoff = "100ms"
//! limits.log_lines_per_s = 100
//! limits.max_outputs_per_event = 10000
//! limits.max_output_bytes_per_batch = 67108864
//! limits.max_state_key_bytes = 4096
//! limits.max_state_value_bytes = 1048576
//! limits.max_state_bytes_per_batch = 16777216
//! group = "enrich"               # Kafka: the consumer group (default: the name)
//! exactly_once = false            # Kafka: outputs in the transaction of changelog and offsets
//! changelog_topic = "enrich-changelog"  # Kafka: state and keys (default: <group>-changelog)
//! canary = { events = 1000, max_error_rate = 0.01 }  # new versions roll back if more fail
//! [processor.config]              # handed to the component's init, as strings
//! "field.V1" = "temperature_c"
//!
//! [[forward]]                     # optional: ship an embedded-log topic to Kafka (store-and-forward)
//! from = "alerts"
//! topic = "site-7.alerts"         # the Kafka topic (default: the same as from)
//! batch = 1000                    # records per batch and position commit
//! kafka.brokers = "hq.example:9092"  # the cluster; the other keys of [kafka] too
//!
//! [device_time]                   # which timestamp a device's record gets (docs/device-data.md)
//! max_ahead = "15m"               # device time up to this far ahead of the ingest clock is kept
//! max_behind = "20y"              # and up to this far behind; else the ingest time, device time in a header
//! [[sink]]                        # optional: deliver a topic to PostgreSQL or a webhook (streams::sinks)
//! name = "readings-db"
//! topic = "readings-enriched"
//! [sink.postgres]
//! url = "postgres://tidewater@127.0.0.1:5432/tidewater"
//! table = "readings"
//! mode = "upsert"
//! key = ["device", "ts"]
//! create_table = true
//! columns = [{ name = "device", type = "text", pointer = "/device" },
//!            { name = "ts", type = "timestamptz", pointer = "/ts" }]
//!
//! [kafka]                         # optional: use Apache Kafka instead of the embedded log
//! brokers = "127.0.0.1:9092"
//! create_topics = true            # create missing topics at start
//! partitions = 1                  # of the topics it creates
//! replication_factor = 1
//! flush_timeout = "2m"            # longest wait for the broker's acknowledgements
//! transaction_timeout = "10s"     # a dead host's open transaction is aborted after this
//! host_id = "node-3"              # or `run --host-id`; default <hostname>-<hash of the data dir>
//! leave_group_on_stop = true      # a stopped host hands its partitions over at once
//! [kafka.properties]              # passed to librdkafka as is (TLS, SASL, timeouts)
//! "security.protocol" = "SASL_SSL"
//!
//! [admin]                         # optional: the admin HTTP API of `run` (see crate::admin)
//! listen = "127.0.0.1:7070"       # or `run --admin ADDR`; absent: no API
//! token = "..."                   # else TIDEWATER_ADMIN_TOKEN, else a random one in the data dir
//! max_upload_bytes = 67108864     # largest component accepted
//! watch_dir = "plugins"           # a new or changed <processor>.wasm here is deployed and activated
//! watch_interval = "1s"
//! console_public = false          # the web console's read-only pages open without the token
//! compare_report = "../target/compare.json"  # `make compare`'s report, for the console
//!
//! [ingest]                        # optional: devices send to the running host (embedded log only)
//! create_topics = true            # a record for a missing topic creates it (off: 404 no-such-topic)
//! queue_records = 200000          # records waiting for their durable append; more: 503 + Retry-After
//! group_commit = true             # requests in flight share one durable commit (false: one each)
//!
//! [[ingest.topic]]                # how an HTTP record of a topic gets its key and time
//! name = "sensor-readings"
//! key_pointer = "/device"         # JSON pointer to the key (a record without it is malformed)
//! timestamp_pointer = "/ts"       # JSON pointer to RFC 3339 text or epoch ms; absent: arrival time
//!
//! [ingest.http]                   # POST /v1/topics/{topic}/records (see streams::ingest::http)
//! listen = "127.0.0.1:8080"       # its own listener; non-loopback needs tokens
//! max_body_bytes = 16777216       # per request, after gzip (413 above)
//! max_records = 10000             # per request (413 above)
//! max_record_bytes = 1048576      # per record value (413 above, naming the line)
//! tls_cert = "cert.pem"           # with tls_key: HTTPS (rustls); relative to this file
//! tls_key = "key.pem"
//!
//! [[ingest.http.token]]           # a device token (`tidewater ingest-token` makes one)
//! name = "buoy-b01"
//! sha256 = "<64 hex digits>"      # the token's SHA-256; the token itself is not stored
//! topics = ["sensor-readings"]    # what it may write (403 otherwise)
//! key_prefix = "buoy-b01"         # optional: only keys starting with this (403 otherwise)
//!
//! [[ingest.mqtt]]                 # a broker to subscribe to (QoS 1, persistent session)
//! url = "mqtt://127.0.0.1:1883"   # or mqtts:// (TLS)
//! client_id = "tidewater"         # the session the broker keeps while the host is away
//! username = "tw"                 # optional; password, or TIDEWATER_MQTT_PASSWORD
//! ca_file = "ca.pem"              # mqtts: the CAs to trust (default: the system's)
//! topics = { "devices/+/readings" = "sensor-readings" }  # filter → log topic; key = the + segment
//! keep_alive = "30s"
//! max_reconnect_backoff = "10s"   # reconnects back off from 100 ms, doubling, to this
//! ```
//!
//! Unknown keys are refused, with the line they are on.

use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use crate::processing::config::{
    BatchConfig, CanaryPlan, IdempotencyConfig, LimitsConfig, OnError, ProcessorConfig, Unkeyed,
};
pub use crate::streams::embedded::{LogConfig, TopicConfig};

/// Why a config file was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is malformed or has unknown or mistyped keys.
    #[error("config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, and where (line and column).
        message: String,
    },
    /// The values do not make sense together.
    #[error("config {path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// The whole config file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The embedded log.
    #[serde(default)]
    pub log: LogConfig,
    /// Topics to create up front.
    #[serde(default, rename = "topic")]
    pub topics: Vec<TopicConfig>,
    /// The processors to run.
    #[serde(default, rename = "processor")]
    pub processors: Vec<ProcessorConfig>,
    /// Apache Kafka: when present, every processor reads and writes Kafka
    /// topics instead of the embedded log.
    pub kafka: Option<crate::streams::kafka::KafkaConfig>,
    /// The admin HTTP API (and the plugins-dir watcher) of `tidewater run`.
    pub admin: Option<crate::admin::AdminConfig>,
    /// Embedded-log topics shipped to a Kafka cluster while the processors
    /// run (store-and-forward from the edge).
    #[serde(default, rename = "forward")]
    pub forwards: Vec<crate::streams::forward::ForwardConfig>,
    /// Which timestamp a record from a device gets, on every way in.
    #[serde(default)]
    pub device_time: crate::streams::ingest::DeviceTimePolicy,
    /// Topics delivered to outside systems (PostgreSQL, webhooks).
    #[serde(default, rename = "sink")]
    pub sinks: Vec<crate::streams::sinks::SinkConfig>,
    /// Devices sending to the running host: `[ingest.http]`,
    /// `[[ingest.mqtt]]`, `[[ingest.topic]]` (embedded log only).
    #[serde(default)]
    pub ingest: crate::streams::ingest::IngestConfig,
}

impl Config {
    /// Reads, parses and checks `path`; component paths become relative to
    /// the current directory.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the file and what is wrong in it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config = Config::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in &mut config.processors {
            if p.component.is_relative() {
                p.component = base.join(&p.component);
            }
        }
        if let Some(h) = &mut config.ingest.http {
            for f in [&mut h.tls_cert, &mut h.tls_key].into_iter().flatten() {
                *f = base.join(&*f);
            }
        }
        for m in &mut config.ingest.mqtt {
            if let Some(f) = &mut m.ca_file {
                *f = base.join(&*f);
            }
        }
        config.check().map_err(|message| ConfigError::Invalid {
            path: path.to_owned(),
            message,
        })?;
        Ok(config)
    }

    /// Parses TOML text (no checks beyond the types).
    ///
    /// # Errors
    ///
    /// toml's message, with line and column.
    pub fn parse(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
    }

    /// Checks every section (each part checks its own config), then what
    /// the sections must agree on: unique processor names, Kafka-only
    /// settings only with Kafka, forwards only without it, no cycles.
    ///
    /// Run it again after changing a loaded config (`run --brokers` does).
    ///
    /// # Errors
    ///
    /// The first problem found, naming the section, the processor and the key.
    pub fn check(&self) -> Result<(), String> {
        crate::streams::embedded::check_log_config(&self.log, &self.topics)?;
        self.device_time.check()?;
        crate::streams::ingest::check_ingest_config(&self.ingest)?;
        if self.kafka.is_some() && (self.ingest.http.is_some() || !self.ingest.mqtt.is_empty()) {
            return Err("[ingest] appends to the embedded log, but the [kafka] section (or --brokers) makes the processors read Kafka: run ingest on an embedded-log host (and [[forward]] its topics), or produce to Kafka directly".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for p in &self.processors {
            p.check()?;
            if !names.insert(p.name.as_str()) {
                return Err(format!("processor {:?}: the name is used twice", p.name));
            }
            if self.kafka.is_none()
                && (p.exactly_once || p.group.is_some() || p.changelog_topic.is_some())
            {
                return Err(format!(
                    "processor {:?}: exactly_once, group and changelog_topic apply to Kafka only: add a [kafka] section or --brokers (on the embedded log, processing is already exactly-once)",
                    p.name
                ));
            }
        }
        if let Some(k) = &self.kafka {
            k.check()?;
        }
        self.check_forwards()?;
        for sink in &self.sinks {
            sink.check()
                .map_err(|m| format!("[[sink]] {:?}: {m}", sink.name))?;
            // Counters, status and positions are kept by name.
            if !names.insert(sink.name.as_str()) {
                return Err(format!(
                    "[[sink]] {:?}: the name is used by another processor or sink",
                    sink.name
                ));
            }
        }
        if let Some(cycle) = self.cycle() {
            return Err(format!(
                "the processors form a cycle ({}): each would read what the next writes, for ever",
                cycle.join(" → ")
            ));
        }
        Ok(())
    }

    /// Each `[[forward]]` on its own, then: not together with `[kafka]`, and
    /// no two to the same Kafka topic (they would share a position).
    fn check_forwards(&self) -> Result<(), String> {
        let mut shipped_to = std::collections::BTreeSet::new();
        for f in &self.forwards {
            let ctx = |m: String| format!("[[forward]] from {:?}: {m}", f.from);
            if self.kafka.is_some() {
                return Err(ctx("this ships an embedded-log topic to Kafka, but the [kafka] section makes the processors read and write Kafka itself (so do --brokers and TIDEWATER_BROKERS): drop one of the two".into()));
            }
            f.check().map_err(ctx)?;
            // The position is kept per Kafka topic name (as `tidewater forward` does).
            if !shipped_to.insert(f.kafka_topic()) {
                return Err(ctx(format!(
                    "another [[forward]] also writes the Kafka topic {:?}; each needs its own",
                    f.kafka_topic()
                )));
            }
        }
        Ok(())
    }

    /// A cycle of processors, each writing (output or dead letters) to an
    /// input of the next, if there is one: the names, first one repeated at the end.
    fn cycle(&self) -> Option<Vec<String>> {
        let writes = |p: &ProcessorConfig, q: &ProcessorConfig| {
            q.inputs.contains(&p.output) || q.inputs.contains(&p.dead_letter_topic())
        };
        let n = self.processors.len();
        // Depth-first search from each processor; n is small.
        fn visit(
            at: usize,
            path: &mut Vec<usize>,
            edges: &dyn Fn(usize, usize) -> bool,
            n: usize,
        ) -> Option<Vec<usize>> {
            for next in 0..n {
                if !edges(at, next) {
                    continue;
                }
                if let Some(i) = path.iter().position(|&p| p == next) {
                    let mut c = path[i..].to_vec();
                    c.push(next);
                    return Some(c);
                }
                path.push(next);
                if let Some(c) = visit(next, path, edges, n) {
                    return Some(c);
                }
                path.pop();
            }
            None
        }
        let edges = |a: usize, b: usize| writes(&self.processors[a], &self.processors[b]);
        (0..n).find_map(|start| {
            visit(start, &mut vec![start], &edges, n).map(|c| {
                c.into_iter()
                    .map(|i| self.processors[i].name.clone())
                    .collect()
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::processing::idempotency::KeyMode;

    const MINIMAL: &str = r#"
[[processor]]
name = "p"
component = "p.wasm"
inputs = ["in"]
output = "out"
"#;

    #[test]
    fn defaults() {
        let c = Config::parse(MINIMAL).unwrap();
        c.check().unwrap();
        let p = &c.processors[0];
        assert_eq!(p.dead_letter_topic(), "p.dlq");
        assert_eq!(p.key_mode().unwrap(), KeyMode::Offset);
        assert_eq!(p.idempotency.ttl, Duration::from_secs(604_800));
        assert_eq!(p.batch.max_records, 1024);
        assert_eq!(p.limits.memory_bytes, 67_108_864);
        assert_eq!(p.on_error, OnError::DeadLetter);
        assert_eq!(
            p.limits.runtime_limits(),
            crate::runtime::Limits::default(),
            "the config's defaults are the runtime's"
        );
        assert_eq!(c.log.default_partitions, 1);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_line() {
        let err = Config::parse(&format!("{MINIMAL}colour = \"red\"\n")).unwrap_err();
        assert!(err.contains("unknown field `colour`"), "{err}");
        assert!(err.contains("line 7"), "{err}");
        let err = Config::parse(&format!("{MINIMAL}idempotency.kee = \"hash\"\n")).unwrap_err();
        assert!(err.contains("unknown field `kee`"), "{err}");
    }

    #[test]
    fn bad_values_name_the_processor() {
        let c = Config::parse(&format!("{MINIMAL}idempotency.key = \"md5\"\n")).unwrap();
        assert!(
            c.check()
                .unwrap_err()
                .starts_with("processor \"p\": idempotency key mode \"md5\"")
        );
        let c = Config::parse(&MINIMAL.replace("\"out\"", "\"in\"")).unwrap();
        assert!(c.check().unwrap_err().contains("also an input"));
        let c = Config::parse(&format!("{MINIMAL}{}", MINIMAL)).unwrap();
        assert!(c.check().unwrap_err().contains("used twice"));
        let c = Config::parse(&MINIMAL.replace("\"out\"", "\"a/b\"")).unwrap();
        assert!(c.check().unwrap_err().contains("\"a/b\" is not valid"));
    }

    #[test]
    fn loops_are_refused() {
        let c = Config::parse(&format!("{MINIMAL}dead_letter_topic = \"in\"\n")).unwrap();
        assert!(
            c.check()
                .unwrap_err()
                .contains("dead_letter_topic \"in\" is also an input")
        );
        let two = r#"
[[processor]]
name = "a"
component = "p.wasm"
inputs = ["x"]
output = "y"
[[processor]]
name = "b"
component = "p.wasm"
inputs = ["y"]
output = "x"
"#;
        let err = Config::parse(two).unwrap().check().unwrap_err();
        assert!(err.contains("cycle (a → b → a)"), "{err}");
        let chain = two.replace("output = \"x\"", "output = \"z\"");
        Config::parse(&chain).unwrap().check().unwrap();
    }

    #[test]
    fn topics_are_checked() {
        let t = "[[topic]]\nname = \"t\"\npartitions = 4\n";
        let err = Config::parse(&format!("{t}{t}"))
            .unwrap()
            .check()
            .unwrap_err();
        assert_eq!(err, "[[topic]] \"t\" is listed twice");
        let err = Config::parse("[[topic]]\nname = \"t\"\npartitions = 4000000000\n")
            .unwrap()
            .check()
            .unwrap_err();
        assert!(err.contains("partitions must be 1 to 10000"), "{err}");
    }

    #[test]
    fn forwards_are_checked() {
        let f = "[[forward]]\nfrom = \"out\"\nkafka.brokers = \"127.0.0.1:9092\"\n";
        let c = Config::parse(&format!("{MINIMAL}{f}")).unwrap();
        c.check().unwrap();
        let fwd = &c.forwards[0];
        assert_eq!(
            (fwd.kafka_topic(), fwd.consumer().as_str(), fwd.batch),
            ("out", "forward.out", 1000)
        );
        let err = Config::parse(&format!("{MINIMAL}{f}{f}"))
            .unwrap()
            .check()
            .unwrap_err();
        assert_eq!(
            err,
            "[[forward]] from \"out\": another [[forward]] also writes the Kafka topic \"out\"; each needs its own"
        );
        let err = Config::parse(&format!("{MINIMAL}{}", f.replace("127.0.0.1:9092", " ")))
            .unwrap()
            .check()
            .unwrap_err();
        assert!(err.contains("kafka.brokers is not set"), "{err}");
        let err = Config::parse(&format!("{MINIMAL}{f}batch = 0\n"))
            .unwrap()
            .check()
            .unwrap_err();
        assert!(err.ends_with("batch must be 1 to 100000"), "{err}");
        let err = Config::parse(&format!("{MINIMAL}{f}topic = \"a b\"\n"))
            .unwrap()
            .check()
            .unwrap_err();
        assert!(err.contains("\"a b\" is not valid"), "{err}");
        let err = Config::parse(&format!(
            "{MINIMAL}{f}[kafka]\nbrokers = \"127.0.0.1:9092\"\n"
        ))
        .unwrap()
        .check()
        .unwrap_err();
        assert!(
            err.contains(
                "but the [kafka] section makes the processors read and write Kafka itself"
            ),
            "{err}"
        );
        let err = Config::parse(&format!("{MINIMAL}{f}kafka.colour = 1\n")).unwrap_err();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn sinks_are_checked_with_the_rest() {
        let sink = "[[sink]]\nname = \"p\"\ntopic = \"out\"\n[sink.webhook]\nurl = \"http://127.0.0.1:9/h\"\n";
        let err = Config::parse(&format!("{MINIMAL}{sink}"))
            .unwrap()
            .check()
            .unwrap_err();
        assert_eq!(
            err,
            "[[sink]] \"p\": the name is used by another processor or sink"
        );
        let c = Config::parse(&format!("{MINIMAL}{}", sink.replace("\"p\"", "\"hook\""))).unwrap();
        c.check().unwrap();
        assert_eq!(c.sinks[0].dead_letter_topic(), "hook.dlq");
        let err = Config::parse(&format!("{MINIMAL}{}", sink.replace("http://", "https://")))
            .unwrap()
            .check()
            .unwrap_err();
        assert!(err.starts_with("[[sink]] \"p\": webhook.url"), "{err}");
    }

    #[test]
    fn on_error_and_limits_parse() {
        let c = Config::parse(&format!(
            "{MINIMAL}on_error = \"halt-partition\"\nlimits.max_outputs_per_event = 5\nlimits.init_deadline = \"250ms\"\n"
        ))
        .unwrap();
        c.check().unwrap();
        let p = &c.processors[0];
        assert_eq!(p.on_error, OnError::HaltPartition);
        assert_eq!(p.limits.runtime_limits().max_outputs_per_event, 5);
        assert_eq!(p.limits.init_deadline, Duration::from_millis(250));
        let err = Config::parse(&format!("{MINIMAL}on_error = \"retry\"\n")).unwrap_err();
        assert!(err.contains("unknown variant `retry`"), "{err}");
        let c = Config::parse(&format!("{MINIMAL}limits.max_outputs_per_event = 0\n")).unwrap();
        assert!(c.check().unwrap_err().contains("must be at least 1"));
        let refused = |extra: &str| {
            Config::parse(&format!("{MINIMAL}{extra}\n"))
                .unwrap()
                .check()
                .unwrap_err()
        };
        assert_eq!(
            refused("limits.call_deadline = \"11m\""),
            "processor \"p\": limits.call_deadline is 11m; it must be 10 ms to 10m"
        );
        assert!(
            refused("limits.memory_bytes = 4294967297")
                .contains("cannot use more than 4294967296 (4 GiB)")
        );
        assert!(refused("limits.retry_backoff = \"1000y\"").contains("at most 30s"));
        assert!(refused("limits.transient_retries = 1000000").ends_with("at most 100"));
    }

    #[test]
    fn init_config_is_strings() {
        let c = Config::parse(&format!(
            "{MINIMAL}[processor.config]\nb = 2.5\na = \"x\"\nc = true\n"
        ))
        .unwrap();
        assert_eq!(
            c.processors[0].init_config(),
            [
                ("a".into(), "x".into()),
                ("b".into(), "2.5".into()),
                ("c".into(), "true".into())
            ]
        );
    }

    #[test]
    fn every_example_config_in_the_repo_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut seen = 0;
        for dir in ["demo", "examples"] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for e in entries {
                let path = e.unwrap().path();
                if path.extension().is_some_and(|x| x == "toml") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let c =
                        Config::parse(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    c.check()
                        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                    seen += 1;
                }
            }
        }
        assert!(seen >= 1, "no example config found");
    }
}
