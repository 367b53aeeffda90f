//! The processor thread's side of a [`Control`]: applying requests at
//! batch boundaries ([`BatchControl`] for the run loop).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use redb::Database;

use super::canary::{CanaryRun, canary_status};
use super::registry::ReplayRange;
use super::shadow::ShadowRun;
use super::{Control, DeadLetterReplay, Replay, ShadowReport, Swap, lock};
use crate::processing::stats::Counters;
use crate::processing::{BatchControl, Ending, Handler, PipelineError};
use crate::processing::{Settings, dlq, idempotency};
use crate::runtime::{Event, StateOverlay};
use crate::streams::Source;
use crate::streams::embedded::Log;

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
    /// The embedded log and the processor's settings, for replaying its
    /// dead letters; `None` on Kafka.
    dead_letters: Option<(Log, Settings)>,
}

impl Attached {
    /// Attaches `control`, starting in idempotency `epoch` (whose replay
    /// range is read from the registry).
    pub fn new(control: Arc<Control>, epoch: u64) -> Self {
        lock(&control.status).epoch = epoch;
        let scope = idempotency::key_scope(&control.name, epoch);
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
            dead_letters: None,
        }
    }

    /// Lets this processor's thread replay dead letters from `log` (the
    /// embedded log), with the processor's `settings`.
    #[must_use]
    pub fn with_dead_letters(mut self, log: Log, settings: Settings) -> Self {
        self.dead_letters = Some((log, settings));
        self
    }

    /// Replays dead letters as `request` asks, through its version or the
    /// active one (`handler`), and sends back the summary or why it failed.
    fn apply_dead_letter_replay(
        &mut self,
        mut request: DeadLetterReplay,
        handler: &mut Box<dyn Handler>,
    ) {
        let name = &self.control.name;
        let result = match &self.dead_letters {
            None => Err(format!(
                "processor {name:?} reads Kafka; dead letters are replayed from the embedded log only (for now)"
            )),
            Some((log, settings)) => {
                let through: &mut dyn Handler = match request.handler.as_deref_mut() {
                    Some(h) => h,
                    None => handler.as_mut(),
                };
                dlq::replay_with(log, through, settings, &request.selection)
                    .map_err(|e| e.to_string())
            }
        };
        match &result {
            Ok(s) => {
                tracing::info!(processor = %name, version = %s.version, replayed = s.replayed, failed = s.failed, "dead letters replayed")
            }
            Err(e) => tracing::error!(processor = %name, error = %e, "dead-letter replay failed"),
        }
        let _ = request.reply.send(result);
    }

    /// Makes `swap`'s version the active one: the old instance is dropped
    /// now (after its last batch), or kept while a canary judges the new one.
    fn apply_swap(&mut self, swap: Swap, handler: &mut Box<dyn Handler>) {
        let c = self.control.clone();
        let started = std::time::Instant::now();
        let version = swap.handler.version().to_owned();
        let old = std::mem::replace(handler, swap.handler);
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
        // A shadow of the version that just became active would compare it
        // with itself: it ends (its report stays readable).
        if self
            .shadow
            .as_ref()
            .is_some_and(|sh| sh.handler.version() == version)
        {
            self.shadow = None;
            tracing::info!(processor = %c.name, %version, "the shadowed version is active now; the shadow ends");
        }
    }

    /// Starts shadowing with `change`'s handler, or stops (`None`).
    fn apply_shadow_change(&mut self, change: Option<Box<dyn Handler>>) {
        let c = &self.control;
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
    }

    /// Moves `source`'s positions back as `replay` says. A source that
    /// cannot replay refuses; the refusal goes into the status and the
    /// processor goes on.
    ///
    /// # Errors
    ///
    /// Storage errors recording a reprocessing replay's range.
    fn apply_replay(
        &mut self,
        replay: Replay,
        source: &mut dyn Source,
    ) -> Result<(), PipelineError> {
        let c = self.control.clone();
        let ends = match source.rewind(replay.from, replay.epoch) {
            Ok(rewound) => rewound.ranges,
            Err(e) => {
                tracing::error!(processor = %c.name, error = %e, "replay refused");
                lock(&c.status).last_replay_error = Some(e.to_string());
                return Ok(());
            }
        };
        if replay.epoch != self.epoch {
            // A replay with reprocessing: its range is recorded before any
            // of it is processed.
            if let Some(r) = &c.registry {
                let range = ReplayRange {
                    epoch: replay.epoch,
                    ends: ends.clone(),
                };
                r.set_replay_range(&c.name, &range)?;
            }
            self.range_ends = ends_map(&ends);
        }
        self.epoch = replay.epoch;
        self.scope = idempotency::key_scope(&c.name, replay.epoch);
        let mut st = lock(&c.status);
        st.epoch = replay.epoch;
        st.replays += 1;
        st.last_replay_error = None;
        drop(st);
        tracing::info!(processor = %c.name, from = ?replay.from, epoch = replay.epoch, "replaying");
        Ok(())
    }
}

impl Attached {
    /// Takes on an epoch that a replay asked of another host of the group
    /// started, so this host's next reprocessing replay is newer still.
    fn follow_group_epoch(&mut self, source: &dyn Source) {
        let Some(epoch) = source.group_epoch().filter(|e| *e > self.epoch) else {
            return;
        };
        let c = &self.control;
        if let Some(r) = &c.registry
            && let Err(e) = r.raise_epoch(&c.name, epoch)
        {
            tracing::error!(processor = %c.name, error = %e, "cannot record the group's epoch");
        }
        self.epoch = epoch;
        self.scope = idempotency::key_scope(&c.name, epoch);
        lock(&c.status).epoch = epoch;
    }
}

impl BatchControl for Attached {
    /// Applies what was asked since the last batch: a swap, a shadow
    /// change, a replay, a dead-letter replay, in that order. Returns `false` when the processor
    /// is paused (no batch now).
    fn begin_step(
        &mut self,
        handler: &mut Box<dyn Handler>,
        source: &mut dyn Source,
    ) -> Result<bool, PipelineError> {
        let c = self.control.clone();
        self.follow_group_epoch(source);
        if let Some(swap) = lock(&c.pending).take() {
            self.apply_swap(swap, handler);
            c.applied.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(change) = lock(&c.shadow_change).take() {
            self.apply_shadow_change(change);
            c.applied.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(replay) = lock(&c.replay).take() {
            self.apply_replay(replay, source)?;
            c.applied.fetch_add(1, Ordering::SeqCst);
        }
        if let Some(request) = lock(&c.dead_letters).take() {
            self.apply_dead_letter_replay(request, handler);
            c.applied.fetch_add(1, Ordering::SeqCst);
        }
        Ok(!c.paused.load(Ordering::SeqCst))
    }

    /// The scope of idempotency keys for the record at `topic`/`partition`
    /// @`offset`, and the epoch its outputs are stamped with: `<name>#<epoch>`
    /// for a record the current epoch's replay covers (it was there when the
    /// replay started), else the processor's name and epoch 0. So a replay
    /// with reprocessing processes its range again, while an event
    /// redelivered after it is still a duplicate of its first delivery.
    fn scope_for(&self, topic: &str, partition: u32, offset: u64) -> (Arc<str>, u64) {
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

    fn shadow(
        &mut self,
        events: &[Event],
        endings: &[Ending],
        db: &Database,
    ) -> Result<Option<StateOverlay>, PipelineError> {
        match &mut self.shadow {
            Some(run) => run.compare(events, endings, db, &self.control.status),
            None => Ok(None),
        }
    }

    fn after_batch(&mut self, counters: &Counters, handler: &mut Box<dyn Handler>) {
        let Some(run) = &mut self.canary else {
            return;
        };
        if run.count(counters, &self.control) {
            let run = self.canary.take().expect("checked above");
            run.judge(&self.control, handler);
        }
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
