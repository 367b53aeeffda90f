//! A canary: a new version judged on its first N processed events; the
//! previous one comes back if too many of them failed.

use serde::Serialize;

use super::{Control, lock};
use crate::processing::Handler;
use crate::processing::config::CanaryPlan;
use crate::processing::stats::Counters;

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

/// A canary in progress: the version it replaced (kept until judged) and
/// what the new one did so far.
pub(super) struct CanaryRun {
    pub(super) previous: Box<dyn Handler>,
    pub(super) version: String,
    pub(super) events: u64,
    pub(super) errors: u64,
    pub(super) plan: CanaryPlan,
}

impl CanaryRun {
    /// Adds a committed batch's `counters` (duplicates and conflicts are
    /// not the new version's doing). Returns whether the canary has seen
    /// enough events to be judged.
    pub(super) fn count(&mut self, counters: &Counters, control: &Control) -> bool {
        self.events += counters
            .events_in
            .saturating_sub(counters.duplicates + counters.conflicts);
        self.errors += counters.errors;
        if self.events < self.plan.events {
            lock(&control.status).canary = Some(canary_status(self));
            return false;
        }
        true
    }

    /// Passes the canary, or swaps the previous version back into `handler`
    /// when the new one failed too often, recording why in the registry.
    pub(super) fn judge(self, control: &Control, handler: &mut Box<dyn Handler>) {
        let c = control;
        let rate = self.errors as f64 / self.events.max(1) as f64;
        let mut st = lock(&c.status);
        st.canary = None;
        if rate <= self.plan.max_error_rate {
            tracing::info!(processor = %c.name, version = %self.version, events = self.events, errors = self.errors, "canary passed");
            return;
        }
        let reason = format!(
            "canary rollback: {} of its first {} events failed ({:.1}%, the limit is {:.1}%)",
            self.errors,
            self.events,
            rate * 100.0,
            self.plan.max_error_rate * 100.0
        );
        let previous = self.previous.version().to_owned();
        drop(std::mem::replace(handler, self.previous));
        st.active_version = previous.clone();
        st.swaps += 1;
        st.last_rollback = Some(reason.clone());
        drop(st);
        tracing::warn!(processor = %c.name, version = %self.version, %previous, %reason, "canary rolled back");
        if let Some(r) = &c.registry {
            let recorded = r
                .record_rollback_reason(&c.name, &self.version, &reason)
                .and_then(|()| r.record_activation(&c.name, &previous, &reason));
            if let Err(e) = recorded {
                tracing::error!(processor = %c.name, error = %e, "cannot record the canary rollback");
            }
        }
    }
}

/// What the API shows of `run`.
pub(super) fn canary_status(run: &CanaryRun) -> CanaryStatus {
    CanaryStatus {
        version: run.version.clone(),
        events: run.events,
        errors: run.errors,
        plan: run.plan,
    }
}
