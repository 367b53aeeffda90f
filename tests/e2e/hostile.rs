//! Hostile and broken processors next to a healthy one on the same host: the
//! bad event is dead-lettered with its reason, every other event is
//! processed exactly once, the healthy processor processes all of its input,
//! and the host's memory stays bounded.
//!
//! The hostile behaviours are commands of `plugins/testing/probe`.

use serde_json::Value;
use tidewater::streams::LogRecord;

use crate::common::*;

/// Events of the healthy processor, `bystander`: `count:b` each, so its
/// outputs are "1", "2", ... exactly when each is processed once.
const BYSTANDER_EVENTS: usize = 300;

/// A generous bound on the host's peak resident memory where the component
/// keeps its default 64 MiB memory cap, in bytes (about 30–60 MiB measured).
const RSS_BOUND_DEFAULT: u64 = 128 << 20;

/// The bound where the memory cap is raised to 512 MiB: the cap plus 128 MiB
/// (about 230–250 MiB measured).
const RSS_BOUND_512: u64 = (512 + 128) << 20;

/// `hostile` (probe on `in` → `out`, with `extra` config lines, one event per
/// batch so the bystander's batches interleave with the incident) and
/// `bystander` (probe on `other` → `other-out`).
fn two_processors(env: &Env, extra: &str) -> std::path::PathBuf {
    env.config(&format!(
        r#"
[[processor]]
name = "hostile"
component = "{p}"
inputs = ["in"]
output = "out"
{extra}

[[processor]]
name = "bystander"
component = "{p}"
inputs = ["other"]
output = "other-out"
batch.max_records = 10
"#,
        p = plugin("probe").display()
    ))
}

/// What one incident left behind.
struct Incident {
    env: Env,
    summary: Value,
}

/// Produces `ok-0, ok-1, <bad>, ok-2, ok-3` to `in` and the bystander's
/// events to `other`, runs both processors until idle, and checks what every
/// incident must leave: the good events processed exactly once, the
/// bystander untouched, memory bounded by `rss_bound` bytes.
fn incident(bad: &str, extra: &str, rss_bound: u64) -> Incident {
    let env = Env::new();
    env.produce(
        "in",
        ["ok-0", "ok-1", bad, "ok-2", "ok-3"].map(value).to_vec(),
    );
    env.produce("other", vec![value("count:b"); BYSTANDER_EVENTS]);
    let out = env
        .cmd()
        .args(["run", "--until-idle", "--format", "json", "--config"])
        .arg(two_processors(&env, extra))
        .output()
        .unwrap();
    let summary = summary(&out);
    assert_eq!(
        env.values("out"),
        ["ok-0", "ok-1", "ok-2", "ok-3"],
        "every good event exactly once"
    );
    assert_bystander_unaffected(&env, &summary);
    let peak = summary["peak_rss_bytes"].as_u64().expect("peak_rss_bytes");
    assert!(
        peak < rss_bound,
        "host peak memory {peak} bytes, bound {rss_bound}"
    );
    Incident { env, summary }
}

fn assert_bystander_unaffected(env: &Env, summary: &Value) {
    let want: Vec<String> = (1..=BYSTANDER_EVENTS).map(|i| i.to_string()).collect();
    assert_eq!(env.values("other-out"), want);
    let c = counters(summary, "bystander");
    assert_eq!(c["events_in"], BYSTANDER_EVENTS as u64);
    assert_eq!(c["errors"], 0);
    let b = summary["processors"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "bystander")
        .unwrap();
    assert_eq!(b["status"], "stopped");
    assert!(env.records("bystander.dlq").is_empty());
}

impl Incident {
    /// The one dead letter, checked to be the bad event byte for byte.
    fn dead_letter(&self, bad: &str) -> LogRecord {
        let dlq = self.env.records("hostile.dlq");
        assert_eq!(dlq.len(), 1, "exactly the bad event is dead-lettered");
        let d = dlq.into_iter().next().unwrap();
        assert_eq!(d.record.value.as_deref(), Some(bad.as_bytes()));
        assert_eq!(header(&d, "tidewater-source-topic").unwrap(), "in");
        assert_eq!(header(&d, "tidewater-source-partition").unwrap(), "0");
        assert_eq!(header(&d, "tidewater-source-offset").unwrap(), "2");
        assert_eq!(header(&d, "tidewater-processor").unwrap(), "hostile");
        assert_eq!(header(&d, "tidewater-attempts").unwrap(), "1");
        let c = counters(&self.summary, "hostile");
        assert_eq!(c["events_in"], 5);
        assert_eq!(c["dead_lettered"], 1);
        assert_eq!(c["errors"], 1);
        d
    }

    fn kind_and_message(&self, bad: &str) -> (String, String) {
        let d = self.dead_letter(bad);
        let kind = header(&d, "tidewater-error-kind").unwrap();
        // Counted under the same stable code.
        assert_eq!(self.env.stats()["hostile"]["error_codes"][&kind], 1);
        (kind, header(&d, "tidewater-error-message").unwrap())
    }
}

#[test]
fn an_infinite_loop_is_cut_at_its_deadline() {
    let i = incident(
        "spin",
        "limits.call_deadline = \"200ms\"",
        RSS_BOUND_DEFAULT,
    );
    assert_eq!(
        i.kind_and_message("spin"),
        (
            "timeout".into(),
            "call exceeded its deadline of 200 ms".into()
        )
    );
}

#[test]
fn memory_growth_to_4_gib_hits_the_memory_cap() {
    let i = incident("grow-4g", "", RSS_BOUND_DEFAULT);
    assert_eq!(
        i.kind_and_message("grow-4g"),
        (
            "memory-limit".into(),
            "instance exceeded its memory limit of 67108864 bytes".into()
        )
    );
}

/// Where `needle` is in the probe's source, as a Rust panic names it:
/// `testing/probe/src/lib.rs:LINE:COLUMN` (1-based).
fn probe_source_location(needle: &str) -> String {
    let src = std::fs::read_to_string(root().join("plugins/testing/probe/src/lib.rs")).unwrap();
    let (line, col) = src
        .lines()
        .enumerate()
        .find_map(|(i, l)| l.find(needle).map(|c| (i + 1, l[..c].chars().count() + 1)))
        .unwrap_or_else(|| panic!("{needle} is not in the probe's source"));
    format!("testing/probe/src/lib.rs:{line}:{col}")
}

/// What a panic with `message` at `needle` writes to stderr, as a trap's message quotes it.
fn panic_quote(needle: &str, message: &str) -> String {
    format!(
        "thread '<unnamed>' (1) panicked at {}: | {message} | note: run with `RUST_BACKTRACE=1` \
         environment variable to display a backtrace",
        probe_source_location(needle)
    )
}

#[test]
fn a_panic_on_one_input_dead_letters_only_that_input() {
    let i = incident("trap", "", RSS_BOUND_DEFAULT);
    // The panic's message reaches the dead letter, not only the host's log.
    assert_eq!(
        i.kind_and_message("trap"),
        (
            "trap".into(),
            format!(
                "component trapped: wasm trap: wasm `unreachable` instruction executed; stderr: {}",
                panic_quote("panic!(\"probe trap\")", "probe trap")
            )
        )
    );
}

#[test]
fn an_output_to_a_topic_kafka_refuses_dead_letters_its_event_whole() {
    // Kafka's rule, as `check_topic_name` words it.
    const RULE: &str =
        "is not valid: use 1 to 249 of the characters a-z A-Z 0-9 . _ - (the Kafka rule)";
    let i = incident("to:site-7|out-site 7/room 2", "", RSS_BOUND_DEFAULT);
    assert_eq!(
        i.kind_and_message("to:site-7|out-site 7/room 2"),
        (
            "contract".into(),
            format!("output 1 of 2: topic name \"out-site 7/room 2\" {RULE}")
        )
    );
    // All of an event's outputs or none: its valid one is not published either.
    assert_eq!(
        i.env.with_log(|log| log.partitions("site-7").unwrap()),
        None
    );

    // Events routed to valid topics in the same batch, around an empty topic
    // (what the Zig SDK's `setTopic("")` asks for), are all published; a
    // second run finds nothing left to do.
    let env = Env::new();
    env.produce(
        "in",
        ["to:north|south", "to:", "to:east", "plain"]
            .map(value)
            .to_vec(),
    );
    let config = probe_config(&env, "");
    let summary = env.run(&config);
    assert_eq!(env.values("north"), ["north"]);
    assert_eq!(env.values("south"), ["south"]);
    assert_eq!(env.values("east"), ["east"]);
    assert_eq!(env.values("out"), ["plain"]);
    let dlq = env.records("probe.dlq");
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq[0].record.value.as_deref(), Some(&b"to:"[..]));
    assert_eq!(header(&dlq[0], "tidewater-error-kind").unwrap(), "contract");
    assert_eq!(
        header(&dlq[0], "tidewater-error-message").unwrap(),
        format!("output 0 of 1: topic name \"\" {RULE}")
    );
    assert_eq!(header(&dlq[0], "tidewater-source-offset").unwrap(), "1");
    let c = counters(&summary, "probe");
    assert_eq!(
        (c["events_in"].as_u64(), c["outputs"].as_u64()),
        (Some(4), Some(4))
    );
    assert_eq!(env.stats()["probe"]["error_codes"]["contract"], 1);
    let again = env.run(&config);
    assert_eq!(counters(&again, "probe")["events_in"], 0);
    assert_eq!(env.records("probe.dlq").len(), 1);
}

#[test]
fn a_trap_found_by_bisection_is_logged_twice_not_at_every_step() {
    // 256 events, the trap in the middle: 9 calls fail on the way down to
    // it. The log says so once when the batch fails and once for the event,
    // each time with the panic's message; the steps between are debug.
    let env = Env::new();
    let mut events = vec![value("ok"); 255];
    events.insert(100, value("trap"));
    env.produce("in", events);
    let out = env
        .cmd()
        .args(["run", "--until-idle", "--format", "json", "--config"])
        .arg(probe_config(&env, ""))
        .output()
        .unwrap();
    let summary = summary(&out);
    assert_eq!(counters(&summary, "probe")["dead_lettered"], 1);
    assert_eq!(env.values("out").len(), 255);
    let log = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = log.lines().filter(|l| l.contains("probe trap")).collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(
        lines[0].contains("call failed; bisecting the batch"),
        "{log}"
    );
    assert!(
        lines[1].contains("event failed the component; dead-lettering it"),
        "{log}"
    );
}

#[test]
fn unbounded_recursion_traps_on_the_exhausted_stack() {
    let i = incident("recurse", "", RSS_BOUND_DEFAULT);
    assert_eq!(
        i.kind_and_message("recurse"),
        (
            "trap".into(),
            "component trapped: wasm trap: call stack exhausted".into()
        )
    );
}

#[test]
fn a_million_outputs_from_one_event_break_the_output_count_limit() {
    // The memory cap is raised so that the component can build the million
    // outputs and the host's own limit is what stops them.
    let i = incident(
        "fanout:1000000:0",
        "limits.memory_bytes = 536870912",
        RSS_BOUND_512,
    );
    assert_eq!(
        i.kind_and_message("fanout:1000000:0"),
        (
            "output-count-limit".into(),
            "an event produced 1000000 outputs, the limit is 10000 outputs per event".into()
        )
    );
}

#[test]
fn one_100_mib_output_breaks_the_output_bytes_limit() {
    let i = incident(
        "big:104857600",
        "limits.memory_bytes = 536870912",
        RSS_BOUND_512,
    );
    assert_eq!(
        i.kind_and_message("big:104857600"),
        (
            "output-bytes-limit".into(),
            "the call returned 104857600 bytes of outputs, the limit is 67108864 bytes per batch"
                .into()
        )
    );
}

#[test]
fn one_100_mib_output_under_the_default_memory_cap_is_a_memory_breach() {
    let i = incident("big:104857600", "", RSS_BOUND_DEFAULT);
    assert_eq!(i.kind_and_message("big:104857600").0, "memory-limit");
}

#[test]
fn a_state_flood_breaks_the_state_bytes_limit_and_writes_nothing() {
    let i = incident("state-flood", "", RSS_BOUND_DEFAULT);
    assert_eq!(
        i.kind_and_message("state-flood"),
        (
            "state-bytes-limit".into(),
            "the call wrote more than 16777216 bytes of state (writes counted with 64 bytes each of overhead)".into()
        )
    );
    let state = i
        .env
        .with_log(|log| tidewater::processing::state::dump(log.db(), "hostile").unwrap());
    assert!(state.is_empty(), "{} state keys were kept", state.len());
}

#[test]
fn oversized_state_keys_and_values_are_refused() {
    let env = Env::new();
    env.produce(
        "in",
        [
            "ok-0",
            "state-key:4097",
            "state-key:4096",
            "state-value:1048577",
        ]
        .map(value)
        .to_vec(),
    );
    env.run(&probe_config(&env, ""));
    assert_eq!(env.values("out"), ["ok-0", "state-key:4096"]);
    let dlq = env.records("probe.dlq");
    let got: Vec<_> = dlq
        .iter()
        .map(|d| {
            (
                header(d, "tidewater-source-offset").unwrap(),
                header(d, "tidewater-error-kind").unwrap(),
                header(d, "tidewater-error-message").unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            (
                "1".to_string(),
                "state-key-limit".to_string(),
                "a state key of 4097 bytes, the limit is 4096 bytes".to_string()
            ),
            (
                "3".into(),
                "state-value-limit".into(),
                "a state value of 1048577 bytes, the limit is 1048576 bytes".into()
            ),
        ]
    );
    let codes = &env.stats()["probe"]["error_codes"];
    assert_eq!(codes["state-key-limit"], 1);
    assert_eq!(codes["state-value-limit"], 1);
}

#[test]
fn a_log_flood_is_rate_limited_and_every_line_is_shown_or_counted() {
    const LINES: u64 = 20_000;
    let env = Env::new();
    let bad = format!("log-flood:{LINES}");
    env.produce("in", ["ok-0", &bad, "ok-1"].map(value).to_vec());
    env.produce("other", vec![value("count:b"); BYSTANDER_EVENTS]);
    let out = env
        .cmd()
        .args(["run", "--until-idle", "--format", "json", "--config"])
        .arg(two_processors(&env, ""))
        .output()
        .unwrap();
    let summary = summary(&out);
    // The flooding event itself is fine: processed, not dead-lettered.
    assert_eq!(env.values("out"), ["ok-0", bad.as_str(), "ok-1"]);
    assert!(env.records("hostile.dlq").is_empty());
    assert_bystander_unaffected(&env, &summary);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = stderr
        .lines()
        .filter(|l| l.contains("probe log flood ") || l.contains("probe stderr flood "))
        .count() as u64;
    let dropped = env.stats()["hostile"]["error_codes"]["log-rate-limit"]
        .as_u64()
        .unwrap();
    assert_eq!(shown + dropped, 2 * LINES, "every line shown or counted");
    // At most 100 lines a second per stream (log, stdout, stderr), over the run.
    let seconds = summary["elapsed_ms"].as_u64().unwrap() / 1000 + 1;
    assert!(shown <= 2 * 100 * seconds, "{shown} lines in {seconds} s");
}

#[test]
fn fresh_instances_during_bisection_share_the_processors_log_budget() {
    // The flood is followed by an event that breaks the memory cap, so the
    // batch of 256 is bisected and the flood runs again, in a new instance,
    // at each of its 8 levels: the budget is the processor's, not the
    // instance's.
    let env = Env::new();
    let mut events = vec![value("ok"); 254];
    events.push(value("log-flood:500"));
    events.push(value("grow"));
    env.produce("in", events);
    let config = env.config(&format!(
        "[[processor]]\nname = \"hostile\"\ncomponent = \"{}\"\ninputs = [\"in\"]\noutput = \"out\"\nlimits.log_lines_per_s = 10\n",
        plugin("probe").display()
    ));
    let out = env
        .cmd()
        .env("TIDEWATER_LOG", "info")
        .args(["run", "--until-idle", "--format", "json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let summary = summary(&out);
    assert_eq!(counters(&summary, "hostile")["dead_lettered"], 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let shown = stderr
        .lines()
        .filter(|l| l.contains("probe log flood "))
        .count() as u64;
    // At most 10 a second, over the run (one window more for the edges).
    let seconds = summary["elapsed_ms"].as_u64().unwrap() / 1000 + 2;
    assert!(
        (10..=10 * seconds).contains(&shown),
        "{shown} log lines in {seconds} s"
    );
}

/// A processor that cannot start is paused; the other one runs.
fn init_incident(extra: &str) -> (Env, Value) {
    let env = Env::new();
    env.produce("in", ["ok-0", "ok-1"].map(value).to_vec());
    env.produce("other", vec![value("count:b"); BYSTANDER_EVENTS]);
    let out = env
        .cmd()
        .args(["run", "--until-idle", "--format", "json", "--config"])
        .arg(two_processors(&env, extra))
        .output()
        .unwrap();
    assert!(!out.status.success(), "a paused processor fails the run");
    let summary = summary(&out);
    assert_bystander_unaffected(&env, &summary);
    assert!(env.records("out").is_empty());
    let stats = env.stats();
    assert_eq!(stats["hostile"]["lag"], 2, "its two events wait for it");
    assert_eq!(
        stats["hostile"]["status"],
        summary["processors"][0]["status"]
    );
    (env, summary)
}

#[test]
fn an_init_that_fails_pauses_only_its_processor() {
    let (env, summary) = init_incident("[processor.config]\nfail-init = \"no threshold\"");
    assert_eq!(env.stats()["hostile"]["error_codes"]["init-refused"], 1);
    assert_eq!(
        summary["processors"][0]["status"],
        "paused: cannot start: init refused the config: no threshold"
    );
    let (env, summary) = init_incident("[processor.config]\ntrap-init = \"true\"");
    assert_eq!(env.stats()["hostile"]["error_codes"]["init-failed"], 1);
    assert_eq!(
        summary["processors"][0]["status"],
        format!(
            "paused: cannot start: init failed: component trapped: wasm trap: wasm `unreachable` \
             instruction executed; stderr: {}",
            panic_quote("panic!(\"probe trap in init\")", "probe trap in init")
        )
    );
}

#[test]
fn an_init_that_takes_30_s_is_cut_at_the_init_deadline() {
    let (_, summary) = init_incident(
        "limits.init_deadline = \"300ms\"\n[processor.config]\ninit-spin-ms = \"30000\"",
    );
    assert_eq!(
        summary["processors"][0]["status"],
        "paused: cannot start: init failed: call exceeded its deadline of 300 ms"
    );
}

#[test]
fn on_error_skip_drops_counts_and_logs() {
    let env = Env::new();
    env.produce(
        "in",
        ["ok-0", "invalid", "trap", "transient", "ok-1"]
            .map(value)
            .to_vec(),
    );
    let summary = env.run(&probe_config(
        &env,
        "on_error = \"skip\"\nlimits.transient_retries = 1\nlimits.retry_backoff = \"10ms\"",
    ));
    assert_eq!(env.values("out"), ["ok-0", "ok-1"]);
    assert!(env.records("probe.dlq").is_empty());
    let c = counters(&summary, "probe");
    assert_eq!(
        (
            c["skipped"].as_u64(),
            c["errors"].as_u64(),
            c["dead_lettered"].as_u64()
        ),
        (Some(3), Some(3), Some(0))
    );
    let codes = &env.stats()["probe"]["error_codes"];
    assert_eq!(
        (
            codes["invalid"].as_u64(),
            codes["trap"].as_u64(),
            codes["transient"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
}

#[test]
fn on_error_halt_partition_stops_that_partition_only() {
    use tidewater::streams::Record;
    use tidewater::streams::topic::partition_for;
    let env = Env::new();
    // Keys that land in partition 0 and 1 of a two-partition topic.
    let keyed = |key: &str, v: &str| Record {
        key: Some(key.as_bytes().to_vec()),
        value: Some(v.as_bytes().to_vec()),
        ..Record::default()
    };
    let key_in = |p: u32| {
        (0..)
            .map(|i| format!("k{i}"))
            .find(|k| partition_for(&keyed(k, ""), 2) == p)
            .unwrap()
    };
    let (k0, k1) = (key_in(0), key_in(1));
    env.with_log(|log| {
        log.append_creating(
            "in",
            Some(2),
            [
                keyed(&k0, "a-0"),
                keyed(&k0, "invalid"),
                keyed(&k0, "a-2"),
                keyed(&k1, "b-0"),
                keyed(&k1, "b-1"),
            ],
        )
        .unwrap();
    });
    let config = probe_config(&env, "on_error = \"halt-partition\"\nbatch.max_records = 1");
    for _ in 0..2 {
        env.run(&config);
        assert_eq!(env.values("out"), ["a-0", "b-0", "b-1"]);
        assert!(env.records("probe.dlq").is_empty());
        let stats = env.stats();
        assert_eq!(
            stats["probe"]["lag"], 2,
            "the halted partition stays before its bad event"
        );
        assert_eq!(
            stats["probe"]["status"],
            "stopped; partition in/0 halted at offset 1 (invalid: probe invalid)"
        );
        assert_eq!(stats["probe"]["halted"][0]["offset"], 1);
    }
    // Halting twice counted twice: once per run.
    assert_eq!(env.stats()["probe"]["error_codes"]["invalid"], 2);
}
