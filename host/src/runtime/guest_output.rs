//! A component's stdout and stderr, and the per-second budgets of its log
//! lines: each line goes into the host's log, tagged with the processor.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A lines-per-second budget: one per processor and stream (the `log`
/// interface, stdout, stderr), shared by every instance of the processor, so
/// fresh instances (after a trap, during bisection, on a swap) do not get a
/// fresh budget.
#[derive(Clone)]
pub(super) struct RateWindow(Arc<Mutex<(Instant, u32)>>);

impl RateWindow {
    pub(super) fn new() -> Self {
        RateWindow(Arc::new(Mutex::new((Instant::now(), 0))))
    }

    /// Whether one more line fits in this second's `limit`.
    pub(super) fn admit(&self, limit: u32) -> bool {
        let Ok(mut w) = self.0.lock() else {
            return false;
        };
        let now = Instant::now();
        if now.duration_since(w.0) >= Duration::from_secs(1) {
            *w = (now, 0);
        }
        if w.1 >= limit {
            return false;
        }
        w.1 += 1;
        true
    }
}

/// Longest line of a component's stdout or stderr kept whole, in bytes; the
/// rest of a longer line is cut off (and a line without a newline is written
/// once it reaches this length).
pub const MAX_OUTPUT_LINE_BYTES: usize = 4096;

/// A component's stdout or stderr: each line becomes one entry of the host's
/// log at info level (stdout) or warn level (stderr), with the fields
/// `processor` and `stream`; at most `lines_per_s` lines a second, the rest
/// are dropped and counted ([`GuestOutput::dropped`]).
#[derive(Clone)]
pub struct GuestOutput {
    stream: &'static str,
    shared: Arc<Mutex<OutputLines>>,
}

struct OutputLines {
    processor: Arc<str>,
    partial: Vec<u8>,
    window: RateWindow,
    lines_per_s: u32,
    dropped: u64,
}

impl GuestOutput {
    /// The `stream` (`"stdout"` or `"stderr"`) of `processor`.
    pub fn new(processor: Arc<str>, stream: &'static str, lines_per_s: u32) -> Self {
        Self::with_window(processor, stream, lines_per_s, RateWindow::new())
    }

    pub(super) fn with_window(
        processor: Arc<str>,
        stream: &'static str,
        lines_per_s: u32,
        window: RateWindow,
    ) -> Self {
        GuestOutput {
            stream,
            shared: Arc::new(Mutex::new(OutputLines {
                processor,
                partial: Vec::new(),
                window,
                lines_per_s,
                dropped: 0,
            })),
        }
    }

    /// Lines dropped by the rate limit so far.
    pub fn dropped(&self) -> u64 {
        self.shared.lock().map_or(0, |s| s.dropped)
    }

    fn write(&self, bytes: &[u8]) {
        let Ok(mut s) = self.shared.lock() else {
            return;
        };
        for chunk in bytes.split_inclusive(|b| *b == b'\n') {
            let room = MAX_OUTPUT_LINE_BYTES.saturating_sub(s.partial.len());
            let complete = chunk.last() == Some(&b'\n');
            let body = if complete {
                &chunk[..chunk.len() - 1]
            } else {
                chunk
            };
            s.partial.extend_from_slice(&body[..body.len().min(room)]);
            if complete || s.partial.len() >= MAX_OUTPUT_LINE_BYTES {
                let line = std::mem::take(&mut s.partial);
                s.emit(self.stream, &line);
            }
        }
    }
}

impl OutputLines {
    fn emit(&mut self, stream: &str, line: &[u8]) {
        if !self.window.admit(self.lines_per_s) {
            self.dropped += 1;
            return;
        }
        let text = String::from_utf8_lossy(line);
        let p = &*self.processor;
        if stream == "stderr" {
            tracing::warn!(processor = p, stream, "{text}");
        } else {
            tracing::info!(processor = p, stream, "{text}");
        }
    }
}

impl wasmtime_wasi::cli::IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl wasmtime_wasi::cli::StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn wasmtime_wasi::p2::OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::OutputStream for GuestOutput {
    fn write(&mut self, buf: bytes::Bytes) -> wasmtime_wasi::p2::StreamResult<()> {
        GuestOutput::write(self, &buf);
        Ok(())
    }

    fn flush(&mut self) -> wasmtime_wasi::p2::StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> wasmtime_wasi::p2::StreamResult<usize> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl wasmtime_wasi::p2::Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        GuestOutput::write(&self, buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}
