//! tidewater: a stream processor that runs sandboxed WebAssembly components
//! on every event of durable streams, with idempotency keys, state and
//! positions kept in redb.
//!
//! # Layout
//!
//! An event flows from [`streams`] (where it comes from) through
//! [`processing`] (the run loop, which calls the component in [`runtime`])
//! back into [`streams`] (where outputs go); [`control`] changes what a
//! processor runs between batches, [`admin`] serves it over HTTP, and
//! [`supervisor`] starts and stops it all.
//!
//! - [`streams`]: sources and sinks: the `Source`/`Sink` traits, record
//!   types, the embedded log, Kafka, store-and-forward, ingest.
//! - [`processing`]: the data path: the run loop, idempotency, state, dead
//!   letters, counters.
//! - [`runtime`]: wasmtime: engine, the WIT world's bindings, limits, the
//!   compiled-component cache.
//! - [`control`]: versions and their lifecycle: registry, hot swap, shadow,
//!   canary, replay.
//! - [`admin`]: the admin HTTP API, `/metrics`, the plugins-dir watcher.
//! - [`supervisor`]: starting, supervising and stopping processors and
//!   forwards (`tidewater run`).
//! - [`config`]: the TOML config of `tidewater run`: each part's section,
//!   aggregated.
//! - [`db`]: the redb file that holds everything durable.
//! - [`scaffold`]: new processor projects in every language (`tidewater new`).
//! - [`text`]: messages that quote what people sent, clipped to a prefix.
//!
//! Imports go one way: `supervisor` → `admin` → `control` → `processing` →
//! `runtime` and `streams`; `config` aggregates the parts' configs. The data
//! path names no HTTP type, `runtime` names no storage or stream type, and
//! `streams::embedded` and `streams::kafka` never name each other.
#![deny(missing_docs)]

pub mod admin;
pub mod config;
pub mod control;
pub mod db;
#[cfg(test)]
mod fuzz;
pub mod processing;
pub mod runtime;
pub mod scaffold;
pub mod streams;
pub mod supervisor;
pub mod text;

pub use supervisor::{RunOptions, RunSummary, run, run_with};
