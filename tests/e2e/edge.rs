//! Input edge cases through the real pipeline: big values, big fan-outs,
//! tombstones and odd JSON under `json:` keys, redelivery at new offsets.

use tidewater::streams::Record;

use crate::common::*;

fn keyed(key: &str, v: &[u8]) -> Record {
    Record {
        key: Some(key.as_bytes().to_vec()),
        value: Some(v.to_vec()),
        ..Record::default()
    }
}

#[test]
fn an_8_mib_value_is_processed_within_the_default_limits() {
    let env = Env::new();
    let big: Vec<u8> = (0..8 << 20).map(|i| (i * 7 % 253) as u8).collect();
    env.produce("in", vec![keyed("big", &big), keyed("small", b"after")]);
    let summary = env.run(&probe_config(&env, ""));
    let c = counters(&summary, "probe");
    assert_eq!(
        (c["outputs"].as_u64(), c["dead_lettered"].as_u64()),
        (Some(2), Some(0))
    );
    let out = env.records("out");
    assert_eq!(out[0].record.value.as_deref(), Some(big.as_slice()));
    assert_eq!(out[1].record.value.as_deref(), Some(&b"after"[..]));
}

#[test]
fn a_2000_output_fan_out_commits_with_its_key_or_not_at_all() {
    let lookup = |env: &Env| {
        env.with_log(|log| {
            use redb::ReadableDatabase;
            let r = log.db().begin_read().unwrap();
            tidewater::processing::idempotency::lookup(&r, "probe", b"f1").unwrap()
        })
    };
    let config = |env: &Env| probe_config(env, "idempotency.key = \"record-key\"");

    // Nothing: the same batch ends in `fatal`, so neither the 2,000 outputs
    // nor the key nor the position are committed.
    let env = Env::new();
    env.produce(
        "in",
        vec![keyed("f1", b"fanout:2000:1024"), keyed("f2", b"fatal")],
    );
    env.run(&config(&env));
    assert!(env.records("out").is_empty());
    assert_eq!(lookup(&env), None);
    assert_eq!(env.stats()["probe"]["lag"], 2);

    // All: 2,000 outputs of 1 KiB, each with its own idempotency key, and the key.
    let env = Env::new();
    env.produce("in", vec![keyed("f1", b"fanout:2000:1024")]);
    env.run(&config(&env));
    let out = env.records("out");
    assert_eq!(out.len(), 2000);
    for (i, r) in out.iter().enumerate() {
        assert_eq!(r.record.key, Some(i.to_string().into_bytes()));
        assert_eq!(r.record.value.as_deref(), Some(&[b'x'; 1024][..]));
        assert_eq!(
            header(r, "idempotency-key").unwrap(),
            format!("f1/probe/{i}")
        );
    }
    assert_eq!(
        lookup(&env).map(|k| k.outcome),
        Some(tidewater::processing::idempotency::Outcome::Processed)
    );
    // Delivered again: a duplicate, nothing more published.
    env.produce("in", vec![keyed("f1", b"fanout:2000:1024")]);
    let summary = env.run(&config(&env));
    assert_eq!(counters(&summary, "probe")["duplicates"], 1);
    assert_eq!(env.records("out").len(), 2000);
}

#[test]
fn tombstones_under_json_keys_are_processed_not_dead_lettered() {
    let env = Env::new();
    let tombstone = Record {
        key: Some(b"dev-1".to_vec()),
        value: None,
        ..Record::default()
    };
    env.produce(
        "in",
        vec![tombstone.clone(), tombstone, value(r#"{"id":"a"}"#)],
    );
    let summary = env.run(&probe_config(&env, "idempotency.key = \"json:/id\""));
    let c = counters(&summary, "probe");
    assert_eq!(
        (c["outputs"].as_u64(), c["dead_lettered"].as_u64()),
        (Some(3), Some(0))
    );
    let out = env.records("out");
    assert_eq!(out[0].record.value, None, "passed on as a tombstone");
    assert_eq!(out[0].record.key, Some(b"dev-1".to_vec()));
    assert_eq!(
        header(&out[1], "idempotency-key").unwrap(),
        "in/0/1/probe/0"
    );
}

#[test]
fn a_repeated_json_field_counts_its_last_occurrence() {
    let env = Env::new();
    env.produce(
        "in",
        [
            r#"{"id":"b","id":"a","v":1}"#,
            r#"{"v":1,"id":"a"}"#, // the same object: a duplicate
            r#"{"id":"b","v":1}"#, // another key
        ]
        .map(value)
        .to_vec(),
    );
    let summary = env.run(&probe_config(&env, "idempotency.key = \"json:/id\""));
    let c = counters(&summary, "probe");
    assert_eq!(
        (c["outputs"].as_u64(), c["duplicates"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(
        header(&env.records("out")[0], "idempotency-key").unwrap(),
        r#"["a"]/probe/0"#
    );
}

#[test]
fn the_same_payload_three_times_minutes_apart_gives_one_output() {
    let env = Env::new();
    let config = probe_config(&env, "idempotency.key = \"json:/device,/ts\"");
    let reading = br#"{"device":"buoy-1","ts":"2026-11-30T12:00:00Z","t":14.2}"#;
    let mut outputs = Vec::new();
    for minutes in [0i64, 3, 6] {
        env.produce(
            "in",
            vec![Record {
                timestamp_ms: 1_764_504_000_000 + minutes * 60_000,
                value: Some(reading.to_vec()),
                ..Record::default()
            }],
        );
        let summary = env.run(&config);
        outputs.push(counters(&summary, "probe")["outputs"].as_u64().unwrap());
    }
    assert_eq!(outputs, [1, 0, 0]);
    assert_eq!(env.stats()["probe"]["duplicates"], 2);
    let out = env.records("out");
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].record.timestamp_ms, 1_764_504_000_000);
}
