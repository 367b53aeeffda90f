//! Versions of processors: uploaded components, kept in redb, content-addressed
//! by SHA-256, validated before they are kept, and the record of which one
//! is active.
//!
//! - A **version** is one uploaded component: its bytes (stored once per
//!   SHA-256, whichever processors use it) and, per processor, its
//!   [`VersionInfo`]: upload time, size, the WIT world it targets, the
//!   source language its `producers` section names, the config it was
//!   activated with, and, when a canary rolled it back, why. Versions are
//!   kept until deleted.
//! - **Validation** ([`inspect`], then [`Registry::upload`]) refuses, each
//!   with its own [`UploadError`]: a body over the size limit, bytes that
//!   are not WebAssembly, a core module instead of a component, a component
//!   for another world (naming the missing or mismatched export or import),
//!   and an `init` that refuses the processor's config. A refused upload
//!   changes nothing.
//! - **Activations** are a per-processor history (sequence number → version
//!   and reason), so a rollback to "the previous version" is well defined.
//! - The **idempotency epoch** of a processor (bumped by a replay with
//!   reprocessing) is kept here too.
//!
//! Compiled artefacts are cached by [`Runtime`] (by SHA-256 and engine), so
//! activating an uploaded version does not compile it again.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::db::{StorageError, now_ms};
use crate::runtime::{CallError, Limits, LoadError, LoadedComponent, Runtime};

/// The WIT world every version must target.
pub const WORLD: &str = "tidewater:processor/processor@0.1.0";

/// The default upload limit, in bytes (64 MiB).
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 64 << 20;

/// sha256 → component bytes
const BLOBS: TableDefinition<&str, &[u8]> = TableDefinition::new("registry.blobs");
/// (processor, sha256) → JSON of [`VersionInfo`]
const VERSIONS: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("registry.versions");
/// (processor, sequence) → JSON of [`Activation`]
const HISTORY: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("registry.history");
/// processor → idempotency epoch
const EPOCHS: TableDefinition<&str, u64> = TableDefinition::new("registry.epochs");
/// processor → the range of its latest reprocessing replay (JSON of [`ReplayRange`])
const REPLAY_RANGES: TableDefinition<&str, &[u8]> = TableDefinition::new("registry.replay_ranges");

/// What a replay with reprocessing covers: in each partition, the records
/// below `end` (the processor's position when the replay started) are
/// processed again in `epoch`; records from `end` on are new to it and keep
/// epoch 0's keys, so a redelivery of an event processed before the replay
/// is still a duplicate.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReplayRange {
    /// The idempotency epoch the range is processed in.
    pub epoch: u64,
    /// (topic, partition, end offset).
    pub ends: Vec<(String, u32, u64)>,
}

/// A processor's config as `init` gets it: (key, value) pairs.
pub type InitConfig = Vec<(String, String)>;

/// One version of one processor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// SHA-256 of the component, hex: the version's identity.
    pub sha256: String,
    /// The processor it was uploaded for.
    pub processor: String,
    /// When it was first uploaded, ms since the Unix epoch.
    pub uploaded_ms: u64,
    /// Size of the component, in bytes.
    pub size_bytes: u64,
    /// The WIT world it targets (checked on upload).
    pub world: String,
    /// The source language(s) its `producers` section names, e.g. `Rust`;
    /// `None` when it has no such section.
    pub language: Option<String>,
    /// The config (`init`'s key-value pairs) it was validated and activated with.
    pub config: Vec<(String, String)>,
    /// Why a canary rolled it back, if one did.
    pub rolled_back: Option<String>,
}

/// One entry of a processor's activation history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activation {
    /// The version made active.
    pub sha256: String,
    /// When, ms since the Unix epoch.
    pub at_ms: u64,
    /// Why: `start`, `activate`, `rollback`, `watch`, `canary rollback: ...`.
    pub reason: String,
}

/// Why an upload was refused. Each cause has its own stable [`UploadError::code`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UploadError {
    /// The body is over the upload limit.
    #[error("{}", too_large_message(*.size_bytes, *.limit_bytes))]
    TooLarge {
        /// The body's size, in bytes, when known (declared, or all read);
        /// `None` when reading stopped at the limit.
        size_bytes: Option<u64>,
        /// The limit, in bytes.
        limit_bytes: u64,
    },
    /// The body is empty: 0 bytes.
    #[error("the component is empty (0 bytes): send the .wasm file's bytes; nothing was uploaded")]
    Empty,
    /// The bytes do not start with the WebAssembly magic number.
    #[error(
        "not WebAssembly: the body does not start with the magic bytes \\0asm (it starts with {0})"
    )]
    NotWasm(String),
    /// A core module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component: build a component (e.g. --target wasm32-wasip2, or `wasm-tools component new`)"
    )]
    CoreModule,
    /// A component that does not fit the world.
    #[error("component does not fit the world {WORLD}: {0}")]
    World(String),
    /// wasmtime could not compile it.
    #[error("component does not compile: {0}")]
    Invalid(String),
    /// `init` refused the processor's config, or failed.
    #[error("init failed with the processor's config: {0}")]
    InitFailed(String),
    /// The version is not in the registry.
    #[error("processor {processor:?} has no version {version}")]
    NoSuchVersion {
        /// The processor.
        processor: String,
        /// The version asked for.
        version: String,
    },
    /// The version asked for is not a usable SHA-256 prefix, or matches
    /// more than one version.
    #[error("version {version:?}: {reason}")]
    BadVersion {
        /// The version asked for.
        version: String,
        /// Why it names no single version.
        reason: String,
    },
    /// Storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl UploadError {
    /// A stable, lowercase code for API errors and logs.
    pub fn code(&self) -> &'static str {
        match self {
            UploadError::TooLarge { .. } => "component-too-large",
            UploadError::Empty => "empty-component",
            UploadError::NotWasm(_) => "not-webassembly",
            UploadError::CoreModule => "core-module",
            UploadError::World(_) => "world-mismatch",
            UploadError::Invalid(_) => "invalid-component",
            UploadError::InitFailed(_) => "init-failed",
            UploadError::NoSuchVersion { .. } => "no-such-version",
            UploadError::BadVersion { .. } => "bad-version",
            UploadError::Storage(_) => "storage",
        }
    }
}

macro_rules! upload_from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for UploadError {
            fn from(e: $t) -> Self {
                UploadError::Storage(e.into())
            }
        }
    )*};
}
upload_from_redb!(
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// What [`inspect`] learns from a body without compiling it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspected {
    /// SHA-256 of the bytes, hex.
    pub sha256: String,
    /// Size in bytes.
    pub size_bytes: u64,
    /// The languages of the `producers` sections, comma-separated, in order of appearance.
    pub language: Option<String>,
}

/// `limit_bytes` for people: `64 MiB` or `512 KiB` when it is a whole
/// number of them, else `100000 bytes`.
pub fn limit_text(limit_bytes: u64) -> String {
    match limit_bytes {
        0 => "0 bytes".to_owned(),
        n if n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// A limit in words: `64 MiB (67108864 bytes)`, or `100000 bytes`.
fn limit_words(limit_bytes: u64) -> String {
    let text = limit_text(limit_bytes);
    if text.ends_with(" bytes") {
        text
    } else {
        format!("{text} ({limit_bytes} bytes)")
    }
}

fn too_large_message(size_bytes: Option<u64>, limit_bytes: u64) -> String {
    match size_bytes {
        Some(size) => format!(
            "component is {size} bytes, the upload limit is {}",
            limit_words(limit_bytes)
        ),
        None => format!(
            "component is more than {}, the upload limit",
            limit_words(limit_bytes)
        ),
    }
}

/// The cheap checks of an upload: size, magic number, component or core
/// module, and the `producers` section's language.
///
/// # Errors
///
/// [`UploadError::TooLarge`] over `limit_bytes`, [`UploadError::NotWasm`],
/// [`UploadError::CoreModule`], [`UploadError::Invalid`] when the binary
/// cannot be parsed.
pub fn inspect(bytes: &[u8], limit_bytes: usize) -> Result<Inspected, UploadError> {
    if bytes.len() > limit_bytes {
        return Err(UploadError::TooLarge {
            size_bytes: Some(bytes.len() as u64),
            limit_bytes: limit_bytes as u64,
        });
    }
    if bytes.is_empty() {
        return Err(UploadError::Empty);
    }
    if !bytes.starts_with(b"\0asm") {
        let head: String = bytes
            .iter()
            .take(4)
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(" ");
        return Err(UploadError::NotWasm(format!("bytes {head}")));
    }
    if wasmparser::Parser::is_core_wasm(bytes) {
        return Err(UploadError::CoreModule);
    }
    if !wasmparser::Parser::is_component(bytes) {
        return Err(UploadError::Invalid(
            "unknown WebAssembly binary version or layer".into(),
        ));
    }
    let language = producers_language(bytes)?;
    Ok(Inspected {
        sha256: hex::encode(Sha256::digest(bytes)),
        size_bytes: bytes.len() as u64,
        language,
    })
}

/// The source language a component's `producers` sections name: the root
/// component's own, else that of its largest core module (the code a
/// toolchain's adapters and shims are wrapped around, which often name the
/// language they were written in, Rust, rather than the component's). `None`
/// when neither names one (e.g. a stripped build).
fn producers_language(bytes: &[u8]) -> Result<Option<String>, UploadError> {
    use wasmparser::{Encoding, KnownCustom, Payload};
    struct Frame {
        size: usize,
        component: bool,
        language: Option<String>,
    }
    let mut stack: Vec<Frame> = Vec::new();
    let mut next_size = bytes.len();
    let mut root = None;
    let mut largest: Option<(usize, Option<String>)> = None;
    for payload in wasmparser::Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| UploadError::Invalid(e.to_string()))? {
            Payload::Version { encoding, .. } => stack.push(Frame {
                size: next_size,
                component: encoding == Encoding::Component,
                language: None,
            }),
            Payload::ModuleSection {
                unchecked_range, ..
            }
            | Payload::ComponentSection {
                unchecked_range, ..
            } => next_size = unchecked_range.len(),
            Payload::CustomSection(c) => {
                if let KnownCustom::Producers(reader) = c.as_known()
                    && let Some(frame) = stack.last_mut()
                {
                    for field in reader.into_iter().flatten() {
                        if field.name == "language"
                            && let Some(v) = field.values.into_iter().flatten().next()
                        {
                            frame.language = Some(v.name.to_owned());
                        }
                    }
                }
            }
            Payload::End(_) => {
                let Some(frame) = stack.pop() else { continue };
                if stack.is_empty() {
                    root = frame.language;
                } else if !frame.component && largest.as_ref().is_none_or(|l| frame.size > l.0) {
                    largest = Some((frame.size, frame.language));
                }
            }
            _ => {}
        }
    }
    Ok(root.or(largest.and_then(|l| l.1)))
}

/// The registry of one host: the database and the runtime that validates
/// and compiles versions.
#[derive(Clone)]
pub struct Registry {
    db: Arc<redb::Database>,
    runtime: Arc<Runtime>,
}

impl Registry {
    /// The registry in `db`, compiling with `runtime`.
    pub fn new(db: Arc<redb::Database>, runtime: Arc<Runtime>) -> Self {
        Registry { db, runtime }
    }

    /// The runtime versions are compiled with.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Validates `bytes` as a version of `processor` and keeps it: the checks
    /// of [`inspect`], then compiling it (into the compiled cache), checking
    /// its exports and imports against the world, and instantiating it and
    /// calling `init` with `config` under `limits`. Uploading a version that
    /// is already there succeeds and keeps its first upload time; its config
    /// becomes `config`. Returns the version and the compiled component,
    /// ready to activate.
    ///
    /// # Errors
    ///
    /// [`UploadError`], one variant per cause; nothing is stored then.
    pub fn upload(
        &self,
        processor: &str,
        bytes: &[u8],
        limit_bytes: usize,
        config: Vec<(String, String)>,
        limits: Limits,
    ) -> Result<(VersionInfo, Arc<LoadedComponent>), UploadError> {
        let start = Instant::now();
        let inspected = inspect(bytes, limit_bytes)?;
        let label = format!("upload {}", &inspected.sha256[..12]);
        let loaded = self
            .runtime
            .load_bytes(bytes, Path::new(&label), start)
            .map_err(|e| match e {
                LoadError::World { reason, .. } => UploadError::World(reason),
                LoadError::Invalid { reason, .. } => UploadError::Invalid(reason),
                other => UploadError::Invalid(other.to_string()),
            })?;
        match self
            .runtime
            .instantiate(&loaded, processor.into(), limits, &config)
        {
            Ok(instance) => drop(instance),
            Err(CallError::InitRefused(m)) => return Err(UploadError::InitFailed(m)),
            Err(e) => return Err(UploadError::InitFailed(e.to_string())),
        }
        let info = self.keep(processor, bytes, &inspected, config)?;
        Ok((info, Arc::new(loaded)))
    }

    fn keep(
        &self,
        processor: &str,
        bytes: &[u8],
        inspected: &Inspected,
        config: Vec<(String, String)>,
    ) -> Result<VersionInfo, UploadError> {
        let txn = self.db.begin_write()?;
        let info = {
            let mut blobs = txn.open_table(BLOBS)?;
            if blobs.get(inspected.sha256.as_str())?.is_none() {
                blobs.insert(inspected.sha256.as_str(), bytes)?;
            }
            let mut versions = txn.open_table(VERSIONS)?;
            let old = versions
                .get((processor, inspected.sha256.as_str()))?
                .and_then(|g| serde_json::from_slice::<VersionInfo>(g.value()).ok());
            let info = VersionInfo {
                sha256: inspected.sha256.clone(),
                processor: processor.to_owned(),
                uploaded_ms: old.as_ref().map_or_else(now_ms, |o| o.uploaded_ms),
                size_bytes: inspected.size_bytes,
                world: WORLD.to_owned(),
                language: inspected.language.clone(),
                config,
                rolled_back: old.and_then(|o| o.rolled_back),
            };
            versions.insert(
                (processor, inspected.sha256.as_str()),
                serde_json::to_vec(&info).expect("serialisable").as_slice(),
            )?;
            info
        };
        txn.commit()?;
        Ok(info)
    }

    /// Loads a kept version of `processor` (from the compiled cache when
    /// there), with its info.
    ///
    /// # Errors
    ///
    /// [`UploadError::NoSuchVersion`]; compile errors as in [`Registry::upload`].
    pub fn load(
        &self,
        processor: &str,
        sha256: &str,
    ) -> Result<(VersionInfo, Arc<LoadedComponent>), UploadError> {
        let info = self.version(processor, sha256)?;
        let txn = self.db.begin_read()?;
        let blobs = txn.open_table(BLOBS)?;
        let bytes = blobs
            .get(info.sha256.as_str())?
            .ok_or_else(|| UploadError::NoSuchVersion {
                processor: processor.to_owned(),
                version: sha256.to_owned(),
            })?;
        let label = format!("version {}", &info.sha256[..12]);
        let loaded = self
            .runtime
            .load_bytes(bytes.value(), Path::new(&label), Instant::now())
            .map_err(|e| UploadError::Invalid(e.to_string()))?;
        Ok((info, Arc::new(loaded)))
    }

    /// The version of `processor` whose SHA-256 is, or starts with, `version`
    /// (at least 8 hex digits, and only one may match).
    ///
    /// # Errors
    ///
    /// [`UploadError::NoSuchVersion`]; storage errors.
    pub fn version(&self, processor: &str, version: &str) -> Result<VersionInfo, UploadError> {
        let none = || UploadError::NoSuchVersion {
            processor: processor.to_owned(),
            version: version.to_owned(),
        };
        let bad = |reason: String| UploadError::BadVersion {
            version: version.to_owned(),
            reason,
        };
        if !version
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad(
                "a version is its SHA-256 in lowercase hex (0-9 a-f), or a prefix of it".into(),
            ));
        }
        if version.len() < 8 || version.len() > 64 {
            return Err(bad(format!(
                "a prefix needs 8 to 64 hex digits, this has {}",
                version.len()
            )));
        }
        let matches: Vec<VersionInfo> = self
            .versions(processor)?
            .into_iter()
            .filter(|v| v.sha256.starts_with(version))
            .collect();
        match <[VersionInfo; 1]>::try_from(matches) {
            Ok([v]) => Ok(v),
            Err(m) if m.is_empty() => Err(none()),
            Err(m) => Err(bad(format!(
                "{} versions of {processor:?} start with it ({}); give more digits",
                m.len(),
                m.iter()
                    .map(|v| &v.sha256[..12])
                    .collect::<Vec<_>>()
                    .join(", ")
            ))),
        }
    }

    /// Every version of `processor`, oldest upload first.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn versions(&self, processor: &str) -> Result<Vec<VersionInfo>, StorageError> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(VERSIONS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out: Vec<VersionInfo> = Vec::new();
        for e in table.range((processor, "")..)? {
            let (k, v) = e?;
            if k.value().0 != processor {
                break;
            }
            if let Ok(info) = serde_json::from_slice(v.value()) {
                out.push(info);
            }
        }
        out.sort_by(|a, b| (a.uploaded_ms, &a.sha256).cmp(&(b.uploaded_ms, &b.sha256)));
        Ok(out)
    }

    /// Records that `sha256` became `processor`'s active version, and why.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn record_activation(
        &self,
        processor: &str,
        sha256: &str,
        reason: &str,
    ) -> Result<(), StorageError> {
        let txn = self.db.begin_write()?;
        {
            let mut history = txn.open_table(HISTORY)?;
            let next = history
                .range((processor, 0)..=(processor, u64::MAX))?
                .next_back()
                .transpose()?
                .map_or(0, |(k, _)| k.value().1 + 1);
            let a = Activation {
                sha256: sha256.to_owned(),
                at_ms: now_ms(),
                reason: reason.to_owned(),
            };
            history.insert(
                (processor, next),
                serde_json::to_vec(&a).expect("serialisable").as_slice(),
            )?;
        }
        txn.commit()?;
        Ok(())
    }

    /// Records why a canary rolled `sha256` back.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn record_rollback_reason(
        &self,
        processor: &str,
        sha256: &str,
        reason: &str,
    ) -> Result<(), StorageError> {
        let txn = self.db.begin_write()?;
        {
            let mut versions = txn.open_table(VERSIONS)?;
            let old = versions
                .get((processor, sha256))?
                .and_then(|g| serde_json::from_slice::<VersionInfo>(g.value()).ok());
            if let Some(mut info) = old {
                info.rolled_back = Some(reason.to_owned());
                versions.insert(
                    (processor, sha256),
                    serde_json::to_vec(&info).expect("serialisable").as_slice(),
                )?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// `processor`'s activation history, oldest first.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn history(&self, processor: &str) -> Result<Vec<Activation>, StorageError> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(HISTORY) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        let mut out = Vec::new();
        for e in table.range((processor, 0)..=(processor, u64::MAX))? {
            let (_, v) = e?;
            if let Ok(a) = serde_json::from_slice(v.value()) {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// The active version of `processor`: the last one activated.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn active(&self, processor: &str) -> Result<Option<String>, StorageError> {
        Ok(self.history(processor)?.pop().map(|a| a.sha256))
    }

    /// The version that was active before the current one: the last one
    /// activated, other than the current one, that a canary did not roll
    /// back and that was not deleted, if any.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn previous(&self, processor: &str) -> Result<Option<String>, StorageError> {
        let mut h = self.history(processor)?;
        let Some(current) = h.pop() else {
            return Ok(None);
        };
        let usable: std::collections::BTreeSet<String> = self
            .versions(processor)?
            .into_iter()
            .filter(|v| v.rolled_back.is_none())
            .map(|v| v.sha256)
            .collect();
        Ok(h.into_iter()
            .rev()
            .find(|a| a.sha256 != current.sha256 && usable.contains(&a.sha256))
            .map(|a| a.sha256))
    }

    /// Deletes a version of `processor` (its bytes too, when no other
    /// processor has it). The active version cannot be deleted.
    ///
    /// # Errors
    ///
    /// [`UploadError::NoSuchVersion`]; storage errors.
    pub fn delete(&self, processor: &str, version: &str) -> Result<VersionInfo, UploadError> {
        let info = self.version(processor, version)?;
        let txn = self.db.begin_write()?;
        {
            let mut versions = txn.open_table(VERSIONS)?;
            versions.remove((processor, info.sha256.as_str()))?;
            let mut used = false;
            for e in versions.iter()? {
                let (k, _) = e?;
                if k.value().1 == info.sha256 {
                    used = true;
                    break;
                }
            }
            if !used {
                txn.open_table(BLOBS)?.remove(info.sha256.as_str())?;
            }
        }
        txn.commit()?;
        Ok(info)
    }

    /// The version `processor` starts with in `tidewater run`, given the
    /// component its config names (at `path`, loaded as `component`, with
    /// the config's `config`): that component, kept as a version, when the
    /// registry has not seen it before or has no active version (it is then
    /// recorded as activated); else the registry's active version (a version
    /// activated through the API survives a restart), with its own config.
    ///
    /// # Errors
    ///
    /// [`UploadError`] when the file cannot be read or the active version
    /// cannot be loaded.
    pub fn start_version(
        &self,
        processor: &str,
        path: &Path,
        component: Arc<LoadedComponent>,
        config: Vec<(String, String)>,
    ) -> Result<(Arc<LoadedComponent>, InitConfig), UploadError> {
        let bytes = std::fs::read(path)
            .map_err(|e| UploadError::Invalid(format!("cannot read {}: {e}", path.display())))?;
        let inspected = inspect(&bytes, usize::MAX)?;
        let known = self
            .versions(processor)?
            .iter()
            .any(|v| v.sha256 == inspected.sha256);
        let active = self.active(processor)?;
        match active {
            Some(a) if known && a != inspected.sha256 => {
                let (info, loaded) = self.load(processor, &a)?;
                Ok((loaded, info.config))
            }
            _ => {
                self.keep(processor, &bytes, &inspected, config.clone())?;
                if active.as_deref() != Some(inspected.sha256.as_str()) {
                    self.record_activation(processor, &inspected.sha256, "start")?;
                }
                Ok((component, config))
            }
        }
    }

    /// `processor`'s idempotency epoch: 0 until a replay with reprocessing.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn epoch(&self, processor: &str) -> Result<u64, StorageError> {
        epoch(&self.db, processor)
    }

    /// Starts a new idempotency epoch for `processor` and returns it.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn bump_epoch(&self, processor: &str) -> Result<u64, StorageError> {
        let txn = self.db.begin_write()?;
        let next = {
            let mut t = txn.open_table(EPOCHS)?;
            let next = t.get(processor)?.map_or(0, |g| g.value()) + 1;
            t.insert(processor, next)?;
            next
        };
        txn.commit()?;
        Ok(next)
    }

    /// Raises `processor`'s idempotency epoch to `epoch` if it is below: a
    /// host of a Kafka group learns so of a replay asked of another host,
    /// and its next reprocessing replay takes a newer epoch still.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn raise_epoch(&self, processor: &str, epoch: u64) -> Result<(), StorageError> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(EPOCHS)?;
            if t.get(processor)?.map_or(0, |g| g.value()) < epoch {
                t.insert(processor, epoch)?;
            }
        }
        txn.commit()?;
        Ok(())
    }
}

impl Registry {
    /// Records the range of `processor`'s latest reprocessing replay.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub fn set_replay_range(
        &self,
        processor: &str,
        range: &ReplayRange,
    ) -> Result<(), StorageError> {
        let json = serde_json::to_vec(range).expect("a replay range serializes");
        let txn = self.db.begin_write()?;
        txn.open_table(REPLAY_RANGES)?
            .insert(processor, json.as_slice())?;
        txn.commit()?;
        Ok(())
    }

    /// The range of `processor`'s latest reprocessing replay, if there was one.
    ///
    /// # Errors
    ///
    /// Storage errors; a stored range that does not decode is treated as none.
    pub fn replay_range(&self, processor: &str) -> Result<Option<ReplayRange>, StorageError> {
        let txn = self.db.begin_read()?;
        match txn.open_table(REPLAY_RANGES) {
            Ok(t) => Ok(t
                .get(processor)?
                .and_then(|g| serde_json::from_slice(g.value()).ok())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// `processor`'s idempotency epoch in `db` (0 when none was started).
///
/// # Errors
///
/// Storage errors.
pub fn epoch(db: &redb::Database, processor: &str) -> Result<u64, StorageError> {
    let txn = db.begin_read()?;
    match txn.open_table(EPOCHS) {
        Ok(t) => Ok(t.get(processor)?.map_or(0, |g| g.value())),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inspect_tells_the_causes_apart() {
        assert!(matches!(
            inspect(b"hello", 1 << 20),
            Err(UploadError::NotWasm(m)) if m == "bytes 68 65 6c 6c"
        ));
        let empty = inspect(b"", 1 << 20).unwrap_err();
        assert_eq!(empty.code(), "empty-component");
        assert_eq!(
            empty.to_string(),
            "the component is empty (0 bytes): send the .wasm file's bytes; nothing was uploaded"
        );
        assert!(matches!(
            inspect(b"\0a", 1 << 20),
            Err(UploadError::NotWasm(m)) if m == "bytes 00 61"
        ));
        // The smallest core module: magic and version 1.
        let core = b"\0asm\x01\0\0\0";
        assert!(matches!(
            inspect(core, 1 << 20),
            Err(UploadError::CoreModule)
        ));
        assert_eq!(inspect(core, 1 << 20).unwrap_err().code(), "core-module");
        assert!(matches!(
            inspect(core, 4),
            Err(UploadError::TooLarge {
                size_bytes: Some(8),
                limit_bytes: 4
            })
        ));
        assert_eq!(
            inspect(core, 4).unwrap_err().to_string(),
            "component is 8 bytes, the upload limit is 4 bytes"
        );
        let unknown = UploadError::TooLarge {
            size_bytes: None,
            limit_bytes: 64 << 20,
        };
        assert_eq!(
            unknown.to_string(),
            "component is more than 64 MiB (67108864 bytes), the upload limit"
        );
        let known = UploadError::TooLarge {
            size_bytes: Some(70_000_000),
            limit_bytes: 64 << 20,
        };
        assert_eq!(
            known.to_string(),
            "component is 70000000 bytes, the upload limit is 64 MiB (67108864 bytes)"
        );
        assert_eq!(limit_text(512 << 10), "512 KiB");
        assert_eq!(limit_text(100_000), "100000 bytes");
        // The smallest component: magic, version 0x0d, layer 1.
        let component = b"\0asm\x0d\0\x01\0";
        let i = inspect(component, 1 << 20).unwrap();
        assert_eq!(i.size_bytes, 8);
        assert_eq!(i.language, None);
        assert_eq!(i.sha256, hex::encode(Sha256::digest(component)));
    }

    #[test]
    fn history_gives_active_and_previous() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::open(dir.path()).unwrap();
        let r = Registry::new(db, Arc::new(Runtime::new(None).unwrap()));
        assert_eq!(r.active("p").unwrap(), None);
        r.record_activation("p", "a", "start").unwrap();
        r.record_activation("q", "z", "start").unwrap();
        assert_eq!(r.previous("p").unwrap(), None);
        r.record_activation("p", "b", "activate").unwrap();
        r.record_activation("p", "b", "activate").unwrap();
        assert_eq!(r.active("p").unwrap().as_deref(), Some("b"));
        // "a" is not a kept version (deleted, or never uploaded): no previous.
        assert_eq!(r.previous("p").unwrap(), None);
        let keep = |sha: &str| {
            let i = Inspected {
                sha256: sha.into(),
                size_bytes: 1,
                language: None,
            };
            r.keep("p", b"x", &i, vec![]).unwrap();
        };
        keep("a");
        keep("b");
        assert_eq!(r.previous("p").unwrap().as_deref(), Some("a"));
        // A version a canary rolled back is not gone back to.
        keep("c");
        r.record_activation("p", "c", "activate").unwrap();
        r.record_rollback_reason("p", "c", "canary rollback: ...")
            .unwrap();
        r.record_activation("p", "b", "canary rollback: ...")
            .unwrap();
        assert_eq!(r.previous("p").unwrap().as_deref(), Some("a"));
        let v = r.versions("p").unwrap();
        assert_eq!(v.len(), 3);
        assert_eq!(
            v.iter()
                .find(|v| v.sha256 == "c")
                .unwrap()
                .rolled_back
                .as_deref(),
            Some("canary rollback: ...")
        );
        assert_eq!(r.history("p").unwrap().len(), 5);
        assert_eq!(r.epoch("p").unwrap(), 0);
        assert_eq!(r.bump_epoch("p").unwrap(), 1);
        assert_eq!(r.bump_epoch("p").unwrap(), 2);
        assert_eq!(r.epoch("q").unwrap(), 0);
        r.raise_epoch("p", 1).unwrap();
        assert_eq!(r.epoch("p").unwrap(), 2, "never lowered");
        r.raise_epoch("p", 5).unwrap();
        assert_eq!(r.bump_epoch("p").unwrap(), 6);
    }
}
