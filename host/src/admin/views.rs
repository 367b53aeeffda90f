//! What the admin API and the console show, one function per view. Each
//! reads redb and the processors' controls once; the JSON API serialises
//! the result and the console renders the very same values, so a page and
//! the API it mirrors agree.

use std::collections::BTreeMap;
use std::path::PathBuf;

use axum::http::StatusCode;
use redb::ReadableDatabase;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Admin, ApiError, Managed};
use crate::control::registry::{Activation, VersionInfo};
use crate::control::{CanaryStatus, ShadowReport};
use crate::db::StorageError;
use crate::processing::dlq::{self, DeadLetter, Replayed};
use crate::processing::idempotency::{self, FirstProcessing};
use crate::processing::stats::{Counters, ProcessorStats};
use crate::streams::LogRecord;
use crate::streams::embedded::PartitionInfo;

/// Most dead letters a listing reads from a dead-letter topic.
pub const MAX_DEAD_LETTERS_SCANNED: usize = 100_000;

/// Most records a topic tail returns.
pub const MAX_TAIL: usize = 500;

impl From<dlq::ReplayError> for ApiError {
    fn from(e: dlq::ReplayError) -> Self {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage", e.to_string())
    }
}

/// One processor: `GET /v1/processors/NAME`, a row of the console's overview.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessorView {
    /// Its name.
    pub name: String,
    /// `running`, `paused` (through the API), `stopped`, `failed: ...`.
    pub state: String,
    /// The version (SHA-256) processing events now.
    pub active_version: String,
    /// The language the active version's `producers` section names, if any.
    pub active_language: Option<String>,
    /// A version handed over and waiting for the next batch boundary.
    pub pending_version: Option<String>,
    /// Whether it is paused.
    pub paused: bool,
    /// Records in its inputs not yet read.
    pub lag: u64,
    /// What it did since the data dir was created.
    pub counters: Counters,
    /// Failures by stable error code, since the data dir was created.
    pub error_codes: BTreeMap<String, u64>,
    /// Swaps applied since the host started.
    pub swaps: u64,
    /// The idempotency epoch in force.
    pub epoch: u64,
    /// Replays applied since the host started.
    pub replays: u64,
    /// The shadow's comparison, if a shadow runs (or ran until its version
    /// became active).
    pub shadow: Option<ShadowReport>,
    /// The canary being watched.
    pub canary: Option<CanaryStatus>,
    /// Why the last canary rolled back, if one did.
    pub last_rollback: Option<String>,
    /// Why the last replay request was refused, if it was.
    pub last_replay_error: Option<String>,
    /// The processor thread's pause for the last swap, in µs.
    pub last_swap_pause_us: u64,
    /// The longest such pause since the host started, in µs.
    pub max_swap_pause_us: u64,
    /// Its input topics.
    pub inputs: Vec<String>,
    /// Its default output topic.
    pub output: String,
    /// Its dead-letter topic.
    pub dead_letter_topic: String,
}

/// A processor's versions: `GET /v1/processors/NAME/versions`.
#[derive(Debug, Clone, Serialize)]
pub struct VersionsView {
    /// The processor.
    pub processor: String,
    /// The active version.
    pub active_version: String,
    /// Every version kept, oldest first, each marked `active` or not.
    pub versions: Vec<VersionRow>,
    /// Every activation, oldest first: which version, when, why.
    pub history: Vec<Activation>,
}

/// One version in [`VersionsView`].
#[derive(Debug, Clone, Serialize)]
pub struct VersionRow {
    /// What the registry keeps of it.
    #[serde(flatten)]
    pub info: VersionInfo,
    /// Whether it is the active one.
    pub active: bool,
}

/// A topic of the embedded log: `GET /v1/topics`.
#[derive(Debug, Clone, Serialize)]
pub struct TopicView {
    /// Its name.
    pub name: String,
    /// Per partition: first offset stored, end offset, bytes.
    pub partitions: Vec<PartitionInfo>,
    /// Records appended over all partitions and still stored.
    pub records: u64,
    /// Retention by age, in ms; `None` keeps records.
    pub retention_ms: Option<u64>,
    /// Retention by size per partition, in bytes; `None` keeps all.
    pub retention_bytes: Option<u64>,
    /// The processors of this host that read it, with their lag in it.
    pub readers: Vec<Reader>,
}

/// A processor reading a topic, in [`TopicView`].
#[derive(Debug, Clone, Serialize)]
pub struct Reader {
    /// The processor.
    pub processor: String,
    /// Its next offset per partition (0 before its first commit).
    pub positions: Vec<u64>,
    /// Records of the topic it has not read.
    pub lag: u64,
}

/// The last records of a topic: `GET /v1/topics/NAME/records`.
#[derive(Debug, Clone, Serialize)]
pub struct TailView {
    /// The topic.
    pub topic: String,
    /// The records, newest (by append time) first.
    pub records: Vec<TailRecord>,
}

/// One record of [`TailView`].
#[derive(Debug, Clone, Serialize)]
pub struct TailRecord {
    /// When it was appended, ms since the Unix epoch.
    pub append_ms: u64,
    /// The record, as `tidewater consume` prints it.
    pub record: Value,
    /// For each processor of this host that reads the topic: what became of it.
    pub processed_by: Vec<ProcessedBy>,
    /// The record itself, for the console.
    #[serde(skip)]
    pub raw: LogRecord,
}

/// Which version processed an input record, and when:
/// `GET /v1/processors/NAME/processed?topic=T&partition=P&offset=O`.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessedBy {
    /// The processor asked about.
    pub processor: String,
    /// The record's topic.
    pub topic: String,
    /// Its partition.
    pub partition: u32,
    /// Its offset.
    pub offset: u64,
    /// Whether the processor has read past it.
    pub read: bool,
    /// The processor's next offset in that partition.
    pub position: u64,
    /// The record's idempotency key, as the processor derives it.
    pub key: Option<Value>,
    /// Why no key could be derived, if none could.
    pub key_error: Option<String>,
    /// The key's first processing in each idempotency scope that has it:
    /// the processor's name, then `<name>#<epoch>` for replays with
    /// reprocessing.
    pub processings: Vec<FirstProcessing>,
    /// The answer in words.
    pub summary: String,
}

/// A processor's dead letters: `GET /v1/processors/NAME/dead-letters`.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLettersView {
    /// The processor.
    pub processor: String,
    /// Its dead-letter topic.
    pub topic: String,
    /// Dead letters read.
    pub total: u64,
    /// Of those, how many of each kind (`tidewater-error-kind`).
    pub kinds: BTreeMap<String, u64>,
    /// The kind asked for, if one was.
    pub kind: Option<String>,
    /// The dead letters of that kind (or all), newest first, at most `limit`.
    pub items: Vec<DeadLetterView>,
    /// Whether the topic held more than [`MAX_DEAD_LETTERS_SCANNED`] records
    /// (the rest was not read).
    pub truncated: bool,
}

/// One dead letter.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetterView {
    /// Its partition in the dead-letter topic.
    pub partition: u32,
    /// Its offset there.
    pub offset: u64,
    /// When it was dead-lettered, ms since the Unix epoch.
    pub append_ms: u64,
    /// Why, as a stable code.
    pub kind: String,
    /// Why, in words.
    pub message: String,
    /// The version that failed on it.
    pub version: String,
    /// Calls made for the event.
    pub attempts: u32,
    /// Whether a replay can change its fate.
    pub replayable: bool,
    /// What a replay made of it, if one did.
    pub replayed: Option<Replayed>,
    /// The event that failed (its topic, partition, offset, key, headers,
    /// value); `None` when the record is not a dead letter tidewater wrote.
    pub original: Option<Value>,
    /// The original event itself, for the console.
    #[serde(skip)]
    pub raw: Option<LogRecord>,
}

impl From<DeadLetter> for DeadLetterView {
    fn from(d: DeadLetter) -> Self {
        DeadLetterView {
            partition: d.dead.partition,
            offset: d.dead.offset,
            append_ms: d.dead.append_ms,
            kind: d.kind,
            message: d.message,
            version: d.version,
            attempts: d.attempts,
            replayable: d.replayable,
            replayed: d.replayed,
            original: d
                .original
                .as_ref()
                .map(|o| serde_json::to_value(o.as_json()).unwrap_or_default()),
            raw: d.original,
        }
    }
}

/// One row of `make compare`'s `target/compare.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CompareRow {
    /// The language.
    pub language: String,
    /// The component's size, in bytes.
    pub wasm_bytes: u64,
    /// A cold compile, in ms.
    pub compile_ms: f64,
    /// A load of the precompiled artefact, in ms.
    pub cached_load_ms: f64,
    /// A median instantiation with `init`, in ms.
    pub instantiate_ms: f64,
    /// Events processed.
    pub events: u64,
    /// Events per second through the pipeline, commits included.
    pub events_per_s: f64,
    /// The 99th percentile of one pipeline step, in ms.
    pub p99_ms: f64,
    /// Events dead-lettered.
    pub dead_lettered: u64,
    /// Whether its outputs and dead-letter count equal Rust's.
    pub identical: bool,
    /// Output records that differ from Rust's.
    pub differing: u64,
}

/// The languages side by side: `GET /v1/compare`.
#[derive(Debug, Clone, Serialize)]
pub struct CompareView {
    /// The report's file.
    pub path: PathBuf,
    /// When it was written, ms since the Unix epoch.
    pub written_ms: u64,
    /// One row per language.
    pub rows: Vec<CompareRow>,
}

impl Admin {
    /// Every processor of this host.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn processors_view(&self) -> Result<Vec<ProcessorView>, ApiError> {
        let stats = crate::processing::stats::read_all(&self.log)?;
        self.processors
            .iter()
            .map(|(n, m)| self.processor_view(n, m, stats.get(n)))
            .collect()
    }

    /// Processor `name`.
    ///
    /// # Errors
    ///
    /// `no-such-processor`; storage errors.
    pub fn one_processor_view(&self, name: &str) -> Result<ProcessorView, ApiError> {
        let m = self.processor(name)?;
        let stats = crate::processing::stats::read_all(&self.log)?;
        self.processor_view(name, m, stats.get(name))
    }

    fn processor_view(
        &self,
        name: &str,
        m: &Managed,
        stats: Option<&ProcessorStats>,
    ) -> Result<ProcessorView, ApiError> {
        let st = m.control.status();
        // A running processor paused through the API is "paused".
        let state = if st.paused && st.state == "running" {
            "paused".to_owned()
        } else {
            st.state.clone()
        };
        let active_language = self
            .registry
            .version(name, &st.active_version)
            .ok()
            .and_then(|v| v.language);
        Ok(ProcessorView {
            name: name.to_owned(),
            state,
            active_language,
            pending_version: st.pending_version,
            paused: st.paused,
            lag: stats.map_or(0, |s| s.lag),
            counters: stats.map(|s| s.counters).unwrap_or_default(),
            error_codes: stats.map(|s| s.error_codes.clone()).unwrap_or_default(),
            swaps: st.swaps,
            epoch: st.epoch,
            replays: st.replays,
            shadow: st.shadow,
            canary: st.canary,
            last_rollback: st.last_rollback,
            last_replay_error: st.last_replay_error,
            last_swap_pause_us: st.last_swap_pause_us,
            max_swap_pause_us: st.max_swap_pause_us,
            active_version: st.active_version,
            inputs: m.inputs.clone(),
            output: m.settings.output.clone(),
            dead_letter_topic: m.settings.dead_letter_topic.clone(),
        })
    }

    /// Processor `name`'s versions and activation history.
    ///
    /// # Errors
    ///
    /// `no-such-processor`; storage errors.
    pub fn versions_view(&self, name: &str) -> Result<VersionsView, ApiError> {
        let m = self.processor(name)?;
        let active = m.control.status().active_version;
        let versions = self
            .registry
            .versions(name)?
            .into_iter()
            .map(|info| VersionRow {
                active: info.sha256 == active,
                info,
            })
            .collect();
        Ok(VersionsView {
            processor: name.to_owned(),
            active_version: active,
            versions,
            history: self.registry.history(name)?,
        })
    }

    /// Every topic of the embedded log, with this host's readers of each.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn topics_view(&self) -> Result<Vec<TopicView>, ApiError> {
        let positions = self.log.positions()?;
        let topics = self.log.topics()?;
        Ok(topics
            .into_iter()
            .map(|t| {
                let readers = self
                    .processors
                    .iter()
                    .filter(|(_, m)| m.inputs.contains(&t.name))
                    .map(|(name, _)| {
                        let at = |p: usize| {
                            positions
                                .iter()
                                .find(|x| {
                                    x.consumer == *name
                                        && x.topic == t.name
                                        && x.partition == p as u32
                                })
                                .map_or(0, |x| x.next_offset)
                        };
                        let positions: Vec<u64> = (0..t.partitions.len()).map(at).collect();
                        let lag = t
                            .partitions
                            .iter()
                            .zip(&positions)
                            .map(|(b, n)| b.end.saturating_sub((*n).max(b.start)))
                            .sum();
                        Reader {
                            processor: name.clone(),
                            positions,
                            lag,
                        }
                    })
                    .collect();
                TopicView {
                    records: t.partitions.iter().map(|p| p.end - p.start).sum(),
                    name: t.name,
                    partitions: t.partitions,
                    retention_ms: t.retention_ms,
                    retention_bytes: t.retention_bytes,
                    readers,
                }
            })
            .collect())
    }

    /// The last `max` records of `topic` (of one `partition`, or of all),
    /// newest first, each with what this host's processors made of it.
    ///
    /// # Errors
    ///
    /// `no-such-topic`, `bad-request` for a partition it does not have;
    /// storage errors.
    pub fn tail_view(
        &self,
        topic: &str,
        max: usize,
        partition: Option<u32>,
    ) -> Result<TailView, ApiError> {
        let info = self
            .log
            .topics()?
            .into_iter()
            .find(|t| t.name == topic)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no-such-topic",
                    format!("there is no topic {topic:?} in the embedded log"),
                )
            })?;
        let n = info.partitions.len() as u32;
        let parts: Vec<u32> = match partition {
            Some(p) if p >= n => {
                return Err(ApiError::bad_request(format!(
                    "topic {topic:?} has no partition {p}: {}",
                    crate::streams::topic::partitions_text(n)
                )));
            }
            Some(p) => vec![p],
            None => (0..n).collect(),
        };
        let max = max.min(MAX_TAIL);
        let mut records = Vec::new();
        for p in parts {
            let b = info.partitions[p as usize];
            let from = b.end.saturating_sub(max as u64).max(b.start);
            records.extend(self.log.read(topic, p, from, max, usize::MAX)?);
        }
        records.sort_by_key(|r| std::cmp::Reverse((r.append_ms, r.offset, r.partition)));
        records.truncate(max);
        let readers: Vec<&String> = self
            .processors
            .iter()
            .filter(|(_, m)| m.inputs.iter().any(|i| i == topic))
            .map(|(n, _)| n)
            .collect();
        let records = records
            .into_iter()
            .map(|r| {
                let processed_by = readers
                    .iter()
                    .map(|name| self.processed_by_record(name, &r))
                    .collect::<Result<_, _>>()?;
                Ok(TailRecord {
                    append_ms: r.append_ms,
                    record: serde_json::to_value(r.as_json()).unwrap_or_default(),
                    processed_by,
                    raw: r,
                })
            })
            .collect::<Result<_, ApiError>>()?;
        Ok(TailView {
            topic: topic.to_owned(),
            records,
        })
    }

    /// Which version of processor `name` processed the record at
    /// `topic`/`partition`@`offset`, and when (see [`ProcessedBy`]).
    ///
    /// # Errors
    ///
    /// `no-such-processor`; `bad-request` when the processor does not read
    /// `topic`; `no-such-record`; storage errors.
    pub fn processed_by(
        &self,
        name: &str,
        topic: &str,
        partition: u32,
        offset: u64,
    ) -> Result<ProcessedBy, ApiError> {
        let m = self.processor(name)?;
        if !m.inputs.iter().any(|i| i == topic) {
            return Err(ApiError::bad_request(format!(
                "processor {name:?} does not read topic {topic:?} (its inputs: {})",
                m.inputs.join(", ")
            )));
        }
        let missing = || {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "no-such-record",
                format!(
                    "there is no record at {topic}/{partition}@{offset} (it was never written, or retention removed it)"
                ),
            )
        };
        if self.log.partitions(topic)?.is_none_or(|n| partition >= n) {
            return Err(missing());
        }
        let record = self
            .log
            .read(topic, partition, offset, 1, usize::MAX)?
            .into_iter()
            .find(|r| r.offset == offset)
            .ok_or_else(missing)?;
        self.processed_by_record(name, &record)
    }

    fn processed_by_record(&self, name: &str, r: &LogRecord) -> Result<ProcessedBy, ApiError> {
        let m = self.processor(name)?;
        let position = self.log.position(name, &r.topic, r.partition)?.unwrap_or(0);
        let mut view = ProcessedBy {
            processor: name.to_owned(),
            topic: r.topic.clone(),
            partition: r.partition,
            offset: r.offset,
            read: r.offset < position,
            position,
            key: None,
            key_error: None,
            processings: Vec::new(),
            summary: String::new(),
        };
        match idempotency::derive(&m.settings.key_mode, r) {
            Err(e) => view.key_error = Some(e.to_string()),
            Ok((key, fingerprint)) => {
                view.key = Some(crate::streams::record::bytes_json(&key));
                let txn = self.log.db().begin_read().map_err(StorageError::from)?;
                for epoch in 0..=m.control.status().epoch {
                    let scope = idempotency::key_scope(name, epoch);
                    if let Some(p) =
                        idempotency::first_processing(&txn, &scope, &key, &fingerprint)?
                    {
                        view.processings.push(p);
                    }
                }
            }
        }
        view.summary = processed_summary(&view, r.append_ms);
        Ok(view)
    }

    /// Processor `name`'s dead letters: every kind counted, those of `kind`
    /// (or all) listed, newest first, at most `limit`.
    ///
    /// # Errors
    ///
    /// `no-such-processor`; storage errors.
    pub fn dead_letters_view(
        &self,
        name: &str,
        kind: Option<&str>,
        limit: usize,
    ) -> Result<DeadLettersView, ApiError> {
        let m = self.processor(name)?;
        let topic = m.settings.dead_letter_topic.clone();
        let (all, truncated) =
            dlq::dead_letters(&self.log, name, &topic, MAX_DEAD_LETTERS_SCANNED)?;
        let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
        for d in &all {
            *kinds.entry(d.kind.clone()).or_default() += 1;
        }
        let total = all.len() as u64;
        let mut items: Vec<DeadLetter> = all
            .into_iter()
            .filter(|d| kind.is_none_or(|k| d.kind == k))
            .collect();
        items.sort_by_key(|d| {
            std::cmp::Reverse((d.dead.append_ms, d.dead.offset, d.dead.partition))
        });
        items.truncate(limit);
        Ok(DeadLettersView {
            processor: name.to_owned(),
            topic,
            total,
            kinds,
            kind: kind.map(str::to_owned),
            items: items.into_iter().map(DeadLetterView::from).collect(),
            truncated,
        })
    }

    /// The dead letter at `partition`/`offset` of processor `name`'s
    /// dead-letter topic.
    ///
    /// # Errors
    ///
    /// `no-such-processor`, `no-such-record`; storage errors.
    pub fn dead_letter_view(
        &self,
        name: &str,
        partition: u32,
        offset: u64,
    ) -> Result<DeadLetterView, ApiError> {
        let m = self.processor(name)?;
        let topic = &m.settings.dead_letter_topic;
        dlq::dead_letter_at(&self.log, name, topic, partition, offset)?
            .map(DeadLetterView::from)
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    "no-such-record",
                    format!("there is no dead letter at {topic}/{partition}@{offset}"),
                )
            })
    }

    /// `make compare`'s report, from `[admin] compare_report`.
    ///
    /// # Errors
    ///
    /// `no-compare-report` when none is configured or the file is not
    /// there yet; `bad-compare-report` when it does not parse.
    pub fn compare_view(&self) -> Result<CompareView, ApiError> {
        let none =
            |message: String| ApiError::new(StatusCode::NOT_FOUND, "no-compare-report", message);
        let path = self.console.compare_report.clone().ok_or_else(|| {
            none("this host has no comparison report configured: run `make compare`, then set [admin] compare_report = \"target/compare.json\" (relative to the config file)".into())
        })?;
        let text = std::fs::read(&path).map_err(|e| {
            none(format!(
                "no comparison report at {} ({e}): run `make compare` to write it",
                path.display()
            ))
        })?;
        let rows: Vec<CompareRow> = serde_json::from_slice(&text).map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "bad-compare-report",
                format!("{} is not a report of `make compare`: {e}", path.display()),
            )
        })?;
        let written_ms = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_millis() as u64);
        Ok(CompareView {
            path,
            written_ms,
            rows,
        })
    }
}

/// [`ProcessedBy::summary`]: the answer in words. `append_ms` is when the
/// record was appended: a key recorded before that was recorded by an
/// earlier record, so this one was a duplicate.
fn processed_summary(v: &ProcessedBy, append_ms: u64) -> String {
    if !v.read {
        return format!(
            "not read yet: {} reads {}/{} from offset {}",
            v.processor, v.topic, v.partition, v.position
        );
    }
    if let Some(e) = &v.key_error {
        return format!(
            "read; it had no idempotency key ({e}), so what became of it is not recorded by key (see the dead letters)"
        );
    }
    let Some(first) = v.processings.first() else {
        return "read; its key is not recorded (it expired after idempotency.ttl and was purged)"
            .into();
    };
    let version = first
        .version
        .as_deref()
        .map_or("an unrecorded version", short);
    let when = crate::admin::views::time_text(first.recorded_ms);
    let mut text = if !first.same_payload {
        format!(
            "a conflict: its key was first {} by version {version} at {when} with another payload, so this record went to the dead-letter topic",
            first.outcome
        )
    } else if first.recorded_ms < append_ms {
        format!(
            "a duplicate: its key was first {} by version {version} at {when}, before this record arrived, so it was skipped",
            first.outcome
        )
    } else {
        format!("{} by version {version} at {when}", first.outcome)
    };
    for again in &v.processings[1..] {
        let version = again
            .version
            .as_deref()
            .map_or("an unrecorded version", short);
        text.push_str(&format!(
            "; {} again in {} by version {version} at {}",
            again.outcome,
            again.scope,
            time_text(again.recorded_ms)
        ));
    }
    text
}

/// The first 12 hex digits of a SHA-256: enough to tell versions apart.
pub fn short(sha: &str) -> &str {
    &sha[..sha.len().min(12)]
}

/// A time in ms since the Unix epoch as RFC 3339 UTC with milliseconds,
/// e.g. `2026-11-30T12:00:00.123Z`.
pub fn time_text(ms: u64) -> String {
    chrono::DateTime::from_timestamp_millis(ms as i64).map_or_else(
        || ms.to_string(),
        |t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
    )
}
