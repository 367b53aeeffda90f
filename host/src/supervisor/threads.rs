//! Each processor and each `[[forward]]` on a thread of its own, and what
//! they share with the supervisor: a stop flag, a progress counter (for
//! idle detection) and how each ended.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{ForwardSummary, IDLE_POLL};
use crate::control::Control;
use crate::processing::stats;
use crate::processing::{Pipeline, PipelineError};
use crate::streams::embedded::Log;
use crate::streams::forward::{Forwarder, Step};

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
                shared
                    .busy_ns
                    .fetch_add(t.elapsed().as_nanos() as u64, Ordering::Relaxed);
                flags.progress.fetch_add(1, Ordering::SeqCst);
            }
            Ok(None) => {
                let seen = flags.progress.load(Ordering::SeqCst);
                let at = if pipeline.caught_up() { seen } else { u64::MAX };
                shared.idle_at.store(at, Ordering::SeqCst);
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
