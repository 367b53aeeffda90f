//! What one instance may use: the [`Limits`] of a processor, how a breach
//! is reported ([`LimitBreach`]), and the memory cap wasmtime enforces.

use std::time::Duration;

use super::{EPOCH_TICK, EventResult};

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

pub(super) struct MemoryLimiter {
    pub(super) limit: usize,
    pub(super) hit: bool,
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

/// The first output limit that `results` break, if any.
pub(super) fn check_outputs(results: &[EventResult], limits: &Limits) -> Option<LimitBreach> {
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

/// `d` in epoch ticks, at least one.
pub(super) fn deadline_ticks(d: Duration) -> u64 {
    (d.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
}
