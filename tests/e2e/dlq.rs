//! `tidewater dlq replay`: dead letters fed through a fixed component,
//! byte for byte, exactly once.

use serde_json::Value;
use tidewater::streams::Record;

use crate::common::*;

fn replay(env: &Env, config: &std::path::Path, component: Option<&str>) -> Value {
    let mut cmd = env.cmd();
    cmd.args(["dlq", "replay", "probe", "--format", "json", "--config"])
        .arg(config);
    if let Some(c) = component {
        cmd.arg("--component").arg(plugin(c));
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn counts(s: &Value) -> [u64; 6] {
    [
        "dead_letters",
        "replayed",
        "outputs",
        "failed",
        "already_done",
        "not_replayable",
    ]
    .map(|k| s[k].as_u64().unwrap())
}

#[test]
fn dead_letters_are_replayed_through_a_fixed_component_exactly_once() {
    let env = Env::new();
    let odd = Record {
        timestamp_ms: 1_700_000_000_123,
        key: Some(vec![0xff, 0x00]),
        value: Some(b"invalid".to_vec()),
        headers: vec![
            ("h".into(), vec![0xfe, 0xff]),
            ("h".into(), vec![]),
            ("idempotency-key".into(), b"odd-1".to_vec()),
        ],
    };
    env.produce(
        "in",
        vec![
            value(r#"{"id":"a"}"#),
            odd.clone(),
            value("trap"),
            value(r#"{"id":"a","changed":true}"#), // a conflict: no code can fix it
            value(r#"{"id":"b"}"#),
        ],
    );
    let config = probe_config(
        &env,
        "idempotency.key = \"json:/id\"\nidempotency.unkeyed = \"process\"",
    );
    env.run(&config);
    assert_eq!(env.values("out"), [r#"{"id":"a"}"#, r#"{"id":"b"}"#]);
    assert_eq!(env.records("probe.dlq").len(), 3);

    // The processor's own component fails again: recorded, nothing published.
    let s = replay(&env, &config, None);
    assert_eq!(counts(&s), [3, 0, 0, 2, 0, 1]);
    // ...and is not tried again with the same version.
    assert_eq!(counts(&replay(&env, &config, None)), [3, 0, 0, 0, 2, 1]);
    assert_eq!(env.records("out").len(), 2);

    // The fixed component replays both, once.
    let s = replay(&env, &config, Some("echo"));
    assert_eq!(counts(&s), [3, 2, 2, 0, 0, 1]);
    assert_ne!(s["version"], replay(&env, &config, None)["version"]);
    let out = env.records("out");
    assert_eq!(out.len(), 4);
    // The original event, byte for byte, as the run loop would have published it.
    let replayed = &out[2].record;
    assert_eq!(replayed.key, odd.key);
    assert_eq!(replayed.value, odd.value);
    assert_eq!(replayed.timestamp_ms, odd.timestamp_ms);
    let (last, rest) = replayed.headers.split_last().unwrap();
    assert_eq!(rest, &odd.headers[..2], "original headers, in order");
    assert_eq!(
        last,
        &("idempotency-key".to_string(), b"odd-1/probe/0".to_vec())
    );
    assert_eq!(out[3].record.value.as_deref(), Some(&b"trap"[..]));
    assert_eq!(
        header(&out[3], "idempotency-key").unwrap(),
        "in/0/2/probe/0",
        "an unkeyed event's output key comes from its original position"
    );

    // Twice does nothing, with either version.
    assert_eq!(
        counts(&replay(&env, &config, Some("echo"))),
        [3, 0, 0, 0, 2, 1]
    );
    assert_eq!(counts(&replay(&env, &config, None)), [3, 0, 0, 0, 2, 1]);
    assert_eq!(env.records("out").len(), 4);
    assert_eq!(env.records("probe.dlq").len(), 3, "the dead letters stay");
}

#[test]
fn replay_refuses_an_unknown_processor() {
    let env = Env::new();
    env.produce("in", vec![value("x")]);
    let config = probe_config(&env, "");
    env.run(&config);
    let out = env
        .cmd()
        .args(["dlq", "replay", "nobody", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("there is no processor \"nobody\" in"), "{err}");
}
