//! The `tidewater` command: parses the command line, sets up logging and
//! hands over to the library.

mod cli;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let args = cli::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TIDEWATER_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("tidewater=info,warn")),
        )
        .with_writer(std::io::stderr)
        // A log line that cannot be written (stderr closed by its reader) is
        // let go; reporting that on stderr again would fail the same way.
        .log_internal_errors(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            cli::errln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(cli::execute(args));
    // Do not wait for blocking work that outlived the command (a processor
    // stuck on an unreachable broker): the command has ended.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        // `tidewater consume TOPIC | head -1`: the reader has what it wanted.
        Err(e) if e.downcast_ref::<cli::StdoutClosed>().is_some() => {
            std::process::ExitCode::from(cli::BROKEN_PIPE_STATUS)
        }
        Err(e) => {
            cli::errln!("error: {}", message(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes, each cause once: a cause whose text the
/// message already contains is not repeated.
fn message(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}
