//! Turning outside data into records for the embedded log (or Kafka):
//! `tidewater produce` and, next, the HTTP and MQTT endpoints of `run`.
//!
//! - [`csv`]: CSV files of sensor readings, one record per row, as devices
//!   write them (preambles, split date and time, sentinels).
//! - [`times`]: reading a device's time: ISO 8601, strftime, epoch, elapsed.
//! - [`device_time`]: the device-time policy every way in applies before a
//!   record is stored ([`DeviceTimePolicy::stamp`]), and its counts.

pub mod csv;
pub mod device_time;
pub mod times;

pub use csv::{
    BadRow, CsvFormat, CsvOptions, IngestError, chosen_for_redelivery, maybe_gunzip, read_csv,
    read_csv_with,
};
pub use device_time::{DEVICE_TIME_HEADER, DeviceTimePolicy, Stamp, Tally, append_stamped};
pub use times::{EpochUnit, TimeFormat, parse_time_ms};
