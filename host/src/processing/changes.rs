//! The local cache of a partition's state and keys, as a changelog restore
//! fills it ([`PartitionStore`]), and the changes a batch makes, as the run
//! loop hands them to a sink that keeps a changelog.
//!
//! A change's value layouts (the changelog's record values):
//! - key: the 33-byte [`KeyRecord`] followed by the version that processed
//!   the key's event (the component's SHA-256, hex);
//! - conflict: the expiry time, 8 bytes big-endian ms;
//! - state: the component's value.

use std::sync::Arc;

use redb::WriteTransaction;

use super::idempotency::{self, KeyRecord};
use crate::db::StorageError;
use crate::streams::{Change, ChangeKind, ChangeStore};

/// One processor's partition-scoped keys and state in redb: what a
/// changelog restore applies changes to.
pub struct PartitionStore {
    name: Arc<str>,
}

impl PartitionStore {
    /// The store of processor `name`.
    pub fn new(name: Arc<str>) -> Arc<Self> {
        Arc::new(PartitionStore { name })
    }
}

impl ChangeStore for PartitionStore {
    fn clear(
        &self,
        txn: &WriteTransaction,
        topic: &str,
        partition: u32,
    ) -> Result<(), StorageError> {
        let range = idempotency::partition_scope_range(&self.name, topic, partition);
        idempotency::clear_scopes_in(txn, &range)?;
        let scope = idempotency::partition_scope(&self.name, topic, partition, 0);
        super::state::clear_scope_in(txn, &scope)
    }

    fn apply(
        &self,
        txn: &WriteTransaction,
        topic: &str,
        partition: u32,
        change: &Change,
    ) -> Result<(), StorageError> {
        let scope = |epoch| idempotency::partition_scope(&self.name, topic, partition, epoch);
        match (change.kind, &change.value) {
            (ChangeKind::State, Some(v)) => super::state::put_in(txn, &scope(0), &change.key, v),
            (ChangeKind::State, None) => super::state::remove_in(txn, &scope(0), &change.key),
            (ChangeKind::Key, Some(v)) => {
                let Some((record, version)) = decode_key_value(v) else {
                    tracing::warn!(processor = %self.name, topic, partition, "a changelog key record that does not decode; skipped");
                    return Ok(());
                };
                idempotency::put_key_in(txn, &scope(change.epoch), &change.key, &record, version)
            }
            (ChangeKind::Key, None) => {
                idempotency::remove_key_in(txn, &scope(change.epoch), &change.key)
            }
            (ChangeKind::Conflict, value) => {
                let Some(split) = change.key.len().checked_sub(16) else {
                    return Ok(());
                };
                let (key, fp) = change.key.split_at(split);
                let scope = scope(change.epoch);
                match value.as_deref().and_then(|v| v.try_into().ok()) {
                    Some(expires) => idempotency::mark_conflict_in(
                        txn,
                        &scope,
                        key,
                        fp.try_into().expect("16 bytes"),
                        u64::from_be_bytes(expires),
                    ),
                    None => idempotency::remove_conflict_in(txn, &scope, key, fp),
                }
            }
        }
    }
}

/// A key's changelog value: its record, then the version that processed it.
pub(super) fn key_value(record: &KeyRecord, version: &str) -> Vec<u8> {
    let mut v = Vec::with_capacity(33 + version.len());
    v.extend_from_slice(&record.encode());
    v.extend_from_slice(version.as_bytes());
    v
}

fn decode_key_value(v: &[u8]) -> Option<(KeyRecord, &str)> {
    let record = KeyRecord::decode(v.get(..33)?)?;
    let version = std::str::from_utf8(&v[33..]).ok()?;
    Some((record, version))
}

/// A conflict's changelog key: the idempotency key, then the fingerprint.
pub(super) fn conflict_key(key: &[u8], fingerprint: &[u8; 16]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 16);
    k.extend_from_slice(key);
    k.extend_from_slice(fingerprint);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::processing::idempotency::Outcome;
    use redb::ReadableDatabase;

    #[test]
    fn changes_apply_to_their_partition_and_clear_removes_only_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        let store = PartitionStore::new("p".into());
        let record = KeyRecord {
            fingerprint: [7; 16],
            recorded_ms: 1,
            expires_ms: 100,
            outcome: Outcome::Processed,
        };
        let txn = db.begin_write().unwrap();
        for partition in [1, 12] {
            let changes = [
                Change {
                    kind: ChangeKind::Key,
                    epoch: 0,
                    key: b"k".to_vec(),
                    value: Some(key_value(&record, "abc")),
                },
                Change {
                    kind: ChangeKind::Key,
                    epoch: 2,
                    key: b"k".to_vec(),
                    value: Some(key_value(&record, "abc")),
                },
                Change {
                    kind: ChangeKind::State,
                    epoch: 0,
                    key: b"s".to_vec(),
                    value: Some(b"v".to_vec()),
                },
                Change {
                    kind: ChangeKind::Conflict,
                    epoch: 0,
                    key: conflict_key(b"k", &[9; 16]),
                    value: Some(50u64.to_be_bytes().to_vec()),
                },
            ];
            for c in &changes {
                store.apply(&txn, "in", partition, c).unwrap();
            }
        }
        txn.commit().unwrap();
        let r = db.begin_read().unwrap();
        let s1 = idempotency::partition_scope("p", "in", 1, 0);
        assert_eq!(idempotency::lookup(&r, &s1, b"k").unwrap(), Some(record));
        assert!(idempotency::conflict_seen(&r, &s1, b"k", &[9; 16]).unwrap());
        assert_eq!(
            crate::processing::state::dump(&db, &s1).unwrap(),
            [(b"s".to_vec(), b"v".to_vec())]
        );
        drop(r);

        // Clearing partition 1 leaves partition 12 (whose scope shares its prefix).
        let txn = db.begin_write().unwrap();
        store.clear(&txn, "in", 1).unwrap();
        txn.commit().unwrap();
        let r = db.begin_read().unwrap();
        let s12 = idempotency::partition_scope("p", "in", 12, 0);
        let s12e = idempotency::partition_scope("p", "in", 12, 2);
        let s1e = idempotency::partition_scope("p", "in", 1, 2);
        assert_eq!(idempotency::lookup(&r, &s1, b"k").unwrap(), None);
        assert_eq!(idempotency::lookup(&r, &s1e, b"k").unwrap(), None);
        assert!(!idempotency::conflict_seen(&r, &s1, b"k", &[9; 16]).unwrap());
        assert!(crate::processing::state::dump(&db, &s1).unwrap().is_empty());
        assert_eq!(idempotency::lookup(&r, &s12, b"k").unwrap(), Some(record));
        assert_eq!(idempotency::lookup(&r, &s12e, b"k").unwrap(), Some(record));
        drop(r);

        // A tombstone removes a key; partition scopes are not purged globally.
        let txn = db.begin_write().unwrap();
        let tombstone = Change {
            kind: ChangeKind::Key,
            epoch: 2,
            key: b"k".to_vec(),
            value: None,
        };
        store.apply(&txn, "in", 12, &tombstone).unwrap();
        txn.commit().unwrap();
        assert_eq!(idempotency::purge_expired(&db, 1_000).unwrap(), 0);
        let r = db.begin_read().unwrap();
        assert_eq!(idempotency::lookup(&r, &s12e, b"k").unwrap(), None);
        assert_eq!(idempotency::lookup(&r, &s12, b"k").unwrap(), Some(record));
    }
}
