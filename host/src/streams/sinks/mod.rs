//! Sinks: `[[sink]]` sections that read one topic (embedded log or Kafka)
//! and deliver every record to a system outside tidewater, beside the
//! processors and forwards of `tidewater run`.
//!
//! ```toml
//! [[sink]]
//! name = "readings-db"            # its position, counters, status and DLQ go by this name
//! topic = "readings-enriched"     # the topic it reads
//! batch = 1000                    # records per batch (and per transaction)
//! dead_letter_topic = "readings-db.dlq"   # default: <name>.dlq
//! retry_backoff = "200ms"         # first wait after a failure, doubling ...
//! max_backoff = "30s"             # ... up to this
//! [sink.postgres]                 # or [sink.webhook]; see postgres.rs and webhook.rs
//! ...
//! ```
//!
//! Each sink keeps its own position per partition and runs on a thread of
//! its own; it can be paused, resumed and replayed through the admin API
//! like a processor. Records it cannot deliver for good go to its
//! dead-letter topic, in the dead-letter format of processors, with
//! `tidewater-processor` naming the sink and `tidewater-version` its kind
//! (`postgres`, `webhook`), plus `tidewater-sqlstate` or
//! `tidewater-http-status`. A record is either delivered or dead-lettered
//! before the sink's position moves past it; failures that are not the
//! record's fault (a connection, a serialization failure, 429, 5xx, 401)
//! hold the position and are retried with backoff.
//!
//! - `postgres`: rows and position in one PostgreSQL transaction
//!   (effectively-once).
//! - `webhook`: HTTP POST with an `Idempotency-Key` header (at-least-once).
//! - `mapping`: JSON records to typed columns.
//! - `input`: reading the topic, and writing dead letters.

mod input;
pub mod mapping;
pub mod postgres;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use input::{DeadLetters, Input};

use crate::streams::embedded::LogError;
use crate::streams::kafka::BrokerError;
use crate::streams::topic::check_topic_name;
use crate::streams::{LogRecord, ReplayFrom};

/// `[[sink]]`: one topic delivered to one outside system; see the module docs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinkConfig {
    /// The sink's name: 1 to 200 of `a-z A-Z 0-9 . _ -`, unique among the
    /// processors and sinks of the config.
    pub name: String,
    /// The topic it reads.
    pub topic: String,
    /// Records per batch, 1 to 100,000. Default 1,000.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Where records it cannot deliver go. Default `<name>.dlq`.
    pub dead_letter_topic: Option<String>,
    /// The first wait after a failure that is retried, doubling at each
    /// retry (with jitter) up to `max_backoff`. Default 200 ms.
    #[serde(default = "default_backoff", with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// The longest wait between retries. Default 30 s.
    #[serde(default = "default_max_backoff", with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Deliver to a PostgreSQL table.
    pub postgres: Option<postgres::PostgresConfig>,
    /// Deliver to an HTTP endpoint.
    pub webhook: Option<webhook::WebhookConfig>,
}

fn default_batch() -> usize {
    1000
}
fn default_backoff() -> Duration {
    Duration::from_millis(200)
}
fn default_max_backoff() -> Duration {
    Duration::from_secs(30)
}

/// The most records per sink batch.
pub const MAX_BATCH: usize = 100_000;

impl SinkConfig {
    /// The dead-letter topic: `dead_letter_topic`, else `<name>.dlq`.
    pub fn dead_letter_topic(&self) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dlq", self.name))
    }

    /// `postgres` or `webhook`.
    pub fn kind(&self) -> &'static str {
        if self.postgres.is_some() {
            "postgres"
        } else {
            "webhook"
        }
    }

    /// Checks the sink's own settings (the caller names the sink).
    ///
    /// # Errors
    ///
    /// What is wrong, naming the key.
    pub fn check(&self) -> Result<(), String> {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 200
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if !name_ok {
            return Err("name must be 1 to 200 of the characters a-z A-Z 0-9 . _ -".into());
        }
        check_topic_name(&self.topic).map_err(|e| format!("topic: {e}"))?;
        check_topic_name(&self.dead_letter_topic())
            .map_err(|e| format!("dead_letter_topic: {e}"))?;
        if self.dead_letter_topic() == self.topic {
            return Err(
                "dead_letter_topic is the topic it reads: its dead letters would come back to it"
                    .into(),
            );
        }
        if !(1..=MAX_BATCH).contains(&self.batch) {
            return Err(format!(
                "batch is {}; it must be 1 to {MAX_BATCH}",
                self.batch
            ));
        }
        if self.retry_backoff < Duration::from_millis(1) || self.retry_backoff > self.max_backoff {
            return Err("retry_backoff must be at least 1 ms and at most max_backoff".into());
        }
        if self.max_backoff > Duration::from_secs(3600) {
            return Err("max_backoff must be at most 1h".into());
        }
        match (&self.postgres, &self.webhook) {
            (Some(p), None) => p.check().map_err(|e| format!("postgres.{e}")),
            (None, Some(w)) => w.check().map_err(|e| format!("webhook.{e}")),
            _ => Err("give exactly one of [sink.postgres] and [sink.webhook]".into()),
        }
    }
}

/// Why a sink stopped (failures it retries are not errors: it waits them out).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SinkError {
    /// The embedded log (or redb) failed.
    #[error(transparent)]
    Log(#[from] LogError),
    /// Kafka refused for good.
    #[error(transparent)]
    Kafka(#[from] BrokerError),
    /// The destination cannot be used as configured (checked at start): a
    /// missing column, a type that does not fit, no unique index for the key.
    #[error("{0}")]
    Setup(String),
}

impl From<crate::db::StorageError> for SinkError {
    fn from(e: crate::db::StorageError) -> Self {
        SinkError::Log(e.into())
    }
}

/// What one batch did, in records.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Delivered {
    /// Records read.
    pub records: u64,
    /// Records whose effect is new: rows inserted, updated or deleted;
    /// webhook deliveries answered 2xx.
    pub changed: u64,
    /// Records whose effect was there already: a row with the same
    /// idempotency key, a stale version, the same values, or a later
    /// record of the same key in the batch.
    pub unchanged: u64,
    /// Tombstones in append mode (there is no row to delete).
    pub skipped: u64,
    /// Records sent to the dead-letter topic.
    pub dead_lettered: u64,
    /// Failures by code: `mapping`, `constraint`, `data`, `connection`,
    /// `serialization`, `postgres`, `http-4xx`, `http-429`, `http-5xx`,
    /// `unauthorized`, `http-connection`.
    pub codes: BTreeMap<&'static str, u64>,
}

impl Delivered {
    fn count(&mut self, code: &'static str) {
        *self.codes.entry(code).or_default() += 1;
    }
}

/// What the admin side sees of a sink and asks of it.
pub struct SinkControl {
    name: String,
    kind: &'static str,
    topic: String,
    paused: AtomicBool,
    replay: Mutex<Option<ReplayFrom>>,
    status: Mutex<SinkStatus>,
    wake: (Mutex<bool>, Condvar),
}

/// A sink's live status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SinkStatus {
    /// `running`, `stopped` or `failed: <reason>`.
    pub state: String,
    /// `None` while it delivers; the reason while it holds its position
    /// (the endpoint answers 401/403, the database is unreachable, ...).
    pub unhealthy: Option<String>,
    /// Replays applied since the host started.
    pub replays: u64,
    /// Why the last replay was refused, if it was.
    pub last_replay_error: Option<String>,
}

impl SinkControl {
    /// The control of sink `name` of `kind` reading `topic`.
    pub fn new(name: &str, kind: &'static str, topic: &str) -> Arc<Self> {
        Arc::new(SinkControl {
            name: name.to_owned(),
            kind,
            topic: topic.to_owned(),
            paused: AtomicBool::new(false),
            replay: Mutex::new(None),
            status: Mutex::new(SinkStatus {
                state: "running".into(),
                ..SinkStatus::default()
            }),
            wake: (Mutex::new(false), Condvar::new()),
        })
    }

    /// The sink's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// `postgres` or `webhook`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The topic it reads.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// Pauses (`true`) or resumes it at the next batch boundary.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
        self.notify();
    }

    /// Whether it is paused.
    pub fn paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// Asks for a replay at the next batch boundary: every partition's
    /// position goes back to `from` (never forward).
    pub fn request_replay(&self, from: ReplayFrom) {
        *lock(&self.replay) = Some(from);
        self.notify();
    }

    /// A copy of the status.
    pub fn status(&self) -> SinkStatus {
        lock(&self.status).clone()
    }

    /// Records how the sink's thread ended.
    pub fn set_state(&self, state: &str) {
        lock(&self.status).state = state.to_owned();
    }

    fn set_unhealthy(&self, reason: Option<String>) {
        let mut st = lock(&self.status);
        if st.unhealthy != reason {
            match &reason {
                Some(r) => {
                    tracing::warn!(sink = %self.name, reason = %r, "sink unhealthy; it holds its position and retries")
                }
                None => tracing::info!(sink = %self.name, "sink healthy again"),
            }
            st.unhealthy = reason;
        }
    }

    fn notify(&self) {
        *lock(&self.wake.0) = true;
        self.wake.1.notify_all();
    }

    /// Waits up to `timeout` for a request (what an idle sink does between polls).
    pub fn idle(&self, timeout: Duration) {
        let guard = lock(&self.wake.0);
        let (mut woken, _) = self
            .wake
            .1
            .wait_timeout_while(guard, timeout, |w| !*w)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *woken = false;
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Waits between retries: `initial` doubled at each failure up to `max`,
/// each wait drawn between half and all of that (jitter).
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub(crate) fn new(initial: Duration, max: Duration) -> Self {
        Backoff {
            initial,
            max,
            failures: 0,
        }
    }

    /// The next wait; at least `at_least` (a `Retry-After`).
    pub(crate) fn next(&mut self, at_least: Option<Duration>) -> Duration {
        let full = self
            .initial
            .saturating_mul(1 << self.failures.min(20))
            .min(self.max);
        self.failures += 1;
        let half = full / 2;
        let span = (full - half).as_nanos() as u64;
        let jitter = if span == 0 {
            0
        } else {
            random_u64() % (span + 1)
        };
        (half + Duration::from_nanos(jitter)).max(at_least.unwrap_or_default())
    }

    pub(crate) fn reset(&mut self) {
        self.failures = 0;
    }
}

fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// Sleeps `d`, waking early when `stop` is set; returns whether it slept
/// the whole time.
pub(crate) async fn nap(d: Duration, stop: &AtomicBool) -> bool {
    let until = tokio::time::Instant::now() + d;
    while tokio::time::Instant::now() < until {
        if stop.load(Ordering::SeqCst) {
            return false;
        }
        let left = until - tokio::time::Instant::now();
        tokio::time::sleep(left.min(Duration::from_millis(50))).await;
    }
    !stop.load(Ordering::SeqCst)
}

/// What delivering one batch came to.
pub(crate) enum Outcome {
    /// Every record is delivered or dead-lettered; the position is `next`.
    Done(Delivered),
    /// The position may have moved elsewhere (a connection dropped during
    /// COMMIT, another writer): read it again before anything else.
    Reread(Delivered),
    /// Asked to stop while waiting; nothing moved.
    Stopped(Delivered),
}

/// Where a sink delivers: PostgreSQL or a webhook.
pub enum Destination {
    /// A table, written in transactions with the position.
    Postgres(Box<postgres::PostgresWriter>),
    /// An HTTP endpoint; the position is kept in redb.
    Webhook(webhook::WebhookWriter),
}

/// What one [`SinkTask::step`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// A batch of one partition was delivered (and dead-lettered where it
    /// had to be); its counts.
    Delivered(Delivered),
    /// Nothing new to read.
    Idle,
    /// Paused: nothing was read.
    Paused,
    /// The destination failed in a way that is retried; the position held.
    /// Counts of what failed.
    Waiting(Delivered),
    /// Asked to stop while waiting; the position held.
    Stopped,
}

/// One sink at work: its input, destination, dead letters and positions.
pub struct SinkTask {
    config: SinkConfig,
    input: Input,
    dead_letters: DeadLetters,
    destination: Destination,
    control: Arc<SinkControl>,
    positions: Option<BTreeMap<u32, u64>>,
    next_partition: u32,
    backoff: Backoff,
    ahead: Option<Ahead>,
}

/// A batch read and planned while the batch before it was delivered
/// (PostgreSQL): the next step takes it when it reads `partition` at `from`.
struct Ahead {
    partition: u32,
    from: u64,
    records: Vec<LogRecord>,
    plan: postgres::Plan,
}

impl SinkTask {
    /// A sink reading `input`, writing dead letters to `dead_letters`,
    /// delivering to `destination`. Nothing is connected yet: call
    /// [`SinkTask::prepare`]. Its calls take a tokio runtime of the calling
    /// thread (a current-thread runtime on the sink's own thread).
    pub fn new(
        config: SinkConfig,
        input: Input,
        dead_letters: DeadLetters,
        destination: Destination,
        control: Arc<SinkControl>,
    ) -> Self {
        let backoff = Backoff::new(config.retry_backoff, config.max_backoff);
        SinkTask {
            config,
            input,
            dead_letters,
            destination,
            control,
            positions: None,
            next_partition: 0,
            backoff,
            ahead: None,
        }
    }

    /// The settings.
    pub fn config(&self) -> &SinkConfig {
        &self.config
    }

    /// Its control.
    pub fn control(&self) -> &Arc<SinkControl> {
        &self.control
    }

    /// Connects and checks the destination: for PostgreSQL, creates or
    /// checks the table against the mapping and creates the offsets table.
    ///
    /// # Errors
    ///
    /// [`SinkError::Setup`] saying what does not fit, naming the column.
    pub fn prepare(&mut self, rt: &tokio::runtime::Runtime) -> Result<(), SinkError> {
        let name = self.config.name.clone();
        match &mut self.destination {
            Destination::Postgres(pg) => rt.block_on(pg.prepare()),
            Destination::Webhook(_) => Ok(()),
        }
        .map_err(|e| SinkError::Setup(format!("sink {name:?}: {e}")))
    }

    /// Whether every partition was read to its end when last looked at.
    pub fn caught_up(&self) -> bool {
        self.input.caught_up()
    }

    /// Delivers the next batch of one partition (round robin), after
    /// applying a pending replay. Waits out failures that are retried (up
    /// to the backoff of one retry, then returns [`Step::Waiting`]).
    ///
    /// # Errors
    ///
    /// When the log, redb or Kafka fail for good.
    pub fn step(
        &mut self,
        rt: &tokio::runtime::Runtime,
        stop: &AtomicBool,
    ) -> Result<Step, SinkError> {
        if self.control.paused() {
            return Ok(Step::Paused);
        }
        let positions = match self.positions.take() {
            Some(p) => p,
            None => match self.load_positions(rt)? {
                Some(p) => p,
                None => return Ok(self.waited(rt, stop, Delivered::default())),
            },
        };
        self.positions = Some(positions);
        let replay = lock(&self.control.replay).take();
        if let Some(from) = replay {
            self.replay(rt, from)?;
            return Ok(Step::Delivered(Delivered::default()));
        }
        let topic = self.config.topic.clone();
        let Some(partitions) = self.input.partitions(&topic)? else {
            // Nothing was written to it yet: nothing to deliver.
            self.input.set_caught_up(true);
            return Ok(Step::Idle);
        };
        let mut ahead = self.ahead.take();
        for i in 0..partitions {
            let p = (self.next_partition + i) % partitions;
            let from = self.position(p);
            let (records, plan) = match ahead.take() {
                Some(a) if a.partition == p && a.from == from => (a.records, Some(a.plan)),
                _ => (self.input.read(&topic, p, from, self.config.batch)?, None),
            };
            if records.is_empty() {
                continue;
            }
            self.next_partition = (p + 1) % partitions;
            return self.deliver(rt, p, from, records, plan, stop);
        }
        self.input.set_caught_up(true);
        Ok(Step::Idle)
    }

    fn position(&self, partition: u32) -> u64 {
        self.positions
            .as_ref()
            .and_then(|p| p.get(&partition).copied())
            .unwrap_or(0)
    }

    /// Reads the positions from where the destination keeps them; `None`
    /// when that failed and should be retried.
    fn load_positions(
        &mut self,
        rt: &tokio::runtime::Runtime,
    ) -> Result<Option<BTreeMap<u32, u64>>, SinkError> {
        let (sink, topic) = (&self.config.name, &self.config.topic);
        let loaded = match &mut self.destination {
            Destination::Postgres(pg) => rt.block_on(pg.positions()),
            Destination::Webhook(w) => Ok(w.positions(sink, topic)?),
        };
        match loaded {
            Ok(p) => {
                self.control.set_unhealthy(None);
                Ok(Some(p))
            }
            Err(reason) => {
                self.control.set_unhealthy(Some(reason));
                Ok(None)
            }
        }
    }

    /// Naps for the next backoff and reports the wait.
    fn waited(
        &mut self,
        rt: &tokio::runtime::Runtime,
        stop: &AtomicBool,
        counts: Delivered,
    ) -> Step {
        let d = self.backoff.next(None);
        if rt.block_on(nap(d, stop)) {
            Step::Waiting(counts)
        } else {
            Step::Stopped
        }
    }

    /// Delivers `records` of `partition`, read at `from` (`plan`: theirs,
    /// when they were read ahead). Into PostgreSQL, after a full batch (more
    /// are likely waiting), the batch the next step reads first is read and
    /// planned on a second thread meanwhile, so that mapping its JSON (a
    /// third of PostgreSQL's time on the rows) overlaps with that.
    fn deliver(
        &mut self,
        rt: &tokio::runtime::Runtime,
        partition: u32,
        from: u64,
        records: Vec<LogRecord>,
        plan: Option<postgres::Plan>,
        stop: &AtomicBool,
    ) -> Result<Step, SinkError> {
        let next = records.last().map_or(from, |r| r.offset + 1);
        let upcoming = (records.len() >= self.config.batch).then(|| {
            let q = self.next_partition;
            (
                q,
                if q == partition {
                    next
                } else {
                    self.position(q)
                },
            )
        });
        let ctx = Context {
            sink: &self.config.name,
            topic: &self.config.topic,
            partition,
            from,
            dead_letters: &self.dead_letters,
            control: &self.control,
            stop,
        };
        let outcome = match &mut self.destination {
            Destination::Postgres(pg) => {
                let (planner, input) = (pg.planner(), &mut self.input);
                let (topic, batch) = (&self.config.topic, self.config.batch);
                let (outcome, ahead) = std::thread::scope(|s| {
                    let helper = upcoming.map(|(q, at)| {
                        s.spawn(move || {
                            let records = input.read(topic, q, at, batch).ok()?;
                            if records.is_empty() {
                                return None;
                            }
                            let plan = planner.plan(&records);
                            Some(Ahead {
                                partition: q,
                                from: at,
                                records,
                                plan,
                            })
                        })
                    });
                    let outcome = rt.block_on(pg.deliver(&ctx, &records, plan, &mut self.backoff));
                    let ahead = helper.and_then(|h| match h.join() {
                        Ok(ahead) => ahead,
                        Err(panic) => std::panic::resume_unwind(panic),
                    });
                    (outcome, ahead)
                });
                // A failed read ahead is read again, and reported, next step.
                self.ahead = ahead;
                outcome?
            }
            Destination::Webhook(w) => rt.block_on(w.deliver(&ctx, &records, &mut self.backoff))?,
        };
        match outcome {
            Outcome::Done(d) => {
                self.backoff.reset();
                self.control.set_unhealthy(None);
                if let Some(p) = self.positions.as_mut() {
                    p.insert(partition, next);
                }
                if let Destination::Postgres(_) = self.destination {
                    // For `stats` and lag only: PostgreSQL holds the position.
                    self.dead_letters.mirror_position(
                        &self.config.name,
                        &self.config.topic,
                        partition,
                        next,
                    )?;
                }
                self.input.set_caught_up(false);
                Ok(Step::Delivered(d))
            }
            Outcome::Reread(d) => {
                self.positions = None;
                Ok(Step::Waiting(d))
            }
            // Counted; the thread sees the stop flag next.
            Outcome::Stopped(d) => Ok(Step::Waiting(d)),
        }
    }

    /// Moves every partition's position back to `from` (never forward).
    fn replay(&mut self, rt: &tokio::runtime::Runtime, from: ReplayFrom) -> Result<(), SinkError> {
        let topic = self.config.topic.clone();
        let partitions = self.input.partitions(&topic)?.unwrap_or(0);
        let mut targets = BTreeMap::new();
        for p in 0..partitions {
            let at = match from {
                ReplayFrom::Offset(o) => o,
                ReplayFrom::TimeMs(t) => self.input.offset_for_time(&topic, p, t)?,
            };
            let current = self.position(p);
            targets.insert(p, at.min(current));
        }
        let result = match &mut self.destination {
            Destination::Postgres(pg) => rt.block_on(pg.rewind(&targets)),
            Destination::Webhook(w) => w
                .rewind(&self.config.name, &topic, &targets)
                .map_err(|e| e.to_string()),
        };
        let mut st = lock(&self.control.status);
        match result {
            Ok(()) => {
                st.replays += 1;
                st.last_replay_error = None;
                tracing::info!(sink = %self.config.name, ?from, "replaying");
            }
            Err(e) => st.last_replay_error = Some(e),
        }
        drop(st);
        self.positions = None;
        self.input.set_caught_up(false);
        Ok(())
    }
}

/// What a destination needs to know to deliver one batch.
pub(crate) struct Context<'a> {
    pub sink: &'a str,
    pub topic: &'a str,
    pub partition: u32,
    /// The position before the batch.
    pub from: u64,
    pub dead_letters: &'a DeadLetters,
    pub control: &'a SinkControl,
    pub stop: &'a AtomicBool,
}

#[cfg(test)]
mod tests {
    use super::*;

    const PG: &str = r#"
name = "db"
topic = "readings-enriched"
[postgres]
url = "postgres://u@127.0.0.1:5432/d"
table = "readings"
mode = "upsert"
key = ["device", "ts"]
columns = [
  { name = "device", type = "text", pointer = "/device" },
  { name = "ts", type = "timestamptz", pointer = "/ts" },
]
"#;

    #[test]
    fn a_postgres_sink_parses_with_defaults() {
        let s: SinkConfig = toml::from_str(PG).unwrap();
        s.check().unwrap();
        assert_eq!(
            (s.batch, s.dead_letter_topic(), s.kind()),
            (1000, "db.dlq".to_owned(), "postgres")
        );
        assert_eq!(s.retry_backoff, Duration::from_millis(200));
    }

    #[test]
    fn bad_sinks_are_refused_naming_the_key() {
        let refused = |text: &str| {
            toml::from_str::<SinkConfig>(text)
                .unwrap()
                .check()
                .unwrap_err()
        };
        assert_eq!(
            refused(&PG.replace("name = \"db\"", "name = \"d b\"")),
            "name must be 1 to 200 of the characters a-z A-Z 0-9 . _ -"
        );
        assert_eq!(
            refused(&format!("batch = 0\n{PG}")),
            "batch is 0; it must be 1 to 100000"
        );
        assert!(
            refused(&PG.replace("[postgres]", "[webhook]\nurl = \"http://x\"\n[postgres]"))
                .contains("exactly one of")
        );
        assert!(
            refused(&format!("dead_letter_topic = \"readings-enriched\"\n{PG}"))
                .contains("its dead letters would come back")
        );
    }

    #[test]
    fn backoff_doubles_within_bounds_and_honours_a_floor() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(400));
        let waits: Vec<Duration> = (0..4).map(|_| b.next(None)).collect();
        let bounds = [(50, 100), (100, 200), (200, 400), (200, 400)];
        for (w, (lo, hi)) in waits.iter().zip(bounds) {
            assert!(
                *w >= Duration::from_millis(lo) && *w <= Duration::from_millis(hi),
                "{w:?} not in {lo}..={hi} ms"
            );
        }
        assert_eq!(b.next(Some(Duration::from_secs(2))), Duration::from_secs(2));
        b.reset();
        assert!(b.next(None) <= Duration::from_millis(100));
    }
}
