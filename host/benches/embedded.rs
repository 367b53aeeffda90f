//! The embedded log on disk, end to end through the real binary: events/s
//! of the demo's enrich job (dedupe on), bytes stored per event, and the
//! peak resident memory of the demo's two processors and of 100 processors
//! on one host. Writes target/bench-embedded.json for the summary table
//! (`host/benches/summary.rs`).
//!
//! - **Throughput**: the demo's four real data sets, each produced four
//!   times under other device names with 5% of readings sent again
//!   (307,846 events in 4 partitions), then `tidewater run --until-idle`
//!   with enrich deduplicating on `json:/device,/ts`. events/s is the
//!   processor's own count over its busy time (first batch to last
//!   commit, every commit an fsync), as `run` prints it.
//! - **Storage**: the database file after that run, against the key,
//!   value and header bytes of every record it holds (inputs and outputs;
//!   each output's `idempotency-key` header carries its key).
//! - **Memory**: `peak_rss_bytes` as `run --format json` reports it.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::{Value, json};

mod support;
use support::root;

/// (CSV under data/, device prefix, time column): the demo's inputs.
const DATA: [(&str, &str, &str); 4] = [
    ("sea_surface_temperature.csv.gz", "buoy-b0", "time (UTC)"),
    ("water-flow.csv", "pipeline-", "Time"),
    ("occupancy.csv", "office-1", "time"),
    ("CGM.csv.gz", "cgm-", "datetime"),
];

fn tidewater(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tidewater"));
    c.env("TIDEWATER_DATA_DIR", dir)
        .env("TIDEWATER_LOG", "warn")
        .current_dir(root());
    c
}

fn ok(c: &mut Command) -> Vec<u8> {
    let out = c.output().expect("run target/release/tidewater");
    assert!(
        out.status.success(),
        "{c:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// A fresh data dir under target/ (on disk, as users run it).
fn data_dir(name: &str) -> PathBuf {
    let dir = root().join("target/bench-embedded").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("data dir");
    dir
}

/// Produces the demo's inputs `copies` times (devices numbered 1..=copies).
fn produce(dir: &Path, copies: u32, files: &[(&str, &str, &str)]) {
    for i in 1..=copies {
        for (file, device, time) in files {
            ok(tidewater(dir).args([
                "produce",
                "sensor-readings",
                "--partitions",
                "4",
                "--redeliver-percent",
                "5",
                "--csv",
                &format!("data/{file}"),
                "--device",
                &format!("{device}{i}"),
                "--time-column",
                time,
            ]));
        }
    }
}

/// `run --until-idle --format json` of `config`; its summary.
fn run(dir: &Path, config: &str) -> Value {
    let path = dir.join("bench.toml");
    std::fs::write(&path, config).expect("config");
    let out = ok(tidewater(dir).args([
        "run",
        "--config",
        path.to_str().expect("utf-8 path"),
        "--until-idle",
        "--format",
        "json",
    ]));
    serde_json::from_slice(&out).expect("run's JSON summary")
}

fn enrich_config(name: &str, output: &str) -> String {
    let plugin = root().join("target/plugins/enrich.wasm");
    format!(
        "[[processor]]\nname = \"{name}\"\ncomponent = \"{}\"\ninputs = [\"sensor-readings\"]\n\
         output = \"{output}\"\nidempotency.key = \"json:/device,/ts\"\n",
        plugin.display()
    )
}

/// Key, value and header bytes of every record of `topic`.
fn payload_bytes(dir: &Path, topic: &str) -> u64 {
    let out = ok(tidewater(dir).args(["consume", topic, "--format", "jsonl"]));
    let text = |v: &Value| v.as_str().map_or(0, |s| s.len() as u64);
    out.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|line| {
            let r: Value = serde_json::from_slice(line).expect("consume's JSON line");
            let headers: u64 = r["headers"]
                .as_array()
                .map(|h| h.iter().map(|p| text(&p[0]) + text(&p[1])).sum())
                .unwrap_or(0);
            text(&r["key"]) + text(&r["value"]) + headers
        })
        .sum()
}

fn processor_rate(summary: &Value) -> (u64, f64) {
    let p = &summary["processors"][0];
    let events = p["counters"]["events_in"].as_u64().expect("events_in");
    let busy = p["busy_ms"].as_u64().expect("busy_ms").max(1);
    (events, events as f64 * 1000.0 / busy as f64)
}

fn throughput_and_storage() -> Value {
    let dir = data_dir("enrich");
    produce(&dir, 4, &DATA);
    let summary = run(&dir, &enrich_config("enrich", "readings-enriched"));
    let (events, per_s) = processor_rate(&summary);
    let meta = std::fs::metadata(dir.join("tidewater.redb")).expect("database file");
    // redb grows its file by doubling, with set_len: the part not written
    // yet is a hole that takes no disk. What the disk holds is the blocks.
    let file = meta.len();
    let disk = std::os::unix::fs::MetadataExt::blocks(&meta) * 512;
    let payload = payload_bytes(&dir, "sensor-readings") + payload_bytes(&dir, "readings-enriched");
    println!(
        "embedded, on disk: {events} events (enrich, dedupe on) at {per_s:.0} events/s; \
         {disk} bytes on disk ({file} the file's length) for {payload} bytes of records: \
         {:.2}x ({:.2}x), {:.0} bytes per input event",
        disk as f64 / payload as f64,
        file as f64 / payload as f64,
        disk as f64 / events as f64
    );
    json!({
        "events": events,
        "events_per_s": per_s,
        "file_bytes": file,
        "disk_bytes": disk,
        "payload_bytes": payload,
        "storage_ratio": disk as f64 / payload as f64,
        "file_ratio": file as f64 / payload as f64,
        "bytes_per_event": disk as f64 / events as f64,
    })
}

fn demo_memory() -> Value {
    let dir = data_dir("demo");
    produce(&dir, 1, &DATA);
    let config = std::fs::read_to_string(root().join("demo/tidewater.toml"))
        .expect("demo config")
        .replace("../target/", &format!("{}/target/", root().display()));
    let summary = run(&dir, &config);
    let rss = summary["peak_rss_bytes"].as_u64().expect("peak_rss_bytes");
    println!(
        "demo (enrich + threshold): peak RSS {:.1} MiB",
        rss as f64 / (1 << 20) as f64
    );
    json!(rss)
}

fn hundred_processors_memory() -> Value {
    let dir = data_dir("hundred");
    produce(&dir, 1, &DATA[1..3]);
    let config: String = (0..100)
        .map(|i| enrich_config(&format!("enrich-{i}"), &format!("out-{i}")))
        .collect();
    let summary = run(&dir, &config);
    let rss = summary["peak_rss_bytes"].as_u64().expect("peak_rss_bytes");
    let events: u64 = summary["processors"]
        .as_array()
        .expect("processors")
        .iter()
        .map(|p| p["counters"]["events_in"].as_u64().unwrap_or(0))
        .sum();
    println!(
        "100 processors ({events} events in all): peak RSS {:.1} MiB",
        rss as f64 / (1 << 20) as f64
    );
    json!(rss)
}

fn main() {
    // `cargo bench` passes --bench; a filter that is not ours skips this.
    if let Some(filter) = std::env::args().skip(1).find(|a| !a.starts_with('-'))
        && !"embedded".contains(filter.as_str())
    {
        return;
    }
    let mut result = throughput_and_storage();
    result["demo_peak_rss_bytes"] = demo_memory();
    result["hundred_processors_peak_rss_bytes"] = hundred_processors_memory();
    let path = root().join("target/bench-embedded.json");
    std::fs::write(&path, serde_json::to_vec_pretty(&result).expect("JSON")).expect("write");
    println!("wrote {}", path.display());
    let _ = std::fs::remove_dir_all(root().join("target/bench-embedded"));
}
