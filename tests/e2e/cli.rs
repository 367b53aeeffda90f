//! What a user sees at the command line: exit codes, refusals, signals.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use crate::common::*;

#[test]
fn produce_keeps_bad_rows_and_exits_2() {
    let env = Env::new();
    let csv = env.dir.path().join("r.csv");
    std::fs::write(
        &csv,
        b"time,v\n2020-01-01T00:00:00Z,1\nyesterday,2\n\xff\xfe,3\n2020-01-01T00:01:00Z,4\n",
    )
    .unwrap();
    let out = env
        .cmd()
        .args([
            "produce",
            "r",
            "--device",
            "d",
            "--time-column",
            "time",
            "--csv",
        ])
        .arg(&csv)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("r.csv:3: time \"yesterday\" is not a date-time"),
        "{err}"
    );
    assert!(err.contains("r.csv:4: row is not UTF-8"), "{err}");
    assert!(err.contains("2 bad rows kept in topic r.rejected"), "{err}");
    assert_eq!(env.values("r").len(), 2);
    let rejected = env.records("r.rejected");
    assert_eq!(
        rejected[1].record.value.as_deref(),
        Some(&b"\xff\xfe,3"[..])
    );
    assert_eq!(header(&rejected[1], "tidewater-source-line").unwrap(), "4");
}

#[test]
fn produce_refuses_what_it_cannot_read_and_creates_nothing() {
    let env = Env::new();
    let csv = env.dir.path().join("r.csv");
    std::fs::write(&csv, b"time,device,v\n2020-01-01T00:00:00Z,x,1\n").unwrap();
    let out = env
        .cmd()
        .args([
            "produce",
            "r",
            "--partitions",
            "3",
            "--device",
            "d",
            "--time-column",
            "time",
            "--csv",
        ])
        .arg(&csv)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("column \"device\" is a field every event gets")
    );
    assert!(
        env.with_log(|log| log.topics().unwrap()).is_empty(),
        "no topic was created"
    );

    for (args, message) in [
        (
            vec!["--partitions", "0"],
            "invalid value '0' for '--partitions <PARTITIONS>'",
        ),
        (
            vec!["--chunk", "0"],
            "invalid value '0' for '--chunk <CHUNK>'",
        ),
        (vec!["--device", " "], "must not be empty"),
    ] {
        let mut cmd = env.cmd();
        cmd.args(["produce", "r", "--time-column", "time", "--csv"])
            .arg(&csv);
        if !args.contains(&"--device") {
            cmd.args(["--device", "d"]);
        }
        let out = cmd.args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains(message),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn reading_commands_do_not_create_a_data_dir() {
    let env = Env::new();
    for args in [vec!["stats"], vec!["topics"], vec!["consume", "t"]] {
        let out = env.cmd().args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("there is no tidewater data in"),
            "{args:?}"
        );
    }
    assert!(!env.data_dir().exists());
}

#[test]
fn a_damaged_compiled_cache_is_compiled_again() {
    let env = Env::new();
    env.produce("in", vec![value("a")]);
    let config = probe_config(&env, "");
    env.run(&config);
    let cache = env.data_dir().join("cache");
    for entry in std::fs::read_dir(&cache).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        for b in &mut bytes[mid..mid + 4096] {
            *b ^= 0x5a;
        }
        std::fs::write(&path, bytes).unwrap();
    }
    env.produce("in", vec![value("b")]);
    let out = env
        .cmd()
        .args(["run", "--until-idle", "--format", "json", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("damaged; compiling again"));
    assert_eq!(env.values("out"), ["a", "b"]);
}

#[test]
fn sigterm_stops_run_cleanly_and_sigkill_is_reported() {
    let env = Env::new();
    env.produce("in", vec![value("a")]);
    let config = probe_config(&env, "");
    let start = || {
        let mut child = env
            .cmd()
            .env("TIDEWATER_LOG", "tidewater=info")
            .args(["run", "--format", "json", "--config"])
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        assert!(lines.any(|l| l.unwrap().contains("processors running")));
        std::thread::spawn(move || for _ in lines {});
        child
    };
    let child = start();
    let term = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(summary(&out)["processors"][0]["status"], "stopped");
    assert_eq!(env.stats()["probe"]["status"], "stopped");

    let mut child = start();
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        env.stats()["probe"]["status"],
        "stopped uncleanly (killed or crashed)"
    );
}

/// Runs `tidewater ARGS` with its stdout closed before it prints anything
/// (as `| head -0` does) and, when `close_stderr`, its stderr too
/// (`2>&1 | head -1`); returns the exit status and what reached stderr.
fn with_closed_stdout(env: &Env, args: &[&str], close_stderr: bool) -> (Option<i32>, String) {
    let mut child = env
        .cmd()
        .env("TIDEWATER_LOG", "info")
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    if close_stderr {
        drop(child.stderr.take());
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_closed_stdout_ends_every_command_quietly_with_the_broken_pipe_status() {
    let env = Env::new();
    env.produce("in", (0..300).map(|i| value(format!("ok-{i}"))).collect());
    let config = probe_config(&env, "");
    let config = config.to_str().unwrap();
    // The run's own work is done and committed before it prints its summary.
    let (status, stderr) =
        with_closed_stdout(&env, &["run", "--until-idle", "--config", config], false);
    assert_eq!(status, Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!stderr.contains("error:"), "{stderr}");
    assert_eq!(env.values("out").len(), 300);
    // Its log going nowhere either (`2>&1 | head -1`).
    env.produce("in", vec![value("trap")]);
    let (status, _) = with_closed_stdout(&env, &["run", "--until-idle", "--config", config], true);
    assert_eq!(status, Some(141));
    assert_eq!(env.records("probe.dlq").len(), 1);
    for args in [
        &["consume", "out"][..],
        &["consume", "out", "--format", "value"],
        &["topics"],
        &["stats"],
        &["stats", "--format", "json"],
    ] {
        let (status, stderr) = with_closed_stdout(&env, args, false);
        assert_eq!((status, stderr.as_str()), (Some(141), ""), "{args:?}");
    }
}
