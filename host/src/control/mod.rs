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
//!   its outputs carry [`idempotency::UPSERT_KEY_HEADER`] and
//!   [`idempotency::EPOCH_HEADER`].
//!
//! - [`registry`]: versions (uploaded components), validation, activation
//!   history, epochs.
//! - `attached`: the processor thread's side ([`Attached`]).
//! - `shadow`, `canary`: their runs and reports.

mod attached;
mod canary;
pub mod registry;
mod shadow;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;

pub use attached::Attached;
pub use canary::CanaryStatus;
pub use registry::Registry;
pub use shadow::{Difference, SHADOW_SAMPLES, ShadowReport};

pub use crate::processing::config::CanaryPlan;
#[cfg(doc)]
use crate::processing::idempotency;
use crate::processing::{Handler, dlq};
pub use crate::streams::ReplayFrom;

/// A version ready to run: instantiated, `init` done.
pub struct Swap {
    /// The handler to run from the next batch on.
    pub handler: Box<dyn Handler>,
    /// Why (`activate`, `rollback`, `watch`), for the history.
    pub reason: String,
    /// Watch its first events and roll back if too many fail.
    pub canary: Option<CanaryPlan>,
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

/// A request to replay dead letters, served by the processor's own thread
/// between two batches (see [`crate::processing::dlq::replay_with`]).
pub struct DeadLetterReplay {
    /// The version to replay through (instantiated, `init` done); `None`:
    /// the active one.
    pub handler: Option<Box<dyn Handler>>,
    /// Which dead letters.
    pub selection: dlq::Selection,
    /// Where the summary, or why it failed, goes.
    pub reply: tokio::sync::oneshot::Sender<Result<dlq::ReplaySummary, String>>,
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

/// The requests for one processor, written by the admin side and read by
/// the processor's thread at each batch boundary.
pub struct Control {
    name: Arc<str>,
    registry: Option<Registry>,
    pending: Mutex<Option<Swap>>,
    shadow_change: Mutex<Option<Option<Box<dyn Handler>>>>,
    replay: Mutex<Option<Replay>>,
    dead_letters: Mutex<Option<DeadLetterReplay>>,
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
            dead_letters: Mutex::default(),
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

    /// Asks the processor's thread to replay dead letters at the next
    /// batch boundary (paused or not); the summary comes through
    /// `request.reply`. Hands the request back when one is still waiting.
    ///
    /// # Errors
    ///
    /// The request itself, when another one is waiting.
    pub fn request_dead_letter_replay(
        &self,
        request: DeadLetterReplay,
    ) -> Result<(), DeadLetterReplay> {
        let mut slot = lock(&self.dead_letters);
        if slot.is_some() {
            return Err(request);
        }
        *slot = Some(request);
        drop(slot);
        self.notify();
        Ok(())
    }

    /// Whether the processor is paused (or to be, at the next batch boundary).
    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Records how the processor's thread ended (`stopped`, `failed: ...`).
    /// A dead-letter replay still waiting is dropped then: its caller hears
    /// that the processor stopped.
    pub fn set_state(&self, state: &str) {
        lock(&self.status).state = state.to_owned();
        if state != "running" {
            lock(&self.dead_letters).take();
        }
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
