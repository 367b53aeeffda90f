//! The run loop of one processor.
//!
//! Per batch (one input partition at a time), [`Pipeline::step`]:
//! 1. **read** up to `batch.max_records` events from the [`Source`];
//! 2. **classify** them by their idempotency keys: new, duplicate (skipped),
//!    conflict (dead-lettered) and unkeyed;
//! 3. **call** the component once for the new events ([`Handler`]): a trap,
//!    timeout or memory breach discards the instance and the batch is
//!    bisected until the poison events are found and dead-lettered;
//!    `transient` errors are retried with exponential backoff;
//! 4. **commit**, in ONE redb write transaction: mark the keys, apply the
//!    state writes, hand the outputs and dead letters to the [`Sink`],
//!    record the source position and add the counters.
//!
//! On the embedded log the sink appends inside that transaction, so a batch's
//! effects are all there or none is: processing is exactly-once even across
//! a SIGKILL. Outputs are a pure function of the inputs (their timestamps are
//! the input's), so a restart reproduces them byte for byte.
//!
//! On Kafka, keys and state are scoped per input partition
//! ([`idempotency::partition_scope`]) and every change of a batch also goes
//! to the sink ([`Sink::record_change`]), which writes it to the partition's
//! changelog in the Kafka transaction it commits before the redb one
//! ([`Sink::flush`]); expired keys of the batch's partition are removed in
//! the same two transactions (tombstones in the changelog).
//!
//! Every output carries an `idempotency-key` header:
//! `<input key>/<processor>/<index of the output>`, so the next processor
//! downstream deduplicates it with no configuration.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, WriteTransaction};

use super::classify::{Fate, classify};
use super::config::{OnError, ProcessorConfig, Unkeyed};
use super::dlq::dead_letter;
use super::handler::{Handler, Recycles};
use super::idempotency::{self, KeyMode, KeyRecord, Outcome};
use super::outputs::{output_record, to_event};
use super::recover::{Ending, Recovery};
use super::state::ApplyState;
use super::stats::{self, Counters, ErrorCodes};
use crate::db::{StorageError, now_ms};
use crate::runtime::{CallError, Event, StateOverlay};
use crate::streams::{Batch, Change, ChangeKind, LogRecord, Record, Sink, Source, StreamError};

/// The most expired keys (and as many conflicts) removed with one batch of a
/// partition; the rest go with the next batches.
const EXPIRE_PER_BATCH: usize = 4096;

/// Why a processor stopped.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// The component returned `fatal` for an event.
    #[error(
        "processor {processor} (version {version}) returned fatal at {topic}/{partition}@{offset}: {message}"
    )]
    Fatal {
        /// The processor.
        processor: String,
        /// The component's SHA-256.
        version: String,
        /// Input topic of the event.
        topic: String,
        /// Its partition.
        partition: u32,
        /// Its offset.
        offset: u64,
        /// What the component said.
        message: String,
    },
    /// The component could not be started again (its `init` failed).
    #[error("processor {processor} (version {version}) cannot start: {error}")]
    Start {
        /// The processor.
        processor: String,
        /// The component's SHA-256.
        version: String,
        /// Why.
        error: CallError,
    },
    /// The source or the sink (the embedded log, Kafka) failed.
    #[error(transparent)]
    Stream(#[from] StreamError),
    /// redb failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

macro_rules! pipeline_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for PipelineError {
            fn from(e: $t) -> Self {
                PipelineError::Storage(e.into())
            }
        }
    )*};
}
pipeline_from_redb!(redb::TransactionError, redb::CommitError);

/// The settings of one processor's run loop.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The processor's name.
    pub name: Arc<str>,
    /// Where outputs without a topic go.
    pub output: String,
    /// Where failed events go.
    pub dead_letter_topic: String,
    /// Most events per batch.
    pub max_batch_records: usize,
    /// Most bytes per batch.
    pub max_batch_bytes: usize,
    /// How keys are derived.
    pub key_mode: KeyMode,
    /// How long keys are kept.
    pub key_ttl: Duration,
    /// What to do without a key.
    pub unkeyed: Unkeyed,
    /// Retries of a `transient` event.
    pub transient_retries: u32,
    /// First retry delay; doubles each retry.
    pub retry_backoff: Duration,
    /// Whether idempotency keys are derived and checked at all (off only in benchmarks).
    pub deduplicate: bool,
    /// What to do with an event the component fails on.
    pub on_error: OnError,
}

impl Settings {
    /// The settings of `p`.
    ///
    /// # Errors
    ///
    /// When its key mode does not parse.
    pub fn from_config(p: &ProcessorConfig) -> Result<Self, String> {
        Ok(Settings {
            name: p.name.as_str().into(),
            output: p.output.clone(),
            dead_letter_topic: p.dead_letter_topic(),
            max_batch_records: p.batch.max_records,
            max_batch_bytes: p.batch.max_bytes,
            key_mode: p.key_mode()?,
            key_ttl: p.idempotency.ttl,
            unkeyed: p.idempotency.unkeyed,
            transient_retries: p.limits.transient_retries,
            retry_backoff: p.limits.retry_backoff,
            deduplicate: true,
            on_error: p.on_error,
        })
    }
}

/// What changes a processor between its batches: hot swap, pause, shadow,
/// canary and replay ([`crate::control`] implements it). Call order per
/// step: [`BatchControl::begin_step`]; if a batch is read,
/// [`BatchControl::scope_for`] for each record, [`BatchControl::shadow`]
/// once its events were called, and [`BatchControl::after_batch`] once it
/// committed.
pub trait BatchControl: Send {
    /// Applies what was asked since the last batch (a new version into
    /// `handler`, a shadow, a replay through `source`). Returns `false` when
    /// the processor is paused: no batch now.
    ///
    /// # Errors
    ///
    /// Storage errors recording what was applied.
    fn begin_step(
        &mut self,
        handler: &mut Box<dyn Handler>,
        source: &mut dyn Source,
    ) -> Result<bool, PipelineError>;

    /// The idempotency scope of the record at `topic`/`partition`@`offset`
    /// and the epoch its outputs are stamped with.
    fn scope_for(&self, topic: &str, partition: u32, offset: u64) -> (Arc<str>, u64);

    /// Runs a shadow version, if one is set, on `events` (those the active
    /// version just processed, in order), compares its results with
    /// `endings`, and returns its state writes to commit with the batch.
    ///
    /// # Errors
    ///
    /// Storage errors opening the shadow's state snapshot.
    fn shadow(
        &mut self,
        events: &[Event],
        endings: &[Ending],
        db: &Database,
    ) -> Result<Option<StateOverlay>, PipelineError>;

    /// Told what a committed batch counted (a canary judges it); may put
    /// another version into `handler`.
    fn after_batch(&mut self, counters: &Counters, handler: &mut Box<dyn Handler>);
}

/// One processor's run loop: a source, a handler, a sink, and the database
/// that holds its keys, state and counters.
pub struct Pipeline {
    settings: Settings,
    db: Arc<Database>,
    source: Box<dyn Source>,
    sink: Box<dyn Sink>,
    handler: Box<dyn Handler>,
    control: Option<Box<dyn BatchControl>>,
    /// Partitions stopped by `on_error = "halt-partition"`, until restart.
    halted: HashSet<(String, u32)>,
    /// [`Handler::log_dropped`] as last counted.
    log_dropped_counted: u64,
}

/// What the component made of a batch, ready to commit.
struct Called {
    fates: Vec<Fate>,
    endings: Vec<Ending>,
    state: StateOverlay,
    shadow_state: Option<StateOverlay>,
}

impl Pipeline {
    /// A run loop over the given parts.
    pub fn new(
        settings: Settings,
        db: Arc<Database>,
        source: Box<dyn Source>,
        sink: Box<dyn Sink>,
        handler: Box<dyn Handler>,
    ) -> Self {
        Pipeline {
            settings,
            db,
            source,
            sink,
            handler,
            control: None,
            halted: HashSet::new(),
            log_dropped_counted: 0,
        }
    }

    /// Puts this run loop under `control` (hot swap, pause, shadow, canary,
    /// replay: see [`crate::control`]).
    pub fn attach(&mut self, control: Box<dyn BatchControl>) {
        self.control = Some(control);
    }

    /// The processor's name.
    pub fn name(&self) -> &Arc<str> {
        &self.settings.name
    }

    /// Whether the source has read everything available.
    pub fn caught_up(&self) -> bool {
        self.source.caught_up()
    }

    /// What the source has left to read, in words ([`Source::behind`]).
    pub fn behind(&self) -> Option<String> {
        self.source.behind()
    }

    /// The version being run.
    pub fn version(&self) -> &str {
        self.handler.version()
    }

    /// Processes one batch, if one is waiting, and commits its effects:
    /// read → classify → call → commit. Returns what it counted, or `None`
    /// when there was nothing to read (or the processor is paused, or the
    /// batch's partition halted).
    ///
    /// # Errors
    ///
    /// [`PipelineError::Fatal`] when the component gave up (nothing of the
    /// batch was committed); [`PipelineError::Start`]; stream and storage errors.
    pub fn step(&mut self) -> Result<Option<Counters>, PipelineError> {
        let Some(batch) = self.read()? else {
            return Ok(None);
        };
        // Keys are looked up and recorded in the scope of the record's
        // idempotency epoch: a replay with reprocessing has its own, for the
        // records it covers. Each record's scope and epoch, once per batch.
        let scopes = self.scopes(&batch);
        let snapshot = self.db.begin_read()?;
        let mut counters = Counters {
            events_in: batch.records.len() as u64,
            ..Counters::default()
        };
        let fates = classify(&self.settings, &batch, &scopes, &snapshot, &mut counters)?;
        let state = super::state::overlay(self.state_scope(&batch), snapshot);
        let recycles = self.handler.recycles();
        let Some(called) = self.call(&batch, fates, state)? else {
            return Ok(None);
        };
        self.count_recycles(recycles, &mut counters);
        let Some(counters) = self.commit(&batch, &scopes, called, counters)? else {
            return Ok(None);
        };
        if let Some(c) = &mut self.control {
            c.after_batch(&counters, &mut self.handler);
        }
        Ok(Some(counters))
    }

    /// Applies control requests, then polls the source; `None` when paused,
    /// when nothing is waiting, or when the batch's partition is halted.
    fn read(&mut self) -> Result<Option<Batch>, PipelineError> {
        if let Some(c) = &mut self.control
            && !c.begin_step(&mut self.handler, self.source.as_mut())?
        {
            return Ok(None);
        }
        let s = &self.settings;
        let polled = self.source.poll(s.max_batch_records, s.max_batch_bytes);
        self.count_restores()?;
        let Some(batch) = polled? else {
            return Ok(None);
        };
        Ok((!self.is_halted(&batch)).then_some(batch))
    }

    /// Adds the source's restores since the last poll to the counters.
    fn count_restores(&mut self) -> Result<(), PipelineError> {
        let Some(r) = self.source.take_restored() else {
            return Ok(());
        };
        let counters = Counters {
            restores: r.partitions,
            restored_records: r.records,
            restore_ms: r.ms,
            ..Counters::default()
        };
        let txn = self.db.begin_write()?;
        stats::add_in(&txn, &self.settings.name, &counters)?;
        txn.commit().map_err(StorageError::from)?;
        Ok(())
    }

    /// Each record's idempotency scope and epoch: per partition when the
    /// source says so (Kafka), with the partition's reprocessing replay;
    /// else as the control says (the processor's, or its replay epoch's).
    fn scopes(&self, batch: &Batch) -> Vec<(Arc<str>, u64)> {
        let name = &self.settings.name;
        if let Some(replay) = self.source.partition_scope(&batch.topic, batch.partition) {
            let (topic, partition) = (&batch.topic, batch.partition);
            let base = idempotency::partition_scope(name, topic, partition, 0);
            let replayed = idempotency::partition_scope(name, topic, partition, replay.epoch);
            return batch
                .records
                .iter()
                .map(|rec| {
                    if replay.epoch > 0 && rec.offset < replay.end {
                        (replayed.clone(), replay.epoch)
                    } else {
                        (base.clone(), 0)
                    }
                })
                .collect();
        }
        batch
            .records
            .iter()
            .map(|rec| match &self.control {
                Some(c) => c.scope_for(&rec.topic, rec.partition, rec.offset),
                None => (name.clone(), 0),
            })
            .collect()
    }

    /// The scope of the state `batch`'s events see: its partition's on
    /// Kafka, else the processor's.
    fn state_scope(&self, batch: &Batch) -> Arc<str> {
        let name = &self.settings.name;
        match self.source.partition_scope(&batch.topic, batch.partition) {
            Some(_) => idempotency::partition_scope(name, &batch.topic, batch.partition, 0),
            None => name.clone(),
        }
    }

    /// Calls the component (and the shadow) for the events `fates` says to
    /// process. `None` when `on_error = "halt-partition"` halted the partition.
    fn call(
        &mut self,
        batch: &Batch,
        fates: Vec<Fate>,
        mut state: StateOverlay,
    ) -> Result<Option<Called>, PipelineError> {
        let events: Vec<Event> = batch
            .records
            .iter()
            .zip(&fates)
            .filter(|(_, f)| matches!(f, Fate::Process { .. }))
            .map(|(r, _)| to_event(r))
            .collect();
        tracing::debug!(processor = %self.settings.name, events = events.len(), "calling the component");
        let endings = Recovery {
            settings: &self.settings,
            handler: self.handler.as_mut(),
        }
        .run_recovering(batch, &events, &mut state)?;
        if self.settings.on_error == OnError::HaltPartition
            && self.halt_if_failed(batch, &events, &endings)?
        {
            return Ok(None);
        }
        let shadow_state = match &mut self.control {
            Some(c) => c.shadow(&events, &endings, &self.db)?,
            None => None,
        };
        Ok(Some(Called {
            fates,
            endings,
            state,
            shadow_state,
        }))
    }

    /// Commits the batch's effects: builds its redb transaction, flushes the
    /// sink (on Kafka: the outputs, the changelog and the offsets, in a Kafka
    /// transaction), then commits the redb transaction and tells the
    /// source. Returns the batch's counters, or `None` when the sink
    /// abandoned the batch (its partition moved away; nothing committed).
    fn commit(
        &mut self,
        batch: &Batch,
        scopes: &[(Arc<str>, u64)],
        called: Called,
        counters: Counters,
    ) -> Result<Option<Counters>, PipelineError> {
        let s = &self.settings;
        let now = now_ms();
        let txn = self.db.begin_write()?;
        let changelog = self.sink.keeps_changelog();
        let mut effects = Effects {
            txn: &txn,
            settings: s,
            version: self.handler.version(),
            sink: self.sink.as_mut(),
            counters,
            codes: ErrorCodes::new(),
            now,
            expires_ms: now.saturating_add(s.key_ttl.as_millis() as u64),
            changelog: changelog.then(|| (batch.topic.clone(), batch.partition)),
            output: Arc::from(s.output.as_str()),
            dead_letter_topic: Arc::from(s.dead_letter_topic.as_str()),
            published: Vec::with_capacity(batch.records.len()),
            marks: Vec::with_capacity(batch.records.len()),
        };
        let mut endings = called.endings.into_iter();
        for ((rec, fate), (scope, epoch)) in batch.records.iter().zip(called.fates).zip(scopes) {
            match fate {
                Fate::Duplicate => effects.counters.duplicates += 1,
                Fate::Conflict { key, fingerprint } => {
                    effects.conflict(rec, scope, *epoch, &key, &fingerprint)?;
                }
                Fate::NoKey(reason) => effects.unkeyed(rec, &reason)?,
                Fate::Process { key, fingerprint } => {
                    let ending = endings.next().expect("one ending per processed event");
                    let outcome = effects.ended(rec, &key, *epoch, ending)?;
                    if let Some(fingerprint) = fingerprint {
                        effects.mark(scope, *epoch, key, fingerprint, outcome);
                    }
                }
            }
        }
        effects.publish_and_mark()?;
        if changelog {
            effects.expire(batch, now)?;
        }
        let Effects {
            counters,
            mut codes,
            ..
        } = effects;
        let dropped = self.count_log_drops(&mut codes);
        let (state_scope, writes) = called.state.into_writes();
        super::state::apply_writes_in(&txn, &state_scope, &writes)?;
        if changelog {
            for (key, value) in writes {
                let change = Change {
                    kind: ChangeKind::State,
                    epoch: 0,
                    key,
                    value,
                };
                self.sink
                    .record_change(&batch.topic, batch.partition, change);
            }
        }
        if let Some(shadow) = called.shadow_state {
            shadow.apply_in(&txn)?;
        }
        match self.sink.flush(batch) {
            Ok(()) => {}
            Err(StreamError::Abandoned { reason, .. }) => {
                tracing::info!(processor = %s.name, topic = %batch.topic, partition = batch.partition, %reason, "batch abandoned; its events go to the partition's owner");
                return Ok(None);
            }
            Err(e) => return Err(e.into()),
        }
        self.source.commit_in(&txn, batch)?;
        stats::add_in(&txn, &s.name, &counters)?;
        stats::add_codes_in(&txn, &s.name, &codes)?;
        txn.commit().map_err(StorageError::from)?;
        self.log_dropped_counted = dropped;
        self.source.committed(batch)?;
        tracing::debug!(
            processor = %s.name, topic = %batch.topic, partition = batch.partition,
            next_offset = batch.next_offset(), events = counters.events_in,
            "batch committed"
        );
        Ok(Some(counters))
    }

    /// Counts the component's log lines dropped since the last batch under
    /// `log-rate-limit`; returns the handler's total.
    fn count_log_drops(&self, codes: &mut ErrorCodes) -> u64 {
        let dropped = self.handler.log_dropped();
        if dropped > self.log_dropped_counted {
            let n = dropped - self.log_dropped_counted;
            tracing::warn!(processor = %self.settings.name, code = "log-rate-limit", lines = n, "log lines dropped by the rate limit");
            *codes.entry("log-rate-limit").or_default() += n;
        }
        dropped
    }

    /// Counts the instances the handler discarded since `before` (taken
    /// before this batch's calls; control swaps handlers only between
    /// batches, so both are the same handler's).
    fn count_recycles(&self, before: Recycles, counters: &mut Counters) {
        let now = self.handler.recycles();
        counters.recycled += now.total.saturating_sub(before.total);
        counters.recycled_memory_limit += now.memory_limit.saturating_sub(before.memory_limit);
    }
}

/// The effects of one batch, written into its transaction as they are
/// decided, and what they count.
struct Effects<'a> {
    txn: &'a WriteTransaction,
    settings: &'a Settings,
    version: &'a str,
    sink: &'a mut dyn Sink,
    counters: Counters,
    codes: ErrorCodes,
    now: u64,
    expires_ms: u64,
    /// The batch's (topic, partition) when the sink keeps a changelog.
    changelog: Option<(String, u32)>,
    /// The settings' output and dead-letter topics, shared by the records
    /// published to them.
    output: Arc<str>,
    dead_letter_topic: Arc<str>,
    /// Outputs and dead letters in order, published together at the end.
    published: Vec<(Arc<str>, Record)>,
    /// Keys to record, in order, recorded together at the end.
    marks: Vec<Mark>,
}

/// A key to record as processed: its scope, epoch, key and record.
struct Mark {
    scope: Arc<str>,
    epoch: u64,
    key: Vec<u8>,
    record: KeyRecord,
}

impl Effects<'_> {
    /// Hands `change` to the sink's changelog, if it keeps one.
    fn record(&mut self, kind: ChangeKind, epoch: u64, key: Vec<u8>, value: Option<Vec<u8>>) {
        if let Some((topic, partition)) = &self.changelog {
            let change = Change {
                kind,
                epoch,
                key,
                value,
            };
            self.sink.record_change(topic, *partition, change);
        }
    }

    /// Removes keys and conflicts of the batch's partition (every epoch)
    /// that expired before `now`, up to [`EXPIRE_PER_BATCH`], recording a
    /// tombstone for each.
    fn expire(&mut self, batch: &Batch, now: u64) -> Result<(), PipelineError> {
        let range =
            idempotency::partition_scope_range(&self.settings.name, &batch.topic, batch.partition);
        for (scope, expired) in
            idempotency::expired_in_range(self.txn, &range, now, EXPIRE_PER_BATCH)?
        {
            let epoch = scope
                .rsplit_once('#')
                .and_then(|(_, e)| e.parse().ok())
                .unwrap_or(0);
            idempotency::remove_expired_in(self.txn, &scope, &expired)?;
            for key in expired.keys {
                self.record(ChangeKind::Key, epoch, key, None);
            }
            for (key, fp) in expired.conflicts {
                let mut k = key;
                k.extend_from_slice(&fp);
                self.record(ChangeKind::Conflict, epoch, k, None);
            }
        }
        Ok(())
    }

    /// Dead-letters `rec`, a second payload for an idempotency key, and
    /// remembers the conflict so the same payload again is a duplicate.
    fn conflict(
        &mut self,
        rec: &LogRecord,
        scope: &str,
        epoch: u64,
        key: &[u8],
        fingerprint: &[u8; 16],
    ) -> Result<(), PipelineError> {
        self.counters.conflicts += 1;
        let message = format!(
            "idempotency key {} was first seen with a different payload",
            String::from_utf8_lossy(key)
        );
        self.dead_letter(rec, "duplicate-key-different-payload", &message, 0)?;
        idempotency::mark_conflict_in(self.txn, scope, key, fingerprint, self.expires_ms)?;
        if self.changelog.is_some() {
            let k = super::changes::conflict_key(key, fingerprint);
            let v = self.expires_ms.to_be_bytes().to_vec();
            self.record(ChangeKind::Conflict, epoch, k, Some(v));
        }
        Ok(())
    }

    /// Dead-letters `rec`, whose key could not be derived.
    fn unkeyed(&mut self, rec: &LogRecord, reason: &str) -> Result<(), PipelineError> {
        let message = format!(
            "no idempotency key ({} mode): {reason}",
            self.settings.key_mode
        );
        self.dead_letter(rec, "no-idempotency-key", &message, 0)
    }

    /// Publishes what the component made of `rec` (its outputs, in `epoch`;
    /// or a dead letter; or nothing, under `on_error = "skip"`).
    fn ended(
        &mut self,
        rec: &LogRecord,
        key: &[u8],
        epoch: u64,
        ending: Ending,
    ) -> Result<Outcome, PipelineError> {
        let s = self.settings;
        match ending {
            Ending::Done(outputs) => {
                self.counters.outputs += outputs.len() as u64;
                for (i, out) in outputs.into_iter().enumerate() {
                    let topic = match &out.topic {
                        Some(t) => Arc::from(t.as_str()),
                        None => self.output.clone(),
                    };
                    let record =
                        idempotency::in_epoch(output_record(rec, out, key, &s.name, i), epoch);
                    self.published.push((topic, record));
                }
                Ok(Outcome::Processed)
            }
            Ending::DeadLetter {
                kind,
                message,
                attempts,
            } if s.on_error == OnError::Skip => {
                self.counters.errors += 1;
                self.counters.skipped += 1;
                *self.codes.entry(kind).or_default() += 1;
                tracing::warn!(
                    processor = %s.name, version = %self.version, code = kind,
                    topic = %rec.topic, partition = rec.partition, offset = rec.offset,
                    attempts, error = %message, "event skipped (on_error = skip)"
                );
                Ok(Outcome::Skipped)
            }
            Ending::DeadLetter {
                kind,
                message,
                attempts,
            } => {
                self.counters.errors += 1;
                self.dead_letter(rec, kind, &message, attempts)?;
                Ok(Outcome::DeadLettered)
            }
        }
    }

    /// Publishes `rec` to the dead-letter topic with the reason, counted
    /// under `kind`.
    fn dead_letter(
        &mut self,
        rec: &LogRecord,
        kind: &'static str,
        message: &str,
        attempts: u32,
    ) -> Result<(), PipelineError> {
        self.counters.dead_lettered += 1;
        *self.codes.entry(kind).or_default() += 1;
        let s = self.settings;
        let dl = dead_letter(rec, kind, message, &s.name, self.version, attempts);
        self.published.push((self.dead_letter_topic.clone(), dl));
        Ok(())
    }

    /// Notes `key` to be recorded as processed (with `outcome`) by this
    /// version, at [`Effects::publish_and_mark`].
    fn mark(
        &mut self,
        scope: &Arc<str>,
        epoch: u64,
        key: Vec<u8>,
        fingerprint: [u8; 16],
        outcome: Outcome,
    ) {
        let record = KeyRecord {
            fingerprint,
            recorded_ms: self.now,
            expires_ms: self.expires_ms,
            outcome,
        };
        self.marks.push(Mark {
            scope: scope.clone(),
            epoch,
            key,
            record,
        });
    }

    /// Publishes the batch's outputs and dead letters, in order, and records
    /// its keys with this version, each table opened once; hands each newly
    /// recorded key to the changelog.
    fn publish_and_mark(&mut self) -> Result<(), PipelineError> {
        let published = std::mem::take(&mut self.published);
        self.sink.publish_all_in(self.txn, &published)?;
        let marks = std::mem::take(&mut self.marks);
        let entries: Vec<_> = marks
            .iter()
            .map(|m| (&*m.scope, m.key.as_slice(), m.record))
            .collect();
        let marked = idempotency::mark_all_in(self.txn, &entries, self.version)?;
        if self.changelog.is_some() {
            for (m, marked) in marks.into_iter().zip(marked) {
                if marked {
                    let value = super::changes::key_value(&m.record, self.version);
                    self.record(ChangeKind::Key, m.epoch, m.key, Some(value));
                }
            }
        }
        Ok(())
    }
}

impl Pipeline {
    fn is_halted(&self, batch: &Batch) -> bool {
        !self.halted.is_empty()
            && self
                .halted
                .contains(&(batch.topic.clone(), batch.partition))
    }

    /// `on_error = "halt-partition"`: when an event of `batch` failed, stops
    /// its partition (nothing of the batch is committed), records where and
    /// why for `stats`, and returns true.
    fn halt_if_failed(
        &mut self,
        batch: &Batch,
        events: &[Event],
        endings: &[Ending],
    ) -> Result<bool, PipelineError> {
        let Some((event, kind, message)) =
            events.iter().zip(endings).find_map(|(e, end)| match end {
                Ending::DeadLetter { kind, message, .. } => Some((e, *kind, message)),
                Ending::Done(_) => None,
            })
        else {
            return Ok(false);
        };
        let s = &self.settings;
        tracing::error!(
            processor = %s.name, version = %self.handler.version(), code = kind,
            topic = %event.topic, partition = event.partition, offset = event.offset,
            error = %message, "partition halted (on_error = halt-partition); the other partitions go on"
        );
        let halt = stats::Halt {
            topic: event.topic.clone(),
            partition: event.partition,
            offset: event.offset,
            reason: format!("{kind}: {message}"),
        };
        stats::record_halt(&self.db, &s.name, &halt, kind)?;
        self.halted.insert((batch.topic.clone(), batch.partition));
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::EventResult;
    use crate::streams::Record;
    use crate::streams::embedded::{EmbeddedSink, EmbeddedSource, Log};

    /// Traps on its first call; after that its instances cannot start.
    struct BrokenRestart {
        calls: u32,
    }

    impl Handler for BrokenRestart {
        fn version(&self) -> &str {
            "broken-restart"
        }

        fn call(
            &mut self,
            _events: &[Event],
            _state: &mut StateOverlay,
        ) -> Result<Vec<EventResult>, CallError> {
            self.calls += 1;
            Err(match self.calls {
                1 => CallError::Trap("wasm trap: wasm `unreachable` instruction executed".into()),
                _ => CallError::InitFailed(Box::new(CallError::Timeout { deadline_ms: 5000 })),
            })
        }
    }

    #[test]
    fn an_instance_that_cannot_restart_blames_no_event() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        let log = Log::new(db.clone(), 1);
        let records = (0..4).map(|i| Record {
            value: Some(vec![i]),
            ..Record::default()
        });
        log.append("in", records).unwrap();
        let config: ProcessorConfig = toml::from_str(
            "name = \"p\"\ncomponent = \"p.wasm\"\ninputs = [\"in\"]\noutput = \"out\"\n",
        )
        .unwrap();
        let settings = Settings::from_config(&config).unwrap();
        let mut pipeline = Pipeline::new(
            settings,
            db.clone(),
            Box::new(EmbeddedSource::new(
                log.clone(),
                "p".into(),
                vec!["in".into()],
            )),
            Box::new(EmbeddedSink::new(1)),
            Box::new(BrokenRestart { calls: 0 }),
        );
        let err = pipeline.step().unwrap_err();
        assert_eq!(
            err.to_string(),
            "processor p (version broken-restart) cannot start: init failed: call exceeded its deadline of 5000 ms"
        );
        // Nothing dead-lettered, nothing committed: the batch waits for a working version.
        assert_eq!(log.partitions("p.dlq").unwrap(), None);
        assert_eq!(log.position("p", "in", 0).unwrap(), Some(0));
    }
}
