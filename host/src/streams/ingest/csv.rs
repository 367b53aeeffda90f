//! Turning CSV files of sensor readings into events.
//!
//! Each row becomes one record:
//! - value: a JSON object `{"device": ID, "ts": "<the row's time as written>",
//!   <column>: <cell>, ...}` with the other columns in file order; a cell
//!   is a JSON number when it parses as one, `null` when it is empty,
//!   `nil`/`null`/`NaN` (any case) or one of the sentinels of
//!   [`CsvFormat::null_values`], else a string; an integer that a number
//!   would change (leading zeros as in `007`, or more digits than an `i64`
//!   holds) stays the string as written;
//! - key: the device id;
//! - timestamp: the row's time, read as [`CsvFormat::time`] says (by
//!   default ISO 8601 / RFC 3339, UTC when it names no offset), in ms since
//!   the Unix epoch. The device-time policy
//!   ([`super::device_time`]) is applied when the record is stored.
//!
//! The file may be gzip-compressed (detected by its magic bytes), have CRLF
//! line ends, lines before its header ([`CsvFormat::skip_lines`]), and the
//! date and the time in two columns ([`CsvFormat::date_column`]; `ts` is
//! then `"<date> <time>"`). A row that cannot be turned into an event is
//! reported with its line number, never silently dropped.

use std::io::{BufRead, BufReader, Read};

use super::times::TimeFormat;
use crate::streams::Record;

/// How to read a CSV file.
#[derive(Debug, Clone)]
pub struct CsvOptions {
    /// The device id written into every event and used as the record key.
    pub device: String,
    /// The column holding each row's time.
    pub time_column: String,
}

/// How a device wrote its file, beyond plain CSV with a header: lines
/// before the header, where and how the time is written, and which values
/// mean "missing". The default reads the shipped data sets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CsvFormat {
    /// Lines before the header to skip (a logger's preamble: model, serial
    /// number, units). Line numbers in reports still count them.
    pub skip_lines: u64,
    /// The column holding the date when the date and the time are in two
    /// columns (the time column then holds the time of day); the time is
    /// read from `"<date> <time>"`.
    pub date_column: Option<String>,
    /// How the time is written.
    pub time: TimeFormat,
    /// Cells that mean "no value" and become JSON `null` (besides an empty
    /// cell, `nil`, `null` and `NaN`): e.g. `-9900`, `-999`. A cell matches
    /// a sentinel when its text is the same, or when both are numbers of
    /// equal value (`-9900.0` matches `-9900`).
    pub null_values: Vec<String>,
}

/// A row that could not be turned into an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadRow {
    /// The 1-based line number in the file (the header is line 1 plus the
    /// skipped lines).
    pub line: u64,
    /// What was wrong.
    pub reason: String,
    /// The row as CSV: its cells joined by commas, quoted where a cell
    /// needs it (so it reads back as the same cells).
    pub raw: Vec<u8>,
}

/// Why a CSV file could not be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IngestError {
    /// The file has no header line.
    #[error("the file is empty: a CSV header naming the columns is needed")]
    Empty,
    /// The header is unreadable.
    #[error("cannot read the CSV header: {0}")]
    Header(String),
    /// Nothing but the lines to skip (and empty lines): no header is left.
    #[error(
        "no header is left after skipping {skip} lines (--skip-lines {skip}): the file has {lines} lines"
    )]
    Preamble {
        /// Lines the file has.
        lines: u64,
        /// Lines asked to skip.
        skip: u64,
    },
    /// The time (or date) column is not in the header.
    #[error("column {column:?} is not in the header (columns: {columns}){hint}")]
    NoTimeColumn {
        /// The column asked for.
        column: String,
        /// The columns there are, comma-separated.
        columns: String,
        /// When the header is one column holding `;` or a tab: a note that
        /// the file is not comma-separated (else empty).
        hint: &'static str,
    },
    /// A column name is used twice, or is one of the fields the event gets anyway.
    #[error("column {0:?} {1}")]
    BadColumn(String, &'static str),
    /// Reading or decompressing failed part way.
    #[error("cannot read the file after line {line}: {message}")]
    Io {
        /// The last line read completely.
        line: u64,
        /// What failed (e.g. a truncated gzip stream).
        message: String,
    },
}

/// The JSON of one cell: a number, `null` (empty, `nil`, `null`, `NaN`, or
/// a sentinel of `nulls`), else a string.
fn cell_json(cell: &str, nulls: &[String]) -> String {
    let c = cell.trim();
    if c.is_empty()
        || ["nil", "null", "nan"].contains(&c.to_ascii_lowercase().as_str())
        || is_sentinel(c, nulls)
    {
        return "null".into();
    }
    if is_integer_text(c) {
        return match c.parse::<i64>() {
            Ok(i) if !has_leading_zero(c) => i.to_string(),
            // A code (`007`) or a serial number past i64: a number would
            // lose its zeros or its last digits.
            _ => serde_json::Value::from(c).to_string(),
        };
    }
    if let Some(x) = plain_number(c) {
        return serde_json::Value::from(x).to_string();
    }
    serde_json::Value::from(c).to_string()
}

/// Whether `c` is an integer: an optional sign, then ASCII digits only.
fn is_integer_text(c: &str) -> bool {
    let digits = c.strip_prefix(['+', '-']).unwrap_or(c);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Whether the integer `c` starts with a zero that is not the whole of it
/// (`007`, `-01`).
fn has_leading_zero(c: &str) -> bool {
    let digits = c.strip_prefix(['+', '-']).unwrap_or(c);
    digits.len() > 1 && digits.starts_with('0')
}

/// `c` as a finite number written with digits, sign, point and exponent
/// only (so `inf` and `NaN` are not numbers).
fn plain_number(c: &str) -> Option<f64> {
    let x: f64 = c.parse().ok()?;
    (x.is_finite()
        && c.bytes()
            .all(|b| b.is_ascii_digit() || b"+-.eE".contains(&b)))
    .then_some(x)
}

fn is_sentinel(c: &str, nulls: &[String]) -> bool {
    nulls.iter().any(|n| {
        n == c || matches!((plain_number(n), plain_number(c)), (Some(a), Some(b)) if a == b)
    })
}

/// Opens `reader`, decompressing it when it starts with the gzip magic bytes.
///
/// # Errors
///
/// I/O errors.
pub fn maybe_gunzip<'a>(reader: impl Read + 'a) -> std::io::Result<Box<dyn Read + 'a>> {
    let mut buffered = BufReader::new(reader);
    let head = buffered.fill_buf()?;
    if head.starts_with(&[0x1f, 0x8b]) {
        Ok(Box::new(flate2::read::MultiGzDecoder::new(buffered)))
    } else {
        Ok(Box::new(buffered))
    }
}

/// Reads CSV rows from `reader` (plain or gzip) and calls `each` with every
/// row's event or its [`BadRow`], in file order: [`read_csv_with`] and the
/// default [`CsvFormat`].
///
/// # Errors
///
/// As [`read_csv_with`].
pub fn read_csv(
    reader: impl Read,
    options: &CsvOptions,
    mut each: impl FnMut(Result<Record, BadRow>),
) -> Result<(), IngestError> {
    read_csv_with(reader, options, &CsvFormat::default(), |_, row| each(row))
}

/// Reads CSV rows from `reader` (plain or gzip), written as `format` says,
/// and calls `each` with every row's line (1-based, in the file) and its
/// event or [`BadRow`], in file order.
///
/// # Errors
///
/// [`IngestError`] when the file as a whole cannot be read: no header (or
/// nothing after the lines to skip), the time or date column missing, a
/// column named twice or named `device` or `ts` (the fields every event
/// gets), or a read that fails part way (such as a truncated gzip file: the
/// rows before it were passed to `each`).
pub fn read_csv_with(
    reader: impl Read,
    options: &CsvOptions,
    format: &CsvFormat,
    mut each: impl FnMut(u64, Result<Record, BadRow>),
) -> Result<(), IngestError> {
    let io = |line: u64, e: &dyn std::fmt::Display| IngestError::Io {
        line,
        message: e.to_string(),
    };
    let skip = format.skip_lines;
    let mut input = BufReader::new(maybe_gunzip(reader).map_err(|e| io(0, &e))?);
    skip_preamble(&mut input, skip)?;
    // Records end at "\n" only, and a "\r" before it is taken off
    // (`strip_cr`): with csv's default CRLF terminator, the line numbers of
    // a CRLF file come out one too low.
    let mut csv = csv::ReaderBuilder::new()
        .flexible(true)
        .has_headers(false)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(QuoteScan::new(input));
    let mut row = csv::ByteRecord::new();
    let layout = read_header(&mut csv, &mut row, options, format)?;
    let device_json = serde_json::Value::from(options.device.as_str()).to_string();
    let mut last_line = 1 + skip;
    loop {
        match csv.read_byte_record(&mut row) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                if let csv::ErrorKind::Io(err) = e.kind() {
                    return Err(io(last_line, err));
                }
                let line = e.position().map_or(last_line + 1, |p| p.line() + skip);
                each(
                    line,
                    Err(BadRow {
                        line,
                        reason: format!("not a CSV row: {e}"),
                        raw: Vec::new(),
                    }),
                );
                continue;
            }
        }
        let line = row.position().map_or(last_line + 1, |p| p.line() + skip);
        last_line = line;
        if let Some(open) = csv.get_ref().unclosed_quote() {
            // csv reads a quote left open to the end of the file as one
            // last cell holding the rest of the file: refuse it whole.
            let (quote_line, end_line) = (open.quote_line + skip, open.end_line + skip);
            let lines = if end_line > quote_line {
                format!("lines {quote_line} to {end_line} (the end of the file) would be")
            } else {
                "the rest of the line (the end of the file) would be".to_owned()
            };
            each(
                quote_line,
                Err(BadRow {
                    line: quote_line,
                    reason: format!(
                        "a double quote opened on this line is never closed: {lines} one cell (a quote within a cell is written \"\")"
                    ),
                    raw: unclosed_row_bytes(&row),
                }),
            );
            break;
        }
        if let Some(bad) = stray_quote(&mut csv, &row, skip) {
            each(bad.line, Err(bad));
            continue;
        }
        if !strip_cr(&mut row) {
            continue;
        }
        each(
            line,
            row_record(&row, line, &layout, &device_json, options, format),
        );
    }
    Ok(())
}

/// `row` refused whole when a quoted cell in it spans lines and text
/// follows its closing quote (see [`StrayQuote`]); its cells are kept as
/// the bad row's text, so the rows csv read into the cell are not lost.
fn stray_quote<R: Read>(
    csv: &mut csv::Reader<QuoteScan<R>>,
    row: &csv::ByteRecord,
    skip: u64,
) -> Option<BadRow> {
    let first = row.position()?.line();
    let last = first + row.as_slice().iter().filter(|&&b| b == b'\n').count() as u64;
    let stray = csv.get_mut().take_stray(first, last)?;
    let (quote_line, close_line) = (stray.quote_line + skip, stray.close_line + skip);
    Some(BadRow {
        line: quote_line,
        reason: format!(
            "a double quote opened on this line closes on line {close_line} with text after it, so lines {quote_line} to {close_line} would be one cell (a quote within a cell is written \"\")"
        ),
        raw: row_bytes(row),
    })
}

/// Takes the "\r" of a CRLF line end off the last cell of `row`. Returns
/// false for a line that is empty but for it (skipped, as csv skips empty
/// lines).
fn strip_cr(row: &mut csv::ByteRecord) -> bool {
    let Some(last) = row.iter().next_back() else {
        return true;
    };
    let Some(trimmed) = last.strip_suffix(b"\r") else {
        return true;
    };
    if row.len() == 1 && trimmed.is_empty() {
        return false;
    }
    let mut fixed = csv::ByteRecord::with_capacity(row.as_slice().len(), row.len());
    for (i, cell) in row.iter().enumerate() {
        fixed.push_field(if i + 1 == row.len() { trimmed } else { cell });
    }
    fixed.set_position(row.position().cloned());
    *row = fixed;
    true
}

/// Where a double quote left open at the end of the input opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct UnclosedQuote {
    /// The 1-based line of the input the quote is on.
    quote_line: u64,
    /// The input's last line (1-based).
    end_line: u64,
}

/// Where a quoted cell begins and ends, as csv reads it (`,` between
/// cells, `\n` between rows, `"` opens a cell only as its first byte and
/// `""` within one is a quote), tracked over the bytes csv takes from
/// `inner`; so once `inner` has ended, whether it ended within a quoted
/// cell, which csv does not say.
struct QuoteScan<R> {
    inner: R,
    state: ScanState,
    /// `\n`s read.
    newlines: u64,
    /// The 1-based line where the quoted cell being read opened.
    quote_line: u64,
    /// The last byte read (`\n` before any).
    last: u8,
    /// Nothing read yet (a UTF-8 BOM there is not a cell's first byte).
    fresh: bool,
    /// `inner` has ended.
    ended: bool,
    /// Quoted cells over several lines whose closing quote is followed by
    /// text, oldest first, not yet matched to a row.
    strays: std::collections::VecDeque<StrayQuote>,
}

/// A quoted cell that spans lines and whose closing `"` is followed by
/// text (`"open…` … `4,"quoted"`): csv reads the lines between as one cell,
/// so the rows on them would vanish into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct StrayQuote {
    /// The 1-based line the cell's opening quote is on.
    quote_line: u64,
    /// The 1-based line of the quote that closed it.
    close_line: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanState {
    /// At a cell's first byte.
    CellStart,
    /// In a cell that is not quoted.
    Plain,
    /// In a quoted cell.
    Quoted,
    /// Just after a `"` in a quoted cell: it closes the cell unless another `"` follows.
    QuoteInQuoted,
}

impl<R> QuoteScan<R> {
    fn new(inner: R) -> Self {
        QuoteScan {
            inner,
            state: ScanState::CellStart,
            newlines: 0,
            quote_line: 0,
            last: b'\n',
            fresh: true,
            ended: false,
            strays: std::collections::VecDeque::new(),
        }
    }

    /// The stray quote (see [`StrayQuote`]) that opened in the row on
    /// lines `first..=last`, if any; strays of earlier rows are dropped.
    fn take_stray(&mut self, first: u64, last: u64) -> Option<StrayQuote> {
        while self.strays.front().is_some_and(|s| s.quote_line < first) {
            self.strays.pop_front();
        }
        self.strays
            .front()
            .is_some_and(|s| s.quote_line <= last)
            .then(|| self.strays.pop_front())
            .flatten()
    }

    /// When the input has ended within a quoted cell: where it opened. The
    /// row csv returns then is the input's last.
    fn unclosed_quote(&self) -> Option<UnclosedQuote> {
        (self.ended && self.state == ScanState::Quoted).then(|| UnclosedQuote {
            quote_line: self.quote_line,
            end_line: self.newlines + u64::from(self.last != b'\n'),
        })
    }

    fn scan(&mut self, mut bytes: &[u8]) {
        if std::mem::take(&mut self.fresh) && bytes.starts_with(b"\xef\xbb\xbf") {
            bytes = &bytes[3..];
        }
        let newlines = |b: &[u8]| b.iter().filter(|&&c| c == b'\n').count() as u64;
        // Newlines are counted up to `counted` only when a quote opens, and
        // the rest at the end: one pass over the bytes either way.
        let (mut at, mut counted) = (0, 0);
        while at < bytes.len() {
            let rest = &bytes[at..];
            self.state = match self.state {
                ScanState::Plain => match rest.iter().position(|&c| c == b',' || c == b'\n') {
                    Some(k) => {
                        at += k + 1;
                        ScanState::CellStart
                    }
                    None => {
                        at = bytes.len();
                        ScanState::Plain
                    }
                },
                ScanState::Quoted => match rest.iter().position(|&c| c == b'"') {
                    Some(k) => {
                        at += k + 1;
                        ScanState::QuoteInQuoted
                    }
                    None => {
                        at = bytes.len();
                        ScanState::Quoted
                    }
                },
                state => {
                    at += 1;
                    match (state, rest[0]) {
                        (ScanState::QuoteInQuoted, b'"') => ScanState::Quoted,
                        (_, b'"') => {
                            self.newlines += newlines(&bytes[counted..at]);
                            counted = at;
                            self.quote_line = self.newlines + 1;
                            ScanState::Quoted
                        }
                        (_, b',' | b'\n') => ScanState::CellStart,
                        (ScanState::QuoteInQuoted, c) if c != b'\r' => {
                            self.newlines += newlines(&bytes[counted..at]);
                            counted = at;
                            let close_line = self.newlines + 1;
                            if close_line > self.quote_line {
                                self.strays.push_back(StrayQuote {
                                    quote_line: self.quote_line,
                                    close_line,
                                });
                            }
                            ScanState::Plain
                        }
                        _ => ScanState::Plain,
                    }
                }
            };
        }
        self.newlines += newlines(&bytes[counted..]);
        if let Some(&b) = bytes.last() {
            self.last = b;
        }
    }
}

impl<R: Read> Read for QuoteScan<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.ended = true;
        }
        self.scan(&buf[..n]);
        Ok(n)
    }
}

/// The last row of a file whose last cell opened a quote and never closed
/// it, as written: its cells joined by commas, the last one after its
/// opening `"` (without the file's last line end).
fn unclosed_row_bytes(row: &csv::ByteRecord) -> Vec<u8> {
    let n = row.len();
    let mut front = csv::ByteRecord::new();
    for cell in row.iter().take(n.saturating_sub(1)) {
        front.push_field(cell);
    }
    let mut out = if n > 1 { row_bytes(&front) } else { Vec::new() };
    if n > 1 {
        out.push(b',');
    }
    out.push(b'"');
    for &b in row.get(n.saturating_sub(1)).unwrap_or_default() {
        if b == b'"' {
            out.push(b'"');
        }
        out.push(b);
    }
    if out.last() == Some(&b'\n') {
        out.pop();
        if out.last() == Some(&b'\r') {
            out.pop();
        }
    }
    out
}

/// Reads and drops the first `skip` lines.
fn skip_preamble(input: &mut impl BufRead, skip: u64) -> Result<(), IngestError> {
    let mut line = Vec::new();
    for read in 0..skip {
        line.clear();
        let n = input
            .read_until(b'\n', &mut line)
            .map_err(|e| IngestError::Io {
                line: read,
                message: e.to_string(),
            })?;
        if n == 0 {
            return Err(IngestError::Preamble { lines: read, skip });
        }
    }
    Ok(())
}

/// Where the header puts things.
struct Layout {
    /// The column names.
    header: Vec<String>,
    /// The time column.
    time: usize,
    /// The date column, when the date has a column of its own.
    date: Option<usize>,
}

/// Reads the header row into `row`: the column names (a UTF-8 BOM taken
/// off) and where the time (and date) columns are.
fn read_header<R: Read>(
    csv: &mut csv::Reader<QuoteScan<R>>,
    row: &mut csv::ByteRecord,
    options: &CsvOptions,
    format: &CsvFormat,
) -> Result<Layout, IngestError> {
    match csv.read_byte_record(row) {
        Ok(true) => {
            strip_cr(row);
        }
        Ok(false) if format.skip_lines > 0 => {
            // Empty lines after the skipped ones count (csv skips them).
            return Err(IngestError::Preamble {
                lines: format.skip_lines + csv.position().line() - 1,
                skip: format.skip_lines,
            });
        }
        Ok(false) => return Err(IngestError::Empty),
        Err(e) => return Err(IngestError::Header(e.to_string())),
    }
    if let Some(open) = csv.get_ref().unclosed_quote() {
        return Err(IngestError::Header(format!(
            "the double quote opened on line {} is never closed, so the whole file would be the header",
            open.quote_line + format.skip_lines
        )));
    }
    let header: Vec<String> = row
        .iter()
        .map(|h| {
            std::str::from_utf8(h)
                .map(|h| h.trim_start_matches('\u{feff}').to_owned())
                .map_err(|_| IngestError::Header("a column name is not UTF-8".into()))
        })
        .collect::<Result<_, _>>()?;
    let find = |column: &str| {
        header
            .iter()
            .position(|h| h == column)
            .ok_or_else(|| IngestError::NoTimeColumn {
                column: column.to_owned(),
                columns: header.join(", "),
                hint: match header.as_slice() {
                    [one] if one.contains([';', '\t']) => {
                        "; the header is one column: the file is separated by ';' or tabs, and produce reads comma-separated files only"
                    }
                    _ => "",
                },
            })
    };
    let time = find(&options.time_column)?;
    let date = format.date_column.as_deref().map(find).transpose()?;
    for (i, h) in header.iter().enumerate() {
        if (h == "device" || h == "ts") && i != time && Some(i) != date {
            return Err(IngestError::BadColumn(
                h.clone(),
                "is a field every event gets (device id, row time): rename the column",
            ));
        }
        if header[..i].contains(h) {
            return Err(IngestError::BadColumn(
                h.clone(),
                "appears twice in the header",
            ));
        }
    }
    Ok(Layout { header, time, date })
}

/// The event of one data row (`line` in the file), or why it cannot be one.
fn row_record(
    row: &csv::ByteRecord,
    line: u64,
    layout: &Layout,
    device_json: &str,
    options: &CsvOptions,
    format: &CsvFormat,
) -> Result<Record, BadRow> {
    let bad = |reason: String| BadRow {
        line,
        reason,
        raw: row_bytes(row),
    };
    let header = &layout.header;
    if row.len() != header.len() {
        return Err(bad(format!(
            "row has {} cells, the header has {}",
            row.len(),
            header.len()
        )));
    }
    let cells: Vec<&str> = row
        .iter()
        .map(std::str::from_utf8)
        .collect::<Result<_, _>>()
        .map_err(|e| bad(format!("row is not UTF-8 ({e})")))?;
    let time_text = match layout.date {
        Some(d) => format!("{} {}", cells[d].trim(), cells[layout.time].trim()),
        None => cells[layout.time].to_owned(),
    };
    let timestamp_ms = format.time.parse_ms(&time_text).map_err(bad)?;
    let mut value = String::with_capacity(64 + row.as_slice().len() * 2);
    value.push_str("{\"device\":");
    value.push_str(device_json);
    value.push_str(",\"ts\":");
    value.push_str(&serde_json::Value::from(time_text).to_string());
    for (i, cell) in cells.iter().enumerate() {
        if i == layout.time || Some(i) == layout.date {
            continue;
        }
        value.push(',');
        value.push_str(&serde_json::Value::from(header[i].as_str()).to_string());
        value.push(':');
        value.push_str(&cell_json(cell, &format.null_values));
    }
    value.push('}');
    Ok(Record {
        timestamp_ms,
        key: Some(options.device.clone().into_bytes()),
        value: Some(value.into_bytes()),
        headers: Vec::new(),
    })
}

/// `row` written back as one CSV line (no line end), quoted where a cell
/// needs it, so a kept bad row reads back as the same cells.
fn row_bytes(row: &csv::ByteRecord) -> Vec<u8> {
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    // Writing to a Vec cannot fail.
    let _ = w.write_byte_record(row);
    let mut out = w.into_inner().unwrap_or_default();
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    out
}

/// Whether the row at `line` of `device`'s file is among the `percent`
/// percent chosen for redelivery: a fixed function of the two, so a rerun
/// picks the same rows.
pub fn chosen_for_redelivery(device: &str, line: u64, percent: f64) -> bool {
    use sha2::{Digest, Sha256};
    let d = Sha256::new()
        .chain_update(device.as_bytes())
        .chain_update(line.to_be_bytes())
        .finalize();
    let x = u64::from_be_bytes(d[..8].try_into().unwrap_or_default()) % 10_000;
    (x as f64) < percent * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts() -> CsvOptions {
        CsvOptions {
            device: "cgm-1".into(),
            time_column: "datetime".into(),
        }
    }

    fn collect(data: &[u8]) -> Vec<Result<Record, BadRow>> {
        let mut out = Vec::new();
        read_csv(data, &opts(), |r| out.push(r)).unwrap();
        out
    }

    #[test]
    fn rows_become_json_events() {
        let rows = collect(b"isig,datetime,glucose\r\n22.59,2010-03-24 09:51:00,258\r\nnil,2010-03-24 09:56:00,260\r\n");
        let values: Vec<String> = rows
            .iter()
            .map(|r| String::from_utf8(r.as_ref().unwrap().value.clone().unwrap()).unwrap())
            .collect();
        assert_eq!(
            values,
            [
                r#"{"device":"cgm-1","ts":"2010-03-24 09:51:00","isig":22.59,"glucose":258}"#,
                r#"{"device":"cgm-1","ts":"2010-03-24 09:56:00","isig":null,"glucose":260}"#,
            ]
        );
        let r = rows[0].as_ref().unwrap();
        assert_eq!(r.key.as_deref(), Some(&b"cgm-1"[..]));
        assert_eq!(r.timestamp_ms, 1_269_424_260_000);
    }

    #[test]
    fn crlf_files_report_the_right_lines() {
        let rows = collect(b"isig,datetime,glucose\r\n1,2010-03-24 09:51:00,2\r\n\r\n1,soon,2\r\n\"3\",2010-03-24 10:00:00,\"4\"\r\n");
        assert_eq!(rows.len(), 3);
        let bad = rows[1].as_ref().unwrap_err();
        assert_eq!((bad.line, bad.raw.as_slice()), (4, &b"1,soon,2"[..]));
        assert_eq!(
            rows[2].as_ref().unwrap().value.as_deref(),
            Some(&br#"{"device":"cgm-1","ts":"2010-03-24 10:00:00","isig":3,"glucose":4}"#[..])
        );
    }

    #[test]
    fn gzip_is_detected() {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(b"isig,datetime,glucose\n1,2010-03-24 09:51:00,2\n")
            .unwrap();
        let rows = collect(&gz.finish().unwrap());
        assert_eq!(rows.len(), 1);
        assert!(rows[0].is_ok());
    }

    #[test]
    fn bad_rows_name_their_line_and_keep_their_bytes() {
        let rows = collect(b"isig,datetime,glucose\n1,2010-03-24 09:51:00,2\n1,yesterday,2\n1,2\n3,2010-03-24 10:00:00,4\n");
        assert!(rows[0].is_ok());
        let bad = rows[1].as_ref().unwrap_err();
        assert_eq!(bad.line, 3);
        assert!(bad.reason.contains("\"yesterday\""), "{}", bad.reason);
        let bad = rows[2].as_ref().unwrap_err();
        assert_eq!(bad.line, 4);
        assert_eq!(bad.reason, "row has 2 cells, the header has 3");
        assert_eq!(bad.raw, b"1,2");
        assert!(rows[3].is_ok());
        // A kept row reads back as the same cells.
        let rows = collect(b"isig,datetime,glucose\n\"1,5\",never,\"say \"\"hi\"\"\"\n");
        assert_eq!(
            rows[0].as_ref().unwrap_err().raw,
            b"\"1,5\",never,\"say \"\"hi\"\"\"".to_vec()
        );
    }

    #[test]
    fn files_that_cannot_be_read_say_why() {
        let err = |data: &[u8]| read_csv(data, &opts(), |_| {}).unwrap_err().to_string();
        assert_eq!(
            err(b""),
            "the file is empty: a CSV header naming the columns is needed"
        );
        assert_eq!(
            err(b"datetime,device,v\n"),
            "column \"device\" is a field every event gets (device id, row time): rename the column"
        );
        assert_eq!(
            err(b"datetime,v,v\n"),
            "column \"v\" appears twice in the header"
        );
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        for i in 0..2000 {
            writeln!(gz, "{i},2010-03-24 09:51:00,{i}").unwrap();
        }
        let mut bytes = b"".to_vec();
        let mut head = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        head.write_all(b"isig,datetime,glucose\n").unwrap();
        bytes.extend(head.finish().unwrap());
        bytes.extend(gz.finish().unwrap());
        bytes.truncate(bytes.len() - 100);
        let mut rows = 0;
        let e = read_csv(&bytes[..], &opts(), |r| {
            assert!(r.is_ok());
            rows += 1;
        })
        .unwrap_err();
        assert!(matches!(e, IngestError::Io { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with(&format!("cannot read the file after line {}", rows + 1)),
            "{e}"
        );
    }

    /// (line, reason, raw as text) of each bad row, and the good rows' values.
    fn outcome(data: &[u8], skip_lines: u64) -> (Vec<(u64, String, String)>, Vec<String>) {
        let format = CsvFormat {
            skip_lines,
            ..CsvFormat::default()
        };
        let (mut bad, mut good) = (Vec::new(), Vec::new());
        read_csv_with(data, &opts(), &format, |line, r| match r {
            Ok(r) => good.push(String::from_utf8(r.value.unwrap()).unwrap()),
            Err(b) => {
                assert_eq!(b.line, line);
                bad.push((b.line, b.reason, String::from_utf8(b.raw).unwrap()));
            }
        })
        .unwrap();
        (bad, good)
    }

    #[test]
    fn a_quote_left_open_to_the_end_is_a_bad_row_at_its_line_keeping_the_rest() {
        let data = b"isig,datetime,glucose\n1,2010-03-24 09:51:00,2\n3,2010-03-24 09:56:00,\"4\n5,2010-03-24 10:01:00,6\n7,2010-03-24 10:06:00,8\n";
        let (bad, good) = outcome(data, 0);
        assert_eq!(
            good,
            [r#"{"device":"cgm-1","ts":"2010-03-24 09:51:00","isig":1,"glucose":2}"#]
        );
        assert_eq!(
            bad,
            [(
                3,
                "a double quote opened on this line is never closed: lines 3 to 5 (the end of the file) would be one cell (a quote within a cell is written \"\")".into(),
                "3,2010-03-24 09:56:00,\"4\n5,2010-03-24 10:01:00,6\n7,2010-03-24 10:06:00,8".into()
            )]
        );
        // CRLF, a preamble, no last line end, a quote within the open
        // cell, and a closed multi-line cell before it.
        let data = b"logger 7\r\nisig,datetime,glucose\r\n\"a\r\nb\",2010-03-24 09:51:00,2\r\n1,2010-03-24 09:56:00,\"x \"\"y\"\" z\r\n9,2010-03-24 10:01:00,9";
        let (bad, good) = outcome(data, 1);
        assert_eq!(good.len(), 1);
        assert_eq!(
            bad,
            [(
                5,
                "a double quote opened on this line is never closed: lines 5 to 6 (the end of the file) would be one cell (a quote within a cell is written \"\")".into(),
                "1,2010-03-24 09:56:00,\"x \"\"y\"\" z\r\n9,2010-03-24 10:01:00,9".into()
            )]
        );
        // Open on the last line only.
        let (bad, good) = outcome(b"isig,datetime,glucose\n1,2010-03-24 09:51:00,\"2\n", 0);
        assert!(good.is_empty());
        assert_eq!(
            bad,
            [(
                2,
                "a double quote opened on this line is never closed: the rest of the line (the end of the file) would be one cell (a quote within a cell is written \"\")".into(),
                "1,2010-03-24 09:51:00,\"2".into()
            )]
        );
        // A quote closed at the very end, and quotes within a plain cell, are fine.
        let (bad, good) = outcome(b"isig,datetime,glucose\n1,2010-03-24 09:51:00,\"2\"", 0);
        assert_eq!((bad.len(), good.len()), (0, 1));
        let (bad, good) = outcome(
            b"isig,datetime,glucose\nsay \"hi,2010-03-24 09:51:00,2\n",
            0,
        );
        assert_eq!((bad.len(), good.len()), (0, 1));
        // Read a byte at a time: the same.
        struct Trickle<'a>(&'a [u8]);
        impl Read for Trickle<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(buf.len()).min(1);
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let mut lines = Vec::new();
        read_csv_with(
            Trickle(data),
            &opts(),
            &CsvFormat {
                skip_lines: 1,
                ..CsvFormat::default()
            },
            |line, r| lines.push((line, r.is_ok())),
        )
        .unwrap();
        assert_eq!(lines, [(3, true), (5, false)]);
        // In the header.
        let e = read_csv(&b"\xef\xbb\xbf\"isig,datetime\n1,2\n"[..], &opts(), |_| {}).unwrap_err();
        assert_eq!(
            e.to_string(),
            "cannot read the CSV header: the double quote opened on line 1 is never closed, so the whole file would be the header"
        );
    }

    #[test]
    fn a_quote_closed_lines_later_with_text_after_it_is_a_bad_row_keeping_the_lines_between() {
        let data = b"isig,datetime,glucose\n1,2010-03-24 09:51:00,\"open\n3,2010-03-24 09:56:00,4\n5,2010-03-24 10:01:00,\"6\"x\n7,2010-03-24 10:06:00,8\n";
        let (bad, good) = outcome(data, 0);
        assert_eq!(
            good,
            [r#"{"device":"cgm-1","ts":"2010-03-24 10:06:00","isig":7,"glucose":8}"#]
        );
        assert_eq!(
            bad,
            [(
                2,
                "a double quote opened on this line closes on line 4 with text after it, so lines 2 to 4 would be one cell (a quote within a cell is written \"\")".into(),
                "1,2010-03-24 09:51:00,\"open\n3,2010-03-24 09:56:00,4\n5,2010-03-24 10:01:00,6\"\"x\"".into()
            )]
        );
        // A closed multi-line cell, and text after a quote on one line
        // (csv reads `"6"x` as `6x`), are rows as before.
        let (bad, good) = outcome(
            b"isig,datetime,glucose\n\"a\nb\",2010-03-24 09:51:00,2\n1,2010-03-24 09:56:00,\"6\"x\n",
            0,
        );
        assert_eq!((bad.len(), good.len()), (0, 2));
    }

    #[test]
    fn rows_that_are_not_utf8_keep_their_bytes() {
        let rows = collect(b"isig,datetime,glucose\n\xff,2010-03-24 09:51:00,1\n");
        let bad = rows[0].as_ref().unwrap_err();
        assert_eq!(bad.line, 2);
        assert_eq!(bad.raw, b"\xff,2010-03-24 09:51:00,1");
    }

    #[test]
    fn missing_time_column_lists_the_columns() {
        let err = read_csv(&b"a,b\n1,2\n"[..], &opts(), |_| {}).unwrap_err();
        assert_eq!(
            err.to_string(),
            "column \"datetime\" is not in the header (columns: a, b)"
        );
        let err = read_csv(&b"datetime;v\n1;2\n"[..], &opts(), |_| {}).unwrap_err();
        assert_eq!(
            err.to_string(),
            "column \"datetime\" is not in the header (columns: datetime;v); the header is one column: the file is separated by ';' or tabs, and produce reads comma-separated files only"
        );
    }

    #[test]
    fn cells() {
        let none: &[String] = &[];
        assert_eq!(cell_json("426.0", none), "426.0");
        assert_eq!(cell_json(" 7 ", none), "7");
        assert_eq!(cell_json("NIL", none), "null");
        assert_eq!(cell_json("", none), "null");
        assert_eq!(cell_json("inf", none), "\"inf\"");
        assert_eq!(cell_json("on", none), "\"on\"");
        assert_eq!(cell_json("-0", none), "0");
        assert_eq!(cell_json("+5", none), "5");
        assert_eq!(cell_json("0.5", none), "0.5");
        // A number would change these: they stay as written.
        assert_eq!(cell_json("007", none), "\"007\"");
        assert_eq!(cell_json("-01", none), "\"-01\"");
        assert_eq!(
            cell_json("12345678901234567890", none),
            "\"12345678901234567890\""
        );
        assert_eq!(
            cell_json("9223372036854775807", none),
            "9223372036854775807"
        );
        assert_eq!(cell_json("1e400", none), "\"1e400\"");
        let sentinels = ["-9900".to_owned(), "-999".to_owned(), "n/a".to_owned()];
        assert_eq!(cell_json("-9900", &sentinels), "null");
        assert_eq!(cell_json("-9900.00", &sentinels), "null");
        assert_eq!(cell_json("-999.0", &sentinels), "null");
        assert_eq!(cell_json("n/a", &sentinels), "null");
        assert_eq!(cell_json("-99", &sentinels), "-99");
        assert_eq!(cell_json("-9900.5", &sentinels), "-9900.5");
    }

    fn collect_with(
        data: &[u8],
        time_column: &str,
        format: &CsvFormat,
    ) -> Vec<Result<(i64, String), (u64, String)>> {
        let options = CsvOptions {
            device: "d".into(),
            time_column: time_column.into(),
        };
        let mut out = Vec::new();
        read_csv_with(data, &options, format, |_, r| {
            out.push(
                r.map(|r| (r.timestamp_ms, String::from_utf8(r.value.unwrap()).unwrap()))
                    .map_err(|b| (b.line, b.reason)),
            )
        })
        .unwrap();
        out
    }

    #[test]
    fn a_preamble_is_skipped_and_lines_still_count_it() {
        let data = b"Logger X200, serial 4711\r\n\"units\",\"C\r\ntime,temp\r\n2024-03-01 00:00,5\r\nyesterday,6\r\n";
        let format = CsvFormat {
            skip_lines: 2,
            ..CsvFormat::default()
        };
        assert_eq!(
            collect_with(data, "time", &format),
            [
                Ok((1_709_251_200_000, r#"{"device":"d","ts":"2024-03-01 00:00","temp":5}"#.into())),
                Err((5, "time \"yesterday\" is not a date-time (expected e.g. 2016-02-15T00:00:00Z, 2022-03-20T11:00:00+01:00 or 2010-03-24 09:51:00; --time-format reads other shapes)".into())),
            ]
        );
        let options = CsvOptions {
            device: "d".into(),
            time_column: "time".into(),
        };
        let e = read_csv_with(
            &b"one\ntwo\n"[..],
            &options,
            &CsvFormat {
                skip_lines: 3,
                ..CsvFormat::default()
            },
            |_, _| {},
        );
        assert_eq!(
            e.unwrap_err().to_string(),
            "no header is left after skipping 3 lines (--skip-lines 3): the file has 2 lines"
        );
        // Skipping exactly the lines there are, or them and empty lines.
        for (data, lines) in [
            (&b"one\ntwo\n"[..], 2),
            (b"one\ntwo", 2),
            (b"one\ntwo\n\n\n", 4),
        ] {
            let skip2 = CsvFormat {
                skip_lines: 2,
                ..CsvFormat::default()
            };
            let e = read_csv_with(data, &options, &skip2, |_, _| {}).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!(
                    "no header is left after skipping 2 lines (--skip-lines 2): the file has {lines} lines"
                )
            );
        }
    }

    #[test]
    fn date_and_time_in_two_columns_with_a_pattern_and_hour_24() {
        let data = b"Datum,Zeit,temp\n01.03.2024,23:00,7.5\n01.03.2024,24:00,7.25\n02.03.2024,01:00,-9900\n";
        let format = CsvFormat {
            date_column: Some("Datum".into()),
            time: TimeFormat::from_flag("%d.%m.%Y %H:%M").unwrap(),
            null_values: vec!["-9900".into()],
            ..CsvFormat::default()
        };
        assert_eq!(
            collect_with(data, "Zeit", &format),
            [
                Ok((
                    1_709_334_000_000,
                    r#"{"device":"d","ts":"01.03.2024 23:00","temp":7.5}"#.into()
                )),
                Ok((
                    1_709_337_600_000,
                    r#"{"device":"d","ts":"01.03.2024 24:00","temp":7.25}"#.into()
                )),
                Ok((
                    1_709_341_200_000,
                    r#"{"device":"d","ts":"02.03.2024 01:00","temp":null}"#.into()
                )),
            ]
        );
        let options = CsvOptions {
            device: "d".into(),
            time_column: "Zeit".into(),
        };
        let e = read_csv_with(&b"Zeit,v\n"[..], &options, &format, |_, _| {}).unwrap_err();
        assert_eq!(
            e.to_string(),
            "column \"Datum\" is not in the header (columns: Zeit, v)"
        );
    }

    #[test]
    fn epoch_and_elapsed_times() {
        let data = b"t,v\n1709337600,1\n1709337600.5,2\n";
        let format = CsvFormat {
            time: TimeFormat::Epoch(crate::streams::ingest::EpochUnit::Seconds),
            ..CsvFormat::default()
        };
        assert_eq!(
            collect_with(data, "t", &format),
            [
                Ok((
                    1_709_337_600_000,
                    r#"{"device":"d","ts":"1709337600","v":1}"#.into()
                )),
                Ok((
                    1_709_337_600_500,
                    r#"{"device":"d","ts":"1709337600.5","v":2}"#.into()
                )),
            ]
        );
        let data = b"elapsed,v\n0 days 00:00:00,1\n0 days 00:00:01,2\n1 days 00:00:00,3\n";
        let format = CsvFormat {
            time: TimeFormat::Elapsed {
                start_ms: 1_709_337_600_000,
            },
            ..CsvFormat::default()
        };
        let got: Vec<i64> = collect_with(data, "elapsed", &format)
            .into_iter()
            .map(|r| r.unwrap().0)
            .collect();
        assert_eq!(
            got,
            [1_709_337_600_000, 1_709_337_601_000, 1_709_424_000_000]
        );
    }

    #[test]
    fn redelivery_choice_is_stable_and_about_right() {
        let n = (0..100_000)
            .filter(|&l| chosen_for_redelivery("d", l, 5.0))
            .count();
        assert!((4_500..5_500).contains(&n), "{n}");
        assert_eq!(
            chosen_for_redelivery("d", 17, 5.0),
            chosen_for_redelivery("d", 17, 5.0)
        );
        assert_eq!(
            (0..1000)
                .filter(|&l| chosen_for_redelivery("d", l, 0.0))
                .count(),
            0
        );
    }
}
