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

mod cache;
mod guest_output;
mod host_state;
mod instance;
mod limits;
mod state;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

use cache::store_atomically;
use guest_output::RateWindow;
use host_state::HostState;

pub use guest_output::{GuestOutput, MAX_OUTPUT_LINE_BYTES};
pub use instance::Instance;
pub use limits::{LimitBreach, Limits, STATE_WRITE_OVERHEAD_BYTES};
pub use state::{StateOverlay, StateReader, Writes};

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
