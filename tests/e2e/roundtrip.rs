//! Bytes cross the WIT boundary and back unchanged.

use crate::common::*;
use tidewater::streams::Record;

#[test]
fn events_cross_the_wit_boundary_byte_for_byte() {
    let env = Env::new();
    let mib: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let inputs = vec![
        // An empty value is not a tombstone.
        Record {
            timestamp_ms: 1,
            key: None,
            value: Some(vec![]),
            headers: vec![],
        },
        // A tombstone with an empty key.
        Record {
            timestamp_ms: -2,
            key: Some(vec![]),
            value: None,
            headers: vec![],
        },
        // Headers that are not UTF-8, repeated names, an empty value, a non-ASCII name.
        Record {
            timestamp_ms: 1_700_000_000_000,
            key: Some(vec![0xff, 0x00, 0x80]),
            value: Some(vec![0xc3, 0x28]),
            headers: vec![
                ("a".into(), vec![0xff, 0xfe]),
                ("a".into(), vec![0x00]),
                ("b".into(), vec![]),
                ("größe".into(), "€".as_bytes().to_vec()),
            ],
        },
        // 1 MiB.
        Record {
            timestamp_ms: 3,
            key: Some(b"big".to_vec()),
            value: Some(mib),
            headers: vec![],
        },
    ];
    env.produce("in", inputs.clone());
    let summary = env.run(&probe_config(&env, ""));
    let c = counters(&summary, "probe");
    assert_eq!(
        (
            c["events_in"].as_u64(),
            c["outputs"].as_u64(),
            c["errors"].as_u64()
        ),
        (Some(4), Some(4), Some(0))
    );

    let outputs = env.records("out");
    assert_eq!(outputs.len(), 4);
    for (i, (out, input)) in outputs.iter().zip(&inputs).enumerate() {
        assert_eq!(out.offset, i as u64);
        assert_eq!(
            out.record.timestamp_ms, input.timestamp_ms,
            "output timestamp is the input's"
        );
        assert_eq!(out.record.key, input.key);
        assert_eq!(out.record.value, input.value);
        let (last, rest) = out
            .record
            .headers
            .split_last()
            .expect("idempotency-key header");
        assert_eq!(
            rest,
            &input.headers[..],
            "headers keep order, repeats and bytes"
        );
        assert_eq!(last.0, "idempotency-key");
        assert_eq!(last.1, format!("in/0/{i}/probe/0").into_bytes());
    }

    // The CLI shows bytes that are not UTF-8 as base64.
    let out = env
        .cmd()
        .args(["consume", "out", "--from-offset", "2", "--max", "1"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(line["value"], serde_json::json!({"base64": "wyg="}));
    assert_eq!(line["key"], serde_json::json!({"base64": "/wCA"}));
    assert_eq!(line["headers"][3], serde_json::json!(["größe", "€"]));
    assert_eq!(line["timestamp_ms"], 1_700_000_000_000i64);
}
