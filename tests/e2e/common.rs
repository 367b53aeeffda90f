//! What every end-to-end test needs: the binary, the components, a data dir.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;
use tidewater::streams::embedded::Log;
use tidewater::streams::{LogRecord, Record};

pub use crate::plugins::root;

/// The path of the component `name`, built (once per test run) by `make plugins`.
pub fn plugin(name: &str) -> PathBuf {
    crate::plugins::make_plugins();
    let p = root().join("target/plugins").join(format!("{name}.wasm"));
    assert!(p.exists(), "{} was not built", p.display());
    p
}

/// A temporary data dir and config file.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Self {
        Env {
            dir: tempfile::tempdir().expect("temp dir"),
        }
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Opens the log for `f`; the database is closed again before this returns,
    /// so the binary can open it afterwards.
    pub fn with_log<T>(&self, f: impl FnOnce(&Log) -> T) -> T {
        let db = tidewater::db::open(&self.data_dir()).expect("open db");
        f(&Log::new(db, 1))
    }

    /// Appends `records` to `topic`.
    pub fn produce(&self, topic: &str, records: Vec<Record>) {
        self.with_log(|log| log.append(topic, records).expect("append"));
    }

    /// Every record of `topic`, partition by partition.
    pub fn records(&self, topic: &str) -> Vec<LogRecord> {
        self.with_log(|log| {
            let n = log.partitions(topic).expect("partitions").unwrap_or(0);
            (0..n)
                .flat_map(|p| log.read(topic, p, 0, usize::MAX, usize::MAX).expect("read"))
                .collect()
        })
    }

    /// The values of `topic`, as text.
    pub fn values(&self, topic: &str) -> Vec<String> {
        self.records(topic)
            .into_iter()
            .map(|r| {
                String::from_utf8_lossy(r.record.value.as_deref().unwrap_or(b"<tombstone>"))
                    .into_owned()
            })
            .collect()
    }

    /// Writes `text` as the config file and returns its path.
    pub fn config(&self, text: &str) -> PathBuf {
        let p = self.dir.path().join("tidewater.toml");
        std::fs::write(&p, text).expect("write config");
        p
    }

    /// `tidewater` with this data dir.
    pub fn cmd(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_tidewater"));
        c.env("TIDEWATER_DATA_DIR", self.data_dir())
            .env("TIDEWATER_LOG", "warn")
            .current_dir(root());
        c
    }

    /// Runs `tidewater run --until-idle` on `config` and returns the JSON summary.
    pub fn run(&self, config: &Path) -> Value {
        let out = self
            .cmd()
            .args(["run", "--until-idle", "--format", "json", "--config"])
            .arg(config)
            .output()
            .expect("run");
        summary(&out)
    }

    /// `tidewater stats --format json`.
    pub fn stats(&self) -> Value {
        let out = self
            .cmd()
            .args(["stats", "--format", "json"])
            .output()
            .expect("stats");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("stats JSON")
    }
}

/// The JSON summary printed by `run`, whatever its exit status.
pub fn summary(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "run printed no JSON summary ({e}); status {:?}\nstdout:\n{}\nstderr:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// The counters of processor `name` in a run summary.
pub fn counters<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["processors"]
        .as_array()
        .expect("processors")
        .iter()
        .find(|p| p["name"] == name)
        .map(|p| &p["counters"])
        .unwrap_or_else(|| panic!("no processor {name} in {summary}"))
}

/// A record with this value and no key, headers or timestamp.
pub fn value(v: impl Into<Vec<u8>>) -> Record {
    Record {
        value: Some(v.into()),
        ..Record::default()
    }
}

/// The first header called `name`, as text.
pub fn header(r: &LogRecord, name: &str) -> Option<String> {
    r.record
        .header(name)
        .map(|v| String::from_utf8_lossy(v).into_owned())
}

/// A config with one probe processor reading `in` and writing `out`, plus `extra` lines.
pub fn probe_config(env: &Env, extra: &str) -> PathBuf {
    env.config(&format!(
        r#"
[[processor]]
name = "probe"
component = "{}"
inputs = ["in"]
output = "out"
{extra}
"#,
        plugin("probe").display()
    ))
}

/// The four data sets of the demo: (file, device id, time column).
pub const ALL_DATA: [(&str, &str, &str); 4] = [
    (
        "data/sea_surface_temperature.csv.gz",
        "buoy-b01",
        "time (UTC)",
    ),
    ("data/water-flow.csv", "pipeline-7", "Time"),
    ("data/occupancy.csv", "office-12", "time"),
    ("data/CGM.csv.gz", "cgm-3", "datetime"),
];

/// Two small data sets: 1,268 + 509 readings.
pub const SMALL_DATA: [(&str, &str, &str); 2] = [
    ("data/water-flow.csv", "pipeline-7", "Time"),
    ("data/occupancy.csv", "office-12", "time"),
];

impl Env {
    /// `tidewater produce` of each file into `topic` (4 partitions, 5% sent
    /// again), on the embedded log or, with `brokers`, on Kafka.
    pub fn produce_csv(&self, topic: &str, files: &[(&str, &str, &str)], brokers: Option<&str>) {
        for (file, device, column) in files {
            let mut cmd = self.cmd();
            cmd.args([
                "produce",
                topic,
                "--partitions",
                "4",
                "--redeliver-percent",
                "5",
            ])
            .args(["--csv", file, "--device", device, "--time-column", column]);
            if let Some(b) = brokers {
                cmd.args(["--brokers", b]);
            }
            let out = cmd.output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The demo's config (demo/tidewater.toml) with the components' real paths.
pub fn demo_config_text() -> String {
    std::fs::read_to_string(root().join("demo/tidewater.toml"))
        .unwrap()
        .replace(
            "../target/plugins/enrich.wasm",
            &plugin("enrich").display().to_string(),
        )
        .replace(
            "../target/plugins/threshold.wasm",
            &plugin("threshold").display().to_string(),
        )
}
