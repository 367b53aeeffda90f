//! Swap latency: from the start of an upload (`POST .../versions?activate=true`)
//! until the running processor reports the new version active, for the
//! Rust, Python and JavaScript builds of `enrich`, cold (a version never
//! compiled before: a custom section makes each upload a new SHA-256) and
//! cached (two versions already compiled, swapped back and forth).
//!
//! Then, printed rather than benchmarked: how long a swap holds up the
//! processor's thread while events flow (the pointer swap, recording the
//! activation, dropping the old instance), the longest of 100 swaps.
//!
//! The host runs in-process with its admin API on 127.0.0.1 port 0 and its
//! data dir in /dev/shm when it exists.

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use serde_json::Value;
use tidewater::admin::AdminOptions;
use tidewater::admin::client::Client;
use tidewater::streams::Record;
use tidewater::streams::embedded::Log;

#[path = "../../tests/support/wasm.rs"]
mod wasm;
use wasm::rebuilt;

mod support;
use support::{root, scratch_dir};
const TOKEN: &str = "bench-token";

struct Host {
    client: Client,
    rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Host {
    fn start(batch: usize, events: usize) -> Host {
        let dir = scratch_dir();
        let data = dir.path().join("data");
        if events > 0 {
            let db = tidewater::db::open(&data).expect("db");
            let records: Vec<Record> = (0..events)
                .map(|i| Record {
                    value: Some(
                        format!(r#"{{"device":"d{}","ts":"{i}","temperature":20.5}}"#, i % 7)
                            .into_bytes(),
                    ),
                    ..Record::default()
                })
                .collect();
            Log::new(db, 1).append("in", records).expect("append");
        }
        let config_path = dir.path().join("tidewater.toml");
        std::fs::write(
            &config_path,
            format!(
                r#"
[[processor]]
name = "enrich"
component = "{}"
inputs = ["in"]
output = "out"
batch.max_records = {batch}
"#,
                root().join("target/plugins/enrich.wasm").display()
            ),
        )
        .expect("config");
        let config = tidewater::config::Config::load(&config_path).expect("config");
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let admin = AdminOptions {
            listen: Some("127.0.0.1:0".parse().expect("address")),
            token: Some(TOKEN.into()),
            max_upload_bytes: tidewater::control::registry::DEFAULT_MAX_UPLOAD_BYTES,
            bound: Some(bound_tx),
            watch: None,
            start_paused: false,
            console: Default::default(),
        };
        let options = tidewater::RunOptions {
            data_dir: data,
            until_idle: false,
        };
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(tidewater::run_with(config, options, admin, async move {
                let _ = stop_rx.await;
            }))
            .expect("run");
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let addr = rt.block_on(bound_rx).expect("the host started");
        Host {
            client: Client::new(&format!("http://{addr}"), Some(TOKEN.into())).expect("client"),
            rt,
            stop: Some(stop_tx),
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn status(&self) -> Value {
        self.rt
            .block_on(self.client.get("/v1/processors/enrich"))
            .expect("status")
    }

    /// Uploads `wasm` with activate=true and waits until it is active.
    fn swap_to(&self, wasm: Vec<u8>) -> Duration {
        let start = Instant::now();
        let v = self
            .rt
            .block_on(self.client.upload("enrich", wasm, "activate=true"))
            .expect("upload");
        let sha = v["version"]["sha256"].as_str().expect("sha").to_owned();
        while self.status()["active_version"] != *sha {
            std::thread::sleep(Duration::from_micros(200));
        }
        start.elapsed()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bench(c: &mut Criterion) {
    let languages = [
        ("rust", "enrich.wasm"),
        ("python", "python-enrich.wasm"),
        ("js", "js-enrich.wasm"),
    ];
    let host = Host::start(1024, 0);
    let mut group = c.benchmark_group("swap_latency");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_secs(1));
    let mut n = 0u64;
    for (lang, file) in languages {
        let wasm = std::fs::read(root().join("target/plugins").join(file)).expect("make plugins");
        group.bench_function(BenchmarkId::new("cold", lang), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        n += 1;
                        host.swap_to(rebuilt(&wasm, &format!("cold-{n}")))
                    })
                    .sum()
            });
        });
        let (a, b2) = (rebuilt(&wasm, "cached-a"), rebuilt(&wasm, "cached-b"));
        host.swap_to(a.clone());
        host.swap_to(b2.clone());
        let mut flip = false;
        group.bench_function(BenchmarkId::new("cached", lang), |b| {
            b.iter_custom(|iters| {
                (0..iters)
                    .map(|_| {
                        flip = !flip;
                        host.swap_to(if flip { a.clone() } else { b2.clone() })
                    })
                    .sum()
            });
        });
    }
    group.finish();
    drop(host);

    // Swaps while events flow: how long each holds up the processor's thread.
    let host = Host::start(100, 50_000);
    let wasm = std::fs::read(root().join("target/plugins/enrich.wasm")).expect("make plugins");
    let versions = [rebuilt(&wasm, "flow-a"), rebuilt(&wasm, "flow-b")];
    for i in 0..100 {
        host.swap_to(versions[i % 2].clone());
    }
    let s = host.status();
    println!(
        "swap pause while events flow (100 swaps, batches of 100): max {:.2} ms, last {:.2} ms; events read meanwhile: {}",
        s["max_swap_pause_us"].as_u64().unwrap_or_default() as f64 / 1000.0,
        s["last_swap_pause_us"].as_u64().unwrap_or_default() as f64 / 1000.0,
        s["counters"]["events_in"]
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
