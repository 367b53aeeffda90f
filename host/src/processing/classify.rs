//! Sorting a batch's events by what their idempotency keys say: new (to
//! process), duplicate (skipped), conflict (the same key with another
//! payload: dead-lettered) or without a key.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use redb::ReadTransaction;

use super::config::Unkeyed;
use super::idempotency::{self, KeyRecord, Outcome, Verdict};
use super::pipeline::Settings;
use super::stats::Counters;
use crate::db::StorageError;
use crate::streams::Batch;

/// What to do with one event of a batch.
pub(super) enum Fate {
    /// Process it; `fingerprint` is `None` for an event without a key.
    Process {
        key: Vec<u8>,
        fingerprint: Option<[u8; 16]>,
    },
    /// Its key was seen with the same payload: skip it.
    Duplicate,
    /// Its key was seen with another payload: dead-letter it.
    Conflict { key: Vec<u8>, fingerprint: [u8; 16] },
    /// No key could be derived, for this reason: dead-letter it.
    NoKey(String),
}

/// The fate of each record of `batch`, in order. `scopes` gives each
/// record's idempotency scope (the processor, or a reprocessing epoch's);
/// keys are looked up in `snapshot` and among the batch's earlier records.
/// Records processed without a key are counted in `counters.unkeyed`.
///
/// # Errors
///
/// Storage errors reading the keys.
pub(super) fn classify(
    settings: &Settings,
    batch: &Batch,
    scopes: &[(Arc<str>, u64)],
    snapshot: &ReadTransaction,
    counters: &mut Counters,
) -> Result<Vec<Fate>, StorageError> {
    let mut fates = Vec::with_capacity(batch.records.len());
    let mut first_seen: HashMap<(Arc<str>, Vec<u8>), [u8; 16]> = HashMap::new();
    let mut conflicts_seen: HashSet<(Vec<u8>, [u8; 16])> = HashSet::new();
    let keys = idempotency::KeyReader::open(snapshot)?;
    for (rec, (scope, _)) in batch.records.iter().zip(scopes) {
        if !settings.deduplicate {
            fates.push(Fate::Process {
                key: idempotency::offset_key(rec),
                fingerprint: None,
            });
            continue;
        }
        let (key, fp) = match idempotency::derive(&settings.key_mode, rec) {
            Ok(k) => k,
            Err(e) => {
                fates.push(match settings.unkeyed {
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
            None => keys.get(scope, &key)?,
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
                // The same conflicting payload again is a duplicate of the
                // dead letter already written for it.
                let pair = (key, fp);
                if conflicts_seen.contains(&pair)
                    || idempotency::conflict_seen(snapshot, scope, &pair.0, &fp)?
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
    Ok(fates)
}
