//! Levelled logging into the host's log (the WIT `log` interface); the host
//! tags each line with the processor's name. Natively, lines go to stderr.

/// Severity of a log line, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Very detailed tracing.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something unexpected that the processor handled.
    Warn,
    /// Something failed.
    Error,
}

/// Writes `message` at `level`.
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    {
        use crate::abi::wit_log::{Level as L, log};
        let l = match level {
            Level::Trace => L::Trace,
            Level::Debug => L::Debug,
            Level::Info => L::Info,
            Level::Warn => L::Warn,
            Level::Error => L::Error,
        };
        log(l, message);
    }
    #[cfg(not(target_arch = "wasm32"))]
    eprintln!("[{level:?}] {message}");
}

/// Writes `message` at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message)
}

/// Writes `message` at info level.
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// Writes `message` at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

/// Writes `message` at error level.
pub fn error(message: &str) {
    log(Level::Error, message)
}
