//! Property-based fuzzing (proptest): the component validator on arbitrary
//! bytes, the CSV and JSON ingest on arbitrary input, and the embedded log
//! plus the idempotency store against a simple in-memory model.
//!
//! Every test here is named `fuzz_*`. `cargo test` runs proptest's default
//! 256 cases each; `make fuzz` runs many more (`PROPTEST_CASES`).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, OnceLock};

use proptest::prelude::*;
use redb::ReadableDatabase;

use crate::processing::idempotency::{self, KeyMode, KeyRecord, Outcome};
use crate::runtime::{LoadError, Runtime};
use crate::streams::embedded::Log;
use crate::streams::ingest::{CsvOptions, read_csv};
use crate::streams::{LogRecord, Record};

fn runtime() -> &'static Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| Runtime::new(None).expect("engine"))
}

/// Bytes that start like a component, a core module, or anything.
fn wasmish() -> impl Strategy<Value = Vec<u8>> {
    let tail = proptest::collection::vec(any::<u8>(), 0..2048);
    prop_oneof![
        tail.clone(),
        tail.clone()
            .prop_map(|t| [&b"\0asm\x0d\0\x01\0"[..], &t].concat()),
        tail.prop_map(|t| [&b"\0asm\x01\0\0\0"[..], &t].concat()),
    ]
}

proptest! {
    /// Arbitrary bytes offered as a component are refused with an error
    /// (never a panic, never accepted: a processor needs its exports).
    #[test]
    fn fuzz_component_validator_refuses_arbitrary_bytes(bytes in wasmish()) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload.wasm");
        std::fs::write(&path, &bytes).unwrap();
        match runtime().load(&path) {
            Err(LoadError::Invalid { .. } | LoadError::World { .. }) => {}
            Err(other) => prop_assert!(false, "unexpected error: {other}"),
            Ok(_) => prop_assert!(false, "{} arbitrary bytes loaded as a processor", bytes.len()),
        }
    }

    /// Arbitrary bytes as a CSV file: an error for the file, or each row an
    /// event keyed by the device whose value is a JSON object with the
    /// device and time, or a bad row with a line number after the header.
    #[test]
    fn fuzz_csv_ingest_never_panics_and_keeps_its_promises(bytes in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let options = CsvOptions { device: "d\"1".into(), time_column: "t".into() };
        let mut rows = Vec::new();
        let _ = read_csv(&bytes[..], &options, |r| rows.push(r));
        for row in rows {
            match row {
                Ok(r) => {
                    prop_assert_eq!(r.key.as_deref(), Some(&b"d\"1"[..]));
                    let v: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
                    prop_assert_eq!(&v["device"], "d\"1");
                    prop_assert!(v["ts"].is_string());
                }
                Err(bad) => prop_assert!(bad.line >= 2, "line {}", bad.line),
            }
        }
    }

    /// Well-formed CSV with cells of any text: one event per row with a valid
    /// time, one bad row per row without; the cells come back in the JSON.
    #[test]
    fn fuzz_csv_rows_become_events(rows in proptest::collection::vec((any::<bool>(), "\\PC{0,12}", "[0-9]{1,6}"), 1..20)) {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(["t", "text", "n"]).unwrap();
        for (good, text, n) in &rows {
            let t = if *good { "2026-11-30T12:00:00Z" } else { "yesterday" };
            w.write_record([t, text.as_str(), n.as_str()]).unwrap();
        }
        let data = w.into_inner().unwrap();
        let options = CsvOptions { device: "d".into(), time_column: "t".into() };
        let mut got = Vec::new();
        read_csv(&data[..], &options, |r| got.push(r)).unwrap();
        prop_assert_eq!(got.len(), rows.len());
        for ((good, text, n), row) in rows.iter().zip(got) {
            prop_assert_eq!(*good, row.is_ok());
            if let Ok(r) = row {
                let v: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
                prop_assert_eq!(r.timestamp_ms, 1_796_040_000_000);
                // Digits with a leading zero stay the text as written (a
                // number would lose the zero); other digits become a number.
                if n.len() > 1 && n.starts_with('0') {
                    prop_assert_eq!(v["n"].as_str(), Some(n.as_str()));
                } else {
                    prop_assert_eq!(v["n"].as_f64(), Some(n.parse::<f64>().unwrap()));
                }
                // A cell is a number, null (for `nil`/empty and the like) or
                // the text itself, without surrounding white space.
                prop_assert!(v["text"].is_string() || v["text"].is_number() || v["text"].is_null() || v["text"].is_boolean());
                if let Some(s) = v["text"].as_str() { prop_assert_eq!(s, text.trim()); }
            }
        }
    }

    /// JSON keys on arbitrary values: a key or a reason, never a panic; and
    /// a key never depends on the spacing of the JSON.
    #[test]
    fn fuzz_json_keys_on_arbitrary_values(bytes in proptest::collection::vec(any::<u8>(), 0..256), v in any::<i64>(), s in "\\PC{0,8}") {
        let mode: KeyMode = "json:/id,/x/0".parse().unwrap();
        let event = |value: Vec<u8>| LogRecord { topic: "t".into(), partition: 0, offset: 1, append_ms: 0, record: Record { value: Some(value), ..Record::default() } };
        let _ = idempotency::derive(&mode, &event(bytes));
        let id = serde_json::Value::from(s.as_str()).to_string();
        let tight = format!(r#"{{"id":{id},"x":[{v}]}}"#);
        let loose = format!("{{ \"x\" : [ {v} ] ,\n \"id\" :\t{id} }}");
        prop_assert_eq!(
            idempotency::derive(&mode, &event(tight.into_bytes())).unwrap(),
            idempotency::derive(&mode, &event(loose.into_bytes())).unwrap()
        );
    }
}

/// A record's key and value.
type KeyValue = (Option<Vec<u8>>, Option<Vec<u8>>);

/// One operation on the embedded log and the idempotency store.
#[derive(Debug, Clone)]
enum Op {
    /// Append records to (topic, partition) in one transaction.
    Append(u8, u32, Vec<KeyValue>),
    /// Append, then drop the transaction without committing.
    Abandon(u8, u32, Vec<u8>),
    /// Read (topic, partition) from an offset, at most n records.
    Read(u8, u32, u64, usize),
    /// Set consumer c's position in (topic, partition).
    SetPosition(u8, u8, u32, u64),
    /// Mark key k of processor p with fingerprint byte and expiry.
    Mark(u8, u8, u8, u64),
    /// Remember a conflict of key k of processor p with a fingerprint byte, until an expiry.
    Conflict(u8, u8, u8, u64),
    /// Purge keys that expired before `now`.
    Purge(u64),
    /// Close the database and open it again.
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let payload = (
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..4)),
        proptest::option::of(proptest::collection::vec(any::<u8>(), 0..6)),
    );
    prop_oneof![
        4 => (0u8..2, 0u32..2, proptest::collection::vec(payload, 1..4)).prop_map(|(t, p, r)| Op::Append(t, p, r)),
        1 => (0u8..2, 0u32..2, proptest::collection::vec(any::<u8>(), 0..4)).prop_map(|(t, p, v)| Op::Abandon(t, p, v)),
        3 => (0u8..2, 0u32..2, 0u64..12, 1usize..5).prop_map(|(t, p, f, n)| Op::Read(t, p, f, n)),
        2 => (0u8..2, 0u8..2, 0u32..2, 0u64..12).prop_map(|(c, t, p, n)| Op::SetPosition(c, t, p, n)),
        3 => (0u8..2, 0u8..4, any::<u8>(), 0u64..50).prop_map(|(p, k, f, e)| Op::Mark(p, k, f, e)),
        2 => (0u8..2, 0u8..4, 0u8..3, 0u64..50).prop_map(|(p, k, f, e)| Op::Conflict(p, k, f, e)),
        1 => (0u64..60).prop_map(Op::Purge),
        1 => Just(Op::Reopen),
    ]
}

/// What the model keeps: per (topic, partition) the records in order; the
/// positions; per (processor, key) the first record.
#[derive(Default)]
struct Model {
    partitions: BTreeMap<(String, u32), Vec<Record>>,
    positions: HashMap<(String, String, u32), u64>,
    keys: BTreeMap<(String, Vec<u8>), KeyRecord>,
    conflicts: BTreeMap<(String, Vec<u8>, u8), u64>,
}

proptest! {
    // Each case is up to 40 durable commits: fewer cases by default,
    // `PROPTEST_CASES` (as `make fuzz` sets it) for more.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(64)
    ))]

    /// The embedded log and the idempotency store behave like the model
    /// through appends, abandoned transactions, reads, positions, marks,
    /// purges and reopening the file.
    #[test]
    fn fuzz_log_and_idempotency_store_match_a_model(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut db: Option<Arc<redb::Database>> = Some(crate::db::open(dir.path()).unwrap());
        let mut model = Model::default();
        let topic = |t: u8| format!("topic-{t}");
        let log_of = |db: &Arc<redb::Database>| Log::new(db.clone(), 2);
        for t in 0..2 {
            log_of(db.as_ref().unwrap()).create_topic(&topic(t), 2).unwrap();
        }
        for op in ops {
            let d = db.as_ref().unwrap();
            match op {
                Op::Append(t, p, records) => {
                    let txn = d.begin_write().unwrap();
                    for (i, (key, value)) in records.into_iter().enumerate() {
                        let r = Record { timestamp_ms: i as i64 - 1, key, value, headers: vec![("h".into(), vec![t, 0xff])] };
                        let (_, offset) = crate::streams::embedded::append_in(&txn, &topic(t), Some(p), &r, 2).unwrap();
                        let stored = model.partitions.entry((topic(t), p)).or_default();
                        prop_assert_eq!(offset, stored.len() as u64);
                        stored.push(r);
                    }
                    txn.commit().unwrap();
                }
                Op::Abandon(t, p, v) => {
                    let txn = d.begin_write().unwrap();
                    let r = Record { value: Some(v), ..Record::default() };
                    crate::streams::embedded::append_in(&txn, &topic(t), Some(p), &r, 2).unwrap();
                    idempotency::mark_in(&txn, "p0", b"abandoned", &key_record(0, 0)).unwrap();
                    drop(txn);
                }
                Op::Read(t, p, from, n) => {
                    let got = log_of(d).read(&topic(t), p, from, n, usize::MAX).unwrap();
                    let all = model.partitions.get(&(topic(t), p)).cloned().unwrap_or_default();
                    let want: Vec<(u64, Record)> = all.into_iter().enumerate().map(|(o, r)| (o as u64, r)).filter(|(o, _)| *o >= from).take(n).collect();
                    let got: Vec<(u64, Record)> = got.into_iter().map(|r| { assert_eq!((r.topic.as_str(), r.partition), (topic(t).as_str(), p)); (r.offset, r.record) }).collect();
                    prop_assert_eq!(got, want);
                }
                Op::SetPosition(c, t, p, next) => {
                    let consumer = format!("c{c}");
                    let txn = d.begin_write().unwrap();
                    crate::streams::positions::set_position_in(&txn, &consumer, &topic(t), p, next).unwrap();
                    txn.commit().unwrap();
                    model.positions.insert((consumer, topic(t), p), next);
                }
                Op::Mark(p, k, f, expires) => {
                    let (processor, key) = (format!("p{p}"), vec![b'k', k]);
                    let txn = d.begin_write().unwrap();
                    idempotency::mark_in(&txn, &processor, &key, &key_record(f, expires)).unwrap();
                    txn.commit().unwrap();
                    model.keys.entry((processor, key)).or_insert(key_record(f, expires));
                }
                Op::Conflict(p, k, f, expires) => {
                    let (processor, key) = (format!("p{p}"), vec![b'k', k]);
                    let txn = d.begin_write().unwrap();
                    idempotency::mark_conflict_in(&txn, &processor, &key, &[f; 16], expires).unwrap();
                    txn.commit().unwrap();
                    model.conflicts.insert((processor, key, f), expires);
                }
                Op::Purge(now) => {
                    let removed = idempotency::purge_expired(d, now).unwrap();
                    let before = model.keys.len() + model.conflicts.len();
                    model.keys.retain(|_, r| r.expires_ms >= now);
                    model.conflicts.retain(|_, expires| *expires >= now);
                    prop_assert_eq!(removed, (before - model.keys.len() - model.conflicts.len()) as u64);
                }
                Op::Reopen => {
                    drop(db.take());
                    db = Some(crate::db::open(dir.path()).unwrap());
                }
            }
            // After every operation: every key and position is as the model says.
            let d = db.as_ref().unwrap();
            let r = d.begin_read().unwrap();
            for p in ["p0", "p1"] {
                for k in 0..4u8 {
                    let key = vec![b'k', k];
                    prop_assert_eq!(
                        idempotency::lookup(&r, p, &key).unwrap(),
                        model.keys.get(&(p.to_owned(), key.clone())).copied()
                    );
                    for f in 0..3u8 {
                        prop_assert_eq!(
                            idempotency::conflict_seen(&r, p, &key, &[f; 16]).unwrap(),
                            model.conflicts.contains_key(&(p.to_owned(), key.clone(), f))
                        );
                    }
                }
            }
            prop_assert_eq!(idempotency::lookup(&r, "p0", b"abandoned").unwrap(), None);
            drop(r);
            let log = log_of(d);
            for info in log.topics().unwrap() {
                for (p, b) in info.partitions.iter().enumerate() {
                    let n = model.partitions.get(&(info.name.clone(), p as u32)).map_or(0, Vec::len);
                    prop_assert_eq!((b.start, b.end), (0, n as u64));
                }
            }
            for c in 0..2u8 {
                for t in 0..2u8 {
                    for p in 0..2u32 {
                        let consumer = format!("c{c}");
                        prop_assert_eq!(
                            log.position(&consumer, &topic(t), p).unwrap(),
                            model.positions.get(&(consumer.clone(), topic(t), p)).copied()
                        );
                    }
                }
            }
        }
    }
}

fn key_record(fingerprint: u8, expires_ms: u64) -> KeyRecord {
    KeyRecord {
        fingerprint: [fingerprint; 16],
        recorded_ms: 7,
        expires_ms,
        outcome: Outcome::Processed,
    }
}
