//! Bad device data never costs good data: device clocks (on the embedded
//! log, on Kafka, through `forward`), retention that keeps unread records,
//! and CSV files as devices write them, through the real binary.

use std::process::Output;

use serde_json::Value;
use tidewater::streams::ingest::{DEVICE_TIME_HEADER, Tally};
use tidewater::streams::{LogRecord, Record};

use crate::common::*;
use crate::kafka::{broker, read_all, unique};

const DAY: i64 = 86_400_000;
/// 2038-01-19T03:14:08Z: one second past what a signed 32-bit clock holds.
const Y2038: i64 = 2_147_483_648_000;
/// 2010-03-24T09:51:00Z: an archived reading, inside the 20-year window.
const ARCHIVE: i64 = 1_269_424_260_000;

fn now() -> i64 {
    tidewater::db::now_ms() as i64
}

fn iso(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{err}");
    err
}

/// A CSV of five readings (v = 1..5) from a device whose clock jumps: a
/// minute ago (kept), a day ahead, the Unix epoch (a reset), 2038, and an
/// archived 2010 reading (kept). Returns (file text, the device times).
fn jumpy_clock_csv(now: i64) -> (String, [i64; 5]) {
    let times = [now - 60_000, now + DAY, 0, Y2038, ARCHIVE];
    let mut text = String::from("time,v\n");
    for (i, t) in times.iter().enumerate() {
        text += &format!("{},{}\n", iso(*t), i + 1);
    }
    (text, times)
}

/// `tidewater produce TOPIC --csv FILE --device d --time-column time ARGS...`.
fn produce(env: &Env, topic: &str, csv_text: &str, args: &[&str]) -> Output {
    let csv = env.dir.path().join(format!("{topic}.csv"));
    std::fs::write(&csv, csv_text).unwrap();
    env.cmd()
        .args(["produce", topic, "--device", "d", "--time-column", "time"])
        .args(args)
        .arg("--csv")
        .arg(&csv)
        .output()
        .unwrap()
}

/// The value's `v` field.
fn v_of(r: &Record) -> u64 {
    let v: Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
    v["v"].as_u64().unwrap()
}

/// The records sorted by their `v`.
fn by_v(mut records: Vec<LogRecord>) -> Vec<LogRecord> {
    records.sort_by_key(|r| v_of(&r.record));
    records
}

fn device_header(r: &LogRecord) -> Option<i64> {
    header(r, DEVICE_TIME_HEADER).map(|h| h.parse().unwrap())
}

fn replaced(env: &Env, topic: &str) -> Tally {
    env.with_log(|log| {
        tidewater::streams::ingest::device_time::counts(log.db())
            .unwrap()
            .remove(topic)
            .unwrap_or_default()
    })
}

#[test]
fn device_time_on_the_embedded_log_every_record_stored_with_the_policys_timestamp() {
    let env = Env::new();
    let (text, times) = jumpy_clock_csv(now());
    let err = ok(&produce(&env, "jumpy", &text, &[]));
    assert!(
        err.contains("3 records stamped with the ingest time, their device clock out of the window (2 ahead by more than 15 min, 1 behind by more than 20 years or at/before 1970)"),
        "{err}"
    );
    let got = by_v(env.records("jumpy"));
    assert_eq!(got.len(), 5);
    // Kept: the device's time, no header.
    for i in [0, 4] {
        assert_eq!(got[i].record.timestamp_ms, times[i]);
        assert_eq!(device_header(&got[i]), None);
    }
    // Replaced: the ingest time (the append time, to the ms), the device's in the header.
    for i in [1, 2, 3] {
        assert_eq!(got[i].record.timestamp_ms, got[i].append_ms as i64);
        assert_eq!(device_header(&got[i]), Some(times[i]), "record {i}");
    }
    assert_eq!(
        replaced(&env, "jumpy"),
        Tally {
            ahead: 2,
            behind: 1
        }
    );
    // `topics` shows the count; `stats` too.
    let out = env
        .cmd()
        .args(["topics", "--format", "json"])
        .output()
        .unwrap();
    let topics: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        topics[0]["device_time_replaced"],
        serde_json::json!({"ahead": 2, "behind": 1})
    );
    let out = env.cmd().args(["stats"]).output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("jumpy                                2         1"),
        "{table}"
    );

    // A narrower window, from the flags: the archive goes too.
    let (text, times) = jumpy_clock_csv(now());
    ok(&produce(&env, "narrow", &text, &["--max-behind", "30d"]));
    let got = by_v(env.records("narrow"));
    assert_eq!(device_header(&got[4]), Some(times[4]));
    assert_eq!(got[4].record.timestamp_ms, got[4].append_ms as i64);
    assert_eq!(
        replaced(&env, "narrow"),
        Tally {
            ahead: 2,
            behind: 2
        }
    );
}

#[test]
fn device_time_on_kafka_every_record_stored_none_rewritten_by_librdkafka() {
    let Some(brokers) = broker() else { return };
    let env = Env::new();
    let topic = unique("jumpy");
    let before = now();
    let (text, times) = jumpy_clock_csv(before);
    let err = ok(&produce(&env, &topic, &text, &["--brokers", &brokers]));
    let after = now();
    assert!(
        err.contains("3 records stamped with the ingest time"),
        "{err}"
    );
    let got = by_v(read_all(&brokers, &topic));
    assert_eq!(got.len(), 5, "{got:?}");
    for i in [0, 4] {
        assert_eq!(got[i].record.timestamp_ms, times[i]);
        assert_eq!(device_header(&got[i]), None);
    }
    for i in [1, 2, 3] {
        let ts = got[i].record.timestamp_ms;
        assert!((before..=after).contains(&ts), "record {i}: {ts}");
        assert_eq!(device_header(&got[i]), Some(times[i]), "record {i}");
    }
    // The 1970 reading is stamped by the policy, the same for every record
    // of the file, not by librdkafka reading 0 as "now".
    assert_eq!(got[1].record.timestamp_ms, got[2].record.timestamp_ms);
    assert_eq!(
        replaced(&env, &topic),
        Tally {
            ahead: 2,
            behind: 1
        }
    );
}

#[test]
fn on_kafka_a_record_the_broker_refuses_is_rejected_with_its_line_and_the_rest_is_stored() {
    let Some(brokers) = broker() else { return };
    let env = Env::new();
    let topic = unique("refused");
    let now = now();
    // A window of 3 days ahead lets the row a day ahead through the policy;
    // the broker refuses it (more than 1 h ahead of its clock).
    let text = format!(
        "time,v\n{},1\n{},2\n{},3\n",
        iso(now),
        iso(now + DAY),
        iso(now + 1)
    );
    let out = produce(
        &env,
        &topic,
        &text,
        &["--brokers", &brokers, "--max-ahead", "3d"],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("{topic}.csv:3: the broker refused the record: ")),
        "{err}"
    );
    let stored = by_v(read_all(&brokers, &topic));
    assert_eq!(
        stored
            .iter()
            .map(|r| (v_of(&r.record), r.record.timestamp_ms))
            .collect::<Vec<_>>(),
        [(1, now), (3, now + 1)]
    );
    let rejected = read_all(&brokers, &format!("{topic}.rejected"));
    assert_eq!(rejected.len(), 1);
    assert_eq!(
        header(&rejected[0], "tidewater-source-line").as_deref(),
        Some("3")
    );
    let why = header(&rejected[0], "tidewater-error-message").unwrap();
    assert!(
        why.starts_with("the broker refused the record: ") && why.contains("InvalidTimestamp"),
        "{why}"
    );
}

/// Appends records to the embedded topic `from` as they are (no policy: an
/// old data dir, or outputs stamped with their inputs' times).
fn stored_as_is(env: &Env, from: &str, times: &[i64]) {
    let records = times
        .iter()
        .enumerate()
        .map(|(i, t)| Record {
            timestamp_ms: *t,
            key: Some(b"d".to_vec()),
            value: Some(format!("{{\"v\":{}}}", i + 1).into_bytes()),
            headers: vec![("h".into(), b"x".to_vec())],
        })
        .collect();
    env.produce(from, records);
}

fn forward(env: &Env, from: &str, brokers: &str, topic: &str, extra: &[&str]) -> Output {
    env.cmd()
        .args([
            "forward",
            "--until-idle",
            "--from",
            from,
            "--to-kafka",
            brokers,
        ])
        .args(["--topic", topic])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
fn device_time_through_forward_exact_timestamps_headers_and_counts() {
    let Some(brokers) = broker() else { return };
    let env = Env::new();
    let topic = unique("fwd-clock");
    let now = now();
    let times = [now - 1000, now + DAY, 0, Y2038, ARCHIVE];
    stored_as_is(&env, "edge", &times);
    let err = ok(&forward(&env, "edge", &brokers, &topic, &[]));
    assert!(err.contains("forwarded 5 records"), "{err}");
    let local = env.records("edge");
    let got = by_v(read_all(&brokers, &topic));
    assert_eq!(got.len(), 5);
    for (i, r) in got.iter().enumerate() {
        assert_eq!(r.record.key, local[i].record.key);
        assert_eq!(r.record.value, local[i].record.value);
        assert_eq!(header(r, "h").as_deref(), Some("x"));
        if [1, 2, 3].contains(&i) {
            // The record's append time in the embedded log stands in for the ingest clock.
            assert_eq!(
                r.record.timestamp_ms, local[i].append_ms as i64,
                "record {i}"
            );
            assert_eq!(device_header(r), Some(times[i]), "record {i}");
        } else {
            assert_eq!(r.record.timestamp_ms, times[i]);
            assert_eq!(r.record.headers, local[i].record.headers);
        }
    }
    assert_eq!(
        replaced(&env, &topic),
        Tally {
            ahead: 2,
            behind: 1
        }
    );
}

#[test]
fn a_record_the_broker_refuses_is_dead_lettered_with_its_offset_and_the_next_one_ships() {
    let Some(brokers) = broker() else { return };
    let env = Env::new();
    let topic = unique("fwd-refused");
    let now = now();
    // With a window of 3 days ahead, the record a day ahead passes the
    // policy; the broker (log.message.timestamp.after.max.ms = 1 h) refuses it.
    stored_as_is(&env, "edge", &[now, now + DAY, now + 1]);
    let out = forward(&env, "edge", &brokers, &topic, &["--max-ahead", "3d"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    let dlq = format!("forward.{topic}.dlq");
    assert!(err.contains("forwarded 2 records"), "{err}");
    assert!(
        err.contains(&format!(
            "the broker refused 1 records: they are in the embedded-log topic {dlq}"
        )),
        "{err}"
    );
    let shipped = by_v(read_all(&brokers, &topic));
    assert_eq!(
        shipped
            .iter()
            .map(|r| (v_of(&r.record), r.record.timestamp_ms))
            .collect::<Vec<_>>(),
        [(1, now), (3, now + 1)]
    );
    let letters = env.records(&dlq);
    assert_eq!(letters.len(), 1);
    let l = &letters[0];
    assert_eq!(v_of(&l.record), 2);
    assert_eq!(l.record.timestamp_ms, now + DAY);
    assert_eq!(
        header(l, "tidewater-error-kind").as_deref(),
        Some("refused-by-broker")
    );
    assert_eq!(header(l, "tidewater-source-topic").as_deref(), Some("edge"));
    assert_eq!(
        header(l, "tidewater-source-partition").as_deref(),
        Some("0")
    );
    assert_eq!(header(l, "tidewater-source-offset").as_deref(), Some("1"));
    let message = header(l, "tidewater-error-message").unwrap();
    assert!(
        message.starts_with(&format!("Kafka topic {topic:?}: ")) && message.contains("imestamp"),
        "{message}"
    );
    // The position moved past all three: nothing is sent again.
    let err = ok(&forward(
        &env,
        "edge",
        &brokers,
        &topic,
        &["--max-ahead", "3d"],
    ));
    assert!(err.contains("forwarded 0 records"), "{err}");
}

/// A config reading `in` with two probe processors, `reader` and `laggard`,
/// and `in` kept for 1 ms (`retention` is the TOML of its retention).
fn retention_config(env: &Env, retention: &str) -> std::path::PathBuf {
    let probe = plugin("probe");
    env.config(&format!(
        r#"
[[topic]]
name = "in"
{retention}

[[processor]]
name = "reader"
component = "{p}"
inputs = ["in"]
output = "out"

[[processor]]
name = "laggard"
component = "{p}"
inputs = ["in"]
output = "out2"
"#,
        p = probe.display()
    ))
}

fn run_paused(env: &Env, config: &std::path::Path) -> Value {
    let out = env
        .cmd()
        .args([
            "run",
            "--paused",
            "--until-idle",
            "--format",
            "json",
            "--config",
        ])
        .arg(config)
        .output()
        .unwrap();
    summary(&out)
}

fn start_offset(env: &Env) -> u64 {
    env.with_log(|log| log.start_offset("in", 0).unwrap())
}

#[test]
fn retention_keeps_records_no_processor_has_read_by_default() {
    let env = Env::new();
    env.produce("in", (0..100).map(|i| value(format!("e{i}"))).collect());
    let config = retention_config(&env, "retention = \"1ms\"");
    // Neither processor runs; retention runs as `run` starts.
    run_paused(&env, &config);
    assert_eq!(start_offset(&env), 0);
    let stats = env.stats();
    for p in ["reader", "laggard"] {
        assert_eq!(stats[p]["lag"], 100, "{stats}");
        assert_eq!(stats[p]["deleted_unread"], 0, "{stats}");
    }
    // Both read everything; now retention removes it all.
    let s = env.run(&config);
    assert_eq!(counters(&s, "laggard")["events_in"], 100);
    run_paused(&env, &config);
    assert_eq!(start_offset(&env), 100);
    assert_eq!(env.stats()["laggard"]["deleted_unread"], 0);
}

#[test]
fn retention_unread_delete_counts_every_record_deleted_unread_exactly() {
    let env = Env::new();
    env.produce("in", (0..100).map(|i| value(format!("e{i}"))).collect());
    let config = retention_config(
        &env,
        "retention.time = \"1ms\"\nretention.unread = \"delete\"",
    );
    let out = env
        .cmd()
        .env("TIDEWATER_LOG", "tidewater=warn")
        .args(["run", "--paused", "--until-idle", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.lines().any(|l| l.contains("WARN")
            && l.contains("consumer=laggard")
            && l.contains("records=100")
            && l.contains("retention deleted records this consumer had not read")),
        "{log}"
    );
    assert_eq!(start_offset(&env), 100);
    let stats = env.stats();
    for p in ["reader", "laggard"] {
        assert_eq!(stats[p]["deleted_unread"], 100, "{stats}");
        // Lag does not hide them: it counts them until the processor passes them.
        assert_eq!(stats[p]["lag"], 100, "{stats}");
        assert!(
            stats[p]["status"]
                .as_str()
                .unwrap()
                .ends_with("; 100 records deleted by retention before it read them"),
            "{stats}"
        );
    }
    // They run: nothing to read; the count stays, exact.
    env.produce("in", vec![value("late")]);
    let s = env.run(&config);
    assert_eq!(counters(&s, "laggard")["events_in"], 1);
    let stats = env.stats();
    assert_eq!(
        (
            &stats["laggard"]["deleted_unread"],
            &stats["laggard"]["lag"]
        ),
        (&Value::from(100), &Value::from(0))
    );
}

#[test]
fn metrics_count_replaced_device_times_and_records_deleted_unread() {
    let env = Env::new();
    let (text, _) = jumpy_clock_csv(now());
    ok(&produce(&env, "jumpy", &text, &[]));
    env.produce("in", (0..10).map(|i| value(format!("e{i}"))).collect());
    let config = retention_config(
        &env,
        "retention.time = \"1ms\"\nretention.unread = \"delete\"",
    );
    // Paused: neither processor reads; retention runs as the host starts.
    let host = crate::deploy::Host::start(&env, &config, |a| a.start_paused = true);
    let anonymous = tidewater::admin::client::Client::new(&host.url, None).unwrap();
    let metrics = || {
        let (status, text) = host.call(&anonymous, "GET", "/metrics", vec![]);
        assert_eq!(status, 200);
        text.as_str().unwrap().to_owned()
    };
    // Retention runs once the API answers: wait for its pass (up to 30 s).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut text = metrics();
    while !text.contains("tidewater_deleted_unread_total{processor=\"laggard\"} 10")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
        text = metrics();
    }
    for line in [
        "tidewater_deleted_unread_total{processor=\"laggard\"} 10",
        "tidewater_deleted_unread_total{processor=\"reader\"} 10",
        "tidewater_device_time_replaced_total{topic=\"jumpy\",reason=\"ahead\"} 2",
        "tidewater_device_time_replaced_total{topic=\"jumpy\",reason=\"behind\"} 1",
        "tidewater_lag{processor=\"laggard\"} 10",
    ] {
        assert!(text.lines().any(|l| l == line), "{line} not in\n{text}");
    }
    drop(host.stop());
}

/// The records of `topic` as (timestamp, value).
fn events(env: &Env, topic: &str) -> Vec<(i64, String)> {
    env.records(topic)
        .into_iter()
        .map(|r| {
            (
                r.record.timestamp_ms,
                String::from_utf8(r.record.value.unwrap()).unwrap(),
            )
        })
        .collect()
}

/// 2024-03-01T00:00:00Z, in ms.
const MAR_1: i64 = 1_709_251_200_000;
const HOUR: i64 = 3_600_000;

#[test]
fn csv_a_preamble_is_skipped_and_bad_rows_name_their_real_line() {
    let env = Env::new();
    let text = "TOA5,station-12,CR1000,4711\r\n\"units\",\"deg C\r\ntime,temp\r\n2024-03-01T00:00:00Z,5.5\r\nnot a time,6\r\n2024-03-01T01:00:00Z,6.5\r\n";
    let out = produce(&env, "pre", text, &["--skip-lines", "2"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("pre.csv:5: time \"not a time\""), "{err}");
    assert_eq!(
        events(&env, "pre"),
        [
            (
                MAR_1,
                r#"{"device":"d","ts":"2024-03-01T00:00:00Z","temp":5.5}"#.into()
            ),
            (
                MAR_1 + HOUR,
                r#"{"device":"d","ts":"2024-03-01T01:00:00Z","temp":6.5}"#.into()
            ),
        ]
    );
    let rejected = env.records("pre.rejected");
    assert_eq!(
        header(&rejected[0], "tidewater-source-line").as_deref(),
        Some("5")
    );
}

#[test]
fn csv_skip_lines_that_leave_no_header_name_the_file_and_n() {
    let env = Env::new();
    let out = produce(
        &env,
        "short",
        "TOA5,station-12\r\nunits,C\r\n",
        &["--skip-lines", "2"],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("short.csv: 0 records were stored before the error: no header is left after skipping 2 lines (--skip-lines 2): the file has 2 lines"),
        "{err}"
    );
    assert!(!err.contains("empty"), "{err}");
}

#[test]
fn csv_date_and_time_in_two_columns_with_a_pattern_hour_24_and_sentinels() {
    let env = Env::new();
    let text = "date,time,temp,rh\n01.03.2024,23:00,7.5,80\n01.03.2024,24:00,-9900,81\n02.03.2024,01:00,7.25,-999.0\n";
    ok(&produce(
        &env,
        "split",
        text,
        &[
            "--date-column",
            "date",
            "--time-format",
            "%d.%m.%Y %H:%M",
            "--null-values",
            "-9900,-999",
        ],
    ));
    assert_eq!(
        events(&env, "split"),
        [
            (
                MAR_1 + 23 * HOUR,
                r#"{"device":"d","ts":"01.03.2024 23:00","temp":7.5,"rh":80}"#.into()
            ),
            (
                MAR_1 + 24 * HOUR,
                r#"{"device":"d","ts":"01.03.2024 24:00","temp":null,"rh":81}"#.into()
            ),
            (
                MAR_1 + 25 * HOUR,
                r#"{"device":"d","ts":"02.03.2024 01:00","temp":7.25,"rh":null}"#.into()
            ),
        ]
    );
}

#[test]
fn csv_hour_24_in_iso_times() {
    let env = Env::new();
    ok(&produce(
        &env,
        "h24",
        "time,v\n2024-02-29 24:00,1\n2024-03-01T24:00:00Z,2\n",
        &[],
    ));
    assert_eq!(
        events(&env, "h24"),
        [
            (
                MAR_1,
                r#"{"device":"d","ts":"2024-02-29 24:00","v":1}"#.into()
            ),
            (
                MAR_1 + 24 * HOUR,
                r#"{"device":"d","ts":"2024-03-01T24:00:00Z","v":2}"#.into()
            ),
        ]
    );
}

#[test]
fn csv_epoch_seconds_milliseconds_and_microseconds() {
    let env = Env::new();
    // Each unit rounds to the nearest ms the same way, a half ms away
    // from zero: .250 exactly, just under .2505, and .2505.
    for (flag, cells) in [
        (
            "epoch-s",
            ["1709251200.25", "1709251200.2504999", "1709251200.2505"],
        ),
        (
            "epoch-ms",
            ["1709251200250", "1709251200250.4999", "1709251200250.5"],
        ),
        (
            "epoch-us",
            ["1709251200250000", "1709251200250499", "1709251200250500"],
        ),
    ] {
        ok(&produce(
            &env,
            flag,
            &format!("time,v\n{},1\n{},2\n{},3\n", cells[0], cells[1], cells[2]),
            &["--time-format", flag],
        ));
        let want: Vec<(i64, String)> = [250, 250, 251]
            .into_iter()
            .zip(cells)
            .enumerate()
            .map(|(i, (ms, cell))| {
                (
                    MAR_1 + ms,
                    format!(r#"{{"device":"d","ts":"{cell}","v":{}}}"#, i + 1),
                )
            })
            .collect();
        assert_eq!(events(&env, flag), want, "{flag}");
    }
    // A unit there is no word for is refused by name before anything is read.
    let out = produce(&env, "ns", "time,v\n1,1\n", &["--time-format", "epoch-ns"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(
            "--time-format \"epoch-ns\" is not a strftime pattern (no %), nor iso, epoch-s, epoch-ms or epoch-us"
        ),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn csv_elapsed_times_from_a_start() {
    let env = Env::new();
    let text = "time,v\n0 days 00:00:00,1\n0 days 00:00:01,2\n1 days 02:00:00.5,3\n";
    ok(&produce(
        &env,
        "elapsed",
        text,
        &["--start", "2024-03-01T00:00:00Z"],
    ));
    let got: Vec<i64> = events(&env, "elapsed").into_iter().map(|e| e.0).collect();
    assert_eq!(got, [MAR_1, MAR_1 + 1000, MAR_1 + 26 * HOUR + 500]);
    assert_eq!(
        events(&env, "elapsed")[1].1,
        r#"{"device":"d","ts":"0 days 00:00:01","v":2}"#
    );
}

#[test]
fn csv_a_bad_time_format_is_refused_before_anything_is_read() {
    let env = Env::new();
    let out = produce(&env, "x", "time,v\n1,1\n", &["--time-format", "%H:%M"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--time-format \"%H:%M\" does not hold a full date"),
        "{err}"
    );
}

#[test]
fn a_disk_full_names_the_data_dir_and_what_was_stored_before_it() {
    let env = Env::new();
    // 20,000 rows, 500 per commit; the database may grow to 4 MiB only
    // (files larger fail with EFBIG, as on a full disk).
    let mut text = String::from("time,v,pad\n");
    for i in 0..20_000 {
        text += &format!("2024-03-01T00:00:00Z,{i},{}\n", "x".repeat(200));
    }
    let csv = env.dir.path().join("big.csv");
    std::fs::write(&csv, text).unwrap();
    std::fs::create_dir_all(env.data_dir()).unwrap();
    let out = env
        .cmd()
        .arg("produce")
        .args([
            "big",
            "--device",
            "d",
            "--time-column",
            "time",
            "--chunk",
            "500",
            "--csv",
        ])
        .arg(&csv)
        .output_with_file_limit(4 << 20);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let data_dir = env.data_dir().display().to_string();
    let line = err
        .lines()
        .find(|l| l.contains("cannot store records of"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(line.contains(&format!("in data dir {data_dir}")), "{line}");
    // "...; N records were stored before it (the rows up to line L)"
    let stored: usize = line
        .split("; ")
        .nth(1)
        .and_then(|s| s.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        stored > 0 && stored < 20_000 && stored.is_multiple_of(500),
        "{line}"
    );
    assert!(
        line.contains(&format!("(the rows up to line {})", stored + 1)),
        "{line}"
    );
    // Exactly those are in the topic: a failed commit stored nothing.
    assert_eq!(env.records("big").len(), stored);
}

/// Running a command with the size of files it may write limited, as a full
/// disk would (SIGXFSZ ignored, so writes fail with EFBIG).
trait FileLimit {
    fn output_with_file_limit(&mut self, bytes: u64) -> Output;
}

impl FileLimit for std::process::Command {
    fn output_with_file_limit(&mut self, bytes: u64) -> Output {
        let program = self.get_program().to_owned();
        let args: Vec<_> = self.get_args().map(|a| a.to_owned()).collect();
        let mut sh = std::process::Command::new("bash");
        sh.arg("-c")
            .arg(format!(
                "trap '' XFSZ; ulimit -f {}; exec \"$0\" \"$@\"",
                bytes / 1024
            ))
            .arg(program)
            .args(args);
        for (k, v) in self.get_envs() {
            match v {
                Some(v) => sh.env(k, v),
                None => sh.env_remove(k),
            };
        }
        if let Some(dir) = self.get_current_dir() {
            sh.current_dir(dir);
        }
        sh.output().unwrap()
    }
}
