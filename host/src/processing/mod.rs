//! The data path: what happens to each event between its source and its
//! sink.
//!
//! - [`pipeline`]: the run loop of one processor, read → classify → call →
//!   commit ([`Pipeline::step`]), and the [`BatchControl`] hook that
//!   [`crate::control`] implements.
//! - `classify`: new, duplicate, conflict or unkeyed, by idempotency key.
//! - `recover`: retries of `transient` errors, bisection of failed calls.
//! - [`handler`]: what runs the processor's code ([`WasmHandler`]).
//! - [`outputs`]: the WIT event of a record, an output as a record.
//! - [`idempotency`]: idempotency keys: derivation, duplicates, conflicts,
//!   epochs, expiry.
//! - [`state`]: per-processor state in redb, committed with each batch.
//! - [`changes`]: the local cache of a partition's keys and state, as a
//!   changelog restore fills it (Kafka).
//! - [`dlq`]: dead letters: their format, reading them back, replaying them.
//! - [`stats`]: per-processor counters, error codes and status.
//! - [`config`]: `[[processor]]`, its settings and their checks.
//!
//! Nothing here names an HTTP type or a particular stream: sources and sinks
//! come in through [`crate::streams::Source`] and [`crate::streams::Sink`].

pub mod changes;
mod classify;
pub mod config;
pub mod dlq;
pub mod handler;
pub mod idempotency;
pub mod outputs;
pub mod pipeline;
mod recover;
pub mod state;
pub mod stats;

pub use handler::{FnHandler, Handler, Recycles, WasmHandler};
pub use pipeline::{BatchControl, Pipeline, PipelineError, Settings};
pub use recover::{Ending, MAX_BACKOFF, backoff_delay};
