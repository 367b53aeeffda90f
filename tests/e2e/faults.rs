//! Failures inside a batch: state commits with the batch or not at all, poison
//! events are found and dead-lettered, one processor's failure stops only it.

use crate::common::*;

fn state_of(env: &Env, processor: &str) -> Vec<(String, String)> {
    env.with_log(|log| {
        tidewater::processing::state::dump(log.db(), processor)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect()
    })
}

#[test]
fn state_is_committed_only_with_its_batch_and_poison_events_are_bisected_out() {
    let env = Env::new();
    env.produce(
        "in",
        ["count:a", "count:a", "trap", "count:a", "count:b"]
            .map(value)
            .to_vec(),
    );
    let config = probe_config(&env, "batch.max_records = 5");
    let summary = env.run(&config);
    let c = counters(&summary, "probe");
    assert_eq!(c["events_in"], 5);
    assert_eq!(c["outputs"], 4);
    assert_eq!(c["dead_lettered"], 1);
    assert_eq!(c["errors"], 1);
    // The first call trapped after counting `a` twice; its writes were dropped,
    // so every count happened exactly once.
    assert_eq!(env.values("out"), ["1", "2", "3", "1"]);
    assert_eq!(
        state_of(&env, "probe"),
        [("a".into(), "3".into()), ("b".into(), "1".into())]
    );
    let dlq = env.records("probe.dlq");
    assert_eq!(dlq.len(), 1);
    assert_eq!(header(&dlq[0], "tidewater-error-kind").unwrap(), "trap");
    assert_eq!(header(&dlq[0], "tidewater-source-offset").unwrap(), "2");
    assert!(
        header(&dlq[0], "tidewater-error-message")
            .unwrap()
            .contains("component trapped")
    );

    // State carries across batches and runs.
    env.produce("in", vec![value("count:a")]);
    env.run(&config);
    assert_eq!(env.values("out").last().unwrap(), "4");
}

#[test]
fn timeouts_and_memory_breaches_are_dead_lettered_and_the_rest_goes_on() {
    let env = Env::new();
    env.produce("in", ["x", "spin", "y", "grow", "z"].map(value).to_vec());
    let config = probe_config(
        &env,
        "limits.call_deadline = \"200ms\"\nlimits.memory_bytes = 16777216",
    );
    let summary = env.run(&config);
    let c = counters(&summary, "probe");
    assert_eq!(
        (c["outputs"].as_u64(), c["dead_lettered"].as_u64()),
        (Some(3), Some(2)),
        "{summary}"
    );
    // Bisection: the batch (timeout), [x spin] (timeout), [spin] (timeout),
    // [y grow z], [grow z], [grow] (memory): each failed call discards its
    // instance.
    assert_eq!(
        (c["recycled"].as_u64(), c["recycled_memory_limit"].as_u64()),
        (Some(6), Some(3)),
        "{summary}"
    );
    let table = env.cmd().arg("stats").output().unwrap();
    let table = String::from_utf8(table.stdout).unwrap();
    assert!(
        table.ends_with(
            "\ncomponent instances recycled after a failed call:\n\
             processor                     recycled   memory cap\n\
             probe                                6            3\n"
        ),
        "{table}"
    );
    assert_eq!(env.values("out"), ["x", "y", "z"]);
    let dlq = env.records("probe.dlq");
    let kinds: Vec<_> = dlq
        .iter()
        .map(|r| header(r, "tidewater-error-kind").unwrap())
        .collect();
    assert_eq!(kinds, ["timeout", "memory-limit"]);
    assert_eq!(
        header(&dlq[0], "tidewater-error-message").unwrap(),
        "call exceeded its deadline of 200 ms"
    );
    assert_eq!(
        header(&dlq[1], "tidewater-error-message").unwrap(),
        "instance exceeded its memory limit of 16777216 bytes"
    );
}

#[test]
fn fatal_pauses_only_that_processor_and_commits_nothing_of_its_batch() {
    let env = Env::new();
    env.produce("in", ["count:a", "fatal", "count:a"].map(value).to_vec());
    env.produce(
        "other",
        ["count:a", "count:a", "count:a"].map(value).to_vec(),
    );
    let probe = plugin("probe");
    let config = env.config(&format!(
        r#"
[[processor]]
name = "breaks"
component = "{p}"
inputs = ["in"]
output = "out-breaks"

[[processor]]
name = "carries-on"
component = "{p}"
inputs = ["other"]
output = "out-fine"
batch.max_records = 1
"#,
        p = probe.display()
    ));
    let out = env
        .cmd()
        .args(["run", "--until-idle", "--format", "json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "a paused processor makes run exit non-zero"
    );
    let summary = summary(&out);
    let status = summary["processors"][0]["status"].as_str().unwrap();
    assert!(
        status.starts_with("paused: processor breaks (version "),
        "{status}"
    );
    assert!(
        status.ends_with("returned fatal at in/0@1: probe fatal"),
        "{status}"
    );
    assert_eq!(summary["processors"][1]["status"], "stopped");
    assert_eq!(env.values("out-fine"), ["1", "2", "3"]);
    // Nothing of the failed batch was committed: no output, no state, no position.
    assert!(env.records("out-breaks").is_empty());
    assert!(state_of(&env, "breaks").is_empty());
    let stats = env.stats();
    assert_eq!(stats["breaks"]["lag"], 3);
    assert_eq!(stats["breaks"]["events_in"], 0);
    assert!(
        stats["breaks"]["status"]
            .as_str()
            .unwrap()
            .starts_with("paused: processor breaks")
    );
    assert_eq!(stats["carries-on"]["outputs"], 3);
    assert_eq!(stats["breaks"]["error_codes"]["fatal"], 1);
}

#[test]
fn transient_errors_are_retried_then_dead_lettered() {
    let env = Env::new();
    env.produce("in", ["transient", "ok"].map(value).to_vec());
    let summary = env.run(&probe_config(
        &env,
        "limits.transient_retries = 2\nlimits.retry_backoff = \"10ms\"",
    ));
    let c = counters(&summary, "probe");
    assert_eq!(
        (c["outputs"].as_u64(), c["dead_lettered"].as_u64()),
        (Some(1), Some(1))
    );
    let dlq = env.records("probe.dlq");
    assert_eq!(
        header(&dlq[0], "tidewater-error-kind").unwrap(),
        "transient"
    );
    assert_eq!(header(&dlq[0], "tidewater-attempts").unwrap(), "3");
}

#[test]
fn bad_configs_and_components_are_refused_with_the_reason() {
    let env = Env::new();
    let run = |config: &std::path::Path| {
        let out = env
            .cmd()
            .args(["run", "--until-idle", "--config"])
            .arg(config)
            .output()
            .unwrap();
        assert!(!out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    let err = run(&probe_config(
        &env,
        "[processor.config]\nfail-init = \"threshold must be set\"",
    ));
    assert!(
        err.contains("processor probe: init refused the config: threshold must be set"),
        "{err}"
    );

    let not_wasm = env.dir.path().join("not.wasm");
    std::fs::write(&not_wasm, b"hello").unwrap();
    let err = run(&env.config(&format!(
        "[[processor]]\nname = \"p\"\ncomponent = \"{}\"\ninputs = [\"in\"]\noutput = \"out\"\n",
        not_wasm.display()
    )));
    assert!(
        err.contains("is not a valid WebAssembly component"),
        "{err}"
    );
    // wasmparser's two-line cause comes whole, on one line.
    assert!(
        err.contains("bad magic number - expected=[ 0x0, 0x61, 0x73, 0x6d, ] actual=[ 0x68, 0x65, 0x6c, 0x6c, ] (at offset 0x0)"),
        "{err}"
    );

    let err = run(&probe_config(&env, "colour = \"red\""));
    assert!(err.contains("unknown field `colour`"), "{err}");
}
