//! Printing: to stdout, where a reader that went away (`tidewater consume
//! TOPIC | head -1`) ends the command quietly with the status of a broken
//! pipe, and to stderr, where a write that fails is let go.

use std::io::Write;

/// Stdout was closed by its reader: the command ends quietly, with
/// [`BROKEN_PIPE_STATUS`].
#[derive(Debug, thiserror::Error)]
#[error("stdout was closed by its reader")]
pub(crate) struct StdoutClosed;

/// The exit status of a command whose stdout was closed: the status a shell
/// reports for a process ended by SIGPIPE (128 + 13), as `cat` gets.
pub(crate) const BROKEN_PIPE_STATUS: u8 = 141;

/// Writes `args` and a newline to stdout.
///
/// # Errors
///
/// [`StdoutClosed`] when the reader went away; any other write error with
/// its context.
pub(crate) fn line(args: std::fmt::Arguments<'_>) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    written(out.write_fmt(args).and_then(|()| out.write_all(b"\n")))
}

/// The result of a write to stdout, as [`line`] gives it.
///
/// # Errors
///
/// [`StdoutClosed`], or the write error.
pub(crate) fn written(result: std::io::Result<()>) -> anyhow::Result<()> {
    match result {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(StdoutClosed.into()),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}

/// Writes `args` and a newline to stderr; a failed write is let go (there
/// is nowhere left to report it).
pub(crate) fn diagnostic(args: std::fmt::Arguments<'_>) {
    let _ = writeln!(std::io::stderr().lock(), "{args}");
}

/// `println!` for the CLI: a line to stdout, `Err(StdoutClosed)` when the
/// reader went away (see [`line`]).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::cli::out::line(format_args!($($arg)*))
    };
}

/// `eprintln!` for the CLI: a line to stderr that never panics (see [`diagnostic`]).
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::cli::out::diagnostic(format_args!($($arg)*))
    };
}

pub(crate) use {errln, outln};
