//! The embedded durable log: partitioned, append-only topics in redb, for
//! one machine with nothing installed; what `make demo` runs on.
//!
//! - `log`: [`Log`], topics, partitions, appends, reads, retention.
//! - `source` / `sink`: the log as a processor's [`crate::streams::Source`]
//!   and [`crate::streams::Sink`].
//! - `config`: `[log]` and `[[topic]]`.

mod config;
mod log;
mod sink;
mod source;

pub use config::{LogConfig, TopicConfig, check_log_config};
pub use log::{
    Log, LogError, PartitionInfo, StoredBytes, TopicInfo, append_all_in, append_in, ensure_topic_in,
};
pub use sink::EmbeddedSink;
pub use source::EmbeddedSource;
