//! What runs a processor's code on a batch: the [`Handler`] trait, the
//! WebAssembly component behind it ([`WasmHandler`]), and a native function
//! for benchmarks ([`FnHandler`]).

use std::sync::Arc;

use crate::runtime::{
    CallError, Event, EventResult, Instance, Limits, LoadedComponent, Runtime, StateOverlay,
};

/// Instances a [`Handler`] discarded after a failed call, by cause; each
/// is replaced by a fresh one on the next call.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Recycles {
    /// Every instance discarded (trap, timeout, memory cap, bad output, ...).
    pub total: u64,
    /// Of those, the instances that hit `limits.memory_bytes` (code `memory-limit`).
    pub memory_limit: u64,
}

/// Runs the processor's code on a batch.
pub trait Handler: Send {
    /// The version's identity (the component's SHA-256), for dead-letter headers.
    fn version(&self) -> &str;

    /// Log lines dropped by the rate limit so far, over every instance.
    fn log_dropped(&self) -> u64 {
        0
    }

    /// Instances discarded so far, over the handler's life.
    fn recycles(&self) -> Recycles {
        Recycles::default()
    }

    /// Processes `events`, one result per event, reading and writing state
    /// through `state`.
    ///
    /// # Errors
    ///
    /// [`CallError`] when the call failed as a whole; the next call starts afresh.
    fn call(
        &mut self,
        events: &[Event],
        state: &mut StateOverlay,
    ) -> Result<Vec<EventResult>, CallError>;
}

/// A [`Handler`] that runs a WebAssembly component, re-instantiating it
/// after a failed call.
pub struct WasmHandler {
    runtime: Arc<Runtime>,
    component: Arc<LoadedComponent>,
    processor: Arc<str>,
    limits: Limits,
    config: Vec<(String, String)>,
    instance: Option<Instance>,
    /// Log lines dropped by instances already discarded.
    log_dropped_before: u64,
    /// Instances discarded after a failed call.
    recycles: Recycles,
}

impl WasmHandler {
    /// Instantiates `component` for `processor` and calls its `init` with `config`.
    ///
    /// # Errors
    ///
    /// [`CallError`] when instantiation or `init` fails.
    pub fn new(
        runtime: Arc<Runtime>,
        component: Arc<LoadedComponent>,
        processor: Arc<str>,
        limits: Limits,
        config: Vec<(String, String)>,
    ) -> Result<Self, CallError> {
        let instance = runtime.instantiate(&component, processor.clone(), limits, &config)?;
        Ok(WasmHandler {
            runtime,
            component,
            processor,
            limits,
            config,
            instance: Some(instance),
            log_dropped_before: 0,
            recycles: Recycles::default(),
        })
    }
}

impl Handler for WasmHandler {
    fn version(&self) -> &str {
        &self.component.sha256
    }

    fn log_dropped(&self) -> u64 {
        self.log_dropped_before + self.instance.as_ref().map_or(0, Instance::log_dropped)
    }

    fn recycles(&self) -> Recycles {
        self.recycles
    }

    fn call(
        &mut self,
        events: &[Event],
        state: &mut StateOverlay,
    ) -> Result<Vec<EventResult>, CallError> {
        let mut instance = match self.instance.take() {
            Some(i) => i,
            None => self.runtime.instantiate(
                &self.component,
                self.processor.clone(),
                self.limits,
                &self.config,
            )?,
        };
        match instance.process(events, state) {
            Ok(results) => {
                self.instance = Some(instance);
                Ok(results)
            }
            Err(e) => {
                // The instance may be in any state after a failure: it is
                // dropped here and the next call instantiates afresh.
                self.log_dropped_before += instance.log_dropped();
                self.recycles.total += 1;
                if matches!(e, CallError::MemoryLimit { .. }) {
                    self.recycles.memory_limit += 1;
                }
                Err(e)
            }
        }
    }
}

/// A [`Handler`] that runs a native Rust function per event; used to measure
/// the cost of the sandbox against the same logic without it.
pub struct FnHandler<F> {
    f: F,
}

impl<F> FnHandler<F>
where
    F: FnMut(&Event, &mut StateOverlay) -> EventResult + Send,
{
    /// Wraps `f`.
    pub fn new(f: F) -> Self {
        FnHandler { f }
    }
}

impl<F> Handler for FnHandler<F>
where
    F: FnMut(&Event, &mut StateOverlay) -> EventResult + Send,
{
    fn version(&self) -> &str {
        "native"
    }

    fn call(
        &mut self,
        events: &[Event],
        state: &mut StateOverlay,
    ) -> Result<Vec<EventResult>, CallError> {
        let out = events.iter().map(|e| (self.f)(e, state)).collect();
        state.keep_call();
        Ok(out)
    }
}
