//! Events/s of the embedded pipeline: the Rust `enrich` component against the
//! same code as a native Rust function, with and without idempotency, at
//! batch sizes 1, 64 and 1024.
//!
//! Each iteration processes a fresh copy of N real readings (the buoy data)
//! through one processor, commits included. The database lives in /dev/shm
//! when it exists, so the numbers measure tidewater and wasmtime rather than
//! this machine's fsync (about 5–10 ms per commit on its disk).

#![allow(
    missing_docs,
    reason = "criterion_group! generates an undocumented function"
)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use tidewater::config::Unkeyed;
use tidewater::processing::idempotency::KeyMode;
use tidewater::processing::{FnHandler, Handler, Pipeline, Settings, WasmHandler};
use tidewater::runtime::{Limits, Output, ProcessError, Runtime};
use tidewater::streams::Record;
use tidewater::streams::embedded::Log;
use tidewater::streams::embedded::{EmbeddedSink, EmbeddedSource};

mod support;
use support::{root, scratch_dir};
const EVENTS: usize = 4096;

fn settings(batch: usize, deduplicate: bool) -> Settings {
    Settings {
        name: "enrich".into(),
        output: "out".into(),
        dead_letter_topic: "enrich.dlq".into(),
        max_batch_records: batch,
        max_batch_bytes: usize::MAX,
        key_mode: "json:/device,/ts".parse::<KeyMode>().expect("mode"),
        key_ttl: Duration::from_secs(3600),
        unkeyed: Unkeyed::DeadLetter,
        transient_retries: 0,
        retry_backoff: Duration::ZERO,
        deduplicate,
        on_error: tidewater::config::OnError::DeadLetter,
    }
}

/// Runs `EVENTS` readings through a fresh pipeline; returns the time taken.
fn run_once(
    data: &[Record],
    batch: usize,
    deduplicate: bool,
    handler: Box<dyn Handler>,
) -> Duration {
    let dir = scratch_dir();
    let db = tidewater::db::open(dir.path()).expect("db");
    let log = Log::new(db.clone(), 1);
    log.append("in", data.iter().cloned()).expect("append");
    let source = EmbeddedSource::new(log.clone(), "enrich".into(), vec!["in".into()]);
    let mut p = Pipeline::new(
        settings(batch, deduplicate),
        db,
        Box::new(source),
        Box::new(EmbeddedSink::new(1)),
        handler,
    );
    let start = Instant::now();
    let mut n = 0;
    while let Some(c) = p.step().expect("step") {
        n += c.events_in;
    }
    let took = start.elapsed();
    assert_eq!(n as usize, data.len());
    took
}

fn native_enrich() -> Box<dyn Handler> {
    Box::new(FnHandler::new(
        |e: &tidewater::runtime::Event, _state: &mut tidewater::runtime::StateOverlay| {
            let event = tidewater_sdk::Event {
                topic: e.topic.clone(),
                partition: e.partition,
                offset: e.offset,
                timestamp_ms: e.timestamp_ms,
                key: e.key.clone(),
                value: e.value.clone(),
                headers: e.headers.clone(),
            };
            match enrich::process(event) {
                Ok(outs) => Ok(outs
                    .into_iter()
                    .map(|o| Output {
                        topic: o.topic,
                        key: o.key,
                        value: o.value,
                        headers: o.headers,
                    })
                    .collect()),
                Err(tidewater_sdk::ProcessError::Invalid(m)) => Err(ProcessError::Invalid(m)),
                Err(tidewater_sdk::ProcessError::Transient(m)) => Err(ProcessError::Transient(m)),
                Err(tidewater_sdk::ProcessError::Fatal(m)) => Err(ProcessError::Fatal(m)),
            }
        },
    ))
}

fn bench(c: &mut Criterion) {
    let data = support::buoy_readings(EVENTS);
    let wasm = root().join("target/plugins/enrich.wasm");
    assert!(
        wasm.exists(),
        "run `make plugins` first ({} is missing)",
        wasm.display()
    );
    let runtime = Arc::new(Runtime::new(None).expect("runtime"));
    let component = Arc::new(runtime.load(&wasm).expect("load enrich.wasm"));

    let mut group = c.benchmark_group("pipeline");
    group.throughput(Throughput::Elements(data.len() as u64));
    group.sample_size(10);
    for batch in [1usize, 64, 1024] {
        for dedupe in [true, false] {
            let label = format!(
                "batch={batch}/idempotency={}",
                if dedupe { "on" } else { "off" }
            );
            group.bench_function(BenchmarkId::new("wasm", &label), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| {
                            let h = WasmHandler::new(
                                runtime.clone(),
                                component.clone(),
                                "enrich".into(),
                                Limits::default(),
                                Vec::new(),
                            )
                            .expect("instantiate");
                            black_box(run_once(&data, batch, dedupe, Box::new(h)))
                        })
                        .sum()
                })
            });
            group.bench_function(BenchmarkId::new("native", &label), |b| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| black_box(run_once(&data, batch, dedupe, native_enrich())))
                        .sum()
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
