//! The WebAssembly runtime: wasmtime with the component model, the
//! `tidewater:processor@0.1.0` world, limits, and a cache of compiled
//! components.
//!
//! - One [`Engine`] per host, with epoch interruption: a background thread
//!   advances the epoch every [`EPOCH_TICK`], and each call gets a deadline
//!   of `call_deadline / EPOCH_TICK` ticks.
//! - Each instance has its own store with a memory cap (bytes of linear
//!   memory and tables over all its instances).
//! - WASI 0.2 is linked with nothing granted: no preopened directories, no
//!   environment, no arguments, empty stdin, TCP, UDP and name lookups
//!   denied. Components from Python and JavaScript need WASI to start. What a
//!   component writes to stdout or stderr goes, line by line, into the host's
//!   log (tagged with the processor and the stream), under the same per-second
//!   rate limit as the `log` interface ([`GuestOutput`]).
//! - Compiled components are cached on disk, named by the SHA-256 of the
//!   component and a hash of the engine's settings, so a restart or a second
//!   processor using the same `.wasm` does not compile again. Each cache
//!   file starts with the SHA-256 of its contents and is checked before use;
//!   a damaged one is compiled again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::state::StateOverlay;

/// The one place the WIT world's bindings are generated.
mod bindings {
    wasmtime::component::bindgen!({
        world: "processor",
        path: "../wit",
        imports: { default: trappable },
    });
}

pub use bindings::tidewater::processor::log::Level;
pub use bindings::tidewater::processor::types::{Event, Output, ProcessError};

/// What a processor returns for one event: its outputs, or why not.
pub type EventResult = Result<Vec<Output>, ProcessError>;

/// How often the epoch advances; deadlines are whole multiples of it.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Limits that apply to each instance of a processor.
///
/// A breach of the memory cap or a deadline traps the instance; a breach of
/// the output or state limits fails the call as a whole with
/// [`CallError::Limit`] (its state writes are dropped), so the pipeline
/// bisects the batch down to the event that causes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest a call of `process` may run before it is interrupted.
    pub call_deadline: Duration,
    /// Longest instantiation plus `init` may run before it is interrupted.
    pub init_deadline: Duration,
    /// Most linear memory an instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Most log lines per second a processor may write; the rest are dropped and counted.
    pub log_lines_per_s: u32,
    /// Most outputs one event may produce.
    pub max_outputs_per_event: usize,
    /// Most bytes of outputs (topic, key, value, header names and values)
    /// one call of `process` may return, in bytes.
    pub max_output_bytes_per_batch: usize,
    /// Longest state key, in bytes.
    pub max_state_key_bytes: usize,
    /// Longest state value, in bytes.
    pub max_state_value_bytes: usize,
    /// Most state one call of `process` may write, in bytes: each `set` or
    /// `delete` counts its key and value plus [`STATE_WRITE_OVERHEAD_BYTES`].
    pub max_state_bytes_per_batch: usize,
}

/// What each state write counts against [`Limits::max_state_bytes_per_batch`]
/// on top of its key and value, in bytes: the host's bookkeeping per write,
/// so that a flood of tiny writes is bounded too.
pub const STATE_WRITE_OVERHEAD_BYTES: usize = 64;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_deadline: Duration::from_secs(1),
            init_deadline: Duration::from_secs(5),
            memory_bytes: 64 << 20,
            log_lines_per_s: 100,
            max_outputs_per_event: 10_000,
            max_output_bytes_per_batch: 64 << 20,
            max_state_key_bytes: 4096,
            max_state_value_bytes: 1 << 20,
            max_state_bytes_per_batch: 16 << 20,
        }
    }
}

/// A host-side limit that a call broke. Each has a stable [`LimitBreach::code`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LimitBreach {
    /// One event produced more outputs than [`Limits::max_outputs_per_event`].
    #[error("an event produced {count} outputs, the limit is {limit} outputs per event")]
    OutputCount {
        /// Outputs the event produced.
        count: usize,
        /// The limit.
        limit: usize,
    },
    /// One call returned more output bytes than [`Limits::max_output_bytes_per_batch`].
    #[error("the call returned {bytes} bytes of outputs, the limit is {limit} bytes per batch")]
    OutputBytes {
        /// Bytes returned.
        bytes: usize,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A state key longer than [`Limits::max_state_key_bytes`].
    #[error("a state key of {bytes} bytes, the limit is {limit} bytes")]
    StateKey {
        /// The key's length, in bytes.
        bytes: usize,
        /// The limit, in bytes.
        limit: usize,
    },
    /// A state value longer than [`Limits::max_state_value_bytes`].
    #[error("a state value of {bytes} bytes, the limit is {limit} bytes")]
    StateValue {
        /// The value's length, in bytes.
        bytes: usize,
        /// The limit, in bytes.
        limit: usize,
    },
    /// More state written in one call than [`Limits::max_state_bytes_per_batch`].
    #[error(
        "the call wrote more than {limit} bytes of state (writes counted with {overhead} bytes each of overhead)"
    )]
    StateBytes {
        /// The limit, in bytes.
        limit: usize,
        /// [`STATE_WRITE_OVERHEAD_BYTES`].
        overhead: usize,
    },
}

impl LimitBreach {
    /// A stable, lowercase code for logs, metrics and dead-letter headers.
    pub fn code(&self) -> &'static str {
        match self {
            LimitBreach::OutputCount { .. } => "output-count-limit",
            LimitBreach::OutputBytes { .. } => "output-bytes-limit",
            LimitBreach::StateKey { .. } => "state-key-limit",
            LimitBreach::StateValue { .. } => "state-value-limit",
            LimitBreach::StateBytes { .. } => "state-bytes-limit",
        }
    }
}

/// Why a component could not be loaded or started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read component {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The bytes are not a component wasmtime accepts.
    #[error("{path} is not a valid WebAssembly component: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// wasmtime's explanation.
        reason: String,
    },
    /// The component does not fit the world: a missing export or an import
    /// the host does not provide.
    #[error("{path} does not fit the world tidewater:processor/processor@0.1.0: {reason}")]
    World {
        /// The file.
        path: PathBuf,
        /// wasmtime's explanation, naming the export or import.
        reason: String,
    },
    /// The engine could not be set up.
    #[error("wasmtime engine: {0}")]
    Engine(String),
}

/// Why a call into a component failed as a whole (not one event's error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The component trapped (a panic, `unreachable`, an out-of-bounds access...).
    #[error("component trapped: {0}")]
    Trap(String),
    /// The call ran past its deadline and was interrupted.
    #[error("call exceeded its deadline of {deadline_ms} ms")]
    Timeout {
        /// The deadline, in ms.
        deadline_ms: u64,
    },
    /// The instance tried to grow its memory past the cap.
    #[error("instance exceeded its memory limit of {limit_bytes} bytes")]
    MemoryLimit {
        /// The cap, in bytes.
        limit_bytes: usize,
    },
    /// `init` refused the config.
    #[error("init refused the config: {0}")]
    InitRefused(String),
    /// Instantiation or `init` trapped, ran past [`Limits::init_deadline`]
    /// or hit the memory cap (the cause inside).
    #[error("init failed: {0}")]
    InitFailed(Box<CallError>),
    /// A host-side limit on outputs or state was broken; the call's state
    /// writes were dropped.
    #[error("{0}")]
    Limit(LimitBreach),
    /// The component broke the contract (e.g. returned the wrong number of results).
    #[error("component broke the contract: {0}")]
    Contract(String),
}

impl CallError {
    /// A stable, lowercase code for logs, metrics and dead-letter headers.
    pub fn code(&self) -> &'static str {
        match self {
            CallError::Trap(_) => "trap",
            CallError::Timeout { .. } => "timeout",
            CallError::MemoryLimit { .. } => "memory-limit",
            CallError::InitRefused(_) => "init-refused",
            CallError::InitFailed(_) => "init-failed",
            CallError::Limit(b) => b.code(),
            CallError::Contract(_) => "contract",
        }
    }
}

/// A lines-per-second budget: one per processor and stream (the `log`
/// interface, stdout, stderr), shared by every instance of the processor, so
/// fresh instances (after a trap, during bisection, on a swap) do not get a
/// fresh budget.
#[derive(Clone)]
struct RateWindow(Arc<Mutex<(Instant, u32)>>);

impl RateWindow {
    fn new() -> Self {
        RateWindow(Arc::new(Mutex::new((Instant::now(), 0))))
    }

    /// Whether one more line fits in this second's `limit`.
    fn admit(&self, limit: u32) -> bool {
        let Ok(mut w) = self.0.lock() else {
            return false;
        };
        let now = Instant::now();
        if now.duration_since(w.0) >= Duration::from_secs(1) {
            *w = (now, 0);
        }
        if w.1 >= limit {
            return false;
        }
        w.1 += 1;
        true
    }
}

/// Longest line of a component's stdout or stderr kept whole, in bytes; the
/// rest of a longer line is cut off (and a line without a newline is written
/// once it reaches this length).
pub const MAX_OUTPUT_LINE_BYTES: usize = 4096;

/// A component's stdout or stderr: each line becomes one entry of the host's
/// log at info level (stdout) or warn level (stderr), with the fields
/// `processor` and `stream`; at most `lines_per_s` lines a second, the rest
/// are dropped and counted ([`GuestOutput::dropped`]).
#[derive(Clone)]
pub struct GuestOutput {
    stream: &'static str,
    shared: Arc<Mutex<OutputLines>>,
}

struct OutputLines {
    processor: Arc<str>,
    partial: Vec<u8>,
    window: RateWindow,
    lines_per_s: u32,
    dropped: u64,
}

impl GuestOutput {
    /// The `stream` (`"stdout"` or `"stderr"`) of `processor`.
    pub fn new(processor: Arc<str>, stream: &'static str, lines_per_s: u32) -> Self {
        Self::with_window(processor, stream, lines_per_s, RateWindow::new())
    }

    fn with_window(
        processor: Arc<str>,
        stream: &'static str,
        lines_per_s: u32,
        window: RateWindow,
    ) -> Self {
        GuestOutput {
            stream,
            shared: Arc::new(Mutex::new(OutputLines {
                processor,
                partial: Vec::new(),
                window,
                lines_per_s,
                dropped: 0,
            })),
        }
    }

    /// Lines dropped by the rate limit so far.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().map_or(0, |s| s.dropped)
    }

    fn write(&self, bytes: &[u8]) {
        let Ok(mut s) = self.shared.lock() else {
            return;
        };
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            let room = MAX_OUTPUT_LINE_BYTES.saturating_sub(s.partial.len());
            let complete = chunk.last() == Some(&b'\n');
            let body = if complete {
                &chunk[..chunk.len() - 1]
            } else {
                chunk
            };
            s.partial.extend_from_slice(&body[..body.len().min(room)]);
            if complete || s.partial.len() >= MAX_OUTPUT_LINE_BYTES {
                let line = std::mem::take(&mut s.partial);
                s.emit(self.stream, &line);
            }
        }
    }
}

impl OutputLines {
    fn emit(&mut self, stream: &str, line: &[u8]) {
        if !self.window.admit(self.lines_per_s) {
            self.dropped += 1;
            return;
        }
        let text = String::from_utf8_lossy(line);
        let p = &*self.processor;
        if stream == "stderr" {
            tracing::warn!(processor = p, stream, "{text}");
        } else {
            tracing::info!(processor = p, stream, "{text}");
        }
    }
}

impl wasmtime_wasi::cli::IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::OutputStream for GuestOutput {
    fn write(&mut self, buf: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        GuestOutput::write(self, &buf);
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        GuestOutput::write(&self, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// The store data of one instance.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: MemoryLimiter,
    processor: Arc<str>,
    log_window: RateWindow,
    log_limit: u32,
    /// Log lines dropped by the rate limit.
    pub log_dropped: u64,
    /// The component's stdout and stderr.
    outputs: [GuestOutput; 2],
    /// The state view of the batch in progress.
    pub state: StateOverlay,
    /// The limits checked on state writes.
    limits: Limits,
    /// Bytes of state written by the call in progress (see [`Limits::max_state_bytes_per_batch`]).
    state_written: usize,
    /// The host-side limit the call in progress broke, if any.
    breach: Option<LimitBreach>,
}

impl HostState {
    /// Counts a state write against the limits; an error traps the call.
    fn check_state_write(&mut self, key: &[u8], value: Option<&[u8]>) -> wasmtime::Result<()> {
        let l = &self.limits;
        let value_len = value.map_or(0, <[u8]>::len);
        self.state_written = self
            .state_written
            .saturating_add(key.len() + value_len + STATE_WRITE_OVERHEAD_BYTES);
        let breach = if key.len() > l.max_state_key_bytes {
            LimitBreach::StateKey {
                bytes: key.len(),
                limit: l.max_state_key_bytes,
            }
        } else if value_len > l.max_state_value_bytes {
            LimitBreach::StateValue {
                bytes: value_len,
                limit: l.max_state_value_bytes,
            }
        } else if self.state_written > l.max_state_bytes_per_batch {
            LimitBreach::StateBytes {
                limit: l.max_state_bytes_per_batch,
                overhead: STATE_WRITE_OVERHEAD_BYTES,
            }
        } else {
            return Ok(());
        };
        let message = breach.to_string();
        self.breach = Some(breach);
        Err(wasmtime::Error::msg(message))
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

struct MemoryLimiter {
    limit: usize,
    hit: bool,
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.hit = true;
            return Err(wasmtime::Error::msg(format!(
                "memory limit: the instance asked for {desired} bytes, the limit is {} bytes",
                self.limit
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= 1 << 20)
    }
}

impl bindings::tidewater::processor::state::Host for HostState {
    fn get(&mut self, key: Vec<u8>) -> wasmtime::Result<Option<Vec<u8>>> {
        self.state
            .get(&key)
            .map_err(|e| wasmtime::Error::msg(format!("state read failed: {e}")))
    }

    fn set(&mut self, key: Vec<u8>, value: Vec<u8>) -> wasmtime::Result<()> {
        self.check_state_write(&key, Some(&value))?;
        self.state.put(key, Some(value));
        Ok(())
    }

    fn delete(&mut self, key: Vec<u8>) -> wasmtime::Result<()> {
        self.check_state_write(&key, None)?;
        self.state.put(key, None);
        Ok(())
    }
}

impl bindings::tidewater::processor::log::Host for HostState {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        if !self.log_window.admit(self.log_limit) {
            self.log_dropped += 1;
            return Ok(());
        }
        let p = &*self.processor;
        match level {
            Level::Trace => tracing::trace!(processor = p, "{message}"),
            Level::Debug => tracing::debug!(processor = p, "{message}"),
            Level::Info => tracing::info!(processor = p, "{message}"),
            Level::Warn => tracing::warn!(processor = p, "{message}"),
            Level::Error => tracing::error!(processor = p, "{message}"),
        }
        Ok(())
    }
}

impl bindings::tidewater::processor::types::Host for HostState {}

/// The engine, the linker and the compiled-component cache. Cheap to share
/// behind an `Arc`; dropping the last handle stops the epoch thread.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache_dir: Option<PathBuf>,
    stop: Arc<AtomicBool>,
    live: Arc<std::sync::atomic::AtomicUsize>,
    /// Per processor: the log, stdout and stderr budgets of its instances.
    log_windows: Mutex<HashMap<Arc<str>, [RateWindow; 3]>>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A compiled component, ready to instantiate.
pub struct LoadedComponent {
    /// SHA-256 of the `.wasm` file, hex: the version's identity.
    pub sha256: String,
    /// How long loading took (compile, or read from the cache).
    pub load_time: Duration,
    /// Whether it came from the compiled-component cache.
    pub cached: bool,
    pre: bindings::ProcessorPre<HostState>,
}

impl Runtime {
    /// A runtime whose compiled components are cached in `cache_dir` (none: no cache).
    ///
    /// # Errors
    ///
    /// [`LoadError::Engine`] when wasmtime cannot be configured.
    pub fn new(cache_dir: Option<PathBuf>) -> Result<Self, LoadError> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(e.to_string()))?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        bindings::Processor::add_to_linker::<_, HasSelf<_>>(&mut linker, |s| s)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let (ticker, flag) = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("tidewater-epoch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    ticker.increment_epoch();
                }
            })
            .map_err(|e| LoadError::Engine(format!("cannot start the epoch thread: {e}")))?;
        Ok(Runtime {
            engine,
            linker,
            cache_dir,
            stop,
            live: Arc::default(),
            log_windows: Mutex::default(),
        })
    }

    /// How many instances of any component are alive right now (created
    /// and not yet dropped): a gauge that stays flat across hot swaps.
    pub fn live_instances(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    fn cache_path(&self, sha256: &str) -> Option<PathBuf> {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        let dir = self.cache_dir.as_ref()?;
        Some(dir.join(format!("{sha256}-{:016x}.cwasm", h.finish())))
    }

    /// A compiled component from the cache, if the file is there and intact:
    /// its first 32 bytes are the SHA-256 of the rest. A damaged file is
    /// reported and ignored (the component is compiled again).
    fn read_cache(&self, path: &Path) -> Option<Component> {
        let sealed = std::fs::read(path).ok()?;
        let (digest, compiled) = sealed.split_at_checked(32)?;
        if Sha256::digest(compiled).as_slice() != digest {
            tracing::warn!(path = %path.display(), "compiled component in the cache is damaged; compiling again");
            return None;
        }
        // SAFETY: the bytes are exactly what `precompile_component` of an
        // engine with the same settings wrote (checked by the digest above,
        // and by the engine hash in the file name).
        match unsafe { Component::deserialize(&self.engine, compiled) } {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot use the cached compiled component; compiling again");
                None
            }
        }
    }

    /// Loads the component at `path`: from the compiled cache when present,
    /// else compiles it (and fills the cache), then checks it against the world.
    ///
    /// # Errors
    ///
    /// [`LoadError::Read`], [`LoadError::Invalid`] (not a component),
    /// [`LoadError::World`] (a missing export or an unknown import).
    pub fn load(&self, path: &Path) -> Result<LoadedComponent, LoadError> {
        let start = Instant::now();
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        self.load_bytes(&bytes, path, start)
    }

    /// As [`Runtime::load`], for a component's bytes; `path` names it in
    /// errors, `start` is when loading began (for [`LoadedComponent::load_time`]).
    ///
    /// # Errors
    ///
    /// [`LoadError::Invalid`] (not a component), [`LoadError::World`] (a
    /// missing export, or an import the host does not provide).
    pub fn load_bytes(
        &self,
        bytes: &[u8],
        path: &Path,
        start: Instant,
    ) -> Result<LoadedComponent, LoadError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let invalid = |e: wasmtime::Error| LoadError::Invalid {
            path: path.to_owned(),
            reason: short_reason(&e),
        };
        let cache = self.cache_path(&sha256);
        let cached = cache.as_ref().and_then(|c| self.read_cache(c));
        let was_cached = cached.is_some();
        let component = match cached {
            Some(c) => c,
            None => {
                let compiled = self.engine.precompile_component(bytes).map_err(invalid)?;
                if let Some(c) = &cache {
                    let mut sealed = Sha256::digest(&compiled).to_vec();
                    sealed.extend_from_slice(&compiled);
                    store_atomically(c, &sealed);
                }
                // SAFETY: `compiled` was produced just above by this engine.
                unsafe { Component::deserialize(&self.engine, &compiled) }.map_err(invalid)?
            }
        };
        let world = |e: wasmtime::Error| LoadError::World {
            path: path.to_owned(),
            reason: short_reason(&e),
        };
        let pre = self.linker.instantiate_pre(&component).map_err(world)?;
        check_exports(&self.engine, &component).map_err(|reason| LoadError::World {
            path: path.to_owned(),
            reason,
        })?;
        let pre = bindings::ProcessorPre::new(pre).map_err(world)?;
        Ok(LoadedComponent {
            sha256,
            load_time: start.elapsed(),
            cached: was_cached,
            pre,
        })
    }

    /// A new instance of `component` for `processor`, with `limits`, after
    /// calling its `init` with `config`. Instantiation and `init` together
    /// run under [`Limits::init_deadline`].
    ///
    /// # Errors
    ///
    /// [`CallError::InitRefused`] when `init` returns an error;
    /// [`CallError::InitFailed`] with the trap, timeout or memory breach
    /// during instantiation or `init`.
    pub fn instantiate(
        &self,
        component: &LoadedComponent,
        processor: Arc<str>,
        limits: Limits,
        config: &[(String, String)],
    ) -> Result<Instance, CallError> {
        let [log_window, out_window, err_window] = self
            .log_windows
            .lock()
            .map(|mut w| {
                w.entry(processor.clone())
                    .or_insert_with(|| [RateWindow::new(), RateWindow::new(), RateWindow::new()])
                    .clone()
            })
            .unwrap_or_else(|_| [RateWindow::new(), RateWindow::new(), RateWindow::new()]);
        let stdout = GuestOutput::with_window(
            processor.clone(),
            "stdout",
            limits.log_lines_per_s,
            out_window,
        );
        let stderr = GuestOutput::with_window(
            processor.clone(),
            "stderr",
            limits.log_lines_per_s,
            err_window,
        );
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let state = HostState {
            wasi,
            table: ResourceTable::new(),
            limiter: MemoryLimiter {
                limit: limits.memory_bytes,
                hit: false,
            },
            processor,
            log_window,
            log_limit: limits.log_lines_per_s,
            log_dropped: 0,
            outputs: [stdout, stderr],
            state: StateOverlay::default(),
            limits,
            state_written: 0,
            breach: None,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let mut instance = Instance {
            deadline_ticks: deadline_ticks(limits.call_deadline),
            limits,
            bindings: None,
            store,
            live: LiveGuard::new(&self.live),
        };
        // One deadline for instantiation and init together.
        instance
            .store
            .set_epoch_deadline(deadline_ticks(limits.init_deadline));
        let init_failed = |instance: &mut Instance, e| {
            let mut cause = instance.classify(e);
            if let CallError::Timeout { deadline_ms } = &mut cause {
                *deadline_ms = limits.init_deadline.as_millis() as u64;
            }
            CallError::InitFailed(Box::new(cause))
        };
        let bindings = match component.pre.instantiate(&mut instance.store) {
            Ok(b) => b,
            Err(e) => return Err(init_failed(&mut instance, e)),
        };
        match bindings.call_init(&mut instance.store, config) {
            Ok(Ok(())) => {}
            Ok(Err(refusal)) => return Err(CallError::InitRefused(refusal)),
            Err(e) => return Err(init_failed(&mut instance, e)),
        }
        instance.bindings = Some(bindings);
        Ok(instance)
    }
}

/// The exports the world requires: `init` and `process`, both functions.
/// The message names the missing one and what the component exports instead.
fn check_exports(engine: &Engine, component: &Component) -> Result<(), String> {
    use wasmtime::component::types::ComponentItem;
    let ty = component.component_type();
    let exports: Vec<(String, bool)> = ty
        .exports(engine)
        .map(|(name, item)| {
            (
                name.to_owned(),
                matches!(item.ty, ComponentItem::ComponentFunc(_)),
            )
        })
        .collect();
    for wanted in ["init", "process"] {
        match exports.iter().find(|(n, _)| n == wanted) {
            Some((_, true)) => {}
            Some((_, false)) => {
                return Err(format!("export `{wanted}` is not a function"));
            }
            None => {
                let names: Vec<&str> = exports.iter().map(|(n, _)| n.as_str()).collect();
                return Err(format!(
                    "missing export `{wanted}` (the component exports: {})",
                    if names.is_empty() {
                        "nothing".to_owned()
                    } else {
                        names.join(", ")
                    }
                ));
            }
        }
    }
    Ok(())
}

/// wasmtime's error, without the byte dumps that some of its causes carry:
/// the top message and the root cause, at most 400 characters.
fn short_reason(e: &wasmtime::Error) -> String {
    let top = e.to_string();
    let root = e.root_cause().to_string();
    let mut s = if root == top || top.contains(&root) {
        top
    } else {
        format!("{top}: {root}")
    };
    // Some causes span lines (wasmparser's "expected=[\n 0x0, ...]"): one line.
    s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > 400 {
        let mut cut = 400;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn deadline_ticks(d: Duration) -> u64 {
    (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}

fn store_atomically(path: &Path, bytes: &[u8]) {
    let write = || -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, path)
    };
    if let Err(e) = write() {
        tracing::warn!(path = %path.display(), error = %e, "cannot cache the compiled component");
    }
}

/// The first output limit that `results` break, if any.
fn check_outputs(results: &[EventResult], limits: &Limits) -> Option<LimitBreach> {
    let mut bytes = 0usize;
    for outputs in results.iter().filter_map(|r| r.as_ref().ok()) {
        if outputs.len() > limits.max_outputs_per_event {
            return Some(LimitBreach::OutputCount {
                count: outputs.len(),
                limit: limits.max_outputs_per_event,
            });
        }
        for o in outputs {
            bytes = bytes
                .saturating_add(o.topic.as_ref().map_or(0, String::len))
                .saturating_add(o.key.as_ref().map_or(0, Vec::len))
                .saturating_add(o.value.as_ref().map_or(0, Vec::len))
                .saturating_add(o.headers.iter().map(|(n, v)| n.len() + v.len()).sum());
        }
    }
    (bytes > limits.max_output_bytes_per_batch).then_some(LimitBreach::OutputBytes {
        bytes,
        limit: limits.max_output_bytes_per_batch,
    })
}

/// One live instance of a component. After a [`CallError`] it must not be
/// called again (except after a [`CallError::Limit`] on outputs): drop it and
/// instantiate a fresh one.
pub struct Instance {
    store: Store<HostState>,
    bindings: Option<bindings::Processor>,
    limits: Limits,
    deadline_ticks: u64,
    #[expect(dead_code, reason = "counts the instance while it lives")]
    live: LiveGuard,
}

/// Counts one live instance in [`Runtime::live_instances`] until dropped.
struct LiveGuard(Arc<std::sync::atomic::AtomicUsize>);

impl LiveGuard {
    fn new(count: &Arc<std::sync::atomic::AtomicUsize>) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        LiveGuard(count.clone())
    }
}

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Instance {
    fn arm(&mut self) {
        self.store.set_epoch_deadline(self.deadline_ticks);
    }

    fn classify(&mut self, e: wasmtime::Error) -> CallError {
        if let Some(breach) = self.store.data_mut().breach.take() {
            return CallError::Limit(breach);
        }
        if self.store.data().limiter.hit {
            return CallError::MemoryLimit {
                limit_bytes: self.limits.memory_bytes,
            };
        }
        if e.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt) {
            return CallError::Timeout {
                deadline_ms: self.limits.call_deadline.as_millis() as u64,
            };
        }
        // The trap itself, without the backtrace that wasmtime attaches
        // (it goes to the debug log).
        tracing::debug!(error = format!("{e:#}"), "component trapped");
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(trap) => CallError::Trap(trap.to_string()),
            None => CallError::Trap(short_reason(&e)),
        }
    }

    /// Calls `process` on `events` with `state` as the state view; returns
    /// one result per event and gives the state view back (its current-call
    /// writes are kept on success, dropped on error).
    ///
    /// # Errors
    ///
    /// [`CallError`] when the call as a whole failed; the instance is then spent.
    pub fn process(
        &mut self,
        events: &[Event],
        state: &mut StateOverlay,
    ) -> Result<Vec<EventResult>, CallError> {
        let Some(bindings) = self.bindings.take() else {
            return Err(CallError::Contract(
                "the instance is spent after an earlier error".into(),
            ));
        };
        std::mem::swap(&mut self.store.data_mut().state, state);
        self.store.data_mut().state_written = 0;
        self.store.data_mut().breach = None;
        self.arm();
        let result = bindings.call_process(&mut self.store, events);
        std::mem::swap(&mut self.store.data_mut().state, state);
        let results = match result {
            Ok(r) => r,
            Err(e) => {
                state.drop_call();
                return Err(self.classify(e));
            }
        };
        if results.len() != events.len() {
            state.drop_call();
            return Err(CallError::Contract(format!(
                "process returned {} results for a batch of {} events (the WIT world requires one per event)",
                results.len(),
                events.len()
            )));
        }
        // The instance is sound after a breach of these: keep it.
        self.bindings = Some(bindings);
        if let Some(breach) = check_outputs(&results, &self.limits) {
            state.drop_call();
            return Err(CallError::Limit(breach));
        }
        state.keep_call();
        Ok(results)
    }

    /// Log lines dropped by the rate limit so far (`log` calls and lines of
    /// stdout and stderr).
    pub fn log_dropped(&self) -> u64 {
        let d = self.store.data();
        d.log_dropped + d.outputs.iter().map(GuestOutput::dropped).sum::<u64>()
    }
}
