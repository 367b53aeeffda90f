//! The append queue: every live way in (HTTP, MQTT) hands its records to
//! one [`Appender`], whose thread appends everything queued in ONE durable
//! redb transaction (group commit) and only then answers each request. The
//! fsync is paid once per group, not once per request.
//!
//! It never waits for processors: it takes redb's write lock for short,
//! batched transactions of its own, and processors run on their threads.
//! When the queue is full or the log is over its disk quota (`[log]
//! max_bytes`), [`Appender::submit`] refuses at once, so callers push back
//! (HTTP 503, MQTT not acknowledged) instead of losing anything.
//!
//! Every record passes the device-time policy ([`DeviceTimePolicy::stamp`],
//! `[device_time]`) inside the transaction that appends it, with that
//! transaction's time as the ingest clock, and the timestamps it replaces
//! are counted per topic in the same transaction ([`count_in`]).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::device_time::{DeviceTimePolicy, Tally, count_in};
use super::metrics::IngestMetrics;
use crate::db::now_ms;
use crate::streams::Record;
use crate::streams::embedded::{Log, LogError, StoredBytes, append_all_in, ensure_topic_in};

/// How often the appender re-reads the stored bytes while idle, so that
/// room freed by retention is seen.
const REFRESH: Duration = Duration::from_millis(200);

/// Why records were not appended. Nothing of the request was appended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppendError {
    /// The queue holds as many records as it may.
    #[error(
        "the append queue is full ({queued} records waiting, the limit is {capacity}: ingest.queue_records); retry shortly"
    )]
    QueueFull {
        /// Records waiting.
        queued: usize,
        /// The limit.
        capacity: usize,
    },
    /// The log is over its disk quota.
    #[error(
        "the log holds {stored} bytes, its quota is {max} bytes ([log] max_bytes); retry once retention has freed room"
    )]
    OverQuota {
        /// Bytes stored.
        stored: u64,
        /// The quota.
        max: u64,
    },
    /// The topic does not exist and ingest may not create it.
    #[error("topic {0:?} does not exist (and ingest.create_topics is off)")]
    NoSuchTopic(String),
    /// The topic exists with another partition count than asked for.
    #[error(
        "topic {topic:?} has partition count {existing}, not {requested} (a topic's partition count cannot change: ask for {existing}, or use another topic)"
    )]
    PartitionCount {
        /// The topic.
        topic: String,
        /// Its partition count.
        existing: u32,
        /// The count asked for.
        requested: u32,
    },
    /// The topic name is not allowed.
    #[error("{0}")]
    BadTopic(String),
    /// The host is stopping.
    #[error("the host is stopping; retry against the next one")]
    Stopping,
    /// redb failed; nothing of the group was appended.
    #[error("storage: {0}")]
    Storage(String),
}

impl AppendError {
    /// A stable code: `queue-full`, `over-quota`, `no-such-topic`,
    /// `partition-count`, `bad-topic`, `stopping`, `storage`.
    pub fn code(&self) -> &'static str {
        match self {
            AppendError::QueueFull { .. } => "queue-full",
            AppendError::OverQuota { .. } => "over-quota",
            AppendError::NoSuchTopic(_) => "no-such-topic",
            AppendError::PartitionCount { .. } => "partition-count",
            AppendError::BadTopic(_) => "bad-topic",
            AppendError::Stopping => "stopping",
            AppendError::Storage(_) => "storage",
        }
    }

    /// Whether trying again later can succeed (backpressure, not refusal).
    pub fn is_backpressure(&self) -> bool {
        matches!(
            self,
            AppendError::QueueFull { .. } | AppendError::OverQuota { .. } | AppendError::Stopping
        )
    }
}

/// Where a request's records went: per record, in order, its partition and
/// offset; and the timestamps the device-time policy replaced among them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Appended {
    /// (partition, offset) of each record.
    pub placed: Vec<(u32, u64)>,
    /// The request's records stamped with the ingest time, by reason.
    pub replaced: Tally,
}

impl Appended {
    /// The first offset written in each partition, by partition.
    pub fn first_offsets(&self) -> std::collections::BTreeMap<u32, u64> {
        let mut out = std::collections::BTreeMap::new();
        for &(p, o) in &self.placed {
            out.entry(p).or_insert(o);
        }
        out
    }
}

/// The answer to one [`Appender::submit`], sent once its records are durable.
pub type Pending = oneshot::Receiver<Result<Appended, AppendError>>;

/// How the appender behaves.
#[derive(Debug, Clone)]
pub struct AppenderOptions {
    /// Records accepted but not yet appended, at most.
    pub queue_records: usize,
    /// Whether a missing topic is created (else [`AppendError::NoSuchTopic`]).
    pub create_topics: bool,
    /// Many requests per commit (default); `false`: one commit per request.
    pub group_commit: bool,
    /// The disk quota in stored bytes (`[log] max_bytes`).
    pub max_bytes: Option<u64>,
    /// Which timestamp each record gets (`[device_time]`).
    pub device_time: DeviceTimePolicy,
}

struct Job {
    topic: String,
    partitions: Option<u32>,
    records: Vec<Record>,
    bytes: u64,
    reply: oneshot::Sender<Result<Appended, AppendError>>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    records: usize,
    stopping: bool,
}

struct Inner {
    log: Log,
    options: AppenderOptions,
    queue: Mutex<Queue>,
    ready: Condvar,
    stored: AtomicU64,
    stopped: AtomicBool,
    metrics: Arc<IngestMetrics>,
}

/// The group-commit append queue of a running host. Cloning shares it.
#[derive(Clone)]
pub struct Appender {
    inner: Arc<Inner>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

/// The bytes a record adds to the log, about (value, key, headers and a
/// little framing), for the queue's quota check.
fn record_bytes(r: &Record) -> u64 {
    let headers: usize = r.headers.iter().map(|(n, v)| n.len() + v.len() + 2).sum();
    (r.value.as_ref().map_or(0, Vec::len) + r.key.as_ref().map_or(0, Vec::len) + headers + 16)
        as u64
}

impl Appender {
    /// Starts the appender's thread on `log`.
    ///
    /// # Errors
    ///
    /// Storage errors reading the stored bytes.
    pub fn start(
        log: Log,
        options: AppenderOptions,
        metrics: Arc<IngestMetrics>,
    ) -> Result<Self, LogError> {
        let stored = log.stored_bytes()?;
        let inner = Arc::new(Inner {
            log,
            options,
            queue: Mutex::new(Queue::default()),
            ready: Condvar::new(),
            stored: AtomicU64::new(stored),
            stopped: AtomicBool::new(false),
            metrics,
        });
        let worker = inner.clone();
        let handle = std::thread::Builder::new()
            .name("ingest-appender".into())
            .spawn(move || worker.run())
            .expect("spawning a thread");
        Ok(Appender {
            inner,
            thread: Arc::new(Mutex::new(Some(handle))),
        })
    }

    /// Queues `records` for `topic` (created with `partitions`, else the
    /// log's default, when missing and creation is on); each passes the
    /// device-time policy in the transaction that appends it. The returned
    /// [`Pending`] answers once they are durable, with each record's
    /// partition and offset, or why nothing was appended.
    ///
    /// # Errors
    ///
    /// At once, with nothing queued: [`AppendError::QueueFull`],
    /// [`AppendError::OverQuota`], [`AppendError::Stopping`].
    pub fn submit(
        &self,
        topic: &str,
        partitions: Option<u32>,
        records: Vec<Record>,
    ) -> Result<Pending, AppendError> {
        let bytes = records.iter().map(record_bytes).sum();
        let o = &self.inner.options;
        if let Some(max) = o.max_bytes {
            let stored = self.inner.stored.load(Ordering::Relaxed);
            if stored.saturating_add(bytes) > max {
                return Err(AppendError::OverQuota { stored, max });
            }
        }
        let (tx, rx) = oneshot::channel();
        let mut q = self.inner.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.stopping {
            return Err(AppendError::Stopping);
        }
        // One request larger than the whole queue still goes in alone.
        if q.records > 0 && q.records + records.len() > o.queue_records {
            return Err(AppendError::QueueFull {
                queued: q.records,
                capacity: o.queue_records,
            });
        }
        q.records += records.len();
        self.inner
            .metrics
            .queue_records
            .store(q.records as i64, Ordering::Relaxed);
        q.jobs.push_back(Job {
            topic: topic.to_owned(),
            partitions,
            records,
            bytes,
            reply: tx,
        });
        drop(q);
        self.inner.ready.notify_one();
        Ok(rx)
    }

    /// The device-time policy every record passes (`[device_time]`).
    pub fn device_time(&self) -> DeviceTimePolicy {
        self.inner.options.device_time
    }

    /// Records accepted and not yet appended.
    pub fn queued(&self) -> usize {
        self.inner.queue.lock().map_or(0, |q| q.records)
    }

    /// Stops taking records, appends what is queued, and ends the thread.
    pub fn stop(&self) {
        if let Ok(mut q) = self.inner.queue.lock() {
            q.stopping = true;
        }
        self.inner.ready.notify_all();
        let handle = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(h) = handle {
            let _ = h.join();
        }
    }

    /// Whether the thread has ended (after [`Appender::stop`] or a panic).
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Ordering::SeqCst)
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stopped.store(true, Ordering::SeqCst);
    }
}

impl Inner {
    /// The thread: takes everything queued (or one request without group
    /// commit), appends it in one transaction, answers, repeats.
    fn run(&self) {
        loop {
            let jobs = {
                let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                while q.jobs.is_empty() && !q.stopping {
                    let (guard, timeout) = self
                        .ready
                        .wait_timeout(q, REFRESH)
                        .unwrap_or_else(|e| e.into_inner());
                    q = guard;
                    if timeout.timed_out() && q.jobs.is_empty() {
                        drop(q);
                        self.refresh_stored();
                        q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
                    }
                }
                if q.jobs.is_empty() {
                    break;
                }
                let jobs: Vec<Job> = if self.options.group_commit {
                    q.jobs.drain(..).collect()
                } else {
                    q.jobs.pop_front().into_iter().collect()
                };
                q.records -= jobs.iter().map(|j| j.records.len()).sum::<usize>();
                self.metrics
                    .queue_records
                    .store(q.records as i64, Ordering::Relaxed);
                jobs
            };
            self.commit_group(jobs);
        }
        self.stopped.store(true, Ordering::SeqCst);
    }

    fn refresh_stored(&self) {
        if self.options.max_bytes.is_some()
            && let Ok(b) = self.log.stored_bytes()
        {
            self.stored.store(b, Ordering::Relaxed);
        }
    }

    /// Appends `jobs` in one durable transaction and answers each: each
    /// record is stamped by the device-time policy at the transaction's
    /// time, and the replaced timestamps counted per topic in it. A job
    /// refused on its own (a missing topic, the quota) is answered with its
    /// error and the others go on; a storage failure fails them all.
    fn commit_group(&self, jobs: Vec<Job>) {
        let mut done: Vec<(Job, Appended)> = Vec::with_capacity(jobs.len());
        let result = (|| -> Result<u64, LogError> {
            let txn = self.log.db().begin_write()?;
            let mut stored = txn.stored_bytes()?;
            let now = now_ms();
            for mut job in jobs {
                if let Err(e) = self.check_job(&txn, &job, stored) {
                    let _ = job.reply.send(Err(e));
                    continue;
                }
                let tally = self
                    .options
                    .device_time
                    .stamp_all(job.records.iter_mut(), now as i64);
                let placed = append_all_in(&txn, &job.topic, &job.records, now)?;
                count_in(&txn, &job.topic, &tally)?;
                stored += job.bytes;
                done.push((
                    job,
                    Appended {
                        placed,
                        replaced: tally,
                    },
                ));
            }
            let stored = txn.stored_bytes()?;
            txn.commit()?;
            Ok(stored)
        })();
        match result {
            Ok(stored) => {
                self.stored.store(stored, Ordering::Relaxed);
                self.metrics.commits.fetch_add(1, Ordering::Relaxed);
                for (job, appended) in done {
                    let _ = job.reply.send(Ok(appended));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = done.len(), "ingest append failed; nothing of the group was appended");
                for (job, _) in done {
                    let _ = job.reply.send(Err(AppendError::Storage(e.to_string())));
                }
            }
        }
    }

    /// Whether `job` may be appended in `txn`: its topic exists (or may be
    /// created, and is), with the partition count asked for, and the quota
    /// has room for it.
    fn check_job(
        &self,
        txn: &redb::WriteTransaction,
        job: &Job,
        stored: u64,
    ) -> Result<(), AppendError> {
        if let Some(max) = self.options.max_bytes
            && stored.saturating_add(job.bytes) > max
        {
            return Err(AppendError::OverQuota { stored, max });
        }
        if !self.options.create_topics
            && self
                .log
                .partitions_in(txn, &job.topic)
                .map_err(|e| AppendError::Storage(e.to_string()))?
                .is_none()
        {
            return Err(AppendError::NoSuchTopic(job.topic.clone()));
        }
        ensure_topic_in(
            txn,
            &job.topic,
            job.partitions,
            self.log.default_partitions(),
        )
        .map_err(|e| match e {
            LogError::PartitionCount {
                topic,
                existing,
                requested,
            } => AppendError::PartitionCount {
                topic,
                existing,
                requested,
            },
            LogError::BadTopicName(b) => AppendError::BadTopic(b.to_string()),
            LogError::BadPartitionCount { .. } => AppendError::BadTopic(e.to_string()),
            other => AppendError::Storage(other.to_string()),
        })?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn appender(dir: &std::path::Path, options: AppenderOptions) -> (Log, Appender) {
        let log = Log::new(crate::db::open(dir).unwrap(), 2);
        let a = Appender::start(log.clone(), options, Arc::default()).unwrap();
        (log, a)
    }

    fn opts() -> AppenderOptions {
        AppenderOptions {
            queue_records: 1000,
            create_topics: true,
            group_commit: true,
            max_bytes: None,
            device_time: DeviceTimePolicy::default(),
        }
    }

    fn rec(i: u32) -> Record {
        Record {
            key: Some(format!("k{i}").into_bytes()),
            value: Some(vec![b'x'; 100]),
            ..Record::default()
        }
    }

    #[test]
    fn many_requests_share_commits_and_each_learns_its_offsets() {
        let dir = tempfile::tempdir().unwrap();
        let (log, a) = appender(dir.path(), opts());
        let pending: Vec<Pending> = (0..50)
            .map(|i| a.submit("t", None, vec![rec(i), rec(i + 100)]).unwrap())
            .collect();
        let mut all = Vec::new();
        for p in pending {
            all.extend(p.blocking_recv().unwrap().unwrap().placed);
        }
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), 100);
        let stored: usize = (0..2)
            .map(|p| log.read("t", p, 0, usize::MAX, usize::MAX).unwrap().len())
            .sum();
        assert_eq!(stored, 100);
        a.stop();
        assert!(matches!(
            a.submit("t", None, vec![rec(1)]),
            Err(AppendError::Stopping)
        ));
    }

    #[test]
    fn a_missing_topic_is_refused_when_creation_is_off_and_the_others_go_on() {
        let dir = tempfile::tempdir().unwrap();
        let (log, a) = appender(
            dir.path(),
            AppenderOptions {
                create_topics: false,
                ..opts()
            },
        );
        log.create_topic("yes", 1).unwrap();
        let no = a.submit("no", None, vec![rec(1)]).unwrap();
        let yes = a.submit("yes", None, vec![rec(1)]).unwrap();
        assert_eq!(
            no.blocking_recv().unwrap(),
            Err(AppendError::NoSuchTopic("no".into()))
        );
        assert_eq!(yes.blocking_recv().unwrap().unwrap().placed, [(0, 0)]);
        assert_eq!(log.partitions("no").unwrap(), None);
        a.stop();
    }

    #[test]
    fn the_quota_refuses_and_room_freed_by_retention_lets_records_in_again() {
        let dir = tempfile::tempdir().unwrap();
        let (log, a) = appender(
            dir.path(),
            AppenderOptions {
                max_bytes: Some(1000),
                ..opts()
            },
        );
        let mut accepted = 0;
        let refused = loop {
            match a.submit("t", Some(1), vec![rec(accepted)]) {
                Ok(p) => {
                    p.blocking_recv().unwrap().unwrap();
                    accepted += 1;
                }
                Err(e) => break e,
            }
        };
        assert!(
            matches!(refused, AppendError::OverQuota { max: 1000, .. }),
            "{refused}"
        );
        assert!(refused.is_backpressure());
        log.set_retention("t", None, Some(0)).unwrap();
        log.enforce_retention(now_ms()).unwrap();
        // The appender sees the room within its refresh interval.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match a.submit("t", None, vec![rec(99)]) {
                Ok(p) => {
                    assert_eq!(p.blocking_recv().unwrap().unwrap().placed.len(), 1);
                    break;
                }
                Err(AppendError::OverQuota { .. }) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(
            log.topics().unwrap()[0].partitions[0].end,
            accepted as u64 + 1
        );
        a.stop();
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let (log, a) = appender(
            dir.path(),
            AppenderOptions {
                queue_records: 10,
                ..opts()
            },
        );
        // Hold redb's write lock so that nothing leaves the queue.
        let txn = log.db().begin_write().unwrap();
        let first = a.submit("t", None, (0..6).map(rec).collect()).unwrap();
        // The appender may already have taken the first request (it then
        // waits for the lock): queue more until it is full.
        let mut held = vec![first];
        let err = loop {
            match a.submit("t", None, (0..6).map(rec).collect()) {
                Ok(p) => held.push(p),
                Err(e) => break e,
            }
        };
        assert_eq!(
            err,
            AppendError::QueueFull {
                queued: 6,
                capacity: 10
            }
        );
        drop(txn);
        for p in held {
            assert_eq!(p.blocking_recv().unwrap().unwrap().placed.len(), 6);
        }
        a.stop();
    }
}
