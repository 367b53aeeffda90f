//! A shadow: a candidate version fed the same events as the active one,
//! right after it, with its state in a scratch namespace; its outputs are
//! compared record by record and never published.

use std::sync::{Arc, Mutex};

use redb::{Database, ReadableDatabase};
use serde::Serialize;

use super::{ControlStatus, lock};
use crate::db::StorageError;
use crate::processing::outputs::unpublishable;
use crate::processing::{Ending, Handler, PipelineError, state};
use crate::runtime::{Event, EventResult, Output, ProcessError, StateOverlay};

/// Most differences a shadow report keeps as samples.
pub const SHADOW_SAMPLES: usize = 20;

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

/// A shadow in progress: its instance and its state namespace.
pub(super) struct ShadowRun {
    pub(super) handler: Box<dyn Handler>,
    pub(super) namespace: Arc<str>,
}

impl ShadowRun {
    /// Runs the shadow on `events` (those the active version just
    /// processed, in order) and compares its results with the active
    /// version's `endings`, counting into the report in `status`. Returns
    /// the shadow's state writes (scratch namespace), to commit with the batch.
    ///
    /// # Errors
    ///
    /// Storage errors opening the shadow's state snapshot.
    pub(super) fn compare(
        &mut self,
        events: &[Event],
        endings: &[Ending],
        db: &Database,
        status: &Mutex<ControlStatus>,
    ) -> Result<Option<StateOverlay>, PipelineError> {
        if events.is_empty() {
            return Ok(None);
        }
        let snapshot = db.begin_read().map_err(StorageError::from)?;
        let mut state = state::overlay(self.namespace.clone(), snapshot);
        let run = self;
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
        let mut st = lock(status);
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
        Ok(Ok(outputs)) => match unpublishable(outputs) {
            None => describe_outputs(outputs),
            Some(message) => format!("contract: {message}"),
        },
        Ok(Err(ProcessError::Invalid(m))) => format!("invalid: {m}"),
        Ok(Err(ProcessError::Transient(m))) => format!("transient: {m}"),
        Ok(Err(ProcessError::Fatal(m))) => format!("fatal: {m}"),
        Err(e) => e.clone(),
    }
}
