//! The PostgreSQL sink's rows/s, append and upsert, batches of 1,000 (each
//! batch one transaction with the sink's position), next to `psql \copy`
//! of the same rows into a table of the same shape, in the same run, on
//! the same server: the ceiling a user would compare with. The sink's time
//! includes reading the records from the embedded log and mapping the
//! JSON; COPY's includes psql reading and sending a CSV file. Every row is
//! new to its table, so the sink writes each batch with a plain `INSERT`
//! (its `ON CONFLICT` statement is for batches with rows already there).
//!
//! Needs a server: `make bench` starts one (its URL is in
//! target/postgres/url); without one this bench says so and measures nothing.
//! Prints a table and writes target/bench-postgres.json.
#![allow(missing_docs, reason = "a bench binary")]

use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde_json::json;
use tidewater::streams::Record;
use tidewater::streams::embedded::Log;
use tidewater::streams::sinks::postgres::PostgresWriter;
use tidewater::streams::sinks::{
    DeadLetters, Destination, Input, SinkConfig, SinkControl, SinkTask, Step,
};

mod support;
use support::{root, scratch_dir};

/// Rows per measured run.
const ROWS: usize = 200_000;
/// Measured runs of each; the best counts.
const RUNS: usize = 3;

fn server() -> Option<String> {
    let url = std::fs::read_to_string(root().join("target/postgres/url")).ok()?;
    let url = url.trim().to_owned();
    let ok = std::process::Command::new("psql")
        .args([url.as_str(), "-qAtc", "SELECT 1"])
        .output()
        .is_ok_and(|o| o.status.success());
    ok.then_some(url)
}

fn psql(url: &str, sql: &str) {
    let out = std::process::Command::new("psql")
        .args([url, "-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The rows: readings of 100 devices, one a second each; JSON for the sink,
/// CSV for COPY.
fn rows() -> (Vec<Record>, String) {
    let mut records = Vec::with_capacity(ROWS);
    let mut csv = String::new();
    let start = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").unwrap();
    for i in 0..ROWS {
        let device = format!("sensor-{:03}", i % 100);
        let ts = (start + chrono::Duration::seconds((i / 100) as i64))
            .to_utc()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let celsius = 15.0 + (i % 997) as f64 / 100.0;
        let humidity = 40.0 + (i % 613) as f64 / 10.0;
        let key = format!("{device}/{ts}");
        let value =
            json!({"device": device, "ts": ts, "seq": i, "celsius": celsius, "humidity": humidity});
        records.push(Record {
            value: Some(value.to_string().into_bytes()),
            headers: vec![("idempotency-key".into(), key.clone().into_bytes())],
            ..Record::default()
        });
        csv.push_str(&format!("{device},{ts},{i},{celsius},{humidity},{key}\n"));
    }
    (records, csv)
}

const COLUMNS: &str = r#"
columns = [
  { name = "device", type = "text", pointer = "/device" },
  { name = "ts", type = "timestamptz", pointer = "/ts" },
  { name = "seq", type = "bigint", pointer = "/seq" },
  { name = "celsius", type = "double", pointer = "/celsius" },
  { name = "humidity", type = "double", pointer = "/humidity" },
]
"#;

/// The sink's time to write every record of `topic` into `table`.
fn sink_run(log: &Log, url: &str, name: &str, table: &str, mode: &str) -> Duration {
    let upsert = if mode == "upsert" {
        "mode = \"upsert\"\nkey = [\"device\", \"ts\"]\nversion = \"seq\"\n"
    } else {
        ""
    };
    let text = format!(
        "name = \"{name}\"\ntopic = \"readings\"\nbatch = 1000\n[postgres]\nurl = \"{url}\"\ntable = \"{table}\"\ncreate_table = true\n{upsert}{COLUMNS}"
    );
    let config: SinkConfig = toml::from_str(&text).unwrap();
    let writer = PostgresWriter::new(name, "readings", config.postgres.clone().unwrap()).unwrap();
    let control = SinkControl::new(name, "postgres", "readings");
    let dlq = DeadLetters::embedded(log.db().clone(), format!("{name}.dlq"), 1);
    let mut task = SinkTask::new(
        config,
        Input::embedded(log.clone()),
        dlq,
        Destination::Postgres(Box::new(writer)),
        control,
    );
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    task.prepare(&rt).unwrap();
    let stop = AtomicBool::new(false);
    let started = Instant::now();
    let mut written = 0;
    loop {
        match task.step(&rt, &stop).unwrap() {
            Step::Delivered(d) => {
                assert_eq!(d.dead_lettered, 0);
                written += d.records;
            }
            Step::Idle => break,
            other => panic!("the bench's sink did not deliver: {other:?}"),
        }
    }
    let took = started.elapsed();
    assert_eq!(written as usize, ROWS);
    took
}

/// psql's time to `\copy` the CSV into `table`.
fn copy_run(url: &str, table: &str, csv: &std::path::Path) -> Duration {
    let started = Instant::now();
    psql(
        url,
        &format!(
            "\\copy {table} (device, ts, seq, celsius, humidity, idempotency_key) FROM '{}' CSV",
            csv.display()
        ),
    );
    started.elapsed()
}

fn main() {
    let Some(base) = server() else {
        println!(
            "postgres bench: no PostgreSQL (make pg-up, or make bench which starts one); nothing measured"
        );
        return;
    };
    let db = format!(
        "tw_bench_{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    );
    psql(&base, &format!("CREATE DATABASE {db}"));
    let url = format!("{}/{db}", base.rsplit_once('/').unwrap().0);
    let dir = scratch_dir();
    let (records, csv) = rows();
    let csv_file = dir.path().join("rows.csv");
    std::fs::File::create(&csv_file)
        .unwrap()
        .write_all(csv.as_bytes())
        .unwrap();
    let log = Log::new(tidewater::db::open(&dir.path().join("data")).unwrap(), 1);
    log.append("readings", records).unwrap();

    let mut best: std::collections::BTreeMap<&str, Duration> = Default::default();
    let mut keep = |what: &'static str, d: Duration| {
        let e = best.entry(what).or_insert(d);
        *e = (*e).min(d);
    };
    for run in 0..RUNS {
        for (mode, pk) in [("append", "idempotency_key"), ("upsert", "device, ts")] {
            let table = format!("sink_{mode}_{run}");
            keep(
                if mode == "append" {
                    "sink append"
                } else {
                    "sink upsert"
                },
                sink_run(&log, &url, &format!("bench-{mode}-{run}"), &table, mode),
            );
            let copy_table = format!("copy_{mode}_{run}");
            psql(
                &url,
                &format!(
                    "CREATE TABLE {copy_table} (device text NOT NULL, ts timestamptz NOT NULL, seq bigint, \
                     celsius double precision, humidity double precision, idempotency_key text, PRIMARY KEY ({pk}))"
                ),
            );
            keep(
                if mode == "append" {
                    "copy append"
                } else {
                    "copy upsert"
                },
                copy_run(&url, &copy_table, &csv_file),
            );
        }
    }
    let rate = |k: &str| ROWS as f64 / best[k].as_secs_f64();
    println!("PostgreSQL sink, {ROWS} rows, batches of 1000, best of {RUNS}:");
    println!(
        "{:<10} {:>12} {:>12} {:>8}",
        "mode", "sink rows/s", "COPY rows/s", "ratio"
    );
    let mut report = serde_json::Map::new();
    for mode in ["append", "upsert"] {
        let (s, c) = (rate(&format!("sink {mode}")), rate(&format!("copy {mode}")));
        println!("{mode:<10} {s:>12.0} {c:>12.0} {:>8.2}", s / c);
        report.insert(
            mode.into(),
            json!({"sink_rows_per_s": s.round(), "copy_rows_per_s": c.round(), "ratio": (s / c * 100.0).round() / 100.0}),
        );
    }
    std::fs::write(
        root().join("target/bench-postgres.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    psql(&base, &format!("DROP DATABASE {db}"));
}
