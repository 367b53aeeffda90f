//! Per-processor key-value state (the WIT `state` interface), kept in redb.
//!
//! While a batch is processed, reads go to a snapshot taken when the batch
//! started ([`overlay`]), overlaid with the batch's own writes
//! ([`StateOverlay`]); the writes are applied in the transaction that commits
//! the batch ([`ApplyState::apply_in`]).

use std::sync::Arc;

use redb::{ReadTransaction, TableDefinition, WriteTransaction};

use crate::db::StorageError;
use crate::runtime::{StateOverlay, StateReader};

/// (processor, key) → value
const STATE: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("state");

/// A state entry: key and value bytes.
pub type Entry = (Vec<u8>, Vec<u8>);

/// A processor's committed state in redb, as of a read snapshot.
struct Snapshot(ReadTransaction);

impl StateReader for Snapshot {
    fn get(&self, scope: &str, key: &[u8]) -> Result<Option<Vec<u8>>, String> {
        let table = match self.0.open_table(STATE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(StorageError::from(e).to_string()),
        };
        table
            .get((scope, key))
            .map(|v| v.map(|g| g.value().to_vec()))
            .map_err(|e| StorageError::from(e).to_string())
    }
}

/// A view of `processor`'s state as of `snapshot` (taken when the batch
/// started), with no writes yet.
pub fn overlay(processor: Arc<str>, snapshot: ReadTransaction) -> StateOverlay {
    StateOverlay::new(processor, Box::new(Snapshot(snapshot)))
}

/// Commits a batch's state writes: [`StateOverlay::into_writes`] applied
/// inside the batch's transaction.
pub trait ApplyState {
    /// Applies the kept writes inside `txn`.
    ///
    /// # Errors
    ///
    /// Storage errors.
    fn apply_in(self, txn: &WriteTransaction) -> Result<(), StorageError>;
}

impl ApplyState for StateOverlay {
    fn apply_in(self, txn: &WriteTransaction) -> Result<(), StorageError> {
        let (scope, writes) = self.into_writes();
        apply_writes_in(txn, &scope, &writes)
    }
}

/// Applies `writes` to `scope`'s state inside `txn`.
///
/// # Errors
///
/// Storage errors.
pub fn apply_writes_in(
    txn: &WriteTransaction,
    scope: &str,
    writes: &crate::runtime::Writes,
) -> Result<(), StorageError> {
    if writes.is_empty() {
        return Ok(());
    }
    let mut table = txn.open_table(STATE)?;
    for (k, v) in writes {
        match v {
            Some(v) => {
                table.insert((scope, k.as_slice()), v.as_slice())?;
            }
            None => {
                table.remove((scope, k.as_slice()))?;
            }
        }
    }
    Ok(())
}

/// Sets `key` of `scope` to `value` inside `txn`.
///
/// # Errors
///
/// Storage errors.
pub fn put_in(
    txn: &WriteTransaction,
    scope: &str,
    key: &[u8],
    value: &[u8],
) -> Result<(), StorageError> {
    txn.open_table(STATE)?.insert((scope, key), value)?;
    Ok(())
}

/// Removes `key` of `scope` inside `txn`.
///
/// # Errors
///
/// Storage errors.
pub fn remove_in(txn: &WriteTransaction, scope: &str, key: &[u8]) -> Result<(), StorageError> {
    txn.open_table(STATE)?.remove((scope, key))?;
    Ok(())
}

/// Removes every entry of `scope` inside `txn`.
///
/// # Errors
///
/// Storage errors.
pub fn clear_scope_in(txn: &WriteTransaction, scope: &str) -> Result<(), StorageError> {
    let mut end = scope.to_owned();
    end.push('\0');
    let (lo, hi): (&[u8], &[u8]) = (&[], &[]);
    txn.open_table(STATE)?
        .retain_in((scope, lo)..(end.as_str(), hi), |_, _| false)?;
    Ok(())
}

/// Every state entry of `processor` (a state scope: a processor's name, or
/// on Kafka a partition's), sorted by key.
///
/// # Errors
///
/// Storage errors.
pub fn dump(db: &redb::Database, processor: &str) -> Result<Vec<Entry>, StorageError> {
    use redb::ReadableDatabase;
    let txn = db.begin_read()?;
    let table = match txn.open_table(STATE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let lo: (&str, &[u8]) = (processor, &[]);
    let mut out = Vec::new();
    for e in table.range(lo..)? {
        let (k, v) = e?;
        let (p, key) = k.value();
        if p != processor {
            break;
        }
        out.push((key.to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

/// One state entry of a partition scope: (scope, key, value).
pub type ScopedEntry = (String, Vec<u8>, Vec<u8>);

/// Every state entry of `processor`'s partition scopes (Kafka: one per
/// input partition, see [`super::idempotency::partition_scope`]) that this
/// data dir caches, as (scope, key, value), sorted.
///
/// # Errors
///
/// Storage errors.
pub fn dump_partitions(
    db: &redb::Database,
    processor: &str,
) -> Result<Vec<ScopedEntry>, StorageError> {
    use redb::ReadableDatabase;
    let txn = db.begin_read()?;
    let table = match txn.open_table(STATE) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let prefix = format!("{processor}@");
    let lo: (&str, &[u8]) = (&prefix, &[]);
    let mut out = Vec::new();
    for e in table.range(lo..)? {
        let (k, v) = e?;
        let (scope, key) = k.value();
        if !scope.starts_with(&prefix) {
            break;
        }
        out.push((scope.to_owned(), key.to_vec(), v.value().to_vec()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    #[test]
    fn overlay_layers_and_commits_only_kept_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        let p: Arc<str> = "p".into();
        let mut o = overlay(p.clone(), db.begin_read().unwrap());
        o.put(b"a".to_vec(), Some(b"1".to_vec()));
        o.keep_call();
        o.put(b"b".to_vec(), Some(b"2".to_vec()));
        assert_eq!(o.get(b"b").unwrap(), Some(b"2".to_vec()));
        o.drop_call();
        assert_eq!(o.get(b"b").unwrap(), None);
        assert_eq!(o.get(b"a").unwrap(), Some(b"1".to_vec()));
        let txn = db.begin_write().unwrap();
        o.apply_in(&txn).unwrap();
        txn.commit().unwrap();
        assert_eq!(dump(&db, "p").unwrap(), [(b"a".to_vec(), b"1".to_vec())]);

        let mut o = overlay(p, db.begin_read().unwrap());
        assert_eq!(o.get(b"a").unwrap(), Some(b"1".to_vec()));
        o.put(b"a".to_vec(), None);
        o.keep_call();
        assert_eq!(o.get(b"a").unwrap(), None);
        let txn = db.begin_write().unwrap();
        o.apply_in(&txn).unwrap();
        txn.commit().unwrap();
        assert!(dump(&db, "p").unwrap().is_empty());
        drop(db.begin_read().unwrap());
    }
}
