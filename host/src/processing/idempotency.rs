//! Idempotency keys: which events a processor has already had the effect of.
//!
//! The key of an event is its `idempotency-key` header if it has one, else
//! what the processor's [`KeyMode`] derives. Keys are scoped per processor
//! (on Kafka, per input partition: [`partition_scope`]) and kept for a TTL
//! (default 7 days, counted from when the key was first recorded, by the
//! wall clock), then purged. Expiry reads an index ordered by scope and
//! expiry time, so it costs what expires, not what is kept.
//!
//! Each key is stored with a fingerprint of the payload it first came with
//! (the first 16 bytes of SHA-256 over the value). A later event with the
//! same key is a [`Verdict::Duplicate`] when its fingerprint matches, and a
//! [`Verdict::Conflict`] when it does not: same key, different payload.

use std::collections::HashMap;
use std::str::FromStr;

use redb::{
    ReadTransaction, ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction,
};
use sha2::{Digest, Sha256};

use crate::db::StorageError;
use std::sync::Arc;

use crate::streams::{LogRecord, Record};

/// The header that carries an explicit idempotency key.
pub const HEADER: &str = "idempotency-key";

/// How a processor derives an event's key when it has no `idempotency-key` header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum KeyMode {
    /// `record-key`: the record key's bytes.
    RecordKey,
    /// `json:/ptr[,/ptr...]`: the values at these JSON pointers (RFC 6901)
    /// in the value, as a canonical JSON array.
    Json(Vec<String>),
    /// `hash`: SHA-256 over the key and the value.
    Hash,
    /// `offset` (the default): `topic/partition/offset`, so only a
    /// redelivery of the same record is a duplicate.
    #[default]
    Offset,
}

/// A key mode that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "idempotency key mode {0:?} is not valid: use record-key, hash, offset or json:/pointer[,/pointer...]"
)]
pub struct BadKeyMode(pub String);

impl FromStr for KeyMode {
    type Err = BadKeyMode;

    fn from_str(s: &str) -> Result<Self, BadKeyMode> {
        match s {
            "record-key" => Ok(KeyMode::RecordKey),
            "hash" => Ok(KeyMode::Hash),
            "offset" => Ok(KeyMode::Offset),
            _ => {
                let pointers: Vec<String> = s
                    .strip_prefix("json:")
                    .ok_or_else(|| BadKeyMode(s.to_owned()))?
                    .split(',')
                    .map(str::to_owned)
                    .collect();
                if pointers.iter().all(|p| p.starts_with('/')) {
                    Ok(KeyMode::Json(pointers))
                } else {
                    Err(BadKeyMode(s.to_owned()))
                }
            }
        }
    }
}

impl std::fmt::Display for KeyMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyMode::RecordKey => f.write_str("record-key"),
            KeyMode::Hash => f.write_str("hash"),
            KeyMode::Offset => f.write_str("offset"),
            KeyMode::Json(p) => write!(f, "json:{}", p.join(",")),
        }
    }
}

/// Why an event's key could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// `record-key` mode and the record has no key.
    #[error("the record has no key (idempotency key mode record-key)")]
    NoRecordKey,
    /// `json:` mode and the value is missing or not JSON.
    #[error("the value is not JSON ({0}), so json: pointers cannot be read")]
    NotJson(String),
    /// `json:` mode and a pointer finds nothing.
    #[error("JSON pointer {0} is missing in the value")]
    MissingPointer(String),
}

/// The idempotency key of `event` under `mode`.
///
/// In `json:` mode the key is the JSON array of the pointed values, written
/// with object fields sorted by name, so the same values in another field
/// order give the same key. A value with a repeated field name counts its
/// last occurrence (the rule of serde_json and of ECMAScript's `JSON.parse`).
/// A tombstone has no JSON to point into: it is keyed by its position
/// (`offset` mode), so it is processed and never dead-lettered for want of a
/// key; deleting twice has the effect of deleting once.
///
/// # Errors
///
/// [`KeyError`] when the mode finds nothing to use.
pub fn derive_key(mode: &KeyMode, event: &LogRecord) -> Result<Vec<u8>, KeyError> {
    derive(mode, event).map(|(key, _)| key)
}

/// The idempotency key of `event` under `mode` (see [`derive_key`]) and the
/// fingerprint of its payload (see [`fingerprint`]). In `json:` mode the
/// fingerprint is taken over the value written canonically (fields sorted,
/// no spaces), so the same object with its fields in another order is the
/// same payload: a duplicate, not a conflict.
///
/// # Errors
///
/// [`KeyError`] when the mode finds nothing to use.
pub fn derive(mode: &KeyMode, event: &LogRecord) -> Result<(Vec<u8>, [u8; 16]), KeyError> {
    let r = &event.record;
    let raw_fp = || fingerprint(r.value.as_deref());
    if let Some(k) = r.header(HEADER) {
        return Ok((k.to_vec(), raw_fp()));
    }
    match mode {
        KeyMode::RecordKey => Ok((r.key.clone().ok_or(KeyError::NoRecordKey)?, raw_fp())),
        KeyMode::Offset => Ok((offset_key(event), raw_fp())),
        KeyMode::Hash => {
            let mut h = Sha256::new();
            for part in [&r.key, &r.value] {
                match part {
                    None => h.update([0u8]),
                    Some(b) => {
                        h.update([1u8]);
                        h.update((b.len() as u64).to_be_bytes());
                        h.update(b);
                    }
                }
            }
            Ok((h.finalize().to_vec(), raw_fp()))
        }
        KeyMode::Json(pointers) => {
            let Some(value) = r.value.as_deref() else {
                return Ok((offset_key(event), raw_fp()));
            };
            let doc: serde_json::Value =
                serde_json::from_slice(value).map_err(|e| KeyError::NotJson(e.to_string()))?;
            let parts = pointers
                .iter()
                .map(|p| {
                    doc.pointer(p)
                        .cloned()
                        .ok_or_else(|| KeyError::MissingPointer(p.clone()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            // serde_json's map is sorted by key (no preserve_order feature),
            // so both strings below are canonical.
            let key = serde_json::Value::Array(parts).to_string().into_bytes();
            Ok((key, canonical_fingerprint(&doc)))
        }
    }
}

/// `topic/partition/offset` of `event`, as bytes.
pub fn offset_key(event: &LogRecord) -> Vec<u8> {
    format!("{}/{}/{}", event.topic, event.partition, event.offset).into_bytes()
}

/// [`fingerprint`] of `doc` written as canonical JSON (serde_json's map is
/// sorted by key), hashed as it is written rather than built as a string.
fn canonical_fingerprint(doc: &serde_json::Value) -> [u8; 16] {
    let mut h = Sha256::new();
    h.update([1u8]);
    // Writing a Value into a hasher cannot fail.
    let _ = serde_json::to_writer(&mut h, doc);
    let mut out = [0u8; 16];
    out.copy_from_slice(&h.finalize()[..16]);
    out
}

/// The fingerprint of a payload: the first 16 bytes of SHA-256 over a tag
/// byte (0 tombstone, 1 value) and the value.
pub fn fingerprint(value: Option<&[u8]>) -> [u8; 16] {
    let mut h = Sha256::new();
    match value {
        None => h.update([0u8]),
        Some(v) => {
            h.update([1u8]);
            h.update(v);
        }
    }
    let d = h.finalize();
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

/// What became of the event that first recorded a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It was processed and its outputs published.
    Processed = 1,
    /// It was sent to the dead-letter topic.
    DeadLettered = 2,
    /// The component failed on it and `on_error = "skip"` dropped it.
    Skipped = 3,
}

/// What is stored per key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRecord {
    /// Fingerprint of the first payload.
    pub fingerprint: [u8; 16],
    /// When the key was recorded, ms since the Unix epoch (wall clock).
    pub recorded_ms: u64,
    /// When it expires, ms since the Unix epoch.
    pub expires_ms: u64,
    /// What became of the event.
    pub outcome: Outcome,
}

impl KeyRecord {
    /// The 33 bytes stored per key: fingerprint, recorded and expiry times
    /// (big-endian ms), outcome.
    pub fn encode(&self) -> [u8; 33] {
        let mut b = [0u8; 33];
        b[..16].copy_from_slice(&self.fingerprint);
        b[16..24].copy_from_slice(&self.recorded_ms.to_be_bytes());
        b[24..32].copy_from_slice(&self.expires_ms.to_be_bytes());
        b[32] = self.outcome as u8;
        b
    }

    /// The 37 bytes stored per key since versions are numbered: the 33 of
    /// [`KeyRecord::encode`], then the number of the version that recorded
    /// it (big-endian u32, see [`version_number_in`]).
    pub fn encode_with_version(&self, version: u32) -> [u8; 37] {
        let mut b = [0u8; 37];
        b[..33].copy_from_slice(&self.encode());
        b[33..].copy_from_slice(&version.to_be_bytes());
        b
    }

    /// The record [`KeyRecord::encode`] or [`KeyRecord::encode_with_version`]
    /// wrote; `None` for other bytes.
    pub fn decode(b: &[u8]) -> Option<KeyRecord> {
        if b.len() != 33 && b.len() != 37 {
            return None;
        }
        Some(KeyRecord {
            fingerprint: b[..16].try_into().ok()?,
            recorded_ms: u64::from_be_bytes(b[16..24].try_into().ok()?),
            expires_ms: u64::from_be_bytes(b[24..32].try_into().ok()?),
            outcome: match b[32] {
                1 => Outcome::Processed,
                2 => Outcome::DeadLettered,
                3 => Outcome::Skipped,
                _ => return None,
            },
        })
    }
}

/// How an event relates to the keys seen before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The key is new: process the event.
    New,
    /// Seen with the same payload: skip it.
    Duplicate,
    /// Seen with a different payload: dead-letter it.
    Conflict,
}

/// Compares a payload fingerprint with what is stored under its key.
pub fn verdict(stored: Option<&KeyRecord>, fingerprint: &[u8; 16]) -> Verdict {
    match stored {
        None => Verdict::New,
        Some(k) if &k.fingerprint == fingerprint => Verdict::Duplicate,
        Some(_) => Verdict::Conflict,
    }
}

/// (scope, key) → [`KeyRecord`]. A scope is a processor's name (or
/// `<name>#<epoch>`), or on Kafka a partition's ([`partition_scope`]).
const KEYS: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("idempotency.keys");
/// (scope, expires_ms, key) → (): the keys of each scope in expiry order,
/// so a purge reads only what expired (its cost grows with what expires,
/// not with what is kept).
const EXPIRY: TableDefinition<(&str, u64, &[u8]), ()> =
    TableDefinition::new("idempotency.expiry_by_scope");
/// (expires_ms, scope, key) → (): the expiry index of data dirs written
/// before it was kept per scope; moved into [`EXPIRY`] by the next purge.
const OLD_EXPIRY: TableDefinition<(u64, &str, &[u8]), ()> =
    TableDefinition::new("idempotency.expiry");
/// A conflict in expiry order: (scope, expires_ms, key, fingerprint).
type ConflictExpiryKey<'a> = (&'a str, u64, &'a [u8], &'a [u8]);
/// (scope, expires_ms, key, fingerprint) → (): conflicts in expiry order.
const CONFLICT_EXPIRY: TableDefinition<ConflictExpiryKey<'static>, ()> =
    TableDefinition::new("idempotency.conflict_expiry");

/// The record of `key` for `processor`, if any, as of `txn`. An expired key
/// that was not purged yet still counts.
///
/// # Errors
///
/// Storage errors.
pub fn lookup(
    txn: &ReadTransaction,
    processor: &str,
    key: &[u8],
) -> Result<Option<KeyRecord>, StorageError> {
    let table = match txn.open_table(KEYS) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(table
        .get((processor, key))?
        .and_then(|g| KeyRecord::decode(g.value())))
}

/// The keys table opened once in a read transaction, for looking up a
/// batch's keys ([`lookup`] opens it per call).
pub struct KeyReader(Option<KeysTable>);

/// [`KEYS`] opened for reading.
type KeysTable = redb::ReadOnlyTable<(&'static str, &'static [u8]), &'static [u8]>;

impl KeyReader {
    /// Opens the keys as of `txn`.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn open(txn: &ReadTransaction) -> Result<KeyReader, StorageError> {
        match txn.open_table(KEYS) {
            Ok(t) => Ok(KeyReader(Some(t))),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(KeyReader(None)),
            Err(e) => Err(e.into()),
        }
    }

    /// What [`lookup`] gives for `key` of `scope`.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn get(&self, scope: &str, key: &[u8]) -> Result<Option<KeyRecord>, StorageError> {
        let Some(t) = &self.0 else {
            return Ok(None);
        };
        Ok(t.get((scope, key))?
            .and_then(|g| KeyRecord::decode(g.value())))
    }
}

/// (processor, key, fingerprint) → expires_ms: payloads already dead-lettered
/// as conflicts, so the same conflicting event delivered again is a duplicate
/// rather than a second dead letter.
const CONFLICTS: TableDefinition<(&str, &[u8], &[u8]), u64> =
    TableDefinition::new("idempotency.conflicts");

/// Whether `processor` already dead-lettered a conflict of `key` with this
/// `fingerprint`, as of `txn`.
///
/// # Errors
///
/// Storage errors.
pub fn conflict_seen(
    txn: &ReadTransaction,
    processor: &str,
    key: &[u8],
    fingerprint: &[u8; 16],
) -> Result<bool, StorageError> {
    match txn.open_table(CONFLICTS) {
        Ok(t) => Ok(t.get((processor, key, &fingerprint[..]))?.is_some()),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Remembers, inside `txn`, that a conflict of `key` with `fingerprint` was
/// dead-lettered; forgotten after `expires_ms`.
///
/// # Errors
///
/// Storage errors.
pub fn mark_conflict_in(
    txn: &WriteTransaction,
    processor: &str,
    key: &[u8],
    fingerprint: &[u8; 16],
    expires_ms: u64,
) -> Result<(), StorageError> {
    let old = txn
        .open_table(CONFLICTS)?
        .insert((processor, key, &fingerprint[..]), expires_ms)?
        .map(|g| g.value());
    let mut index = txn.open_table(CONFLICT_EXPIRY)?;
    if let Some(old) = old {
        index.remove((processor, old, key, &fingerprint[..]))?;
    }
    index.insert((processor, expires_ms, key, &fingerprint[..]), ())?;
    Ok(())
}

/// Forgets, inside `txn`, the conflict of `key` with `fingerprint`.
///
/// # Errors
///
/// Storage errors.
pub fn remove_conflict_in(
    txn: &WriteTransaction,
    scope: &str,
    key: &[u8],
    fingerprint: &[u8],
) -> Result<(), StorageError> {
    let old = txn
        .open_table(CONFLICTS)?
        .remove((scope, key, fingerprint))?
        .map(|g| g.value());
    if let Some(old) = old {
        txn.open_table(CONFLICT_EXPIRY)?
            .remove((scope, old, key, fingerprint))?;
    }
    Ok(())
}

/// Records `key` for `processor` inside `txn`, unless it is already there.
/// Returns whether it was recorded.
///
/// # Errors
///
/// Storage errors.
pub fn mark_in(
    txn: &WriteTransaction,
    processor: &str,
    key: &[u8],
    record: &KeyRecord,
) -> Result<bool, StorageError> {
    let mut keys = txn.open_table(KEYS)?;
    if keys.get((processor, key))?.is_some() {
        return Ok(false);
    }
    keys.insert((processor, key), record.encode().as_slice())?;
    txn.open_table(EXPIRY)?
        .insert((processor, record.expires_ms, key), ())?;
    Ok(true)
}

/// Records each `(scope, key, record)` of `entries`, in order, inside `txn`,
/// as processed by `version`, with each table opened once. Returns, for
/// each entry, whether its key was new (a key recorded already, before or
/// earlier in `entries`, keeps its first record and version).
///
/// # Errors
///
/// Storage errors.
pub fn mark_all_in(
    txn: &WriteTransaction,
    entries: &[(&str, &[u8], KeyRecord)],
    version: &str,
) -> Result<Vec<bool>, StorageError> {
    let number = version_number_in(txn, version)?;
    let mut marked = Vec::with_capacity(entries.len());
    let mut keys = txn.open_table(KEYS)?;
    let mut expiry = txn.open_table(EXPIRY)?;
    for (scope, key, record) in entries {
        let stored = record.encode_with_version(number);
        // One descent of the tree for a new key (nearly every one); a key
        // recorded already gets its first record back.
        let first = keys
            .insert((*scope, *key), stored.as_slice())?
            .map(|old| old.value().to_vec());
        if let Some(first) = &first {
            keys.insert((*scope, *key), first.as_slice())?;
        } else {
            expiry.insert((*scope, record.expires_ms, *key), ())?;
        }
        marked.push(first.is_none());
    }
    Ok(marked)
}

/// version (component SHA-256, hex) → its number, stored with each key it
/// recorded (4 bytes rather than 64 and a second copy of the key).
const VERSION_NUMBERS: TableDefinition<&str, u32> =
    TableDefinition::new("idempotency.version_numbers");
/// number → version: the inverse of [`VERSION_NUMBERS`].
const VERSION_NAMES: TableDefinition<u32, &str> = TableDefinition::new("idempotency.version_names");

/// The number of `version` in this data dir, given inside `txn` when it
/// has none yet (0, 1, 2 … in the order versions first record a key).
///
/// # Errors
///
/// Storage errors.
pub fn version_number_in(txn: &WriteTransaction, version: &str) -> Result<u32, StorageError> {
    let mut numbers = txn.open_table(VERSION_NUMBERS)?;
    if let Some(n) = numbers.get(version)? {
        return Ok(n.value());
    }
    let mut names = txn.open_table(VERSION_NAMES)?;
    let next = names.last()?.map_or(0, |(n, _)| n.value() + 1);
    names.insert(next, version)?;
    numbers.insert(version, next)?;
    Ok(next)
}

/// The version stored with a key's bytes, by number, as of `txn`; `None`
/// for a key recorded without one (or before versions were numbered: see
/// [`VERSIONS`]).
fn stored_version(txn: &ReadTransaction, stored: &[u8]) -> Result<Option<String>, StorageError> {
    let Some(number) = stored.get(33..37) else {
        return Ok(None);
    };
    let number = u32::from_be_bytes(number.try_into().unwrap_or_default());
    match txn.open_table(VERSION_NAMES) {
        Ok(t) => Ok(t.get(number)?.map(|g| g.value().to_owned())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Sets `key` of `scope` to `record` processed by `version`, inside `txn`,
/// whatever was there: what a restore from a changelog does.
///
/// # Errors
///
/// Storage errors.
pub fn put_key_in(
    txn: &WriteTransaction,
    scope: &str,
    key: &[u8],
    record: &KeyRecord,
    version: &str,
) -> Result<(), StorageError> {
    remove_key_in(txn, scope, key)?;
    mark_all_in(txn, &[(scope, key, *record)], version)?;
    Ok(())
}

/// Forgets `key` of `scope` inside `txn` (an expired key).
///
/// # Errors
///
/// Storage errors.
pub fn remove_key_in(txn: &WriteTransaction, scope: &str, key: &[u8]) -> Result<(), StorageError> {
    let old = txn
        .open_table(KEYS)?
        .remove((scope, key))?
        .and_then(|g| KeyRecord::decode(g.value()));
    if let Some(old) = old {
        txn.open_table(EXPIRY)?
            .remove((scope, old.expires_ms, key))?;
    }
    txn.open_table(VERSIONS)?.remove((scope, key))?;
    Ok(())
}

/// (processor, key) → the version (component SHA-256, hex) that processed
/// the event that recorded the key: how data dirs kept versions before they
/// were numbered and stored with the key ([`KeyRecord::encode_with_version`]).
/// Read and cleared, no longer written.
const VERSIONS: TableDefinition<(&str, &[u8]), &str> = TableDefinition::new("idempotency.versions");

/// Every key of `processor` (a key scope: the processor's name, or
/// `<name>#<epoch>` after a replay with reprocessing) with the version that
/// processed its event, sorted by key. Keys recorded without a version are
/// left out.
///
/// # Errors
///
/// Storage errors.
pub fn versions(
    db: &redb::Database,
    processor: &str,
) -> Result<Vec<(Vec<u8>, String)>, StorageError> {
    use redb::ReadableDatabase;
    let txn = db.begin_read()?;
    let mut out = Vec::new();
    let lo: (&str, &[u8]) = (processor, &[]);
    match txn.open_table(KEYS) {
        Ok(t) => {
            let mut names: HashMap<Vec<u8>, Option<String>> = HashMap::new();
            for e in t.range(lo..)? {
                let (k, v) = e?;
                let (p, key) = k.value();
                if p != processor {
                    break;
                }
                let stored = v.value();
                let Some(number) = stored.get(33..37) else {
                    continue;
                };
                let name = match names.get(number) {
                    Some(name) => name.clone(),
                    None => {
                        let name = stored_version(&txn, stored)?;
                        names.insert(number.to_vec(), name.clone());
                        name
                    }
                };
                if let Some(name) = name {
                    out.push((key.to_vec(), name));
                }
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    match txn.open_table(VERSIONS) {
        Ok(t) => {
            for e in t.range(lo..)? {
                let (k, v) = e?;
                let (p, key) = k.value();
                if p != processor {
                    break;
                }
                out.push((key.to_vec(), v.value().to_owned()));
            }
        }
        Err(redb::TableError::TableDoesNotExist(_)) => {}
        Err(e) => return Err(e.into()),
    }
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    Ok(out)
}

/// What redb knows of the first event that recorded a key: when, what
/// became of it, which version processed it, and whether a payload matches it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct FirstProcessing {
    /// The key scope: the processor's name, or `<name>#<epoch>` after a
    /// replay with reprocessing.
    pub scope: String,
    /// When the key was recorded (the batch's commit), ms since the Unix epoch.
    pub recorded_ms: u64,
    /// What became of the event: `processed`, `dead-lettered` or `skipped`.
    pub outcome: &'static str,
    /// The version (component SHA-256) that processed it; `None` for keys
    /// recorded before versions were noted.
    pub version: Option<String>,
    /// Whether the payload asked about is the one the key was recorded with
    /// (same fingerprint): `false` means a conflict.
    pub same_payload: bool,
}

impl Outcome {
    /// The outcome's name: `processed`, `dead-lettered` or `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Processed => "processed",
            Outcome::DeadLettered => "dead-lettered",
            Outcome::Skipped => "skipped",
        }
    }
}

/// The first processing of `key` in `scope`, as of `txn`, compared with a
/// payload's `fingerprint`; `None` when the key was never recorded (or
/// expired and was purged).
///
/// # Errors
///
/// Storage errors.
pub fn first_processing(
    txn: &ReadTransaction,
    scope: &str,
    key: &[u8],
    fingerprint: &[u8; 16],
) -> Result<Option<FirstProcessing>, StorageError> {
    let stored = match txn.open_table(KEYS) {
        Ok(t) => t.get((scope, key))?.map(|g| g.value().to_vec()),
        Err(redb::TableError::TableDoesNotExist(_)) => None,
        Err(e) => return Err(e.into()),
    };
    let Some(record) = stored.as_deref().and_then(KeyRecord::decode) else {
        return Ok(None);
    };
    let version = match stored_version(txn, stored.as_deref().unwrap_or_default())? {
        Some(v) => Some(v),
        None => match txn.open_table(VERSIONS) {
            Ok(t) => t.get((scope, key))?.map(|g| g.value().to_owned()),
            Err(redb::TableError::TableDoesNotExist(_)) => None,
            Err(e) => return Err(e.into()),
        },
    };
    Ok(Some(FirstProcessing {
        scope: scope.to_owned(),
        recorded_ms: record.recorded_ms,
        outcome: record.outcome.as_str(),
        version,
        same_payload: &record.fingerprint == fingerprint,
    }))
}

/// What expired in one scope: its keys, and its conflicts as (key, fingerprint).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Expired {
    /// Expired idempotency keys.
    pub keys: Vec<Vec<u8>>,
    /// Expired conflicts: (key, fingerprint).
    pub conflicts: Vec<(Vec<u8>, Vec<u8>)>,
}

impl Expired {
    /// How many entries expired.
    pub fn len(&self) -> usize {
        self.keys.len() + self.conflicts.len()
    }

    /// Whether nothing expired.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What expired before `now_ms` in `scope`, at most `limit` entries of
/// each kind; reads only the expired entries of the expiry indexes.
///
/// # Errors
///
/// Storage errors.
pub fn expired_in(
    txn: &WriteTransaction,
    scope: &str,
    now_ms: u64,
    limit: usize,
) -> Result<Expired, StorageError> {
    let mut out = Expired::default();
    let lo: (&str, u64, &[u8]) = (scope, 0, &[]);
    let hi: (&str, u64, &[u8]) = (scope, now_ms, &[]);
    for e in txn.open_table(EXPIRY)?.range(lo..hi)?.take(limit) {
        out.keys.push(e?.0.value().2.to_vec());
    }
    let lo: (&str, u64, &[u8], &[u8]) = (scope, 0, &[], &[]);
    let hi: (&str, u64, &[u8], &[u8]) = (scope, now_ms, &[], &[]);
    for e in txn.open_table(CONFLICT_EXPIRY)?.range(lo..hi)?.take(limit) {
        let (k, _) = e?;
        let (_, _, key, fp) = k.value();
        out.conflicts.push((key.to_vec(), fp.to_vec()));
    }
    Ok(out)
}

/// Removes `expired` (found by [`expired_in`]) from `scope` inside `txn`.
///
/// # Errors
///
/// Storage errors.
pub fn remove_expired_in(
    txn: &WriteTransaction,
    scope: &str,
    expired: &Expired,
) -> Result<(), StorageError> {
    for k in &expired.keys {
        remove_key_in(txn, scope, k)?;
    }
    for (k, fp) in &expired.conflicts {
        remove_conflict_in(txn, scope, k, fp)?;
    }
    Ok(())
}

/// The scopes that have anything in the expiry indexes, each once: a skip
/// scan (one lookup per scope, not per key).
fn scopes_with_expiry(txn: &WriteTransaction) -> Result<Vec<String>, StorageError> {
    let mut scopes = Vec::new();
    let keys = txn.open_table(EXPIRY)?;
    let conflicts = txn.open_table(CONFLICT_EXPIRY)?;
    let mut after = String::new();
    loop {
        let lo: (&str, u64, &[u8]) = (&after, 0, &[]);
        let a = keys
            .range(lo..)?
            .next()
            .transpose()?
            .map(|(k, _)| k.value().0.to_owned());
        let lo: (&str, u64, &[u8], &[u8]) = (&after, 0, &[], &[]);
        let b = conflicts
            .range(lo..)?
            .next()
            .transpose()?
            .map(|(k, _)| k.value().0.to_owned());
        let Some(next) = [a, b].into_iter().flatten().min() else {
            return Ok(scopes);
        };
        // The smallest string after every entry of `next`'s scope.
        after = format!("{next}\0");
        scopes.push(next);
    }
}

/// What expired before `now_ms` in each scope within `range` (a
/// partition's scopes, [`partition_scope_range`]), at most `limit` entries
/// of each kind in all.
///
/// # Errors
///
/// Storage errors.
pub fn expired_in_range(
    txn: &WriteTransaction,
    range: &(String, String),
    now_ms: u64,
    limit: usize,
) -> Result<Vec<(String, Expired)>, StorageError> {
    let mut out = Vec::new();
    let mut left = limit;
    let mut from = range.0.clone();
    while left > 0 {
        let next = {
            let keys = txn.open_table(EXPIRY)?;
            let conflicts = txn.open_table(CONFLICT_EXPIRY)?;
            let lo: (&str, u64, &[u8]) = (&from, 0, &[]);
            let hi: (&str, u64, &[u8]) = (&range.1, 0, &[]);
            let a = keys
                .range(lo..hi)?
                .next()
                .transpose()?
                .map(|(k, _)| k.value().0.to_owned());
            let lo: (&str, u64, &[u8], &[u8]) = (&from, 0, &[], &[]);
            let hi: (&str, u64, &[u8], &[u8]) = (&range.1, 0, &[], &[]);
            let b = conflicts
                .range(lo..hi)?
                .next()
                .transpose()?
                .map(|(k, _)| k.value().0.to_owned());
            [a, b].into_iter().flatten().min()
        };
        let Some(scope) = next else { break };
        let expired = expired_in(txn, &scope, now_ms, left)?;
        left = left.saturating_sub(expired.keys.len().max(expired.conflicts.len()));
        from = format!("{scope}\0");
        if !expired.is_empty() {
            out.push((scope, expired));
        }
    }
    Ok(out)
}

/// Moves a data dir's old expiry index (time first) into [`EXPIRY`].
fn migrate_old_expiry(txn: &WriteTransaction) -> Result<(), StorageError> {
    let entries: Vec<(u64, String, Vec<u8>)> = match txn.open_table(OLD_EXPIRY) {
        Ok(t) => t
            .iter()?
            .map(|e| {
                e.map(|(k, _)| {
                    let (t, s, key) = k.value();
                    (t, s.to_owned(), key.to_vec())
                })
            })
            .collect::<Result<_, _>>()?,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut index = txn.open_table(EXPIRY)?;
    for (t, s, key) in &entries {
        index.insert((s.as_str(), *t, key.as_slice()), ())?;
    }
    drop(index);
    txn.delete_table(OLD_EXPIRY)?;
    let conflicts = txn.open_table(CONFLICTS)?;
    let mut index = txn.open_table(CONFLICT_EXPIRY)?;
    if index.is_empty()? {
        for e in conflicts.iter()? {
            let (k, v) = e?;
            let (s, key, fp) = k.value();
            index.insert((s, v.value(), key, fp), ())?;
        }
    }
    Ok(())
}

/// Removes every key and conflict of the processor-wide scopes that expired
/// before `now_ms`, in one transaction; returns how many were removed. The
/// scopes of Kafka partitions ([`partition_scope`]) are left alone: the
/// host that owns a partition expires its keys and records it in the
/// partition's changelog. Reads only the expired entries.
///
/// # Errors
///
/// Storage errors.
pub fn purge_expired(db: &redb::Database, now_ms: u64) -> Result<u64, StorageError> {
    let txn = db.begin_write()?;
    migrate_old_expiry(&txn)?;
    let mut removed = 0;
    for scope in scopes_with_expiry(&txn)? {
        if is_partition_scope(&scope) {
            continue;
        }
        let expired = expired_in(&txn, &scope, now_ms, usize::MAX)?;
        remove_expired_in(&txn, &scope, &expired)?;
        removed += expired.len() as u64;
    }
    txn.commit()?;
    Ok(removed)
}

/// The key and state scope of input partition `topic`/`partition` of
/// processor `name` in idempotency `epoch`, where keys and state follow
/// their partition (Kafka): `<name>@<topic>/<partition>`, with `#<epoch>`
/// after it in a reprocessing epoch. (Names and topics have no `@`, `/` or `#`.)
pub fn partition_scope(name: &str, topic: &str, partition: u32, epoch: u64) -> Arc<str> {
    if epoch == 0 {
        format!("{name}@{topic}/{partition}").into()
    } else {
        format!("{name}@{topic}/{partition}#{epoch}").into()
    }
}

/// Whether `scope` is a partition's ([`partition_scope`]).
pub fn is_partition_scope(scope: &str) -> bool {
    scope.contains('@')
}

/// The range of scope strings that holds every scope of one partition
/// (every epoch): from `<name>@<topic>/<partition>` (inclusive) to the same
/// followed by `$` (exclusive): `#` sorts just below `$`, digits above it.
pub fn partition_scope_range(name: &str, topic: &str, partition: u32) -> (String, String) {
    let base = format!("{name}@{topic}/{partition}");
    let end = format!("{base}$");
    (base, end)
}

/// Removes, inside `txn`, every key, version and conflict of the scopes in
/// `range` ([`partition_scope_range`]).
///
/// # Errors
///
/// Storage errors.
pub fn clear_scopes_in(
    txn: &WriteTransaction,
    range: &(String, String),
) -> Result<(), StorageError> {
    let (lo, hi) = (range.0.as_str(), range.1.as_str());
    let empty: &[u8] = &[];
    txn.open_table(KEYS)?
        .retain_in((lo, empty)..(hi, empty), |_, _| false)?;
    txn.open_table(VERSIONS)?
        .retain_in((lo, empty)..(hi, empty), |_, _| false)?;
    txn.open_table(EXPIRY)?
        .retain_in((lo, 0, empty)..(hi, 0, empty), |_, _| false)?;
    txn.open_table(CONFLICTS)?
        .retain_in((lo, empty, empty)..(hi, empty, empty), |_, _| false)?;
    txn.open_table(CONFLICT_EXPIRY)?
        .retain_in((lo, 0, empty, empty)..(hi, 0, empty, empty), |_, _| false)?;
    Ok(())
}

/// On outputs of a replay with reprocessing: the `idempotency-key` the same
/// output had in epoch 0, which downstream stores can upsert on.
pub const UPSERT_KEY_HEADER: &str = "tidewater-upsert-key";
/// On outputs of a replay with reprocessing: the idempotency epoch (decimal).
pub const EPOCH_HEADER: &str = "tidewater-epoch";

/// `record`, an output of an event processed in idempotency `epoch`: in
/// epoch 0 unchanged; after, its `idempotency-key` gets `#<epoch>` appended
/// (so downstream processors take it as new) and it carries the old key in
/// [`UPSERT_KEY_HEADER`] and the epoch in [`EPOCH_HEADER`].
pub fn in_epoch(mut record: Record, epoch: u64) -> Record {
    if epoch == 0 {
        return record;
    }
    let header = HEADER;
    if let Some(pos) = record.headers.iter().position(|(n, _)| n == header) {
        let old = record.headers[pos].1.clone();
        let mut new = old.clone();
        new.extend_from_slice(format!("#{epoch}").as_bytes());
        record.headers[pos].1 = new;
        record.headers.push((UPSERT_KEY_HEADER.to_owned(), old));
        record
            .headers
            .push((EPOCH_HEADER.to_owned(), epoch.to_string().into_bytes()));
    }
    record
}

/// The scope of idempotency keys of `processor` in `epoch`: its name in
/// epoch 0, `<name>#<epoch>` after a replay with reprocessing.
pub fn key_scope(name: &str, epoch: u64) -> Arc<str> {
    if epoch == 0 {
        name.into()
    } else {
        format!("{name}#{epoch}").into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use proptest::prelude::*;
    use redb::ReadableDatabase;

    fn event(key: Option<&[u8]>, value: Option<&[u8]>, headers: Vec<(&str, &[u8])>) -> LogRecord {
        LogRecord {
            topic: "t".into(),
            partition: 2,
            offset: 7,
            append_ms: 0,
            record: Record {
                timestamp_ms: 0,
                key: key.map(<[u8]>::to_vec),
                value: value.map(<[u8]>::to_vec),
                headers: headers
                    .into_iter()
                    .map(|(n, v)| (n.to_owned(), v.to_vec()))
                    .collect(),
            },
        }
    }

    #[test]
    fn modes_parse_and_print() {
        for m in [
            "record-key",
            "hash",
            "offset",
            "json:/device,/ts",
            "json:/a/b",
        ] {
            assert_eq!(m.parse::<KeyMode>().unwrap().to_string(), m);
        }
        for bad in ["", "json:", "json:device", "json:/a,b", "md5"] {
            assert_eq!(bad.parse::<KeyMode>(), Err(BadKeyMode(bad.into())));
        }
    }

    #[test]
    fn header_wins_over_every_mode() {
        let e = event(Some(b"k"), Some(b"{}"), vec![(HEADER, &[0xff, 1])]);
        for m in [
            KeyMode::RecordKey,
            KeyMode::Hash,
            KeyMode::Offset,
            KeyMode::Json(vec!["/x".into()]),
        ] {
            assert_eq!(derive_key(&m, &e).unwrap(), [0xff, 1]);
        }
    }

    #[test]
    fn each_mode_derives_its_key() {
        let e = event(
            Some(b"dev-1"),
            Some(br#"{"ts":"t1","device":"dev-1","n":{"b":1,"a":2}}"#),
            vec![],
        );
        assert_eq!(derive_key(&KeyMode::RecordKey, &e).unwrap(), b"dev-1");
        assert_eq!(derive_key(&KeyMode::Offset, &e).unwrap(), b"t/2/7");
        assert_eq!(
            derive_key(&"json:/device,/ts".parse().unwrap(), &e).unwrap(),
            br#"["dev-1","t1"]"#
        );
        assert_eq!(
            derive_key(&"json:/n".parse().unwrap(), &e).unwrap(),
            br#"[{"a":2,"b":1}]"#
        );
        let h = derive_key(&KeyMode::Hash, &e).unwrap();
        assert_eq!(h.len(), 32);
        // Moving a byte from the key to the value changes the hash.
        let moved = event(
            Some(b"dev-"),
            Some(br#"1{"ts":"t1","device":"dev-1","n":{"b":1,"a":2}}"#),
            vec![],
        );
        assert_ne!(derive_key(&KeyMode::Hash, &moved).unwrap(), h);
    }

    #[test]
    fn underivable_keys_say_why() {
        let e = event(None, Some(br#"{"device":"d"}"#), vec![]);
        assert_eq!(
            derive_key(&KeyMode::RecordKey, &e),
            Err(KeyError::NoRecordKey)
        );
        assert_eq!(
            derive_key(&"json:/device,/ts".parse().unwrap(), &e),
            Err(KeyError::MissingPointer("/ts".into()))
        );
        let not_json = event(None, Some(b"nope"), vec![]);
        assert!(matches!(
            derive_key(&"json:/a".parse().unwrap(), &not_json),
            Err(KeyError::NotJson(_))
        ));
        let tombstone = event(None, None, vec![]);
        assert_eq!(
            derive(&"json:/a".parse().unwrap(), &tombstone),
            Ok((b"t/2/7".to_vec(), fingerprint(None))),
            "a tombstone is keyed by its position"
        );
    }

    #[test]
    fn json_fingerprint_ignores_field_order_and_spacing() {
        let mode: KeyMode = "json:/id".parse().unwrap();
        let a = derive(&mode, &event(None, Some(br#"{"id":"a","v":1}"#), vec![])).unwrap();
        let b = derive(
            &mode,
            &event(None, Some(br#"{ "v": 1, "id": "a" }"#), vec![]),
        )
        .unwrap();
        let c = derive(&mode, &event(None, Some(br#"{"id":"a","v":2}"#), vec![])).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.0, c.0);
        assert_ne!(a.1, c.1);
    }

    #[test]
    fn repeated_json_field_counts_last() {
        let e = event(None, Some(br#"{"a":1,"a":2}"#), vec![]);
        assert_eq!(derive_key(&"json:/a".parse().unwrap(), &e).unwrap(), b"[2]");
    }

    #[test]
    fn a_json_payload_is_fingerprinted_as_its_canonical_text() {
        let doc: serde_json::Value =
            serde_json::from_str(r#"{"b":1,"a":[1.5,"x\u00e9"]}"#).unwrap();
        assert_eq!(
            canonical_fingerprint(&doc),
            fingerprint(Some(r#"{"a":[1.5,"xé"],"b":1}"#.as_bytes()))
        );
    }

    #[test]
    fn fingerprint_tells_tombstone_from_empty() {
        assert_ne!(fingerprint(None), fingerprint(Some(b"")));
        assert_eq!(fingerprint(Some(b"x")), fingerprint(Some(b"x")));
    }

    #[test]
    fn store_mark_lookup_purge() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        let rec = |fp: u8, expires_ms| KeyRecord {
            fingerprint: [fp; 16],
            recorded_ms: 1,
            expires_ms,
            outcome: Outcome::Processed,
        };
        let txn = db.begin_write().unwrap();
        mark_in(&txn, "p", b"a", &rec(1, 100)).unwrap();
        mark_in(&txn, "p", b"b", &rec(2, 300)).unwrap();
        // The first record of a key wins.
        mark_in(&txn, "p", b"a", &rec(9, 999)).unwrap();
        mark_in(&txn, "other", b"a", &rec(3, 100)).unwrap();
        txn.commit().unwrap();
        let r = db.begin_read().unwrap();
        assert_eq!(lookup(&r, "p", b"a").unwrap(), Some(rec(1, 100)));
        assert_eq!(lookup(&r, "other", b"a").unwrap(), Some(rec(3, 100)));
        assert_eq!(lookup(&r, "p", b"zz").unwrap(), None);
        drop(r);
        assert_eq!(purge_expired(&db, 200).unwrap(), 2);
        let r = db.begin_read().unwrap();
        assert_eq!(lookup(&r, "p", b"a").unwrap(), None);
        assert_eq!(lookup(&r, "p", b"b").unwrap(), Some(rec(2, 300)));
    }

    #[test]
    fn first_processing_names_the_version_the_time_and_the_payload_match() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        let txn = db.begin_write().unwrap();
        let rec = KeyRecord {
            fingerprint: [7; 16],
            recorded_ms: 1234,
            expires_ms: 9999,
            outcome: Outcome::DeadLettered,
        };
        assert_eq!(
            mark_all_in(&txn, &[("p", b"k", rec), ("p", b"k", rec)], "abc").unwrap(),
            [true, false]
        );
        // The first version noted wins, as the first record does.
        assert_eq!(
            mark_all_in(&txn, &[("p", b"k", rec)], "def").unwrap(),
            [false]
        );
        assert_eq!(
            mark_all_in(&txn, &[("p", b"m", rec)], "def").unwrap(),
            [true]
        );
        mark_in(&txn, "p", b"old", &rec).unwrap();
        // A data dir from before versions were numbered.
        mark_in(&txn, "p", b"legacy", &rec).unwrap();
        txn.open_table(VERSIONS)
            .unwrap()
            .insert(("p", &b"legacy"[..]), "0ld")
            .unwrap();
        txn.commit().unwrap();
        assert_eq!(
            versions(&db, "p").unwrap(),
            [
                (b"k".to_vec(), "abc".to_owned()),
                (b"legacy".to_vec(), "0ld".to_owned()),
                (b"m".to_vec(), "def".to_owned()),
            ]
        );
        let r = db.begin_read().unwrap();
        assert_eq!(
            first_processing(&r, "p", b"k", &[7; 16]).unwrap(),
            Some(FirstProcessing {
                scope: "p".into(),
                recorded_ms: 1234,
                outcome: "dead-lettered",
                version: Some("abc".into()),
                same_payload: true,
            })
        );
        let other = first_processing(&r, "p", b"k", &[8; 16]).unwrap().unwrap();
        assert!(!other.same_payload);
        assert_eq!(
            first_processing(&r, "p", b"old", &[7; 16])
                .unwrap()
                .unwrap()
                .version,
            None
        );
        assert_eq!(
            first_processing(&r, "p", b"legacy", &[7; 16])
                .unwrap()
                .unwrap()
                .version
                .as_deref(),
            Some("0ld")
        );
        assert_eq!(first_processing(&r, "p#1", b"k", &[7; 16]).unwrap(), None);
    }

    #[test]
    fn verdicts() {
        let k = KeyRecord {
            fingerprint: [1; 16],
            recorded_ms: 0,
            expires_ms: 0,
            outcome: Outcome::Processed,
        };
        assert_eq!(verdict(None, &[1; 16]), Verdict::New);
        assert_eq!(verdict(Some(&k), &[1; 16]), Verdict::Duplicate);
        assert_eq!(verdict(Some(&k), &[2; 16]), Verdict::Conflict);
    }

    proptest! {
        #[test]
        fn json_key_ignores_field_order(fields in proptest::collection::btree_map("[a-z]{1,4}", any::<i32>(), 1..6)) {
            let forward: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
            let backward: Vec<String> = forward.iter().rev().cloned().collect();
            let a = format!("{{\"o\":{{{}}}}}", forward.join(","));
            let b = format!("{{\"o\":{{{}}}}}", backward.join(","));
            let mode: KeyMode = "json:/o".parse().unwrap();
            prop_assert_eq!(
                derive_key(&mode, &event(None, Some(a.as_bytes()), vec![])).unwrap(),
                derive_key(&mode, &event(None, Some(b.as_bytes()), vec![])).unwrap()
            );
        }

        #[test]
        fn key_record_round_trips(fp in any::<[u8; 16]>(), a in any::<u64>(), b in any::<u64>(), dl in 0usize..3) {
            let k = KeyRecord { fingerprint: fp, recorded_ms: a, expires_ms: b, outcome: [Outcome::Processed, Outcome::DeadLettered, Outcome::Skipped][dl] };
            prop_assert_eq!(KeyRecord::decode(&k.encode()), Some(k));
            prop_assert_eq!(KeyRecord::decode(&k.encode_with_version(a as u32)), Some(k));
        }
    }

    #[test]
    fn epoch_zero_leaves_outputs_alone_and_later_epochs_rekey_them() {
        let r = Record {
            headers: vec![("idempotency-key".into(), b"k/p/0".to_vec())],
            ..Record::default()
        };
        assert_eq!(in_epoch(r.clone(), 0), r);
        let e = in_epoch(r, 3);
        assert_eq!(
            e.headers,
            vec![
                ("idempotency-key".into(), b"k/p/0#3".to_vec()),
                (UPSERT_KEY_HEADER.into(), b"k/p/0".to_vec()),
                (EPOCH_HEADER.into(), b"3".to_vec()),
            ]
        );
        assert_eq!(&*key_scope("p", 0), "p");
        assert_eq!(&*key_scope("p", 2), "p#2");
    }
}
