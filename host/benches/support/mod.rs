//! Shared by the benches: the checkout, real readings, a scratch dir.
//! (A folder with `mod.rs`, so cargo does not take it for a bench.)
#![allow(dead_code, reason = "each bench uses some of these")]

use std::path::{Path, PathBuf};

use tidewater::streams::Record;

/// The repository root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The first `n` readings of `file` (a CSV under data/) as events of
/// `device`, with `time_column` as their time.
///
/// # Panics
///
/// When the file cannot be read or has fewer than `n` readings.
pub fn readings(file: &str, device: &str, time_column: &str, n: usize) -> Vec<Record> {
    let mut out = Vec::new();
    let data = std::fs::File::open(root().join("data").join(file)).expect("data file");
    let options = tidewater::streams::ingest::CsvOptions {
        device: device.into(),
        time_column: time_column.into(),
    };
    tidewater::streams::ingest::read_csv(data, &options, |r| {
        if out.len() < n {
            out.push(r.expect("row"));
        }
    })
    .expect("csv");
    assert_eq!(out.len(), n, "{file} has at least {n} readings");
    out
}

/// `n` readings of the sea-surface buoy.
pub fn buoy_readings(n: usize) -> Vec<Record> {
    readings(
        "sea_surface_temperature.csv.gz",
        "buoy-b01",
        "time (UTC)",
        n,
    )
}

/// A temporary dir in memory (/dev/shm) where there is one, so the
/// benches measure the host rather than the disk.
pub fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        tempfile::tempdir_in(shm).expect("temp dir")
    } else {
        tempfile::tempdir().expect("temp dir")
    }
}
