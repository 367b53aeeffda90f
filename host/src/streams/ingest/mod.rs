//! Turning outside data into records for the embedded log (or Kafka):
//! `tidewater produce` and, next, the HTTP and MQTT endpoints of `run`.
//!
//! - [`csv`]: CSV files of sensor readings, one record per row.

pub mod csv;

pub use csv::{
    BadRow, CsvOptions, IngestError, chosen_for_redelivery, maybe_gunzip, parse_time_ms, read_csv,
};
