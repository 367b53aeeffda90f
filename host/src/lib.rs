//! tidewater: a stream processor that runs sandboxed WebAssembly components
//! on every event of durable streams, with idempotency keys, state and
//! positions kept in redb.
//!
//! # Layout
//!
//! - [`config`]: the TOML config of `tidewater run`.
//! - [`db`]: the redb file that holds everything durable.
//! - [`log`]: the embedded durable log (topics, partitions, offsets, retention, positions).
//! - [`kafka`]: Apache Kafka as a source and sink (rdkafka), with an outbox and transactions.
//! - [`forward`]: store-and-forward of embedded-log topics to Kafka (`tidewater forward`, `[[forward]]`).
//! - [`idempotency`]: idempotency keys: derivation, duplicates, conflicts, expiry.
//! - [`state`]: per-processor key-value state, committed with each batch.
//! - [`runtime`]: wasmtime, the WIT world's bindings, limits, the compiled-component cache.
//! - [`registry`]: versions (uploaded components), validation, activation history, epochs.
//! - [`control`]: hot swap, pause, shadow, canary and replay at batch boundaries.
//! - [`admin`]: the admin HTTP API (and its client), `/metrics`, the plugins-dir watcher.
//! - [`pipeline`]: the run loop of one processor: source → dedupe → component → one commit.
//! - [`stats`]: per-processor counters, error codes and status.
//! - [`dlq`]: dead letters read back and replayed through a fixed component, exactly once.
//! - [`ingest`]: turning CSV files into events.
//! - [`host`]: starting and stopping processors (`tidewater run`).
//! - [`scaffold`]: new processor projects in every language (`tidewater new`).
#![deny(missing_docs)]

pub mod admin;
pub mod config;
pub mod control;
pub mod db;
pub mod dlq;
pub mod forward;
#[cfg(test)]
mod fuzz;
pub mod host;
pub mod idempotency;
pub mod ingest;
pub mod kafka;
pub mod log;
pub mod pipeline;
pub mod registry;
pub mod runtime;
pub mod scaffold;
pub mod state;
pub mod stats;

pub use host::{RunOptions, RunSummary, run, run_with};
