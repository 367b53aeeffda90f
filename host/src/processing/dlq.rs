//! The dead-letter topic: what a dead letter is ([`dead_letter`],
//! [`dlq_headers`]), reading dead letters back, and replaying them
//! through a (fixed) component, exactly once (`tidewater dlq replay`).
//!
//! A dead letter is the original record (key, value, headers byte for byte)
//! with the [`dlq_headers`] appended. A replay strips those headers, gives
//! the original event (its topic, partition and offset as they were) to the
//! component, and publishes its outputs as the run loop would have: to the
//! processor's output topic, stamped with the input's timestamp and the
//! `idempotency-key` header derived from the input's key. Its state writes
//! apply to the processor's state.
//!
//! What became of each dead letter is recorded by its position in the
//! dead-letter topic, in the same redb transaction as the outputs and state:
//!
//! - replayed: never replayed again, by any version;
//! - failed again with version V (`invalid`, a trap, a limit...): not
//!   replayed again with V, but with another version it is;
//! - `transient` after the retries: nothing is recorded; the next replay tries again.
//!
//! So replaying twice with the same version does nothing the second time,
//! and a crash in the middle loses or repeats nothing. Dead letters that no
//! code can fix (`duplicate-key-different-payload`, `no-idempotency-key`)
//! are left alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use super::config::ProcessorConfig;
use super::handler::{Handler, WasmHandler};
use super::idempotency;
use super::outputs::{output_record, to_event};
use super::pipeline::Settings;
use super::recover::backoff_delay;
use super::state::{self, ApplyState};
use crate::db::{StorageError, now_ms};
use crate::runtime::{
    CallError, Event, EventResult, LoadError, ProcessError, Runtime, StateOverlay,
};
use crate::streams::LogRecord;
use crate::streams::embedded::{Log, LogError, append_in};

pub use crate::streams::dead_letter::{dead_letter, dlq_headers};

/// (processor, dead-letter topic, partition, offset) → postcard [`Replayed`]
const REPLAYED: TableDefinition<(&str, &str, u32, u64), &[u8]> =
    TableDefinition::new("dlq.replayed");

/// Dead-letter kinds that a new version of the code cannot change.
const NOT_REPLAYABLE: [&str; 2] = ["duplicate-key-different-payload", "no-idempotency-key"];

/// The component file a replay uses: the one given with `--component`, else
/// the processor's configured component. The one place that decides which
/// code replays (a version registry resolves `--version` here).
pub fn component_for(processor: &ProcessorConfig, component: Option<&Path>) -> PathBuf {
    component.map_or_else(|| processor.component.clone(), Path::to_owned)
}

/// What a replay did to one dead letter, kept per dead-letter position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    /// The SHA-256 of the component that replayed it.
    pub version: String,
    /// When, in ms since the Unix epoch (wall clock).
    pub at_ms: u64,
    /// `None`: replayed, its outputs published. `Some`: failed again, with
    /// `<error code>: <message>`.
    pub failed: Option<String>,
}

/// What a replay did, in dead letters.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ReplaySummary {
    /// The processor.
    pub processor: String,
    /// Its dead-letter topic.
    pub topic: String,
    /// The component's SHA-256.
    pub version: String,
    /// Dead letters read.
    pub dead_letters: u64,
    /// Replayed now, their outputs published.
    pub replayed: u64,
    /// Records published by those.
    pub outputs: u64,
    /// Failed again now (recorded; not retried with this version).
    pub failed: u64,
    /// Returned `transient` after the retries (not recorded; tried again next time).
    pub transient: u64,
    /// Replayed before, or failed before with this version: left alone.
    pub already_done: u64,
    /// Conflicts and events without a key: no code can fix them.
    pub not_replayable: u64,
}

/// Why a replay stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplayError {
    /// The component could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The component could not start (its `init` failed).
    #[error("processor {processor}: {error}")]
    Start {
        /// The processor.
        processor: String,
        /// Why.
        error: CallError,
    },
    /// The component returned `fatal`; what was replayed before is committed.
    #[error(
        "processor {processor} returned fatal replaying {topic}/{partition}@{offset}: {message}"
    )]
    Fatal {
        /// The processor.
        processor: String,
        /// The dead-letter topic.
        topic: String,
        /// The dead letter's partition.
        partition: u32,
        /// The dead letter's offset.
        offset: u64,
        /// What the component said.
        message: String,
    },
    /// A setting of the processor is invalid.
    #[error("processor {processor}: {message}")]
    Config {
        /// The processor.
        processor: String,
        /// Why.
        message: String,
    },
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// redb failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

macro_rules! replay_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for ReplayError {
            fn from(e: $t) -> Self {
                ReplayError::Storage(e.into())
            }
        }
    )*};
}
replay_from_redb!(
    redb::TransactionError,
    redb::CommitError,
    redb::TableError,
    redb::StorageError
);

/// The [`dlq_headers`] in the order [`dead_letter`] appends them.
const OURS: [&str; 8] = [
    dlq_headers::KIND,
    dlq_headers::MESSAGE,
    dlq_headers::PROCESSOR,
    dlq_headers::VERSION,
    dlq_headers::ATTEMPTS,
    dlq_headers::TOPIC,
    dlq_headers::PARTITION,
    dlq_headers::OFFSET,
];

/// The dead letter's original headers and the values of the
/// [`dlq_headers`] at their end; `None` when they are not there in order.
fn split_headers(dead: &LogRecord) -> Option<(&[crate::streams::record::Header], Vec<&str>)> {
    let headers = &dead.record.headers;
    let split = headers.len().checked_sub(OURS.len())?;
    let (theirs, ours) = headers.split_at(split);
    if ours.iter().map(|(n, _)| n.as_str()).ne(OURS) {
        return None;
    }
    let values = ours
        .iter()
        .map(|(_, v)| std::str::from_utf8(v).ok())
        .collect::<Option<Vec<&str>>>()?;
    Some((theirs, values))
}

/// The original event of a dead letter: the [`dlq_headers`] taken off the
/// end of its headers, its topic, partition and offset read from them.
/// `None` when `dead` is not a dead letter tidewater wrote.
pub fn original(dead: &LogRecord) -> Option<LogRecord> {
    let (theirs, ours) = split_headers(dead)?;
    let mut record = dead.record.clone();
    record.headers = theirs.to_vec();
    Some(LogRecord {
        topic: ours[5].to_owned(),
        partition: ours[6].parse().ok()?,
        offset: ours[7].parse().ok()?,
        append_ms: dead.append_ms,
        record,
    })
}

/// One record of a dead-letter topic, read back with what a replay made of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The record as the dead-letter topic holds it (its topic, partition
    /// and offset are the dead letter's position).
    pub dead: LogRecord,
    /// The event that failed (see [`original`]); `None` when the record is
    /// not a dead letter tidewater wrote.
    pub original: Option<LogRecord>,
    /// Why, in a stable code (`tidewater-error-kind`); empty when unknown.
    pub kind: String,
    /// The message (`tidewater-error-message`).
    pub message: String,
    /// The version that failed on it (`tidewater-version`).
    pub version: String,
    /// Calls made for the event (`tidewater-attempts`).
    pub attempts: u32,
    /// Whether a new version can change its fate: not for conflicts, events
    /// without a key, or records tidewater did not write.
    pub replayable: bool,
    /// What a replay made of it, if one did.
    pub replayed: Option<Replayed>,
}

/// The dead letters of `processor` in `topic`, partition by partition, in
/// offset order, reading at most `max_records` (the rest is left unread;
/// `truncated` says so).
///
/// # Errors
///
/// Log and storage errors.
pub fn dead_letters(
    log: &Log,
    processor: &str,
    topic: &str,
    max_records: usize,
) -> Result<(Vec<DeadLetter>, bool), ReplayError> {
    let Some(info) = log.topics()?.into_iter().find(|t| t.name == topic) else {
        return Ok((Vec::new(), false));
    };
    let mut out = Vec::new();
    let mut truncated = false;
    'partitions: for (partition, bounds) in info.partitions.iter().enumerate() {
        let mut next = bounds.start;
        while next < bounds.end {
            if out.len() >= max_records {
                truncated = true;
                break 'partitions;
            }
            let chunk = log.read(topic, partition as u32, next, 1024, 8 << 20)?;
            let Some(last) = chunk.last() else { break };
            next = last.offset + 1;
            let room = max_records - out.len();
            out.extend(chunk.into_iter().take(room));
        }
    }
    Ok((describe(log, processor, out)?, truncated))
}

/// The dead letter at `partition`/`offset` of `topic`, if there is one.
///
/// # Errors
///
/// Log and storage errors.
pub fn dead_letter_at(
    log: &Log,
    processor: &str,
    topic: &str,
    partition: u32,
    offset: u64,
) -> Result<Option<DeadLetter>, ReplayError> {
    if log.partitions(topic)?.is_none_or(|n| partition >= n) {
        return Ok(None);
    }
    let record = log
        .read(topic, partition, offset, 1, usize::MAX)?
        .into_iter()
        .find(|r| r.offset == offset);
    Ok(describe(log, processor, record.into_iter().collect())?.pop())
}

/// Reads each dead letter's headers and replay record.
fn describe(
    log: &Log,
    processor: &str,
    records: Vec<LogRecord>,
) -> Result<Vec<DeadLetter>, ReplayError> {
    let snapshot = log.db().begin_read()?;
    let done = match snapshot.open_table(REPLAYED) {
        Ok(t) => Some(t),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::with_capacity(records.len());
    for dead in records {
        let ours = split_headers(&dead).map(|(_, o)| o);
        let field = |i: usize| ours.as_ref().map_or("", |o| o[i]).to_owned();
        let kind = field(0);
        let replayed = match &done {
            Some(t) => t
                .get((processor, dead.topic.as_str(), dead.partition, dead.offset))?
                .and_then(|v| postcard::from_bytes::<Replayed>(v.value()).ok()),
            None => None,
        };
        let original = original(&dead);
        out.push(DeadLetter {
            replayable: original.is_some() && !NOT_REPLAYABLE.contains(&kind.as_str()),
            message: field(1),
            version: field(3),
            attempts: field(4).parse().unwrap_or(0),
            kind,
            original,
            replayed,
            dead,
        });
    }
    Ok(out)
}

/// Which dead letters a replay takes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Selection {
    /// Every dead letter in the topic.
    #[default]
    All,
    /// Only these, by (partition, offset) in the dead-letter topic.
    Positions(std::collections::BTreeSet<(u32, u64)>),
}

impl Selection {
    fn takes(&self, partition: u32, offset: u64) -> bool {
        match self {
            Selection::All => true,
            Selection::Positions(p) => p.contains(&(partition, offset)),
        }
    }
}

/// Replays the dead letters of `processor` (its `dead_letter_topic`)
/// through the component at `component`, with the processor's config,
/// limits and key mode; see the module docs. Blocking: call it off the
/// async runtime.
///
/// # Errors
///
/// [`ReplayError`]: the component does not load or start, it returned
/// `fatal` (what was replayed before that is committed), storage errors.
pub fn replay(
    log: &Log,
    runtime: Arc<Runtime>,
    processor: &ProcessorConfig,
    component: &Path,
) -> Result<ReplaySummary, ReplayError> {
    let name: Arc<str> = processor.name.as_str().into();
    let config_error = |message: String| ReplayError::Config {
        processor: processor.name.clone(),
        message,
    };
    let settings = Settings::from_config(processor).map_err(config_error)?;
    let loaded = Arc::new(runtime.load(component)?);
    let mut handler = WasmHandler::new(
        runtime,
        loaded,
        name,
        processor.limits.runtime_limits(),
        processor.init_config(),
    )
    .map_err(|error| ReplayError::Start {
        processor: processor.name.clone(),
        error,
    })?;
    replay_with(log, &mut handler, &settings, &Selection::All)
}

/// Replays the `selection` of the dead letters in `settings`'
/// dead-letter topic through `handler`, with the bookkeeping of the module
/// docs. A running host calls this on the processor's own thread between
/// two batches (so no batch of the processor commits state meanwhile);
/// `tidewater dlq replay` while no host runs.
///
/// # Errors
///
/// As [`replay`], but for loading.
pub fn replay_with(
    log: &Log,
    handler: &mut dyn Handler,
    settings: &Settings,
    selection: &Selection,
) -> Result<ReplaySummary, ReplayError> {
    let topic = settings.dead_letter_topic.clone();
    let mut summary = ReplaySummary {
        processor: settings.name.to_string(),
        topic: topic.clone(),
        version: handler.version().to_owned(),
        ..ReplaySummary::default()
    };
    let Some(info) = log.topics()?.into_iter().find(|t| t.name == topic) else {
        return Ok(summary);
    };
    for (partition, bounds) in info.partitions.iter().enumerate() {
        let partition = partition as u32;
        let mut next = bounds.start;
        while next < bounds.end {
            let chunk = log.read(
                &topic,
                partition,
                next,
                settings.max_batch_records,
                settings.max_batch_bytes,
            )?;
            let Some(last) = chunk.last() else { break };
            next = last.offset + 1;
            let chunk: Vec<LogRecord> = chunk
                .into_iter()
                .filter(|r| r.offset < bounds.end && selection.takes(r.partition, r.offset))
                .collect();
            if !chunk.is_empty() {
                replay_chunk(log, handler, settings, &chunk, &mut summary)?;
            }
        }
    }
    Ok(summary)
}

/// Replays one chunk of dead letters in one transaction.
fn replay_chunk(
    log: &Log,
    handler: &mut dyn Handler,
    settings: &Settings,
    chunk: &[LogRecord],
    summary: &mut ReplaySummary,
) -> Result<(), ReplayError> {
    let name = &*settings.name;
    let version = handler.version().to_owned();
    let snapshot = log.db().begin_read()?;
    let mut todo: Vec<(&LogRecord, LogRecord)> = Vec::new();
    {
        let done = match snapshot.open_table(REPLAYED) {
            Ok(t) => Some(t),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        };
        for dead in chunk {
            summary.dead_letters += 1;
            // The kind is the one our headers at the end name (the original
            // may carry a header of the same name).
            let kind = split_headers(dead).map_or("", |(_, ours)| ours[0]);
            let Some(orig) = original(dead) else {
                summary.not_replayable += 1;
                continue;
            };
            if NOT_REPLAYABLE.contains(&kind) {
                summary.not_replayable += 1;
                continue;
            }
            let before = match &done {
                Some(t) => t
                    .get((name, dead.topic.as_str(), dead.partition, dead.offset))?
                    .and_then(|v| postcard::from_bytes::<Replayed>(v.value()).ok()),
                None => None,
            };
            match before {
                Some(r) if r.failed.is_none() || r.version == version => summary.already_done += 1,
                _ => todo.push((dead, orig)),
            }
        }
    }
    if todo.is_empty() {
        return Ok(());
    }
    let events: Vec<_> = todo.iter().map(|(_, orig)| to_event(orig)).collect();
    let mut state = state::overlay(settings.name.clone(), snapshot);
    let results = call_each_on_failure(handler, &events, &mut state, settings)?;
    let txn = log.db().begin_write()?;
    {
        let mut table = txn.open_table(REPLAYED)?;
        for ((dead, orig), result) in todo.iter().zip(results) {
            let failed = match result {
                Ok(Ok(outputs)) => {
                    let key = idempotency::derive(&settings.key_mode, orig)
                        .map_or_else(|_| idempotency::offset_key(orig), |(k, _)| k);
                    summary.outputs += outputs.len() as u64;
                    for (i, out) in outputs.into_iter().enumerate() {
                        let to = out.topic.clone().unwrap_or_else(|| settings.output.clone());
                        let record = output_record(orig, out, &key, name, i);
                        append_in(&txn, &to, None, &record, log.default_partitions())?;
                    }
                    summary.replayed += 1;
                    None
                }
                Ok(Err(ProcessError::Fatal(message))) => {
                    return Err(ReplayError::Fatal {
                        processor: name.to_owned(),
                        topic: dead.topic.clone(),
                        partition: dead.partition,
                        offset: dead.offset,
                        message,
                    });
                }
                Ok(Err(ProcessError::Transient(message))) => {
                    tracing::warn!(processor = name, offset = dead.offset, code = "transient", error = %message, "dead letter still transient; the next replay tries again");
                    summary.transient += 1;
                    continue;
                }
                Ok(Err(ProcessError::Invalid(message))) => Some(format!("invalid: {message}")),
                Err(e) => Some(format!("{}: {e}", e.code())),
            };
            if let Some(reason) = &failed {
                tracing::warn!(processor = name, topic = %dead.topic, partition = dead.partition, offset = dead.offset, error = %reason, "dead letter failed again");
                summary.failed += 1;
            }
            let record = Replayed {
                version: version.clone(),
                at_ms: now_ms(),
                failed,
            };
            let bytes = postcard::to_allocvec(&record).unwrap_or_default();
            table.insert(
                (name, dead.topic.as_str(), dead.partition, dead.offset),
                bytes.as_slice(),
            )?;
        }
    }
    state.apply_in(&txn)?;
    txn.commit()?;
    Ok(())
}

/// Calls the handler on `events`; when the call fails as a whole, calls it
/// on each event alone, so that only the events that make it fail fail.
/// `transient` results are retried as `limits.transient_retries` says.
fn call_each_on_failure(
    handler: &mut dyn Handler,
    events: &[Event],
    state: &mut StateOverlay,
    settings: &Settings,
) -> Result<Vec<Result<EventResult, CallError>>, ReplayError> {
    let start_error = |e: CallError| ReplayError::Start {
        processor: settings.name.to_string(),
        error: e,
    };
    let mut results: Vec<Result<EventResult, CallError>> = match handler.call(events, state) {
        Ok(r) => r.into_iter().map(Ok).collect(),
        Err(e @ (CallError::InitRefused(_) | CallError::InitFailed(_))) => {
            return Err(start_error(e));
        }
        Err(_) => {
            let mut out = Vec::with_capacity(events.len());
            for e in events {
                out.push(match handler.call(std::slice::from_ref(e), state) {
                    Ok(mut r) => Ok(r.remove(0)),
                    Err(e @ (CallError::InitRefused(_) | CallError::InitFailed(_))) => {
                        return Err(start_error(e));
                    }
                    Err(e) => Err(e),
                });
            }
            out
        }
    };
    for round in 0..settings.transient_retries {
        let retry: Vec<usize> = (0..results.len())
            .filter(|&i| matches!(results[i], Ok(Err(ProcessError::Transient(_)))))
            .collect();
        if retry.is_empty() {
            break;
        }
        std::thread::sleep(backoff_delay(settings.retry_backoff, round, now_ms()));
        for i in retry {
            results[i] = match handler.call(std::slice::from_ref(&events[i]), state) {
                Ok(mut r) => Ok(r.remove(0)),
                Err(e) => Err(e),
            };
        }
    }
    Ok(results)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::streams::Record;

    #[test]
    fn original_takes_off_exactly_the_dead_letter_headers() {
        let input = LogRecord {
            topic: "in".into(),
            partition: 3,
            offset: 912,
            append_ms: 5,
            record: Record {
                timestamp_ms: -7,
                key: Some(vec![0xff]),
                value: None,
                headers: vec![
                    ("a".into(), vec![0xfe]),
                    ("a".into(), vec![]),
                    // A header of ours in the original is kept.
                    (dlq_headers::KIND.into(), b"theirs".to_vec()),
                ],
            },
        };
        let dead = LogRecord {
            topic: "p.dlq".into(),
            partition: 0,
            offset: 4,
            append_ms: 9,
            record: dead_letter(&input, "trap", "boom", "p", "abc", 1),
        };
        let back = original(&dead).unwrap();
        assert_eq!(back.record, input.record);
        assert_eq!(
            (back.topic.as_str(), back.partition, back.offset),
            ("in", 3, 912)
        );
        let mut plain = dead.clone();
        plain.record.headers.truncate(3);
        assert_eq!(original(&plain), None);
    }

    #[test]
    fn the_flag_wins_over_the_config() {
        let p: ProcessorConfig = toml::from_str(
            "name = \"p\"\ncomponent = \"old.wasm\"\ninputs = [\"in\"]\noutput = \"out\"\n",
        )
        .unwrap();
        let p = &p;
        assert_eq!(component_for(p, None), Path::new("old.wasm"));
        assert_eq!(
            component_for(p, Some(Path::new("fixed.wasm"))),
            Path::new("fixed.wasm")
        );
    }
}
