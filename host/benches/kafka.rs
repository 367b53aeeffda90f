//! Kafka end to end: consume → Rust `enrich` component → dedupe → produce,
//! against raw rdkafka consume → produce with no processing, on the same
//! broker in the same run. Needs a broker: `make bench` starts one (its
//! address is in target/kafka/bootstrap); without one this bench says so and
//! measures nothing.
#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, Producer};
use tidewater::processing::changes::PartitionStore;
use tidewater::processing::{Pipeline, Settings, WasmHandler};
use tidewater::runtime::{Limits, Runtime};
use tidewater::streams::Record;
use tidewater::streams::kafka::{Client, KafkaConfig, KafkaStream, StreamSetup};

mod support;
use support::root;
const EVENTS: usize = 20_000;

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

fn fill(config: &KafkaConfig, topic: &str, data: &[Record]) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(tidewater::streams::kafka::ensure_topics(
        config,
        &[(topic.to_owned(), Some(1))].into_iter().collect(),
    ))
    .unwrap();
    let p = tidewater::streams::kafka::producer(config, None).unwrap();
    tidewater::streams::kafka::produce_all(
        &p,
        data.iter().map(|r| (topic, r)),
        Duration::from_secs(60),
    )
    .unwrap();
}

/// tidewater: the whole pipeline, commits included.
fn tidewater_once(
    config: &KafkaConfig,
    runtime: &Arc<Runtime>,
    component: &Arc<tidewater::runtime::LoadedComponent>,
    data: &[Record],
) -> Duration {
    let input = unique("in");
    fill(config, &input, data);
    let dir = tempfile::tempdir_in(if Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    })
    .unwrap();
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
        inputs: std::slice::from_ref(&input),
        exactly_once: false,
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
        max_batch_records: 1024,
        max_batch_bytes: 16 << 20,
        key_mode: "json:/device,/ts".parse().unwrap(),
        key_ttl: Duration::from_secs(3600),
        unkeyed: tidewater::config::Unkeyed::DeadLetter,
        transient_retries: 0,
        retry_backoff: Duration::ZERO,
        deduplicate: true,
        on_error: tidewater::config::OnError::DeadLetter,
    };
    rt.block_on(tidewater::streams::kafka::ensure_topics(
        config,
        &[
            (settings.output.clone(), Some(1)),
            (settings.dead_letter_topic.clone(), Some(1)),
        ]
        .into_iter()
        .collect(),
    ))
    .unwrap();
    let handler = WasmHandler::new(
        runtime.clone(),
        component.clone(),
        name,
        Limits::default(),
        Vec::new(),
    )
    .unwrap();
    let mut p = Pipeline::new(
        settings,
        db,
        stream.source(),
        stream.sink(),
        Box::new(handler),
    );
    // Wait for the group join outside the timing.
    let mut n = 0;
    while n == 0 {
        if let Some(c) = p.step().unwrap() {
            n += c.events_in as usize;
        }
    }
    // Time the rest, and scale it to the whole input.
    let first = n;
    let start = Instant::now();
    while n < data.len() {
        if let Some(c) = p.step().unwrap() {
            n += c.events_in as usize;
        }
    }
    start
        .elapsed()
        .mul_f64(data.len() as f64 / (data.len() - first).max(1) as f64)
}

/// Raw rdkafka: consume and produce each record unchanged, no processing.
fn raw_once(config: &KafkaConfig, data: &[Record]) -> Duration {
    let input = unique("rawin");
    let output = unique("rawout");
    fill(config, &input, data);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(tidewater::streams::kafka::ensure_topics(
        config,
        &[(output.clone(), Some(1))].into_iter().collect(),
    ))
    .unwrap();
    let mut c = config.config_for(Client::Consumer);
    c.set("group.id", unique("rawgroup"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let consumer: BaseConsumer = c.create().unwrap();
    consumer.subscribe(&[&input]).unwrap();
    let producer = tidewater::streams::kafka::producer(config, None).unwrap();
    let mut n = 0;
    let mut start = None;
    while n < data.len() {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            start.get_or_insert_with(Instant::now);
            let mut r: BaseRecord<'_, [u8], [u8], usize> = BaseRecord::with_opaque_to(&output, n);
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
            n += 1;
            if n % 1024 == 0 {
                producer.flush(Duration::from_secs(30)).unwrap();
                consumer
                    .commit_message(&m, rdkafka::consumer::CommitMode::Sync)
                    .unwrap();
            }
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    start.map(|s| s.elapsed()).unwrap_or_default()
}

fn bench(c: &mut Criterion) {
    let Some(brokers) = brokers() else {
        eprintln!(
            "kafka bench skipped: no broker (run `make kafka-up`, or `make bench` which starts one)"
        );
        return;
    };
    let config = KafkaConfig::new(brokers);
    let data = support::readings("CGM.csv.gz", "cgm-3", "datetime", EVENTS);
    let wasm = root().join("target/plugins/enrich.wasm");
    assert!(wasm.exists(), "run `make plugins` first");
    let runtime = Arc::new(Runtime::new(None).unwrap());
    let component = Arc::new(runtime.load(&wasm).unwrap());
    let mut group = c.benchmark_group("kafka");
    group.throughput(Throughput::Elements(data.len() as u64));
    group.sample_size(10);
    group.bench_function("tidewater-enrich-dedupe", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| tidewater_once(&config, &runtime, &component, &data))
                .sum()
        })
    });
    group.bench_function("raw-rdkafka-copy", |b| {
        b.iter_custom(|iters| (0..iters).map(|_| raw_once(&config, &data)).sum())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
