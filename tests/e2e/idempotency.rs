//! Duplicates, conflicts and events without a key, through the real pipeline.

use crate::common::*;

fn records() -> Vec<tidewater::streams::Record> {
    [
        r#"{"id":"a","v":1}"#,    // new
        r#"{"id":"a","v":1}"#,    // duplicate: same key, same payload
        r#"{ "v":1, "id":"a" }"#, // duplicate: the same object, fields reordered
        r#"{"id":"a","v":2}"#,    // conflict: same key, different payload
        r#"{"id":"a","v":2}"#,    // duplicate of the conflict already dead-lettered
        r#"{"v":3}"#,             // no key
        r#"{"v":3}"#,             // no key: never deduplicated against the other
        "not json",               // no key
        r#"{"id":"b","v":9}"#,    // new
    ]
    .into_iter()
    .map(value)
    .collect()
}

#[test]
fn duplicate_conflict_and_unkeyed_are_told_apart() {
    let env = Env::new();
    env.produce("in", records());
    let summary = env.run(&probe_config(&env, r#"idempotency.key = "json:/id""#));
    let c = counters(&summary, "probe");
    assert_eq!(c["events_in"], 9);
    assert_eq!(c["duplicates"], 3);
    assert_eq!(c["conflicts"], 1);
    assert_eq!(c["outputs"], 2);
    assert_eq!(c["dead_lettered"], 4);
    assert_eq!(c["errors"], 0);
    assert_eq!(
        env.values("out"),
        [r#"{"id":"a","v":1}"#, r#"{"id":"b","v":9}"#]
    );

    let dlq = env.records("probe.dlq");
    let kinds: Vec<_> = dlq
        .iter()
        .map(|r| header(r, "tidewater-error-kind").unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "duplicate-key-different-payload",
            "no-idempotency-key",
            "no-idempotency-key",
            "no-idempotency-key"
        ]
    );
    let offsets: Vec<_> = dlq
        .iter()
        .map(|r| header(r, "tidewater-source-offset").unwrap())
        .collect();
    assert_eq!(offsets, ["3", "5", "6", "7"]);
    // The dead letter holds the original value byte for byte.
    assert_eq!(
        dlq[0].record.value.as_deref(),
        Some(&br#"{"id":"a","v":2}"#[..])
    );
    assert_eq!(
        header(&dlq[1], "tidewater-error-message").unwrap(),
        "no idempotency key (json:/id mode): JSON pointer /id is missing in the value"
    );
    assert_eq!(header(&dlq[0], "tidewater-processor").unwrap(), "probe");

    // The outputs carry keys derived from the input key.
    let out = env.records("out");
    assert_eq!(
        header(&out[0], "idempotency-key").unwrap(),
        r#"["a"]/probe/0"#
    );

    // Delivering everything again changes nothing.
    env.produce("in", records());
    let summary = env.run(&probe_config(&env, r#"idempotency.key = "json:/id""#));
    let c = counters(&summary, "probe");
    assert_eq!(
        (
            c["duplicates"].as_u64(),
            c["outputs"].as_u64(),
            c["conflicts"].as_u64()
        ),
        (Some(6), Some(0), Some(0))
    );
    // Only the events without a key are dead-lettered again.
    assert_eq!(c["dead_lettered"], 3);
    assert_eq!(env.records("out").len(), 2);
}

#[test]
fn unkeyed_events_can_be_processed_without_deduplication() {
    let env = Env::new();
    env.produce("in", records());
    let summary = env.run(&probe_config(
        &env,
        "idempotency.key = \"json:/id\"\nidempotency.unkeyed = \"process\"",
    ));
    let c = counters(&summary, "probe");
    assert_eq!(c["unkeyed"], 3);
    assert_eq!(c["outputs"], 5);
    assert_eq!(c["dead_lettered"], 1, "only the conflict");
    assert_eq!(
        env.values("out"),
        [
            r#"{"id":"a","v":1}"#,
            r#"{"v":3}"#,
            r#"{"v":3}"#,
            "not json",
            r#"{"id":"b","v":9}"#
        ]
    );
    // Unkeyed outputs get a key from the input's position.
    assert_eq!(
        header(&env.records("out")[1], "idempotency-key").unwrap(),
        "in/0/5/probe/0"
    );
}

#[test]
fn every_key_mode_deduplicates_what_it_should() {
    use tidewater::streams::Record;
    let rec = |key: &str, v: &str| Record {
        key: Some(key.as_bytes().to_vec()),
        value: Some(v.as_bytes().to_vec()),
        ..Record::default()
    };
    // (mode, outputs expected from: k1/x, k1/x again, k1/y, k2/x)
    for (mode, outputs, duplicates, conflicts) in [
        ("record-key", 2, 1, 1),
        ("hash", 3, 1, 0),
        ("offset", 4, 0, 0),
    ] {
        let env = Env::new();
        env.produce(
            "in",
            vec![
                rec("k1", "x"),
                rec("k1", "x"),
                rec("k1", "y"),
                rec("k2", "x"),
            ],
        );
        let summary = env.run(&probe_config(
            &env,
            &format!("idempotency.key = \"{mode}\""),
        ));
        let c = counters(&summary, "probe");
        assert_eq!(c["outputs"], outputs, "{mode}");
        assert_eq!(c["duplicates"], duplicates, "{mode}");
        assert_eq!(c["conflicts"], conflicts, "{mode}");
    }

    // An explicit idempotency-key header wins over the mode.
    let env = Env::new();
    let with_header = |k: &str, v: &str| Record {
        headers: vec![("idempotency-key".into(), k.as_bytes().to_vec())],
        ..rec("same-record-key", v)
    };
    env.produce(
        "in",
        vec![
            with_header("h1", "x"),
            with_header("h2", "x"),
            with_header("h1", "x"),
        ],
    );
    let summary = env.run(&probe_config(&env, "idempotency.key = \"record-key\""));
    let c = counters(&summary, "probe");
    assert_eq!(
        (c["outputs"].as_u64(), c["duplicates"].as_u64()),
        (Some(2), Some(1))
    );
}
