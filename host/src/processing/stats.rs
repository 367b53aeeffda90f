//! Per-processor counters and status, kept in redb.
//!
//! Counters are added in the same transaction that commits a batch, so they
//! are exact across crashes: a batch that did not commit counted nothing.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;

use crate::db::StorageError;
use crate::streams::embedded::{Log, LogError};

/// (processor, counter) → value
const COUNTERS: TableDefinition<(&str, &str), u64> = TableDefinition::new("stats.counters");
/// processor → status text
const STATUS: TableDefinition<&str, &str> = TableDefinition::new("stats.status");
/// (processor, error code) → events or log lines
const CODES: TableDefinition<(&str, &str), u64> = TableDefinition::new("stats.error_codes");
/// (processor, topic, partition) → postcard-encoded [`Halt`]
const HALTS: TableDefinition<(&str, &str, u32), &[u8]> = TableDefinition::new("stats.halts");

/// Failures counted by their stable error code (`invalid`, `trap`,
/// `timeout`, `output-count-limit`, `log-rate-limit`, ...).
pub type ErrorCodes = BTreeMap<&'static str, u64>;

/// Where and why `on_error = "halt-partition"` stopped a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Halt {
    /// The input topic.
    pub topic: String,
    /// Its partition.
    pub partition: u32,
    /// The offset of the event the component failed on.
    pub offset: u64,
    /// `<error code>: <message>`.
    pub reason: String,
}

/// What a processor did, counted in events or records.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counters {
    /// Events read from the inputs.
    pub events_in: u64,
    /// Events skipped: their idempotency key was seen with the same payload.
    pub duplicates: u64,
    /// Events dead-lettered: their key was seen with a different payload.
    pub conflicts: u64,
    /// Records published to output topics.
    pub outputs: u64,
    /// Events sent to the dead-letter topic, for any reason.
    pub dead_lettered: u64,
    /// Events the component failed on (invalid, trap, timeout, memory, retries exhausted).
    pub errors: u64,
    /// Events processed without an idempotency key (`unkeyed = "process"`).
    pub unkeyed: u64,
    /// Events the component failed on that `on_error = "skip"` dropped.
    pub skipped: u64,
    /// Input partitions whose state and keys were restored from the
    /// changelog (Kafka: on assignment).
    pub restores: u64,
    /// Changelog records read and applied by those restores.
    pub restored_records: u64,
    /// Time spent restoring, in ms.
    pub restore_ms: u64,
    /// Component instances discarded after a failed call and replaced by
    /// a fresh one (trap, timeout, memory cap, bad output, ...).
    pub recycled: u64,
    /// Of those, the instances that hit their memory cap (`limits.memory_bytes`).
    pub recycled_memory_limit: u64,
}

impl Counters {
    const NAMES: [&'static str; 13] = [
        "events_in",
        "duplicates",
        "conflicts",
        "outputs",
        "dead_lettered",
        "errors",
        "unkeyed",
        "skipped",
        "restores",
        "restored_records",
        "restore_ms",
        "recycled",
        "recycled_memory_limit",
    ];

    fn values(&self) -> [u64; 13] {
        [
            self.events_in,
            self.duplicates,
            self.conflicts,
            self.outputs,
            self.dead_lettered,
            self.errors,
            self.unkeyed,
            self.skipped,
            self.restores,
            self.restored_records,
            self.restore_ms,
            self.recycled,
            self.recycled_memory_limit,
        ]
    }

    fn set(&mut self, name: &str, v: u64) {
        match name {
            "events_in" => self.events_in = v,
            "duplicates" => self.duplicates = v,
            "conflicts" => self.conflicts = v,
            "outputs" => self.outputs = v,
            "dead_lettered" => self.dead_lettered = v,
            "errors" => self.errors = v,
            "unkeyed" => self.unkeyed = v,
            "skipped" => self.skipped = v,
            "restores" => self.restores = v,
            "restored_records" => self.restored_records = v,
            "restore_ms" => self.restore_ms = v,
            "recycled" => self.recycled = v,
            "recycled_memory_limit" => self.recycled_memory_limit = v,
            _ => {}
        }
    }

    /// Adds `other` to these counters.
    pub fn add(&mut self, other: &Counters) {
        let (names, values) = (Self::NAMES, other.values());
        let mine = self.values();
        for i in 0..names.len() {
            self.set(names[i], mine[i] + values[i]);
        }
    }

    /// These counters minus `earlier` (saturating at 0).
    pub fn since(&self, earlier: &Counters) -> Counters {
        let mut out = Counters::default();
        let (a, b) = (self.values(), earlier.values());
        for (i, name) in Self::NAMES.iter().enumerate() {
            out.set(name, a[i].saturating_sub(b[i]));
        }
        out
    }
}

/// Adds `delta` to `processor`'s counters inside `txn`.
///
/// # Errors
///
/// Storage errors.
pub fn add_in(
    txn: &WriteTransaction,
    processor: &str,
    delta: &Counters,
) -> Result<(), StorageError> {
    let mut t = txn.open_table(COUNTERS)?;
    for (name, v) in Counters::NAMES.iter().zip(delta.values()) {
        if v == 0 {
            continue;
        }
        let old = t.get((processor, *name))?.map_or(0, |g| g.value());
        t.insert((processor, *name), old + v)?;
    }
    Ok(())
}

/// Adds `codes` to `processor`'s failure counts by error code inside `txn`.
///
/// # Errors
///
/// Storage errors.
pub fn add_codes_in(
    txn: &WriteTransaction,
    processor: &str,
    codes: &ErrorCodes,
) -> Result<(), StorageError> {
    if codes.is_empty() {
        return Ok(());
    }
    let mut t = txn.open_table(CODES)?;
    for (code, n) in codes {
        let old = t.get((processor, *code))?.map_or(0, |g| g.value());
        t.insert((processor, *code), old + n)?;
    }
    Ok(())
}

/// Adds `codes` to `processor`'s failure counts in a durable transaction of
/// its own (for failures outside a batch: a processor that cannot start,
/// a `fatal` error).
///
/// # Errors
///
/// Storage errors.
pub fn add_codes(
    db: &redb::Database,
    processor: &str,
    codes: &ErrorCodes,
) -> Result<(), StorageError> {
    let txn = db.begin_write()?;
    add_codes_in(&txn, processor, codes)?;
    txn.commit()?;
    Ok(())
}

/// Records, in its own durable transaction, that `processor` halted a
/// partition (`on_error = "halt-partition"`), and counts `code` once.
///
/// # Errors
///
/// Storage errors.
pub fn record_halt(
    db: &redb::Database,
    processor: &str,
    halt: &Halt,
    code: &'static str,
) -> Result<(), StorageError> {
    let txn = db.begin_write()?;
    {
        let bytes = postcard::to_allocvec(halt).unwrap_or_default();
        txn.open_table(HALTS)?.insert(
            (processor, halt.topic.as_str(), halt.partition),
            bytes.as_slice(),
        )?;
    }
    add_codes_in(&txn, processor, &[(code, 1)].into_iter().collect())?;
    txn.commit()?;
    Ok(())
}

/// Records `processor`'s status (`running`, `stopped`, `paused: ...`,
/// `failed: ...`) in its own durable transaction. `running` also clears the
/// partitions it had halted: a restart reads them again.
///
/// # Errors
///
/// Storage errors.
pub fn set_status(db: &redb::Database, processor: &str, status: &str) -> Result<(), StorageError> {
    let txn = db.begin_write()?;
    txn.open_table(STATUS)?.insert(processor, status)?;
    if status == "running" {
        let mut halts = txn.open_table(HALTS)?;
        halts.retain_in(
            (processor, "", 0)..=(processor, "\u{10ffff}", u32::MAX),
            |_, _| false,
        )?;
    }
    txn.commit()?;
    Ok(())
}

/// The peak resident memory of this process (`VmHWM` of
/// `/proc/self/status`), in bytes; `None` where there is no `/proc`.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What `tidewater stats` shows for one processor.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessorStats {
    /// `stopped`, `failed: <reason>`, `stopped uncleanly (killed or crashed)`,
    /// or `unknown`.
    pub status: String,
    /// The counters since the data dir was created.
    #[serde(flatten)]
    pub counters: Counters,
    /// Records in the inputs not yet read (sum over partitions of end −
    /// position); it includes records retention deleted before they were
    /// read until the processor passes them.
    pub lag: u64,
    /// Records of its inputs that retention deleted before this processor
    /// read them (only with `retention.unread = "delete"`; see
    /// [`Log::deleted_unread`]).
    pub deleted_unread: u64,
    /// Failures by stable error code, since the data dir was created.
    pub error_codes: BTreeMap<String, u64>,
    /// Partitions halted by `on_error = "halt-partition"` in the last run.
    pub halted: Vec<Halt>,
}

/// Every processor's counters, status and lag, by name.
///
/// # Errors
///
/// Storage errors.
pub fn read_all(log: &Log) -> Result<BTreeMap<String, ProcessorStats>, LogError> {
    let txn = log.db().begin_read().map_err(StorageError::from)?;
    let mut out: BTreeMap<String, ProcessorStats> = BTreeMap::new();
    match txn.open_table(COUNTERS) {
        Ok(t) => {
            for e in t.iter().map_err(StorageError::from)? {
                let (k, v) = e.map_err(StorageError::from)?;
                let (p, name) = k.value();
                out.entry(p.to_owned())
                    .or_default()
                    .counters
                    .set(name, v.value());
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(StorageError::from(e).into()),
    }
    match txn.open_table(STATUS) {
        Ok(t) => {
            for e in t.iter().map_err(StorageError::from)? {
                let (k, v) = e.map_err(StorageError::from)?;
                out.entry(k.value().to_owned()).or_default().status = v.value().to_owned();
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(StorageError::from(e).into()),
    }
    match txn.open_table(CODES) {
        Ok(t) => {
            for e in t.iter().map_err(StorageError::from)? {
                let (k, v) = e.map_err(StorageError::from)?;
                let (p, code) = k.value();
                out.entry(p.to_owned())
                    .or_default()
                    .error_codes
                    .insert(code.to_owned(), v.value());
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(StorageError::from(e).into()),
    }
    match txn.open_table(HALTS) {
        Ok(t) => {
            for e in t.iter().map_err(StorageError::from)? {
                let (k, v) = e.map_err(StorageError::from)?;
                if let Ok(h) = postcard::from_bytes::<Halt>(v.value()) {
                    out.entry(k.value().0.to_owned())
                        .or_default()
                        .halted
                        .push(h);
                }
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(StorageError::from(e).into()),
    }
    drop(txn);
    for pos in log.positions()? {
        if let Some(s) = out.get_mut(&pos.consumer) {
            s.lag += pos.end.saturating_sub(pos.next_offset);
        }
    }
    for (consumer, n) in log.deleted_unread()? {
        if let Some(s) = out.get_mut(&consumer) {
            s.deleted_unread = n;
        }
    }
    for s in out.values_mut() {
        if s.status.is_empty() {
            s.status = "unknown".into();
        } else if s.status == "running" {
            // Whoever reads the stats holds the database, so no `run` does:
            // the one that wrote "running" was killed before it could say so.
            s.status = "stopped uncleanly (killed or crashed)".into();
        }
        if s.deleted_unread > 0 {
            s.status.push_str(&format!(
                "; {} records deleted by retention before it read them",
                s.deleted_unread
            ));
        }
        for h in &s.halted {
            s.status.push_str(&format!(
                "; partition {}/{} halted at offset {} ({})",
                h.topic, h.partition, h.offset, h.reason
            ));
        }
    }
    Ok(out)
}
