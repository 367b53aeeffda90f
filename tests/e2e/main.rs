//! End-to-end tests: the `tidewater` binary, real components built from
//! plugins/, real redb files in temporary data dirs.

mod common;
mod crash;
mod demo;
mod faults;
mod idempotency;
mod new;
mod roundtrip;
