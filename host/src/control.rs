//! Changing what a running processor does, at batch boundaries: hot swap,
//! pause and resume, shadow, canary with automatic rollback, and replay.
//!
//! The admin side (the HTTP API, the plugins-dir watcher) writes requests
//! into a processor's [`Control`]; the processor's own thread reads them at
//! the start of each batch ([`Attached::begin_step`]), so:
//!
//! - a swap takes effect between two batches: every event is processed by
//!   exactly one version, and the batch in flight ends on the version it
//!   started with. The new version was compiled and instantiated (its
//!   `init` run) before it was handed over, so the processor's thread only
//!   swaps a pointer. The old instance is dropped there, after its last
//!   batch; state lives in redb and carries over.
//! - a shadow version gets the same events as the active one, right after
//!   it, with its state in a scratch namespace (`<processor>#shadow`); its
//!   outputs are compared record by record and never published.
//! - a canary keeps the previous version's instance until the new version
//!   has processed its first N events; if its error rate over them is above
//!   the threshold, the previous version comes back at the next batch and
//!   the reason is recorded in the registry.
//! - a replay moves the processor's positions back; with reprocessing, a new
//!   idempotency epoch scopes its keys, so the range is processed again, and
//!   its outputs carry [`UPSERT_KEY_HEADER`] and [`EPOCH_HEADER`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

use crate::log::{LogRecord, Record};
use crate::pipeline::{Ending, Handler, PipelineError, Source};
use crate::registry::Registry;
use crate::runtime::{Event, EventResult, Output, ProcessError};
use crate::state::StateOverlay;
use crate::stats::Counters;

/// On outputs of a replay with reprocessing: the `idempotency-key` the same
/// output had in epoch 0, which downstream stores can upsert on.
pub const UPSERT_KEY_HEADER: &str = "tidewater-upsert-key";
/// On outputs of a replay with reprocessing: the idempotency epoch (decimal).
pub const EPOCH_HEADER: &str = "tidewater-epoch";
/// Most differences a shadow report keeps as samples.
pub const SHADOW_SAMPLES: usize = 20;

/// A version ready to run: instantiated, `init` done.
pub struct Swap {
    /// The handler to run from the next batch on.
    pub handler: Box<dyn Handler>,
    /// Why (`activate`, `rollback`, `watch`), for the history.
    pub reason: String,
    /// Watch its first events and roll back if too many fail.
    pub canary: Option<CanaryPlan>,
}

/// When a canary rolls back.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryPlan {
    /// How many processed events (not duplicates) the new version is judged on.
    pub events: u64,
    /// Largest allowed share of those events that fail (invalid, trap,
    /// timeout, memory, retries exhausted), 0.0 to 1.0.
    pub max_error_rate: f64,
}

/// Where a replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplayFrom {
    /// This offset in every partition of every input (the log start when below it).
    Offset(u64),
    /// The first record whose timestamp is at or after this, in ms since the
    /// Unix epoch, in every partition.
    TimeMs(i64),
}

/// A replay request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Replay {
    /// Where.
    pub from: ReplayFrom,
    /// The idempotency epoch to process under: the current one (events
    /// already processed are duplicates) or a new one (they are processed again).
    pub epoch: u64,
}

/// One record-level difference seen by a shadow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    /// Input topic.
    pub topic: String,
    /// Input partition.
    pub partition: u32,
    /// Input offset.
    pub offset: u64,
    /// What the active version did, in short.
    pub active: String,
    /// What the shadow did, in short.
    pub shadow: String,
}

/// What a shadow has seen so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ShadowReport {
    /// The shadow version's SHA-256.
    pub version: String,
    /// Events given to both.
    pub compared: u64,
    /// Events for which both gave the same outputs (topic, key, value,
    /// headers, in order) or the same error.
    pub identical: u64,
    /// The others.
    pub different: u64,
    /// The first [`SHADOW_SAMPLES`] differences.
    pub samples: Vec<Difference>,
}

/// What the API shows of a processor's control state.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ControlStatus {
    /// `running`, `stopped`, or `failed: <reason>`.
    pub state: String,
    /// The version processing events now.
    pub active_version: String,
    /// A version handed over and waiting for the next batch boundary.
    pub pending_version: Option<String>,
    /// Whether it is paused.
    pub paused: bool,
    /// Swaps applied since the host started.
    pub swaps: u64,
    /// The idempotency epoch in force.
    pub epoch: u64,
    /// The shadow, if one runs.
    pub shadow: Option<ShadowReport>,
    /// The canary being watched: (version, events seen, errors seen, plan).
    pub canary: Option<CanaryStatus>,
    /// The last canary rollback, if any: why.
    pub last_rollback: Option<String>,
    /// Replay requests applied since the host started.
    pub replays: u64,
    /// Why the last replay request was refused, if it was.
    pub last_replay_error: Option<String>,
    /// How long the processor's thread spent on the last swap (the pointer
    /// swap, recording it, dropping the old instance), in µs.
    pub last_swap_pause_us: u64,
    /// The longest such pause since the host started, in µs.
    pub max_swap_pause_us: u64,
}

/// A canary in progress.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CanaryStatus {
    /// The version on trial.
    pub version: String,
    /// Events processed by it so far.
    pub events: u64,
    /// Of which failed.
    pub errors: u64,
    /// The plan.
    pub plan: CanaryPlan,
}

/// The requests for one processor, written by the admin side and read by
/// the processor's thread at each batch boundary.
pub struct Control {
    name: Arc<str>,
    registry: Option<Registry>,
    pending: Mutex<Option<Swap>>,
    shadow_change: Mutex<Option<Option<Box<dyn Handler>>>>,
    replay: Mutex<Option<Replay>>,
    paused: AtomicBool,
    status: Mutex<ControlStatus>,
    applied: AtomicU64,
    /// Set when a request arrives; wakes an idle processor ([`Control::idle`]).
    wake: (Mutex<bool>, std::sync::Condvar),
}

impl Control {
    /// The control of `processor`, whose first version is `version`;
    /// `registry` records canary rollbacks.
    pub fn new(processor: Arc<str>, version: &str, registry: Option<Registry>) -> Arc<Self> {
        Arc::new(Control {
            name: processor,
            registry,
            pending: Mutex::default(),
            shadow_change: Mutex::default(),
            replay: Mutex::default(),
            paused: AtomicBool::new(false),
            status: Mutex::new(ControlStatus {
                state: "running".into(),
                active_version: version.to_owned(),
                ..ControlStatus::default()
            }),
            applied: AtomicU64::new(0),
            wake: (Mutex::new(false), std::sync::Condvar::new()),
        })
    }

    fn notify(&self) {
        *lock(&self.wake.0) = true;
        self.wake.1.notify_all();
    }

    /// Waits up to `timeout` for a request (what an idle processor does
    /// between polls of its inputs), so that a swap, pause, shadow or replay
    /// asked of an idle processor takes effect at once.
    pub fn idle(&self, timeout: std::time::Duration) {
        let guard = lock(&self.wake.0);
        let (mut woken, _) = self
            .wake
            .1
            .wait_timeout_while(guard, timeout, |w| !*w)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *woken = false;
    }

    /// The processor's name.
    pub fn name(&self) -> &Arc<str> {
        &self.name
    }

    /// Hands over `swap`, to run from the next batch boundary; a swap handed
    /// over earlier and not yet applied is dropped.
    pub fn request_swap(&self, swap: Swap) {
        let version = swap.handler.version().to_owned();
        *lock(&self.pending) = Some(swap);
        lock(&self.status).pending_version = Some(version);
        self.notify();
    }

    /// Starts shadowing with `handler` (replacing any shadow), or stops (`None`).
    pub fn set_shadow(&self, handler: Option<Box<dyn Handler>>) {
        *lock(&self.shadow_change) = Some(handler);
        self.notify();
    }

    /// Pauses (`true`) or resumes the processor at the next batch boundary.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        lock(&self.status).paused = paused;
        self.notify();
    }

    /// Asks for a replay at the next batch boundary.
    pub fn request_replay(&self, replay: Replay) {
        *lock(&self.replay) = Some(replay);
        self.notify();
    }

    /// Records how the processor's thread ended (`stopped`, `failed: ...`).
    pub fn set_state(&self, state: &str) {
        lock(&self.status).state = state.to_owned();
    }

    /// A copy of the status.
    pub fn status(&self) -> ControlStatus {
        lock(&self.status).clone()
    }

    /// How many requests (swaps, shadow changes, replays) the processor's
    /// thread has applied: a counter to wait on.
    pub fn applied(&self) -> u64 {
        self.applied.load(Ordering::SeqCst)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

struct ShadowRun {
    handler: Box<dyn Handler>,
    namespace: Arc<str>,
}

struct CanaryRun {
    previous: Box<dyn Handler>,
    version: String,
    events: u64,
    errors: u64,
    plan: CanaryPlan,
}

/// The processor thread's side of a [`Control`]: what it holds between
/// batches (the shadow's instance, the previous version during a canary).
pub struct Attached {
    control: Arc<Control>,
    shadow: Option<ShadowRun>,
    canary: Option<CanaryRun>,
    epoch: u64,
    scope: Arc<str>,
    /// Where the current epoch's replay ends, per (topic, partition).
    range_ends: HashMap<String, HashMap<u32, u64>>,
}

impl Attached {
    /// Attaches `control`, starting in idempotency `epoch` (whose replay
    /// range is read from the registry).
    pub fn new(control: Arc<Control>, epoch: u64) -> Self {
        lock(&control.status).epoch = epoch;
        let scope = key_scope(&control.name, epoch);
        let range = match &control.registry {
            Some(r) if epoch > 0 => r.replay_range(&control.name).unwrap_or_else(|e| {
                tracing::error!(processor = %control.name, error = %e, "cannot read the replay range");
                None
            }),
            _ => None,
        };
        let range_ends = range
            .filter(|r| r.epoch == epoch)
            .map(|r| ends_map(&r.ends))
            .unwrap_or_default();
        Attached {
            control,
            shadow: None,
            canary: None,
            epoch,
            scope,
            range_ends,
        }
    }

    /// The scope of idempotency keys for the record at `topic`/`partition`
    /// @`offset`, and the epoch its outputs are stamped with: `<name>#<epoch>`
    /// for a record the current epoch's replay covers (it was there when the
    /// replay started), else the processor's name and epoch 0. So a replay
    /// with reprocessing processes its range again, while an event
    /// redelivered after it is still a duplicate of its first delivery.
    pub fn scope_for(&self, topic: &str, partition: u32, offset: u64) -> (Arc<str>, u64) {
        let covered = self.epoch > 0
            && self
                .range_ends
                .get(topic)
                .and_then(|p| p.get(&partition))
                .is_some_and(|end| offset < *end);
        if covered {
            (self.scope.clone(), self.epoch)
        } else {
            (self.control.name.clone(), 0)
        }
    }

    /// The idempotency epoch in force.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Applies what was asked since the last batch. Returns `false` when the
    /// processor is paused (no batch now).
    ///
    /// # Errors
    ///
    /// None yet: a source that cannot replay is reported in the status.
    pub fn begin_step(
        &mut self,
        handler: &mut Box<dyn Handler>,
        source: &mut dyn Source,
    ) -> Result<bool, PipelineError> {
        let c = self.control.clone();
        let pending = lock(&c.pending).take();
        if let Some(swap) = pending {
            let started = std::time::Instant::now();
            let version = swap.handler.version().to_owned();
            let old = std::mem::replace(handler, swap.handler);
            // A canary keeps the version it replaced until judged; otherwise
            // the old instance goes now, after its last batch.
            self.canary = match swap.canary {
                Some(plan) => Some(CanaryRun {
                    previous: old,
                    version: version.clone(),
                    events: 0,
                    errors: 0,
                    plan,
                }),
                None => {
                    drop(old);
                    None
                }
            };
            if let Some(r) = &c.registry
                && let Err(e) = r.record_activation(&c.name, &version, &swap.reason)
            {
                tracing::error!(processor = %c.name, %version, error = %e, "cannot record the activation");
            }
            let mut st = lock(&c.status);
            st.active_version = version.clone();
            if st.pending_version.as_deref() == Some(version.as_str()) {
                st.pending_version = None;
            }
            st.swaps += 1;
            st.canary = self.canary.as_ref().map(canary_status);
            let pause_us = started.elapsed().as_micros() as u64;
            st.last_swap_pause_us = pause_us;
            st.max_swap_pause_us = st.max_swap_pause_us.max(pause_us);
            drop(st);
            tracing::info!(processor = %c.name, %version, reason = %swap.reason, "version active");
            // A shadow of the version that just became active would compare
            // it with itself: it ends (its report stays readable).
            if self
                .shadow
                .as_ref()
                .is_some_and(|sh| sh.handler.version() == version)
            {
                self.shadow = None;
                tracing::info!(processor = %c.name, %version, "the shadowed version is active now; the shadow ends");
            }
            c.applied.fetch_add(1, Ordering::SeqCst);
        }
        let shadow_change = lock(&c.shadow_change).take();
        if let Some(change) = shadow_change {
            self.shadow = change.map(|handler| {
                lock(&c.status).shadow = Some(ShadowReport {
                    version: handler.version().to_owned(),
                    ..ShadowReport::default()
                });
                ShadowRun {
                    handler,
                    namespace: format!("{}#shadow", c.name).into(),
                }
            });
            if self.shadow.is_none() {
                lock(&c.status).shadow = None;
            }
            c.applied.fetch_add(1, Ordering::SeqCst);
        }
        let replay = lock(&c.replay).take();
        if let Some(replay) = replay {
            // A source that cannot replay refuses; the processor goes on.
            match source.rewind(replay.from) {
                Ok(ends) => {
                    if replay.epoch != self.epoch {
                        // A replay with reprocessing: its range is recorded
                        // before any of it is processed.
                        if let Some(r) = &c.registry {
                            let range = crate::registry::ReplayRange {
                                epoch: replay.epoch,
                                ends: ends.clone(),
                            };
                            r.set_replay_range(&c.name, &range)?;
                        }
                        self.range_ends = ends_map(&ends);
                    }
                    self.epoch = replay.epoch;
                    self.scope = key_scope(&c.name, replay.epoch);
                    let mut st = lock(&c.status);
                    st.epoch = replay.epoch;
                    st.replays += 1;
                    st.last_replay_error = None;
                    drop(st);
                    tracing::info!(processor = %c.name, from = ?replay.from, epoch = replay.epoch, "replaying");
                }
                Err(e) => {
                    tracing::error!(processor = %c.name, error = %e, "replay refused");
                    lock(&c.status).last_replay_error = Some(e.to_string());
                }
            }
            c.applied.fetch_add(1, Ordering::SeqCst);
        }
        Ok(!c.paused.load(Ordering::SeqCst))
    }

    /// Runs the shadow, if any, on `events` (those the active version just
    /// processed, in order) and compares its results with the active
    /// version's `endings`. Returns the shadow's state writes (scratch
    /// namespace), to commit with the batch.
    ///
    /// # Errors
    ///
    /// Storage errors opening the shadow's state snapshot.
    pub(crate) fn shadow(
        &mut self,
        events: &[Event],
        endings: &[Ending],
        db: &redb::Database,
    ) -> Result<Option<StateOverlay>, PipelineError> {
        use redb::ReadableDatabase;
        let Some(run) = &mut self.shadow else {
            return Ok(None);
        };
        if events.is_empty() {
            return Ok(None);
        }
        let mut state = StateOverlay::new(run.namespace.clone(), db.begin_read()?);
        let results: Vec<Result<EventResult, String>> = match run.handler.call(events, &mut state) {
            Ok(r) => r.into_iter().map(Ok).collect(),
            // The call failed as a whole: one event at a time, as the active
            // version's batch was bisected, so only the culprits differ.
            Err(_) => events
                .iter()
                .map(
                    |e| match run.handler.call(std::slice::from_ref(e), &mut state) {
                        Ok(mut r) if r.len() == 1 => Ok(r.remove(0)),
                        Ok(r) => Err(format!(
                            "contract: process returned {} results for 1 event",
                            r.len()
                        )),
                        Err(e) => Err(format!("{}: {e}", e.code())),
                    },
                )
                .collect(),
        };
        let mut st = lock(&self.control.status);
        let Some(report) = st.shadow.as_mut() else {
            return Ok(Some(state));
        };
        for ((event, ending), result) in events.iter().zip(endings).zip(&results) {
            report.compared += 1;
            let active = describe_ending(ending);
            let shadow = describe_result(result);
            if active == shadow {
                report.identical += 1;
            } else {
                report.different += 1;
                if report.samples.len() < SHADOW_SAMPLES {
                    report.samples.push(Difference {
                        topic: event.topic.clone(),
                        partition: event.partition,
                        offset: event.offset,
                        active,
                        shadow,
                    });
                }
            }
        }
        Ok(Some(state))
    }

    /// Judges a canary after a committed batch with `counters`; swaps the
    /// previous version back when the new one failed too often.
    pub fn after_batch(&mut self, counters: &Counters, handler: &mut Box<dyn Handler>) {
        let Some(run) = &mut self.canary else {
            return;
        };
        run.events += counters
            .events_in
            .saturating_sub(counters.duplicates + counters.conflicts);
        run.errors += counters.errors;
        let c = self.control.clone();
        if run.events < run.plan.events {
            lock(&c.status).canary = Some(canary_status(run));
            return;
        }
        let run = self.canary.take().expect("checked above");
        let rate = run.errors as f64 / run.events.max(1) as f64;
        let mut st = lock(&c.status);
        st.canary = None;
        if rate <= run.plan.max_error_rate {
            tracing::info!(processor = %c.name, version = %run.version, events = run.events, errors = run.errors, "canary passed");
            return;
        }
        let reason = format!(
            "canary rollback: {} of its first {} events failed ({:.1}%, the limit is {:.1}%)",
            run.errors,
            run.events,
            rate * 100.0,
            run.plan.max_error_rate * 100.0
        );
        let previous = run.previous.version().to_owned();
        drop(std::mem::replace(handler, run.previous));
        st.active_version = previous.clone();
        st.swaps += 1;
        st.last_rollback = Some(reason.clone());
        drop(st);
        tracing::warn!(processor = %c.name, version = %run.version, %previous, %reason, "canary rolled back");
        if let Some(r) = &c.registry {
            let recorded = r
                .record_rollback_reason(&c.name, &run.version, &reason)
                .and_then(|()| r.record_activation(&c.name, &previous, &reason));
            if let Err(e) = recorded {
                tracing::error!(processor = %c.name, error = %e, "cannot record the canary rollback");
            }
        }
    }
}

fn canary_status(run: &CanaryRun) -> CanaryStatus {
    CanaryStatus {
        version: run.version.clone(),
        events: run.events,
        errors: run.errors,
        plan: run.plan,
    }
}

/// topic → partition → end, for lookups by `&str` on the hot path.
fn ends_map(ends: &[(String, u32, u64)]) -> HashMap<String, HashMap<u32, u64>> {
    let mut map: HashMap<String, HashMap<u32, u64>> = HashMap::new();
    for (t, p, e) in ends {
        map.entry(t.clone()).or_default().insert(*p, *e);
    }
    map
}

fn key_scope(name: &str, epoch: u64) -> Arc<str> {
    if epoch == 0 {
        name.into()
    } else {
        format!("{name}#{epoch}").into()
    }
}

fn describe_outputs(outputs: &[Output]) -> String {
    let parts: Vec<String> = outputs
        .iter()
        .map(|o| {
            format!(
                "{{topic: {:?}, key: {}, value: {}, headers: {}}}",
                o.topic,
                bytes(o.key.as_deref()),
                bytes(o.value.as_deref()),
                o.headers
                    .iter()
                    .map(|(n, v)| format!("{n}={}", bytes(Some(v))))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        })
        .collect();
    format!("ok [{}]", parts.join(", "))
}

fn bytes(b: Option<&[u8]>) -> String {
    match b {
        None => "none".into(),
        Some(b) => match std::str::from_utf8(b) {
            Ok(s) => format!("{s:?}"),
            Err(_) => format!("0x{}", hex::encode(b)),
        },
    }
}

fn describe_ending(e: &Ending) -> String {
    match e {
        Ending::Done(outputs) => describe_outputs(outputs),
        Ending::DeadLetter { kind, message, .. } => format!("{kind}: {message}"),
    }
}

fn describe_result(r: &Result<EventResult, String>) -> String {
    match r {
        Ok(Ok(outputs)) => describe_outputs(outputs),
        Ok(Err(ProcessError::Invalid(m))) => format!("invalid: {m}"),
        Ok(Err(ProcessError::Transient(m))) => format!("transient: {m}"),
        Ok(Err(ProcessError::Fatal(m))) => format!("fatal: {m}"),
        Err(e) => e.clone(),
    }
}

/// `record`, an output of an event processed in idempotency `epoch`: in
/// epoch 0 unchanged; after, its `idempotency-key` gets `#<epoch>` appended
/// (so downstream processors take it as new) and it carries the old key in
/// [`UPSERT_KEY_HEADER`] and the epoch in [`EPOCH_HEADER`].
pub fn in_epoch(mut record: Record, epoch: u64) -> Record {
    if epoch == 0 {
        return record;
    }
    let header = crate::idempotency::HEADER;
    if let Some(pos) = record.headers.iter().position(|(n, _)| n == header) {
        let old = record.headers[pos].1.clone();
        let mut new = old.clone();
        new.extend_from_slice(format!("#{epoch}").as_bytes());
        record.headers[pos].1 = new;
        record.headers.push((UPSERT_KEY_HEADER.to_owned(), old));
        record
            .headers
            .push((EPOCH_HEADER.to_owned(), epoch.to_string().into_bytes()));
    }
    record
}

/// The first offset at or after `offset` in `records` (sorted by offset)
/// whose timestamp is at least `time_ms`; used by sources that replay by time.
pub fn first_at_or_after(records: &[LogRecord], time_ms: i64) -> Option<u64> {
    records
        .iter()
        .find(|r| r.record.timestamp_ms >= time_ms)
        .map(|r| r.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_processor_canary_parses_and_is_checked() {
        let base = "[[processor]]\nname = \"p\"\ncomponent = \"p.wasm\"\ninputs = [\"in\"]\noutput = \"out\"\n";
        let c = crate::config::Config::parse(&format!(
            "{base}canary = {{ events = 100, max_error_rate = 0.05 }}\n"
        ))
        .unwrap();
        c.check().unwrap();
        assert_eq!(
            c.processors[0].canary,
            Some(CanaryPlan {
                events: 100,
                max_error_rate: 0.05
            })
        );
        let c = crate::config::Config::parse(&format!(
            "{base}canary = {{ events = 0, max_error_rate = 0.05 }}\n"
        ))
        .unwrap();
        assert!(
            c.check()
                .unwrap_err()
                .contains("canary.events must be at least 1")
        );
        let err = crate::config::Config::parse(&format!(
            "{base}canary = {{ events = 1, max_errors = 0.05 }}\n"
        ))
        .unwrap_err();
        assert!(err.contains("unknown field `max_errors`"), "{err}");
    }

    #[test]
    fn epoch_zero_leaves_outputs_alone_and_later_epochs_rekey_them() {
        let r = Record {
            headers: vec![("idempotency-key".into(), b"k/p/0".to_vec())],
            ..Record::default()
        };
        assert_eq!(in_epoch(r.clone(), 0), r);
        let e = in_epoch(r, 3);
        assert_eq!(
            e.headers,
            vec![
                ("idempotency-key".into(), b"k/p/0#3".to_vec()),
                (UPSERT_KEY_HEADER.into(), b"k/p/0".to_vec()),
                (EPOCH_HEADER.into(), b"3".to_vec()),
            ]
        );
        assert_eq!(&*key_scope("p", 0), "p");
        assert_eq!(&*key_scope("p", 2), "p#2");
    }
}
