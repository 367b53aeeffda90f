//! Events/s and lag over the last minutes: a sample of every processor's
//! counters every [`SAMPLE_INTERVAL`], the last [`SAMPLES_KEPT`] kept in
//! memory (`GET /v1/rates`, the console's live charts). Nothing of it is
//! durable: a restarted host starts a new series.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;

use super::Admin;

/// How often the counters are sampled.
pub const SAMPLE_INTERVAL: Duration = Duration::from_secs(1);
/// How many samples are kept: five minutes' worth.
pub const SAMPLES_KEPT: usize = 300;

/// One processor at one sample.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Point {
    /// Events read since the data dir was created.
    pub events_in: u64,
    /// Events read per second since the sample before (0 for the first).
    pub events_per_s: f64,
    /// Records in its inputs not yet read.
    pub lag: u64,
}

/// Every processor at one time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Sample {
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// By processor name.
    pub processors: BTreeMap<String, Point>,
}

/// The samples kept, oldest first, and a signal for each new one.
pub struct Rates {
    samples: Mutex<VecDeque<Sample>>,
    tick: tokio::sync::watch::Sender<u64>,
}

impl Default for Rates {
    fn default() -> Self {
        Rates {
            samples: Mutex::new(VecDeque::with_capacity(SAMPLES_KEPT)),
            tick: tokio::sync::watch::Sender::new(0),
        }
    }
}

impl Rates {
    /// The samples kept, oldest first.
    pub fn samples(&self) -> Vec<Sample> {
        lock(&self.samples).iter().cloned().collect()
    }

    /// A receiver that changes with every new sample.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.tick.subscribe()
    }

    /// Adds `sample`, computing each processor's events/s from the one
    /// before, and drops the oldest beyond [`SAMPLES_KEPT`].
    pub fn push(&self, mut sample: Sample) {
        let mut samples = lock(&self.samples);
        if let Some(before) = samples.back() {
            let dt_s = sample.at_ms.saturating_sub(before.at_ms) as f64 / 1000.0;
            for (name, p) in &mut sample.processors {
                if let Some(b) = before.processors.get(name)
                    && dt_s > 0.0
                {
                    p.events_per_s = p.events_in.saturating_sub(b.events_in) as f64 / dt_s;
                }
            }
        }
        if samples.len() == SAMPLES_KEPT {
            samples.pop_front();
        }
        samples.push_back(sample);
        drop(samples);
        self.tick.send_modify(|n| *n += 1);
    }
}

/// Samples `admin`'s processors every [`SAMPLE_INTERVAL`] until aborted.
pub(super) async fn sample_forever(admin: Arc<Admin>) {
    let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        let a = admin.clone();
        let sample = tokio::task::spawn_blocking(move || take_sample(&a)).await;
        match sample {
            Ok(Ok(s)) => admin.rates.push(s),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot sample the counters"),
            Err(e) => tracing::warn!(error = %e, "the sampling task failed"),
        }
    }
}

fn take_sample(admin: &Admin) -> Result<Sample, crate::streams::embedded::LogError> {
    let stats = crate::processing::stats::read_all(&admin.log)?;
    let processors = admin
        .processors
        .keys()
        .map(|name| {
            let s = stats.get(name);
            let point = Point {
                events_in: s.map_or(0, |s| s.counters.events_in),
                events_per_s: 0.0,
                lag: s.map_or(0, |s| s.lag),
            };
            (name.clone(), point)
        })
        .collect();
    Ok(Sample {
        at_ms: crate::db::now_ms(),
        processors,
    })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, events_in: u64, lag: u64) -> Sample {
        Sample {
            at_ms,
            processors: [(
                "p".to_owned(),
                Point {
                    events_in,
                    events_per_s: 0.0,
                    lag,
                },
            )]
            .into(),
        }
    }

    #[test]
    fn rates_come_from_the_sample_before_and_old_samples_go() {
        let r = Rates::default();
        let rx = r.subscribe();
        r.push(sample(1_000, 10, 5));
        r.push(sample(3_000, 110, 0));
        let s = r.samples();
        assert_eq!(s[0].processors["p"].events_per_s, 0.0);
        assert_eq!(s[1].processors["p"].events_per_s, 50.0);
        assert_eq!(*rx.borrow(), 2);
        for i in 0..SAMPLES_KEPT as u64 {
            r.push(sample(4_000 + i * 1000, 110, 0));
        }
        let s = r.samples();
        assert_eq!(s.len(), SAMPLES_KEPT);
        assert_eq!(s[0].at_ms, 4_000);
    }
}
