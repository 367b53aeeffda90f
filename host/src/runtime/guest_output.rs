//! A component's stdout and stderr, and the per-second budgets of its log
//! lines: each line goes into the host's log, tagged with the processor.
//! What a component writes to stderr during a call is also kept, bounded, so
//! that a trap's message can quote it ([`GuestOutput::end_call`]): a
//! JavaScript exception, a Python traceback, a Rust or Zig panic message.

use std::collections::VecDeque;
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

/// Most bytes of stderr a trap's message quotes: up to half of it from the
/// first lines the call wrote, up to half from the last (a JavaScript or
/// Python error's message can be at either end of its stack).
pub const MAX_QUOTED_STDERR_BYTES: usize = 1024;

/// Most lines of a call's stderr held back until the call ends; past that
/// they are logged as they come.
const MAX_HELD_LINES: usize = 64;

/// A component's stdout or stderr: each line becomes one entry of the host's
/// log at info level (stdout) or warn level (stderr), with the fields
/// `processor` and `stream`; at most `lines_per_s` lines a second, the rest
/// are dropped and counted ([`GuestOutput::dropped`]).
///
/// Between [`GuestOutput::begin_call`] and [`GuestOutput::end_call`] the
/// lines (up to 64) are held back: logged when the call returns, or, when it
/// traps, quoted in the trap's message and logged at debug level only, so a
/// trap that bisection repeats does not repeat its stack in the log.
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
    /// The call in progress, between `begin_call` and `end_call`.
    call: Option<CallLines>,
}

/// What one call wrote: the lines held back from the log, and the quote.
#[derive(Default)]
struct CallLines {
    held: Vec<Vec<u8>>,
    /// More than [`MAX_HELD_LINES`] came: the held ones were logged, the
    /// rest go to the log as they come.
    live: bool,
    quote: Quote,
}

/// The first and the last non-blank lines of a call's output, at most
/// [`MAX_QUOTED_STDERR_BYTES`] in all.
#[derive(Default)]
struct Quote {
    head: Vec<String>,
    head_bytes: usize,
    tail: VecDeque<String>,
    tail_bytes: usize,
    /// Lines between head and tail that were let go.
    omitted: usize,
}

impl Quote {
    const HALF: usize = MAX_QUOTED_STDERR_BYTES / 2;
    const SEPARATOR: &'static str = " | ";

    fn add(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = text.trim();
        if text.is_empty() {
            return;
        }
        let line = cut(text, Self::HALF - Self::SEPARATOR.len());
        // Each line is counted with the separator that joins it.
        let cost = line.len() + Self::SEPARATOR.len();
        if self.tail.is_empty() && self.head_bytes + cost <= Self::HALF {
            self.head_bytes += cost;
            self.head.push(line);
            return;
        }
        self.tail_bytes += cost;
        self.tail.push_back(line);
        while self.tail_bytes > Self::HALF && self.tail.len() > 1 {
            let gone = self.tail.pop_front().expect("more than one line");
            self.tail_bytes -= gone.len() + Self::SEPARATOR.len();
            self.omitted += 1;
        }
    }

    /// The lines joined by ` | `, or `None` when there were none.
    fn text(self) -> Option<String> {
        if self.head.is_empty() && self.tail.is_empty() {
            return None;
        }
        let mut parts = self.head;
        if self.omitted > 0 {
            parts.push(format!("… {} more lines …", self.omitted));
        }
        parts.extend(self.tail);
        Some(parts.join(Self::SEPARATOR))
    }
}

/// `text` cut to at most `max` bytes at a character boundary, marked with `…`.
fn cut(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max - '…'.len_utf8();
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
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
                call: None,
            })),
        }
    }

    /// Starts holding back and quoting the lines of a call (see the type's docs).
    pub(super) fn begin_call(&self) {
        if let Ok(mut s) = self.shared.lock() {
            s.call = Some(CallLines::default());
        }
    }

    /// Ends the call started by [`GuestOutput::begin_call`]. When it
    /// returned (`trapped` false) the held lines go to the log and `None`
    /// comes back; when it trapped, they go to the debug log and the quote
    /// comes back: its first and last non-blank lines (a last line without
    /// a newline included), joined by ` | `, at most
    /// [`MAX_QUOTED_STDERR_BYTES`] plus a marker of the lines left out, or
    /// `None` when the call wrote nothing.
    pub(super) fn end_call(&self, trapped: bool) -> Option<String> {
        let Ok(mut s) = self.shared.lock() else {
            return None;
        };
        let mut call = s.call.take()?;
        if !trapped {
            for line in &call.held {
                s.emit(self.stream, line);
            }
            return None;
        }
        let partial = std::mem::take(&mut s.partial);
        call.quote.add(&partial);
        for line in call.held.iter().chain([&partial]) {
            if !line.is_empty() {
                let p = &*s.processor;
                let text = String::from_utf8_lossy(line);
                tracing::debug!(processor = p, stream = self.stream, "{text}");
            }
        }
        call.quote.text()
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
                s.line(self.stream, line);
            }
        }
    }
}

impl OutputLines {
    /// A whole line: held back during a call, else logged.
    fn line(&mut self, stream: &str, line: Vec<u8>) {
        let Some(call) = self.call.as_mut() else {
            return self.emit(stream, &line);
        };
        call.quote.add(&line);
        if call.live {
            return self.emit(stream, &line);
        }
        call.held.push(line);
        if call.held.len() > MAX_HELD_LINES {
            call.live = true;
            let held = std::mem::take(&mut call.held);
            for line in &held {
                self.emit(stream, line);
            }
        }
    }

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

#[cfg(test)]
mod tests {
    use super::*;

    fn quote(lines: &[&str]) -> Option<String> {
        let mut q = Quote::default();
        for l in lines {
            q.add(l.as_bytes());
        }
        q.text()
    }

    #[test]
    fn a_trap_quotes_the_first_and_last_lines_of_stderr() {
        assert_eq!(quote(&[]), None);
        assert_eq!(quote(&["", "  "]), None);
        assert_eq!(
            quote(&[
                "Buffer is not defined",
                "Stack:",
                "  onEvent@bundle.js:267:3",
                ""
            ])
            .as_deref(),
            Some("Buffer is not defined | Stack: | onEvent@bundle.js:267:3")
        );
        // A deep stack: the first lines and the last are kept, the middle counted.
        let frames: Vec<String> = (0..100)
            .map(|i| format!("  frame{i:02}@bundle.js:{i}:1"))
            .collect();
        let mut lines = vec!["TypeError: x is undefined", "Stack:"];
        lines.extend(frames.iter().map(String::as_str));
        lines.push("Redirecting call to abort() to mozalloc_abort");
        let text = quote(&lines).unwrap();
        assert!(
            text.starts_with("TypeError: x is undefined | Stack: | frame00@bundle.js:0:1 | "),
            "{text}"
        );
        assert!(
            text.ends_with(
                " | frame99@bundle.js:99:1 | Redirecting call to abort() to mozalloc_abort"
            ),
            "{text}"
        );
        assert!(text.contains(" more lines … | "), "{text}");
        assert!(
            text.len() <= MAX_QUOTED_STDERR_BYTES + 64,
            "{} bytes",
            text.len()
        );
        // One line longer than half the quote is cut at a character boundary.
        let long = "é".repeat(1000);
        let text = quote(&[&long]).unwrap();
        assert_eq!(text, format!("{}…", "é".repeat(253)));
    }

    #[test]
    fn lines_of_a_call_are_held_until_it_ends() {
        let out = GuestOutput::new("p".into(), "stderr", 100);
        out.begin_call();
        out.write(b"panicked at x\nprobe trap\nno newline");
        assert_eq!(
            out.end_call(true).as_deref(),
            Some("panicked at x | probe trap | no newline")
        );
        // A call that returns: nothing to quote, and the next call starts afresh.
        out.begin_call();
        out.write(b"fine\n");
        assert_eq!(out.end_call(false), None);
        out.begin_call();
        assert_eq!(out.end_call(true), None);
        assert_eq!(out.dropped(), 0);
    }
}
