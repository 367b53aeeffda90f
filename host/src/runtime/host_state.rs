//! The store data of one instance ([`HostState`]) and the host side of the
//! world's imports: `state` (through a [`StateOverlay`]), `log`, and WASI.

use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::Level;
use super::bindings;
use super::guest_output::{GuestOutput, RateWindow};
use super::limits::{LimitBreach, Limits, MemoryLimiter, STATE_WRITE_OVERHEAD_BYTES};
use super::state::StateOverlay;

/// The store data of one instance.
pub(super) struct HostState {
    pub(super) wasi: WasiCtx,
    pub(super) table: ResourceTable,
    pub(super) limiter: MemoryLimiter,
    pub(super) processor: Arc<str>,
    pub(super) log_window: RateWindow,
    pub(super) log_limit: u32,
    /// Log lines dropped by the rate limit.
    pub(super) log_dropped: u64,
    /// The component's stdout and stderr.
    pub(super) outputs: [GuestOutput; 2],
    /// The state view of the batch in progress.
    pub(super) state: StateOverlay,
    /// The limits checked on state writes.
    pub(super) limits: Limits,
    /// Bytes of state written by the call in progress (see [`Limits::max_state_bytes_per_batch`]).
    pub(super) state_written: usize,
    /// The host-side limit the call in progress broke, if any.
    pub(super) breach: Option<LimitBreach>,
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
