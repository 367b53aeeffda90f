//! Each processor, `[[forward]]` and `[[sink]]` on a thread of its own, and what
//! they share with the supervisor: a stop flag, a progress counter (for
//! idle detection) and how each ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{ForwardSummary, IDLE_POLL, SinkSummary};
use crate::control::Control;
use crate::processing::stats;
use crate::processing::{Pipeline, PipelineError};
use crate::streams::embedded::Log;
use crate::streams::forward::{Forwarder, Step};
use crate::streams::sinks::{self, Delivered, SinkTask};

/// What the supervisor and all threads share.
#[derive(Clone, Default)]
pub(super) struct Flags {
    /// Set to ask every thread to stop after its batch in flight.
    pub stop: Arc<AtomicBool>,
    /// Counts committed batches (and shipped forward batches) of the whole
    /// run: new input appears only through one.
    pub progress: Arc<AtomicU64>,
}

/// What one processor's thread shares with the supervisor.
pub(super) struct Shared {
    /// The value of the run's progress counter when this processor last
    /// found nothing to read and its source was caught up; `u64::MAX` when
    /// it has not yet or has found work since.
    pub idle_at: AtomicU64,
    /// Time spent in batches (reading, calling, committing), in ns.
    pub busy_ns: AtomicU64,
    /// How the processor ended, set before its stream is closed (closing a
    /// Kafka consumer can wait on an unreachable broker).
    pub ended: std::sync::Mutex<Option<String>>,
    /// What the processor's source had left to read when it last found
    /// nothing to read and was not caught up ([`Pipeline::behind`]).
    pub behind: std::sync::Mutex<Option<String>>,
}

/// A running processor: its name, its first version, what it shares, its thread.
pub(super) struct ProcessorThread {
    pub name: String,
    pub version: String,
    pub shared: Arc<Shared>,
    pub handle: JoinHandle<String>,
}

/// Starts `pipeline` on its own thread, under `control`. It runs batches
/// until asked to stop or until it fails; a failure pauses (a `fatal`
/// error, an instance that cannot start) or fails (storage) only this one,
/// is counted by its code and recorded as its status.
pub(super) fn spawn_processor(
    mut pipeline: Pipeline,
    control: Arc<Control>,
    db: Arc<redb::Database>,
    flags: Flags,
) -> ProcessorThread {
    let name = pipeline.name().to_string();
    let version = pipeline.version().to_owned();
    let shared = Arc::new(Shared {
        idle_at: AtomicU64::new(u64::MAX),
        ended: std::sync::Mutex::new(None),
        busy_ns: AtomicU64::new(0),
        behind: std::sync::Mutex::new(None),
    });
    let shared2 = shared.clone();
    let handle = std::thread::Builder::new()
        .name(format!("processor-{name}"))
        .spawn(move || {
            let (status, failure_code) = run_batches(&mut pipeline, &control, &shared2, &flags);
            shared2.idle_at.store(u64::MAX - 1, Ordering::SeqCst);
            control.set_state(&status);
            record_end(&db, pipeline.name(), &status, failure_code);
            if let Ok(mut ended) = shared2.ended.lock() {
                *ended = Some(status.clone());
            }
            drop(pipeline);
            status
        })
        .expect("spawning a thread");
    ProcessorThread {
        name,
        version,
        shared,
        handle,
    }
}

/// The processor thread's loop: a step at a time until stopped or failed.
/// Returns the status it ended with and, on failure, the error code.
fn run_batches(
    pipeline: &mut Pipeline,
    control: &Control,
    shared: &Shared,
    flags: &Flags,
) -> (String, Option<&'static str>) {
    loop {
        if flags.stop.load(Ordering::Relaxed) {
            return ("stopped".to_string(), None);
        }
        let t = Instant::now();
        match pipeline.step() {
            Ok(Some(_)) => {
                shared.idle_at.store(u64::MAX, Ordering::SeqCst);
                if let Ok(mut behind) = shared.behind.lock() {
                    *behind = None;
                }
                shared
                    .busy_ns
                    .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                flags.progress.fetch_add(1, Ordering::SeqCst);
            }
            Ok(None) => {
                let seen = flags.progress.load(Ordering::SeqCst);
                let caught_up = pipeline.caught_up();
                let at = if caught_up { seen } else { u64::MAX };
                shared.idle_at.store(at, Ordering::SeqCst);
                if let Ok(mut behind) = shared.behind.lock() {
                    *behind = (!caught_up).then(|| why_behind(pipeline, control));
                }
                control.idle(IDLE_POLL);
            }
            Err(e) => {
                let (code, word) = match &e {
                    PipelineError::Fatal { .. } => ("fatal", "paused"),
                    PipelineError::Start { error, .. } => (error.code(), "paused"),
                    _ => ("storage", "failed"),
                };
                tracing::error!(processor = %pipeline.name(), code, error = %e, "processor stopped; the others go on");
                return (format!("{word}: {e}"), Some(code));
            }
        }
    }
}

/// Why a processor that found nothing to read is not caught up, in words:
/// paused (then it reads nothing), else what its source has left to read.
fn why_behind(pipeline: &Pipeline, control: &Control) -> String {
    if control.is_paused() {
        let name = pipeline.name();
        return format!("is paused: it reads nothing until resumed (tidewater resume {name})");
    }
    pipeline
        .behind()
        .unwrap_or_else(|| "has not read its inputs to their end".into())
}

/// Records how a processor ended: its failure counted by code, its status.
fn record_end(db: &redb::Database, name: &str, status: &str, failure_code: Option<&'static str>) {
    if let Some(code) = failure_code {
        let codes = [(code, 1)].into_iter().collect();
        if let Err(e) = stats::add_codes(db, name, &codes) {
            tracing::error!(processor = %name, error = %e, "cannot count the processor's failure");
        }
    }
    if let Err(e) = stats::set_status(db, name, status) {
        tracing::error!(processor = %name, error = %e, "cannot record the processor's status");
    }
}

/// What a `[[forward]]` thread shares with `run`.
pub(super) struct ForwardShared {
    /// As [`Shared::idle_at`].
    pub idle_at: AtomicU64,
    /// Records acknowledged by the broker.
    pub shipped: AtomicU64,
}

/// A running forward: its summary so far, what it shares, its thread.
pub(super) struct ForwardThread {
    pub summary: ForwardSummary,
    pub shared: Arc<ForwardShared>,
    pub handle: JoinHandle<String>,
}

/// Starts one `[[forward]]` on its own thread. It takes part in idle
/// detection like a processor: idle once everything stored so far was
/// shipped; never idle while records wait for the brokers.
pub(super) fn spawn_forward(mut forwarder: Forwarder, log: Log, flags: Flags) -> ForwardThread {
    let c = forwarder.config();
    let summary = ForwardSummary {
        from: c.from.clone(),
        topic: c.kafka_topic().to_owned(),
        brokers: c.kafka.brokers.clone(),
        records: 0,
        status: String::new(),
    };
    let shared = Arc::new(ForwardShared {
        idle_at: AtomicU64::new(u64::MAX),
        shipped: AtomicU64::new(0),
    });
    let shared2 = shared.clone();
    let handle = std::thread::Builder::new()
        .name(format!("forward-{}", summary.from))
        .spawn(move || {
            let status = ship(&mut forwarder, &log, &shared2, &flags);
            shared2.idle_at.store(u64::MAX - 1, Ordering::SeqCst);
            status
        })
        .expect("spawning a thread");
    ForwardThread {
        summary,
        shared,
        handle,
    }
}

/// The forward thread's loop: ships until stopped or failed; returns its status.
fn ship(forwarder: &mut Forwarder, log: &Log, shared: &ForwardShared, flags: &Flags) -> String {
    let stop = &flags.stop;
    let mut open = || Ok(log.clone());
    loop {
        if stop.load(Ordering::SeqCst) {
            return "stopped".to_owned();
        }
        // Read before looking, so that a commit landing meanwhile makes
        // this idle mark stale rather than wrong.
        let seen = flags.progress.load(Ordering::SeqCst);
        match forwarder.step(&mut open, stop) {
            Ok(Step::Idle) => {
                shared.idle_at.store(seen, Ordering::SeqCst);
                nap(Duration::from_millis(100), stop);
            }
            Ok(Step::Shipped(n)) => {
                shared.idle_at.store(u64::MAX, Ordering::SeqCst);
                shared.shipped.fetch_add(n, Ordering::SeqCst);
            }
            Ok(Step::BrokersAway) => {
                shared.idle_at.store(u64::MAX, Ordering::SeqCst);
                nap(Duration::from_secs(2), stop);
            }
            Ok(Step::Stopped) => return "stopped".to_owned(),
            Err(e) => {
                tracing::error!(from = %forwarder.config().from, error = %e, "forward stopped; the processors go on");
                return format!("failed: {e}");
            }
        }
    }
}

/// Sleeps up to `d`, waking early when asked to stop.
fn nap(d: Duration, stop: &AtomicBool) {
    let until = Instant::now() + d;
    while !stop.load(Ordering::SeqCst) && Instant::now() < until {
        std::thread::sleep(IDLE_POLL);
    }
}

/// What a `[[sink]]` thread shares with `run`.
pub(super) struct SinkShared {
    /// As [`Shared::idle_at`].
    pub idle_at: AtomicU64,
    /// What it delivered in this run.
    pub delivered: std::sync::Mutex<Delivered>,
}

/// A running sink: its summary so far, what it shares, its thread.
pub(super) struct SinkThread {
    pub summary: SinkSummary,
    pub shared: Arc<SinkShared>,
    pub handle: JoinHandle<String>,
}

/// Starts one `[[sink]]` on its own thread, with a tokio runtime of its
/// own. It takes part in idle detection like a processor: idle once it has
/// delivered everything stored so far; never while it waits for its
/// destination.
pub(super) fn spawn_sink(mut task: SinkTask, db: Arc<redb::Database>, flags: Flags) -> SinkThread {
    let c = task.config();
    let summary = SinkSummary {
        name: c.name.clone(),
        kind: c.kind().to_owned(),
        topic: c.topic.clone(),
        delivered: Delivered::default(),
        status: String::new(),
    };
    let shared = Arc::new(SinkShared {
        idle_at: AtomicU64::new(u64::MAX),
        delivered: std::sync::Mutex::new(Delivered::default()),
    });
    let shared2 = shared.clone();
    let handle = std::thread::Builder::new()
        .name(format!("sink-{}", summary.name))
        .spawn(move || {
            let status = deliver(&mut task, &db, &shared2, &flags);
            shared2.idle_at.store(u64::MAX - 1, Ordering::SeqCst);
            task.control().set_state(&status);
            if let Err(e) = stats::set_status(&db, &task.config().name, &status) {
                tracing::error!(sink = %task.config().name, error = %e, "cannot record the sink's status");
            }
            status
        })
        .expect("spawning a thread");
    SinkThread {
        summary,
        shared,
        handle,
    }
}

/// The sink thread's loop: delivers until stopped or failed; returns its status.
fn deliver(task: &mut SinkTask, db: &redb::Database, shared: &SinkShared, flags: &Flags) -> String {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return format!("failed: no runtime for the sink: {e}"),
    };
    let name = task.config().name.clone();
    loop {
        if flags.stop.load(Ordering::SeqCst) {
            return "stopped".to_owned();
        }
        let seen = flags.progress.load(Ordering::SeqCst);
        let step = task.step(&rt, &flags.stop);
        let counts = match &step {
            Ok(sinks::Step::Delivered(d) | sinks::Step::Waiting(d)) => Some(d.clone()),
            _ => None,
        };
        if let Some(d) = counts {
            record(db, &name, &d);
            let mut total = shared
                .delivered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            add(&mut total, &d);
        }
        match step {
            Ok(sinks::Step::Delivered(d)) => {
                shared.idle_at.store(u64::MAX, Ordering::SeqCst);
                if d.dead_lettered > 0 {
                    // Dead letters are new input for whoever reads them.
                    flags.progress.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(sinks::Step::Waiting(_)) => shared.idle_at.store(u64::MAX, Ordering::SeqCst),
            Ok(sinks::Step::Idle) => {
                let at = if task.caught_up() { seen } else { u64::MAX };
                shared.idle_at.store(at, Ordering::SeqCst);
                task.control().idle(Duration::from_millis(100));
            }
            Ok(sinks::Step::Paused) => {
                shared.idle_at.store(seen, Ordering::SeqCst);
                task.control().idle(Duration::from_millis(100));
            }
            Ok(sinks::Step::Stopped) => return "stopped".to_owned(),
            Err(e) => {
                tracing::error!(sink = %name, error = %e, "sink stopped; the others go on");
                return format!("failed: {e}");
            }
        }
    }
}

/// Adds a batch's counts to the sink's counters in redb (without an
/// fsync: the next durable commit carries them): records read as
/// `events_in`, new effects as `outputs`, effects already there as
/// `duplicates`, dead letters as `dead_lettered` and `errors`.
fn record(db: &redb::Database, name: &str, d: &Delivered) {
    let counters = stats::Counters {
        events_in: d.records,
        outputs: d.changed,
        duplicates: d.unchanged,
        skipped: d.skipped,
        dead_lettered: d.dead_lettered,
        errors: d.dead_lettered,
        ..stats::Counters::default()
    };
    let result = (|| {
        let mut txn = db.begin_write()?;
        let _ = txn.set_durability(redb::Durability::None);
        stats::add_in(&txn, name, &counters)?;
        stats::add_codes_in(&txn, name, &d.codes)?;
        txn.commit()?;
        Ok::<_, crate::db::StorageError>(())
    })();
    if let Err(e) = result {
        tracing::error!(sink = %name, error = %e, "cannot count the sink's batch");
    }
}

fn add(total: &mut Delivered, d: &Delivered) {
    total.records += d.records;
    total.changed += d.changed;
    total.unchanged += d.unchanged;
    total.skipped += d.skipped;
    total.dead_lettered += d.dead_lettered;
    for (code, n) in &d.codes {
        *total.codes.entry(code).or_default() += n;
    }
}
