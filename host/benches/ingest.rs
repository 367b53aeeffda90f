//! Live ingest, measured in one run on the same records: HTTP (100 clients,
//! 100 records a request) with group commit and with one commit per request,
//! MQTT (QoS 1 through Mosquitto, PUBACK after the durable append), and the
//! same records produced to the local Kafka broker with acks=all. The data
//! dir is on disk (under target/), not /dev/shm: the fsync is what group
//! commit saves.
//!
//! Needs the Kafka broker and Mosquitto that `make bench` starts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tidewater::admin::AdminOptions;
use tidewater::config::Config;
use tidewater::streams::Record;
use tidewater::streams::ingest::client::IngestClient;

const CLIENTS: usize = 100;
const PER_REQUEST: usize = 100;
const REQUESTS_PER_CLIENT: usize = 20;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The body of request `r` of client `c`: readings in the data sets' shape.
fn body(c: usize, r: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(PER_REQUEST * 110);
    for i in 0..PER_REQUEST {
        out.extend(
            format!(
                "{{\"device\":\"dev-{c}\",\"ts\":\"2016-02-15T00:{:02}:{:02}Z\",\"temperature (celsius)\":{}.{}}}\n",
                (r * PER_REQUEST + i) / 60 % 60,
                (r * PER_REQUEST + i) % 60,
                4 + i % 7,
                i
            )
            .into_bytes(),
        );
    }
    out
}

/// A host running `config` in-process on a fresh data dir under target/;
/// returns its data dir, a stop sender and the thread.
struct Host {
    dir: tempfile::TempDir,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Host {
    fn start(config: &str) -> Host {
        let base = root().join("target/bench-ingest");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::tempdir_in(base).unwrap();
        let config = Config::parse(config).unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let options = tidewater::RunOptions {
            data_dir: dir.path().to_owned(),
            until_idle: false,
        };
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(tidewater::run_with(
                config,
                options,
                AdminOptions::default(),
                async move {
                    let _ = stopped.await;
                },
            ))
            .unwrap();
        });
        let url = dir.path().join("ingest.url");
        let start = Instant::now();
        while !url.exists() {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "host did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Host {
            dir,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("ingest.url"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// Stops the host and returns the records in `topic`.
    fn stop(mut self, topic: &str) -> usize {
        let _ = self.stop.take().unwrap().send(());
        self.thread.take().unwrap().join().unwrap();
        let log = tidewater::streams::embedded::Log::new(
            tidewater::db::open(self.dir.path()).unwrap(),
            1,
        );
        (0..log.partitions(topic).unwrap().unwrap_or(0))
            .map(|p| log.read(topic, p, 0, usize::MAX, usize::MAX).unwrap().len())
            .sum()
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

/// 100 clients × 20 requests × 100 records; (events/s, p50 ms, p99 ms).
fn http(group_commit: bool) -> (f64, f64, f64) {
    let host = Host::start(&format!(
        "[ingest]\ngroup_commit = {group_commit}\n[ingest.http]\nlisten = \"127.0.0.1:0\"\n"
    ));
    let url = host.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let bodies: Arc<Vec<Vec<Vec<u8>>>> = Arc::new(
        (0..CLIENTS)
            .map(|c| (0..REQUESTS_PER_CLIENT).map(|r| body(c, r)).collect())
            .collect(),
    );
    let started = Instant::now();
    let mut latencies: Vec<f64> = rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..CLIENTS {
            let (url, bodies) = (url.clone(), bodies.clone());
            tasks.spawn(async move {
                let mut client = IngestClient::new(&url, None, None).unwrap();
                let mut l = Vec::new();
                for r in 0..REQUESTS_PER_CLIENT {
                    let t = Instant::now();
                    let a = client
                        .post(
                            "bench",
                            "",
                            bodies[c][r].clone(),
                            "application/x-ndjson",
                            false,
                        )
                        .await
                        .unwrap();
                    assert_eq!(a.status, 200, "{}", a.body);
                    l.push(t.elapsed().as_secs_f64() * 1000.0);
                }
                l
            });
        }
        let mut all = Vec::new();
        while let Some(l) = tasks.join_next().await {
            all.extend(l.unwrap());
        }
        all
    });
    let elapsed = started.elapsed().as_secs_f64();
    let total = CLIENTS * REQUESTS_PER_CLIENT * PER_REQUEST;
    assert_eq!(host.stop("bench"), total);
    latencies.sort_by(f64::total_cmp);
    (
        total as f64 / elapsed,
        quantile(&latencies, 0.5),
        quantile(&latencies, 0.99),
    )
}

/// The same records over MQTT (50 publishers, QoS 1), measured from the
/// first publish until every message is durably appended: (events/s).
fn mqtt(broker: &str) -> f64 {
    let id = format!("bench-{}-{}", std::process::id(), tidewater::db::now_ms());
    let addr = broker.trim_start_matches("mqtt://");
    let (h, p) = addr.rsplit_once(':').unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // The host's session exists before anything is published: the broker
    // keeps every message for it from the first one on.
    rt.block_on(async {
        let mut o = rumqttc::MqttOptions::new(id.clone(), h, p.parse().unwrap());
        o.set_clean_session(false);
        let (client, mut events) = rumqttc::AsyncClient::new(o, 10);
        client
            .subscribe(format!("{id}/+/readings"), rumqttc::QoS::AtLeastOnce)
            .await
            .unwrap();
        loop {
            if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::SubAck(_))) = events.poll().await {
                break;
            }
        }
        client.disconnect().await.unwrap();
        while events.poll().await.is_ok() {}
    });
    let host = Host::start(&format!(
        "[[ingest.mqtt]]\nurl = \"{broker}\"\nclient_id = \"{id}\"\ntopics = {{ \"{id}/+/readings\" = \"bench\" }}\n[ingest.http]\nlisten = \"127.0.0.1:0\"\n"
    ));
    let total = (CLIENTS * REQUESTS_PER_CLIENT * PER_REQUEST / 4) as u64;
    let publishers = 50u64;
    let started = Instant::now();
    let acked = Arc::new(AtomicU64::new(0));
    rt.block_on(async {
        let mut tasks = tokio::task::JoinSet::new();
        for k in 0..publishers {
            let (h, p, id, acked) = (h.to_owned(), p.to_owned(), id.clone(), acked.clone());
            tasks.spawn(async move {
                let mut o =
                    rumqttc::MqttOptions::new(format!("{id}-pub{k}"), h, p.parse().unwrap());
                o.set_inflight(100);
                let (client, mut events) = rumqttc::AsyncClient::new(o, 1000);
                let n = total / publishers;
                let mine = Arc::new(AtomicU64::new(0));
                let m2 = mine.clone();
                let poll = tokio::spawn(async move {
                    while m2.load(Ordering::SeqCst) < n {
                        if let Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_))) =
                            events.poll().await
                        {
                            m2.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
                for i in 0..n {
                    let payload = format!(
                        "{{\"device\":\"dev-{k}\",\"n\":{i},\"temperature (celsius)\":4.5}}"
                    );
                    client
                        .publish(
                            format!("{id}/dev-{k}/readings"),
                            rumqttc::QoS::AtLeastOnce,
                            false,
                            payload,
                        )
                        .await
                        .unwrap();
                }
                poll.await.unwrap();
                acked.fetch_add(n, Ordering::SeqCst);
            });
        }
        while tasks.join_next().await.is_some() {}
    });
    let published = acked.load(Ordering::SeqCst);
    let elapsed = started.elapsed();
    // The broker forwards at most max_inflight_messages (1000) messages the
    // host has not acknowledged, and the host acknowledges each after its
    // durable append: when the publishers are done, all but those are in
    // the log. Stopping the host appends what is queued; then count.
    let n = host.stop("bench") as u64;
    assert!(
        n <= published && n + 1000 >= published,
        "appended {n} of {published}"
    );
    published as f64 / elapsed.as_secs_f64()
}

/// The same records produced to Kafka with acks=all (idempotent producer):
/// (events/s, p50 ms, p99 ms of a 100-record batch's acknowledgement).
fn kafka(brokers: &str) -> (f64, f64, f64) {
    use tidewater::streams::kafka::{KafkaConfig, ensure_topics, produce_all, producer};
    let config = KafkaConfig::new(brokers);
    let topic = format!(
        "bench-ingest-{}-{}",
        std::process::id(),
        tidewater::db::now_ms()
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(ensure_topics(
        &config,
        &[(topic.clone(), Some(1))].into_iter().collect(),
    ))
    .unwrap();
    let started = Instant::now();
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        // 100 clients on 4 threads, each its own producer, batches of 100 records.
        for t in 0..4 {
            let (config, topic, latencies) = (&config, &topic, latencies.clone());
            s.spawn(move || {
                let p = producer(config, None).unwrap();
                for c in (t..CLIENTS).step_by(4) {
                    for r in 0..REQUESTS_PER_CLIENT {
                        let records: Vec<Record> = body(c, r)
                            .split(|&b| b == b'\n')
                            .filter(|l| !l.is_empty())
                            .map(|l| Record {
                                key: Some(format!("dev-{c}").into_bytes()),
                                value: Some(l.to_vec()),
                                ..Record::default()
                            })
                            .collect();
                        let t0 = Instant::now();
                        produce_all(
                            &p,
                            records.iter().map(|r| (topic.as_str(), r)),
                            config.flush_timeout,
                        )
                        .unwrap();
                        latencies
                            .lock()
                            .unwrap()
                            .push(t0.elapsed().as_secs_f64() * 1000.0);
                    }
                }
            });
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(f64::total_cmp);
    (
        (CLIENTS * REQUESTS_PER_CLIENT * PER_REQUEST) as f64 / elapsed,
        quantile(&l, 0.5),
        quantile(&l, 0.99),
    )
}

fn main() {
    let read = |f: &str| {
        std::fs::read_to_string(root().join(f))
            .ok()
            .map(|s| s.trim().to_owned())
    };
    let (g, g50, g99) = http(true);
    let (o, o50, o99) = http(false);
    println!(
        "ingest/http group commit      {g:>9.0} events/s  ack p50 {g50:6.1} ms  p99 {g99:6.1} ms"
    );
    println!(
        "ingest/http commit per request {o:>8.0} events/s  ack p50 {o50:6.1} ms  p99 {o99:6.1} ms"
    );
    println!("ingest/http group / per-request: {:.2}", g / o);
    match read("target/mosquitto/url") {
        Some(b) => println!(
            "ingest/mqtt (QoS 1, 50 publishers) {:>8.0} events/s",
            mqtt(&b)
        ),
        None => println!("ingest/mqtt skipped: no broker (make bench starts one)"),
    }
    match read("target/kafka/bootstrap") {
        Some(b) => {
            let (k, k50, k99) = kafka(&b);
            println!(
                "kafka produce acks=all (4 producers, batches of 100) {k:>8.0} events/s  batch ack p50 {k50:6.1} ms  p99 {k99:6.1} ms"
            );
            println!("ingest/http group commit / kafka: {:.2}", g / k);
        }
        None => println!("kafka skipped: no broker (make bench starts one)"),
    }
}
