//! Deploying while the stream flows: the admin API of a host started
//! in-process (port 0), real components, real redb.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use tidewater::admin::AdminOptions;
use tidewater::admin::client::Client;
use tidewater::streams::Record;

use crate::common::*;
use crate::wasm::rebuilt;

pub const TOKEN: &str = "test-token-1234";

/// A host running in-process on its own thread, with the admin API on
/// 127.0.0.1 port 0.
pub struct Host {
    pub client: Client,
    pub rt: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<Result<tidewater::RunSummary, String>>>,
    /// The host as a child process (`tidewater run --admin 127.0.0.1:0`), for
    /// measuring its memory on its own.
    child: Option<std::process::Child>,
    pub url: String,
}

impl Host {
    /// Starts `config` on `env`'s data dir; `tweak` adjusts the admin options.
    pub fn start(env: &Env, config: &Path, tweak: impl FnOnce(&mut AdminOptions)) -> Host {
        let config = tidewater::config::Config::load(config).expect("config");
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut admin = AdminOptions {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            token: Some(TOKEN.into()),
            max_upload_bytes: tidewater::control::registry::DEFAULT_MAX_UPLOAD_BYTES,
            bound: Some(bound_tx),
            watch: None,
            start_paused: false,
            console: Default::default(),
        };
        tweak(&mut admin);
        let options = tidewater::RunOptions {
            data_dir: env.data_dir(),
            until_idle: false,
        };
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(tidewater::run_with(config, options, admin, async move {
                let _ = stop_rx.await;
            }))
            .map_err(|e| e.to_string())
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let addr = match rt.block_on(bound_rx) {
            Ok(a) => a,
            Err(_) => panic!("host did not start: {:?}", thread.join()),
        };
        let url = format!("http://{addr}");
        Host {
            client: Client::new(&url, Some(TOKEN.into())).unwrap(),
            rt,
            stop: Some(stop_tx),
            thread: Some(thread),
            child: None,
            url,
        }
    }

    /// Starts `tidewater run --admin 127.0.0.1:0` on `config` as a child
    /// process and finds its API through the data dir.
    pub fn spawn(env: &Env, config: &Path) -> Host {
        let child = env
            .cmd()
            .args([
                "run",
                "--admin",
                "127.0.0.1:0",
                "--format",
                "json",
                "--config",
            ])
            .arg(config)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let url_file = env.data_dir().join(tidewater::admin::URL_FILE);
        for _ in 0..3000 {
            if url_file.exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let client = Client::discover(&env.data_dir(), None, None).expect("the host wrote its URL");
        let url = std::fs::read_to_string(&url_file)
            .unwrap()
            .trim()
            .to_owned();
        Host {
            client,
            rt: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
            stop: None,
            thread: None,
            child: Some(child),
            url,
        }
    }

    /// The resident memory of the child process, in bytes.
    pub fn child_rss_bytes(&self) -> u64 {
        let pid = self.child.as_ref().expect("a child host").id();
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .unwrap()
            * 1024
    }

    /// Stops the child host with SIGTERM and returns its JSON summary.
    pub fn stop_child(mut self) -> Value {
        let child = self.child.take().expect("a child host");
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(kill.success());
        summary(&child.wait_with_output().unwrap())
    }

    pub fn get(&self, path: &str) -> Value {
        self.rt
            .block_on(self.client.get(path))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    pub fn post(&self, path: &str, body: Value) -> Value {
        self.rt
            .block_on(self.client.post(path, &body))
            .unwrap_or_else(|e| panic!("POST {path}: {e}"))
    }

    /// Status and body of a call, whatever the status.
    pub fn call(&self, client: &Client, method: &str, path: &str, body: Vec<u8>) -> (u16, Value) {
        self.rt
            .block_on(client.call(method, path, body, "application/json"))
            .unwrap()
    }

    /// Uploads `wasm` to processor `name` with `query`; status and body.
    pub fn upload(&self, name: &str, wasm: &[u8], query: &str) -> (u16, Value) {
        let path = if query.is_empty() {
            format!("/v1/processors/{name}/versions")
        } else {
            format!("/v1/processors/{name}/versions?{query}")
        };
        self.rt
            .block_on(
                self.client
                    .call("POST", &path, wasm.to_vec(), "application/wasm"),
            )
            .unwrap()
    }

    /// Uploads and expects success; returns the version's SHA-256.
    pub fn deploy(&self, name: &str, wasm: &[u8], query: &str) -> String {
        let (status, v) = self.upload(name, wasm, query);
        assert_eq!(status, 201, "{v}");
        v["version"]["sha256"].as_str().unwrap().to_owned()
    }

    pub fn processor(&self, name: &str) -> Value {
        self.get(&format!("/v1/processors/{name}"))
    }

    /// Polls processor `name` until `done` holds (at most 120 s, then panics).
    pub fn wait_for(&self, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        for _ in 0..6000 {
            let p = self.processor(name);
            if done(&p) {
                return p;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("waited 120 s for {what}: {}", self.processor(name));
    }

    /// Waits until `name` has read `n` events.
    pub fn wait_events(&self, name: &str, n: u64) -> Value {
        self.wait_for(name, &format!("{n} events read"), |p| {
            p["counters"]["events_in"].as_u64() == Some(n)
        })
    }

    /// Stops the host and returns its run summary.
    pub fn stop(mut self) -> tidewater::RunSummary {
        let _ = self.stop.take().unwrap().send(());
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("host thread")
            .expect("run")
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
        }
    }
}

pub fn probe_wasm() -> Vec<u8> {
    std::fs::read(plugin("probe")).unwrap()
}

/// `n` records with values `e0`…, timestamps `i * 1000` ms.
pub fn numbered(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| Record {
            timestamp_ms: i as i64 * 1000,
            value: Some(format!("e{i}").into_bytes()),
            ..Record::default()
        })
        .collect()
}

#[test]
fn two_hundred_swaps_while_100k_events_flow_each_event_once_by_one_version() {
    const EVENTS: usize = 100_000;
    const SWAPS: usize = 200;
    let env = Env::new();
    // Every 1000th event counts in the processor's state, which must carry
    // over from version to version: 100 counts, each exactly once.
    let is_count = |i: usize| i % 1000 == 999;
    let mut records = numbered(EVENTS);
    for (i, r) in records.iter_mut().enumerate() {
        if is_count(i) {
            r.value = Some(b"count:c".to_vec());
        }
    }
    env.with_log(|log| {
        for chunk in records.chunks(20_000) {
            log.append("in", chunk.to_vec()).unwrap();
        }
    });
    let config = probe_config(&env, "batch.max_records = 100");
    // A child process, so that its memory is its own.
    let host = Host::spawn(&env, &config);
    let v1 = host.processor("probe")["active_version"]
        .as_str()
        .unwrap()
        .to_owned();
    let v2 = host.deploy("probe", &rebuilt(&probe_wasm(), "v2"), "");
    assert_ne!(v1, v2);

    let mut rss_after_warmup = 0;
    for i in 0..SWAPS {
        let target = if i % 2 == 0 { &v2 } else { &v1 };
        host.post("/v1/processors/probe/activate", json!({"version": target}));
        // Applied at the next batch boundary; then let at least one batch
        // run on it (or the input be drained).
        let p = host.wait_for("probe", "the swap", |p| {
            p["active_version"] == **target
                && p["pending_version"].is_null()
                && p["swaps"].as_u64() == Some(i as u64 + 1)
        });
        let before = p["counters"]["events_in"].as_u64().unwrap();
        host.wait_for("probe", "a batch after the swap", |p| {
            p["counters"]["events_in"].as_u64().unwrap() > before || p["lag"] == 0
        });
        if i == 20 {
            rss_after_warmup = host.child_rss_bytes();
        }
    }
    let p = host.wait_events("probe", EVENTS as u64);
    assert_eq!(p["swaps"], SWAPS);
    assert_eq!(p["counters"]["duplicates"], 0);
    assert_eq!(p["counters"]["errors"], 0);
    // Old instances are dropped after their batch: one instance runs.
    assert_eq!(host.get("/v1/processors")["live_instances"], 1);
    let rss_growth = host.child_rss_bytes().saturating_sub(rss_after_warmup);
    let summary = host.stop_child();
    assert_eq!(counters(&summary, "probe")["outputs"], EVENTS);
    // A generous bound (about 20 MiB here, the database cache filling); the
    // exact check of instances is live_instances above.
    assert!(
        rss_growth < 128 << 20,
        "RSS grew by {rss_growth} bytes over {SWAPS} swaps"
    );

    // Outputs complete: every input value once, in order; the counts 1 to 100.
    let values = env.values("out");
    assert_eq!(values.len(), EVENTS);
    for (i, v) in values.iter().enumerate() {
        let expected = if is_count(i) {
            ((i + 1) / 1000).to_string()
        } else {
            format!("e{i}")
        };
        assert_eq!(*v, expected, "output {i}");
    }
    // Every event's idempotency record names exactly one of the two versions.
    let db = tidewater::db::open(&env.data_dir()).unwrap();
    assert_eq!(
        tidewater::processing::state::dump(&db, "probe").unwrap(),
        [(b"c".to_vec(), b"100".to_vec())]
    );
    let by_version = tidewater::processing::idempotency::versions(&db, "probe").unwrap();
    assert_eq!(by_version.len(), EVENTS);
    let on_v1 = by_version.iter().filter(|(_, v)| *v == v1).count();
    let on_v2 = by_version.iter().filter(|(_, v)| *v == v2).count();
    assert_eq!(on_v1 + on_v2, EVENTS);
    assert!(on_v1 > 0 && on_v2 > 0, "v1 {on_v1}, v2 {on_v2}");
    eprintln!(
        "events by v1: {on_v1}, by v2: {on_v2}; host RSS after 20 swaps: {rss_after_warmup} bytes, growth over the next 180: {rss_growth} bytes"
    );
}

#[test]
fn each_validation_failure_has_its_own_error_and_changes_nothing() {
    let env = Env::new();
    let config = probe_config(&env, "");
    let host = Host::start(&env, &config, |a| a.max_upload_bytes = 100_000);
    let before = host.get("/v1/processors/probe/versions");
    assert_eq!(before["versions"].as_array().unwrap().len(), 1);

    let wat = |text: &str| -> Vec<u8> {
        let tool = root().join("tools/venv/bin/wasm-tools");
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("c.wat");
        std::fs::write(&src, text).unwrap();
        let out = std::process::Command::new(tool)
            .args(["parse", src.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    let probe = probe_wasm();
    let cases: Vec<(&str, Vec<u8>, &str, u16, &str)> = vec![
        (
            "not WebAssembly",
            b"#!/bin/sh\necho hi\n".to_vec(),
            "",
            422,
            "not-webassembly",
        ),
        (
            "a core module",
            wat("(module (func (export \"process\")))"),
            "",
            422,
            "core-module",
        ),
        (
            "a component missing the world's exports",
            wat("(component)"),
            "",
            422,
            "world-mismatch",
        ),
        (
            "a component importing an interface the host lacks",
            wat(
                r#"(component (import "tidewater:processor/clock@0.2.0" (instance (export "now" (func (result u64))))))"#,
            ),
            "",
            422,
            "world-mismatch",
        ),
        (
            "a component whose init has the wrong type",
            wat(r#"(component
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (export "init" (func $f))
                (export "process" (func $f)))"#),
            "",
            422,
            "world-mismatch",
        ),
        (
            "an init that refuses the config",
            rebuilt(&probe, "refuses"),
            "config=%7B%22fail-init%22%3A%22no%20thanks%22%7D",
            422,
            "init-failed",
        ),
        (
            "a body over the limit",
            rebuilt(&probe, &"x".repeat(100_000)),
            "",
            413,
            "component-too-large",
        ),
    ];
    let mut messages = Vec::new();
    for (what, body, query, status, code) in cases {
        let (s, v) = host.upload("probe", &body, query);
        assert_eq!(
            (s, v["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {v}"
        );
        messages.push((what, v["error"]["message"].as_str().unwrap().to_owned()));
    }
    for (what, message) in &messages {
        eprintln!("{what}: {message}");
    }
    let m = |i: usize| messages[i].1.as_str();
    assert!(m(0).starts_with("not WebAssembly"), "{}", m(0));
    assert!(
        m(1).contains("core WebAssembly module, not a component"),
        "{}",
        m(1)
    );
    assert!(m(2).contains("missing export `init`"), "{}", m(2));
    assert!(m(3).contains("tidewater:processor/clock@0.2.0"), "{}", m(3));
    assert!(
        m(4).contains("type-checking export func `init`"),
        "{}",
        m(4)
    );
    assert_eq!(m(5), "init failed with the processor's config: no thanks");
    assert_eq!(
        m(6),
        format!(
            "component is {} bytes, the upload limit is 100000 bytes",
            rebuilt(&probe, &"x".repeat(100_000)).len()
        )
    );
    // Nothing changed: the same single version, active, the same history.
    let after = host.get("/v1/processors/probe/versions");
    assert_eq!(after, before);
    assert_eq!(host.processor("probe")["swaps"], 0);
}

#[test]
fn mutating_calls_without_the_token_get_401_and_change_nothing() {
    let env = Env::new();
    let config = probe_config(&env, "");
    let host = Host::start(&env, &config, |_| {});
    let before = host.get("/v1/processors/probe/versions");
    let v1 = before["active_version"].as_str().unwrap().to_owned();
    let anonymous = Client::new(&host.url, None).unwrap();
    let wrong = Client::new(&host.url, Some("not-the-token".into())).unwrap();
    let v2 = rebuilt(&probe_wasm(), "v2");
    for client in [&anonymous, &wrong] {
        for (method, path, body) in [
            (
                "POST",
                "/v1/processors/probe/versions?activate=true",
                v2.clone(),
            ),
            (
                "POST",
                "/v1/processors/probe/activate",
                json!({"version": v1}).to_string().into_bytes(),
            ),
            ("POST", "/v1/processors/probe/rollback", vec![]),
            ("POST", "/v1/processors/probe/pause", vec![]),
            (
                "POST",
                "/v1/processors/probe/replay",
                json!({"from_offset": 0, "reprocess": true})
                    .to_string()
                    .into_bytes(),
            ),
            (
                "POST",
                "/v1/processors/probe/shadow",
                json!({"version": v1}).to_string().into_bytes(),
            ),
            (
                "DELETE",
                &format!("/v1/processors/probe/versions/{v1}"),
                vec![],
            ),
        ] {
            let (status, v) = host.call(client, method, path, body);
            assert_eq!(
                (status, v["error"]["code"].as_str()),
                (401, Some("unauthorized")),
                "{method} {path}"
            );
        }
    }
    // Reading needs no token.
    let (status, _) = host.call(&anonymous, "GET", "/v1/processors", vec![]);
    assert_eq!(status, 200);
    let (status, health) = host.call(&anonymous, "GET", "/healthz", vec![]);
    assert_eq!((status, health), (200, json!({"status": "ok"})));
    assert_eq!(host.get("/v1/processors/probe/versions"), before);
    let p = host.processor("probe");
    assert_eq!(
        (
            p["paused"].as_bool(),
            p["epoch"].as_u64(),
            p["shadow"].is_null()
        ),
        (Some(false), Some(0), true)
    );
}

#[test]
fn shadow_of_an_identical_build_differs_nowhere_and_of_a_changed_build_exactly_where_it_changed() {
    const EVENTS: usize = 1000;
    let env = Env::new();
    // Among them an event that traps and one that is invalid: both versions
    // fail on them alike.
    let mut records = numbered(EVENTS);
    records[500].value = Some(b"trap".to_vec());
    records[501].value = Some(b"invalid".to_vec());
    records[10].value = Some(b"count:x".to_vec());
    records[20].value = Some(b"count:x".to_vec());
    env.produce("in", records);
    let config = probe_config(&env, "batch.max_records = 64");
    let host = Host::start(&env, &config, |a| a.start_paused = true);
    // The same code, rebuilt: identical outputs.
    let same = host.deploy("probe", &rebuilt(&probe_wasm(), "same"), "shadow=true");
    let p = host.wait_for("probe", "the shadow", |p| p["shadow"]["version"] == *same);
    assert_eq!(p["counters"]["events_in"], 0, "paused from the start");
    host.post("/v1/processors/probe/resume", json!({}));
    host.wait_events("probe", EVENTS as u64);
    let r = host.get("/v1/processors/probe/shadow");
    assert_eq!(
        (
            r["compared"].as_u64(),
            r["identical"].as_u64(),
            r["different"].as_u64()
        ),
        (Some(EVENTS as u64), Some(EVENTS as u64), Some(0)),
        "{r}"
    );
    // Never published: the output topic has the active version's outputs only.
    let p = host.processor("probe");
    assert_eq!(
        (
            p["counters"]["outputs"].as_u64(),
            p["counters"]["dead_lettered"].as_u64()
        ),
        (Some(EVENTS as u64 - 2), Some(2))
    );
    drop(host.stop());
    assert_eq!(env.values("out").len(), EVENTS - 2);
    assert_eq!(env.values("probe.dlq").len(), 2);
    // The shadow kept its own state, in a scratch namespace.
    let db = tidewater::db::open(&env.data_dir()).unwrap();
    let counted = [(b"x".to_vec(), b"2".to_vec())];
    assert_eq!(
        tidewater::processing::state::dump(&db, "probe").unwrap(),
        counted
    );
    assert_eq!(
        tidewater::processing::state::dump(&db, "probe#shadow").unwrap(),
        counted
    );
    drop(db);

    // A changed build (fails every 7th offset), on a fresh data dir.
    let env = Env::new();
    env.produce("in", numbered(EVENTS));
    let config = probe_config(&env, "batch.max_records = 64");
    let host = Host::start(&env, &config, |a| a.start_paused = true);
    let changed = host.deploy(
        "probe",
        &rebuilt(&probe_wasm(), "changed"),
        "shadow=true&config=%7B%22fail-every%22%3A%227%22%7D",
    );
    host.wait_for("probe", "the shadow", |p| {
        p["shadow"]["version"] == *changed
    });
    host.post("/v1/processors/probe/resume", json!({}));
    host.wait_events("probe", EVENTS as u64);
    let r = host.get("/v1/processors/probe/shadow");
    let expected = (0..EVENTS).filter(|i| i % 7 == 0).count() as u64;
    assert_eq!(
        (
            r["compared"].as_u64(),
            r["different"].as_u64(),
            r["identical"].as_u64()
        ),
        (
            Some(EVENTS as u64),
            Some(expected),
            Some(EVENTS as u64 - expected)
        ),
        "{r}"
    );
    let first = &r["samples"][0];
    assert_eq!(first["offset"], 0);
    assert_eq!(
        first["active"],
        "ok [{topic: None, key: none, value: \"e0\", headers: }]"
    );
    assert_eq!(first["shadow"], "invalid: probe fail-every 7");
    let p = host.processor("probe");
    assert_eq!(
        (
            p["counters"]["outputs"].as_u64(),
            p["counters"]["errors"].as_u64()
        ),
        (Some(EVENTS as u64), Some(0))
    );
    // Activating the shadowed version ends the shadow: one instance is left.
    host.post(
        "/v1/processors/probe/activate",
        json!({"version": changed.as_str()}),
    );
    host.wait_for("probe", "the swap", |p| p["active_version"] == *changed);
    assert_eq!(host.get("/v1/processors")["live_instances"], 1);
    drop(host.stop());
    assert_eq!(env.values("out").len(), EVENTS);
    assert!(env.values("probe.dlq").is_empty());
}

#[test]
fn a_canary_failing_10_percent_of_events_is_rolled_back_with_the_reason_recorded() {
    // Asked for by the upload, or the processor's own canary from its config.
    for (extra, query) in [
        (
            "batch.max_records = 50",
            "activate=true&canary_events=100&canary_max_error_rate=0.05&config=%7B%22fail-every%22%3A%2210%22%7D",
        ),
        (
            "batch.max_records = 50\ncanary = { events = 100, max_error_rate = 0.05 }",
            "activate=true&config=%7B%22fail-every%22%3A%2210%22%7D",
        ),
    ] {
        canary_rolls_back(extra, query);
    }
}

fn canary_rolls_back(extra: &str, query: &str) {
    const EVENTS: usize = 1000;
    let env = Env::new();
    env.produce("in", numbered(EVENTS));
    let config = probe_config(&env, extra);
    let host = Host::start(&env, &config, |a| a.start_paused = true);
    let v1 = host.processor("probe")["active_version"]
        .as_str()
        .unwrap()
        .to_owned();
    let bad = host.deploy("probe", &rebuilt(&probe_wasm(), "bad"), query);
    let p = host.wait_for("probe", "the canary", |p| p["active_version"] == *bad);
    // Paused from the start: nothing read yet.
    assert_eq!(
        (
            p["paused"].as_bool(),
            p["state"].as_str(),
            p["counters"]["events_in"].as_u64()
        ),
        (Some(true), Some("paused"), Some(0))
    );
    host.post("/v1/processors/probe/resume", json!({}));
    let p = host.wait_events("probe", EVENTS as u64);
    let reason = "canary rollback: 10 of its first 100 events failed (10.0%, the limit is 5.0%)";
    assert_eq!(p["active_version"], *v1);
    assert_eq!(p["last_rollback"], reason);
    // The bad version ran on exactly the first two batches (offsets 0–99).
    assert_eq!(
        (
            p["counters"]["errors"].as_u64(),
            p["counters"]["dead_lettered"].as_u64()
        ),
        (Some(10), Some(10))
    );
    assert_eq!(p["counters"]["outputs"], EVENTS - 10);
    let versions = host.get("/v1/processors/probe/versions");
    let bad_entry = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["sha256"] == *bad)
        .unwrap()
        .clone();
    assert_eq!(bad_entry["rolled_back"], reason);
    assert_eq!(bad_entry["active"], false);
    let history: Vec<&str> = versions["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["reason"].as_str().unwrap())
        .collect();
    assert_eq!(history, ["start", "activate", reason]);
    // "The previous version" is never one a canary rolled back.
    let (status, v) = host.call(
        &host.client,
        "POST",
        "/v1/processors/probe/rollback",
        vec![],
    );
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("no-previous-version"))
    );
    drop(host.stop());
}

#[test]
fn replay_without_reprocess_gives_duplicates_and_with_it_a_new_epoch_of_outputs() {
    const EVENTS: u64 = 1000;
    let env = Env::new();
    env.produce("in", numbered(EVENTS as usize));
    let config = probe_config(&env, "batch.max_records = 128");
    let host = Host::start(&env, &config, |_| {});
    host.wait_events("probe", EVENTS);

    // From offset 400, same epoch: 600 duplicates, nothing new.
    let r = host.post("/v1/processors/probe/replay", json!({"from_offset": 400}));
    assert_eq!(r["epoch"], 0);
    let p = host.wait_events("probe", EVENTS + 600);
    assert_eq!(
        (
            p["counters"]["duplicates"].as_u64(),
            p["counters"]["outputs"].as_u64()
        ),
        (Some(600), Some(EVENTS))
    );

    // From offset 900, reprocessed: 100 outputs again, in epoch 1.
    let r = host.post(
        "/v1/processors/probe/replay",
        json!({"from_offset": 900, "reprocess": true}),
    );
    assert_eq!(r["epoch"], 1);
    let p = host.wait_events("probe", EVENTS + 700);
    assert_eq!(
        (
            p["counters"]["duplicates"].as_u64(),
            p["counters"]["outputs"].as_u64(),
            p["epoch"].as_u64()
        ),
        (Some(600), Some(EVENTS + 100), Some(1))
    );

    // From a time (the event at 950 s), reprocessed: 50 more, in epoch 2.
    let r = host.post(
        "/v1/processors/probe/replay",
        json!({"from_time": "1970-01-01T00:15:50Z", "reprocess": true}),
    );
    assert_eq!(r["epoch"], 2);
    let p = host.wait_events("probe", EVENTS + 750);
    assert_eq!(p["counters"]["outputs"], EVENTS + 150);
    // And the same time again without reprocessing: 50 duplicates of epoch 2.
    host.post(
        "/v1/processors/probe/replay",
        json!({"from_time": "1970-01-01T00:15:50Z"}),
    );
    let p = host.wait_events("probe", EVENTS + 800);
    assert_eq!(
        (
            p["counters"]["duplicates"].as_u64(),
            p["counters"]["outputs"].as_u64()
        ),
        (Some(650), Some(EVENTS + 150))
    );
    drop(host.stop());

    let out = env.records("out");
    assert_eq!(out.len() as u64, EVENTS + 150);
    // A reprocessed output: a new idempotency key, the old one to upsert on.
    let first = &out[0];
    let again = &out[EVENTS as usize];
    assert_eq!(again.record.value, Some(b"e900".to_vec()));
    assert_eq!(
        header(&out[900], "idempotency-key").as_deref(),
        Some("in/0/900/probe/0")
    );
    assert_eq!(
        header(again, "idempotency-key").as_deref(),
        Some("in/0/900/probe/0#1")
    );
    assert_eq!(
        header(again, "tidewater-upsert-key").as_deref(),
        Some("in/0/900/probe/0")
    );
    assert_eq!(header(again, "tidewater-epoch").as_deref(), Some("1"));
    assert_eq!(header(first, "tidewater-epoch"), None);
    let last = out.last().unwrap();
    assert_eq!(last.record.value, Some(b"e999".to_vec()));
    assert_eq!(
        header(last, "idempotency-key").as_deref(),
        Some("in/0/999/probe/0#2")
    );
}

#[test]
fn after_a_reprocessing_replay_an_event_delivered_again_is_still_a_duplicate() {
    let env = Env::new();
    let events = numbered(101);
    env.produce("in", events[..100].to_vec());
    let config = probe_config(&env, "idempotency.key = \"hash\"");
    let host = Host::start(&env, &config, |_| {});
    host.wait_events("probe", 100);
    let r = host.post(
        "/v1/processors/probe/replay",
        json!({"from_offset": 50, "reprocess": true}),
    );
    assert_eq!(r["epoch"], 1);
    let p = host.wait_events("probe", 150);
    assert_eq!(p["counters"]["outputs"], 150);
    drop(host.stop());

    // Devices send e10 (processed before the replay) and e70 (processed
    // again by it) once more, and a new e100; the range survives a restart.
    env.produce(
        "in",
        vec![events[10].clone(), events[70].clone(), events[100].clone()],
    );
    let host = Host::start(&env, &config, |_| {});
    let p = host.wait_events("probe", 153);
    assert_eq!(
        (
            p["counters"]["duplicates"].as_u64(),
            p["counters"]["outputs"].as_u64(),
            p["epoch"].as_u64()
        ),
        (Some(2), Some(151), Some(1))
    );
    drop(host.stop());
    let out = env.records("out");
    assert_eq!(out.len(), 151);
    let values: Vec<&[u8]> = out
        .iter()
        .map(|r| r.record.value.as_deref().unwrap())
        .collect();
    assert_eq!(values[100], b"e50");
    assert_eq!(values[149], b"e99");
    assert_eq!(values[150], b"e100");
    // The reprocessed range is epoch 1; the new event is outside it.
    assert_eq!(header(&out[100], "tidewater-epoch").as_deref(), Some("1"));
    assert_eq!(header(&out[150], "tidewater-epoch"), None);
    assert_eq!(header(&out[150], "tidewater-upsert-key"), None);
    assert_eq!(
        header(&out[100], "tidewater-upsert-key"),
        header(&out[50], "idempotency-key")
    );
}

#[test]
fn versions_record_size_world_and_the_language_their_producers_section_names() {
    let env = Env::new();
    let config = probe_config(&env, "");
    let host = Host::start(&env, &config, |_| {});
    let js = std::fs::read(plugin("js-enrich")).unwrap();
    let sha = host.deploy("probe", &js, "config=%7B%7D");
    let versions = host.get("/v1/processors/probe/versions");
    let list = versions["versions"].as_array().unwrap();
    assert_eq!(list.len(), 2);
    let probe = &list[0];
    assert_eq!(
        probe["size_bytes"],
        std::fs::read(plugin("probe")).unwrap().len()
    );
    assert_eq!(probe["world"], "tidewater:processor/processor@0.1.0");
    // The Rust builds are stripped of their producers section.
    assert_eq!(probe["language"], Value::Null);
    assert_eq!(probe["active"], true);
    let js_entry = list.iter().find(|v| v["sha256"] == *sha).unwrap();
    assert_eq!(js_entry["language"], "JavaScript");
    assert_eq!(js_entry["size_bytes"], js.len());
    assert_eq!(js_entry["active"], false);
    assert!(js_entry["uploaded_ms"].as_u64().unwrap() >= probe["uploaded_ms"].as_u64().unwrap());
}

#[test]
fn metrics_and_openapi_are_served() {
    let env = Env::new();
    env.produce("in", numbered(10));
    let config = probe_config(&env, "");
    let host = Host::start(&env, &config, |_| {});
    host.wait_events("probe", 10);
    let anonymous = Client::new(&host.url, None).unwrap();
    let (status, text) = host.call(&anonymous, "GET", "/metrics", vec![]);
    assert_eq!(status, 200);
    let text = text.as_str().unwrap().to_owned();
    assert!(
        text.contains("tidewater_events_in_total{processor=\"probe\"} 10"),
        "{text}"
    );
    assert!(
        text.contains("tidewater_outputs_total{processor=\"probe\"} 10"),
        "{text}"
    );
    assert!(text.contains("tidewater_live_instances 1"), "{text}");
    let (status, doc) = host.call(&anonymous, "GET", "/openapi.json", vec![]);
    assert_eq!(status, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let (status, v) = host.call(&anonymous, "GET", "/v1/processors/nope", vec![]);
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (404, Some("no-such-processor"))
    );
}

/// Runs `tidewater` with `args` on `env`'s data dir; (exit success, stdout, stderr).
fn cli(env: &Env, args: &[&str]) -> (bool, String, String) {
    let out = env.cmd().args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        String::from_utf8_lossy(&out.stderr).trim().to_owned(),
    )
}

#[test]
fn the_cli_deploys_lists_activates_rolls_back_pauses_and_replays_through_the_api() {
    let env = Env::new();
    env.produce("in", numbered(100));
    let config = probe_config(&env, "batch.max_records = 10");
    // Spawned as the user would run it; its URL and token are found in the data dir.
    let host = Host::spawn(&env, &config);
    let url_file = env.data_dir().join(tidewater::admin::URL_FILE);
    assert!(url_file.exists(), "the host wrote no admin URL");
    let token = std::fs::read_to_string(env.data_dir().join(tidewater::admin::TOKEN_FILE)).unwrap();
    assert_eq!(token.len(), 64, "a random token of 32 bytes, hex");

    let versions = |env: &Env| -> Value {
        let (ok, out, err) = cli(env, &["versions", "probe", "--format", "json"]);
        assert!(ok, "{err}");
        serde_json::from_str(&out).unwrap()
    };
    let wait_active = |env: &Env, sha: &str| {
        for _ in 0..3000 {
            if versions(env)["active_version"] == sha {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("{sha} never became active: {}", versions(env));
    };
    let v1 = versions(&env)["active_version"]
        .as_str()
        .unwrap()
        .to_owned();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("probe-v2.wasm");
    std::fs::write(&file, rebuilt(&probe_wasm(), "cli")).unwrap();
    let (ok, v2, err) = cli(
        &env,
        &["deploy", "probe", file.to_str().unwrap(), "--activate"],
    );
    assert!(ok, "{err}");
    assert_eq!(v2.len(), 64, "deploy prints the SHA-256: {v2}");
    wait_active(&env, &v2);
    let listed = versions(&env);
    assert_eq!(listed["versions"].as_array().unwrap().len(), 2);

    // A table for people: the active one starred.
    let (ok, table, _) = cli(&env, &["versions", "probe"]);
    assert!(ok);
    let starred: Vec<&str> = table.lines().filter(|l| l.starts_with('*')).collect();
    assert_eq!(starred.len(), 1);
    assert!(starred[0].contains(&v2[..12]), "{table}");

    let (ok, back, err) = cli(&env, &["rollback", "probe"]);
    assert!(ok, "{err}");
    assert_eq!(back, v1);
    wait_active(&env, &v1);
    let (ok, again, err) = cli(&env, &["activate", "probe", &v2[..10]]);
    assert!(ok, "{err}");
    assert_eq!(again, v2);
    wait_active(&env, &v2);
    let (ok, named, err) = cli(&env, &["rollback", "probe", &v1]);
    assert!(ok, "{err}");
    assert_eq!(named, v1);
    wait_active(&env, &v1);

    assert_eq!(cli(&env, &["pause", "probe"]).1, "probe: paused");
    assert_eq!(cli(&env, &["resume", "probe"]).1, "probe: resumed");
    let (ok, out, err) = cli(
        &env,
        &["replay", "probe", "--from-offset", "0", "--reprocess"],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "probe: replaying, idempotency epoch 1");

    // Refusals come back as the API's message, and exit 1.
    let junk = dir.path().join("junk.wasm");
    std::fs::write(&junk, b"not wasm").unwrap();
    let (ok, _, err) = cli(&env, &["deploy", "probe", junk.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("not WebAssembly") && err.contains("not-webassembly"),
        "{err}"
    );
    let (ok, _, err) = cli(&env, &["activate", "probe", "0123456789abcdef"]);
    assert!(!ok);
    assert!(err.contains("no-such-version"), "{err}");
    for (version, why) in [
        ("0123456", "a prefix needs 8 to 64 hex digits, this has 7"),
        ("0123456789ABCDEF", "lowercase hex"),
    ] {
        let (ok, _, err) = cli(&env, &["activate", "probe", version]);
        assert!(!ok);
        assert!(err.contains("bad-version") && err.contains(why), "{err}");
    }
    let (ok, _, err) = cli(&env, &["versions", "probe/../x"]);
    assert!(!ok);
    assert!(
        err.contains("a processor name is 1 to 200 of the characters"),
        "{err}"
    );
    // A wrong token is refused, and told so.
    let (ok, _, err) = cli(&env, &["pause", "probe", "--token", "wrong"]);
    assert!(!ok);
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(err.contains("the bearer token is not this host's"), "{err}");

    // Wait for the replay to be done (100 events in epoch 1), then stop.
    for _ in 0..3000 {
        if host.get("/v1/processors/probe")["counters"]["outputs"] == 200 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let summary = host.stop_child();
    let c = counters(&summary, "probe");
    assert_eq!(
        (c["events_in"].as_u64(), c["outputs"].as_u64()),
        (Some(200), Some(200))
    );
    assert!(
        !url_file.exists(),
        "the host removes its admin URL when it stops"
    );
}

#[test]
fn a_new_or_changed_wasm_in_the_watched_directory_is_deployed_and_activated() {
    let env = Env::new();
    let watched = env.dir.path().join("plugins");
    std::fs::create_dir(&watched).unwrap();
    let put = |name: &str, bytes: &[u8]| {
        let tmp = watched.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, watched.join(name)).unwrap();
    };
    let config = probe_config(&env, "");
    let host = Host::start(&env, &config, |a| {
        a.watch = Some((watched.clone(), Duration::from_millis(20)))
    });
    let sha = |b: &[u8]| {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(b))
    };
    // Not a component: refused (logged), nothing kept.
    put("probe.wasm", b"junk");
    // Named after no processor: ignored.
    put("other.wasm", &rebuilt(&probe_wasm(), "other"));
    let v2 = rebuilt(&probe_wasm(), "watched-2");
    put("probe.wasm", &v2);
    host.wait_for("probe", "the watched file", |p| {
        p["active_version"] == sha(&v2)
    });
    let v3 = rebuilt(&probe_wasm(), "watched-3");
    put("probe.wasm", &v3);
    let p = host.wait_for("probe", "the changed file", |p| {
        p["active_version"] == sha(&v3)
    });
    assert_eq!(p["swaps"], 2);
    let versions = host.get("/v1/processors/probe/versions");
    assert_eq!(versions["versions"].as_array().unwrap().len(), 3);
    let reasons: Vec<&str> = versions["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["start", "watch", "watch"]);

    // Versions are kept until deleted; the active one cannot be.
    let (status, v) = host.call(
        &host.client,
        "DELETE",
        &format!("/v1/processors/probe/versions/{}", sha(&v3)),
        vec![],
    );
    assert_eq!(
        (status, v["error"]["code"].as_str()),
        (409, Some("version-active"))
    );
    let (status, v) = host.call(
        &host.client,
        "DELETE",
        &format!("/v1/processors/probe/versions/{}", &sha(&v2)[..12]),
        vec![],
    );
    assert_eq!(
        (status, v["deleted"].as_str()),
        (200, Some(sha(&v2).as_str()))
    );
    let versions = host.get("/v1/processors/probe/versions");
    assert_eq!(versions["versions"].as_array().unwrap().len(), 2);
}

#[test]
fn a_restart_keeps_the_deployed_version_and_the_epoch() {
    let env = Env::new();
    env.produce("in", numbered(10));
    let config = probe_config(&env, "");
    let host = Host::start(&env, &config, |_| {});
    host.wait_events("probe", 10);
    let v1 = host.processor("probe")["active_version"]
        .as_str()
        .unwrap()
        .to_owned();
    let v2 = host.deploy("probe", &rebuilt(&probe_wasm(), "kept"), "activate=true");
    host.wait_for("probe", "the swap", |p| p["active_version"] == *v2);
    host.post(
        "/v1/processors/probe/replay",
        json!({"from_offset": 5, "reprocess": true}),
    );
    host.wait_events("probe", 15);
    let summary = host.stop();
    assert_eq!(summary.processors[0].version, v2);

    // A restart's log names the version that runs, and the config file's.
    let out = env
        .cmd()
        .env("TIDEWATER_LOG", "tidewater=info")
        .args(["run", "--until-idle", "--format", "json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let loaded: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("component loaded"))
        .collect();
    assert_eq!(loaded.len(), 1, "{log}");
    for field in [
        format!(" version={v2} "),
        " from=\"registry\" ".to_owned(),
        format!(" config_version={v1} "),
    ] {
        assert!(loaded[0].contains(&field), "{field:?} in {}", loaded[0]);
    }
    assert_eq!(
        crate::common::summary(&out)["processors"][0]["version"],
        *v2
    );

    // The config still names probe.wasm, a version the registry knows: the
    // deployed one runs, in the same epoch.
    let host = Host::start(&env, &config, |_| {});
    let p = host.processor("probe");
    assert_eq!(
        (p["active_version"].as_str(), p["epoch"].as_u64()),
        (Some(v2.as_str()), Some(1))
    );
    let history: Vec<String> = host.get("/v1/processors/probe/versions")["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["reason"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(history, ["start", "activate"]);
    drop(host.stop());
    // Every output of the reprocessed range carries epoch 1.
    let out = env.records("out");
    assert_eq!(out.len(), 15);
    assert!(
        out[10..]
            .iter()
            .all(|r| header(r, "tidewater-epoch").as_deref() == Some("1"))
    );
}

#[test]
fn run_refuses_a_non_loopback_admin_address_without_a_token() {
    let env = Env::new();
    let config = probe_config(&env, "");
    let out = env
        .cmd()
        .args(["run", "--until-idle", "--admin", "0.0.0.0:0", "--config"])
        .arg(&config)
        .env_remove("TIDEWATER_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("the admin API would listen on 0.0.0.0:0, which is not a loopback address, without a token"),
        "{err}"
    );
    // Refused before binding anything: the tests listen on 127.0.0.1 only.
    assert!(!env.data_dir().join(tidewater::admin::URL_FILE).exists());
}
