//! The conformance suite: every language's build of each example processor
//! gets the same events and must give exactly the expected results (outputs
//! byte for byte, errors with their kind and message), the expected state
//! after each case, and the same outputs as the Rust build on real data.
//!
//! The cases are data: `tests/conformance/<processor>.json` (the format is
//! described in `tests/conformance/README.md`). Components come from
//! `target/plugins/<language>-<processor>.wasm`, built by `make plugins`.
//! The languages are `rust c cpp zig python js ts` unless `TIDEWATER_CONFORMANCE_LANGS`
//! names others (space- or comma-separated); a missing component fails the
//! suite, it is never skipped.

#[path = "../support/plugins.rs"]
mod plugins;
mod real_data;
mod sandbox;

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result, bail};
use redb::ReadableDatabase;
use serde_json::Value;
use tidewater::processing::state::{ApplyState, dump, overlay};
use tidewater::runtime::{CallError, Event, EventResult, Limits, Output, ProcessError, Runtime};

use plugins::{make_plugins, root};

/// The languages every processor is built in.
const LANGUAGES: &[&str] = &["rust", "c", "cpp", "zig", "python", "js", "ts"];

fn languages() -> Vec<String> {
    match std::env::var("TIDEWATER_CONFORMANCE_LANGS") {
        Ok(s) if !s.trim().is_empty() => s
            .split([' ', ','])
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        _ => LANGUAGES.iter().map(|l| l.to_string()).collect(),
    }
}

/// Builds the components (once per test run), then names one.
fn component(language: &str, processor: &str) -> PathBuf {
    make_plugins();
    root()
        .join("target/plugins")
        .join(format!("{language}-{processor}.wasm"))
}

fn runtime() -> &'static Arc<Runtime> {
    static RT: OnceLock<Arc<Runtime>> = OnceLock::new();
    RT.get_or_init(|| {
        Arc::new(Runtime::new(Some(root().join("target/conformance-cache"))).expect("runtime"))
    })
}

/// Bytes from a case file: a string (its UTF-8), `{"hex": ".."}`, or
/// `{"repeat": "..", "times": n, "before": "..", "after": ".."}`.
fn bytes(v: &Value) -> Result<Vec<u8>> {
    match v {
        Value::String(s) => Ok(s.as_bytes().to_vec()),
        Value::Object(o) if o.contains_key("hex") => {
            let h = o["hex"].as_str().context("hex must be a string")?;
            hex::decode(h).with_context(|| format!("bad hex {h:?}"))
        }
        Value::Object(o) if o.contains_key("repeat") => {
            let text = |k: &str| o.get(k).and_then(Value::as_str).unwrap_or("");
            let times = o
                .get("times")
                .and_then(Value::as_u64)
                .context("repeat needs times")?;
            let mut b = text("before").as_bytes().to_vec();
            b.extend(text("repeat").repeat(times as usize).into_bytes());
            b.extend(text("after").as_bytes());
            Ok(b)
        }
        other => bail!("not a byte string: {other}"),
    }
}

fn opt_bytes(v: Option<&Value>) -> Result<Option<Vec<u8>>> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(v) => bytes(v).map(Some),
    }
}

fn headers(v: Option<&Value>) -> Result<Vec<(String, Vec<u8>)>> {
    let Some(list) = v else { return Ok(Vec::new()) };
    list.as_array()
        .context("headers must be a list")?
        .iter()
        .map(|h| {
            let name = h[0].as_str().context("header name must be a string")?;
            Ok((name.to_owned(), bytes(&h[1])?))
        })
        .collect()
}

fn event(v: &Value, offset: u64) -> Result<Event> {
    Ok(Event {
        topic: v["topic"].as_str().unwrap_or("sensor-readings").to_owned(),
        partition: v["partition"].as_u64().unwrap_or(0) as u32,
        offset,
        timestamp_ms: v["timestamp_ms"].as_i64().unwrap_or(0),
        key: opt_bytes(v.get("key"))?,
        value: opt_bytes(v.get("value"))?,
        headers: headers(v.get("headers"))?,
    })
}

fn expected(v: &Value) -> Result<EventResult> {
    let o = v.as_object().context("expect must be an object")?;
    if let Some(outputs) = o.get("ok") {
        return outputs
            .as_array()
            .context("ok must be a list")?
            .iter()
            .map(|out| {
                Ok(Output {
                    topic: out["topic"].as_str().map(str::to_owned),
                    key: opt_bytes(out.get("key"))?,
                    value: opt_bytes(out.get("value"))?,
                    headers: headers(out.get("headers"))?,
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Ok);
    }
    let msg = |k: &str| {
        o[k].as_str()
            .map(str::to_owned)
            .context("message must be a string")
    };
    if o.contains_key("invalid") {
        return Ok(Err(ProcessError::Invalid(msg("invalid")?)));
    }
    if o.contains_key("transient") {
        return Ok(Err(ProcessError::Transient(msg("transient")?)));
    }
    if o.contains_key("fatal") {
        return Ok(Err(ProcessError::Fatal(msg("fatal")?)));
    }
    bail!("expect must have ok, invalid, transient or fatal: {v}")
}

fn config(v: Option<&Value>) -> Result<Vec<(String, String)>> {
    let Some(Value::Object(o)) = v else {
        return Ok(Vec::new());
    };
    o.iter()
        .map(|(k, v)| {
            let v = v.as_str().context("config values are strings")?;
            Ok((k.clone(), v.to_owned()))
        })
        .collect()
}

/// Shows bytes as text where they are UTF-8 (shortened past 200 bytes).
fn show(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(200)]).into_owned();
    if b.len() > 200 {
        format!("{s:?}... ({} bytes)", b.len())
    } else {
        format!("{s:?}")
    }
}

fn show_result(r: &EventResult) -> String {
    match r {
        Ok(outs) => {
            let outs: Vec<String> = outs
                .iter()
                .map(|o| {
                    format!(
                        "{{topic: {:?}, key: {}, value: {}, headers: {}}}",
                        o.topic,
                        o.key.as_deref().map_or("none".into(), show),
                        o.value.as_deref().map_or("none".into(), show),
                        o.headers.len()
                    )
                })
                .collect();
            format!("ok [{}]", outs.join(", "))
        }
        Err(ProcessError::Invalid(m)) => format!("invalid {m:?}"),
        Err(ProcessError::Transient(m)) => format!("transient {m:?}"),
        Err(ProcessError::Fatal(m)) => format!("fatal {m:?}"),
    }
}

/// One output: topic, key, value, headers.
type NormOutput = (
    Option<String>,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Vec<u8>)>,
);

/// A result in a form that compares (the generated types do not).
#[derive(Debug, PartialEq)]
enum Norm {
    Ok(Vec<NormOutput>),
    Err(&'static str, String),
}

fn norm(r: &EventResult) -> Norm {
    match r {
        Ok(outs) => Norm::Ok(
            outs.iter()
                .map(|o| {
                    (
                        o.topic.clone(),
                        o.key.clone(),
                        o.value.clone(),
                        o.headers.clone(),
                    )
                })
                .collect(),
        ),
        Err(ProcessError::Invalid(m)) => Norm::Err("invalid", m.clone()),
        Err(ProcessError::Transient(m)) => Norm::Err("transient", m.clone()),
        Err(ProcessError::Fatal(m)) => Norm::Err("fatal", m.clone()),
    }
}

/// Runs one case against one component; returns what differs.
fn run_case(path: &Path, processor: &str, case: &Value) -> Result<Vec<String>> {
    let rt = runtime();
    let component = rt.load(path)?;
    let dir = tempfile::tempdir()?;
    let db = tidewater::db::open(dir.path())?;
    let name: Arc<str> = processor.into();
    let mut diffs = Vec::new();
    let mut limits = Limits::default();
    if let Some(m) = case.get("memory_bytes").and_then(Value::as_u64) {
        limits.memory_bytes = m as usize;
    }
    let init = rt.instantiate(
        &component,
        name.clone(),
        limits,
        &config(case.get("config"))?,
    );
    let mut instance = match (init, case.get("init_error")) {
        (Err(CallError::InitRefused(got)), Some(want)) => {
            if Some(got.as_str()) != want.as_str() {
                diffs.push(format!("init refused with {got:?}, expected {want}"));
            }
            return Ok(diffs);
        }
        (Ok(_), Some(want)) => {
            diffs.push(format!(
                "init accepted the config, expected the refusal {want}"
            ));
            return Ok(diffs);
        }
        (Err(e), _) => {
            diffs.push(format!("init failed: {e}"));
            return Ok(diffs);
        }
        (Ok(i), None) => i,
    };
    let mut offset = 0;
    let batches = case["batches"]
        .as_array()
        .context("batches must be a list")?;
    for (b, batch) in batches.iter().enumerate() {
        let items = batch.as_array().context("a batch must be a list")?;
        let mut events = Vec::new();
        let mut want = Vec::new();
        for item in items {
            events.push(event(item, offset)?);
            want.push(expected(&item["expect"])?);
            offset += 1;
        }
        let mut overlay = overlay(name.clone(), db.begin_read()?);
        let got = match instance.process(&events, &mut overlay) {
            Ok(r) => r,
            Err(e) => {
                diffs.push(format!("batch {b}: the call failed: {e}"));
                return Ok(diffs);
            }
        };
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            if norm(g) != norm(w) {
                diffs.push(format!(
                    "batch {b} event {i}:\n      got      {}\n      expected {}",
                    show_result(g),
                    show_result(w)
                ));
            }
        }
        let txn = db.begin_write()?;
        overlay.apply_in(&txn)?;
        txn.commit()?;
    }
    if let Some(Value::Object(want)) = case.get("state") {
        let want: Vec<(Vec<u8>, Vec<u8>)> = want
            .iter()
            .map(|(k, v)| Ok((k.as_bytes().to_vec(), bytes(v)?)))
            .collect::<Result<_>>()?;
        let mut want = want;
        want.sort();
        let got = dump(&db, processor)?;
        if got != want {
            let fmt = |s: &[(Vec<u8>, Vec<u8>)]| {
                s.iter()
                    .map(|(k, v)| format!("{}={}", show(k), hex::encode(v)))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            diffs.push(format!(
                "state:\n      got      {}\n      expected {}",
                fmt(&got),
                fmt(&want)
            ));
        }
    }
    Ok(diffs)
}

fn suite(processor: &str) {
    let file = root().join(format!("tests/conformance/{processor}.json"));
    let text = std::fs::read_to_string(&file).expect("reading the case file");
    let doc: Value = serde_json::from_str(&text).expect("the case file is JSON");
    let cases = doc["cases"].as_array().expect("cases is a list");
    let mut failures = Vec::new();
    let mut passed = 0;
    for language in languages() {
        let path = component(&language, processor);
        if !path.exists() {
            failures.push(format!(
                "{language}: {} was not built (make plugins)",
                path.display()
            ));
            continue;
        }
        for case in cases {
            let name = case["name"].as_str().unwrap_or("?");
            match run_case(&path, processor, case) {
                Ok(d) if d.is_empty() => passed += 1,
                Ok(d) => failures.push(format!("{language} / {name}:\n    {}", d.join("\n    "))),
                Err(e) => failures.push(format!("{language} / {name}: {e:#}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} case runs of {processor} failed:\n  {}",
        failures.len(),
        failures.len() + passed,
        failures.join("\n  ")
    );
    assert_eq!(passed, cases.len() * languages().len());
}

#[test]
fn enrich_conforms_in_every_language() {
    suite("enrich");
}

#[test]
fn threshold_conforms_in_every_language() {
    suite("threshold");
}
