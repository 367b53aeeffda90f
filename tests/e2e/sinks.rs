//! Sinks: `[[sink]]` sections delivering a topic to a real PostgreSQL 15
//! (Debian's, started by `make test` through `postgres/pg.sh`) and to a real
//! HTTP server on 127.0.0.1:0.
//!
//! `make test` requires the server (TIDEWATER_REQUIRE_POSTGRES=1); a plain
//! `cargo test` without one skips the PostgreSQL tests and says so.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tidewater::streams::Record;

use crate::common::*;

/// A name no other test uses.
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{prefix}_{}_{}_{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// A blocking PostgreSQL client for assertions.
struct Db {
    rt: tokio::runtime::Runtime,
    client: tokio_postgres::Client,
}

impl Db {
    fn connect(url: &str) -> Result<Db, tokio_postgres::Error> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt.block_on(async {
            let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            Ok::<_, tokio_postgres::Error>(client)
        })?;
        Ok(Db { rt, client })
    }

    fn exec(&self, sql: &str) {
        self.rt
            .block_on(self.client.batch_execute(sql))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"));
    }

    fn rows(&self, sql: &str) -> Vec<tokio_postgres::Row> {
        self.rt
            .block_on(self.client.query(sql, &[]))
            .unwrap_or_else(|e| panic!("{sql}: {e:?}"))
    }

    fn table_exists(&self, table: &str) -> bool {
        let n: i64 = self.rows(&format!(
            "SELECT count(*) FROM information_schema.tables WHERE table_name = '{table}'"
        ))[0]
            .get(0);
        n == 1
    }

    fn count(&self, table: &str) -> i64 {
        self.rows(&format!("SELECT count(*) FROM {table}"))[0].get(0)
    }

    /// A fingerprint of every row of `table` in `order`, with each row's
    /// physical identity (`xmin`, `ctid`): an UPDATE, even to the same
    /// values, changes it.
    fn physical(&self, table: &str, order: &str) -> String {
        self.rows(&format!(
            "SELECT md5(string_agg(xmin::text || ctid::text || t::text, '|' ORDER BY {order})) FROM {table} t"
        ))[0]
            .get(0)
    }

    /// A fingerprint of the rows' values only.
    fn content(&self, table: &str, order: &str) -> String {
        self.rows(&format!(
            "SELECT coalesce(md5(string_agg(t::text, '|' ORDER BY {order})), '') FROM {table} t"
        ))[0]
            .get(0)
    }
}

/// The shared server's URL, or `None` (and a note) when there is none and
/// none is required.
fn server() -> Option<String> {
    let file = root().join("target/postgres/url");
    let url = std::env::var("TIDEWATER_TEST_POSTGRES_URL")
        .ok()
        .or_else(|| std::fs::read_to_string(&file).ok())
        .map(|s| s.trim().to_owned())
        .filter(|u| Db::connect(u).is_ok());
    if url.is_none() {
        assert!(
            std::env::var("TIDEWATER_REQUIRE_POSTGRES").is_err(),
            "TIDEWATER_REQUIRE_POSTGRES is set but no PostgreSQL answers at the URL in {} (run `make pg-up`)",
            file.display()
        );
        eprintln!("skipped: no PostgreSQL (run `make pg-up`, or `make test` which starts one)");
    }
    url
}

/// A new, empty database on the server at `url`; its URL.
fn fresh_database(url: &str) -> String {
    let name = unique("tw");
    Db::connect(url)
        .unwrap()
        .exec(&format!("CREATE DATABASE {name}"));
    let (base, _) = url.rsplit_once('/').unwrap();
    format!("{base}/{name}")
}

/// `tidewater run --until-idle` of `config` with the sinks' PostgreSQL at `url`.
fn run_sinks(env: &Env, config: &Path, url: &str) -> Output {
    env.cmd()
        .args(["run", "--until-idle", "--format", "json", "--config"])
        .arg(config)
        .env("TIDEWATER_POSTGRES_URL", url)
        .output()
        .unwrap()
}

/// The summary of sink `name` in a run's JSON.
fn sink<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["sinks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no sink {name} in {summary}"))
}

fn ok_summary(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "run failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    summary(out)
}

fn json_record(v: Value, key: &str) -> Record {
    Record {
        value: Some(v.to_string().into_bytes()),
        headers: vec![("idempotency-key".into(), key.as_bytes().to_vec())],
        ..Record::default()
    }
}

#[test]
fn the_demo_lands_as_73280_rows_and_neither_a_rerun_nor_a_redelivery_changes_a_row() {
    let Some(server) = server() else { return };
    let url = fresh_database(&server);
    let db = Db::connect(&url).unwrap();
    let env = Env::new();
    env.produce_csv("sensor-readings", &ALL_DATA, None);
    let sinks = std::fs::read_to_string(root().join("demo/postgres.toml")).unwrap();
    let config = env.config(&format!("{}\n{sinks}", demo_config_text()));

    let first = ok_summary(&run_sinks(&env, &config, &url));
    let alerts = env.records("alerts").len() as u64;
    let readings = &sink(&first, "readings-db")["delivered"];
    assert_eq!(
        (readings["records"].as_u64(), readings["changed"].as_u64()),
        (Some(73_280), Some(73_280))
    );
    assert_eq!(readings["dead_lettered"], 0);
    assert_eq!(sink(&first, "alerts-db")["delivered"]["changed"], alerts);
    assert_eq!(db.count("readings"), 73_280);
    assert_eq!(db.count("alerts") as u64, alerts);
    let first_row = db.rows(
        "SELECT device, ts::text, kind, measurements::text FROM readings WHERE device = 'buoy-b01' ORDER BY ts LIMIT 1",
    );
    assert_eq!(
        (
            first_row[0].get::<_, String>(0),
            first_row[0].get::<_, String>(2),
            first_row[0].get::<_, String>(3)
        ),
        (
            "buoy-b01".to_owned(),
            "thermometer".to_owned(),
            r#"{"temperature_c": 4.929, "temperature_f": 40.8722}"#.to_owned()
        )
    );
    let before = (
        db.physical("readings", "device, ts"),
        db.physical("alerts", "idempotency_key"),
    );

    // `make demo-postgres` again: everything is ingested again, nothing new
    // reaches the sinks, no row changes.
    env.produce_csv("sensor-readings", &ALL_DATA, None);
    let second = ok_summary(&run_sinks(&env, &config, &url));
    assert_eq!(sink(&second, "readings-db")["delivered"]["records"], 0);
    let after = (
        db.physical("readings", "device, ts"),
        db.physical("alerts", "idempotency_key"),
    );
    assert_eq!(before, after);

    // Every record delivered again (sinks of new names start from offset
    // 0): every row is already there, none is touched.
    let again = env.config(&sinks.replace("-db\"", "-db-again\""));
    let third = ok_summary(&run_sinks(&env, &again, &url));
    let r = &sink(&third, "readings-db-again")["delivered"];
    assert_eq!(
        (
            r["records"].as_u64(),
            r["changed"].as_u64(),
            r["unchanged"].as_u64()
        ),
        (Some(73_280), Some(0), Some(73_280))
    );
    let a = &sink(&third, "alerts-db-again")["delivered"];
    assert_eq!(
        (a["records"].as_u64(), a["changed"].as_u64()),
        (Some(alerts), Some(0))
    );
    let after = (
        db.physical("readings", "device, ts"),
        db.physical("alerts", "idempotency_key"),
    );
    assert_eq!(before, after);
}

/// 100,000 events, for an append sink (one row each) and an upsert sink
/// with a version (50,000 keys, each written twice).
fn produce_events(env: &Env, n: u64) {
    env.with_log(|log| {
        log.create_topic("events", 4).unwrap();
        let records: Vec<Record> = (0..n)
            .map(|i| {
                json_record(
                    json!({"id": i, "k": i % (n / 2), "seq": i, "v": i as f64 * 0.25}),
                    &format!("ev-{i}"),
                )
            })
            .collect();
        for chunk in records.chunks(10_000) {
            log.append("events", chunk.to_vec()).unwrap();
        }
    });
}

const EVENT_SINKS: &str = r#"
[[sink]]
name = "events-log"
topic = "events"
batch = 1000
[sink.postgres]
table = "events_log"
create_table = true
columns = [
  { name = "id", type = "bigint", pointer = "/id" },
  { name = "k", type = "bigint", pointer = "/k" },
  { name = "v", type = "double", pointer = "/v" },
]

[[sink]]
name = "events-state"
topic = "events"
batch = 1000
[sink.postgres]
table = "events_state"
mode = "upsert"
key = ["k"]
version = "seq"
create_table = true
columns = [
  { name = "k", type = "bigint", pointer = "/k" },
  { name = "seq", type = "bigint", pointer = "/seq" },
  { name = "v", type = "double", pointer = "/v" },
]
"#;

/// A pseudo-random number below `n`, different at each call.
fn random_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(Instant::now().elapsed().as_nanos());
    h.finish() % n
}

#[test]
fn sigkill_while_writing_100000_records_then_restarting_gives_the_table_of_a_clean_run() {
    let Some(server) = server() else { return };
    const N: u64 = 100_000;
    let clean_url = fresh_database(&server);
    let clean = Env::new();
    produce_events(&clean, N);
    let config = clean.config(EVENT_SINKS);
    ok_summary(&run_sinks(&clean, &config, &clean_url));
    let clean_db = Db::connect(&clean_url).unwrap();
    assert_eq!(clean_db.count("events_log"), N as i64);
    assert_eq!(clean_db.count("events_state"), (N / 2) as i64);

    let url = fresh_database(&server);
    let db = Db::connect(&url).unwrap();
    let crashed = Env::new();
    produce_events(&crashed, N);
    let config = crashed.config(EVENT_SINKS);
    let rows_now = || {
        if db.table_exists("events_log") {
            db.count("events_log")
        } else {
            0
        }
    };
    // Each round kills the host a random moment after it wrote rows this
    // round (so the kill lands while the sink is writing, however fast or
    // slow the machine is), until five kills landed mid-table.
    let mut mid_run_kills = 0;
    let mut before = 0;
    for _ in 0..40 {
        let mut child = crashed
            .cmd()
            .args(["run", "--until-idle", "--format", "json", "--config"])
            .arg(&config)
            .env("TIDEWATER_POSTGRES_URL", &url)
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        while rows_now() <= before && child.try_wait().unwrap().is_none() {
            assert!(
                std::time::Instant::now() < deadline,
                "no row written within 120 s of a restart ({before} rows)"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        std::thread::sleep(Duration::from_millis(random_below(300)));
        if child.try_wait().unwrap().is_some() {
            break;
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let rows = rows_now();
        if rows > 0 && rows < N as i64 {
            mid_run_kills += 1;
        }
        before = rows;
        if mid_run_kills == 5 {
            break;
        }
    }
    let last = ok_summary(&run_sinks(&crashed, &config, &url));
    assert!(
        mid_run_kills >= 3,
        "only {mid_run_kills} kills landed while rows were being written"
    );
    assert_eq!(sink(&last, "events-log")["status"], "stopped");
    for (table, order) in [("events_log", "id"), ("events_state", "k")] {
        assert_eq!(
            db.content(table, order),
            clean_db.content(table, order),
            "{table} differs from a clean run's"
        );
    }
    let offsets: i64 = db.rows(
        "SELECT sum(next_offset)::bigint FROM tidewater_sink_offsets WHERE sink = 'events-log'",
    )[0]
    .get(0);
    assert_eq!(offsets, N as i64, "the position is past every record, once");
}

#[test]
fn versions_win_over_offsets_stale_records_change_nothing_tombstones_delete_and_refused_records_are_dead_lettered()
 {
    let Some(server) = server() else { return };
    let url = fresh_database(&server);
    let db = Db::connect(&url).unwrap();
    db.exec(
        "CREATE TABLE temps (device text PRIMARY KEY, celsius double precision CHECK (celsius < 100), v bigint NOT NULL)",
    );
    let env = Env::new();
    let reading = |d: &str, c: Value, v: u64| {
        json_record(
            json!({"device": d, "celsius": c, "v": v}),
            &format!("{d}-{v}-{c}"),
        )
    };
    let sink_config = |extra_column: &str| {
        format!(
            r#"
[[sink]]
name = "temps"
topic = "temps"
[sink.postgres]
table = "temps"
mode = "upsert"
key = ["device"]
version = "v"
columns = [
  {{ name = "device", type = "text", pointer = "/device" }},
  {{ name = "celsius", type = "double", pointer = "/celsius" }},
  {{ name = "v", type = "bigint", pointer = "/v" }},{extra_column}
]
"#
        )
    };
    let config = env.config(&sink_config(""));
    let table = || -> Vec<(String, f64, i64)> {
        db.rows("SELECT device, celsius, v FROM temps ORDER BY device")
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect()
    };

    // One batch: A twice, the later version last by offset too.
    env.produce(
        "temps",
        vec![
            reading("A", json!(20.1), 1),
            reading("B", json!(19.0), 1),
            reading("A", json!(20.4), 2),
        ],
    );
    let s = ok_summary(&run_sinks(&env, &config, &url));
    let d = &sink(&s, "temps")["delivered"];
    assert_eq!(
        (
            d["records"].as_u64(),
            d["changed"].as_u64(),
            d["unchanged"].as_u64()
        ),
        (Some(3), Some(2), Some(1))
    );
    assert_eq!(table(), [("A".into(), 20.4, 2), ("B".into(), 19.0, 1)]);

    // The stale (A, 20.1, v1) alone: no change.
    env.produce("temps", vec![reading("A", json!(20.1), 1)]);
    let s = ok_summary(&run_sinks(&env, &config, &url));
    let d = &sink(&s, "temps")["delivered"];
    assert_eq!(
        (d["changed"].as_u64(), d["unchanged"].as_u64()),
        (Some(0), Some(1))
    );
    assert_eq!(table(), [("A".into(), 20.4, 2), ("B".into(), 19.0, 1)]);

    // A CHECK violation and a value that does not fit the mapping go to the
    // dead-letter topic; the rest of the batch is written; a tombstone deletes.
    let tombstone = Record {
        key: Some(br#"{"device":"B"}"#.to_vec()),
        value: None,
        ..Record::default()
    };
    env.produce(
        "temps",
        vec![
            reading("C", json!(150.0), 1),
            reading("D", json!("warm"), 1),
            reading("E", json!(5.5), 1),
            tombstone,
        ],
    );
    let s = ok_summary(&run_sinks(&env, &config, &url));
    let d = &sink(&s, "temps")["delivered"];
    assert_eq!(
        (d["changed"].as_u64(), d["dead_lettered"].as_u64()),
        (Some(2), Some(2))
    );
    assert_eq!(table(), [("A".into(), 20.4, 2), ("E".into(), 5.5, 1)]);
    let dlq = env.records("temps.dlq");
    assert_eq!(dlq.len(), 2);
    let c = &dlq[0];
    assert_eq!(header(c, "tidewater-error-kind").unwrap(), "constraint");
    assert_eq!(header(c, "tidewater-sqlstate").unwrap(), "23514");
    assert!(
        header(c, "tidewater-error-message")
            .unwrap()
            .contains("temps_celsius_check"),
        "{:?}",
        header(c, "tidewater-error-message")
    );
    assert_eq!(header(c, "tidewater-processor").unwrap(), "temps");
    assert_eq!(header(c, "tidewater-source-offset").unwrap(), "4");
    assert_eq!(c.record.value, reading("C", json!(150.0), 1).value);
    let m = &dlq[1];
    assert_eq!(header(m, "tidewater-error-kind").unwrap(), "mapping");
    assert_eq!(
        header(m, "tidewater-error-message").unwrap(),
        "column \"celsius\" (pointer /celsius): \"warm\" does not convert to double precision"
    );
    assert_eq!(header(m, "tidewater-sqlstate"), None);

    // A new row, then one whose key is there already: the batch's plain
    // INSERT fails on the second and rolls back, and the batch is written
    // again with ON CONFLICT. Each row once.
    env.produce(
        "temps",
        vec![reading("F", json!(1.5), 1), reading("A", json!(21.0), 3)],
    );
    let s = ok_summary(&run_sinks(&env, &config, &url));
    let d = &sink(&s, "temps")["delivered"];
    assert_eq!(
        (
            d["changed"].as_u64(),
            d["unchanged"].as_u64(),
            d["dead_lettered"].as_u64()
        ),
        (Some(2), Some(0), Some(0))
    );
    assert_eq!(
        table(),
        [
            ("A".into(), 21.0, 3),
            ("E".into(), 5.5, 1),
            ("F".into(), 1.5, 1)
        ]
    );

    // A mapping that writes a column the table lacks is refused at start, naming it.
    let bad = env.config(&sink_config(
        "\n  { name = \"humidity\", type = \"double\", pointer = \"/humidity\" },",
    ));
    let out = run_sinks(&env, &bad, &url);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("table temps has no column \"humidity\", which the mapping writes"),
        "{err}"
    );
}

/// `postgres/pg.sh` with its own server in `dir`.
fn pg_sh(dir: &Path, action: &str) -> String {
    let out = Command::new(root().join("postgres/pg.sh"))
        .arg(action)
        .env("PG_DIR", dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg.sh {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn postgres_stopped_for_10_s_mid_run_loses_and_doubles_nothing() {
    if server().is_none() {
        return;
    }
    const N: i64 = 100_000;
    let dir: PathBuf = root().join("target/postgres-tests").join(unique("stop"));
    let url = pg_sh(&dir, "up");
    let env = Env::new();
    produce_events(&env, N as u64);
    let config = env.config(
        r#"
[[sink]]
name = "events-log"
topic = "events"
batch = 500
retry_backoff = "100ms"
max_backoff = "1s"
[sink.postgres]
table = "events_log"
create_table = true
connect_timeout = "2s"
columns = [
  { name = "id", type = "bigint", pointer = "/id" },
  { name = "k", type = "bigint", pointer = "/k" },
  { name = "v", type = "double", pointer = "/v" },
]
"#,
    );
    let mut child = env
        .cmd()
        .args(["run", "--until-idle", "--format", "json", "--config"])
        .arg(&config)
        .env("TIDEWATER_POSTGRES_URL", &url)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let db = Db::connect(&url).unwrap();
    let started = Instant::now();
    let at_stop = loop {
        let rows = if db.table_exists("events_log") {
            db.count("events_log")
        } else {
            0
        };
        if rows > 0 {
            pg_sh(&dir, "down");
            break rows;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no row written in 60 s"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        at_stop < N,
        "stopped mid-run ({at_stop} of {N} rows written)"
    );
    drop(db);
    // The scenario asks for 10 s without the database, not a wait for a condition.
    std::thread::sleep(Duration::from_secs(10));
    assert!(
        child.try_wait().unwrap().is_none(),
        "run gave up while PostgreSQL was away"
    );
    pg_sh(&dir, "up");
    let out = child.wait_with_output().unwrap();
    let summary = ok_summary(&out);
    let d = &sink(&summary, "events-log")["delivered"];
    assert!(
        d["codes"]["connection"].as_u64().unwrap_or(0) >= 1,
        "the outage was seen: {d}"
    );
    let db = Db::connect(&url).unwrap();
    let stats =
        &db.rows("SELECT count(*), count(DISTINCT id), min(id), max(id) FROM events_log")[0];
    assert_eq!(
        (
            stats.get::<_, i64>(0),
            stats.get::<_, i64>(1),
            stats.get::<_, i64>(2),
            stats.get::<_, i64>(3)
        ),
        (N, N, 0, N - 1),
        "every record once"
    );
    drop(db);
    pg_sh(&dir, "reset");
    let _ = std::fs::remove_dir_all(&dir);
}

// ---- webhooks ------------------------------------------------------------

/// One request the test endpoint received.
#[derive(Debug, Clone, PartialEq)]
struct Delivery {
    body: String,
    key: String,
    status: u16,
    at: Instant,
}

/// What the test endpoint answers next.
#[derive(Debug, Clone)]
enum Reply {
    Status(u16, &'static str),
    RetryAfter(u16, &'static str),
    /// 200, once the test releases it.
    HeldOk,
    /// No answer for this long (recorded on arrival with status 0), then 200.
    Silent(Duration),
}

#[derive(Default)]
struct Endpoint {
    script: Mutex<VecDeque<Reply>>,
    seen: Mutex<Vec<Delivery>>,
    release: tokio::sync::Notify,
}

/// A scripted HTTP endpoint on 127.0.0.1:0, on a thread of its own; its URL.
fn endpoint(script: Vec<Reply>) -> (Arc<Endpoint>, String) {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    use axum::response::IntoResponse;
    let state = Arc::new(Endpoint {
        script: Mutex::new(script.into()),
        ..Endpoint::default()
    });
    async fn hook(
        State(e): State<Arc<Endpoint>>,
        headers: HeaderMap,
        body: String,
    ) -> axum::response::Response {
        let reply = e
            .script
            .lock()
            .unwrap()
            .pop_front()
            .unwrap_or(Reply::Status(200, "ok"));
        if let Reply::HeldOk = reply {
            e.release.notified().await;
        }
        let key = headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if let Reply::Silent(silence) = reply {
            // Seen now: the sink gives up on the answer before it comes.
            e.seen.lock().unwrap().push(Delivery {
                body: body.clone(),
                key: key.clone(),
                status: 0,
                at: Instant::now(),
            });
            tokio::time::sleep(silence).await;
        }
        let (status, text, after) = match reply {
            Reply::Status(s, t) => (s, t, None),
            Reply::RetryAfter(s, a) => (s, "slow down", Some(a)),
            Reply::HeldOk | Reply::Silent(_) => (200, "ok", None),
        };
        if !matches!(reply, Reply::Silent(_)) {
            e.seen.lock().unwrap().push(Delivery {
                body,
                key,
                status,
                at: Instant::now(),
            });
        }
        let mut resp = (StatusCode::from_u16(status).unwrap(), text.to_owned()).into_response();
        if let Some(a) = after {
            resp.headers_mut().insert("retry-after", a.parse().unwrap());
        }
        resp
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let app = axum::Router::new().fallback(hook).with_state(state.clone());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            tx.send(listener.local_addr().unwrap()).unwrap();
            axum::serve(listener, app).await.unwrap();
        });
    });
    let addr = rx.recv().unwrap();
    (state, format!("http://{addr}/readings"))
}

fn webhook_env(url: &str) -> (Env, PathBuf) {
    webhook_env_with(url, "20s")
}

/// As [`webhook_env`], with the webhook's `timeout`.
fn webhook_env_with(url: &str, timeout: &str) -> (Env, PathBuf) {
    let env = Env::new();
    env.produce(
        "readings",
        (1..=3)
            .map(|i| json_record(json!({"n": i}), &format!("r{i}")))
            .collect(),
    );
    let config = env.config(&format!(
        r#"
[[sink]]
name = "hook"
topic = "readings"
retry_backoff = "50ms"
max_backoff = "200ms"
[sink.webhook]
url = "{url}"
timeout = "{timeout}"
"#
    ));
    (env, config)
}

/// (body, idempotency key, status) of every request, in order.
fn seen(e: &Endpoint) -> Vec<(String, String, u16)> {
    e.seen
        .lock()
        .unwrap()
        .iter()
        .map(|d| (d.body.clone(), d.key.clone(), d.status))
        .collect()
}

fn d(n: u32, status: u16) -> (String, String, u16) {
    (format!("{{\"n\":{n}}}"), format!("r{n}"), status)
}

#[test]
fn a_webhook_answering_401_holds_the_position_and_marks_the_sink_unhealthy_until_it_accepts() {
    let (hook, url) = endpoint(vec![
        Reply::Status(200, "ok"),
        Reply::Status(401, "token expired"),
        Reply::HeldOk,
    ]);
    let (env, config) = webhook_env(&url);
    let child = env
        .cmd()
        .args([
            "run",
            "--until-idle",
            "--format",
            "json",
            "--admin",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(&config)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let url_file = env.data_dir().join(tidewater::admin::URL_FILE);
    let started = Instant::now();
    while !url_file.exists() {
        assert!(started.elapsed() < Duration::from_secs(60), "no admin API");
        std::thread::sleep(Duration::from_millis(10));
    }
    let client = tidewater::admin::client::Client::discover(&env.data_dir(), None, None).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let status = loop {
        let v = rt.block_on(client.get("/v1/sinks/hook")).unwrap();
        if v["state"] == "unhealthy" {
            break v;
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "never unhealthy: {v}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status["healthy"], false);
    assert!(
        status["unhealthy"]
            .as_str()
            .unwrap()
            .contains("the endpoint answered 401: token expired"),
        "{status}"
    );
    hook.release.notify_one();
    let summary = ok_summary(&child.wait_with_output().unwrap());
    assert_eq!(seen(&hook), [d(1, 200), d(2, 401), d(2, 200), d(3, 200)]);
    let s = &sink(&summary, "hook")["delivered"];
    assert_eq!(
        (s["changed"].as_u64(), s["dead_lettered"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(s["codes"], json!({"unauthorized": 1}));
    assert!(env.records("hook.dlq").is_empty());
}

#[test]
fn a_webhook_answering_400_dead_letters_the_record_with_status_and_body_and_moves_on() {
    let (hook, url) = endpoint(vec![
        Reply::Status(200, "ok"),
        Reply::Status(400, "bad reading: n must be odd"),
    ]);
    let (env, config) = webhook_env(&url);
    let summary = ok_summary(
        &env.cmd()
            .args(["run", "--until-idle", "--format", "json", "--config"])
            .arg(&config)
            .output()
            .unwrap(),
    );
    assert_eq!(seen(&hook), [d(1, 200), d(2, 400), d(3, 200)]);
    let s = &sink(&summary, "hook")["delivered"];
    assert_eq!(
        (s["changed"].as_u64(), s["dead_lettered"].as_u64()),
        (Some(2), Some(1))
    );
    let dlq = env.records("hook.dlq");
    assert_eq!(dlq.len(), 1);
    let letter = &dlq[0];
    assert_eq!(letter.record.value.as_deref(), Some(&b"{\"n\":2}"[..]));
    assert_eq!(header(letter, "idempotency-key").unwrap(), "r2");
    assert_eq!(header(letter, "tidewater-error-kind").unwrap(), "http-4xx");
    assert_eq!(header(letter, "tidewater-http-status").unwrap(), "400");
    assert_eq!(
        header(letter, "tidewater-error-message").unwrap(),
        "400: bad reading: n must be odd"
    );
    assert_eq!(header(letter, "tidewater-source-offset").unwrap(), "1");
    // The position is past all three: a second run delivers nothing.
    let again = ok_summary(
        &env.cmd()
            .args(["run", "--until-idle", "--format", "json", "--config"])
            .arg(&config)
            .output()
            .unwrap(),
    );
    assert_eq!(sink(&again, "hook")["delivered"]["records"], 0);
    assert_eq!(seen(&hook).len(), 3);
}

#[test]
fn a_webhook_answering_429_with_retry_after_gets_the_record_again_no_sooner() {
    let (hook, url) = endpoint(vec![Reply::Status(200, "ok"), Reply::RetryAfter(429, "1")]);
    let (env, config) = webhook_env(&url);
    let summary = ok_summary(
        &env.cmd()
            .args(["run", "--until-idle", "--format", "json", "--config"])
            .arg(&config)
            .output()
            .unwrap(),
    );
    assert_eq!(seen(&hook), [d(1, 200), d(2, 429), d(2, 200), d(3, 200)]);
    let times: Vec<Instant> = hook.seen.lock().unwrap().iter().map(|d| d.at).collect();
    let waited = times[2] - times[1];
    assert!(
        waited >= Duration::from_millis(990),
        "retried after {waited:?}; Retry-After said 1 s (the backoff alone is at most 200 ms)"
    );
    let s = &sink(&summary, "hook")["delivered"];
    assert_eq!(
        (s["changed"].as_u64(), s["dead_lettered"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(s["codes"], json!({"http-429": 1}));
    assert!(env.records("hook.dlq").is_empty());
}

#[test]
fn a_webhook_answering_500_then_not_answering_in_time_gets_the_record_again_until_it_accepts() {
    let (hook, url) = endpoint(vec![
        Reply::Status(200, "ok"),
        Reply::Status(500, "database down"),
        Reply::Silent(Duration::from_secs(5)),
        Reply::Status(503, "starting"),
    ]);
    let (env, config) = webhook_env_with(&url, "300ms");
    let summary = ok_summary(
        &env.cmd()
            .args(["run", "--until-idle", "--format", "json", "--config"])
            .arg(&config)
            .output()
            .unwrap(),
    );
    // 0: the request that got no answer within the 300 ms timeout.
    assert_eq!(
        seen(&hook),
        [
            d(1, 200),
            d(2, 500),
            d(2, 0),
            d(2, 503),
            d(2, 200),
            d(3, 200)
        ]
    );
    let s = &sink(&summary, "hook")["delivered"];
    assert_eq!(
        (
            s["records"].as_u64(),
            s["changed"].as_u64(),
            s["dead_lettered"].as_u64()
        ),
        (Some(3), Some(3), Some(0))
    );
    assert_eq!(s["codes"], json!({"http-5xx": 2, "http-connection": 1}));
    assert!(env.records("hook.dlq").is_empty());
}

#[test]
fn a_sink_that_cannot_use_its_database_is_refused_at_start_saying_why() {
    let Some(server) = server() else { return };
    let url = fresh_database(&server);
    let db = Db::connect(&url).unwrap();
    let role = unique("pw");
    db.exec(&format!(
        "CREATE ROLE {role} LOGIN PASSWORD 'right'; CREATE TABLE temps (device text PRIMARY KEY, celsius text)"
    ));
    let env = Env::new();
    env.produce(
        "temps",
        vec![json_record(json!({"device": "A", "celsius": 20.5}), "a")],
    );
    // Env::config writes one file: each config gets a name of its own.
    let config = |create: bool| {
        let written = env.config(&format!(
            r#"
[[sink]]
name = "temps"
topic = "temps"
[sink.postgres]
table = "temps"
mode = "upsert"
key = ["device"]
create_table = {create}
connect_timeout = "5s"
columns = [
  {{ name = "device", type = "text", pointer = "/device" }},
  {{ name = "celsius", type = "double", pointer = "/celsius" }},
]
"#
        ));
        let own = written.with_file_name(format!("create-table-{create}.toml"));
        std::fs::rename(&written, &own).unwrap();
        own
    };
    let (checked, created) = (config(false), config(true));
    let (base, dbname) = url.rsplit_once('/').unwrap();
    let port = base.rsplit_once(':').unwrap().1;
    let refused = |config: &Path, url: &str| -> String {
        let out = run_sinks(&env, config, url);
        assert!(!out.status.success(), "{url} was not refused");
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("no error line: {err}"));
        assert!(!line.contains("right") && !line.contains("wrong"), "{line}");
        line.to_owned()
    };
    let at = format!("127.0.0.1:{port}/{dbname}");
    assert_eq!(
        refused(&checked, "postgres://tidewater@127.0.0.1:1/x"),
        "error: sink \"temps\": cannot connect to PostgreSQL at 127.0.0.1:1/x: error connecting to server: Connection refused (os error 111)"
    );
    assert_eq!(
        refused(
            &checked,
            &format!("postgres://{role}:wrong@127.0.0.1:{port}/{dbname}")
        ),
        format!(
            "error: sink \"temps\": cannot connect to PostgreSQL at {at}: password authentication failed for user \"{role}\" (SQLSTATE 28P01)"
        )
    );
    assert_eq!(
        refused(
            &checked,
            &format!("postgres://{role}@127.0.0.1:{port}/{dbname}")
        ),
        format!(
            "error: sink \"temps\": cannot connect to PostgreSQL at {at}: invalid configuration: password missing"
        )
    );
    assert_eq!(
        refused(&checked, &format!("{base}/{dbname}_missing")),
        format!(
            "error: sink \"temps\": cannot connect to PostgreSQL at 127.0.0.1:{port}/{dbname}_missing: database \"{dbname}_missing\" does not exist (SQLSTATE 3D000)"
        )
    );
    assert_eq!(
        refused(&checked, &url),
        "error: sink \"temps\": column \"celsius\" of table temps is text, but the mapping writes double precision"
    );
    // create_table does not alter a table that is there: it is checked the same.
    assert_eq!(
        refused(&created, &url),
        "error: sink \"temps\": column \"celsius\" of table temps is text, but the mapping writes double precision"
    );
    db.exec("DROP TABLE temps");
    assert_eq!(
        refused(&checked, &url),
        format!(
            "error: sink \"temps\": table temps does not exist at {at}: create it, or set create_table = true"
        )
    );
    // The right password, and the table created: delivered.
    db.exec(&format!(
        "GRANT CREATE ON SCHEMA public TO {role}; GRANT ALL ON tidewater_sink_offsets TO {role}"
    ));
    let s = ok_summary(&run_sinks(
        &env,
        &created,
        &format!("postgres://{role}:right@127.0.0.1:{port}/{dbname}"),
    ));
    assert_eq!(sink(&s, "temps")["delivered"]["changed"], 1);
    let row = &db.rows("SELECT device, celsius FROM temps")[0];
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, f64>(1)),
        ("A".to_owned(), 20.5)
    );
}
