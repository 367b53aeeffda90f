//! Several hosts sharing a processor on Kafka: state and keys follow their
//! partitions (changelog, restores), zombies are fenced, restarts take
//! their partitions back at once, and replay works for the whole group.
//!
//! Like `kafka.rs`, these need the broker `make test` starts. To keep the
//! suite's time down on two cores, the scenario runs on one broker with
//! 12-partition topics, and each mode runs its host changes (a kill, a
//! fourth host added and removed, a restart with the redb deleted) in one
//! run, checked once at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use tidewater::streams::kafka::KafkaConfig;
use tidewater::streams::{LogRecord, Record};

use crate::common::*;
use crate::deploy::{Host, numbered};
use crate::kafka::{KillOnDrop, broker, distinct_keys, read_all, unique};

const PARTITIONS: u32 = 12;

/// The four real data sets as 40 devices (each set's rows dealt round-robin
/// to 10 device ids), 5% of them sent twice, and 100,000 synthetic devices
/// with one reading each; keyed by device, in a fixed order.
fn scale_records() -> &'static [Record] {
    static RECORDS: OnceLock<Vec<Record>> = OnceLock::new();
    RECORDS.get_or_init(|| {
        let mut real = Vec::new();
        for (file, device, column) in ALL_DATA {
            let options = tidewater::streams::ingest::csv::CsvOptions {
                device: device.to_owned(),
                time_column: column.to_owned(),
            };
            let f = std::fs::File::open(root().join(file)).unwrap();
            let mut i = 0u64;
            tidewater::streams::ingest::csv::read_csv(f, &options, |r| {
                let Ok(mut r) = r else { return };
                let id = format!("{device}-{}", i % 10);
                let value = String::from_utf8(r.value.take().unwrap()).unwrap().replacen(
                    &format!("\"device\":\"{device}\""),
                    &format!("\"device\":\"{id}\""),
                    1,
                );
                r.value = Some(value.into_bytes());
                r.key = Some(id.clone().into_bytes());
                let again = tidewater::streams::ingest::csv::chosen_for_redelivery(&id, i, 5.0);
                real.push(r.clone());
                if again {
                    real.push(r);
                }
                i += 1;
            })
            .unwrap();
        }
        let synthetic = (0..100_000).map(|n| {
            let id = format!("syn-{n:06}");
            Record {
                timestamp_ms: 1_704_067_200_000,
                key: Some(id.clone().into_bytes()),
                value: Some(
                    format!(
                        "{{\"device\":\"{id}\",\"ts\":\"2024-01-01T00:00:00Z\",\"temperature (celsius)\":{}}}",
                        n % 30
                    )
                    .into_bytes(),
                ),
                headers: Vec::new(),
            }
        });
        // Interleaved, so every part of the run has both kinds.
        let mut out = Vec::new();
        let mut synthetic = synthetic.peekable();
        for (i, r) in real.into_iter().enumerate() {
            out.push(r);
            if i % 3 != 0 {
                out.extend(synthetic.next());
            }
        }
        out.extend(synthetic);
        out
    })
}

/// What a clean single host made of [`scale_records`] (on the embedded log).
struct Clean {
    /// Each output's `idempotency-key` → its value.
    enriched: BTreeMap<String, Vec<u8>>,
    alerts: BTreeMap<String, Vec<u8>>,
    /// threshold's state: key → value.
    state: BTreeMap<Vec<u8>, Vec<u8>>,
}

fn by_key(records: &[LogRecord]) -> BTreeMap<String, Vec<u8>> {
    records
        .iter()
        .map(|r| {
            (
                header(r, "idempotency-key").unwrap(),
                r.record.value.clone().unwrap(),
            )
        })
        .collect()
}

fn clean() -> &'static Clean {
    static CLEAN: OnceLock<Clean> = OnceLock::new();
    CLEAN.get_or_init(|| {
        let env = Env::new();
        env.with_log(|log| {
            log.create_topic("sensor-readings", 4).unwrap();
            log.append("sensor-readings", scale_records().to_vec())
                .unwrap();
        });
        let config = env.config(&demo_config_text());
        let summary = env.run(&config);
        assert_eq!(
            counters(&summary, "enrich")["events_in"],
            scale_records().len(),
            "{summary}"
        );
        let state = env.with_log(|log| {
            tidewater::processing::state::dump(log.db(), "threshold")
                .unwrap()
                .into_iter()
                .collect()
        });
        Clean {
            enriched: by_key(&env.records("readings-enriched")),
            alerts: by_key(&env.records("alerts")),
            state,
        }
    })
}

/// The latest state of `processor`'s changelog: key → value of every `S`
/// record (tombstones remove).
fn state_in_changelog(brokers: &str, topic: &str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut latest: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    for r in read_all(brokers, topic) {
        let key = r.record.key.unwrap();
        let k = tidewater::streams::kafka::decode_changelog_key(&key).unwrap();
        if k.kind == b'S' {
            latest.insert(k.key.to_vec(), r.record.value);
        }
    }
    latest
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect()
}

/// Every copy of an output carries the same value (no idempotency key has
/// two sets of outputs), and the outputs are the clean run's.
fn check_outputs(records: &[LogRecord], clean: &BTreeMap<String, Vec<u8>>, what: &str) {
    let mut seen: BTreeMap<String, &Record> = BTreeMap::new();
    for r in records {
        let key = header(r, "idempotency-key").unwrap();
        if let Some(first) = seen.get(&key) {
            assert_eq!(first.value, r.record.value, "{what}: {key} has two outputs");
        } else {
            seen.insert(key, &r.record);
        }
    }
    let got: BTreeMap<String, Vec<u8>> = by_key(records);
    assert_eq!(got.len(), clean.len(), "{what}: distinct outputs");
    assert!(
        got == *clean,
        "{what}: the outputs differ from a clean run's"
    );
}

/// One `tidewater run` of a scenario, as a child process.
struct HostProcess {
    env: Env,
    id: String,
    child: Option<KillOnDrop>,
    lines: Arc<Mutex<Vec<String>>>,
}

impl HostProcess {
    fn new(id: &str) -> Self {
        HostProcess {
            env: Env::new(),
            id: id.to_owned(),
            child: None,
            lines: Arc::default(),
        }
    }

    fn start(&mut self, config: &Path) {
        let mut child = self
            .env
            .cmd()
            .env(
                "TIDEWATER_LOG",
                "warn,tidewater::streams::kafka=info,tidewater::supervisor=info,tidewater::processing::pipeline=debug",
            )
            .args(["run", "--format", "json", "--host-id", &self.id, "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = self.lines.clone();
        lines.lock().unwrap().clear();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(l);
            }
        });
        self.child = Some(KillOnDrop(child));
    }

    fn count(&self, needle: &str) -> usize {
        self.count_all(&[needle])
    }

    /// Lines that contain every one of `needles`.
    fn count_all(&self, needles: &[&str]) -> usize {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    fn kill(&mut self) {
        let mut child = self.child.take().unwrap();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// SIGTERM, then the run's JSON summary.
    fn stop(&mut self) -> Value {
        let mut child = self.child.take().unwrap();
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
        let mut stdout = Vec::new();
        std::io::Read::read_to_end(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
        let status = child.wait().unwrap();
        serde_json::from_slice(&stdout).unwrap_or_else(|e| {
            panic!(
                "host {}: no summary ({e}), {status}; its log:\n{}",
                self.id,
                self.lines.lock().unwrap().join("\n")
            )
        })
    }
}

/// Offsets `group` committed in `topic` (partitions 0..PARTITIONS), summed.
fn committed(brokers: &str, group: &str, topic: &str) -> u64 {
    let consumer: BaseConsumer = KafkaConfig::new(brokers)
        .client_config()
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..PARTITIONS as i32 {
        tpl.add_partition(topic, p);
    }
    let got = consumer
        .committed_offsets(tpl, Duration::from_secs(30))
        .unwrap();
    got.elements()
        .iter()
        .map(|e| match e.offset() {
            Offset::Offset(o) => o.max(0) as u64,
            _ => 0,
        })
        .sum()
}

/// Whether `group` has processed every committed record of `topic`: a
/// read_committed reader placed at its committed offsets finds nothing.
fn drained(brokers: &str, group: &str, topic: &str) -> bool {
    let offsets: TopicPartitionList = {
        let c: BaseConsumer = KafkaConfig::new(brokers)
            .client_config()
            .set("group.id", group)
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS as i32 {
            tpl.add_partition(topic, p);
        }
        c.committed_offsets(tpl, Duration::from_secs(30)).unwrap()
    };
    let reader: BaseConsumer = KafkaConfig::new(brokers)
        .client_config()
        .set("group.id", "tidewater-test-drained")
        .set("enable.partition.eof", "true")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for e in offsets.elements() {
        let at = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        tpl.add_partition_offset(topic, e.partition(), at).unwrap();
    }
    drop(offsets);
    reader.assign(&tpl).unwrap();
    drop(tpl);
    let mut at_end = BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while at_end.len() < PARTITIONS as usize && Instant::now() < deadline {
        match reader.poll(Duration::from_millis(200)) {
            Some(Ok(_)) => return false,
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            _ => {}
        }
    }
    at_end.len() == PARTITIONS as usize
}

/// Waits until `ok` holds, up to `secs`; panics with `what` and the hosts' logs.
fn wait_until(what: &str, secs: u64, hosts: &[&HostProcess], mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !ok() {
        if Instant::now() > deadline {
            let logs: Vec<String> = hosts
                .iter()
                .map(|h| {
                    let lines = h.lines.lock().unwrap();
                    let tail: Vec<&String> = lines
                        .iter()
                        .filter(|l| !l.contains("batch committed"))
                        .rev()
                        .take(40)
                        .collect();
                    format!("== host {}\n{tail:#?}", h.id)
                })
                .collect();
            panic!("waited {secs} s for {what}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Produces `records` to `topic`, creating it with [`PARTITIONS`] first.
fn produce_input(brokers: &str, topic: &str, records: &[Record]) {
    let config = KafkaConfig::new(brokers);
    let topics = [(topic.to_owned(), Some(PARTITIONS))].into_iter().collect();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(tidewater::streams::kafka::ensure_topics(&config, &topics))
        .unwrap();
    let producer = tidewater::streams::kafka::producer(&config, None).unwrap();
    tidewater::streams::kafka::produce_all(
        &producer,
        records.iter().map(|r| (topic, r)),
        Duration::from_secs(120),
    )
    .unwrap();
}

fn scenario_config(dir: &Path, brokers: &str, tag: &str, exactly_once: bool) -> PathBuf {
    let text = demo_config_text()
        .replace("\"sensor-readings\"", &format!("\"{tag}-in\""))
        .replace("\"readings-enriched\"", &format!("\"{tag}-enriched\""))
        .replace("\"alerts\"", &format!("\"{tag}-alerts\""))
        .replace("name = \"enrich\"", &format!("name = \"enrich\"\ngroup = \"{tag}-enrich\"\ndead_letter_topic = \"{tag}-enrich.dlq\"\nexactly_once = {exactly_once}"))
        .replace("name = \"threshold\"", &format!("name = \"threshold\"\ngroup = \"{tag}-threshold\"\ndead_letter_topic = \"{tag}-threshold.dlq\"\nexactly_once = {exactly_once}"));
    let path = dir.join("scaleout.toml");
    std::fs::write(
        &path,
        format!(
            "{text}\n[kafka]\nbrokers = \"{brokers}\"\npartitions = {PARTITIONS}\ntransaction_timeout = \"5s\"\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n"
        ),
    )
    .unwrap();
    path
}

/// 3 hosts, one group per processor, 12 partitions: one host is SIGKILLed,
/// a fourth joins and leaves gracefully, the killed one comes back with its
/// redb deleted; the results equal a clean single host's.
fn three_hosts_through_a_kill_a_fourth_host_and_a_lost_redb(exactly_once: bool) {
    let Some(brokers) = broker() else { return };
    let clean = clean();
    let tag = unique(if exactly_once {
        "scale-eos"
    } else {
        "scale-alo"
    });
    let dir = tempfile::tempdir().unwrap();
    let config = scenario_config(dir.path(), &brokers, &tag, exactly_once);
    // The last TAIL records wait until h2 is back and has restored: the
    // others may drain the head while it restores, and the checks below
    // need events processed on h2 after its redb was lost.
    const TAIL: usize = 20_000;
    let (head, tail) = scale_records().split_at(scale_records().len() - TAIL);
    produce_input(&brokers, &format!("{tag}-in"), head);
    let total = scale_records().len() as u64;
    let (input, enriched) = (format!("{tag}-in"), format!("{tag}-enriched"));
    let enrich_group = format!("{tag}-enrich");
    let done = |share: u64| committed(&brokers, &enrich_group, &input) * 100 >= total * share;

    let mut hosts: Vec<HostProcess> = ["h1", "h2", "h3", "h4"]
        .into_iter()
        .map(HostProcess::new)
        .collect();
    for h in &mut hosts[..3] {
        h.start(&config);
    }
    wait_until("15% of the input processed", 240, &[&hosts[0]], || done(15));
    // h2 dies holding partitions; h1 and h3 take them over and restore them.
    hosts[1].kill();
    wait_until(
        "40% processed after the kill",
        240,
        &[&hosts[0], &hosts[2]],
        || done(40),
    );
    hosts[3].start(&config);
    wait_until(
        "the fourth host at work on both processors",
        120,
        &[&hosts[0], &hosts[2], &hosts[3]],
        // Both: the checks below need threshold's restores and events on h4.
        || {
            ["enrich", "threshold"]
                .iter()
                .all(|p| hosts[3].count_all(&["batch committed", &format!("processor={p}")]) >= 2)
        },
    );
    let fourth = hosts[3].stop();
    // h2 comes back with its redb deleted: it restores from the changelog alone.
    std::fs::remove_file(hosts[1].env.data_dir().join(tidewater::db::DB_FILE)).unwrap();
    hosts[1].start(&config);
    wait_until(
        "h2 back with partitions of both processors restored",
        120,
        &[&hosts[0], &hosts[1], &hosts[2]],
        || {
            ["enrich", "threshold"].iter().all(|p| {
                hosts[1].count_all(&["restored from the changelog", &format!("processor={p}")]) >= 1
            })
        },
    );
    produce_input(&brokers, &format!("{tag}-in"), tail);
    let threshold_group = format!("{tag}-threshold");
    wait_until(
        "both processors drained",
        300,
        &[&hosts[0], &hosts[1], &hosts[2]],
        || {
            drained(&brokers, &enrich_group, &input)
                && drained(&brokers, &threshold_group, &enriched)
        },
    );
    let summaries: Vec<Value> = [0, 1, 2].iter().map(|i| hosts[*i].stop()).collect();

    for (name, s) in [("h4", &fourth), ("h2 again", &summaries[1])] {
        let t = counters(s, "threshold");
        assert!(t["restores"].as_u64().unwrap() > 0, "{name}: {s}");
        assert!(
            t["events_in"].as_u64().unwrap() > 0,
            "{name} processed: {s}"
        );
    }
    assert!(
        counters(&summaries[1], "threshold")["restored_records"]
            .as_u64()
            .unwrap()
            > 0,
        "h2 restored state without its redb: {}",
        summaries[1]
    );
    let out = read_all(&brokers, &enriched);
    check_outputs(&out, &clean.enriched, "enriched");
    let alerts = read_all(&brokers, &format!("{tag}-alerts"));
    check_outputs(&alerts, &clean.alerts, "alerts");
    if exactly_once {
        assert_eq!(
            out.len(),
            distinct_keys(&out).len(),
            "no committed output twice"
        );
        assert_eq!(alerts.len(), distinct_keys(&alerts).len());
    }
    let state = state_in_changelog(&brokers, &format!("{tag}-threshold-changelog"));
    assert_eq!(state.len(), clean.state.len(), "threshold's state entries");
    assert!(
        state == clean.state,
        "threshold's per-device state differs from a clean run's:\n{}\nwhat moved on the hosts:\n{}",
        state_differences(&state, &clean.state),
        movements(&hosts)
    );
}

/// The lines of each host's log that say a partition moved or a batch was
/// not committed (at most 40 a host), for a failure to show what happened.
fn movements(hosts: &[HostProcess]) -> String {
    const MOVES: [&str; 6] = [
        "abandoned",
        "revoked",
        "restored from the changelog",
        "trying again",
        "cannot go on",
        "joining the group again",
    ];
    let mut out = String::new();
    for h in hosts {
        let lines = h.lines.lock().unwrap();
        let moved: Vec<&String> = lines
            .iter()
            .filter(|l| MOVES.iter().any(|m| l.contains(m)))
            .collect();
        out += &format!("{} ({} lines):\n", h.id, moved.len());
        for l in moved.iter().rev().take(40).rev() {
            out += l;
            out.push('\n');
        }
    }
    out
}

/// The entries of threshold's state that differ, at most 10, one a line:
/// `key: got <count, last, min, max, zone> want <…>` (the plugin's `Track`,
/// little-endian: a u64 count, three f64, a zone byte).
fn state_differences(
    got: &BTreeMap<Vec<u8>, Vec<u8>>,
    want: &BTreeMap<Vec<u8>, Vec<u8>>,
) -> String {
    let track = |b: &[u8]| -> String {
        let word = |i: usize| <[u8; 8]>::try_from(&b[i * 8..i * 8 + 8]).unwrap();
        format!(
            "<{}, {}, {}, {}, {}>",
            u64::from_le_bytes(word(0)),
            f64::from_le_bytes(word(1)),
            f64::from_le_bytes(word(2)),
            f64::from_le_bytes(word(3)),
            b[32]
        )
    };
    let differing: Vec<String> = want
        .iter()
        .filter(|(k, v)| got.get(*k) != Some(*v))
        .map(|(k, v)| {
            let got = got.get(k).map_or("nothing".to_owned(), |g| track(g));
            format!(
                "{}: got {got} want {}",
                String::from_utf8_lossy(k),
                track(v)
            )
        })
        .collect();
    format!(
        "{} differ; {}",
        differing.len(),
        differing[..differing.len().min(10)].join("\n")
    )
}

#[test]
fn three_hosts_share_a_processor_at_least_once() {
    three_hosts_through_a_kill_a_fourth_host_and_a_lost_redb(false);
}

#[test]
fn three_hosts_share_a_processor_exactly_once() {
    three_hosts_through_a_kill_a_fourth_host_and_a_lost_redb(true);
}

/// The rule a replay from a time starts by, the same on both logs:
/// timestamps 2, 4, 6, 8 at offsets 0–3 give T=3 → 1, T=5 → 2, T=8 → 3,
/// T=9 → the end (4).
#[test]
fn a_replay_from_a_time_starts_at_the_same_offset_on_both_logs() {
    let cases = [(3, 1), (5, 2), (8, 3), (9, 4), (0, 0)];
    let records: Vec<Record> = [2, 4, 6, 8]
        .into_iter()
        .map(|t| Record {
            timestamp_ms: t,
            value: Some(b"x".to_vec()),
            ..Record::default()
        })
        .collect();
    let env = Env::new();
    env.with_log(|log| {
        log.append("times", records.clone()).unwrap();
        for (t, want) in cases {
            let got = tidewater::streams::embedded::offset_for_time(log, "times", 0, t).unwrap();
            assert_eq!(got, want, "embedded log, T={t}");
        }
    });
    let Some(brokers) = broker() else { return };
    let config = KafkaConfig::new(&brokers);
    let topic = unique("times");
    let topics = [(topic.clone(), Some(1))].into_iter().collect();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(tidewater::streams::kafka::ensure_topics(&config, &topics))
        .unwrap();
    let producer = tidewater::streams::kafka::producer(&config, None).unwrap();
    tidewater::streams::kafka::produce_all(
        &producer,
        records.iter().map(|r| (topic.as_str(), r)),
        Duration::from_secs(30),
    )
    .unwrap();
    for (t, want) in cases {
        let got = tidewater::streams::kafka::offset_for_time(&config, &topic, 0, t).unwrap();
        assert_eq!(got, want, "Kafka, T={t}");
    }
}

/// A probe processor on a 1-partition Kafka topic, with the admin API, as
/// host `id` of group `tag`.
fn replay_host(brokers: &str, tag: &str, id: &str) -> (Env, Host) {
    let env = Env::new();
    let config = env.config(&format!(
        "[[processor]]\nname = \"probe\"\ngroup = \"{tag}\"\ncomponent = \"{}\"\ninputs = [\"{tag}-in\"]\noutput = \"{tag}-out\"\ndead_letter_topic = \"{tag}.dlq\"\nbatch.max_records = 128\n[kafka]\nbrokers = \"{brokers}\"\nhost_id = \"{id}\"\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n",
        plugin("probe").display()
    ));
    let host = Host::spawn(&env, &config);
    (env, host)
}

/// The embedded log's replay test (deploy.rs) on Kafka, with two hosts: the
/// requests go to the host that owns no partition, and the owner replays.
#[test]
fn replay_on_kafka_asked_of_any_host_counts_as_on_the_embedded_log() {
    const EVENTS: u64 = 1000;
    let Some(brokers) = broker() else { return };
    let tag = unique("replay");
    let config = KafkaConfig::new(&brokers);
    let topics = [(format!("{tag}-in"), Some(1))].into_iter().collect();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(tidewater::streams::kafka::ensure_topics(&config, &topics))
        .unwrap();
    let producer = tidewater::streams::kafka::producer(&config, None).unwrap();
    let input = format!("{tag}-in");
    let mut events = numbered(EVENTS as usize);
    // librdkafka stamps a record whose timestamp is 0 with the wall clock.
    events[0].timestamp_ms = 1;
    tidewater::streams::kafka::produce_all(
        &producer,
        events.iter().map(|r| (input.as_str(), r)),
        Duration::from_secs(30),
    )
    .unwrap();
    let (_env_a, owner) = replay_host(&brokers, &tag, "a");
    owner.wait_events("probe", EVENTS);
    let (_env_b, other) = replay_host(&brokers, &tag, "b");
    // b has joined (and got no partition: a keeps its only one).
    other.wait_for("probe", "b running", |p| p["state"] == "running");

    // From offset 400, same epoch: 600 duplicates, nothing new.
    let r = other.post("/v1/processors/probe/replay", json!({"from_offset": 400}));
    assert_eq!(r["epoch"], 0);
    let p = owner.wait_events("probe", EVENTS + 600);
    assert_eq!(
        (
            p["counters"]["duplicates"].as_u64(),
            p["counters"]["outputs"].as_u64()
        ),
        (Some(600), Some(EVENTS))
    );
    // From offset 900, reprocessed: 100 outputs again, in epoch 1.
    let r = other.post(
        "/v1/processors/probe/replay",
        json!({"from_offset": 900, "reprocess": true}),
    );
    assert_eq!(r["epoch"], 1);
    let p = owner.wait_events("probe", EVENTS + 700);
    assert_eq!(
        (
            p["counters"]["duplicates"].as_u64(),
            p["counters"]["outputs"].as_u64(),
        ),
        (Some(600), Some(EVENTS + 100))
    );
    // From a time (the event at 950 s), reprocessed: 50 more, in epoch 2.
    other.wait_for("probe", "b knows epoch 1", |p| p["epoch"] == 1);
    let r = other.post(
        "/v1/processors/probe/replay",
        json!({"from_time": "1970-01-01T00:15:50Z", "reprocess": true}),
    );
    assert_eq!(r["epoch"], 2);
    let p = owner.wait_events("probe", EVENTS + 750);
    assert_eq!(p["counters"]["outputs"], EVENTS + 150);
    assert_eq!(p["epoch"], 2, "the owner follows the group's epoch");
    // And the same time again without reprocessing: 50 duplicates of epoch 2.
    other.post(
        "/v1/processors/probe/replay",
        json!({"from_time": "1970-01-01T00:15:50Z"}),
    );
    let p = owner.wait_events("probe", EVENTS + 800);
    assert_eq!(
        (
            p["counters"]["duplicates"].as_u64(),
            p["counters"]["outputs"].as_u64()
        ),
        (Some(650), Some(EVENTS + 150))
    );
    // A replay never moves a partition forward.
    other.post("/v1/processors/probe/replay", json!({"from_offset": 5000}));
    other.wait_for("probe", "the request read", |p| {
        p["replays"].as_u64() >= Some(5)
    });
    drop(other.stop_child());
    drop(owner.stop_child());

    let out = read_all(&brokers, &format!("{tag}-out"));
    assert_eq!(out.len() as u64, EVENTS + 150);
    let again = &out[EVENTS as usize];
    assert_eq!(again.record.value, Some(b"e900".to_vec()));
    let in_key = format!("{tag}-in/0/900/probe/0");
    assert_eq!(
        header(&out[900], "idempotency-key").as_deref(),
        Some(in_key.as_str())
    );
    assert_eq!(
        header(again, "idempotency-key"),
        Some(format!("{in_key}#1"))
    );
    assert_eq!(header(again, "tidewater-upsert-key"), Some(in_key));
    assert_eq!(header(again, "tidewater-epoch").as_deref(), Some("1"));
    let last = out.last().unwrap();
    assert_eq!(last.record.value, Some(b"e999".to_vec()));
    assert_eq!(header(last, "tidewater-epoch").as_deref(), Some("2"));
}

/// A host SIGKILLed and started again with the same host id takes its
/// partitions back at once (static membership: no wait for the dead
/// member's session, here the default 45 s) and fences its previous run's
/// transaction; quick kills in a row do not stall it; no key is lost.
fn a_killed_host_restarted_resumes_within_seconds(exactly_once: bool) {
    let Some(brokers) = broker() else { return };
    let tag = unique(if exactly_once {
        "restart-eos"
    } else {
        "restart-alo"
    });
    let env = Env::new();
    env.produce_csv(&format!("{tag}-in"), &SMALL_DATA, Some(&brokers));
    let text = demo_config_text()
        .replace("\"sensor-readings\"", &format!("\"{tag}-in\""))
        .replace("\"readings-enriched\"", &format!("\"{tag}-enriched\""))
        .replace("\"alerts\"", &format!("\"{tag}-alerts\""))
        .replace("name = \"enrich\"", &format!("name = \"enrich\"\ngroup = \"{tag}-enrich\"\ndead_letter_topic = \"{tag}-enrich.dlq\"\nexactly_once = {exactly_once}\nbatch.max_records = 16"))
        .replace("name = \"threshold\"", &format!("name = \"threshold\"\ngroup = \"{tag}-threshold\"\ndead_letter_topic = \"{tag}-threshold.dlq\"\nexactly_once = {exactly_once}\nbatch.max_records = 16"));
    // The librdkafka defaults: a 45 s session.
    let config = env.config(&format!(
        "{text}\n[kafka]\nbrokers = \"{brokers}\"\nhost_id = \"r1\"\n"
    ));
    let mut host = HostProcess {
        env,
        id: "r1".into(),
        child: None,
        lines: Arc::default(),
    };
    for round in 0..4 {
        host.start(&config);
        let started = Instant::now();
        wait_until(
            &format!("round {round}: a batch committed"),
            40,
            &[&host],
            || host.count("batch committed") >= 2,
        );
        let took = started.elapsed();
        assert!(
            took < Duration::from_secs(30),
            "round {round}: the restarted host committed nothing for {took:?} (the dead member's session is 45 s)"
        );
        host.kill();
    }
    // Then a run to the end: every key once, no state applied twice.
    let summary = host.env.run(&config);
    assert!(
        counters(&summary, "enrich")["events_in"].as_u64().unwrap() > 0,
        "{summary}"
    );
    let enriched = read_all(&brokers, &format!("{tag}-enriched"));
    assert_eq!(distinct_keys(&enriched).len(), 1268 + 509);
    if exactly_once {
        assert_eq!(enriched.len(), 1268 + 509, "no committed output twice");
    }
}

#[test]
fn a_killed_host_restarted_resumes_within_seconds_at_least_once() {
    a_killed_host_restarted_resumes_within_seconds(false);
}

#[test]
fn a_killed_host_restarted_resumes_within_seconds_exactly_once() {
    a_killed_host_restarted_resumes_within_seconds(true);
}
