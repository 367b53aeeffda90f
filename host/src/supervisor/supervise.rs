//! Supervising a run: periodic maintenance (retention, key expiry), knowing
//! when every input is drained (`--until-idle`), and stopping the threads.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::threads::{Flags, ForwardThread, ProcessorThread, SinkThread};
use super::{ForwardSummary, STOP_GRACE, SinkSummary};
use crate::db::now_ms;
use crate::processing::idempotency;
use crate::streams::embedded::Log;

/// How often the supervisor looks at the threads.
const TICK: Duration = Duration::from_millis(50);

/// What the supervisor watches.
pub(super) struct Watched<'a> {
    pub processors: &'a [ProcessorThread],
    pub forwards: &'a [ForwardThread],
    pub sinks: &'a [SinkThread],
    pub flags: &'a Flags,
    /// Stop once every input is drained.
    pub until_idle: bool,
    /// Ticks of quiet needed to call the run idle (more on Kafka, whose
    /// consumers learn of new records with a fetch delay).
    pub quiet_needed: u32,
    /// How often retention and key expiry run.
    pub maintenance_interval: Duration,
    /// Whether ingest runs (then the run goes on without threads, until stopped).
    pub ingest: bool,
}

/// Runs retention and idempotency-key expiry once, off the async runtime.
pub(super) async fn maintain(log: &Log) {
    let (log, db) = (log.clone(), log.db().clone());
    let _ = tokio::task::spawn_blocking(move || {
        let now = now_ms();
        // It logs what it removed and kept itself.
        if let Err(e) = log.enforce_retention(now) {
            tracing::error!(error = %e, "retention failed");
        }
        match idempotency::purge_expired(&db, now) {
            Ok(0) => {}
            Ok(n) => tracing::info!(keys = n, "expired idempotency keys purged"),
            Err(e) => tracing::error!(error = %e, "idempotency key purge failed"),
        }
    })
    .await;
}

/// Waits until `shutdown` completes, every thread has ended, or (with
/// `until_idle`) the run is idle; runs maintenance on the way.
pub(super) async fn supervise(w: Watched<'_>, log: &Log, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(TICK);
    let mut last_maintenance = Instant::now();
    let mut quiet_ticks = 0;
    let mut last_progress = u64::MAX;
    let mut progressed_at = Instant::now();
    let mut waiting_said_at = Instant::now();
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = tick.tick() => {}
        }
        if last_maintenance.elapsed() >= w.maintenance_interval {
            last_maintenance = Instant::now();
            maintain(log).await;
        }
        if !w.ingest
            && w.processors.iter().all(|t| t.handle.is_finished())
            && w.forwards.iter().all(|t| t.handle.is_finished())
            && w.sinks.iter().all(|t| t.handle.is_finished())
        {
            break;
        }
        let p = w.flags.progress.load(Ordering::SeqCst);
        if w.until_idle && all_idle(&w, p) && p == last_progress {
            quiet_ticks += 1;
            if quiet_ticks >= w.quiet_needed {
                break;
            }
        } else {
            quiet_ticks = 0;
        }
        if p != last_progress {
            progressed_at = Instant::now();
        }
        if w.until_idle
            && progressed_at.elapsed() >= SAY_WAITING_AFTER
            && waiting_said_at.elapsed() >= SAY_WAITING_AFTER
        {
            waiting_said_at = Instant::now();
            say_what_is_awaited(&w, p, progressed_at.elapsed());
        }
        last_progress = p;
    }
}

/// How long `--until-idle` goes without a commit before it logs what it
/// waits for (and again every as long).
const SAY_WAITING_AFTER: Duration = Duration::from_secs(30);

/// Logs, for `--until-idle`, each processor that keeps the run from ending
/// and why: what its source has left to read, or that it is in a batch.
fn say_what_is_awaited(w: &Watched<'_>, progress: u64, quiet: Duration) {
    for t in w.processors {
        if t.handle.is_finished() || t.shared.idle_at.load(Ordering::SeqCst) == progress {
            continue;
        }
        let behind = t.shared.behind.lock().ok().and_then(|b| b.clone());
        let reason = behind
            .unwrap_or_else(|| "is in a batch (reading, in its component, or committing)".into());
        tracing::info!(
            processor = %t.name, quiet_s = quiet.as_secs(), ?reason,
            "--until-idle: no commit for a while, and this processor is not idle"
        );
    }
}

/// Idle: every thread found nothing to read after the last commit of any of
/// them (`progress`; a commit is the only way new input appears).
fn all_idle(w: &Watched<'_>, progress: u64) -> bool {
    w.processors
        .iter()
        .map(|t| (&t.shared.idle_at, &t.handle))
        .chain(w.forwards.iter().map(|t| (&t.shared.idle_at, &t.handle)))
        .chain(w.sinks.iter().map(|t| (&t.shared.idle_at, &t.handle)))
        .all(|(idle_at, h)| h.is_finished() || idle_at.load(Ordering::SeqCst) == progress)
}

/// Waits up to [`STOP_GRACE`] for a processor's thread; returns (name,
/// first version, status, busy ns).
pub(super) async fn join_processor(t: ProcessorThread) -> (String, String, String, u64) {
    let ProcessorThread {
        name,
        version,
        shared,
        handle,
    } = t;
    let status = match join_within_grace(handle).await {
        Some(Some(status)) => status,
        Some(None) => "failed: the processor thread panicked".into(),
        None => shared.ended.lock().ok().and_then(|e| e.clone()).unwrap_or_else(|| {
            format!(
                "stopped without finishing: its batch in flight did not end within {} s of the stop (a long call into the component, or a stream that does not answer)",
                STOP_GRACE.as_secs()
            )
        }),
    };
    let busy_ns = shared.busy_ns.load(Ordering::Relaxed);
    (name, version, status, busy_ns)
}

/// Waits up to [`STOP_GRACE`] for a forward's thread; returns its summary.
pub(super) async fn join_forward(t: ForwardThread) -> ForwardSummary {
    let ForwardThread {
        mut summary,
        shared,
        handle,
    } = t;
    let joined = join_within_grace(handle).await;
    summary.records = shared.shipped.load(Ordering::SeqCst);
    summary.status = match joined {
        Some(Some(status)) => status,
        Some(None) => "failed: the forward thread panicked".into(),
        None => format!(
            "stopped without finishing: still waiting on the brokers after {} s",
            STOP_GRACE.as_secs()
        ),
    };
    summary
}

/// Waits up to [`STOP_GRACE`] for a sink's thread; returns its summary.
pub(super) async fn join_sink(t: SinkThread) -> SinkSummary {
    let SinkThread {
        mut summary,
        shared,
        handle,
    } = t;
    let joined = join_within_grace(handle).await;
    summary.delivered = shared
        .delivered
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    summary.status = match joined {
        Some(Some(status)) => status,
        Some(None) => "failed: the sink thread panicked".into(),
        None => format!(
            "stopped without finishing: its batch in flight did not end within {} s",
            STOP_GRACE.as_secs()
        ),
    };
    summary
}

/// A thread's status, waited for up to [`STOP_GRACE`] off the async
/// runtime: `None` when it did not end in time, `Some(None)` when it panicked.
async fn join_within_grace(handle: std::thread::JoinHandle<String>) -> Option<Option<String>> {
    let joined = tokio::time::timeout(
        STOP_GRACE,
        tokio::task::spawn_blocking(move || handle.join()),
    )
    .await
    .ok()?;
    Some(joined.ok().and_then(Result::ok))
}
