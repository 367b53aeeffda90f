//! The embedded durable log: partitioned, append-only topics in redb, for
//! one machine with nothing installed; what `make demo` runs on.
//!
//! - `log`: [`Log`], topics, partitions, appends, reads.
//! - `retention`: removing old records, keeping those a consumer has not
//!   read ([`Log::enforce_retention`], [`Log::free_room`]).
//! - `source` / `sink`: the log as a processor's [`crate::streams::Source`]
//!   and [`crate::streams::Sink`].
//! - `config`: `[log]` and `[[topic]]`.

mod config;
mod log;
mod retention;
mod sink;
mod source;

pub use config::{LogConfig, Retention, TopicConfig, Unread, check_log_config};
pub use log::{
    Log, LogError, PartitionInfo, StoredBytes, TopicInfo, append_all_in, append_at_in, append_in,
    append_many_in, ensure_topic_in,
};
pub use retention::{RetentionReport, UnreadRecords};
pub use sink::EmbeddedSink;
pub use source::{EmbeddedSource, offset_for_time};
