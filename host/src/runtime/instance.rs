//! One live instance of a component: creating it (instantiation and
//! `init` under a deadline) and calling `process` on a batch.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use wasmtime::Store;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::WasiCtx;

use super::guest_output::{GuestOutput, RateWindow};
use super::host_state::HostState;
use super::limits::{Limits, MemoryLimiter, check_outputs, deadline_ticks};
use super::state::StateOverlay;
use super::{CallError, Event, EventResult, LoadedComponent, Runtime, bindings, short_reason};

impl Runtime {
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
        instance.stderr().begin_call();
        let bindings = match component.pre.instantiate(&mut instance.store) {
            Ok(b) => b,
            Err(e) => return Err(init_failed(&mut instance, e)),
        };
        match bindings.call_init(&mut instance.store, config) {
            Ok(Ok(())) => {}
            Ok(Err(refusal)) => {
                instance.stderr().end_call(false);
                return Err(CallError::InitRefused(refusal));
            }
            Err(e) => return Err(init_failed(&mut instance, e)),
        }
        instance.stderr().end_call(false);
        instance.bindings = Some(bindings);
        Ok(instance)
    }
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

    fn stderr(&self) -> &GuestOutput {
        &self.store.data().outputs[1]
    }

    /// What `e`, the error of a call, means. A trap's message quotes what
    /// the call wrote to stderr ([`GuestOutput::end_call`]): `wasm trap: ...;
    /// stderr: Uncaught ... | ...`.
    fn classify(&mut self, e: wasmtime::Error) -> CallError {
        let mut error = self.cause(e);
        let quote = self.stderr().end_call(matches!(error, CallError::Trap(_)));
        if let (CallError::Trap(message), Some(quote)) = (&mut error, quote) {
            message.push_str("; stderr: ");
            message.push_str(&quote);
        }
        error
    }

    fn cause(&mut self, e: wasmtime::Error) -> CallError {
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
        self.stderr().begin_call();
        let result = bindings.call_process(&mut self.store, events);
        std::mem::swap(&mut self.store.data_mut().state, state);
        let results = match result {
            Ok(r) => r,
            Err(e) => {
                state.drop_call();
                return Err(self.classify(e));
            }
        };
        self.stderr().end_call(false);
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
