//! Kafka end to end, every contender on the same topic of the same local
//! broker in one run, one pass each (events/s; ratios are what to compare on
//! a shared machine):
//!
//! - **tidewater**, at-least-once and `exactly_once`: consume → the Rust
//!   `enrich` component (target/plugins/enrich.wasm) → dedupe on
//!   `json:/device,/ts` → produce, through [`Pipeline`] and
//!   [`KafkaStream`] as `tidewater run` uses them, batches of 1,024 with
//!   their commits (changelog, offsets, redb; in at-least-once mode the
//!   outputs acknowledged before the transaction).
//! - **raw copy**, the ceiling: an rdkafka consumer → idempotent producer
//!   (`acks=all`), no processing, that never waits: offsets are committed
//!   asynchronously every 1,024 records without waiting for the outputs'
//!   acknowledgements, and the producer is flushed once at the end (so it is
//!   not a safe copy; it is what the broker and the clients can do).
//! - **Kafka Streams** (`exactly_once_v2`), the enrich and the enrich with a
//!   RocksDB dedupe step, from the peer harness (`../shared/peers/kstreams`,
//!   or `TIDEWATER_KSTREAMS_PEER`), copied into target/kstreams-peer and built
//!   with Maven if Java and Maven are there; else this says why and reports
//!   them as null.
//!
//! Each rate runs from the first record the contender sees to the commit
//! that covers the last one, as the peer measures its own: group joins,
//! topic creation and JVM start are outside it.
//!
//! The input is the peer's `input.jsonl` (the 73,284 readings of data/, every
//! cell a string, key = device; made by its make-input.py), else the same
//! four data sets through tidewater's own CSV reader. Needs a broker: `make
//! bench` starts one (its address is in target/kafka/bootstrap); without one
//! this says so and measures nothing. Prints a table and writes
//! target/bench-kafka.json.
#![allow(missing_docs, reason = "a bench binary")]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use redb::WriteTransaction;
use serde_json::{Value, json};
use tidewater::processing::changes::PartitionStore;
use tidewater::processing::{Pipeline, Settings, WasmHandler};
use tidewater::runtime::{Limits, Runtime};
use tidewater::streams::kafka::{Client, KafkaConfig, KafkaStream, StreamSetup};
use tidewater::streams::{
    Batch, PartitionReplay, Record, ReplayFrom, Restored, Rewound, Source, StreamError,
};

mod support;
use support::root;

/// Records per batch, tidewater's default (`batch.max_records`).
const BATCH: usize = 1024;

fn brokers() -> Option<String> {
    let addr = std::fs::read_to_string(root().join("target/kafka/bootstrap")).ok()?;
    let addr = addr.trim().to_owned();
    std::net::TcpStream::connect(&addr).ok().map(|_| addr)
}

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("bench-{prefix}-{n}")
}

fn topics(config: &KafkaConfig, names: &[&str]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(tidewater::streams::kafka::ensure_topics(
        config,
        &names.iter().map(|t| ((*t).to_owned(), Some(1))).collect(),
    ))
    .unwrap();
}

/// The peer harness in target/kstreams-peer: copied there and built when
/// it is not yet. `Err` says why it cannot run.
struct Peer {
    dir: PathBuf,
}

fn succeeds(cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let tail: Vec<&str> = err.lines().rev().take(5).collect();
    Err(format!(
        "{cmd:?} failed ({}): {}",
        out.status,
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    ))
}

impl Peer {
    /// Copies the harness into target/kstreams-peer if it is not there.
    fn copy() -> Result<PathBuf, String> {
        let dir = root().join("target/kstreams-peer");
        if dir.join("run.sh").exists() {
            return Ok(dir);
        }
        let src = std::env::var_os("TIDEWATER_KSTREAMS_PEER")
            .map(PathBuf::from)
            .unwrap_or_else(|| root().join("../shared/peers/kstreams"));
        if !src.join("run.sh").exists() {
            return Err(format!(
                "no Kafka Streams peer at {} (set TIDEWATER_KSTREAMS_PEER)",
                src.display()
            ));
        }
        succeeds(Command::new("cp").arg("-r").arg(&src).arg(&dir))?;
        Ok(dir)
    }

    /// Builds the peer's jar with Maven unless it is built.
    fn build(dir: &Path) -> Result<Peer, String> {
        if !dir.join("target/kstreams-peer.jar").exists() {
            succeeds(Command::new("java").arg("-version")).map_err(|e| format!("no Java: {e}"))?;
            eprintln!("kafka bench: building the Kafka Streams peer with Maven");
            succeeds(
                Command::new("mvn")
                    .args(["-q", "-B", "-DskipTests", "package"])
                    .current_dir(dir),
            )
            .map_err(|e| format!("the peer's Maven build failed: {e}"))?;
        }
        Ok(Peer {
            dir: dir.to_owned(),
        })
    }

    /// Runs `run.sh` for the enrich and the dedupe-enrich modes on `topic`
    /// (which holds `n` records); events/s of each, by mode.
    fn run(&self, brokers: &str, topic: &str, n: usize) -> Result<(f64, f64), String> {
        let out = Command::new("./run.sh")
            .args([brokers, topic, &n.to_string()])
            .env("MODES", "enrich dedupe")
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("run.sh: {e}"))?;
        if !out.status.success() {
            return Err(format!("run.sh failed ({})", out.status));
        }
        let mut rates = (None, None);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            let rate = v["events_per_s"].as_f64();
            eprintln!(
                "kafka bench: {} wrote {} records, dead-lettered {}",
                v["mode"], v["output_records"], v["dlq_records"]
            );
            match v["mode"].as_str() {
                Some("kstreams-eos-enrich") => rates.0 = rate,
                Some("kstreams-eos-dedupe-enrich") => rates.1 = rate,
                _ => {}
            }
        }
        match rates {
            (Some(a), Some(b)) => Ok((a, b)),
            _ => Err("run.sh printed no rate for a mode".into()),
        }
    }
}

/// The input: (key, value) per record, and where it came from.
fn input(peer_dir: Option<&Path>) -> (Vec<Record>, String) {
    if let Some(dir) = peer_dir {
        let file = dir.join("input.jsonl");
        if !file.exists() {
            let made = succeeds(
                Command::new("python3")
                    .arg(dir.join("make-input.py"))
                    .arg(root().join("data"))
                    .arg(&file),
            );
            if let Err(e) = made {
                eprintln!("kafka bench: cannot make the peer's input.jsonl: {e}");
            }
        }
        if let Ok(text) = std::fs::read_to_string(&file) {
            let records = text
                .lines()
                .map(|line| {
                    let v: Value = serde_json::from_str(line).expect("input.jsonl is JSON lines");
                    Record {
                        timestamp_ms: 0,
                        key: v["device"].as_str().map(|d| d.as_bytes().to_vec()),
                        value: Some(line.as_bytes().to_vec()),
                        headers: Vec::new(),
                    }
                })
                .collect();
            return (records, format!("{}", file.display()));
        }
    }
    let mut records = Vec::new();
    for (file, device, time_column) in [
        ("sea_surface_temperature.csv.gz", "buoy-b01", "time (UTC)"),
        ("water-flow.csv", "flow-1", "Time"),
        ("occupancy.csv", "room-1", "time"),
        ("CGM.csv.gz", "cgm-1", "datetime"),
    ] {
        let data = std::fs::File::open(root().join("data").join(file)).expect("data file");
        let options = tidewater::streams::ingest::CsvOptions {
            device: device.into(),
            time_column: time_column.into(),
        };
        tidewater::streams::ingest::read_csv(data, &options, |r| records.extend(r.ok()))
            .expect("csv");
    }
    (records, "data/ through tidewater's CSV reader".into())
}

fn fill(config: &KafkaConfig, topic: &str, data: &[Record]) {
    topics(config, &[topic]);
    let p = tidewater::streams::kafka::producer(config, None).unwrap();
    tidewater::streams::kafka::produce_all(
        &p,
        data.iter().map(|r| (topic, r)),
        Duration::from_secs(120),
    )
    .unwrap();
}

/// A [`Source`] that notes when it first returns a record.
struct Timed {
    inner: Box<dyn Source>,
    first: Arc<OnceLock<Instant>>,
}

impl Source for Timed {
    fn poll(&mut self, max_records: usize, max_bytes: usize) -> Result<Option<Batch>, StreamError> {
        let b = self.inner.poll(max_records, max_bytes)?;
        if b.as_ref().is_some_and(|b| !b.records.is_empty()) {
            self.first.get_or_init(Instant::now);
        }
        Ok(b)
    }
    fn commit_in(&mut self, txn: &WriteTransaction, batch: &Batch) -> Result<(), StreamError> {
        self.inner.commit_in(txn, batch)
    }
    fn committed(&mut self, batch: &Batch) -> Result<(), StreamError> {
        self.inner.committed(batch)
    }
    fn caught_up(&self) -> bool {
        self.inner.caught_up()
    }
    fn rewind(&mut self, from: ReplayFrom, epoch: u64) -> Result<Rewound, StreamError> {
        self.inner.rewind(from, epoch)
    }
    fn partition_scope(&self, topic: &str, partition: u32) -> Option<PartitionReplay> {
        self.inner.partition_scope(topic, partition)
    }
    fn group_epoch(&self) -> Option<u64> {
        self.inner.group_epoch()
    }
    fn take_restored(&mut self) -> Option<Restored> {
        self.inner.take_restored()
    }
}

/// tidewater on `input` (`n` records): events/s from its first record to
/// the commit of its last batch.
fn tidewater_once(
    config: &KafkaConfig,
    runtime: &Arc<Runtime>,
    component: &Arc<tidewater::runtime::LoadedComponent>,
    input: &str,
    n: usize,
    exactly_once: bool,
) -> f64 {
    let dir = support::scratch_dir();
    let db = tidewater::db::open(dir.path()).unwrap();
    let name: Arc<str> = "enrich".into();
    let group = unique("group");
    let (changelog, replays) = (format!("{group}-changelog"), format!("{group}-replays"));
    let rt = tokio::runtime::Runtime::new().unwrap();
    for t in [&changelog, &replays] {
        rt.block_on(tidewater::streams::kafka::ensure_compacted(config, t, 1))
            .unwrap();
    }
    let setup = StreamSetup {
        processor: name.clone(),
        group: &group,
        inputs: &[input.to_owned()],
        exactly_once,
        changelog_topic: changelog,
        replays_topic: replays,
        host_id: "bench",
        db: db.clone(),
        store: PartitionStore::new(name.clone()),
        restore_lag: Arc::default(),
    };
    let stream = KafkaStream::connect(config, setup).unwrap();
    let settings = Settings {
        name: name.clone(),
        output: unique("out"),
        dead_letter_topic: unique("dlq"),
        max_batch_records: BATCH,
        max_batch_bytes: 16 << 20,
        key_mode: "json:/device,/ts".parse().unwrap(),
        key_ttl: Duration::from_secs(7 * 86_400),
        unkeyed: tidewater::config::Unkeyed::DeadLetter,
        transient_retries: 0,
        retry_backoff: Duration::ZERO,
        deduplicate: true,
        on_error: tidewater::config::OnError::DeadLetter,
    };
    topics(config, &[&settings.output, &settings.dead_letter_topic]);
    let handler = WasmHandler::new(
        runtime.clone(),
        component.clone(),
        name,
        Limits::default(),
        Vec::new(),
    )
    .unwrap();
    let first = Arc::new(OnceLock::new());
    let timed = Timed {
        inner: stream.source(),
        first: first.clone(),
    };
    let mut p = Pipeline::new(
        settings,
        db,
        Box::new(timed),
        stream.sink(),
        Box::new(handler),
    );
    let mut done = 0;
    while done < n {
        if let Some(c) = p.step().unwrap() {
            done += c.events_in as usize;
        }
    }
    n as f64
        / first
            .get()
            .expect("a record was read")
            .elapsed()
            .as_secs_f64()
}

/// The raw copy (see the module docs): events/s from the first record to
/// the synchronous commit after the final flush.
fn raw_copy(config: &KafkaConfig, input: &str, n: usize) -> f64 {
    let output = unique("rawout");
    topics(config, &[&output]);
    let mut c = config.config_for(Client::Consumer);
    c.set("group.id", unique("rawgroup"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().unwrap();
    consumer.subscribe(&[input]).unwrap();
    let mut pc: ClientConfig = config.config_for(Client::Producer);
    pc.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "5");
    let producer: BaseProducer = pc.create().unwrap();
    let mut copied = 0;
    let mut start = None;
    while copied < n {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = m.unwrap();
        start.get_or_insert_with(Instant::now);
        let mut r: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&output);
        if let Some(k) = m.key() {
            r = r.key(k);
        }
        if let Some(v) = m.payload() {
            r = r.payload(v);
        }
        while let Err((_, back)) = producer.send(r) {
            producer.poll(Duration::from_millis(10));
            r = back;
        }
        copied += 1;
        if copied % BATCH == 0 {
            producer.poll(Duration::ZERO);
            consumer.commit_message(&m, CommitMode::Async).unwrap();
        }
        if copied == n {
            producer.flush(Duration::from_secs(60)).unwrap();
            consumer.commit_message(&m, CommitMode::Sync).unwrap();
        }
    }
    n as f64 / start.expect("a record was read").elapsed().as_secs_f64()
}

fn main() {
    let Some(brokers) = brokers() else {
        eprintln!(
            "kafka bench skipped: no broker (run `make kafka-up`, or `make bench` which starts one)"
        );
        return;
    };
    let config = KafkaConfig::new(brokers.clone());
    let wasm = root().join("target/plugins/enrich.wasm");
    assert!(wasm.exists(), "run `make plugins` first");
    let peer_dir = Peer::copy();
    let peer = peer_dir
        .as_deref()
        .map_err(Clone::clone)
        .and_then(Peer::build);
    if let Err(e) = &peer {
        eprintln!("kafka bench: Kafka Streams not measured: {e}");
    }
    let (data, from) = input(peer_dir.as_deref().ok());
    let n = data.len();
    let topic = unique("readings");
    fill(&config, &topic, &data);
    drop(data);
    eprintln!("kafka bench: {n} records from {from} in topic {topic}");

    let runtime = Arc::new(Runtime::new(None).unwrap());
    let component = Arc::new(runtime.load(&wasm).unwrap());
    let raw = raw_copy(&config, &topic, n);
    let alo = tidewater_once(&config, &runtime, &component, &topic, n, false);
    let eos = tidewater_once(&config, &runtime, &component, &topic, n, true);
    let (ks_enrich, ks_dedupe) = match peer.and_then(|p| p.run(&brokers, &topic, n)) {
        Ok((a, b)) => (Some(a), Some(b)),
        Err(e) => {
            eprintln!("kafka bench: Kafka Streams not measured: {e}");
            (None, None)
        }
    };

    println!("\nKafka, {n} readings, one topic, one partition, same broker, one pass each:");
    println!("| contender | events/s | / raw copy | / Kafka Streams EOS dedupe+enrich |");
    println!("|---|---|---|---|");
    let row = |name: &str, v: Option<f64>| {
        let cell = |x: Option<f64>| x.map_or("-".to_owned(), |x| format!("{x:.2}"));
        let rate = v.map_or("not measured".to_owned(), |v| format!("{:.1}k", v / 1000.0));
        println!(
            "| {name} | {rate} | {} | {} |",
            cell(v.map(|v| v / raw)),
            cell(v.zip(ks_dedupe).map(|(v, k)| v / k)),
        );
    };
    row("raw copy (async commit, one flush)", Some(raw));
    row("tidewater enrich+dedupe, at-least-once", Some(alo));
    row("tidewater enrich+dedupe, exactly_once", Some(eos));
    row("Kafka Streams EOS enrich", ks_enrich);
    row("Kafka Streams EOS dedupe+enrich", ks_dedupe);
    let tenth = |x: f64| (x * 10.0).round() / 10.0;
    let report = json!({
        "events": n,
        "tidewater_at_least_once": tenth(alo),
        "tidewater_exactly_once": tenth(eos),
        "raw_copy": tenth(raw),
        "kstreams_eos_enrich": ks_enrich.map(tenth),
        "kstreams_eos_dedupe_enrich": ks_dedupe.map(tenth),
    });
    let path = root().join("target/bench-kafka.json");
    std::fs::write(&path, format!("{report:#}\n")).unwrap();
    println!("\nwrote {}", path.display());
}
