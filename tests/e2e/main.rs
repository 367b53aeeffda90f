//! End-to-end tests: the `tidewater` binary, real components built from
//! plugins/, real redb files in temporary data dirs.

mod cli;
mod common;
mod console;
mod crash;
mod demo;
mod deploy;
mod devicedata;
mod dlq;
mod edge;
mod faults;
mod hostile;
mod idempotency;
mod ingest;
mod kafka;
mod new;
#[path = "../support/plugins.rs"]
mod plugins;
mod refusals;
mod roundtrip;
mod scaleout;
mod sinks;
#[path = "../support/wasm.rs"]
mod wasm;
