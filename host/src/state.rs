//! Per-processor key-value state (the WIT `state` interface), kept in redb.
//!
//! While a batch is processed, reads go to a snapshot taken when the batch
//! started, overlaid with the batch's own writes; the writes are applied in
//! the transaction that commits the batch. A call that traps has its writes
//! dropped, so a half-run call leaves no trace.

use std::collections::BTreeMap;
use std::sync::Arc;

use redb::{ReadTransaction, TableDefinition, WriteTransaction};

use crate::db::StorageError;

/// (processor, key) → value
const STATE: TableDefinition<(&str, &[u8]), &[u8]> = TableDefinition::new("state");

type Writes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// A state entry: key and value bytes.
pub type Entry = (Vec<u8>, Vec<u8>);

/// One processor's view of its state during a batch.
#[derive(Default)]
pub struct StateOverlay {
    processor: Arc<str>,
    snapshot: Option<ReadTransaction>,
    batch: Writes,
    call: Writes,
}

impl StateOverlay {
    /// A view of `processor`'s state as of `snapshot`, with no writes yet.
    pub fn new(processor: Arc<str>, snapshot: ReadTransaction) -> Self {
        StateOverlay {
            processor,
            snapshot: Some(snapshot),
            batch: Writes::new(),
            call: Writes::new(),
        }
    }

    /// The value of `key`: the latest write of this batch, else the snapshot.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StorageError> {
        if let Some(v) = self.call.get(key).or_else(|| self.batch.get(key)) {
            return Ok(v.clone());
        }
        let Some(snapshot) = &self.snapshot else {
            return Ok(None);
        };
        let table = match snapshot.open_table(STATE) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(table
            .get((&*self.processor, key))?
            .map(|g| g.value().to_vec()))
    }

    /// Sets `key` to `value` (`None` deletes it) in the current call.
    pub fn put(&mut self, key: Vec<u8>, value: Option<Vec<u8>>) {
        self.call.insert(key, value);
    }

    /// Keeps the current call's writes (the call returned normally).
    pub fn keep_call(&mut self) {
        let call = std::mem::take(&mut self.call);
        self.batch.extend(call);
    }

    /// Drops the current call's writes (the call trapped).
    pub fn drop_call(&mut self) {
        self.call.clear();
    }

    /// How many keys the batch has written so far.
    pub fn writes(&self) -> usize {
        self.batch.len()
    }

    /// Applies the kept writes inside `txn`.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn apply_in(self, txn: &WriteTransaction) -> Result<(), StorageError> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let mut table = txn.open_table(STATE)?;
        for (k, v) in &self.batch {
            match v {
                Some(v) => {
                    table.insert((&*self.processor, k.as_slice()), v.as_slice())?;
                }
                None => {
                    table.remove((&*self.processor, k.as_slice()))?;
                }
            }
        }
        Ok(())
    }
}

/// Every state entry of `processor`, sorted by key.
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

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    #[test]
    fn overlay_layers_and_commits_only_kept_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        let p: Arc<str> = "p".into();
        let mut o = StateOverlay::new(p.clone(), db.begin_read().unwrap());
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

        let mut o = StateOverlay::new(p, db.begin_read().unwrap());
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
