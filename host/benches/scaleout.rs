//! Scale-out on Kafka (docs/scaling.md), measured in one run on the same
//! local broker, with real `tidewater run` processes (one per host, each on
//! its own data dir, so each host's CPU time is its own):
//!
//! 1. **One host against three** running the demo's `enrich`
//!    (target/plugins/enrich.wasm) as one consumer group, on a 6-partition
//!    topic of the four real data sets (data/), copied [`COPIES`] times
//!    under distinct device ids, produced once before any timing. The rate
//!    is taken from the moment every host has committed a batch after the
//!    group's last assignment (the group has settled) to the moment the
//!    group's committed offsets reach the end of the input. [`ROUNDS`]
//!    rounds, (1, 3) then (3, 1), so a change in the machine's other load
//!    favours neither; the best of each counts. Over the same window it
//!    reads the CPU time (user + sys, /proc/PID/stat) of the hosts, of the
//!    broker and of the whole machine (/proc/stat), and where each host's
//!    processing thread spent the window (on a CPU, runnable but waiting
//!    for one, or blocked: /proc/PID/task/TID/schedstat), so the ratio can
//!    be told apart from what limits it: the broker and the hosts share the
//!    machine's cores.
//! 2. **Restore time and memory per million keys**: a new host on an empty
//!    data dir takes over every partition of a processor and restores its
//!    idempotency keys and state from the changelog. Twice: `enrich`'s keys
//!    from part 1 (real readings, keys only), and `threshold` holding
//!    [`KEYS`] synthetic devices (one idempotency key and one state entry
//!    each). Memory is the process's peak RSS (VmHWM) above that of the
//!    same processor on an empty topic, and the pages redb allocated.
//!
//! Needs the broker `make bench` starts (its address is in
//! target/kafka/bootstrap) and `make plugins`; without a broker it says so
//! and measures nothing. Prints tables and writes
//! target/bench-scaleout.json. `TIDEWATER_BENCH_COPIES`,
//! `TIDEWATER_BENCH_KEYS` and `TIDEWATER_BENCH_ROUNDS` change the sizes.
#![allow(missing_docs, reason = "a bench binary")]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{Value, json};
use tidewater::streams::Record;
use tidewater::streams::kafka::KafkaConfig;

mod support;
use support::root;

/// Partitions of every topic of this bench.
const PARTITIONS: u32 = 6;
/// Copies of the four data sets in part 1 (73,284 readings each).
const COPIES: usize = 6;
/// Device ids each data set's rows are dealt to, per copy (so the
/// partitions get even shares).
const IDS_PER_SET: usize = 100;
/// Devices (keys) of the restore of `threshold`.
const KEYS: usize = 200_000;
/// Rounds of one host and three hosts.
const ROUNDS: usize = 2;
/// Longest wait for any one step.
const PATIENCE: Duration = Duration::from_secs(600);

const DATA: [(&str, &str, &str); 4] = [
    ("sea_surface_temperature.csv.gz", "buoy-b01", "time (UTC)"),
    ("water-flow.csv", "pipeline-7", "Time"),
    ("occupancy.csv", "office-12", "time"),
    ("CGM.csv.gz", "cgm-3", "datetime"),
];

fn brokers() -> Option<String> {
    let addr = std::fs::read_to_string(root().join("target/kafka/bootstrap")).ok()?;
    let addr = addr.trim().to_owned();
    std::net::TcpStream::connect(&addr).ok().map(|_| addr)
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The four data sets, `copies` times, each copy's rows dealt round-robin
/// to [`IDS_PER_SET`] device ids of its own (`<device>-<copy>-<n>`), so
/// every (device, time) key is distinct across copies. Interleaved by copy.
fn real_readings(copies: usize) -> Vec<Record> {
    let mut one = Vec::new();
    for (file, device, column) in DATA {
        let options = tidewater::streams::ingest::CsvOptions {
            device: device.into(),
            time_column: column.into(),
        };
        let f = std::fs::File::open(root().join("data").join(file)).expect("data file");
        let mut i = 0usize;
        tidewater::streams::ingest::read_csv(f, &options, |r| {
            if let Ok(r) = r {
                one.push((device, i % IDS_PER_SET, r));
                i += 1;
            }
        })
        .expect("csv");
    }
    let mut out = Vec::with_capacity(one.len() * copies);
    for (device, n, r) in &one {
        for c in 0..copies {
            let id = format!("{device}-{c}-{n}");
            let value = String::from_utf8(r.value.clone().unwrap())
                .unwrap()
                .replacen(
                    &format!("\"device\":\"{device}\""),
                    &format!("\"device\":\"{id}\""),
                    1,
                );
            out.push(Record {
                key: Some(id.into_bytes()),
                value: Some(value.into_bytes()),
                ..r.clone()
            });
        }
    }
    out
}

/// `n` enriched readings of `n` devices, one each (threshold's input).
fn device_readings(n: usize) -> Vec<Record> {
    (0..n)
        .map(|i| {
            let id = format!("dev-{i:07}");
            Record {
                timestamp_ms: 1_704_067_200_000,
                value: Some(
                    format!(
                        "{{\"device\":\"{id}\",\"ts\":\"2024-01-01T00:00:00Z\",\"kind\":\"thermometer\",\"measurements\":{{\"temperature_c\":{}.5}}}}",
                        i % 30
                    )
                    .into_bytes(),
                ),
                key: Some(id.into_bytes()),
                headers: Vec::new(),
            }
        })
        .collect()
}

fn produce(config: &KafkaConfig, topic: &str, records: &[Record]) {
    let topics = [(topic.to_owned(), Some(PARTITIONS))].into_iter().collect();
    tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(tidewater::streams::kafka::ensure_topics(config, &topics))
        .unwrap();
    let producer = tidewater::streams::kafka::producer(config, None).unwrap();
    tidewater::streams::kafka::produce_all(
        &producer,
        records.iter().map(|r| (topic, r)),
        Duration::from_secs(300),
    )
    .unwrap();
}

/// Records in each partition of `topic`.
fn partition_sizes(config: &KafkaConfig, topic: &str) -> Vec<u64> {
    (0..PARTITIONS)
        .map(|p| tidewater::streams::kafka::high_watermark(config, topic, p).unwrap())
        .collect()
}

/// Reads a group's committed offsets of a topic, summed over its partitions.
struct Committed {
    consumer: BaseConsumer,
    topic: String,
}

impl Committed {
    fn new(brokers: &str, group: &str, topic: &str) -> Self {
        let consumer: BaseConsumer = KafkaConfig::new(brokers)
            .client_config()
            .set("group.id", group)
            .create()
            .unwrap();
        Committed {
            consumer,
            topic: topic.to_owned(),
        }
    }

    /// The sum; a failed request (the coordinator busy) is asked again.
    fn sum(&self) -> u64 {
        let mut tpl = TopicPartitionList::new();
        for p in 0..PARTITIONS as i32 {
            tpl.add_partition(&self.topic, p);
        }
        let mut tries = 0;
        let got = loop {
            match self
                .consumer
                .committed_offsets(tpl.clone(), Duration::from_secs(10))
            {
                Ok(got) => break got,
                Err(e) if tries < 10 => {
                    tries += 1;
                    eprintln!(
                        "reading the committed offsets of {}: {e}; again",
                        self.topic
                    );
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => panic!("reading the committed offsets of {}: {e}", self.topic),
            }
        };
        got.elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o.max(0) as u64,
                _ => 0,
            })
            .sum()
    }
}

/// CPU seconds (user + sys) a process has used so far, from
/// /proc/PID/stat; `None` once it is gone.
fn process_cpu_s(pid: u32, tick: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name (which may hold spaces): state is
    // field 3, utime 14 and stime 15.
    let rest: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = rest.get(11)?.parse::<u64>().ok()? + rest.get(12)?.parse::<u64>().ok()?;
    Some(ticks as f64 / tick)
}

/// CPU seconds the whole machine has been busy (every CPU, everything but
/// idle and iowait), from /proc/stat.
fn machine_busy_s(tick: f64) -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().unwrap())
        .collect();
    // user nice system idle iowait irq softirq steal (guest is in user).
    let busy: u64 = cpu.iter().take(8).sum::<u64>() - cpu[3] - cpu[4];
    busy as f64 / tick
}

/// A `kB` field of /proc/PID/status (`VmRSS`, `VmHWM`), in bytes.
fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn clock_tick() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output();
    out.ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn broker_pid() -> Option<u32> {
    let pid = std::fs::read_to_string(root().join("target/kafka/broker.pid")).ok()?;
    pid.trim().parse().ok()
}

/// What a host's log has said so far.
#[derive(Default)]
struct Seen {
    /// When it last committed a batch.
    last_batch: Option<Instant>,
    /// When it was last assigned a partition.
    last_assigned: Option<Instant>,
    /// Its restores: (records, ms) each.
    restores: Vec<(u64, u64)>,
    /// The last lines (batches aside), for a failure's message.
    tail: Vec<String>,
}

/// One `tidewater run` process: its own data dir and host id, its stderr
/// (the log) read by a thread that notes the lines that matter.
struct Host {
    id: String,
    dir: PathBuf,
    child: Option<Child>,
    seen: Arc<Mutex<Seen>>,
}

impl Host {
    /// Starts `config` as host `id` on `dir` (which should hold a warm
    /// compiled-component cache).
    fn start(config: &Path, id: &str, dir: &Path) -> Host {
        let mut child = Command::new(env!("CARGO_BIN_EXE_tidewater"))
            .env("TIDEWATER_DATA_DIR", dir)
            .env(
                "TIDEWATER_LOG",
                "warn,tidewater::streams::kafka=info,tidewater::processing::pipeline=debug",
            )
            .args(["run", "--format", "json", "--host-id", id, "--config"])
            .arg(config)
            .current_dir(root())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start target/release/tidewater");
        let stderr = child.stderr.take().unwrap();
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let s = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut s = s.lock().unwrap();
                if line.contains("batch committed") {
                    s.last_batch = Some(Instant::now());
                    continue;
                }
                if line.contains("partition assigned") {
                    s.last_assigned = Some(Instant::now());
                    let field = |name: &str| {
                        line.split(&format!("{name}="))
                            .nth(1)
                            .and_then(|v| v.split_whitespace().next())
                            .and_then(|v| v.parse::<u64>().ok())
                            .unwrap_or(0)
                    };
                    s.restores.push((field("records"), field("ms")));
                }
                s.tail.push(line);
                if s.tail.len() > 40 {
                    s.tail.remove(0);
                }
            }
        });
        Host {
            id: id.to_owned(),
            dir: dir.to_owned(),
            child: Some(child),
            seen,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// When it last committed a batch, and was last assigned a partition.
    fn last_batch_and_assignment(&self) -> (Option<Instant>, Option<Instant>) {
        let s = self.seen.lock().unwrap();
        (s.last_batch, s.last_assigned)
    }

    fn restores(&self) -> Vec<(u64, u64)> {
        self.seen.lock().unwrap().restores.clone()
    }

    fn log_tail(&self) -> String {
        format!(
            "== host {}\n{}",
            self.id,
            self.seen.lock().unwrap().tail.join("\n")
        )
    }

    fn sigterm(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// Waits for the process to end after [`sigterm`](Self::sigterm);
    /// returns its JSON summary.
    fn summary(&mut self) -> Value {
        let mut child = self.child.take().unwrap();
        let mut stdout = Vec::new();
        std::io::Read::read_to_end(&mut child.stdout.take().unwrap(), &mut stdout).unwrap();
        let status = child.wait().unwrap();
        serde_json::from_slice(&stdout).unwrap_or_else(|e| {
            panic!(
                "host {}: no summary ({e}), {status}\n{}",
                self.id,
                self.log_tail()
            )
        })
    }

    fn stop(&mut self) -> Value {
        self.sigterm();
        self.summary()
    }

    /// The size of its redb file; after it has stopped.
    fn redb(&self) -> Redb {
        Redb::of(&self.dir)
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The size of a host's redb file, in bytes: its length (which grows in
/// large steps), the pages redb has allocated in it, and the bytes of the
/// keys and values stored.
#[derive(Debug, Clone, Copy, Default)]
struct Redb {
    file: u64,
    allocated: u64,
    stored: u64,
}

impl Redb {
    /// Of the redb file in `data_dir`, which no process has open.
    fn of(data_dir: &Path) -> Redb {
        let path = data_dir.join(tidewater::db::DB_FILE);
        let file = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        if file == 0 {
            return Redb::default();
        }
        let db = redb::Database::open(&path).expect("open the host's redb file");
        let stats = db.begin_write().unwrap().stats().unwrap();
        Redb {
            file,
            allocated: stats.allocated_pages() * stats.page_size() as u64,
            stored: stats.stored_bytes(),
        }
    }

    fn json(&self) -> Value {
        json!({"file_bytes": self.file, "allocated_bytes": self.allocated, "stored_bytes": self.stored})
    }
}

/// The counters of processor `name` in a run's JSON summary.
fn counters<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["processors"]
        .as_array()
        .and_then(|ps| ps.iter().find(|p| p["name"] == name))
        .map(|p| &p["counters"])
        .unwrap_or_else(|| panic!("no processor {name} in {summary}"))
}

fn wait_until(what: &str, hosts: &[&Host], mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !ok() {
        if Instant::now() > deadline {
            let logs: Vec<String> = hosts.iter().map(|h| h.log_tail()).collect();
            panic!(
                "waited {} s for {what}\n{}",
                PATIENCE.as_secs(),
                logs.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Where the bench keeps its data dirs, configs and a warm compiled-component cache.
struct Workspace {
    dir: tempfile::TempDir,
    brokers: String,
    cache: PathBuf,
}

impl Workspace {
    fn new(brokers: &str) -> Self {
        let base = root().join("target/bench-scaleout");
        std::fs::create_dir_all(&base).unwrap();
        let dir = tempfile::tempdir_in(base).unwrap();
        // Compile the components once: every host copies the cache, so
        // none compiles at start (and none measures it).
        let cache = dir.path().join("cache");
        let runtime = tidewater::runtime::Runtime::new(Some(cache.clone())).unwrap();
        for p in ["enrich", "threshold"] {
            runtime.load(&plugin(p)).unwrap();
        }
        Workspace {
            dir,
            brokers: brokers.to_owned(),
            cache,
        }
    }

    /// A fresh data dir with the warm cache.
    fn data_dir(&self, name: &str) -> PathBuf {
        let d = self.dir.path().join(name);
        std::fs::create_dir_all(d.join("cache")).unwrap();
        for f in std::fs::read_dir(&self.cache).unwrap() {
            let f = f.unwrap();
            std::fs::copy(f.path(), d.join("cache").join(f.file_name())).unwrap();
        }
        d
    }

    /// A config of `processor` (enrich or threshold) as group `group`
    /// reading `input`.
    fn config(&self, processor: &str, group: &str, input: &str) -> PathBuf {
        let extra = if processor == "enrich" {
            // The demo's: the office-room sensors name their columns V1..V4.
            "[processor.config]\n\"field.V1\" = \"temperature_c\"\n\"field.V2\" = \"humidity_pct\"\n\"field.V3\" = \"light_lux\"\n\"field.V4\" = \"co2_ppm\"\n"
        } else {
            ""
        };
        let text = format!(
            "[[processor]]\nname = \"{processor}\"\ngroup = \"{group}\"\ncomponent = \"{}\"\ninputs = [\"{input}\"]\noutput = \"{group}-out\"\ndead_letter_topic = \"{group}.dlq\"\nidempotency.key = \"json:/device,/ts\"\n{extra}\n[kafka]\nbrokers = \"{}\"\npartitions = {PARTITIONS}\n",
            plugin(processor).display(),
            self.brokers,
        );
        let path = self.dir.path().join(format!("{group}.toml"));
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn plugin(name: &str) -> PathBuf {
    let p = root().join("target/plugins").join(format!("{name}.wasm"));
    assert!(p.exists(), "{} is missing: run `make plugins`", p.display());
    p
}

fn unique(prefix: &str) -> String {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis();
    format!("bench-{prefix}-{n}")
}

/// CPU seconds so far: the hosts', the broker's, the machine's; and when.
#[derive(Clone, Copy)]
struct Sample {
    at: Instant,
    hosts: f64,
    broker: f64,
    machine: f64,
    committed: u64,
    /// The hosts' processing threads: seconds on a CPU, seconds runnable
    /// but waiting for one (summed over the hosts).
    processing: Sched,
    /// The broker's threads, summed.
    broker_sched: Sched,
}

/// Seconds a set of threads spent on a CPU and waiting in the run queue
/// (runnable, no core free), from /proc/PID/task/TID/schedstat.
#[derive(Debug, Clone, Copy, Default)]
struct Sched {
    run_s: f64,
    wait_s: f64,
}

impl std::ops::Sub for Sched {
    type Output = Sched;
    fn sub(self, o: Sched) -> Sched {
        Sched {
            run_s: self.run_s - o.run_s,
            wait_s: self.wait_s - o.wait_s,
        }
    }
}

impl std::iter::Sum for Sched {
    fn sum<I: Iterator<Item = Sched>>(iter: I) -> Sched {
        iter.fold(Sched::default(), |a, b| Sched {
            run_s: a.run_s + b.run_s,
            wait_s: a.wait_s + b.wait_s,
        })
    }
}

/// The scheduler's times of `pid`'s threads whose name starts with
/// `prefix` (every thread with "").
fn sched(pid: u32, prefix: &str) -> Sched {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Sched::default();
    };
    tasks
        .filter_map(Result::ok)
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
        })
        .filter_map(|t| {
            let text = std::fs::read_to_string(t.path().join("schedstat")).ok()?;
            let mut f = text.split_whitespace().map(|x| x.parse::<f64>().ok());
            Some(Sched {
                run_s: f.next()?? / 1e9,
                wait_s: f.next()?? / 1e9,
            })
        })
        .sum()
}

fn sample(hosts: &[Host], committed: &Committed, tick: f64) -> Sample {
    Sample {
        at: Instant::now(),
        hosts: hosts
            .iter()
            .map(|h| process_cpu_s(h.pid(), tick).unwrap_or(0.0))
            .sum(),
        broker: broker_pid()
            .and_then(|p| process_cpu_s(p, tick))
            .unwrap_or(0.0),
        machine: machine_busy_s(tick),
        committed: committed.sum(),
        processing: hosts.iter().map(|h| sched(h.pid(), "processor-")).sum(),
        broker_sched: broker_pid().map(|p| sched(p, "")).unwrap_or_default(),
    }
}

/// What one throughput run measured.
struct Throughput {
    hosts: usize,
    events_per_s: f64,
    window_s: f64,
    window_events: u64,
    wall_s: f64,
    host_cpu_s: f64,
    broker_cpu_s: f64,
    machine_cpu_s: f64,
    events_per_host: Vec<u64>,
    outputs: u64,
    /// Each host's peak RSS and redb file size at the end, in bytes.
    peak_rss: Vec<u64>,
    redb: Vec<Redb>,
    /// The hosts' processing threads over the window, summed.
    processing: Sched,
    /// The broker's threads over the window, summed.
    broker_sched: Sched,
}

impl Throughput {
    /// Shares of the window a host's processing thread spent on a CPU,
    /// waiting for a CPU, and blocked (on the broker, the disk, its other
    /// threads), averaged over the hosts.
    fn processing_shares(&self) -> (f64, f64, f64) {
        let w = self.window_s * self.hosts as f64;
        let (run, wait) = (self.processing.run_s / w, self.processing.wait_s / w);
        (run, wait, 1.0 - run - wait)
    }

    /// The events/s the hosts and the broker would reach with every one of
    /// `cpus` cores to themselves and nothing but CPU in the way: the
    /// cores over their CPU-seconds per event.
    fn ceiling(&self, cpus: f64) -> f64 {
        cpus * self.window_events as f64 / (self.host_cpu_s + self.broker_cpu_s)
    }

    fn json(&self, cpus: f64) -> Value {
        json!({
            "hosts": self.hosts,
            "events_per_s": self.events_per_s.round(),
            "window_s": round2(self.window_s),
            "window_events": self.window_events,
            "wall_s_from_start": round2(self.wall_s),
            "host_cpu_s": round2(self.host_cpu_s),
            "broker_cpu_s": round2(self.broker_cpu_s),
            "other_cpu_s": round2(self.machine_cpu_s - self.host_cpu_s - self.broker_cpu_s),
            "machine_busy_cpu_s": round2(self.machine_cpu_s),
            "machine_capacity_cpu_s": round2(self.window_s * cpus),
            "host_cpu_s_per_million_events": round2(self.host_cpu_s / self.window_events as f64 * 1e6),
            "events_per_host": self.events_per_host,
            "outputs": self.outputs,
            "cpu_bound_ceiling_events_per_s": self.ceiling(cpus).round(),
            "processing_thread_share": {
                "on_cpu": round2(self.processing_shares().0),
                "waiting_for_a_cpu": round2(self.processing_shares().1),
                "blocked": round2(self.processing_shares().2),
            },
            "broker_threads_waiting_for_a_cpu": round2(self.broker_sched.wait_s / self.window_s),
            "peak_rss_bytes_per_host": self.peak_rss,
            "redb_per_host": self.redb.iter().map(Redb::json).collect::<Vec<_>>(),
        })
    }
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// `n` hosts of `enrich` as group `group` on `input` (`total` records),
/// until the group has committed all of it.
fn throughput(ws: &Workspace, n: usize, group: &str, input: &str, total: u64) -> Throughput {
    let tick = clock_tick();
    let config = ws.config("enrich", group, input);
    let committed = Committed::new(&ws.brokers, group, input);
    let started = Instant::now();
    let mut hosts: Vec<Host> = (0..n)
        .map(|i| {
            let id = format!("{group}-h{i}");
            Host::start(&config, &id, &ws.data_dir(&id))
        })
        .collect();
    {
        let refs: Vec<&Host> = hosts.iter().collect();
        // Every host has committed a batch since the group's last
        // assignment: the group has settled.
        wait_until("every host committing batches", &refs, || {
            let seen: Vec<_> = hosts.iter().map(Host::last_batch_and_assignment).collect();
            let settled = seen.iter().filter_map(|s| s.1).max();
            settled.is_some() && seen.iter().all(|s| s.0 > settled)
        });
    }
    let first = sample(&hosts, &committed, tick);
    {
        let refs: Vec<&Host> = hosts.iter().collect();
        wait_until("the input drained", &refs, || committed.sum() >= total);
    }
    let last = sample(&hosts, &committed, tick);
    let peak_rss = hosts
        .iter()
        .map(|h| status_bytes(h.pid(), "VmHWM").unwrap_or(0))
        .collect();
    for h in &hosts {
        h.sigterm();
    }
    let summaries: Vec<Value> = hosts.iter_mut().map(Host::summary).collect();
    let per_host: Vec<u64> = summaries
        .iter()
        .map(|s| counters(s, "enrich")["events_in"].as_u64().unwrap())
        .collect();
    let outputs = summaries
        .iter()
        .map(|s| counters(s, "enrich")["outputs"].as_u64().unwrap())
        .sum();
    let window_s = (last.at - first.at).as_secs_f64();
    let window_events = total - first.committed;
    Throughput {
        hosts: n,
        events_per_s: window_events as f64 / window_s,
        window_s,
        window_events,
        wall_s: (last.at - started).as_secs_f64(),
        host_cpu_s: last.hosts - first.hosts,
        broker_cpu_s: last.broker - first.broker,
        machine_cpu_s: last.machine - first.machine,
        events_per_host: per_host,
        outputs,
        peak_rss,
        redb: hosts.iter().map(Host::redb).collect(),
        processing: last.processing - first.processing,
        broker_sched: last.broker_sched - first.broker_sched,
    }
}

/// What one restore measured.
struct Restore {
    what: String,
    keys: u64,
    records: u64,
    restore_s: f64,
    cpu_s: f64,
    peak_rss: u64,
    baseline_peak_rss: u64,
    rss: u64,
    redb: Redb,
    baseline_redb: Redb,
    /// The host that wrote the changelog by processing the input: its peak
    /// RSS and redb file size at the end, in bytes.
    writer_peak_rss: u64,
    writer_redb: Redb,
    /// The restoring thread (the processing thread restores) until the
    /// last partition was restored.
    thread: Sched,
}

impl Restore {
    fn per_million(&self, x: f64) -> f64 {
        x / self.keys as f64 * 1e6
    }

    /// Peak RSS above the baseline's, in bytes.
    fn added_rss(&self) -> f64 {
        self.peak_rss.saturating_sub(self.baseline_peak_rss) as f64
    }

    /// redb bytes allocated above the baseline's.
    fn added_redb(&self) -> f64 {
        self.redb
            .allocated
            .saturating_sub(self.baseline_redb.allocated) as f64
    }

    fn json(&self) -> Value {
        let added = self.added_rss();
        json!({
            "processor": self.what,
            "keys": self.keys,
            "changelog_records": self.records,
            "restore_s": round2(self.restore_s),
            "restore_s_per_million_keys": round2(self.per_million(self.restore_s)),
            "records_per_s": (self.records as f64 / self.restore_s).round(),
            "host_cpu_s": round2(self.cpu_s),
            "restoring_thread_on_cpu_s": round2(self.thread.run_s),
            "restoring_thread_waiting_for_a_cpu_s": round2(self.thread.wait_s),
            "peak_rss_bytes": self.peak_rss,
            "rss_after_restore_bytes": self.rss,
            "baseline_peak_rss_bytes": self.baseline_peak_rss,
            "added_peak_rss_bytes_per_million_keys": self.per_million(added).round(),
            "redb": self.redb.json(),
            "baseline_redb": self.baseline_redb.json(),
            "added_redb_allocated_bytes_per_million_keys": self.per_million(self.added_redb()).round(),
            "writer_peak_rss_bytes": self.writer_peak_rss,
            "writer_redb": self.writer_redb.json(),
            "writer_redb_allocated_bytes_per_million_keys": self.per_million(self.writer_redb.allocated as f64).round(),
        })
    }
}

/// Starts `config` as host `id` on a fresh data dir, and waits until it
/// has restored all [`PARTITIONS`] partitions.
fn start_restoring(ws: &Workspace, config: &Path, id: &str) -> Host {
    let host = Host::start(config, id, &ws.data_dir(id));
    wait_until("every partition restored", &[&host], || {
        host.restores().len() >= PARTITIONS as usize
    });
    host
}

/// The restore of `group`'s changelog (processor `processor`, `keys`
/// idempotency keys in `records` changelog records) by a new host on an
/// empty data dir, against the same processor on an empty topic (`empty`)
/// for the baseline memory.
fn restore(
    ws: &Workspace,
    processor: &str,
    (group, input, empty): (&str, &str, &str),
    keys: u64,
    records: u64,
    (writer_peak_rss, writer_redb): (u64, Redb),
) -> Restore {
    let tick = clock_tick();
    // Baseline: the same processor, every partition assigned, nothing to restore.
    let base_group = format!("{group}-base");
    let base_config = ws.config(processor, &base_group, empty);
    let mut base = start_restoring(ws, &base_config, &format!("{base_group}-h"));
    std::thread::sleep(Duration::from_secs(1));
    let baseline_peak_rss = status_bytes(base.pid(), "VmHWM").unwrap();
    base.stop();
    let baseline_redb = base.redb();

    let config = ws.config(processor, group, input);
    let mut host = start_restoring(ws, &config, &format!("{group}-restorer"));
    let peak_rss = status_bytes(host.pid(), "VmHWM").unwrap();
    let rss = status_bytes(host.pid(), "VmRSS").unwrap();
    let cpu_s = process_cpu_s(host.pid(), tick).unwrap();
    let thread = sched(host.pid(), "processor-");
    let logged = host.restores();
    let summary = host.stop();
    let redb = host.redb();
    let c = counters(&summary, processor);
    let restore_ms = c["restore_ms"].as_u64().unwrap();
    assert_eq!(
        c["restored_records"].as_u64(),
        Some(records),
        "{processor}: every changelog record restored"
    );
    assert_eq!(
        logged.iter().map(|(r, _)| r).sum::<u64>(),
        records,
        "{processor}: the restores the log shows"
    );
    Restore {
        what: processor.to_owned(),
        keys,
        records,
        restore_s: restore_ms as f64 / 1000.0,
        cpu_s,
        peak_rss,
        baseline_peak_rss,
        rss,
        redb,
        baseline_redb,
        writer_peak_rss,
        writer_redb,
        thread,
    }
}

/// Two lines per throughput run: the rate and who used the CPU (cores
/// are CPU-seconds per second of the window; "other" is everything else
/// the machine ran meanwhile: other users, this bench's polling), then
/// where a host's processing thread spent the window.
fn print_throughput(runs: &[Throughput], cpus: f64) {
    println!(
        "{:<6} {:>9} {:>8} {:>10} {:>12} {:>11} {:>12} {:>13} {:>15} {:>24}",
        "hosts",
        "events/s",
        "window s",
        "host cores",
        "broker cores",
        "other cores",
        "machine busy",
        "host CPU-s/1M",
        "broker CPU-s/1M",
        "events per host"
    );
    for t in runs {
        let w = t.window_s;
        let other = t.machine_cpu_s - t.host_cpu_s - t.broker_cpu_s;
        let per_million = |cpu: f64| cpu / t.window_events as f64 * 1e6;
        println!(
            "{:<6} {:>9.0} {:>8.1} {:>10.2} {:>12.2} {:>11.2} {:>11.0}% {:>13.1} {:>15.1} {:>24}",
            t.hosts,
            t.events_per_s,
            w,
            t.host_cpu_s / w,
            t.broker_cpu_s / w,
            other / w,
            t.machine_cpu_s / (w * cpus) * 100.0,
            per_million(t.host_cpu_s),
            per_million(t.broker_cpu_s),
            format!("{:?}", t.events_per_host)
        );
    }
    println!(
        "a host's processing thread over the window (on a CPU / runnable, waiting for a CPU / blocked on the broker or disk), \
         broker threads waiting for a CPU, and the events/s hosts + broker would reach with all {cpus} cores to themselves:"
    );
    println!(
        "{:<6} {:>9} {:>9} {:>9} {:>15} {:>13}",
        "hosts", "on CPU", "CPU wait", "blocked", "broker waiting", "ceiling ev/s"
    );
    for t in runs {
        let (run, wait, blocked) = t.processing_shares();
        println!(
            "{:<6} {:>8.0}% {:>8.0}% {:>8.0}% {:>9.2} cores {:>13.0}",
            t.hosts,
            run * 100.0,
            wait * 100.0,
            blocked * 100.0,
            t.broker_sched.wait_s / t.window_s,
            t.ceiling(cpus),
        );
    }
}

fn print_restores(restores: &[Restore]) {
    println!(
        "restore onto an empty data dir (a new host taking over all {PARTITIONS} partitions); \
         CPU-s: the host process; thread on/wait: the restoring thread on a CPU / waiting for one; \
         +RSS: peak RSS above the baseline (the same processor, nothing to restore); \
         +redb: pages redb allocated, above the baseline's:"
    );
    println!(
        "{:<10} {:>8} {:>8} {:>9} {:>6} {:>13} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "processor",
        "keys",
        "records",
        "restore s",
        "CPU-s",
        "thread on/wait",
        "s/1M keys",
        "peak RSS",
        "baseline",
        "+RSS/1M",
        "+redb",
        "+redb/1M"
    );
    let mb = |b: f64| format!("{:.0} MB", b / 1e6);
    for r in restores {
        println!(
            "{:<10} {:>8} {:>8} {:>9.1} {:>6.1} {:>13} {:>9.1} {:>9} {:>9} {:>9} {:>9} {:>9}",
            r.what,
            r.keys,
            r.records,
            r.restore_s,
            r.cpu_s,
            format!("{:.1}/{:.1} s", r.thread.run_s, r.thread.wait_s),
            r.per_million(r.restore_s),
            mb(r.peak_rss as f64),
            mb(r.baseline_peak_rss as f64),
            mb(r.per_million(r.added_rss())),
            mb(r.added_redb()),
            mb(r.per_million(r.added_redb())),
        );
    }
    println!("the hosts that wrote those changelogs by processing, at their end:");
    for r in restores {
        println!(
            "{:<10} peak RSS {}, redb allocated {} ({} per 1M keys)",
            r.what,
            mb(r.writer_peak_rss as f64),
            mb(r.writer_redb.allocated as f64),
            mb(r.per_million(r.writer_redb.allocated as f64)),
        );
    }
}

fn main() {
    let Some(brokers) = brokers() else {
        println!(
            "scaleout bench: no Kafka broker (make kafka-up, or make bench which starts one); nothing measured"
        );
        return;
    };
    let copies = env_usize("TIDEWATER_BENCH_COPIES", COPIES);
    let keys = env_usize("TIDEWATER_BENCH_KEYS", KEYS);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let config = KafkaConfig::new(&brokers);
    let ws = Workspace::new(&brokers);
    let tag = unique("scale");

    // The inputs, produced once before any timing.
    let input = format!("{tag}-in");
    let readings = real_readings(copies);
    produce(&config, &input, &readings);
    let total = readings.len() as u64;
    drop(readings);
    let sizes = partition_sizes(&config, &input);
    assert_eq!(sizes.iter().sum::<u64>(), total);
    let keys_topic = format!("{tag}-keys");
    produce(&config, &keys_topic, &device_readings(keys));
    let empty = format!("{tag}-empty");
    produce(&config, &empty, &[]);
    let devices = DATA.len() * copies * IDS_PER_SET;
    println!(
        "scale-out on Kafka: enrich on {total} real readings (data/ x{copies}, {devices} devices), {PARTITIONS} partitions {sizes:?}, one local broker, {cpus} CPUs"
    );

    // 1. One host and three on the same input: rounds of (1, 3) then
    // (3, 1), so a change in the machine's other load hurts neither more;
    // the best of each counts.
    let rounds = env_usize("TIDEWATER_BENCH_ROUNDS", ROUNDS).max(1);
    let mut runs: Vec<Throughput> = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 { [1, 3] } else { [3, 1] };
        for n in order {
            let group = format!("{tag}-g{n}-{round}");
            let t = throughput(&ws, n, &group, &input, total);
            assert_eq!(
                t.events_per_host.iter().sum::<u64>(),
                total,
                "{n} host(s): every event read once"
            );
            assert_eq!(t.outputs, total, "{n} host(s): one output per reading");
            runs.push(t);
        }
    }
    let best = |n: usize| {
        runs.iter()
            .filter(|t| t.hosts == n)
            .max_by(|a, b| a.events_per_s.total_cmp(&b.events_per_s))
            .unwrap()
    };
    let (one, three) = (best(1), best(3));
    let ratio = three.events_per_s / one.events_per_s;
    print_throughput(&runs, cpus);
    println!(
        "ratio 3 hosts / 1 host (best of {rounds} each): {:.0} / {:.0} = {ratio:.2}",
        three.events_per_s, one.events_per_s
    );

    // 2. Restores onto empty data dirs.
    let restores = [
        // enrich keeps no state: one key record per reading.
        restore(
            &ws,
            "enrich",
            (&format!("{tag}-g1-0"), &input, &empty),
            total,
            total,
            (runs[0].peak_rss[0], runs[0].redb[0]),
        ),
        {
            let group = format!("{tag}-keys");
            let cfg = ws.config("threshold", &group, &keys_topic);
            let id = format!("{group}-writer");
            let mut writer = Host::start(&cfg, &id, &ws.data_dir(&id));
            let committed = Committed::new(&brokers, &group, &keys_topic);
            wait_until("threshold's input processed", &[&writer], || {
                committed.sum() >= keys as u64
            });
            let writer_peak_rss = status_bytes(writer.pid(), "VmHWM").unwrap();
            writer.stop();
            // One key record and one state record per device.
            restore(
                &ws,
                "threshold",
                (&group, &keys_topic, &empty),
                keys as u64,
                2 * keys as u64,
                (writer_peak_rss, writer.redb()),
            )
        },
    ];
    print_restores(&restores);
    let report = json!({
        "machine_cpus": cpus,
        "partitions": PARTITIONS,
        "throughput": {
            "processor": "enrich",
            "events": total,
            "devices": devices,
            "partition_sizes": sizes,
            "one_host": one.json(cpus),
            "three_hosts": three.json(cpus),
            "ratio_three_to_one": round2(ratio),
            "rounds": rounds,
            "runs": runs.iter().map(|t| t.json(cpus)).collect::<Vec<_>>(),
        },
        "restore": restores.iter().map(Restore::json).collect::<Vec<_>>(),
    });
    std::fs::write(
        root().join("target/bench-scaleout.json"),
        serde_json::to_string_pretty(&report).unwrap() + "\n",
    )
    .unwrap();
}
