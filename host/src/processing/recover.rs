//! Calling the component for a batch and recovering from what goes wrong:
//! `transient` errors are retried with exponential backoff and jitter; a
//! call that fails as a whole (a trap, a timeout, a limit) is bisected down
//! to the events that cause it, which are dead-lettered. An event whose
//! outputs cannot all be published (a topic name Kafka refuses) ends as a
//! `contract` dead letter: none of its outputs is published.

use std::time::Duration;

use super::handler::Handler;
use super::outputs::unpublishable;
use super::pipeline::{PipelineError, Settings};
use crate::runtime::{CallError, Event, EventResult, Output, ProcessError, StateOverlay};
use crate::streams::Batch;

/// How one processed event ended.
pub enum Ending {
    /// It returned these outputs, every one of them publishable.
    Done(Vec<Output>),
    /// It failed: dead-letter it (or skip it, as `on_error` says).
    DeadLetter {
        /// The error code (`invalid`, `trap`, `timeout`, ...).
        kind: &'static str,
        /// The message.
        message: String,
        /// How many calls were made for it.
        attempts: u32,
    },
}

/// A batch's call into the handler, with its retries and bisection.
pub(super) struct Recovery<'a> {
    /// The processor's settings (retries, backoff).
    pub settings: &'a Settings,
    /// The version being called.
    pub handler: &'a mut dyn Handler,
}

impl Recovery<'_> {
    /// Calls the handler for `events` (the batch's events to process, in
    /// order), retrying transient errors and bisecting failed calls.
    pub(super) fn run_recovering(
        &mut self,
        batch: &Batch,
        events: &[Event],
        state: &mut StateOverlay,
    ) -> Result<Vec<Ending>, PipelineError> {
        let n = events.len();
        let mut endings: Vec<Option<Ending>> = (0..n).map(|_| None).collect();
        let mut attempts = vec![0u32; n];
        let mut pending: Vec<usize> = (0..n).collect();
        let mut round = 0u32;
        while !pending.is_empty() {
            let subset: Vec<Event>;
            let call_events = if pending.len() == n {
                events
            } else {
                subset = pending.iter().map(|&i| events[i].clone()).collect();
                &subset
            };
            let results = self.call_bisecting(call_events, state, 0)?;
            let mut retry = Vec::new();
            for (j, result) in results.into_iter().enumerate() {
                let i = pending[j];
                attempts[i] += 1;
                endings[i] = Some(match result {
                    // All of an event's outputs are published, or none.
                    Ok(Ok(outputs)) => match unpublishable(&outputs) {
                        None => Ending::Done(outputs),
                        Some(message) => Ending::DeadLetter {
                            kind: "contract",
                            message,
                            attempts: attempts[i],
                        },
                    },
                    Ok(Err(ProcessError::Invalid(message))) => Ending::DeadLetter {
                        kind: "invalid",
                        message,
                        attempts: attempts[i],
                    },
                    Ok(Err(ProcessError::Fatal(message))) => {
                        let e = &events[i];
                        return Err(PipelineError::Fatal {
                            processor: self.settings.name.to_string(),
                            version: self.handler.version().to_owned(),
                            topic: e.topic.clone(),
                            partition: e.partition,
                            offset: e.offset,
                            message,
                        });
                    }
                    Ok(Err(ProcessError::Transient(message))) => {
                        if attempts[i] <= self.settings.transient_retries {
                            retry.push(i);
                        }
                        Ending::DeadLetter {
                            kind: "transient",
                            message,
                            attempts: attempts[i],
                        }
                    }
                    Err(e) => Ending::DeadLetter {
                        kind: e.code(),
                        message: e.to_string(),
                        attempts: attempts[i],
                    },
                });
            }
            if !retry.is_empty() {
                let delay = backoff_delay(self.settings.retry_backoff, round, jitter_seed());
                tracing::info!(
                    processor = %self.settings.name, topic = %batch.topic, partition = batch.partition,
                    events = retry.len(), delay_ms = delay.as_millis() as u64,
                    "retrying events that returned transient"
                );
                std::thread::sleep(delay);
                round += 1;
            }
            pending = retry;
        }
        Ok(endings
            .into_iter()
            .map(|e| e.expect("every event ended"))
            .collect())
    }

    /// Calls the handler; when the call fails as a whole, splits the events
    /// in two and calls each half, down to single events, so that only the
    /// events that make it fail are reported as failed. `depth` counts the
    /// splits so far: the first failure of a batch and each event that fails
    /// alone are logged at warn level, the failures between them at debug.
    fn call_bisecting(
        &mut self,
        events: &[Event],
        state: &mut StateOverlay,
        depth: u32,
    ) -> Result<Vec<Result<EventResult, CallError>>, PipelineError> {
        match self.handler.call(events, state) {
            Ok(results) => Ok(results.into_iter().map(Ok).collect()),
            // A fresh instance could not start: no event is to blame.
            Err(e @ (CallError::InitRefused(_) | CallError::InitFailed(_))) => {
                Err(PipelineError::Start {
                    processor: self.settings.name.to_string(),
                    version: self.handler.version().to_owned(),
                    error: e,
                })
            }
            Err(e) if events.len() <= 1 => {
                tracing::warn!(
                    processor = %self.settings.name, version = %self.handler.version(),
                    code = e.code(), error = %e,
                    offset = events.first().map(|e| e.offset),
                    "event failed the component; dead-lettering it"
                );
                Ok(events.iter().map(|_| Err(e.clone())).collect())
            }
            Err(e) => {
                if depth == 0 {
                    tracing::warn!(
                        processor = %self.settings.name, version = %self.handler.version(),
                        code = e.code(), error = %e, events = events.len(),
                        "call failed; bisecting the batch to find the events that cause it"
                    );
                } else {
                    tracing::debug!(
                        processor = %self.settings.name, code = e.code(), error = %e,
                        events = events.len(), depth, "bisection: this part fails too"
                    );
                }
                let (a, b) = events.split_at(events.len() / 2);
                let mut out = self.call_bisecting(a, state, depth + 1)?;
                out.extend(self.call_bisecting(b, state, depth + 1)?);
                Ok(out)
            }
        }
    }
}

/// Longest wait between two retries of a `transient` event.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The wait before retry round `round` (0 first): `base` doubled `round`
/// times, at most [`MAX_BACKOFF`], then "equal jitter": half of it plus a
/// share of the other half chosen by `seed`, so retries of many processors
/// do not fall in step.
pub fn backoff_delay(base: Duration, round: u32, seed: u64) -> Duration {
    let full = base.saturating_mul(1 << round.min(16)).min(MAX_BACKOFF);
    let half = full / 2;
    let span = (full - half).as_nanos() as u64;
    let extra = if span == 0 { 0 } else { seed % (span + 1) };
    half + Duration::from_nanos(extra)
}

/// A random number for jitter (std's per-process random hash keys, no dependency).
fn jitter_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_is_capped() {
        let base = Duration::from_millis(100);
        for round in 0..6 {
            let full = base * (1 << round);
            assert_eq!(backoff_delay(base, round, 0), full / 2);
            assert_eq!(
                backoff_delay(base, round, u64::MAX - 7).max(full / 2),
                backoff_delay(base, round, u64::MAX - 7)
            );
            assert!(backoff_delay(base, round, u64::MAX) <= full);
        }
        // The largest draw of a round is the full delay.
        let full = Duration::from_millis(400);
        let span = (full - full / 2).as_nanos() as u64;
        assert_eq!(backoff_delay(base, 2, span), full);
        assert_eq!(
            backoff_delay(base, 40, u64::MAX).max(MAX_BACKOFF),
            MAX_BACKOFF
        );
        assert!(backoff_delay(base, 40, 0) >= MAX_BACKOFF / 2);
        assert_eq!(backoff_delay(Duration::ZERO, 3, 12345), Duration::ZERO);
    }
}
