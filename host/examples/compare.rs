//! `make compare`: every language's build of `enrich`, side by side, on the
//! same real data.
//!
//! The four data sets of the demo are appended once to the topic
//! `sensor-readings` of a fresh embedded log (4 partitions). Then, for each
//! language, the real pipeline runs the component `target/plugins/<lang>-enrich.wasm`
//! as its own processor (`enrich-<lang>`: its own consumer positions on the
//! one input topic, its own output topic), batch by batch, commits included,
//! until the topic is drained. Printed and written to `target/compare.json`:
//!
//! - `wasm_bytes`: the component's size;
//! - `compile_ms`: compiling it (no cache); `cached_load_ms`: loading it again
//!   from the compiled-component cache; `instantiate_ms`: the median of 20
//!   instantiations (with `init`);
//! - `events_per_s`: events through the pipeline per second of wall time;
//!   `p99_ms`: the 99th percentile of the time of one pipeline step (one
//!   batch of up to 256 events: read, call, one commit);
//! - every instance runs under the host's default limits (`Limits::default()`:
//!   64 MiB of memory, a 1 s deadline per call), as a processor does unless
//!   its config raises them;
//! - `identical`: whether its outputs (key and value of every record of every
//!   partition, in order) and its dead-letter count equal Rust's;
//!   `differing`: how many records differ.
//!
//! Usage: `cargo run --release --example compare [LANG ...]` (default: every
//! language that has a component). Needs `make plugins` first.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tidewater::config::Unkeyed;
use tidewater::processing::idempotency::KeyMode;
use tidewater::processing::{Pipeline, Settings, WasmHandler};
use tidewater::runtime::{Limits, Runtime};
use tidewater::streams::Record;
use tidewater::streams::embedded::Log;
use tidewater::streams::embedded::{EmbeddedSink, EmbeddedSource};

const LANGUAGES: &[&str] = &["rust", "c", "cpp", "zig", "python", "js", "ts", "go"];
const PARTITIONS: u32 = 4;
const BATCH: usize = 256;
const INPUT: &str = "sensor-readings";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The demo's data sets: file, device, time column.
const DATA: &[(&str, &str, &str)] = &[
    ("sea_surface_temperature.csv.gz", "buoy-b01", "time (UTC)"),
    ("water-flow.csv", "pipeline-7", "Time"),
    ("occupancy.csv", "office-12", "time"),
    ("CGM.csv.gz", "cgm-3", "datetime"),
];

fn readings() -> Result<Vec<Record>> {
    let mut out = Vec::new();
    for (file, device, time) in DATA {
        let path = root().join("data").join(file);
        let f =
            std::fs::File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let options = tidewater::streams::ingest::CsvOptions {
            device: (*device).into(),
            time_column: (*time).into(),
        };
        tidewater::streams::ingest::read_csv(f, &options, |r| {
            if let Ok(r) = r {
                out.push(r);
            }
        })
        .with_context(|| format!("reading {}", path.display()))?;
    }
    Ok(out)
}

struct Row {
    language: String,
    wasm_bytes: u64,
    compile_ms: f64,
    cached_load_ms: f64,
    instantiate_ms: f64,
    events: u64,
    events_per_s: f64,
    p99_ms: f64,
    dead_lettered: u64,
    identical: bool,
    differing: u64,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i]
}

fn settings(name: &str) -> Settings {
    Settings {
        name: name.into(),
        output: format!("enriched-{name}"),
        dead_letter_topic: format!("{name}.dlq"),
        max_batch_records: BATCH,
        max_batch_bytes: usize::MAX,
        key_mode: "offset".parse::<KeyMode>().expect("offset is a key mode"),
        key_ttl: Duration::from_secs(3600),
        unkeyed: Unkeyed::DeadLetter,
        transient_retries: 0,
        retry_backoff: Duration::ZERO,
        deduplicate: false,
        on_error: tidewater::config::OnError::DeadLetter,
    }
}

/// A record's key and value.
type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

fn topic_records(log: &Log, topic: &str) -> Result<Vec<KeyValue>> {
    let mut out = Vec::new();
    let Some(n) = log.partitions(topic)? else {
        return Ok(out);
    };
    for p in 0..n {
        let mut from = 0;
        loop {
            let batch = log.read(topic, p, from, 4096, usize::MAX)?;
            let Some(last) = batch.last() else { break };
            from = last.offset + 1;
            out.extend(batch.into_iter().map(|r| (r.record.key, r.record.value)));
        }
    }
    Ok(out)
}

fn measure(language: &str, wasm: &Path, log: &Log, db: &Arc<redb::Database>) -> Result<Row> {
    let wasm_bytes = std::fs::metadata(wasm)?.len();
    let compile_ms = ms(Runtime::new(None)?.load(wasm)?.load_time);
    let cache = tempfile::tempdir()?;
    let runtime = Arc::new(Runtime::new(Some(cache.path().to_owned()))?);
    runtime.load(wasm)?;
    let component = Arc::new(runtime.load(wasm)?);
    if !component.cached {
        bail!("{language}: the second load did not come from the cache");
    }
    let cached_load_ms = ms(component.load_time);
    let name = format!("enrich-{language}");
    // The host's defaults, the memory cap (64 MiB) included: what a
    // processor gets unless its config raises a limit.
    let limits = Limits::default();
    let mut inst = Vec::new();
    for _ in 0..20 {
        let t = Instant::now();
        let i = runtime.instantiate(&component, name.as_str().into(), limits, &[])?;
        inst.push(ms(t.elapsed()));
        drop(i);
    }
    let instantiate_ms = percentile(inst, 0.5);

    let handler = WasmHandler::new(
        runtime.clone(),
        component.clone(),
        name.as_str().into(),
        limits,
        Vec::new(),
    )?;
    let source = EmbeddedSource::new(log.clone(), name.as_str().into(), vec![INPUT.into()]);
    let mut pipeline = Pipeline::new(
        settings(&name),
        db.clone(),
        Box::new(source),
        Box::new(EmbeddedSink::new(PARTITIONS)),
        Box::new(handler),
    );
    let mut steps = Vec::new();
    let (mut events, mut dead) = (0u64, 0u64);
    let start = Instant::now();
    loop {
        let t = Instant::now();
        let Some(c) = pipeline.step()? else { break };
        steps.push(ms(t.elapsed()));
        events += c.events_in;
        dead += c.dead_lettered;
    }
    let took = start.elapsed();
    Ok(Row {
        language: language.into(),
        wasm_bytes,
        compile_ms,
        cached_load_ms,
        instantiate_ms,
        events,
        events_per_s: events as f64 / took.as_secs_f64(),
        p99_ms: percentile(steps, 0.99),
        dead_lettered: dead,
        identical: false,
        differing: 0,
    })
}

fn main() -> Result<()> {
    let asked: Vec<String> = std::env::args().skip(1).collect();
    let plugins = root().join("target/plugins");
    let languages: Vec<String> = if asked.is_empty() {
        LANGUAGES
            .iter()
            .filter(|l| plugins.join(format!("{l}-enrich.wasm")).exists())
            .map(|l| l.to_string())
            .collect()
    } else {
        asked
    };
    if languages.first().map(String::as_str) != Some("rust") {
        bail!("rust must come first: it is the reference (run `make plugins`)");
    }
    let dir = tempfile::tempdir()?;
    let db = tidewater::db::open(dir.path())?;
    let log = Log::new(db.clone(), PARTITIONS);
    let data = readings()?;
    log.create_topic(INPUT, PARTITIONS)?;
    log.append(INPUT, data)?;

    let mut rows = Vec::new();
    let mut reference = None;
    for language in &languages {
        let wasm = plugins.join(format!("{language}-enrich.wasm"));
        if !wasm.exists() {
            bail!("{} is missing (run `make plugins`)", wasm.display());
        }
        eprintln!("compare: {language} ...");
        let mut row = measure(language, &wasm, &log, &db)?;
        let outputs = topic_records(&log, &format!("enriched-enrich-{language}"))?;
        match &reference {
            None => {
                row.identical = true;
                reference = Some((outputs, row.dead_lettered));
            }
            Some((want, want_dead)) => {
                let differing = want.iter().zip(&outputs).filter(|(a, b)| a != b).count()
                    + want.len().abs_diff(outputs.len());
                row.differing = differing as u64;
                row.identical = differing == 0 && row.dead_lettered == *want_dead;
            }
        }
        rows.push(row);
    }

    println!(
        "{:<8} {:>11} {:>11} {:>10} {:>12} {:>8} {:>9} {:>7} {:>5} {:>10}",
        "language",
        "wasm bytes",
        "compile ms",
        "cached ms",
        "instance ms",
        "events",
        "events/s",
        "p99 ms",
        "dlq",
        "identical"
    );
    for r in &rows {
        let same = if r.identical {
            "yes".to_string()
        } else {
            format!("no ({})", r.differing)
        };
        println!(
            "{:<8} {:>11} {:>11.0} {:>10.2} {:>12.3} {:>8} {:>9.0} {:>7.2} {:>5} {:>10}",
            r.language,
            r.wasm_bytes,
            r.compile_ms,
            r.cached_load_ms,
            r.instantiate_ms,
            r.events,
            r.events_per_s,
            r.p99_ms,
            r.dead_lettered,
            same
        );
    }
    let json: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "language": r.language,
                "wasm_bytes": r.wasm_bytes,
                "compile_ms": r.compile_ms,
                "cached_load_ms": r.cached_load_ms,
                "instantiate_ms": r.instantiate_ms,
                "events": r.events,
                "events_per_s": r.events_per_s,
                "p99_ms": r.p99_ms,
                "dead_lettered": r.dead_lettered,
                "identical": r.identical,
                "differing": r.differing,
            })
        })
        .collect();
    let out = root().join("target/compare.json");
    std::fs::write(&out, serde_json::to_string_pretty(&json)? + "\n")
        .with_context(|| format!("writing {}", out.display()))?;
    eprintln!("compare: wrote {}", out.display());
    if rows.iter().any(|r| !r.identical) {
        bail!("some languages' outputs differ from Rust's");
    }
    Ok(())
}
