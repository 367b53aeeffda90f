//! The run loop of one processor.
//!
//! Per batch (one input partition at a time):
//! 1. read up to `batch.max_records` events from the [`Source`];
//! 2. derive each event's idempotency key and sort the events into new,
//!    duplicate (skipped), conflict (dead-lettered) and unkeyed;
//! 3. call the component once for the new events ([`Handler`]): a trap,
//!    timeout or memory breach discards the instance and the batch is
//!    bisected until the poison events are found and dead-lettered;
//!    `transient` errors are retried with exponential backoff;
//! 4. in ONE redb write transaction: mark the keys, apply the state writes,
//!    hand the outputs and dead letters to the [`Sink`], record the source
//!    position and add the counters.
//!
//! On the embedded log the sink appends inside that transaction, so a batch's
//! effects are all there or none is: processing is exactly-once even across
//! a SIGKILL. Outputs are a pure function of the inputs (their timestamps are
//! the input's), so a restart reproduces them byte for byte.
//!
//! Every output carries an `idempotency-key` header:
//! `<input key>/<processor>/<index of the output>`, so the next processor
//! downstream deduplicates it with no configuration.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use redb::{Database, ReadableDatabase, WriteTransaction};

use crate::config::{OnError, ProcessorConfig, Unkeyed};
use crate::db::{StorageError, now_ms};
use crate::idempotency::{self, KeyMode, KeyRecord, Outcome, Verdict};
use crate::log::{Log, LogError, LogRecord, Record};
use crate::runtime::{
    CallError, Event, EventResult, Instance, Limits, LoadedComponent, Output, ProcessError, Runtime,
};
use crate::state::StateOverlay;
use crate::stats::{self, Counters};

/// Header names on dead-lettered records (the original headers come first,
/// unchanged).
pub mod dlq_headers {
    /// Why: `invalid`, `trap`, `timeout`, `memory-limit`, `transient`,
    /// `contract`, `output-count-limit`, `output-bytes-limit`,
    /// `state-key-limit`, `state-value-limit`, `state-bytes-limit`,
    /// `duplicate-key-different-payload`, `no-idempotency-key`.
    pub const KIND: &str = "tidewater-error-kind";
    /// The error message or trap text.
    pub const MESSAGE: &str = "tidewater-error-message";
    /// The processor's name.
    pub const PROCESSOR: &str = "tidewater-processor";
    /// The SHA-256 of the component version that failed.
    pub const VERSION: &str = "tidewater-version";
    /// How many calls were made for the event.
    pub const ATTEMPTS: &str = "tidewater-attempts";
    /// The input topic.
    pub const TOPIC: &str = "tidewater-source-topic";
    /// The input partition.
    pub const PARTITION: &str = "tidewater-source-partition";
    /// The input offset.
    pub const OFFSET: &str = "tidewater-source-offset";
}

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
    /// The stream (e.g. Kafka) failed.
    #[error("stream: {0}")]
    Stream(String),
    /// The log failed.
    #[error(transparent)]
    Log(#[from] LogError),
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

/// A batch of events from one partition.
#[derive(Debug, Clone)]
pub struct Batch {
    /// The topic.
    pub topic: String,
    /// The partition.
    pub partition: u32,
    /// The events, in offset order.
    pub records: Vec<LogRecord>,
}

impl Batch {
    /// The offset to read next once this batch is done.
    pub fn next_offset(&self) -> u64 {
        self.records.last().map_or(0, |r| r.offset + 1)
    }
}

/// Where a processor's events come from.
///
/// Call order per batch: [`Source::poll`], then [`Source::commit_in`] with the
/// transaction that commits the batch's effects, then, once that transaction
/// is durable and the [`Sink`] has flushed, [`Source::committed`]. A batch
/// whose transaction did not commit is delivered again (at-least-once
/// delivery; the idempotency keys make its effect happen once).
pub trait Source: Send {
    /// The next batch of at most `max_records` events and about `max_bytes`
    /// bytes, from one partition, or `None` when nothing is waiting.
    ///
    /// # Errors
    ///
    /// When the source cannot be read.
    fn poll(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Option<Batch>, PipelineError>;

    /// Records, inside `txn`, that `batch` is done.
    ///
    /// # Errors
    ///
    /// Storage errors.
    fn commit_in(&mut self, txn: &WriteTransaction, batch: &Batch) -> Result<(), PipelineError>;

    /// Told that the transaction holding `batch`'s effects is durable and
    /// its outputs are published (Kafka commits the offsets here).
    ///
    /// # Errors
    ///
    /// When the source cannot record the commit.
    fn committed(&mut self, batch: &Batch) -> Result<(), PipelineError>;

    /// Whether everything available has been read (for `run --until-idle`).
    fn caught_up(&self) -> bool {
        true
    }

    /// Moves every partition's position back (or forward) to `from`, durably,
    /// so the next [`Source::poll`] reads from there (a replay); never past
    /// the current position. Returns, per partition, (topic, partition, the
    /// position before the rewind): the replay covers the records below it.
    ///
    /// # Errors
    ///
    /// When the source cannot seek; by default, it cannot.
    fn rewind(
        &mut self,
        from: crate::control::ReplayFrom,
    ) -> Result<Vec<(String, u32, u64)>, PipelineError> {
        let _ = from;
        Err(PipelineError::Stream(
            "this source cannot replay (only the embedded log can)".into(),
        ))
    }
}

/// Where a processor's outputs and dead letters go.
///
/// [`Sink::publish_in`] is called inside the transaction that commits the
/// batch; [`Sink::flush`] after it is durable, before [`Source::committed`].
pub trait Sink: Send {
    /// Publishes `record` to `topic` as part of `txn`.
    ///
    /// # Errors
    ///
    /// When the record cannot be placed.
    fn publish_in(
        &mut self,
        txn: &WriteTransaction,
        topic: &str,
        record: &Record,
    ) -> Result<(), PipelineError>;

    /// Makes what was published for `batch` durable downstream.
    ///
    /// # Errors
    ///
    /// When the destination refuses.
    fn flush(&mut self, batch: &Batch) -> Result<(), PipelineError>;
}

/// Reads the processor's input topics from the embedded log, keeping its
/// positions in the same database.
pub struct EmbeddedSource {
    log: Log,
    consumer: Arc<str>,
    inputs: Vec<String>,
    /// (topic, partition, next offset)
    partitions: Vec<(String, u32, u64)>,
    cursor: usize,
}

impl EmbeddedSource {
    /// A source for `consumer` over `inputs`; topics that do not exist yet
    /// are picked up when they appear.
    pub fn new(log: Log, consumer: Arc<str>, inputs: Vec<String>) -> Self {
        EmbeddedSource {
            log,
            consumer,
            inputs,
            partitions: Vec::new(),
            cursor: 0,
        }
    }

    fn refresh(&mut self) -> Result<(), PipelineError> {
        for topic in &self.inputs {
            let Some(n) = self.log.partitions(topic)? else {
                continue;
            };
            for p in 0..n {
                if !self
                    .partitions
                    .iter()
                    .any(|(t, q, _)| t == topic && *q == p)
                {
                    let next = match self.log.position(&self.consumer, topic, p)? {
                        Some(next) => next,
                        None => {
                            // Record the start so that lag counts from it.
                            let txn = self.log.db().begin_write()?;
                            crate::log::set_position_in(&txn, &self.consumer, topic, p, 0)?;
                            txn.commit()?;
                            0
                        }
                    };
                    self.partitions.push((topic.clone(), p, next));
                }
            }
        }
        Ok(())
    }
}

impl Source for EmbeddedSource {
    fn poll(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Option<Batch>, PipelineError> {
        self.refresh()?;
        let n = self.partitions.len();
        for i in 0..n {
            let idx = (self.cursor + i) % n;
            let (topic, partition, next) = &self.partitions[idx];
            let records = self
                .log
                .read(topic, *partition, *next, max_records, max_bytes)?;
            if let Some(first) = records.first() {
                if first.offset > *next {
                    tracing::warn!(
                        processor = %self.consumer, topic = %topic, partition,
                        skipped = first.offset - *next,
                        "records were removed by retention before this processor read them"
                    );
                }
                self.cursor = (idx + 1) % n;
                return Ok(Some(Batch {
                    topic: topic.clone(),
                    partition: *partition,
                    records,
                }));
            }
        }
        Ok(None)
    }

    fn commit_in(&mut self, txn: &WriteTransaction, batch: &Batch) -> Result<(), PipelineError> {
        crate::log::set_position_in(
            txn,
            &self.consumer,
            &batch.topic,
            batch.partition,
            batch.next_offset(),
        )?;
        Ok(())
    }

    fn committed(&mut self, batch: &Batch) -> Result<(), PipelineError> {
        let next = batch.next_offset();
        if let Some(p) = self
            .partitions
            .iter_mut()
            .find(|(t, p, _)| *t == batch.topic && *p == batch.partition)
        {
            p.2 = next;
        }
        Ok(())
    }

    fn rewind(
        &mut self,
        from: crate::control::ReplayFrom,
    ) -> Result<Vec<(String, u32, u64)>, PipelineError> {
        use crate::control::ReplayFrom;
        self.refresh()?;
        let ends: HashMap<(String, u32), u64> = self
            .log
            .topics()?
            .into_iter()
            .flat_map(|t| {
                let name = t.name;
                (0u32..)
                    .zip(t.partitions)
                    .map(move |(p, info)| ((name.clone(), p), info.end))
            })
            .collect();
        let txn = self.log.db().begin_write()?;
        let mut range = Vec::new();
        for (topic, partition, next) in &mut self.partitions {
            let end = ends.get(&(topic.clone(), *partition)).copied().unwrap_or(0);
            // The replay covers what had been read: records from the current
            // position on are new to the processor, whatever the epoch.
            range.push((topic.clone(), *partition, (*next).min(end)));
            let target = match from {
                ReplayFrom::Offset(o) => o,
                ReplayFrom::TimeMs(t) => {
                    // Scan from the start in chunks for the first record at or after t.
                    let mut at = 0;
                    loop {
                        let chunk = self.log.read(topic, *partition, at, 4096, usize::MAX)?;
                        let Some(last) = chunk.last() else {
                            break at;
                        };
                        if let Some(o) = crate::control::first_at_or_after(&chunk, t) {
                            break o;
                        }
                        at = last.offset + 1;
                    }
                }
            };
            // A replay only goes back: a start past the current position
            // (a time in the future, an offset past the end) leaves the
            // position where it is, so no unread event is skipped.
            let target = target.min(*next);
            crate::log::set_position_in(&txn, &self.consumer, topic, *partition, target)?;
            *next = target;
        }
        txn.commit()?;
        Ok(range)
    }
}

/// Appends to the embedded log inside the batch's transaction.
pub struct EmbeddedSink {
    default_partitions: u32,
}

impl EmbeddedSink {
    /// A sink that creates missing topics with `default_partitions` partitions.
    pub fn new(default_partitions: u32) -> Self {
        EmbeddedSink { default_partitions }
    }
}

impl Sink for EmbeddedSink {
    fn publish_in(
        &mut self,
        txn: &WriteTransaction,
        topic: &str,
        record: &Record,
    ) -> Result<(), PipelineError> {
        crate::log::append_in(txn, topic, None, record, self.default_partitions)?;
        Ok(())
    }

    fn flush(&mut self, _batch: &Batch) -> Result<(), PipelineError> {
        Ok(())
    }
}

/// Runs the processor's code on a batch.
pub trait Handler: Send {
    /// The version's identity (the component's SHA-256), for dead-letter headers.
    fn version(&self) -> &str;

    /// Log lines dropped by the rate limit so far, over every instance.
    fn log_dropped(&self) -> u64 {
        0
    }

    /// Processes `events`, one result per event, reading and writing state
    /// through `state`.
    ///
    /// # Errors
    ///
    /// [`CallError`] when the call failed as a whole; the next call starts afresh.
    fn call(
        &mut self,
        events: &[Event],
        state: &mut StateOverlay,
    ) -> Result<Vec<EventResult>, CallError>;
}

/// A [`Handler`] that runs a WebAssembly component, re-instantiating it
/// after a failed call.
pub struct WasmHandler {
    runtime: Arc<Runtime>,
    component: Arc<LoadedComponent>,
    processor: Arc<str>,
    limits: Limits,
    config: Vec<(String, String)>,
    instance: Option<Instance>,
    /// Log lines dropped by instances already discarded.
    log_dropped_before: u64,
}

impl WasmHandler {
    /// Instantiates `component` for `processor` and calls its `init` with `config`.
    ///
    /// # Errors
    ///
    /// [`CallError`] when instantiation or `init` fails.
    pub fn new(
        runtime: Arc<Runtime>,
        component: Arc<LoadedComponent>,
        processor: Arc<str>,
        limits: Limits,
        config: Vec<(String, String)>,
    ) -> Result<Self, CallError> {
        let instance = runtime.instantiate(&component, processor.clone(), limits, &config)?;
        Ok(WasmHandler {
            runtime,
            component,
            processor,
            limits,
            config,
            instance: Some(instance),
            log_dropped_before: 0,
        })
    }
}

impl Handler for WasmHandler {
    fn version(&self) -> &str {
        &self.component.sha256
    }

    fn log_dropped(&self) -> u64 {
        self.log_dropped_before + self.instance.as_ref().map_or(0, Instance::log_dropped)
    }

    fn call(
        &mut self,
        events: &[Event],
        state: &mut StateOverlay,
    ) -> Result<Vec<EventResult>, CallError> {
        let mut instance = match self.instance.take() {
            Some(i) => i,
            None => self.runtime.instantiate(
                &self.component,
                self.processor.clone(),
                self.limits,
                &self.config,
            )?,
        };
        match instance.process(events, state) {
            Ok(results) => {
                self.instance = Some(instance);
                Ok(results)
            }
            Err(e) => {
                self.log_dropped_before += instance.log_dropped();
                Err(e)
            }
        }
    }
}

/// A [`Handler`] that runs a native Rust function per event; used to measure
/// the cost of the sandbox against the same logic without it.
pub struct FnHandler<F> {
    f: F,
}

impl<F> FnHandler<F>
where
    F: FnMut(&Event, &mut StateOverlay) -> EventResult + Send,
{
    /// Wraps `f`.
    pub fn new(f: F) -> Self {
        FnHandler { f }
    }
}

impl<F> Handler for FnHandler<F>
where
    F: FnMut(&Event, &mut StateOverlay) -> EventResult + Send,
{
    fn version(&self) -> &str {
        "native"
    }

    fn call(
        &mut self,
        events: &[Event],
        state: &mut StateOverlay,
    ) -> Result<Vec<EventResult>, CallError> {
        let out = events.iter().map(|e| (self.f)(e, state)).collect();
        state.keep_call();
        Ok(out)
    }
}

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

/// What to do with one event of a batch.
enum Fate {
    /// Process it; `fingerprint` is `None` for an event without a key.
    Process {
        key: Vec<u8>,
        fingerprint: Option<[u8; 16]>,
    },
    Duplicate,
    Conflict {
        key: Vec<u8>,
        fingerprint: [u8; 16],
    },
    NoKey(String),
}

/// How one processed event ended.
pub(crate) enum Ending {
    Done(Vec<Output>),
    DeadLetter {
        kind: &'static str,
        message: String,
        attempts: u32,
    },
}

/// One processor's run loop: a source, a handler, a sink, and the database
/// that holds its keys, state and counters.
pub struct Pipeline {
    settings: Settings,
    db: Arc<Database>,
    source: Box<dyn Source>,
    sink: Box<dyn Sink>,
    handler: Box<dyn Handler>,
    attached: Option<crate::control::Attached>,
    /// Partitions stopped by `on_error = "halt-partition"`, until restart.
    halted: HashSet<(String, u32)>,
    /// [`Handler::log_dropped`] as last counted.
    log_dropped_counted: u64,
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
            attached: None,
            halted: HashSet::new(),
            log_dropped_counted: 0,
        }
    }

    /// Puts this run loop under `control` (hot swap, pause, shadow, canary,
    /// replay: see [`crate::control`]), in idempotency `epoch`.
    pub fn attach(&mut self, control: Arc<crate::control::Control>, epoch: u64) {
        self.attached = Some(crate::control::Attached::new(control, epoch));
    }

    /// The processor's name.
    pub fn name(&self) -> &Arc<str> {
        &self.settings.name
    }

    /// Whether the source has read everything available.
    pub fn caught_up(&self) -> bool {
        self.source.caught_up()
    }

    /// The version being run.
    pub fn version(&self) -> &str {
        self.handler.version()
    }

    /// Processes one batch, if one is waiting, and commits its effects.
    /// Returns what it counted, or `None` when there was nothing to read.
    ///
    /// # Errors
    ///
    /// [`PipelineError::Fatal`] when the component gave up (nothing of the
    /// batch was committed); storage and log errors.
    pub fn step(&mut self) -> Result<Option<Counters>, PipelineError> {
        if let Some(a) = &mut self.attached
            && !a.begin_step(&mut self.handler, self.source.as_mut())?
        {
            return Ok(None);
        }
        let s = &self.settings;
        let Some(batch) = self.source.poll(s.max_batch_records, s.max_batch_bytes)? else {
            return Ok(None);
        };
        if self.is_halted(&batch) {
            return Ok(None);
        }
        // Keys are looked up and recorded in the scope of the record's
        // idempotency epoch: a replay with reprocessing has its own, for the
        // records it covers.
        // Each record's idempotency scope and epoch, once per batch.
        let scopes: Vec<(Arc<str>, u64)> = batch
            .records
            .iter()
            .map(|rec| match &self.attached {
                Some(a) => a.scope_for(&rec.topic, rec.partition, rec.offset),
                None => (self.settings.name.clone(), 0),
            })
            .collect();
        let snapshot = self.db.begin_read()?;
        let mut counters = Counters {
            events_in: batch.records.len() as u64,
            ..Counters::default()
        };

        // 1. Sort the events by what their keys say.
        let mut fates = Vec::with_capacity(batch.records.len());
        let mut first_seen: HashMap<(Arc<str>, Vec<u8>), [u8; 16]> = HashMap::new();
        let mut conflicts_seen: HashSet<(Vec<u8>, [u8; 16])> = HashSet::new();
        for (rec, (scope, _)) in batch.records.iter().zip(&scopes) {
            if !s.deduplicate {
                fates.push(Fate::Process {
                    key: idempotency::offset_key(rec),
                    fingerprint: None,
                });
                continue;
            }
            let (key, fp) = match idempotency::derive(&s.key_mode, rec) {
                Ok(k) => k,
                Err(e) => {
                    fates.push(match s.unkeyed {
                        Unkeyed::DeadLetter => Fate::NoKey(e.to_string()),
                        Unkeyed::Process => {
                            counters.unkeyed += 1;
                            Fate::Process {
                                key: idempotency::offset_key(rec),
                                fingerprint: None,
                            }
                        }
                    });
                    continue;
                }
            };
            let seen_key = (scope.clone(), key.clone());
            let stored = match first_seen.get(&seen_key) {
                Some(f) => Some(KeyRecord {
                    fingerprint: *f,
                    recorded_ms: 0,
                    expires_ms: 0,
                    outcome: Outcome::Processed,
                }),
                None => idempotency::lookup(&snapshot, scope, &key)?,
            };
            fates.push(match idempotency::verdict(stored.as_ref(), &fp) {
                Verdict::New => {
                    first_seen.insert(seen_key, fp);
                    Fate::Process {
                        key,
                        fingerprint: Some(fp),
                    }
                }
                Verdict::Duplicate => Fate::Duplicate,
                Verdict::Conflict => {
                    // The same conflicting payload again is a duplicate of
                    // the dead letter already written for it.
                    let pair = (key, fp);
                    if conflicts_seen.contains(&pair)
                        || idempotency::conflict_seen(&snapshot, scope, &pair.0, &fp)?
                    {
                        Fate::Duplicate
                    } else {
                        conflicts_seen.insert(pair.clone());
                        Fate::Conflict {
                            key: pair.0,
                            fingerprint: fp,
                        }
                    }
                }
            });
        }

        // 2. Call the component once for the events to process.
        let events: Vec<Event> = batch
            .records
            .iter()
            .zip(&fates)
            .filter(|(_, f)| matches!(f, Fate::Process { .. }))
            .map(|(r, _)| to_event(r))
            .collect();
        let mut state = StateOverlay::new(s.name.clone(), snapshot);
        tracing::debug!(processor = %s.name, events = events.len(), "calling the component");
        let endings = self.run_recovering(&batch, &events, &mut state)?;
        if self.settings.on_error == OnError::HaltPartition
            && self.halt_if_failed(&batch, &events, &endings)?
        {
            return Ok(None);
        }
        let shadow_state = match &mut self.attached {
            Some(a) => a.shadow(&events, &endings, &self.db)?,
            None => None,
        };
        let mut endings = endings.into_iter();
        let mut codes = crate::stats::ErrorCodes::new();

        // 3. Commit everything in one transaction.
        let s = &self.settings;
        let now = now_ms();
        let expires_ms = now.saturating_add(s.key_ttl.as_millis() as u64);
        let txn = self.db.begin_write()?;
        for ((rec, fate), (scope, epoch)) in batch.records.iter().zip(fates).zip(&scopes) {
            match fate {
                Fate::Duplicate => counters.duplicates += 1,
                Fate::Conflict { key, fingerprint } => {
                    counters.conflicts += 1;
                    counters.dead_lettered += 1;
                    *codes.entry("duplicate-key-different-payload").or_default() += 1;
                    let message = format!(
                        "idempotency key {} was first seen with a different payload",
                        String::from_utf8_lossy(&key)
                    );
                    let dl = dead_letter(
                        rec,
                        "duplicate-key-different-payload",
                        &message,
                        &s.name,
                        self.handler.version(),
                        0,
                    );
                    self.sink.publish_in(&txn, &s.dead_letter_topic, &dl)?;
                    idempotency::mark_conflict_in(&txn, scope, &key, &fingerprint, expires_ms)?;
                }
                Fate::NoKey(reason) => {
                    counters.dead_lettered += 1;
                    *codes.entry("no-idempotency-key").or_default() += 1;
                    let message = format!("no idempotency key ({} mode): {reason}", s.key_mode);
                    let dl = dead_letter(
                        rec,
                        "no-idempotency-key",
                        &message,
                        &s.name,
                        self.handler.version(),
                        0,
                    );
                    self.sink.publish_in(&txn, &s.dead_letter_topic, &dl)?;
                }
                Fate::Process { key, fingerprint } => {
                    let outcome = match endings.next() {
                        Some(Ending::Done(outputs)) => {
                            counters.outputs += outputs.len() as u64;
                            for (i, out) in outputs.into_iter().enumerate() {
                                let topic = out.topic.clone().unwrap_or_else(|| s.output.clone());
                                let record = crate::control::in_epoch(
                                    output_record(rec, out, &key, &s.name, i),
                                    *epoch,
                                );
                                self.sink.publish_in(&txn, &topic, &record)?;
                            }
                            Outcome::Processed
                        }
                        Some(Ending::DeadLetter {
                            kind,
                            message,
                            attempts,
                        }) if s.on_error == OnError::Skip => {
                            counters.errors += 1;
                            counters.skipped += 1;
                            *codes.entry(kind).or_default() += 1;
                            tracing::warn!(
                                processor = %s.name, version = %self.handler.version(), code = kind,
                                topic = %rec.topic, partition = rec.partition, offset = rec.offset,
                                attempts, error = %message, "event skipped (on_error = skip)"
                            );
                            Outcome::Skipped
                        }
                        Some(Ending::DeadLetter {
                            kind,
                            message,
                            attempts,
                        }) => {
                            counters.errors += 1;
                            counters.dead_lettered += 1;
                            *codes.entry(kind).or_default() += 1;
                            let dl = dead_letter(
                                rec,
                                kind,
                                &message,
                                &s.name,
                                self.handler.version(),
                                attempts,
                            );
                            self.sink.publish_in(&txn, &s.dead_letter_topic, &dl)?;
                            Outcome::DeadLettered
                        }
                        None => unreachable!("one ending per processed event"),
                    };
                    if let Some(fingerprint) = fingerprint {
                        let record = KeyRecord {
                            fingerprint,
                            recorded_ms: now,
                            expires_ms,
                            outcome,
                        };
                        idempotency::mark_in(&txn, scope, &key, &record)?;
                        idempotency::mark_version_in(&txn, scope, &key, self.handler.version())?;
                    }
                }
            }
        }
        let dropped = self.handler.log_dropped();
        if dropped > self.log_dropped_counted {
            let n = dropped - self.log_dropped_counted;
            tracing::warn!(processor = %s.name, code = "log-rate-limit", lines = n, "log lines dropped by the rate limit");
            *codes.entry("log-rate-limit").or_default() += n;
        }
        state.apply_in(&txn)?;
        if let Some(shadow) = shadow_state {
            shadow.apply_in(&txn)?;
        }
        self.source.commit_in(&txn, &batch)?;
        stats::add_in(&txn, &s.name, &counters)?;
        stats::add_codes_in(&txn, &s.name, &codes)?;
        txn.commit()?;
        self.log_dropped_counted = dropped;
        self.sink.flush(&batch)?;
        self.source.committed(&batch)?;
        tracing::debug!(
            processor = %s.name, topic = %batch.topic, partition = batch.partition,
            next_offset = batch.next_offset(), events = counters.events_in,
            "batch committed"
        );
        if let Some(a) = &mut self.attached {
            a.after_batch(&counters, &mut self.handler);
        }
        Ok(Some(counters))
    }

    /// Calls the handler for `events` (the batch's events to process, in
    /// order), retrying transient errors and bisecting failed calls.
    fn run_recovering(
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
            let results = self.call_bisecting(call_events, state)?;
            let mut retry = Vec::new();
            for (j, result) in results.into_iter().enumerate() {
                let i = pending[j];
                attempts[i] += 1;
                endings[i] = Some(match result {
                    Ok(Ok(outputs)) => Ending::Done(outputs),
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
    /// events that make it fail are reported as failed.
    fn call_bisecting(
        &mut self,
        events: &[Event],
        state: &mut StateOverlay,
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
                tracing::warn!(
                    processor = %self.settings.name, version = %self.handler.version(),
                    code = e.code(), error = %e, events = events.len(),
                    "call failed; bisecting the batch to find the events that cause it"
                );
                let (a, b) = events.split_at(events.len() / 2);
                let mut out = self.call_bisecting(a, state)?;
                out.extend(self.call_bisecting(b, state)?);
                Ok(out)
            }
        }
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

/// The WIT event for a log record.
pub fn to_event(r: &LogRecord) -> Event {
    Event {
        topic: r.topic.clone(),
        partition: r.partition,
        offset: r.offset,
        timestamp_ms: r.record.timestamp_ms,
        key: r.record.key.clone(),
        value: r.record.value.clone(),
        headers: r.record.headers.clone(),
    }
}

/// The `idempotency-key` of output `index` of the event keyed `input_key`.
pub fn output_key(input_key: &[u8], processor: &str, index: usize) -> Vec<u8> {
    let mut k = Vec::with_capacity(input_key.len() + processor.len() + 8);
    k.extend_from_slice(input_key);
    k.push(b'/');
    k.extend_from_slice(processor.as_bytes());
    k.push(b'/');
    k.extend_from_slice(index.to_string().as_bytes());
    k
}

/// The record published for output `index` of `input`: its timestamp is
/// the input's, and its `idempotency-key` header is [`output_key`].
pub(crate) fn output_record(
    input: &LogRecord,
    out: Output,
    input_key: &[u8],
    processor: &str,
    index: usize,
) -> Record {
    let mut headers: Vec<(String, Vec<u8>)> = out
        .headers
        .into_iter()
        .filter(|(n, _)| n != idempotency::HEADER)
        .collect();
    headers.push((
        idempotency::HEADER.to_owned(),
        output_key(input_key, processor, index),
    ));
    Record {
        timestamp_ms: input.record.timestamp_ms,
        key: out.key,
        value: out.value,
        headers,
    }
}

/// The dead-letter record for `input`: its key, value and headers byte for
/// byte, then the `tidewater-*` headers of [`dlq_headers`].
pub fn dead_letter(
    input: &LogRecord,
    kind: &str,
    message: &str,
    processor: &str,
    version: &str,
    attempts: u32,
) -> Record {
    use dlq_headers as h;
    let mut record = input.record.clone();
    let extra: [(&str, String); 8] = [
        (h::KIND, kind.to_owned()),
        (h::MESSAGE, message.to_owned()),
        (h::PROCESSOR, processor.to_owned()),
        (h::VERSION, version.to_owned()),
        (h::ATTEMPTS, attempts.to_string()),
        (h::TOPIC, input.topic.clone()),
        (h::PARTITION, input.partition.to_string()),
        (h::OFFSET, input.offset.to_string()),
    ];
    record.headers.extend(
        extra
            .into_iter()
            .map(|(n, v)| (n.to_owned(), v.into_bytes())),
    );
    record
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let config = crate::config::Config::parse(
            "[[processor]]\nname = \"p\"\ncomponent = \"p.wasm\"\ninputs = [\"in\"]\noutput = \"out\"\n",
        )
        .unwrap();
        let settings = Settings::from_config(&config.processors[0]).unwrap();
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
