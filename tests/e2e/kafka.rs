//! The pipeline through a real Apache Kafka broker (KRaft, on 127.0.0.1).
//!
//! `make test` starts the broker (`kafka/kafka.sh up`) and requires it
//! (TIDEWATER_REQUIRE_KAFKA=1). A plain `cargo test` without a broker skips
//! these tests and says so.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tidewater::streams::LogRecord;
use tidewater::streams::kafka::KafkaConfig;

use crate::common::*;

/// The shared broker, or `None` (and a note) when there is none and none is required.
pub(crate) fn broker() -> Option<String> {
    if let Ok(b) = std::env::var("TIDEWATER_TEST_BROKERS") {
        return Some(b);
    }
    let file = root().join("target/kafka/bootstrap");
    let up = std::fs::read_to_string(&file)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|addr| std::net::TcpStream::connect(addr).is_ok());
    if up.is_none() {
        assert!(
            std::env::var("TIDEWATER_REQUIRE_KAFKA").is_err(),
            "TIDEWATER_REQUIRE_KAFKA is set but no broker answers at {} (run `make kafka-up`)",
            file.display()
        );
        eprintln!(
            "skipped: no Kafka broker (run `make kafka-up`, or `make test` which starts one)"
        );
    }
    up
}

/// A name no other test uses on the shared broker.
pub(crate) fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Every record of `topic`, as read_committed consumers see them.
pub(crate) fn read_all(brokers: &str, topic: &str) -> Vec<LogRecord> {
    let mut out = Vec::new();
    tidewater::streams::kafka::read_topic(&KafkaConfig::new(brokers), topic, None, 0, |r| {
        out.push(r.clone());
        true
    })
    .unwrap();
    out
}

pub fn distinct_keys(records: &[LogRecord]) -> BTreeSet<String> {
    records
        .iter()
        .map(|r| header(r, "idempotency-key").unwrap())
        .collect()
}

/// The demo's processors on topics and groups of their own (`tag`), with
/// `extra` added to each processor section.
pub fn demo_config(env: &Env, brokers: &str, tag: &str, extra: &str) -> PathBuf {
    let text = demo_config_text()
        .replace("\"sensor-readings\"", &format!("\"{tag}-in\""))
        .replace("\"readings-enriched\"", &format!("\"{tag}-enriched\""))
        .replace("\"alerts\"", &format!("\"{tag}-alerts\""))
        .replace("name = \"enrich\"", &format!("name = \"enrich\"\ngroup = \"{tag}-enrich\"\ndead_letter_topic = \"{tag}-enrich.dlq\"\n{extra}"))
        .replace("name = \"threshold\"", &format!("name = \"threshold\"\ngroup = \"{tag}-threshold\"\ndead_letter_topic = \"{tag}-threshold.dlq\"\n{extra}"));
    env.config(&format!(
        "{text}\n[kafka]\nbrokers = \"{brokers}\"\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"500\"\n"
    ))
}

#[test]
fn real_data_through_kafka_at_least_once_and_exactly_once() {
    let Some(brokers) = broker() else { return };
    for exactly_once in [false, true] {
        let env = Env::new();
        let tag = unique(if exactly_once { "eos" } else { "alo" });
        env.produce_csv(&format!("{tag}-in"), &ALL_DATA, Some(&brokers));
        let config = demo_config(
            &env,
            &brokers,
            &tag,
            &format!("exactly_once = {exactly_once}"),
        );
        let summary = env.run(&config);
        let enrich = counters(&summary, "enrich");
        assert_eq!(enrich["outputs"], 73_280, "{summary}");
        assert_eq!(enrich["conflicts"], 4);
        let enriched = read_all(&brokers, &format!("{tag}-enriched"));
        assert_eq!(distinct_keys(&enriched).len(), 73_280);
        if exactly_once {
            assert_eq!(enriched.len(), 73_280, "committed records, read_committed");
        }
        assert_eq!(counters(&summary, "threshold")["events_in"], enriched.len());
        assert_eq!(read_all(&brokers, &format!("{tag}-enrich.dlq")).len(), 4);
    }
}

#[test]
fn two_processors_on_one_input_with_their_own_groups_each_see_every_event() {
    let Some(brokers) = broker() else { return };
    let env = Env::new();
    let tag = unique("groups");
    let probe = plugin("probe");
    let mut config = String::new();
    for name in ["a", "b"] {
        config += &format!(
            "[[processor]]\nname = \"{name}\"\ngroup = \"{tag}-{name}\"\ncomponent = \"{}\"\ninputs = [\"{tag}-in\"]\noutput = \"{tag}-out-{name}\"\ndead_letter_topic = \"{tag}-{name}.dlq\"\n\n",
            probe.display()
        );
    }
    config += &format!("[kafka]\nbrokers = \"{brokers}\"\npartitions = 3\n");
    let config = env.config(&config);
    let records: Vec<_> = (0..500).map(|i| value(format!("event {i}"))).collect();
    let topics = [(format!("{tag}-in"), Some(3))].into_iter().collect();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(tidewater::streams::kafka::ensure_topics(
            &KafkaConfig::new(&brokers),
            &topics,
        ))
        .unwrap();
    let producer = tidewater::streams::kafka::producer(&KafkaConfig::new(&brokers), None).unwrap();
    let topic = format!("{tag}-in");
    tidewater::streams::kafka::produce_all(
        &producer,
        records.iter().map(|r| (topic.as_str(), r)),
        std::time::Duration::from_secs(30),
    )
    .unwrap();
    drop(producer);
    let summary = env.run(&config);
    for name in ["a", "b"] {
        assert_eq!(
            counters(&summary, name)["outputs"],
            500,
            "{name}: {summary}"
        );
        let out: BTreeSet<Vec<u8>> = read_all(&brokers, &format!("{tag}-out-{name}"))
            .into_iter()
            .map(|r| r.record.value.unwrap())
            .collect();
        assert_eq!(out.len(), 500);
    }
}

#[test]
fn a_missing_topic_is_an_error_when_creation_is_off() {
    let Some(brokers) = broker() else { return };
    let env = Env::new();
    let tag = unique("missing");
    let config = env.config(&format!(
        "[[processor]]\nname = \"p\"\ncomponent = \"{}\"\ninputs = [\"{tag}-in\"]\noutput = \"{tag}-out\"\n[kafka]\nbrokers = \"{brokers}\"\ncreate_topics = false\n",
        plugin("probe").display()
    ));
    let out = env
        .cmd()
        .args(["run", "--until-idle", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("topic \"{tag}-")), "{err}");
    assert!(
        err.contains("does not exist on the broker and [kafka] create_topics is false"),
        "{err}"
    );
}

/// Starts `run` and SIGKILLs it right after its stderr showed `line` `n` times.
fn kill_after(env: &Env, config: &Path, line: &str, n: usize) -> bool {
    let mut child = env
        .cmd()
        .env(
            "TIDEWATER_LOG",
            "tidewater::processing::pipeline=debug,tidewater::streams::kafka=debug,warn",
        )
        .args(["run", "--until-idle", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut seen = 0;
    for l in BufReader::new(child.stderr.take().unwrap()).lines() {
        if l.unwrap().contains(line) {
            seen += 1;
            if seen == n {
                child.kill().unwrap();
                break;
            }
        }
    }
    child.wait().unwrap();
    seen == n
}

/// threshold's state: per device and measurement, the count of readings
/// (from every input partition's scope the host caches).
fn threshold_state(env: &Env) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut state: Vec<(Vec<u8>, Vec<u8>)> = env.with_log(|log| {
        tidewater::processing::state::dump_partitions(log.db(), "threshold")
            .unwrap()
            .into_iter()
            .map(|(_, k, v)| (k, v))
            .collect()
    });
    state.sort();
    assert!(!state.is_empty(), "threshold has state");
    state
}

#[test]
fn sigkill_at_five_points_loses_no_key_and_applies_no_state_twice() {
    let Some(brokers) = broker() else { return };
    for exactly_once in [false, true] {
        let clean = Env::new();
        let tag = unique("clean");
        clean.produce_csv(&format!("{tag}-in"), &SMALL_DATA, Some(&brokers));
        let extra = format!("batch.max_records = 16\nexactly_once = {exactly_once}");
        clean.run(&demo_config(&clean, &brokers, &tag, &extra));
        let clean_keys = distinct_keys(&read_all(&brokers, &format!("{tag}-enriched")));
        let clean_alerts = distinct_keys(&read_all(&brokers, &format!("{tag}-alerts")));
        assert_eq!(clean_keys.len(), 1268 + 509);

        let env = Env::new();
        let tag = unique("killed");
        env.produce_csv(&format!("{tag}-in"), &SMALL_DATA, Some(&brokers));
        let config = demo_config(&env, &brokers, &tag, &extra);
        let mut kills = 0;
        for (line, n) in [
            ("calling the component", 3),
            ("batch committed", 4),
            ("outputs acknowledged", 6),
            ("offsets committed", 9),
            ("batch committed", 15),
        ] {
            kills += usize::from(kill_after(&env, &config, line, n));
        }
        assert!(kills >= 4, "only {kills} of 5 runs were killed mid-way");
        env.run(&config);
        let enriched = read_all(&brokers, &format!("{tag}-enriched"));
        assert_eq!(
            distinct_keys(&enriched),
            clean_keys,
            "exactly_once = {exactly_once}"
        );
        if exactly_once {
            assert_eq!(
                enriched.len(),
                clean_keys.len(),
                "no committed output twice"
            );
        }
        assert_eq!(
            distinct_keys(&read_all(&brokers, &format!("{tag}-alerts"))),
            clean_alerts
        );
        assert_eq!(
            threshold_state(&env),
            threshold_state(&clean),
            "exactly_once = {exactly_once}"
        );
    }
}

/// A broker of the test's own, so restarting it disturbs no other test.
struct OwnBroker {
    dir: tempfile::TempDir,
}

impl OwnBroker {
    fn start() -> (Self, String) {
        let dir = tempfile::tempdir().unwrap();
        let b = OwnBroker { dir };
        let addr = b.script("up");
        (b, addr)
    }

    fn script(&self, verb: &str) -> String {
        let out = Command::new(root().join("kafka/kafka.sh"))
            .arg(verb)
            .env("KAFKA_DIR", self.dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "kafka.sh {verb}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        let _ = Command::new(root().join("kafka/kafka.sh"))
            .arg("down")
            .env("KAFKA_DIR", self.dir.path())
            .output();
    }
}

/// How long the host may take to commit its first batches, and then to
/// finish after the broker restart, before the test fails (and kills it).
const RESTART_START: Duration = Duration::from_secs(180);
const RESTART_FINISH: Duration = Duration::from_secs(300);

#[test]
fn the_host_rides_out_a_broker_restart() {
    if broker().is_none() {
        return;
    }
    let (own, brokers) = OwnBroker::start();
    let env = Env::new();
    let tag = unique("restart");
    env.produce_csv(&format!("{tag}-in"), &SMALL_DATA, Some(&brokers));
    let config = demo_config(&env, &brokers, &tag, "batch.max_records = 16");
    let mut child = KillOnDrop(
        env.cmd()
            .env(
                "TIDEWATER_LOG",
                "tidewater::processing::pipeline=debug,tidewater::streams::kafka=info,tidewater::supervisor=info,warn",
            )
            .args(["run", "--until-idle", "--format", "json", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let log = LogLines::follow(child.stderr.take().unwrap());
    let stdout = child.stdout.take().unwrap();
    let summary_text = std::thread::spawn(move || std::io::read_to_string(stdout).unwrap());
    assert!(
        log.wait_for("batch committed", 10, RESTART_START),
        "the host did not commit 10 batches within {RESTART_START:?} of its start; its log:\n{}",
        log.tail(60)
    );
    own.script("restart");
    let restarted = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if restarted.elapsed() >= RESTART_FINISH {
            panic!(
                "the host did not drain its inputs within {RESTART_FINISH:?} of the broker's restart \
                 (batches committed: {} of enrich, {} of threshold); its log but the batches:\n{}\n\
                 its threads now:\n{}",
                log.count_all(&["batch committed", "processor=enrich"]),
                log.count_all(&["batch committed", "processor=threshold"]),
                log.tail(80),
                backtraces(child.id())
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let summary_text = summary_text.join().unwrap();
    assert!(
        status.success(),
        "{status}: {summary_text}\n{}",
        log.tail(60)
    );
    let summary: serde_json::Value = serde_json::from_str(&summary_text).unwrap();
    let enriched = read_all(&brokers, &format!("{tag}-enriched"));
    assert_eq!(distinct_keys(&enriched).len(), 1268 + 509, "{summary}");
}

/// Every thread's stack of process `pid`, by gdb when it is installed
/// (for a test that fails because the process hangs), else why not.
fn backtraces(pid: u32) -> String {
    let out = Command::new("gdb")
        .args([
            "-batch",
            "-p",
            &pid.to_string(),
            "-ex",
            "thread apply all bt 30",
        ])
        .output();
    match out {
        Ok(o) => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| l.starts_with('#') || l.starts_with("Thread "))
            .collect::<Vec<_>>()
            .join("\n"),
        Err(e) => format!("(no gdb: {e})"),
    }
}

/// A child's stderr, read line by line on a thread of its own (so the
/// child never blocks on it), for waits with a deadline.
struct LogLines {
    lines: Arc<(Mutex<Vec<String>>, Condvar)>,
}

impl LogLines {
    fn follow(stderr: std::process::ChildStderr) -> Self {
        let lines: Arc<(Mutex<Vec<String>>, Condvar)> = Arc::default();
        let shared = lines.clone();
        std::thread::spawn(move || {
            for l in BufReader::new(stderr).lines().map_while(Result::ok) {
                shared.0.lock().unwrap().push(l);
                shared.1.notify_all();
            }
        });
        LogLines { lines }
    }

    /// Lines that contain every one of `needles`.
    fn count_all(&self, needles: &[&str]) -> usize {
        let lines = self.lines.0.lock().unwrap();
        lines
            .iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .count()
    }

    /// Waits until `needle` has appeared `n` times, up to `timeout`;
    /// returns whether it did.
    fn wait_for(&self, needle: &str, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut lines = self.lines.0.lock().unwrap();
        loop {
            if lines.iter().filter(|l| l.contains(needle)).count() >= n {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            lines = self.lines.1.wait_timeout(lines, left).unwrap().0;
        }
    }

    /// The last `n` lines that are neither "batch committed" nor "calling
    /// the component" (which say only that batches go through).
    fn tail(&self, n: usize) -> String {
        let lines = self.lines.0.lock().unwrap();
        let mut tail: Vec<&str> = lines
            .iter()
            .rev()
            .filter(|l| !l.contains("batch committed") && !l.contains("calling the component"))
            .take(n)
            .map(String::as_str)
            .collect();
        tail.reverse();
        tail.join("\n")
    }
}

#[test]
fn store_and_forward_keeps_events_while_kafka_is_down_and_ships_them_when_it_returns() {
    if broker().is_none() {
        return;
    }
    let (own, brokers) = OwnBroker::start();
    own.script("down");
    let env = Env::new();
    let tag = unique("edge");
    // 10,000 readings, each with a distinct value.
    let csv = env.dir.path().join("edge.csv");
    let mut text = String::from("time,v\n");
    for i in 0..10_000 {
        text += &format!("2024-01-01T00:00:00Z,{i}\n");
    }
    std::fs::write(&csv, text).unwrap();

    let forward = || {
        env.cmd()
            .env("TIDEWATER_LOG", "tidewater=info")
            .args([
                "forward",
                "--from",
                "edge",
                "--to-kafka",
                &brokers,
                "--topic",
                &tag,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut child = forward();
    let stderr = child.stderr.take().unwrap();
    let log_lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    // Kafka is down: the edge keeps storing, in chunks that take turns with forward.
    let out = env
        .cmd()
        .args([
            "produce",
            "edge",
            "--partitions",
            "2",
            "--chunk",
            "500",
            "--device",
            "d",
            "--time-column",
            "time",
            "--csv",
        ])
        .arg(&csv)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    own.script("up");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let mut arrived = Vec::new();
    while std::time::Instant::now() < deadline {
        // Right after its restart the broker may still be electing leaders.
        let mut read = Vec::new();
        let ok = tidewater::streams::kafka::read_topic(
            &KafkaConfig::new(&brokers),
            &tag,
            None,
            0,
            |r| {
                read.push(r.clone());
                true
            },
        );
        if ok.is_err() {
            std::thread::sleep(std::time::Duration::from_millis(500));
            continue;
        }
        arrived = read;
        let distinct: BTreeSet<_> = arrived.iter().map(|r| r.record.value.clone()).collect();
        if distinct.len() == 10_000 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    assert!(child.wait().unwrap().success());
    let lines = log_lines.join().unwrap();
    assert!(
        lines.iter().any(|l| l.contains("WARN")
            && (l.contains("stored locally") || l.contains("Connection refused"))),
        "forward said nothing about the outage: {lines:?}"
    );
    // Every event arrived; a copy sent twice is identical, key and headers included.
    let mut by_value: std::collections::BTreeMap<Vec<u8>, &LogRecord> =
        std::collections::BTreeMap::new();
    for r in &arrived {
        let v = r.record.value.clone().unwrap();
        if let Some(first) = by_value.get(&v) {
            assert_eq!(first.record, r.record);
        } else {
            by_value.insert(v, r);
        }
    }
    assert_eq!(by_value.len(), 10_000);
    assert_eq!(arrived[0].record.key.as_deref(), Some(&b"d"[..]));

    // It resumes where it stopped: nothing is sent again.
    let out = env
        .cmd()
        .args([
            "forward",
            "--until-idle",
            "--from",
            "edge",
            "--to-kafka",
            &brokers,
            "--topic",
            &tag,
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("forwarded 0 records"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Records sorted by their `idempotency-key` header, for comparing topics
/// whose partitions interleave differently.
fn by_idempotency_key(mut records: Vec<LogRecord>) -> Vec<tidewater::streams::Record> {
    records.sort_by_key(|r| header(r, "idempotency-key"));
    records.into_iter().map(|r| r.record).collect()
}

#[test]
fn a_forward_section_in_run_ships_outputs_to_kafka_byte_for_byte_and_resumes() {
    let Some(brokers) = broker() else { return };
    let env = Env::new();
    let tag = unique("fwd");
    let config = env.config(&format!(
        "{}\n[[forward]]\nfrom = \"readings-enriched\"\ntopic = \"{tag}-enriched\"\nbatch = 300\nkafka.brokers = \"{brokers}\"\n\n[[forward]]\nfrom = \"alerts\"\ntopic = \"{tag}-alerts\"\n[forward.kafka]\nbrokers = \"{brokers}\"\n",
        demo_config_text()
    ));
    let forwarded = |summary: &serde_json::Value, i: usize| {
        let f = &summary["forwards"][i];
        assert_eq!(f["status"], "stopped", "{summary}");
        f["records"].as_u64().unwrap()
    };
    // First the flowmeter alone, then the office sensors too: the second run
    // ships only what the first did not.
    env.produce_csv("sensor-readings", &SMALL_DATA[..1], None);
    let first = env.run(&config);
    assert_eq!(counters(&first, "enrich")["outputs"], 1268, "{first}");
    assert_eq!(forwarded(&first, 0), 1268);
    let alerts_first = env.records("alerts").len() as u64;
    assert_eq!(forwarded(&first, 1), alerts_first);

    env.produce_csv("sensor-readings", &SMALL_DATA[1..], None);
    let second = env.run(&config);
    assert_eq!(counters(&second, "enrich")["outputs"], 509, "{second}");
    assert_eq!(forwarded(&second, 0), 509);
    let alerts = env.records("alerts");
    assert_eq!(forwarded(&second, 1), alerts.len() as u64 - alerts_first);

    // Kafka holds exactly what the embedded log holds: keys, values,
    // headers and timestamps, each record once.
    let local = env.records("readings-enriched");
    assert_eq!(local.len(), 1268 + 509);
    let remote = read_all(&brokers, &format!("{tag}-enriched"));
    assert_eq!(by_idempotency_key(remote), by_idempotency_key(local));
    let remote_alerts = read_all(&brokers, &format!("{tag}-alerts"));
    assert_eq!(
        by_idempotency_key(remote_alerts),
        by_idempotency_key(alerts)
    );
}

#[test]
fn a_broker_that_stays_away_fails_the_processor_within_the_flush_timeout() {
    if broker().is_none() {
        return;
    }
    let (own, brokers) = OwnBroker::start();
    let env = Env::new();
    let tag = unique("gone");
    env.produce_csv(&format!("{tag}-in"), &ALL_DATA, Some(&brokers));
    let text = std::fs::read_to_string(demo_config(&env, &brokers, &tag, "batch.max_records = 16"))
        .unwrap()
        .replace("[kafka]\n", "[kafka]\nflush_timeout = \"5s\"\n");
    let config = env.config(&text);
    let mut child = KillOnDrop(
        env.cmd()
            .env(
                "TIDEWATER_LOG",
                "tidewater::processing::pipeline=debug,tidewater::supervisor=error",
            )
            .args(["run", "--format", "json", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = std::sync::mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for l in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let seen = std::cell::RefCell::new(Vec::new());
    let wait_for = |needle: &str, secs: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while let Ok(l) =
            rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
        {
            let found = l.contains(needle);
            seen.borrow_mut().push(l);
            if found {
                return true;
            }
        }
        false
    };
    assert!(wait_for("batch committed", 60));
    own.script("down");
    // enrich cannot publish: it fails once flush_timeout has passed, and does not hang.
    assert!(
        wait_for("processor stopped; the others go on", 90),
        "enrich did not fail within 90 s; the log's last lines:\n{}",
        seen.borrow()[seen.borrow().len().saturating_sub(30)..].join("\n")
    );
    // And the run still stops when asked.
    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "run ignored SIGTERM for 60 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let mut stdout = Vec::new();
    std::io::Read::read_to_end(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
    let summary: serde_json::Value = serde_json::from_slice(&stdout).unwrap();
    let status = summary["processors"][0]["status"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(status.starts_with("failed: stream: "), "{status}");
}

/// A child process that is killed if the test ends (or fails) before it does.
pub struct KillOnDrop(pub std::process::Child);

impl std::ops::Deref for KillOnDrop {
    type Target = std::process::Child;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
