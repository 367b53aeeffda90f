//! Exactly-once on the embedded log: SIGKILL at any point, restart, and the
//! outputs and state equal those of an uninterrupted run, byte for byte.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::common::*;

/// The demo's two processors, with small batches so that a run makes many commits.
fn config(env: &Env) -> std::path::PathBuf {
    env.config(&demo_config_text().replace("inputs = [", "batch.max_records = 8\ninputs = ["))
}

/// Everything a run leaves behind, without the wall-clock append times.
fn snapshot(env: &Env) -> Vec<String> {
    let mut out = Vec::new();
    for topic in ["readings-enriched", "alerts", "enrich.dlq"] {
        for r in env.records(topic) {
            out.push(format!(
                "{topic}/{}@{} {:?}",
                r.partition, r.offset, r.record
            ));
        }
    }
    env.with_log(|log| {
        for p in ["enrich", "threshold"] {
            for (k, v) in tidewater::processing::state::dump(log.db(), p).unwrap() {
                out.push(format!("state {p} {k:?} = {v:?}"));
            }
        }
        for pos in log.positions().unwrap() {
            out.push(format!("{pos:?}"));
        }
    });
    let stats = env.stats();
    for p in ["enrich", "threshold"] {
        let mut s = stats[p].clone();
        s.as_object_mut().unwrap().remove("status");
        out.push(format!("stats {p} {s}"));
    }
    out
}

/// Starts `run` and SIGKILLs it right after it logged `commits` batch commits.
fn run_and_kill_after(env: &Env, config: &std::path::Path, commits: usize) -> bool {
    let mut child = env
        .cmd()
        .env(
            "TIDEWATER_LOG",
            "tidewater::processing::pipeline=debug,warn",
        )
        .args(["run", "--until-idle", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = 0;
    for line in stderr.lines() {
        if line.unwrap().contains("batch committed") {
            seen += 1;
            if seen == commits {
                child.kill().unwrap(); // SIGKILL
                break;
            }
        }
    }
    child.wait().unwrap();
    seen == commits
}

#[test]
fn sigkill_at_any_point_then_restart_gives_the_outputs_of_a_clean_run() {
    let clean = Env::new();
    clean.produce_csv("sensor-readings", &SMALL_DATA, None);
    let summary = clean.run(&config(&clean));
    assert_eq!(counters(&summary, "enrich")["outputs"], 1268 + 509);
    let expected = snapshot(&clean);

    let crashed = Env::new();
    crashed.produce_csv("sensor-readings", &SMALL_DATA, None);
    let config = config(&crashed);
    let mut kills = 0;
    for commits in [1, 3, 17, 60, 150] {
        if run_and_kill_after(&crashed, &config, commits) {
            kills += 1;
        }
    }
    assert!(kills >= 3, "only {kills} runs were killed mid-way");
    crashed.run(&config);
    assert_eq!(snapshot(&crashed), expected);
}

#[test]
fn sigkill_during_produce_keeps_every_committed_record() {
    let env = Env::new();
    let mut child = env
        .cmd()
        .env("TIDEWATER_LOG", "tidewater=debug,warn")
        .args([
            "produce",
            "r",
            "--chunk",
            "500",
            "--csv",
            "data/CGM.csv.gz",
            "--device",
            "cgm-3",
            "--time-column",
            "datetime",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = 0;
    for line in stderr.lines() {
        if line.unwrap().contains("chunk committed") {
            seen += 1;
            if seen == 5 {
                child.kill().unwrap();
                break;
            }
        }
    }
    child.wait().unwrap();
    assert_eq!(seen, 5);
    let records = env.records("r");
    // Whole chunks only, in file order, none torn.
    assert!(
        records.len() >= 2500 && records.len().is_multiple_of(500),
        "{}",
        records.len()
    );
    let mut rows = Vec::new();
    tidewater::streams::ingest::read_csv(
        std::fs::File::open(root().join("data/CGM.csv.gz")).unwrap(),
        &tidewater::streams::ingest::CsvOptions {
            device: "cgm-3".into(),
            time_column: "datetime".into(),
        },
        |r| rows.push(r.unwrap()),
    )
    .unwrap();
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.offset, i as u64);
        assert_eq!(r.record, rows[i]);
    }
    // The log is usable afterwards: produce again and everything is there.
    let out = env
        .cmd()
        .args([
            "produce",
            "r",
            "--csv",
            "data/water-flow.csv",
            "--device",
            "p",
            "--time-column",
            "Time",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(env.records("r").len(), records.len() + 1268);
}
