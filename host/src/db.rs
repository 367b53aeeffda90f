//! The redb file that holds everything durable: the embedded log, consumer
//! positions, idempotency keys, processor state and counters.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The file name of the database inside the data dir.
pub const DB_FILE: &str = "tidewater.redb";

/// Why the database could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The data dir could not be created.
    #[error("cannot create data dir {path}: {source}")]
    CreateDir {
        /// The data dir.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Another process holds the database.
    #[error(
        "{path} is in use by another tidewater process (the embedded log serves one process at a time: stop the other one, or use another --data-dir)"
    )]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// redb refused the file.
    #[error("cannot open {path}: {source}")]
    Redb {
        /// The database file.
        path: PathBuf,
        /// What redb said.
        source: redb::DatabaseError,
    },
}

/// redb's page cache when nothing else is said (`[log] cache_bytes`), in
/// bytes: 32 MiB. redb's own default is 1 GiB, which a long run fills (RSS
/// levels off near 1.2 GB); reads that miss this cache come from the OS's
/// page cache, so a smaller one costs copies, not disk reads, while the
/// file fits in memory.
pub const DEFAULT_CACHE_BYTES: usize = 32 << 20;

/// Opens (creating if needed) the database in `data_dir`, with a page cache
/// of [`DEFAULT_CACHE_BYTES`].
///
/// A database that was not closed cleanly (power loss, SIGKILL) is repaired
/// on open; every transaction that committed before the crash is kept.
///
/// # Errors
///
/// [`OpenError::InUse`] when another process has it open, [`OpenError::CreateDir`]
/// and [`OpenError::Redb`] for I/O and format errors.
pub fn open(data_dir: &Path) -> Result<Arc<redb::Database>, OpenError> {
    open_with_cache(data_dir, DEFAULT_CACHE_BYTES)
}

/// As [`open`], with a page cache of `cache_bytes` bytes (redb's read cache
/// and write buffer together).
///
/// # Errors
///
/// As [`open`].
pub fn open_with_cache(
    data_dir: &Path,
    cache_bytes: usize,
) -> Result<Arc<redb::Database>, OpenError> {
    std::fs::create_dir_all(data_dir).map_err(|source| OpenError::CreateDir {
        path: data_dir.to_owned(),
        source,
    })?;
    let path = data_dir.join(DB_FILE);
    match redb::Builder::new()
        .set_cache_size(cache_bytes)
        .create(&path)
    {
        Ok(db) => Ok(Arc::new(db)),
        Err(redb::DatabaseError::DatabaseAlreadyOpen) => Err(OpenError::InUse { path }),
        Err(source) => Err(OpenError::Redb { path, source }),
    }
}

/// As [`open`], but while another process holds the database, tries again
/// every 50 ms for up to `wait`. Short-lived commands (`produce`, `forward`)
/// use it so that they can share a data dir by taking turns.
///
/// # Errors
///
/// As [`open`]; [`OpenError::InUse`] once `wait` has passed.
pub fn open_retrying(
    data_dir: &Path,
    wait: std::time::Duration,
) -> Result<Arc<redb::Database>, OpenError> {
    let deadline = std::time::Instant::now() + wait;
    loop {
        match open(data_dir) {
            Err(OpenError::InUse { .. }) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            other => return other,
        }
    }
}

/// Any storage error of redb, flattened for the modules' error types.
#[derive(Debug, thiserror::Error)]
#[error("storage: {0}")]
pub struct StorageError(#[from] pub redb::Error);

macro_rules! storage_from {
    ($($t:ty),*) => {$(
        impl From<$t> for StorageError {
            fn from(e: $t) -> Self {
                StorageError(e.into())
            }
        }
    )*};
}
storage_from!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// Milliseconds since the Unix epoch, from the wall clock.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
